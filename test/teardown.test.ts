/**
 * How process trees end, on real processes: every tree shape the library
 * promises to contain, checked afterwards in /proc.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import {
  assertNoSurvivors,
  awaitMembers,
  awaitStats,
  cleanupPools,
  membersOf,
  sh,
  show,
  since,
  withPool
} from "./harness.ts"
import { isAlive, type ProcInfo, trees } from "./support.ts"

afterEach(cleanupPools)

const grace = 300
const forceWait = 500
const kill = { grace: `${grace} millis`, forceWait: `${forceWait} millis` } as const
/** The longest a forced teardown may take. */
const forcedBound = grace + forceWait + 500

describe("teardown of process trees", () => {
  it.live("a cooperative tree (3 processes) ends gracefully, fast", () =>
    withPool({ name: "t-cooperative", kill }, (pool, prefix) =>
      Effect.gen(function*() {
        const managed = yield* pool.spawn(sh(trees.cooperative), { session: "s" })
        const members = yield* awaitMembers(managed.shepherdId, 3)
        assert.strictEqual(members.length, 3, members.map(show).join("\n"))
        for (const m of members) assert.strictEqual(m.pgid, managed.pgid)

        const start = performance.now()
        const reports = yield* pool.closeSession("s")
        const elapsed = since(start)

        assert.strictEqual(reports.length, 1)
        const report = reports[0]!
        assert.strictEqual(report._tag, "Graceful")
        assert.strictEqual(report.pid, managed.pid)
        assert.strictEqual(report.shepherdId, managed.shepherdId)
        assert.isBelow(report.durationMs, 100)
        assert.isBelow(elapsed, 100)
        assert.sameMembers([...report.signalled], members.map((m) => m.pid))
        for (const m of members) assert.isFalse(isAlive(m.pid), show(m))
        assertNoSurvivors(prefix)
      })
    ))

  it.live("a tree ignoring SIGTERM is forced after the grace period", () =>
    withPool({ name: "t-ignores-term", kill }, (pool, prefix) =>
      Effect.gen(function*() {
        const managed = yield* pool.spawn(sh(trees.ignoresTerm), { session: "s" })
        const members = yield* awaitMembers(managed.shepherdId, 3)

        const start = performance.now()
        const [report] = yield* pool.closeSession("s")
        const elapsed = since(start)

        assert.strictEqual(report?._tag, "Forced")
        if (report?._tag !== "Forced") return
        assert.isAtLeast(report.durationMs, grace - 5)
        assert.isBelow(elapsed, forcedBound)
        assert.sameMembers([...report.forced], members.map((m) => m.pid))
        assertNoSurvivors(prefix)
      })
    ))

  it.live("a group member that outlives its leader is terminated; the report is Exited", () =>
    withPool({ name: "t-outlives-leader", kill }, (pool, prefix) =>
      Effect.gen(function*() {
        const managed = yield* pool.spawn(sh(trees.memberOutlivesLeader), { session: "s" })
        const [member] = (yield* awaitMembers(managed.shepherdId, 2)).filter((p) => p.pid !== managed.pid)
        assert.isDefined(member)

        // The leader exits by itself after 0.2 s; the pool must clean up the member it left behind.
        const start = performance.now()
        const report = yield* managed.awaitTeardown
        const elapsed = since(start)

        assert.strictEqual(report._tag, "Exited")
        if (report._tag !== "Exited") return
        assert.strictEqual(report.code, 0)
        assert.strictEqual(report.signal, null)
        assert.include([...report.signalled], member!.pid)
        assert.notInclude([...report.signalled], managed.pid)
        assert.isFalse(isAlive(member!.pid))
        // leader sleeps 0.2 s, then the member ignores TERM for the whole grace
        assert.isBelow(elapsed, 200 + forcedBound)
        assertNoSurvivors(prefix)
        // its slot comes back without any session close
        yield* awaitStats(pool, "slot released", (s) => s.inUse === 0, 100)
      })
    ))

  it.live("a setsid grandchild (own session and group) is found and killed", () =>
    withPool({ name: "t-setsid", kill }, (pool, prefix) =>
      Effect.gen(function*() {
        const managed = yield* pool.spawn(sh(trees.setsidGrandchild), { session: "s" })
        const members = yield* awaitMembers(managed.shepherdId, 3)
        const escaped = members.filter((p) => p.pgid !== managed.pgid)
        assert.isAtLeast(escaped.length, 1, members.map(show).join("\n"))

        const start = performance.now()
        const [report] = yield* pool.closeSession("s")
        assert.isBelow(since(start), forcedBound)
        assert.strictEqual(report?._tag, "Forced")
        for (const p of members) assert.isFalse(isAlive(p.pid), show(p))
        assertNoSurvivors(prefix)
      })
    ))

  it.live("a double-forked grandchild (reparented, same group) is found and killed", () =>
    withPool({ name: "t-double-fork", kill }, (pool, prefix) =>
      Effect.gen(function*() {
        const managed = yield* pool.spawn(sh(trees.doubleFork), { session: "s" })
        const members = yield* awaitMembers(managed.shepherdId, 4)
        const reparented = members.filter((p) => p.pid !== managed.pid && p.ppid !== managed.pid)
        assert.isAtLeast(reparented.length, 1, members.map(show).join("\n"))

        const start = performance.now()
        const [report] = yield* pool.closeSession("s")
        assert.isBelow(since(start), forcedBound)
        assert.strictEqual(report?._tag, "Forced")
        for (const p of members) assert.isFalse(isAlive(p.pid), show(p))
        assertNoSurvivors(prefix)
      })
    ))

  it.live("one session holding every escape shape, all ignoring SIGTERM, closes with 0 survivors", () =>
    withPool({ name: "t-escape-matrix", slots: 8, kill }, (pool, prefix) =>
      Effect.gen(function*() {
        // One tree with every kind of member at once...
        const all = [
          "trap '' TERM",
          "sleep 1000 &", // same-group child
          "(sh -c 'sleep 1000' &)", // double-forked child (reparented, same group): sh + sleep
          "setsid sh -c 'sleep 1000' &", // setsid child (own session and group): sh + sleep
          "(setsid sh -c 'sleep 1000' &)", // setsid double-forked child: sh + sleep
          "wait"
        ].join("\n")
        const session = yield* pool.session("matrix")
        const composite = yield* session.spawn(sh(all))
        // ...plus each shape of `trees` as its own tree in the same session.
        const shapes = [trees.ignoresTerm, trees.setsidGrandchild, trees.doubleFork, trees.setsidDoubleFork]
        const others = yield* Effect.forEach(shapes, (script) => session.spawn(sh(script)))
        const expected = [[composite, 8], ...others.map((m, i) => [m, [3, 3, 4, 4][i]!] as const)] as const
        const members = (yield* Effect.forEach(expected, ([m, n]) => awaitMembers(m.shepherdId, n))).flat()
        const leaders = new Set([composite, ...others].map((m) => m.pgid))
        assert.isAtLeast(members.filter((p) => !leaders.has(p.pgid)).length, 3, members.map(show).join("\n"))
        assert.isAtLeast(members.filter((p) => p.ppid === 1).length, 2, members.map(show).join("\n"))

        const start = performance.now()
        const reports = yield* pool.closeSession("matrix")
        const elapsed = since(start)

        assert.strictEqual(reports.length, 5)
        for (const r of reports) assert.strictEqual(r._tag, "Forced", `${r.command}: ${r._tag}`)
        assert.isBelow(elapsed, forcedBound)
        for (const p of members) assert.isFalse(isAlive(p.pid), show(p))
        assertNoSurvivors(prefix)
      })
    ))

  it.live("a child that exits by itself with code 3 is reported Exited, nothing signalled", () =>
    withPool({ name: "t-exit-3", kill }, (pool, prefix) =>
      Effect.gen(function*() {
        const managed = yield* pool.spawn(sh("exit 3"), { session: "s" })
        const report = yield* managed.awaitTeardown
        assert.strictEqual(report._tag, "Exited")
        if (report._tag !== "Exited") return
        assert.strictEqual(report.code, 3)
        assert.strictEqual(report.signal, null)
        assert.deepStrictEqual([...report.signalled], [])
        assert.strictEqual(yield* managed.handle.exitCode, 3)
        yield* awaitStats(pool, "slot released", (s) => s.inUse === 0, 100)
        assertNoSurvivors(prefix)
      })
    ))

  it.live("a chatty child whose output nobody reads still exits by itself", () =>
    withPool({ name: "t-chatty", kill }, (pool, prefix) =>
      Effect.gen(function*() {
        const start = performance.now()
        const managed = yield* pool.spawn(sh("head -c 5000000 /dev/zero; head -c 5000000 /dev/zero >&2"), {
          session: "s"
        })
        const report = yield* managed.awaitTeardown.pipe(Effect.timeout("10 seconds"))
        assert.strictEqual(report._tag, "Exited")
        if (report._tag !== "Exited") return
        assert.strictEqual(report.code, 0)
        assert.isBelow(since(start), 10_000)
        assertNoSurvivors(prefix)
        assert.deepStrictEqual(membersOf(managed.shepherdId), [])
      })
    ))

  // Regression: each process used to be one finalizer of the caller's (sequential) scope, so
  // closing a scope holding N SIGTERM-ignoring trees took N x grace (6 trees: ~1.9 s). Fixed in
  // 1cfc8e2 (a caller scope's trees live in a parallel child scope).
  it.live("closing the caller's scope tears all its trees down concurrently", () =>
    withPool({ name: "t-scope-close", slots: 6, kill }, (pool, prefix) =>
      Effect.gen(function*() {
        let members: ReadonlyArray<ProcInfo> = []
        let start = 0
        yield* Effect.scoped(Effect.gen(function*() {
          const spawned = yield* Effect.forEach(Array.from({ length: 6 }), () => pool.spawn(sh(trees.ignoresTerm)))
          members = (yield* Effect.forEach(spawned, (m) => awaitMembers(m.shepherdId, 3))).flat()
          start = performance.now()
        }))
        const elapsed = since(start)
        for (const p of members) assert.isFalse(isAlive(p.pid), show(p))
        assertNoSurvivors(prefix)
        assert.isBelow(elapsed, forcedBound, `closing the scope took ${Math.round(elapsed)} ms`)
      })
    ))
})
