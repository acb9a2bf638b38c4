/**
 * Sessions and pool shutdown on real processes: isolation between sessions,
 * idempotent and concurrent closes, and no spawn into a closing pool.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Fiber } from "effect"
import { assertNoSurvivors, awaitMembers, awaitStats, cleanupPools, membersOf, sh, show, withPool } from "./harness.ts"
import { isAlive, trees } from "./support.ts"

afterEach(cleanupPools)

const kill = { grace: "300 millis", forceWait: "500 millis" } as const

describe("sessions", () => {
  it.live("closing session A leaves session B's processes alive", () =>
    withPool({ name: "t-isolation", kill }, (pool, prefix) =>
      Effect.gen(function*() {
        const a = yield* Effect.forEach([1, 2], () => pool.spawn(sh(trees.cooperative), { session: "A" }))
        const b = yield* Effect.forEach([1, 2], () => pool.spawn(sh(trees.ignoresTerm), { session: "B" }))
        const aMembers = (yield* Effect.forEach(a, (m) => awaitMembers(m.shepherdId, 3))).flat()
        const bMembers = (yield* Effect.forEach(b, (m) => awaitMembers(m.shepherdId, 3))).flat()

        const reports = yield* pool.closeSession("A")
        assert.strictEqual(reports.length, 2)
        assert.sameMembers(reports.map((r) => r.shepherdId), a.map((m) => m.shepherdId))
        for (const r of reports) assert.strictEqual(r.session, "A")
        for (const p of aMembers) assert.isFalse(isAlive(p.pid), show(p))

        // B is untouched: same processes, still alive, still tracked
        for (const p of bMembers) assert.isTrue(isAlive(p.pid), show(p))
        for (const m of b) assert.strictEqual(membersOf(m.shepherdId).length, 3)
        const stats = yield* pool.stats
        assert.deepStrictEqual(stats.sessions, ["B"])
        assert.strictEqual(stats.inUse, 2)
        assert.sameMembers((yield* pool.processes).map((m) => m.shepherdId), b.map((m) => m.shepherdId))

        const bReports = yield* pool.closeSession("B")
        assert.deepStrictEqual(bReports.map((r) => r._tag), ["Forced", "Forced"])
        for (const p of bMembers) assert.isFalse(isAlive(p.pid), show(p))
        assertNoSurvivors(prefix)
      })))

  it.live("closeSession of an unknown id is a no-op", () =>
    withPool({ name: "t-unknown-session", kill }, (pool, prefix) =>
      Effect.gen(function*() {
        const m = yield* pool.spawn(sh(trees.cooperative), { session: "known" })
        const members = yield* awaitMembers(m.shepherdId, 3)

        assert.deepStrictEqual(yield* pool.closeSession("no-such-session"), [])
        assert.deepStrictEqual(yield* pool.closeSession("no-such-session"), [])

        for (const p of members) assert.isTrue(isAlive(p.pid), show(p))
        assert.deepStrictEqual((yield* pool.stats).sessions, ["known"])
        const reports = yield* pool.closeSession("known")
        assert.strictEqual(reports[0]?._tag, "Graceful")
        assertNoSurvivors(prefix)
      })))

  it.live("concurrent closeSession calls both resolve with the same reports", () =>
    withPool({ name: "t-concurrent-close", kill }, (pool, prefix) =>
      Effect.gen(function*() {
        const spawned = yield* Effect.forEach(
          [trees.ignoresTerm, trees.cooperative, trees.setsidGrandchild],
          (script) => pool.spawn(sh(script), { session: "s" })
        )
        yield* Effect.forEach(spawned, (m) => awaitMembers(m.shepherdId, 3))

        const [first, second] = yield* Effect.all([pool.closeSession("s"), pool.closeSession("s")], {
          concurrency: "unbounded"
        })
        assert.strictEqual(first.length, 3)
        assert.deepStrictEqual(second, first)
        for (let i = 0; i < first.length; i++) assert.strictEqual(second[i], first[i])
        assert.sameMembers(first.map((r) => r._tag), ["Forced", "Graceful", "Forced"])
        // a third, later close is a no-op
        assert.deepStrictEqual(yield* pool.closeSession("s"), [])
        assertNoSurvivors(prefix)
      })))

  it.live("Session.close and closeSession of the same session agree", () =>
    withPool({ name: "t-session-close", kill }, (pool, prefix) =>
      Effect.gen(function*() {
        const session = yield* pool.session("s")
        const m = yield* session.spawn(sh(trees.cooperative))
        yield* awaitMembers(m.shepherdId, 3)
        assert.deepStrictEqual((yield* session.processes).map((p) => p.shepherdId), [m.shepherdId])

        const [viaHandle, viaPool] = yield* Effect.all([session.close, pool.closeSession("s")], {
          concurrency: "unbounded"
        })
        assert.strictEqual(viaHandle.length, 1)
        assert.strictEqual(viaPool[0], viaHandle[0])
        assert.strictEqual(viaHandle[0]?._tag, "Graceful")
        assertNoSurvivors(prefix)
      })))

  it.live("a closed Session handle refuses new processes (PoolClosed)", () =>
    withPool({ name: "t-closed-handle", kill }, (pool, prefix) =>
      Effect.gen(function*() {
        const session = yield* pool.session("s")
        yield* session.spawn(sh(trees.cooperative))
        yield* session.close
        const spawned = yield* Effect.result(session.spawn(sh(trees.cooperative)))
        assert.strictEqual(spawned._tag, "Failure")
        if (spawned._tag === "Failure") assert.strictEqual(spawned.failure._tag, "PoolClosed")
        assertNoSurvivors(prefix)
      })))

  it.live("withSession closes its session when the effect ends", () =>
    withPool({ name: "t-with-session", kill }, (pool, prefix) =>
      Effect.gen(function*() {
        const members = yield* pool.withSession(
          "w",
          Effect.gen(function*() {
            const m = yield* pool.spawn(sh(trees.ignoresTerm))
            assert.strictEqual(m.session, "w")
            return yield* awaitMembers(m.shepherdId, 3)
          })
        )
        for (const p of members) assert.isFalse(isAlive(p.pid), show(p))
        assert.deepStrictEqual((yield* pool.stats).sessions, [])
        assertNoSurvivors(prefix)
      })))
})

describe("sessions opened in one scope", () => {
  it.live("close together: every tree of 5 sessions is signalled before any tree is SIGKILLed", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-sessions-"))
    const markers = path.join(dir, "term")
    // Ignores SIGTERM (the trap records it, `sleep` dies and is started again): only SIGKILL ends it.
    const script = `trap 'echo $$ >> ${markers}' TERM; while :; do sleep 1; done`
    return withPool(
      { name: "t-scope-sessions", slots: 8, kill: { grace: "1 second", forceWait: "500 millis" } },
      (pool, prefix) =>
        Effect.gen(function*() {
          const spawned = yield* Effect.scoped(Effect.gen(function*() {
            const all = []
            for (let i = 0; i < 5; i++) {
              const session = yield* pool.session(`s${i}`)
              all.push(yield* session.spawn(sh(script)))
            }
            yield* Effect.forEach(all, (m) => awaitMembers(m.shepherdId, 2))
            return all
          }))
          const ids = new Set(spawned.map((m) => m.shepherdId))
          const reports = (yield* pool.doctor).recent.filter((r) => ids.has(r.shepherdId))
          assert.strictEqual(reports.length, 5)
          for (const r of reports) assert.strictEqual(r.outcome, "Forced")
          // Overlapping teardowns: each one began (signal) before any one ended (SIGKILL confirmed).
          const lastStart = Math.max(...reports.map((r) => r.at - r.durationMs))
          const firstEnd = Math.min(...reports.map((r) => r.at))
          assert.isBelow(lastStart, firstEnd, JSON.stringify(reports.map((r) => [r.at - r.durationMs, r.at])))
          const termed = new Set(fs.readFileSync(markers, "utf8").split("\n").filter((l) => l.length > 0).map(Number))
          assert.sameMembers([...termed], spawned.map((m) => m.pid), "every leader received SIGTERM")
          assertNoSurvivors(prefix)
        })
    ).pipe(Effect.ensuring(Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))))
  }, 60_000)
})

describe("shutdown", () => {
  it.live("spawn during and after shutdown fails with PoolClosed; waiters give up", () =>
    withPool({ name: "t-shutdown", slots: 1, kill }, (pool, prefix) =>
      Effect.gen(function*() {
        const busy = yield* pool.spawn(sh(trees.ignoresTerm), { session: "s" })
        const members = yield* awaitMembers(busy.shepherdId, 3)
        // a request waiting for the only slot when shutdown begins
        const waiter = yield* Effect.forkChild(Effect.flip(pool.spawn(sh(trees.cooperative), { session: "s2" })))
        yield* awaitStats(pool, "one waiter", (s) => s.waiting === 1)

        const shutdown = yield* Effect.forkChild(pool.shutdown)
        yield* awaitStats(pool, "closing", (s) => s.closing)

        const during = yield* Effect.flip(pool.spawn(sh(trees.cooperative), { session: "s" }))
        assert.strictEqual(during._tag, "PoolClosed")
        const duringNew = yield* Effect.flip(pool.spawn(sh(trees.cooperative), { session: "fresh" }))
        assert.strictEqual(duringNew._tag, "PoolClosed")
        const waited = yield* Fiber.join(waiter)
        assert.strictEqual(waited._tag, "PoolClosed")

        const reports = yield* Fiber.join(shutdown)
        assert.deepStrictEqual(reports.map((r) => r._tag), ["Forced"])
        for (const p of members) assert.isFalse(isAlive(p.pid), show(p))

        const after = yield* Effect.flip(pool.spawn(sh(trees.cooperative)))
        assert.strictEqual(after._tag, "PoolClosed")
        const session = yield* Effect.flip(pool.session("later"))
        assert.strictEqual(session._tag, "PoolClosed")
        // shutdown is idempotent
        assert.deepStrictEqual(yield* pool.shutdown, reports)
        assert.strictEqual((yield* pool.stats).inUse, 0)
        assertNoSurvivors(prefix)
      })))
})
