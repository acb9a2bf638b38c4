/**
 * Adversarial (fourth round): a session closes while spawns of it are unanswered
 * and its helper is SIGSTOPped (stopped by a tree, a debugger, a cgroup freezer).
 *
 * The close's sweep cannot use the reading of the helper's children (spawns are
 * unanswered) and signals each leader after its stat; the leaders die as
 * zombies the stopped helper cannot reap; the watchdog kills the silent helper;
 * the unanswered spawns fail once their cookies are swept (or, forked, are torn
 * down with the session). The close must finish, every spawn settle, every slot
 * come back, and nothing survive.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { ProcessPool } from "@shepherd/core/ProcessPool"
import { Effect, Fiber, References } from "effect"
import { helperPool, helpers, signal } from "./forkHelperSupport.ts"
import { assertNoSurvivors, awaitMembers, awaitStats, cleanupPools, sh, track } from "./harness.ts"

afterEach(cleanupPools)

describe("adversarial round 4: a session close with unanswered spawns and a stopped helper", () => {
  it.live(
    "the close finishes, every spawn settles, every slot comes back, nothing survives",
    () =>
      Effect.gen(function*() {
        let stopped: number | undefined
        yield* Effect.gen(function*() {
          const pool = yield* ProcessPool
          const prefix = `${pool.poolId}:`
          track(prefix)
          const session = yield* pool.session("s")
          const trees = yield* Effect.forEach(
            Array.from({ length: 12 }, (_, i) => i),
            (i) => session.spawn(sh(i % 2 === 0 ? "sleep 1000 & sleep 1000 & wait" : "exec sleep 1000")),
            { concurrency: 4 }
          )
          for (const [i, m] of trees.entries()) yield* awaitMembers(m.shepherdId, i % 2 === 0 ? 3 : 1)
          const helper = helpers()[0]!.pid
          // Unanswered: sent, and the helper stopped before or after forking them.
          const late = yield* Effect.forEach(
            Array.from({ length: 4 }, () => 0),
            () => Effect.forkChild(Effect.exit(session.spawn(sh("sleep 1000 & wait"))), { startImmediately: true })
          )
          signal(helper, "SIGSTOP")
          stopped = helper
          const reports = yield* pool.closeSession("s")
          assert.strictEqual(reports.length >= trees.length, true)
          const settled = yield* Effect.forEach(late, Fiber.join)
          assert.strictEqual(settled.length, 4)
          yield* awaitStats(pool, "every slot back", (s) => s.inUse === 0 && s.waiting === 0)
          assertNoSurvivors(prefix)
        }).pipe(
          Effect.scoped,
          Effect.provide(helperPool({ name: "adv4-stopped", slots: 20, kill: { grace: "300 millis" } }, 1_000), {
            local: true
          }),
          Effect.provideService(References.MinimumLogLevel, "Error"),
          Effect.ensuring(Effect.sync(() => {
            if (stopped !== undefined) signal(stopped, "SIGKILL")
          }))
        )
      }),
    120_000
  )
})
