/**
 * Adversarial: a fork helper that stops answering (SIGSTOP here; a helper
 * stuck in uninterruptible sleep, swapped out, or with a wedged event loop
 * looks the same to the host) is never replaced. A spawn it does not answer
 * fails after `answerWithinMs`, but the helper stays the pool's helper: every
 * later spawn is sent to it again and fails the same way, for as long as it
 * is stuck. Only its death (a closed channel) makes the launcher start another.
 * And a tree whose leader died while its helper was stuck never reports an
 * exit (`awaitExit` waits for the helper's word).
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { awaitMembers, cleanupPools, sh, usePool, withPool } from "./harness.ts"
import { isAlive, trees } from "./support.ts"
import { helperPool, helpers, signal } from "./forkHelperSupport.ts"

afterEach(cleanupPools)

const kill = { grace: "300 millis", forceWait: "500 millis" } as const

describe("adversarial fork helper: a stuck helper", () => {
  it.live("after a spawn the helper did not answer, later spawns get a helper that answers", () => {
    let stuck: number | undefined
    const layer = helperPool({ name: "adv-fh-stuck", kill, containment: "process-group" }, 1_000)
    return usePool(layer, (pool) =>
      Effect.gen(function*() {
        yield* Effect.scoped(Effect.flatMap(pool.spawn(sh("exit 0")), (m) => m.awaitExit))
        stuck = helpers()[0]?.pid
        assert.isDefined(stuck)
        signal(stuck!, "SIGSTOP")
        const first = yield* Effect.flip(pool.spawn(sh("exit 0")))
        assert.include(first.message, "did not answer")
        // The helper is still stuck: the launcher should not send it anything more.
        const outcomes: Array<string> = []
        for (let i = 0; i < 3; i++) {
          const r = yield* Effect.result(Effect.scoped(Effect.flatMap(pool.spawn(sh("exit 7")), (m) => m.awaitExit)))
          outcomes.push(r._tag === "Success" ? `exit ${r.success.code}` : r.failure.message)
        }
        assert.deepStrictEqual(outcomes, ["exit 7", "exit 7", "exit 7"])
      })).pipe(Effect.ensuring(Effect.sync(() => {
        if (stuck !== undefined) signal(stuck, "SIGCONT")
      })))
  })

  it.live("a tree whose close was reported while its helper is stuck: awaitExit returns", () => {
    let stuck: number | undefined
    return withPool(
      { name: "adv-fh-stuck2", forkFrom: "helper", kill, containment: "process-group" },
      (pool) =>
        Effect.gen(function*() {
          const m = yield* pool.spawn(sh(trees.ignoresTerm), { session: "s" })
          yield* awaitMembers(m.shepherdId, 3)
          stuck = helpers()[0]?.pid
          assert.isDefined(stuck)
          signal(stuck!, "SIGSTOP")
          const reports = yield* pool.closeSession("s")
          assert.deepStrictEqual(reports.map((r) => r._tag), ["Forced"])
          // The leader is dead (a zombie of the stopped helper): the pool reported it ended.
          assert.isFalse(isAlive(m.pid))
          // Hang guard only (a stuck helper may stay stuck for ever): the exit is known to be past.
          const exit = yield* m.awaitExit.pipe(Effect.timeoutOption("10 seconds"))
          assert.isTrue(Option.isSome(exit), "awaitExit still waits for the stuck helper's word")
        })
    ).pipe(Effect.ensuring(Effect.sync(() => {
      if (stuck !== undefined) signal(stuck, "SIGCONT")
    })))
  })

  // The helper is forked with `execArgv: []` ("the host's own flags are not the helper's"), but with
  // the host's environment: NODE_OPTIONS still gives it the host's flags. `--inspect-brk` (a common
  // way to debug a program through an npm script) makes it wait for a debugger before it runs.
  it.live("the host's NODE_OPTIONS (--inspect-brk) do not stop the helper", () => {
    const before = process.env.NODE_OPTIONS
    const layer = helperPool({ name: "adv-fh-nodeopts", kill, containment: "process-group" }, 3000)
    return usePool(layer, (pool) =>
      Effect.gen(function*() {
        process.env.NODE_OPTIONS = `${before ?? ""} --inspect-brk=0`
        const r = yield* Effect.result(Effect.scoped(Effect.flatMap(pool.spawn(sh("exit 4")), (m) => m.awaitExit)))
        process.env.NODE_OPTIONS = before
        assert.deepStrictEqual(r._tag === "Success" ? r.success : r.failure.message, { code: 4, signal: null })
      })).pipe(Effect.ensuring(Effect.sync(() => {
        if (before === undefined) delete process.env.NODE_OPTIONS
        else process.env.NODE_OPTIONS = before
      })))
  })
})
