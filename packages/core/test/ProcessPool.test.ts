/**
 * The pool over the simulated OS (`TestOs`): slot accounting, the kill state
 * machine as the pool drives it, and sessions. Every wait runs on the
 * TestClock; every test shuts its pool down inside the body (see `withPool`),
 * so no finalizer is left sleeping.
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Fiber, Layer, Option } from "effect"
import { ChildProcess } from "effect/process"
import { TestClock } from "effect/testing"
import * as Lifeline from "../src/Lifeline.ts"
import { CurrentSession, ProcessPool } from "../src/ProcessPool.ts"
import type * as Teardown from "../src/Teardown.ts"
import { TestOs } from "../src/testing.ts"
import * as ShepherdConfig from "../src/ShepherdConfig.ts"
import { cmd, errorOf, poll, settleValue, valueOf, waitUntil, withPool } from "./utils.ts"

const awaitStats = (
  pool: ProcessPool["Service"],
  predicate: (stats: { readonly inUse: number; readonly waiting: number }) => boolean
) =>
  Effect.gen(function*() {
    for (let i = 0; i < 1000; i++) {
      if (predicate(yield* pool.stats)) return
      yield* Effect.yieldNow
    }
    const stats = yield* pool.stats
    return yield* Effect.die(new Error(`stats never matched: inUse ${stats.inUse}, waiting ${stats.waiting}`))
  })

const slotsOf = (pool: ProcessPool["Service"]) =>
  Effect.map(pool.stats, (s) => ({ inUse: s.inUse, waiting: s.waiting }))

const tags = (reports: ReadonlyArray<Teardown.Teardown>) => reports.map((r) => r._tag)

describe("ProcessPool slots", () => {
  it.effect("never runs more than `slots` processes at once under 50 concurrent requests", () =>
    Effect.gen(function*() {
      const os = TestOs.make({ launchDelay: "10 millis" })
      os.define("job", { exitAfterMs: 100 })
      yield* withPool(os, { slots: 4, hardCap: 64, slotTimeout: "Infinity" }, (pool) =>
        Effect.gen(function*() {
          const all = yield* Effect.forkChild(
            Effect.forEach(
              Array.from({ length: 50 }, (_, i) => i),
              (i) => Effect.flatMap(pool.spawn(cmd("job", String(i))), (p) => p.awaitTeardown),
              { concurrency: "unbounded" }
            )
          )
          yield* awaitStats(pool, (s) => s.inUse === 4 && s.waiting === 46)
          // 13 rounds of (10 ms launch + 100 ms run); nobody closes a session.
          yield* TestClock.adjust(1430)
          const reports = valueOf(yield* poll(all))
          assert.strictEqual(reports.length, 50)
          assert.isTrue(reports.every((r) => r._tag === "Exited" && r.code === 0 && r.signalled.length === 0))
          assert.strictEqual(os.spawnOrder().length, 50)
          assert.strictEqual(os.maxBusy(), 4, "launching + alive never exceeds the slots")
          assert.strictEqual(os.maxAlive(), 4)
          assert.deepStrictEqual(os.signalsSent(), [])
          assert.deepStrictEqual(yield* slotsOf(pool), { inUse: 0, waiting: 0 })
          const lastExit = Math.max(...os.processes().map((p) => p.exitedAt ?? Number.NaN))
          assert.strictEqual(lastExit, 1430, "each slot was handed on at the instant its process exited")
        }))
    }))

  it.effect("returns the slot as soon as a process exits by itself, without closing any session", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      os.define("short", { exitAfterMs: 1000, exitCode: 0 })
      yield* withPool(os, { slots: 1 }, (pool) =>
        Effect.gen(function*() {
          const first = yield* pool.spawn(cmd("short"))
          const next = yield* Effect.forkChild(pool.spawn(cmd("next")))
          yield* awaitStats(pool, (s) => s.waiting === 1)
          yield* TestClock.adjust(999)
          assert.isUndefined(yield* poll(next))
          assert.deepStrictEqual(yield* slotsOf(pool), { inUse: 1, waiting: 1 })
          yield* TestClock.adjust(1)
          const managed = valueOf(yield* poll(next))
          assert.strictEqual(managed.slotWaitMs, 1000)
          assert.strictEqual(managed.startedAt, 1000)
          const report = yield* first.teardown
          assert.isTrue(Option.isSome(report) && report.value._tag === "Exited")
          assert.deepStrictEqual((yield* pool.stats).sessions, ["default"])
          assert.deepStrictEqual(yield* slotsOf(pool), { inUse: 1, waiting: 0 })
        }))
    }))

  it.effect("serves equal waiters in FIFO order", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      os.define("holder", { exitAfterMs: 100 })
      os.define("job", { exitAfterMs: 100 })
      yield* withPool(os, { slots: 1 }, (pool) =>
        Effect.gen(function*() {
          yield* pool.spawn(cmd("holder"))
          const fibers: Array<Fiber.Fiber<unknown, unknown>> = []
          for (let i = 1; i <= 5; i++) {
            fibers.push(yield* Effect.forkChild(pool.spawn(cmd("job", String(i)))))
            yield* awaitStats(pool, (s) => s.waiting === i)
          }
          yield* TestClock.adjust(600)
          assert.deepStrictEqual(os.spawnOrder(), ["holder", "job 1", "job 2", "job 3", "job 4", "job 5"])
          assert.deepStrictEqual(
            os.processes().map((p) => p.startedAt),
            [0, 100, 200, 300, 400, 500]
          )
          assert.strictEqual(os.maxAlive(), 1)
        }))
    }))

  it.effect("fails with SlotTimeout after `slotTimeout`, and not before", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      yield* withPool(os, { slots: 1, slotTimeout: "2 seconds" }, (pool) =>
        Effect.gen(function*() {
          yield* pool.spawn(cmd("server"))
          const late = yield* Effect.forkChild(pool.spawn(cmd("late")))
          yield* awaitStats(pool, (s) => s.waiting === 1)
          yield* TestClock.adjust(1999)
          assert.isUndefined(yield* poll(late))
          yield* TestClock.adjust(1)
          const error = errorOf(yield* poll(late))
          assert.strictEqual(error._tag, "SlotTimeout")
          if (error._tag !== "SlotTimeout") return
          assert.strictEqual(error.waitedMs, 2000)
          assert.strictEqual(error.slots, 1)
          assert.strictEqual(error.command, "late")
          assert.strictEqual(error.session, "default")
          assert.deepStrictEqual(yield* slotsOf(pool), { inUse: 1, waiting: 0 })
          assert.deepStrictEqual(os.spawnOrder(), ["server"])
        }))
    }))

  it.effect("refuses at once with HardCapExceeded when inUse + waiting reaches hardCap", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      yield* withPool(os, { slots: 1, hardCap: 2 }, (pool) =>
        Effect.gen(function*() {
          yield* pool.spawn(cmd("server"))
          yield* Effect.forkChild(pool.spawn(cmd("waiter")))
          yield* awaitStats(pool, (s) => s.waiting === 1)
          const error = yield* Effect.flip(pool.spawn(cmd("third", "x")))
          assert.strictEqual(error._tag, "HardCapExceeded")
          if (error._tag !== "HardCapExceeded") return
          assert.deepStrictEqual(
            { hardCap: error.hardCap, tracked: error.tracked, waiting: error.waiting, command: error.command },
            { hardCap: 2, tracked: 1, waiting: 1, command: "third x" }
          )
          assert.strictEqual(yield* Clock.currentTimeMillis, 0, "refused without waiting")
          assert.deepStrictEqual(yield* slotsOf(pool), { inUse: 1, waiting: 1 })
        }))
    }))

  it.effect("an interrupted waiter leaks no slot", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      yield* withPool(os, { slots: 1 }, (pool) =>
        Effect.gen(function*() {
          const server = yield* pool.spawn(cmd("server"))
          const waiter = yield* Effect.forkChild(pool.spawn(cmd("late")))
          yield* awaitStats(pool, (s) => s.waiting === 1)
          yield* Fiber.interrupt(waiter)
          assert.deepStrictEqual(yield* slotsOf(pool), { inUse: 1, waiting: 0 })
          yield* os.exit(server.pid)
          yield* server.awaitTeardown
          assert.deepStrictEqual(yield* slotsOf(pool), { inUse: 0, waiting: 0 })
          const next = yield* pool.spawn(cmd("next"))
          assert.strictEqual(next.slotWaitMs, 0)
          // Still exactly one slot: neither lost nor duplicated.
          const blocked = yield* Effect.forkChild(pool.spawn(cmd("blocked")))
          yield* awaitStats(pool, (s) => s.waiting === 1)
          yield* TestClock.adjust(1000)
          assert.isUndefined(yield* poll(blocked))
          assert.deepStrictEqual(yield* slotsOf(pool), { inUse: 1, waiting: 1 })
          assert.deepStrictEqual(os.spawnOrder(), ["server", "next"])
        }))
    }))

  it.effect("a failed spawn (NotFound) is a SpawnError and releases its slot", () =>
    Effect.gen(function*() {
      const os = TestOs.make({ launchDelay: "5 millis" })
      os.define("missing", { failSpawn: "NotFound" })
      yield* withPool(os, { slots: 1 }, (pool) =>
        Effect.gen(function*() {
          const failing = yield* Effect.forkChild(pool.spawn(cmd("missing", "--flag")))
          yield* TestClock.adjust(5)
          const error = errorOf(yield* poll(failing))
          assert.strictEqual(error._tag, "SpawnError")
          if (error._tag !== "SpawnError") return
          assert.strictEqual(error.command, "missing --flag")
          assert.include(error.reason, "NotFound")
          assert.deepStrictEqual(yield* slotsOf(pool), { inUse: 0, waiting: 0 })
          assert.deepStrictEqual(yield* pool.processes, [])
          const ok = yield* Effect.forkChild(pool.spawn(cmd("worker")))
          yield* TestClock.adjust(5)
          assert.strictEqual(valueOf(yield* poll(ok)).slotWaitMs, 0)
          assert.deepStrictEqual(yield* slotsOf(pool), { inUse: 1, waiting: 0 })
        }))
    }))

  it.effect("refuses spawns into a closing session with PoolClosed; other sessions still work", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      os.define("stubborn", { onTerm: "ignore" })
      yield* withPool(os, {}, (pool) =>
        Effect.gen(function*() {
          yield* pool.spawn(cmd("stubborn"), { session: "s" })
          const closing = yield* Effect.forkChild(pool.closeSession("s"))
          yield* waitUntil(() => os.signalsSent().length === 1, "SIGTERM sent")
          const error = yield* Effect.flip(pool.spawn(cmd("worker"), { session: "s" }))
          assert.strictEqual(error._tag, "PoolClosed")
          if (error._tag === "PoolClosed") assert.strictEqual(error.session, "s")
          const joined = yield* Effect.flip(Effect.scoped(pool.session("s")))
          assert.strictEqual(joined._tag, "PoolClosed")
          const other = yield* pool.spawn(cmd("worker"), { session: "t" })
          assert.strictEqual(other.session, "t")
          yield* TestClock.adjust(5000)
          assert.deepStrictEqual(tags(valueOf(yield* poll(closing))), ["Forced"])
          assert.deepStrictEqual(os.spawnOrder(), ["stubborn", "worker"])
        }))
    }))

  it.effect("refuses spawns and sessions after shutdown with PoolClosed", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      yield* withPool(os, {}, (pool) =>
        Effect.gen(function*() {
          yield* pool.spawn(cmd("worker"))
          const reports = yield* settleValue(pool.shutdown)
          assert.deepStrictEqual(tags(reports), ["Graceful"])
          assert.isTrue((yield* pool.stats).closing)
          const error = yield* Effect.flip(pool.spawn(cmd("worker")))
          assert.strictEqual(error._tag, "PoolClosed")
          const session = yield* Effect.flip(Effect.scoped(pool.session("x")))
          assert.strictEqual(session._tag, "PoolClosed")
          assert.deepStrictEqual(yield* pool.shutdown, reports, "shutdown is idempotent")
          assert.deepStrictEqual(os.spawnOrder(), ["worker"])
        }))
    }))

  it.effect("waiters of a closing session fail with PoolClosed at once; other waiters keep waiting", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      os.define("stubborn", { onTerm: "ignore" })
      yield* withPool(os, { slots: 1 }, (pool) =>
        Effect.gen(function*() {
          yield* pool.spawn(cmd("stubborn"), { session: "s" })
          const sameSession = yield* Effect.forkChild(pool.spawn(cmd("a"), { session: "s" }))
          yield* awaitStats(pool, (s) => s.waiting === 1)
          const otherSession = yield* Effect.forkChild(pool.spawn(cmd("b"), { session: "t" }))
          yield* awaitStats(pool, (s) => s.waiting === 2)
          const closing = yield* Effect.forkChild(pool.closeSession("s"))
          const error = errorOf(yield* poll(sameSession))
          assert.strictEqual(error._tag, "PoolClosed")
          assert.strictEqual(yield* Clock.currentTimeMillis, 0)
          assert.isUndefined(yield* poll(otherSession))
          yield* TestClock.adjust(5000)
          assert.deepStrictEqual(tags(valueOf(yield* poll(closing))), ["Forced"])
          const b = valueOf(yield* poll(otherSession))
          assert.strictEqual(b.slotWaitMs, 5000)
          assert.deepStrictEqual(os.spawnOrder(), ["stubborn", "b"])
        }))
    }))

  it.effect("pool shutdown fails every waiter with PoolClosed", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      yield* withPool(os, { slots: 1 }, (pool) =>
        Effect.gen(function*() {
          yield* pool.spawn(cmd("server"), { session: "a" })
          const waiter = yield* Effect.forkChild(pool.spawn(cmd("late"), { session: "b" }))
          yield* awaitStats(pool, (s) => s.waiting === 1)
          const reports = yield* settleValue(pool.shutdown)
          assert.deepStrictEqual(tags(reports), ["Graceful"])
          assert.strictEqual(errorOf(yield* poll(waiter))._tag, "PoolClosed")
          assert.deepStrictEqual(yield* slotsOf(pool), { inUse: 0, waiting: 0 })
          assert.deepStrictEqual(os.spawnOrder(), ["server"])
        }))
    }))
})

describe("ProcessPool kill state machine", () => {
  it.effect("a cooperative tree ends Graceful at once, every member signalled", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      os.define("coop", { children: 2 })
      yield* withPool(os, {}, (pool) =>
        Effect.gen(function*() {
          const p = yield* pool.spawn(cmd("coop"), { session: "s" })
          assert.strictEqual(os.alive().length, 3)
          const [report] = yield* settleValue(pool.closeSession("s"))
          assert.strictEqual(report!._tag, "Graceful")
          if (report!._tag !== "Graceful") return
          assert.strictEqual(report.signal, "SIGTERM")
          assert.strictEqual(report.durationMs, 0)
          assert.strictEqual(report.pid, p.pid)
          assert.sameMembers([...report.signalled], os.processes().map((x) => x.pid))
          assert.isTrue(os.signalsSent().every((s) => s.signal === "SIGTERM"))
          assert.deepStrictEqual(os.alive(), [])
        }))
    }))

  it.effect("a TERM-ignoring process is Forced exactly when the grace ends, not before", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      os.define("stubborn", { onTerm: "ignore" })
      yield* withPool(os, { kill: { grace: "5 seconds", forceWait: "1 second" } }, (pool) =>
        Effect.gen(function*() {
          const p = yield* pool.spawn(cmd("stubborn"), { session: "s" })
          const closing = yield* Effect.forkChild(pool.closeSession("s"))
          yield* TestClock.adjust(4999)
          assert.isUndefined(yield* poll(closing))
          assert.isTrue(Option.isNone(yield* p.teardown))
          assert.deepStrictEqual(os.signalsSent().map((s) => s.signal), ["SIGTERM"])
          assert.strictEqual(os.alive().length, 1)
          yield* TestClock.adjust(1)
          const [report] = valueOf(yield* poll(closing))
          assert.strictEqual(report!._tag, "Forced")
          if (report!._tag !== "Forced") return
          assert.deepStrictEqual(report.forced, [p.pid])
          assert.strictEqual(report.durationMs, 5000)
          assert.deepStrictEqual(os.signalsSent().map((s) => [s.signal, s.at]), [["SIGTERM", 0], ["SIGKILL", 5000]])
          assert.deepStrictEqual(os.process(p.pid)!.status, { code: null, signal: "SIGKILL" })
        }))
    }))

  it.effect("a process that exits by itself is Exited with its code, and no signal is sent", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      os.define("task", { exitAfterMs: 300, exitCode: 7 })
      yield* withPool(os, {}, (pool) =>
        Effect.gen(function*() {
          const p = yield* pool.spawn(cmd("task"), { session: "s" })
          yield* TestClock.adjust(300)
          const report = yield* p.teardown
          assert.isTrue(Option.isSome(report))
          if (Option.isNone(report) || report.value._tag !== "Exited") return assert.fail("expected Exited")
          assert.strictEqual(report.value.code, 7)
          assert.isNull(report.value.signal)
          assert.deepStrictEqual(report.value.signalled, [])
          assert.deepStrictEqual(os.signalsSent(), [])
          assert.deepStrictEqual(yield* p.awaitExit, { code: 7, signal: null })
          assert.strictEqual(yield* p.handle.exitCode, 7)
          assert.isFalse(yield* p.handle.isRunning)
          assert.deepStrictEqual(yield* pool.processes, [])
          assert.deepStrictEqual(yield* pool.closeSession("s"), [], "nothing left to tear down")
        }))
    }))

  it.effect("members left behind by a natural exit are terminated (report stays Exited)", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      os.define("parent", { exitAfterMs: 100, exitCode: 0, children: 2 })
      yield* withPool(os, {}, (pool) =>
        Effect.gen(function*() {
          const p = yield* pool.spawn(cmd("parent"))
          yield* TestClock.adjust(100)
          const report = yield* p.teardown
          if (Option.isNone(report) || report.value._tag !== "Exited") return assert.fail("expected Exited")
          const children = os.processes().filter((x) => x.role === "child").map((x) => x.pid)
          assert.sameMembers([...report.value.signalled], children)
          assert.notInclude(report.value.signalled, p.pid)
          assert.deepStrictEqual(
            os.signalsSent().map((s) => [s.pid, s.signal]),
            children.map((pid) => [pid, "SIGTERM"])
          )
          assert.deepStrictEqual(os.alive(), [])
        }))
    }))

  it.effect("TERM-ignoring leftovers of a natural exit are SIGKILLed after the grace", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      os.define("parent", { exitAfterMs: 100, children: 1, childrenOnTerm: "ignore" })
      yield* withPool(os, { kill: { grace: 1000 } }, (pool) =>
        Effect.gen(function*() {
          const p = yield* pool.spawn(cmd("parent"))
          yield* TestClock.adjust(1099)
          assert.isTrue(Option.isNone(yield* p.teardown))
          assert.strictEqual(os.alive().length, 1)
          yield* TestClock.adjust(1)
          const report = yield* p.teardown
          if (Option.isNone(report) || report.value._tag !== "Exited") return assert.fail("expected Exited")
          assert.strictEqual(report.value.durationMs, 1000)
          const child = os.processes().find((x) => x.role === "child")!
          assert.deepStrictEqual(report.value.signalled, [child.pid])
          assert.deepStrictEqual(child.status, { code: null, signal: "SIGKILL" })
        }))
    }))

  it.effect("a member that survives SIGKILL is reported Escaped with its pid after grace + forceWait", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      os.define("stuck", { unkillable: 1 })
      yield* withPool(os, { kill: { grace: 1000, forceWait: 500 } }, (pool) =>
        Effect.gen(function*() {
          yield* pool.spawn(cmd("stuck"), { session: "s" })
          const [report] = yield* settleValue(pool.closeSession("s"))
          const stuck = os.alive()
          assert.strictEqual(stuck.length, 1)
          assert.strictEqual(stuck[0]!.role, "unkillable")
          if (report!._tag !== "Escaped") return assert.fail(`expected Escaped, got ${report!._tag}`)
          assert.deepStrictEqual(report.escaped, [stuck[0]!.pid])
          assert.strictEqual(report.durationMs, 1500)
          assert.deepStrictEqual(yield* slotsOf(pool), { inUse: 0, waiting: 0 })
          yield* os.exit(stuck[0]!.pid)
        }))
    }))

  it.effect("members that left the group but carry the cookie are found and terminated", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      os.define("daemonizer", { escapedChildren: 2, children: 1 })
      yield* withPool(os, {}, (pool) =>
        Effect.gen(function*() {
          const p = yield* pool.spawn(cmd("daemonizer"), { session: "s" })
          const escaped = os.alive().filter((x) => x.role === "escaped")
          assert.strictEqual(escaped.length, 2)
          assert.isTrue(escaped.every((x) => x.pgid !== p.pgid && x.shepherdId === p.shepherdId))
          const [report] = yield* settleValue(pool.closeSession("s"))
          assert.strictEqual(report!._tag, "Graceful")
          assert.includeMembers([...report!.signalled], escaped.map((x) => x.pid))
          assert.strictEqual(report!.signalled.length, 4)
          assert.deepStrictEqual(os.alive(), [])
        }))
    }))

  it.effect("pool.hurry ends a running grace at once, and later teardowns SIGKILL immediately", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      os.define("stubborn", { onTerm: "ignore" })
      yield* withPool(os, { kill: { grace: "10 seconds" } }, (pool) =>
        Effect.gen(function*() {
          yield* pool.spawn(cmd("stubborn"), { session: "a" })
          const closing = yield* Effect.forkChild(pool.closeSession("a"))
          yield* TestClock.adjust(100)
          assert.isUndefined(yield* poll(closing))
          yield* pool.hurry
          const [report] = valueOf(yield* poll(closing))
          assert.strictEqual(report!._tag, "Forced")
          assert.strictEqual(report!.durationMs, 100)
          assert.strictEqual(yield* Clock.currentTimeMillis, 100)
          const late = yield* pool.spawn(cmd("stubborn", "late"), { session: "b" })
          const [second] = yield* settleValue(pool.closeSession("b"))
          assert.strictEqual(second!._tag, "Forced")
          assert.strictEqual(second!.durationMs, 0)
          assert.deepStrictEqual(
            os.signalsSent().filter((s) => s.pid === late.pid).map((s) => s.signal),
            ["SIGKILL"],
            "no graceful signal once hurried"
          )
        }))
    }))

  it.effect("a per-spawn kill policy overrides the pool's", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      os.define("stubborn", { onTerm: "ignore" })
      yield* withPool(os, { kill: { grace: "5 seconds" } }, (pool) =>
        Effect.gen(function*() {
          const quick = yield* pool.spawn(cmd("stubborn", "quick"), {
            session: "s",
            kill: { signal: "SIGINT", grace: "200 millis", forceWait: 50 }
          })
          const normal = yield* pool.spawn(cmd("stubborn", "normal"), { session: "s" })
          assert.deepStrictEqual(quick.policy, { signal: "SIGINT", graceMs: 200, forceWaitMs: 50 })
          assert.deepStrictEqual(normal.policy, { signal: "SIGTERM", graceMs: 5000, forceWaitMs: 1000 })
          const closing = yield* Effect.forkChild(pool.closeSession("s"))
          yield* TestClock.adjust(200)
          const quickReport = yield* quick.teardown
          assert.isTrue(
            Option.isSome(quickReport) && quickReport.value._tag === "Forced" && quickReport.value.durationMs === 200
          )
          assert.isUndefined(yield* poll(closing))
          yield* TestClock.adjust(4800)
          assert.deepStrictEqual(tags(valueOf(yield* poll(closing))).sort(), ["Forced", "Forced"])
          assert.deepStrictEqual(
            os.signalsSent().map((s) => [s.pid, s.signal, s.at]),
            [[quick.pid, "SIGINT", 0], [normal.pid, "SIGTERM", 0], [quick.pid, "SIGKILL", 200], [
              normal.pid,
              "SIGKILL",
              5000
            ]]
          )
        }))
    }))

  it.effect("an invalid per-spawn kill policy is a SpawnError before any slot is taken", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      yield* withPool(os, {}, (pool) =>
        Effect.gen(function*() {
          const error = yield* Effect.flip(pool.spawn(cmd("worker"), { kill: { grace: -5 } }))
          assert.strictEqual(error._tag, "SpawnError")
          if (error._tag === "SpawnError") assert.include(error.reason, "invalid kill policy")
          assert.deepStrictEqual(yield* slotsOf(pool), { inUse: 0, waiting: 0 })
          assert.deepStrictEqual(os.spawnOrder(), [])
        }))
    }))

  it.effect("terminate is idempotent: concurrent callers get the same report", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      os.define("stubborn", { onTerm: "ignore" })
      yield* withPool(os, {}, (pool) =>
        Effect.gen(function*() {
          const p = yield* pool.spawn(cmd("stubborn"))
          const first = yield* Effect.forkChild(p.terminate({ grace: "1 second" }))
          const second = yield* Effect.forkChild(p.terminate())
          yield* TestClock.adjust(1000)
          const a = valueOf(yield* poll(first))
          const b = valueOf(yield* poll(second))
          assert.strictEqual(a, b)
          assert.strictEqual(a._tag, "Forced")
          assert.strictEqual(a.durationMs, 1000, "the first caller's policy wins")
          assert.isFalse(yield* p.handle.isRunning)
          assert.deepStrictEqual(yield* pool.processes, [])
          assert.deepStrictEqual(yield* slotsOf(pool), { inUse: 0, waiting: 0 })
        }))
    }))

  it.effect("a leader that exits on the SIGTERM of a longer grace asked through terminate does not cut it short", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      // The leader exits at once on SIGTERM; its member needs 10 s to clean up.
      os.define("cleaner", { onTerm: "exit", children: 1, childrenOnTerm: { exitAfterMs: 10_000 } })
      yield* withPool(os, { kill: { grace: "5 seconds" } }, (pool) =>
        Effect.gen(function*() {
          const p = yield* pool.spawn(cmd("cleaner"))
          const fiber = yield* Effect.forkChild(p.terminate({ grace: "30 seconds" }))
          yield* TestClock.adjust(11_000)
          // The pool's 5 s policy, which a natural exit applies, is not a harsher request here.
          const report = valueOf(yield* poll(fiber))
          assert.strictEqual(report._tag, "Graceful", `got ${report._tag} after ${report.durationMs} ms`)
          assert.deepStrictEqual(os.signalsSent().map((s) => s.signal), ["SIGTERM", "SIGTERM"])
          assert.deepStrictEqual(yield* slotsOf(pool), { inUse: 0, waiting: 0 })
        }))
    }))

  it.effect("ChildProcessHandle.kill tears the tree down with the requested signal", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      yield* withPool(os, {}, (pool) =>
        Effect.gen(function*() {
          const p = yield* pool.spawn(cmd("worker"))
          assert.isTrue(yield* p.handle.isRunning)
          yield* p.handle.kill({ killSignal: "SIGHUP" })
          const report = yield* p.awaitTeardown
          assert.strictEqual(report._tag, "Graceful")
          if (report._tag === "Graceful") assert.strictEqual(report.signal, "SIGHUP")
          assert.deepStrictEqual(os.signalsSent().map((s) => s.signal), ["SIGHUP"])
          const exitCode = yield* Effect.flip(p.handle.exitCode)
          assert.include(exitCode.message, "SIGHUP")
        }))
    }))

  it.effect("an unreadable process table gives an Unverified report and still frees the slot", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      yield* withPool(os, { slots: 1 }, (pool) =>
        Effect.gen(function*() {
          const p = yield* pool.spawn(cmd("worker"), { session: "s" })
          os.breakTable("cannot read /proc: EACCES")
          const [report] = yield* settleValue(pool.closeSession("s"))
          assert.strictEqual(report!._tag, "Unverified")
          if (report!._tag === "Unverified") assert.strictEqual(report.reason, "cannot read /proc: EACCES")
          assert.deepStrictEqual(yield* slotsOf(pool), { inUse: 0, waiting: 0 })
          os.breakTable(undefined)
          yield* os.exit(p.pid)
        }))
    }))
})

describe("ProcessPool sessions", () => {
  it.effect("closing one session leaves the other's processes alive", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      yield* withPool(os, {}, (pool) =>
        Effect.gen(function*() {
          const a1 = yield* pool.spawn(cmd("w", "a1"), { session: "a" })
          const a2 = yield* pool.spawn(cmd("w", "a2"), { session: "a" })
          const b1 = yield* pool.spawn(cmd("w", "b1"), { session: "b" })
          const b2 = yield* pool.spawn(cmd("w", "b2"), { session: "b" })
          const reports = yield* settleValue(pool.closeSession("a"))
          assert.sameMembers(reports.map((r) => r.pid), [a1.pid, a2.pid])
          assert.sameMembers(os.alive().map((p) => p.pid), [b1.pid, b2.pid])
          assert.isTrue(os.signalsSent().every((s) => s.pid === a1.pid || s.pid === a2.pid))
          assert.sameMembers((yield* pool.processes).map((p) => p.pid), [b1.pid, b2.pid])
          assert.deepStrictEqual((yield* pool.stats).sessions, ["b"])
          assert.isTrue(yield* b1.handle.isRunning)
        }))
    }))

  it.effect("closeSession of an unknown id is a no-op returning []", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      yield* withPool(os, {}, (pool) =>
        Effect.gen(function*() {
          yield* pool.spawn(cmd("w"), { session: "a" })
          assert.deepStrictEqual(yield* pool.closeSession("nope"), [])
          assert.deepStrictEqual(os.signalsSent(), [])
          assert.strictEqual(os.alive().length, 1)
          assert.deepStrictEqual((yield* pool.stats).sessions, ["a"])
        }))
    }))

  it.effect("concurrent closeSession calls both get the same reports", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      os.define("stubborn", { onTerm: "ignore" })
      yield* withPool(os, { kill: { grace: 1000 } }, (pool) =>
        Effect.gen(function*() {
          yield* pool.spawn(cmd("stubborn", "1"), { session: "s" })
          yield* pool.spawn(cmd("stubborn", "2"), { session: "s" })
          const first = yield* Effect.forkChild(pool.closeSession("s"))
          const second = yield* Effect.forkChild(pool.closeSession("s"))
          yield* TestClock.adjust(1000)
          const a = valueOf(yield* poll(first))
          const b = valueOf(yield* poll(second))
          assert.strictEqual(a.length, 2)
          assert.deepStrictEqual(tags(a), ["Forced", "Forced"])
          assert.deepStrictEqual(b, a)
          a.forEach((report, i) => assert.strictEqual(b[i], report))
          assert.strictEqual(os.signalsSent().filter((s) => s.signal === "SIGTERM").length, 2, "torn down once")
        }))
    }))

  it.effect("a session's processes are torn down concurrently (G, not N × G)", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      os.define("stubborn", { onTerm: "ignore" })
      yield* withPool(os, { slots: 10, kill: { grace: 1000, forceWait: 500 } }, (pool) =>
        Effect.gen(function*() {
          for (let i = 0; i < 10; i++) yield* pool.spawn(cmd("stubborn", String(i)), { session: "s" })
          const closing = yield* Effect.forkChild(pool.closeSession("s"))
          yield* TestClock.adjust(1000)
          const reports = valueOf(yield* poll(closing))
          assert.strictEqual(reports.length, 10)
          assert.isTrue(reports.every((r) => r._tag === "Forced" && r.durationMs === 1000))
          assert.strictEqual(yield* Clock.currentTimeMillis, 1000)
          assert.deepStrictEqual(os.alive(), [])
        }))
    }))

  it.effect("closeSession does not return while a process of the session is still being launched", () =>
    Effect.gen(function*() {
      const os = TestOs.make({ launchDelay: "100 millis" })
      yield* withPool(os, {}, (pool) =>
        Effect.gen(function*() {
          const spawning = yield* Effect.forkChild(pool.spawn(cmd("w"), { session: "s" }))
          yield* waitUntil(() => os.launching() === 1, "launch in progress")
          const closing = yield* Effect.forkChild(Effect.andThen(pool.closeSession("s"), Clock.currentTimeMillis))
          yield* TestClock.adjust(200)
          const closedAt = valueOf(yield* poll(closing))
          assert.strictEqual(errorOf(yield* poll(spawning))._tag, "PoolClosed")
          const tree = os.processes()
          assert.strictEqual(tree.length, 1)
          assert.isAtMost(
            tree[0]!.startedAt,
            closedAt,
            `started at ${tree[0]!.startedAt}, after closeSession returned at ${closedAt}`
          )
        }))
    }))

  it.effect("shutdown closes every session concurrently and returns all reports", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      os.define("stubborn", { onTerm: "ignore" })
      yield* withPool(os, { kill: { grace: 1000 } }, (pool) =>
        Effect.gen(function*() {
          yield* pool.spawn(cmd("stubborn", "a"), { session: "a" })
          yield* pool.spawn(cmd("stubborn", "b"), { session: "b" })
          yield* pool.spawn(cmd("w", "c"), { session: "c" })
          const shutdown = yield* Effect.forkChild(pool.shutdown)
          yield* TestClock.adjust(1000)
          const reports = valueOf(yield* poll(shutdown))
          assert.deepStrictEqual(tags(reports).sort(), ["Forced", "Forced", "Graceful"])
          assert.deepStrictEqual((yield* pool.stats).sessions, [])
          assert.deepStrictEqual(os.alive(), [])
        }))
    }))

  it.effect("withSession makes spawns default to that session and closes it afterwards", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      os.define("coop", { children: 1 })
      yield* withPool(os, {}, (pool) =>
        Effect.gen(function*() {
          const outside = yield* pool.spawn(cmd("coop", "outside"))
          const [session, p] = yield* settleValue(pool.withSession(
            "w",
            Effect.gen(function*() {
              const current = yield* CurrentSession
              const p = yield* pool.spawn(cmd("coop", "inside"))
              assert.strictEqual(os.alive().length, 4)
              return [current, p] as const
            })
          ))
          assert.strictEqual(session, "w")
          assert.strictEqual(p.session, "w")
          assert.strictEqual(outside.session, "default")
          assert.isFalse(yield* p.handle.isRunning)
          assert.isTrue(Option.isSome(yield* p.teardown))
          assert.deepStrictEqual((yield* pool.stats).sessions, ["default"])
          assert.deepStrictEqual(os.alive().map((x) => x.line), ["coop outside", "coop outside"])
        }))
    }))

  it.effect("withSession tears its processes down concurrently", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      os.define("stubborn", { onTerm: "ignore" })
      yield* withPool(os, { kill: { grace: 1000, forceWait: 100 } }, (pool) =>
        Effect.gen(function*() {
          const run = yield* Effect.forkChild(pool.withSession(
            "w",
            Effect.gen(function*() {
              for (let i = 0; i < 3; i++) yield* pool.spawn(cmd("stubborn", String(i)))
            })
          ))
          yield* TestClock.adjust(1000)
          const doneAfterGrace = (yield* poll(run)) !== undefined
          yield* TestClock.adjust(10_000) // let the sequential teardown finish before asserting
          assert.deepStrictEqual(os.alive(), [])
          assert.isTrue(doneAfterGrace, "withSession should be done after one grace period")
        }))
    }))

  it.effect("a scoped session tears its processes down concurrently when its scope closes", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      os.define("stubborn", { onTerm: "ignore" })
      yield* withPool(os, { kill: { grace: 1000, forceWait: 100 } }, (pool) =>
        Effect.gen(function*() {
          const run = yield* Effect.forkChild(Effect.scoped(
            Effect.gen(function*() {
              const session = yield* pool.session("scoped")
              for (let i = 0; i < 3; i++) yield* session.spawn(cmd("stubborn", String(i)))
            })
          ))
          yield* TestClock.adjust(1000)
          const doneAfterGrace = (yield* poll(run)) !== undefined
          yield* TestClock.adjust(10_000)
          assert.deepStrictEqual(os.alive(), [])
          assert.isTrue(doneAfterGrace, "the scope should close after one grace period")
        }))
    }))

  it.effect("sessions opened in one scope close together with each other and its processes (G, not N × G)", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      os.define("stubborn", { onTerm: "ignore" })
      yield* withPool(os, { slots: 8, kill: { grace: 1000, forceWait: 100 } }, (pool) =>
        Effect.gen(function*() {
          const run = yield* Effect.forkChild(Effect.scoped(
            Effect.gen(function*() {
              for (let i = 0; i < 4; i++) yield* (yield* pool.session(`s${i}`)).spawn(cmd("stubborn", String(i)))
              yield* pool.spawn(cmd("stubborn", "loose"), { session: "loose" })
            })
          ))
          yield* TestClock.adjust(1000)
          const doneAfterGrace = (yield* poll(run)) !== undefined
          yield* TestClock.adjust(10_000)
          assert.deepStrictEqual(os.alive(), [])
          assert.isTrue(doneAfterGrace, "the scope should close after one grace period")
        }))
    }))

  it.effect("session(id) binds a Session to the current scope", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      yield* withPool(os, {}, (pool) =>
        Effect.gen(function*() {
          const spawned = yield* settleValue(Effect.scoped(
            Effect.gen(function*() {
              const session = yield* pool.session("scoped")
              const a = yield* session.spawn(cmd("w", "1"))
              const b = yield* session.spawn(cmd("w", "2"))
              assert.strictEqual(session.id, "scoped")
              assert.sameMembers((yield* session.processes).map((p) => p.pid), [a.pid, b.pid])
              assert.deepStrictEqual((yield* pool.stats).sessions, ["scoped"])
              return [a, b]
            })
          ))
          assert.deepStrictEqual(os.alive(), [])
          assert.deepStrictEqual((yield* pool.stats).sessions, [])
          for (const p of spawned) assert.strictEqual((yield* p.awaitTeardown)._tag, "Graceful")
        }))
    }))

  it.effect("Session.close tears down concurrently and is idempotent", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      os.define("stubborn", { onTerm: "ignore" })
      yield* withPool(os, { kill: { grace: 1000 } }, (pool) =>
        Effect.gen(function*() {
          const session = yield* pool.session("x")
          yield* session.spawn(cmd("stubborn", "1"))
          yield* session.spawn(cmd("stubborn", "2"))
          const closing = yield* Effect.forkChild(session.close)
          yield* TestClock.adjust(1000)
          const reports = valueOf(yield* poll(closing))
          assert.deepStrictEqual(tags(reports), ["Forced", "Forced"])
          assert.strictEqual(yield* session.close, reports)
        }))
    }))

  it.effect("ProcessPool.spawner supervises plain ChildProcess.make code in the current session", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      os.define("missing", { failSpawn: "NotFound" })
      yield* withPool(os, {}, (pool) =>
        Effect.gen(function*() {
          const handle = yield* pool.withSession(
            "legacy",
            Effect.gen(function*() {
              const handle = yield* ChildProcess.make("legacy-tool", ["--run"])
              assert.deepStrictEqual((yield* pool.processes).map((p) => p.session), ["legacy"])
              const error = yield* Effect.flip(ChildProcess.make("missing", []))
              assert.strictEqual(error.reason._tag, "NotFound")
              return handle
            })
          ).pipe(Effect.provide(ProcessPool.spawner.pipe(Layer.provide(Layer.succeed(ProcessPool, pool)))))
          assert.strictEqual(os.processes()[0]!.pid, handle.pid)
          assert.strictEqual(os.processes()[0]!.line, "legacy-tool --run")
          assert.deepStrictEqual(os.alive(), [])
        }))
    }))

  it.effect("the pool's own scope tears everything down when the layer is released", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      const shepherdId = yield* Effect.scoped(
        Effect.gen(function*() {
          const pool = yield* ProcessPool
          const p = yield* pool.spawn(cmd("w"), { session: "s" })
          return p.shepherdId
        }).pipe(Effect.provide(ProcessPool.layer().pipe(Layer.provide(os.layer))))
      )
      assert.match(shepherdId, /^shepherd~[0-9a-f]{8}:1$/)
      assert.deepStrictEqual(os.alive(), [])
      assert.deepStrictEqual(os.signalsSent().map((s) => s.signal), ["SIGTERM"])
    }))
})

describe("ProcessPool reaper", () => {
  it.effect("reapNow terminates a live carrier of the pool's cookie that nothing tracks", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      yield* withPool(os, { reapInterval: "1 hour" }, (pool) =>
        Effect.gen(function*() {
          os.define("escaper", { onTerm: "exit", escapedChildren: 1 })
          const p = yield* pool.spawn(cmd("escaper"), { session: "s" })
          os.breakTable("transient EIO")
          const [report] = yield* settleValue(pool.closeSession("s"))
          // The leader (our own child) is still signalled; the escaped member cannot be seen.
          assert.strictEqual(report!._tag, "Unverified")
          assert.isUndefined(os.process(p.pid) && os.alive().find((x) => x.pid === p.pid))
          os.breakTable(undefined)
          const left = os.alive()
          assert.strictEqual(left.length, 1, "the escaped member is left alive and untracked")
          assert.strictEqual(left[0]!.shepherdId, p.shepherdId)
          const tick = yield* settleValue(pool.reapNow)
          assert.deepStrictEqual(tick.untracked.map((a) => [a.shepherdId, a.outcome]), [[p.shepherdId, "Graceful"]])
          assert.deepStrictEqual(os.alive(), [])
        }))
    }))

  it.effect("the reaper leaves tracked processes alone", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      yield* withPool(os, { reapInterval: "1 second" }, (pool) =>
        Effect.gen(function*() {
          yield* pool.spawn(cmd("worker"))
          yield* TestClock.adjust(3000)
          const tick = yield* pool.lastTick
          assert.isTrue(Option.isSome(tick) && tick.value.tick >= 3)
          if (Option.isSome(tick)) assert.deepStrictEqual([tick.value.stale, tick.value.untracked], [[], []])
          assert.strictEqual(os.alive().length, 1)
          assert.deepStrictEqual(os.signalsSent(), [])
        }))
    }))

  it.effect("the first tick runs while the layer is built, before the first spawn; the next one a full interval later", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      yield* withPool(os, { reapInterval: "10 seconds" }, (pool) =>
        Effect.gen(function*() {
          const first = yield* pool.lastTick
          assert.isTrue(Option.isSome(first), "a tick report exists as soon as the pool does")
          const p = yield* pool.spawn(cmd("worker"))
          const tick = yield* pool.lastTick
          assert.isTrue(Option.isSome(tick) && tick.value.tick === 1 && tick.value.at <= p.startedAt)
          yield* TestClock.adjust(9_999)
          assert.strictEqual(Option.map(yield* pool.lastTick, (t) => t.tick).pipe(Option.getOrUndefined), 1)
          yield* TestClock.adjust(1)
          assert.strictEqual(Option.map(yield* pool.lastTick, (t) => t.tick).pipe(Option.getOrUndefined), 2)
        }))
    }))

  it.effect("reapInterval 0 is refused (a zero period would rescan the process table without pause)", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(ShepherdConfig.resolve({ reapInterval: 0 }))
      assert.strictEqual(error.field, "reapInterval")
    }))
})

describe("ProcessPool and its lifeline", () => {
  // A lifeline whose `ready` or `register` fails on demand, recording what it was told.
  const lifeline = () => {
    const calls: Array<string> = []
    const fail = { ready: false, register: false }
    const unavailable = (shepherdId: string) =>
      Effect.fail(new Lifeline.LifelineUnavailable({ shepherdId, waitedMs: 10, reason: "stalled" }))
    const service = Lifeline.Lifeline.of({
      attach: () =>
        Effect.succeed({
          ready: (shepherdId) => fail.ready ? unavailable(shepherdId) : Effect.void,
          register: (c) => {
            calls.push(`register ${c.shepherdId}`)
            return fail.register ? unavailable(c.shepherdId) : Effect.void
          },
          unregister: (id) => Effect.sync(() => void calls.push(`unregister ${id}`)),
          status: Effect.succeed({ kind: "test", alive: true, watching: 0, restarts: 0 })
        })
    })
    return { service, calls, fail }
  }

  it.effect("a spawn whose registration the lifeline does not take is torn down and fails typed", () => {
    const { calls, fail, service } = lifeline()
    return Effect.gen(function*() {
      const os = TestOs.make()
      yield* withPool(os, { slots: 1 }, (pool) =>
        Effect.gen(function*() {
          fail.register = true
          const spawning = yield* Effect.forkChild(pool.spawn(cmd("worker")))
          yield* TestClock.adjust(60_000)
          const error = errorOf(yield* poll(spawning))
          assert.strictEqual(error._tag, "SpawnError")
          if (error._tag !== "SpawnError") return
          assert.strictEqual(error.kind, "Lifeline")
          assert.include(error.reason, "stalled")
          // Started, then torn down: nothing runs, the slot is back, the lifeline was told both.
          assert.deepStrictEqual(os.spawnOrder(), ["worker"])
          assert.deepStrictEqual(os.alive(), [])
          assert.deepStrictEqual(yield* slotsOf(pool), { inUse: 0, waiting: 0 })
          assert.deepStrictEqual(yield* pool.processes, [])
          assert.strictEqual(calls.length, 2)
          assert.match(calls[0]!, /^register /)
          assert.match(calls[1]!, /^unregister /)
          fail.register = false
          const ok = yield* Effect.forkChild(pool.spawn(cmd("worker")))
          yield* TestClock.adjust(0)
          valueOf(yield* poll(ok))
          assert.deepStrictEqual(yield* slotsOf(pool), { inUse: 1, waiting: 0 })
        }))
    }).pipe(Effect.provideService(Lifeline.Lifeline, service))
  })

  it.effect("a spawn while the lifeline is not ready fails typed without forking", () => {
    const { calls, fail, service } = lifeline()
    return Effect.gen(function*() {
      const os = TestOs.make()
      yield* withPool(os, { slots: 1 }, (pool) =>
        Effect.gen(function*() {
          fail.ready = true
          const spawning = yield* Effect.forkChild(pool.spawn(cmd("worker")))
          yield* TestClock.adjust(60_000)
          const error = errorOf(yield* poll(spawning))
          assert.strictEqual(error._tag, "SpawnError")
          if (error._tag === "SpawnError") assert.strictEqual(error.kind, "Lifeline")
          assert.deepStrictEqual(os.spawnOrder(), [])
          assert.deepStrictEqual(calls, [])
          assert.deepStrictEqual(yield* slotsOf(pool), { inUse: 0, waiting: 0 })
        }))
    }).pipe(Effect.provideService(Lifeline.Lifeline, service))
  })
})
