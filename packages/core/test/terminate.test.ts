/**
 * The graceful-to-forced kill algorithm (`internal/terminate.ts`) on its own,
 * over the simulated process table, with the TestClock.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber } from "effect"
import type { Scope } from "effect"
import { ChildProcess } from "effect/process"
import { TestClock } from "effect/testing"
import { terminate } from "../src/internal/terminate.ts"
import type { KillPolicy } from "../src/KillPolicy.ts"
import { type Launched, ProcessLauncher } from "../src/ProcessLauncher.ts"
import { ProcessTable } from "../src/ProcessTable.ts"
import { TestOs } from "../src/testing.ts"
import { poll, valueOf } from "./utils.ts"

const policy: KillPolicy = { signal: "SIGTERM", graceMs: 5000, forceWaitMs: 1000 }

interface Harness {
  readonly os: TestOs.TestOs
  readonly table: ProcessTable["Service"]
  readonly hurry: Deferred.Deferred<void>
  /** Launches `command` as tree `t:<n>` and returns it with its `terminate` input. */
  readonly launch: (command: string) => Effect.Effect<
    {
      readonly launched: Launched
      readonly run: (policy?: KillPolicy) => ReturnType<typeof terminate>
    },
    never,
    Scope.Scope
  >
}

const harness = <A, E>(
  define: (os: TestOs.TestOs) => void,
  body: (h: Harness) => Effect.Effect<A, E, Scope.Scope>
) => {
  const os = TestOs.make()
  define(os)
  return Effect.gen(function*() {
    const table = yield* ProcessTable
    const launcher = yield* ProcessLauncher
    const hurry = yield* Deferred.make<void>()
    let n = 0
    const launch = (command: string) =>
      Effect.gen(function*() {
        const shepherdId = `t:${++n}`
        const launched = yield* Effect.orDie(
          launcher.launch(ChildProcess.make(command, []), { SHEPHERD_ID: shepherdId })
        )
        const run = (p: KillPolicy = policy) =>
          terminate({
            table,
            container: { pgid: launched.pgid, shepherdId, leader: launched.identity },
            policy: p,
            leader: { exitStatus: launched.exitStatus, exit: launched.exit },
            hurry
          })
        return { launched, run }
      })
    return yield* body({ os, table, hurry, launch })
  }).pipe(Effect.provide(os.layer))
}

describe("terminate", () => {
  it.effect("a cooperative tree is Graceful at once; every member is signalled", () =>
    harness((os) => os.define("coop", { children: 2, escapedChildren: 1 }), ({ launch, os }) =>
      Effect.gen(function*() {
        const { run } = yield* launch("coop")
        const r = yield* run()
        assert.strictEqual(r.outcome._tag, "Graceful")
        assert.strictEqual(r.durationMs, 0)
        assert.sameMembers([...r.signalled], os.processes().map((p) => p.pid))
        assert.deepStrictEqual(r.forced, [])
        assert.deepStrictEqual(os.alive(), [])
      })))

  it.effect("wakes as soon as a slow TERM handler exits, not on the next poll", () =>
    harness(
      (os) => os.define("slow", { onTerm: { exitAfterMs: 333, code: 0 } }),
      ({ launch }) =>
        Effect.gen(function*() {
          const { launched, run } = yield* launch("slow")
          const fiber = yield* Effect.forkChild(run())
          yield* TestClock.adjust(332)
          assert.isUndefined(yield* poll(fiber))
          yield* TestClock.adjust(1)
          const r = valueOf(yield* poll(fiber))
          assert.strictEqual(r.outcome._tag, "Graceful")
          assert.strictEqual(r.durationMs, 333)
          assert.deepStrictEqual(launched.exitStatus(), { code: 0, signal: null })
        })
    ))

  it.effect("SIGKILLs a TERM-ignoring tree exactly when the grace ends", () =>
    harness(
      (os) => os.define("stubborn", { onTerm: "ignore", children: 1 }),
      ({ launch, os }) =>
        Effect.gen(function*() {
          const { run } = yield* launch("stubborn")
          const fiber = yield* Effect.forkChild(run())
          yield* TestClock.adjust(4999)
          assert.isUndefined(yield* poll(fiber))
          assert.isTrue(os.signalsSent().every((s) => s.signal === "SIGTERM"))
          yield* TestClock.adjust(1)
          const r = valueOf(yield* poll(fiber))
          assert.strictEqual(r.outcome._tag, "Forced")
          assert.strictEqual(r.durationMs, 5000)
          assert.sameMembers([...r.forced], os.processes().map((p) => p.pid))
          assert.sameMembers([...r.signalled], os.processes().map((p) => p.pid))
        })
    ))

  it.effect("with SIGKILL as the policy's signal there is no graceful phase", () =>
    harness((os) => os.define("stubborn", { onTerm: "ignore" }), ({ launch, os }) =>
      Effect.gen(function*() {
        const { run } = yield* launch("stubborn")
        const r = yield* run({ ...policy, signal: "SIGKILL" })
        assert.strictEqual(r.outcome._tag, "Forced")
        assert.strictEqual(r.durationMs, 0)
        assert.deepStrictEqual(os.signalsSent().map((s) => s.signal), ["SIGKILL"])
      })))

  it.effect("hurried before it starts: SIGKILL only, at once", () =>
    harness((os) => os.define("stubborn", { onTerm: "ignore" }), ({ hurry, launch, os }) =>
      Effect.gen(function*() {
        const { run } = yield* launch("stubborn")
        yield* Deferred.succeed(hurry, undefined)
        const r = yield* run()
        assert.strictEqual(r.outcome._tag, "Forced")
        assert.strictEqual(r.durationMs, 0)
        assert.deepStrictEqual(os.signalsSent().map((s) => s.signal), ["SIGKILL"])
      })))

  it.effect("hurried during the grace: the grace ends at once", () =>
    harness((os) => os.define("stubborn", { onTerm: "ignore" }), ({ hurry, launch }) =>
      Effect.gen(function*() {
        const { run } = yield* launch("stubborn")
        const fiber = yield* Effect.forkChild(run())
        yield* TestClock.adjust(1234)
        yield* Deferred.succeed(hurry, undefined)
        const r = valueOf(yield* poll(fiber))
        assert.strictEqual(r.outcome._tag, "Forced")
        assert.strictEqual(r.durationMs, 1234)
      })))

  it.effect("a member that survives SIGKILL is Escaped after grace + forceWait", () =>
    harness(
      (os) => os.define("stuck", { onTerm: "ignore", unkillable: 1 }),
      ({ launch, os }) =>
        Effect.gen(function*() {
          const { launched, run } = yield* launch("stuck")
          const fiber = yield* Effect.forkChild(run())
          yield* TestClock.adjust(5999)
          assert.isUndefined(yield* poll(fiber))
          yield* TestClock.adjust(1)
          const r = valueOf(yield* poll(fiber))
          const stuck = os.alive()
          assert.strictEqual(stuck.length, 1)
          assert.deepStrictEqual(r.outcome, { _tag: "Escaped", escaped: [stuck[0]!.pid] })
          assert.strictEqual(r.durationMs, 6000)
          assert.include(r.forced, launched.pid)
          yield* os.exit(stuck[0]!.pid)
        })
    ))

  it.effect("a SIGKILL survivor that dies within forceWait still counts as Forced", () =>
    harness(
      (os) => os.define("stuck", { onTerm: "ignore", unkillable: 1 }),
      ({ launch, os }) =>
        Effect.gen(function*() {
          const { run } = yield* launch("stuck")
          const fiber = yield* Effect.forkChild(run())
          yield* TestClock.adjust(5500)
          const stuck = os.alive()
          yield* os.exit(stuck[0]!.pid)
          yield* TestClock.adjust(20)
          const r = valueOf(yield* poll(fiber))
          assert.strictEqual(r.outcome._tag, "Forced")
          assert.isAtMost(r.durationMs, 5520)
        })
    ))

  it.effect("an unreadable table still ends the leader (our own child) and reports Unverified", () =>
    harness(() => {}, ({ launch, os }) =>
      Effect.gen(function*() {
        const { launched, run } = yield* launch("w")
        os.breakTable("no /proc")
        const r = yield* run()
        assert.deepStrictEqual(r.outcome, { _tag: "Unverified", reason: "no /proc" })
        assert.deepStrictEqual(os.signalsSent().map((x) => [x.pid, x.signal]), [[launched.pid, "SIGTERM"]])
        assert.isUndefined(os.alive().find((p) => p.pid === launched.pid))
        os.breakTable(undefined)
      })))

  it.effect("a leader that exited and left nothing behind is Exited with its status, no signal sent", () =>
    harness((os) => os.define("task", { exitAfterMs: 10, exitCode: 3 }), ({ launch, os }) =>
      Effect.gen(function*() {
        const { run } = yield* launch("task")
        yield* TestClock.adjust(10)
        const r = yield* run()
        assert.deepStrictEqual(r.outcome, { _tag: "Exited", status: { code: 3, signal: null } })
        assert.deepStrictEqual(r.signalled, [])
        assert.deepStrictEqual(os.signalsSent(), [])
      })))

  it.effect("a gone leader whose exit was never reported is waited for grace + forceWait, then Exited unknown", () =>
    harness(() => {}, ({ launch, os, table, hurry }) =>
      Effect.gen(function*() {
        const { launched } = yield* launch("w")
        yield* os.exit(launched.pid)
        const fiber = yield* Effect.forkChild(terminate({
          table,
          container: { pgid: launched.pgid, shepherdId: "t:1", leader: launched.identity },
          policy,
          leader: { exitStatus: () => undefined, exit: Effect.never },
          hurry
        }))
        yield* TestClock.adjust(5999)
        assert.isUndefined(yield* poll(fiber))
        yield* TestClock.adjust(1)
        const r = valueOf(yield* poll(fiber))
        assert.deepStrictEqual(r.outcome, { _tag: "Exited", status: { code: null, signal: null } })
        yield* Fiber.interrupt(fiber)
      })))

  it.effect("an orphan container (no leader handle) is found by its cookie, or reported Gone", () =>
    harness(
      (os) => os.define("daemon", { escapedChildren: 1 }),
      ({ launch, os, table, hurry }) =>
        Effect.gen(function*() {
          const { launched } = yield* launch("daemon")
          const orphan = { pgid: -1, shepherdId: "t:1", leader: launched.identity }
          const r = yield* terminate({ table, container: orphan, policy, hurry })
          assert.strictEqual(r.outcome._tag, "Graceful")
          assert.sameMembers([...r.signalled], os.processes().map((p) => p.pid))
          const again = yield* terminate({ table, container: orphan, policy, hurry })
          assert.deepStrictEqual(again.outcome, { _tag: "Gone" })
        })
    ))
})
