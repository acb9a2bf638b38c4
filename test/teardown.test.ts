/**
 * How process trees end, on real processes: every tree shape the library
 * promises to contain, checked afterwards in /proc.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import type { ProcessPool } from "@shepherd/core/ProcessPool"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect } from "effect"
import {
  assertNoSurvivors,
  awaitMembers,
  awaitStats,
  cleanupPools,
  eventually,
  membersOf,
  sh,
  show,
  withPool
} from "./harness.ts"
import { isAlive, type ProcInfo, trees } from "./support.ts"

afterEach(cleanupPools)

const grace = 300
const forceWait = 500
const kill = { grace: `${grace} millis`, forceWait: `${forceWait} millis` } as const
/**
 * A grace period no test outlives: a teardown that completes under it cannot have waited for it.
 * (How long teardowns take is measured by `pnpm bench`, scenarios 2 and 3, not asserted here.)
 */
const endlessGrace = { grace: "1 hour", forceWait: `${forceWait} millis` } as const

/** The pool's own record of its recent teardowns of `ids`, with when each one ended (`at`). */
const recentOf = (pool: ProcessPool["Service"], ids: ReadonlySet<string>) =>
  Effect.map(pool.doctor, (d) => d.recent.filter((r) => ids.has(r.shepherdId)))

// Every shape, whichever process forks the trees: the host, or the fork helper (NodeHelperLauncher).
describe.each(["host", "helper"] as const)("teardown of process trees (forked by the %s)", (forkFrom) => {
  it.live("a cooperative tree (3 processes) ends gracefully, without waiting for the grace period", () =>
    withPool({ forkFrom, name: "t-cooperative", kill: endlessGrace }, (pool, prefix) =>
      Effect.gen(function*() {
        const managed = yield* pool.spawn(sh(trees.cooperative), { session: "s" })
        const members = yield* awaitMembers(managed.shepherdId, 3)
        assert.strictEqual(members.length, 3, members.map(show).join("\n"))
        for (const m of members) assert.strictEqual(m.pgid, managed.pgid)

        // The grace period is an hour: the close returns when the tree is gone, not when the grace ends.
        const reports = yield* pool.closeSession("s")

        assert.strictEqual(reports.length, 1)
        const report = reports[0]!
        assert.strictEqual(report._tag, "Graceful")
        assert.strictEqual(report.pid, managed.pid)
        assert.strictEqual(report.shepherdId, managed.shepherdId)
        assert.sameMembers([...report.signalled], members.map((m) => m.pid))
        for (const m of members) assert.isFalse(isAlive(m.pid), show(m))
        assertNoSurvivors(prefix)
      })))

  it.live("a tree ignoring SIGTERM is forced after the grace period", () =>
    withPool({ forkFrom, name: "t-ignores-term", kill }, (pool, prefix) =>
      Effect.gen(function*() {
        const managed = yield* pool.spawn(sh(trees.ignoresTerm), { session: "s" })
        const members = yield* awaitMembers(managed.shepherdId, 3)

        const [report] = yield* pool.closeSession("s")

        assert.strictEqual(report?._tag, "Forced")
        if (report?._tag !== "Forced") return
        // SIGKILL came only after the grace period (the pool's own clock, so load cannot make it shorter)
        assert.isAtLeast(report.durationMs, grace - 5)
        assert.sameMembers([...report.forced], members.map((m) => m.pid))
        assertNoSurvivors(prefix)
      })))

  it.live("a longer grace asked through terminate outlasts the leader's exit on its SIGTERM", () =>
    withPool({ forkFrom, name: "t-longer-grace", kill }, (pool, prefix) => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-longer-grace-"))
      const ready = path.join(dir, "ready")
      // The leader exits at once on SIGTERM; its member, on the first SIGTERM, ignores the next ones
      // and takes a second to clean up: longer than the pool's grace, well within the one asked for.
      const script = `trap 'exit 0' TERM; ` +
        `(trap 'trap "" TERM; sleep 1; exit 0' TERM; echo x > ${ready}.tmp; mv ${ready}.tmp ${ready}; ` +
        `while :; do sleep 0.05; done) & ` +
        `while [ ! -s ${ready} ]; do sleep 0.01; done; wait`
      return Effect.gen(function*() {
        const managed = yield* pool.spawn(sh(script), { session: "s" })
        yield* awaitMembers(managed.shepherdId, 3)
        yield* eventually("the member's trap", () => fs.existsSync(ready))
        // The leader's exit must not apply the pool's 300 ms grace to the teardown that caused it.
        const report = yield* managed.terminate({ grace: "30 seconds" })
        assert.strictEqual(report._tag, "Graceful", `got ${report._tag} after ${report.durationMs} ms`)
        assertNoSurvivors(prefix)
        yield* awaitStats(pool, "slot released", (s) => s.inUse === 0)
      }).pipe(Effect.ensuring(Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))))
    }))

  it.live("a group member that outlives its leader is terminated; the report is Exited", () =>
    withPool({ forkFrom, name: "t-outlives-leader", kill }, (pool, prefix) => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-outlives-"))
      const pidFile = path.join(dir, "member")
      // The member (same group, ignoring TERM and HUP) writes its pid, and only then does the leader
      // exit: no fixed pause, and no need to see both alive at once (the pool ends the member at once).
      const script =
        `(trap '' TERM HUP; exec sh -c 'echo $$ > ${pidFile}.tmp; mv ${pidFile}.tmp ${pidFile}; exec sleep 1000') & ` +
        `while [ ! -s ${pidFile} ]; do sleep 0.01; done; exit 0`
      return Effect.gen(function*() {
        const managed = yield* pool.spawn(sh(script), { session: "s" })

        // The leader exits by itself; the pool must clean up the member it left behind.
        const report = yield* managed.awaitTeardown
        const member = Number(fs.readFileSync(pidFile, "utf8").trim())
        assert.isAbove(member, 0)

        assert.strictEqual(report._tag, "Exited")
        if (report._tag !== "Exited") return
        assert.strictEqual(report.code, 0)
        assert.strictEqual(report.signal, null)
        assert.include([...report.signalled], member)
        assert.notInclude([...report.signalled], managed.pid)
        assert.isFalse(isAlive(member))
        assertNoSurvivors(prefix)
        // its slot comes back without any session close
        yield* awaitStats(pool, "slot released", (s) => s.inUse === 0)
      }).pipe(Effect.ensuring(Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))))
    }))

  it.live("a setsid grandchild (own session and group) is found and killed", () =>
    withPool({ forkFrom, name: "t-setsid", kill }, (pool, prefix) =>
      Effect.gen(function*() {
        const managed = yield* pool.spawn(sh(trees.setsidGrandchild), { session: "s" })
        const members = yield* awaitMembers(managed.shepherdId, 3)
        const escaped = members.filter((p) => p.pgid !== managed.pgid)
        assert.isAtLeast(escaped.length, 1, members.map(show).join("\n"))

        const [report] = yield* pool.closeSession("s")
        assert.strictEqual(report?._tag, "Forced")
        for (const p of members) assert.isFalse(isAlive(p.pid), show(p))
        assertNoSurvivors(prefix)
      })))

  it.live("a double-forked grandchild (reparented, same group) is found and killed", () =>
    withPool({ forkFrom, name: "t-double-fork", kill }, (pool, prefix) =>
      Effect.gen(function*() {
        const managed = yield* pool.spawn(sh(trees.doubleFork), { session: "s" })
        const members = yield* awaitMembers(managed.shepherdId, 4)
        const reparented = members.filter((p) => p.pid !== managed.pid && p.ppid !== managed.pid)
        assert.isAtLeast(reparented.length, 1, members.map(show).join("\n"))

        const [report] = yield* pool.closeSession("s")
        assert.strictEqual(report?._tag, "Forced")
        for (const p of members) assert.isFalse(isAlive(p.pid), show(p))
        assertNoSurvivors(prefix)
      })))

  it.live("one session holding every escape shape, all ignoring SIGTERM, closes with 0 survivors", () =>
    withPool({ forkFrom, name: "t-escape-matrix", slots: 8, kill }, (pool, prefix) =>
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

        const reports = yield* pool.closeSession("matrix")

        assert.strictEqual(reports.length, 5)
        for (const r of reports) assert.strictEqual(r._tag, "Forced", `${r.command}: ${r._tag}`)
        for (const p of members) assert.isFalse(isAlive(p.pid), show(p))
        assertNoSurvivors(prefix)
      })))

  it.live("a child that exits by itself with code 3 is reported Exited, nothing signalled", () =>
    withPool({ forkFrom, name: "t-exit-3", kill }, (pool, prefix) =>
      Effect.gen(function*() {
        const managed = yield* pool.spawn(sh("exit 3"), { session: "s" })
        const report = yield* managed.awaitTeardown
        assert.strictEqual(report._tag, "Exited")
        if (report._tag !== "Exited") return
        assert.strictEqual(report.code, 3)
        assert.strictEqual(report.signal, null)
        assert.deepStrictEqual([...report.signalled], [])
        assert.strictEqual(yield* managed.handle.exitCode, 3)
        yield* awaitStats(pool, "slot released", (s) => s.inUse === 0)
        assertNoSurvivors(prefix)
      })))

  it.live("a chatty child whose output nobody reads still exits by itself", () =>
    withPool({ forkFrom, name: "t-chatty", kill }, (pool, prefix) =>
      Effect.gen(function*() {
        // A child blocked on a full pipe would never exit: the test's timeout is the only bound needed.
        const managed = yield* pool.spawn(sh("head -c 5000000 /dev/zero; head -c 5000000 /dev/zero >&2"), {
          session: "s"
        })
        const report = yield* managed.awaitTeardown
        assert.strictEqual(report._tag, "Exited")
        if (report._tag !== "Exited") return
        assert.strictEqual(report.code, 0)
        assertNoSurvivors(prefix)
        assert.deepStrictEqual(membersOf(managed.shepherdId), [])
      })))

  // Regression: each process used to be one finalizer of the caller's (sequential) scope, so
  // closing a scope holding N SIGTERM-ignoring trees took N x grace (6 trees: ~1.9 s). Fixed in
  // 1cfc8e2 (a caller scope's trees live in a parallel child scope).
  it.live("closing the caller's scope tears all its trees down concurrently", () =>
    withPool(
      { forkFrom, name: "t-scope-close", slots: 6, kill: { grace: "3 seconds", forceWait: `${forceWait} millis` } },
      (pool, prefix) =>
        Effect.gen(function*() {
          let members: ReadonlyArray<ProcInfo> = []
          let ids: ReadonlySet<string> = new Set()
          yield* Effect.scoped(Effect.gen(function*() {
            const spawned = yield* Effect.forEach(Array.from({ length: 6 }), () => pool.spawn(sh(trees.ignoresTerm)))
            ids = new Set(spawned.map((m) => m.shepherdId))
            members = (yield* Effect.forEach(spawned, (m) => awaitMembers(m.shepherdId, 3))).flat()
          }))
          for (const p of members) assert.isFalse(isAlive(p.pid), show(p))
          assertNoSurvivors(prefix)
          // Overlapping teardowns: each one began (SIGTERM) before any one ended (after its grace and SIGKILL).
          // One after the other, the second would begin only after the first ended.
          const reports = yield* recentOf(pool, ids)
          assert.strictEqual(reports.length, 6)
          for (const r of reports) assert.strictEqual(r.outcome, "Forced")
          const lastStart = Math.max(...reports.map((r) => r.at - r.durationMs))
          const firstEnd = Math.min(...reports.map((r) => r.at))
          assert.isBelow(lastStart, firstEnd, JSON.stringify(reports.map((r) => [r.at - r.durationMs, r.at])))
        })
    ))
})
