/**
 * The fork helper (`forkFrom: "helper"`), on real processes: trees forked by
 * a small helper process instead of the host. Every tree shape's teardown runs
 * through it in teardown.test.ts, a host crash in crash.test.ts; here what is
 * the helper's own: its pipes, its errors, its death, its silence, its exit.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import * as ChildProcess from "effect/process/ChildProcess"
import * as fs from "node:fs"
import { awaitMembers, cleanupPools, eventually, sh, usePool, withPool } from "./harness.ts"
import { isAlive, statFdsHeld, trees } from "./support.ts"
import { helperPool, signal } from "./forkHelperSupport.ts"

afterEach(cleanupPools)

const kill = { grace: "300 millis", forceWait: "500 millis" } as const

/** The parent of `pid`, when it is a fork helper (else `undefined`). */
const helperOf = (pid: number): number | undefined => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "latin1")
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1])
    return fs.readFileSync(`/proc/${ppid}/cmdline`, "latin1").includes("forkHelper") ? ppid : undefined
  } catch {
    return undefined
  }
}

describe("fork helper", () => {
  it.live("pipes, stdin and exit codes go through it; a failed spawn fails typed and gives its slot back", () => {
    let helper: number | undefined
    return withPool({ name: "t-fh-io", forkFrom: "helper", slots: 1, kill }, (pool) =>
      Effect.gen(function*() {
        const result = yield* Effect.scoped(Effect.gen(function*() {
          const m = yield* pool.spawn(sh("read x; echo \"got $x\"; echo oops >&2; exit 3", {
            stdin: Stream.make(new TextEncoder().encode("abc\n"))
          }))
          helper = helperOf(m.pid)
          const out = yield* m.handle.stdout.pipe(Stream.decodeText(), Stream.mkString)
          const err = yield* m.handle.stderr.pipe(Stream.decodeText(), Stream.mkString)
          return { out, err, status: yield* m.awaitExit }
        }))
        assert.isDefined(helper, "the tree's parent is the fork helper")
        assert.deepStrictEqual(result, { out: "got abc\n", err: "oops\n", status: { code: 3, signal: null } })

        const missing = yield* Effect.flip(pool.spawn(ChildProcess.make("/nonexistent/x", [])))
        assert.strictEqual(missing._tag, "SpawnError")
        assert.include(missing.message, "ENOENT")
        const badCwd = yield* Effect.flip(pool.spawn(sh("exit 0", { cwd: "/nonexistent-dir" })))
        assert.strictEqual(badCwd._tag, "SpawnError")
        // One slot: both failures gave it back, or this would wait for the slot and time out.
        const again = yield* Effect.scoped(Effect.flatMap(pool.spawn(sh("exit 0")), (m) => m.awaitExit))
        assert.deepStrictEqual(again, { code: 0, signal: null })
      })).pipe(
        // The helper leaves with its pool.
        Effect.tap(() => eventually("the fork helper to exit", () => helper === undefined || !isAlive(helper))),
        Effect.ensuring(Effect.sync(() => helper !== undefined && signal(helper, "SIGKILL")))
      )
  })

  it.live("a helper killed while its trees run: the pool still ends every tree, and the next spawn gets a new helper", () =>
    withPool({ name: "t-fh-death", forkFrom: "helper", slots: 8, kill }, (pool) =>
      Effect.gen(function*() {
        const orphans = yield* Effect.forEach([1, 2, 3], () => pool.spawn(sh(trees.ignoresTerm), { session: "s" }))
        yield* Effect.forEach(orphans, (m) => awaitMembers(m.shepherdId, 3))
        const helper = helperOf(orphans[0]!.pid)
        assert.isDefined(helper)
        // The doctor names it.
        assert.deepStrictEqual((yield* pool.doctor).launcher, {
          forkFrom: "helper",
          pid: helper!,
          alive: true,
          deaths: 0
        })
        signal(helper!, "SIGKILL")
        yield* eventually("the helper to die", () => !isAlive(helper!))

        // A spawn sent before the host heard of the death fails (the helper may have forked it before
        // dying: that tree carries the pool's cookie, which the reaper finds); the next goes to a new helper.
        let failures = 0
        const next = yield* pool.spawn(sh(trees.ignoresTerm), { session: "s" }).pipe(
          Effect.tapError((e) =>
            Effect.sync(() => {
              failures++
              assert.match(e.message, /the fork helper (exited before it answered|could not be written to)/)
            })
          ),
          Effect.retry({ times: 3 })
        )
        assert.isAtMost(failures, 1)
        // Its whole tree runs (its trap set) before the session closes.
        yield* awaitMembers(next.shepherdId, 3)
        const second = helperOf(next.pid)
        assert.isDefined(second, "a new helper forked it")
        assert.notStrictEqual(second, helper)
        const launcher = (yield* pool.doctor).launcher!
        assert.strictEqual(launcher.pid, second)
        assert.strictEqual(launcher.deaths, 1)
        assert.strictEqual(launcher.lastError, `fork helper ${helper} exited`)
        assert.isUndefined(launcher.fallback)

        const reports = yield* pool.closeSession("s")
        assert.deepStrictEqual(
          reports.map((r) => r._tag),
          ["Forced", "Forced", "Forced", "Forced"],
          JSON.stringify(reports)
        )
        for (const m of [...orphans, next]) assert.isFalse(isAlive(m.pid), `leader ${m.pid}`)
        // (withPool asserts that no process of the pool survives.)
      })))

  it.live("a spawn the helper does not answer fails, the stuck helper is killed, the next spawn gets a new one", () => {
    let helper: number | undefined
    const layer = helperPool({ name: "t-fh-silent", kill, containment: "process-group" }, 1_000)
    return usePool(layer, (pool) =>
      Effect.gen(function*() {
        helper = yield* Effect.scoped(Effect.map(pool.spawn(sh("sleep 1000")), (m) => helperOf(m.pid)))
        assert.isDefined(helper)
        signal(helper!, "SIGSTOP")
        const error = yield* Effect.flip(pool.spawn(sh(trees.ignoresTerm)))
        assert.strictEqual(error._tag, "SpawnError")
        assert.match(error.message, /did not answer/)
        // A stopped process dies of SIGKILL: it can no longer fork the tree it was asked for.
        yield* eventually("the stuck helper to be killed", () => !isAlive(helper!))
        const next = yield* Effect.scoped(Effect.map(pool.spawn(sh("sleep 1000")), (m) => helperOf(m.pid)))
        assert.isDefined(next)
        assert.notStrictEqual(next, helper)
        // (usePool asserts that no process of the pool survives.)
      })).pipe(Effect.ensuring(Effect.sync(() => {
        if (helper !== undefined) signal(helper, "SIGKILL")
      })))
  })

  it.live("the host keeps one stat descriptor per live leader, and lets each go once its tree is gone", () => {
    let helper: number | undefined
    /** The leaders whose /proc/<pid>/stat this process holds open, by pid. */
    const statFdsOf = (pids: ReadonlySet<number>): Array<number> => statFdsHeld().filter((pid) => pids.has(pid))
    return withPool({ name: "t-fh-statfd", forkFrom: "helper", slots: 16, kill }, (pool) =>
      Effect.gen(function*() {
        const ms = yield* Effect.forEach(
          Array.from({ length: 12 }),
          () => pool.spawn(sh("exec sleep 1000"), { session: "fds" }),
          { concurrency: 4 }
        )
        helper = helperOf(ms[0]!.pid)
        assert.isDefined(helper, "the trees' parent is the fork helper")
        const leaders = new Set(ms.map((m) => m.pid))
        // One each, kept from the helper's answer on (the identity every signal checks).
        assert.sameMembers(statFdsOf(leaders), [...leaders])
        const reports = yield* pool.closeSession("fds")
        assert.strictEqual(reports.length, 12)
        // Closed once each exit is known: none stays open.
        yield* eventually("the leaders' stat descriptors to be closed", () => statFdsOf(leaders).length === 0)
      })).pipe(Effect.ensuring(Effect.sync(() => {
        if (helper !== undefined) signal(helper, "SIGKILL")
      })))
  })
})
