/**
 * Adversarial: trees the fork helper starts but whose answer the pool never
 * gets. The host learns a tree's pid only from the helper's `spawned` message,
 * which waits behind the handover of the stdio pipes (one handle per round
 * trip to the host). A helper that dies (here: killed by its own tree, as the
 * OOM killer might) or stops (SIGSTOP) after its fork and before that message
 * leaves a tree the pool never tracked: the spawn must not fail before whatever
 * carries the tree's cookie has been killed (found by a write-up of
 * adversarial review: it used to outlive the pool's close).
 *
 * The host's event loop is held busy in these tests to widen the windows; a
 * host with GiBs of heap (the helper's reason to exist) pauses that long on its
 * own.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { cleanupPools, eventually, sh, show, usePool, withPool } from "./harness.ts"
import { isAlive, processes, survivors, trees } from "./support.ts"
import { helperPool, helpers, signal } from "./forkHelperSupport.ts"

afterEach(cleanupPools)

const kill = { grace: "300 millis", forceWait: "500 millis" } as const

/** Holds the host's event loop (a long GC pause, a sync call) until `done` or 20 s. */
const busyUntil = (done: () => boolean) => {
  const end = Date.now() + 20_000
  while (!done() && Date.now() < end) { /* busy */ }
}

describe("adversarial fork helper: lost trees", () => {
  it.live.each(["process-group", "auto"] as const)(
    "a helper that dies between its fork and its answer: the failed spawn leaves no tree (containment %s)",
    (containment) =>
      withPool(
        { name: "adv-fh-lost", forkFrom: "helper", kill, containment },
        (pool, prefix) =>
          Effect.gen(function*() {
            // The leader kills its helper first thing: its fork happened, its `spawned` message had
            // not left the helper yet (it waits for the host to acknowledge the stdin pipe's handle).
            // (On a loaded machine the helper may be dead before this looks: then there is nothing to hold.)
            let settled = false
            const hold = Effect.gen(function*() {
              yield* eventually("the helper to start", () => helpers().length > 0 || settled)
              const helper = helpers()[0]?.pid
              if (helper !== undefined) busyUntil(() => !isAlive(helper))
            })
            const [result] = yield* Effect.all([
              Effect.result(pool.spawn(sh("kill -9 $PPID; setsid sleep 1000 & exec sleep 1000"))).pipe(
                Effect.ensuring(Effect.sync(() => {
                  settled = true
                }))
              ),
              hold
            ], { concurrency: 2 })
            assert.strictEqual(result._tag, "Failure")
            // Killed before the spawn failed, not only at the pool's close.
            assert.deepStrictEqual(survivors(prefix).map(show), [], "the lost tree runs")
          })
      )
  )

  it.live.each(
    [
      { shape: "setsid grandchild", script: trees.setsidGrandchild, containment: "process-group" },
      { shape: "member outlives its leader", script: "sleep 1000 & exit 0", containment: "process-group" },
      { shape: "setsid grandchild", script: trees.setsidGrandchild, containment: "auto" }
    ] as const
  )(
    "a helper stopped after its fork: the spawn fails, the helper is killed, the tree with it ($shape, containment $containment)",
    ({ containment, script }) => {
      let helper: number | undefined
      const layer = helperPool({ name: "adv-fh-late", kill, containment }, 1_000)
      return usePool(layer, (pool, prefix) =>
        Effect.gen(function*() {
          yield* Effect.scoped(pool.spawn(sh("exit 0")))
          helper = helpers()[0]?.pid
          assert.isDefined(helper)
          // The leader stops its helper once its own tree runs; the host is busy until then, so the
          // helper's `spawned` cannot have left (it waits for the stdin handle's acknowledgement).
          const stopper = `kill -STOP $PPID; ${script}`
          const hold = Effect.sync(() => busyUntil(() => processes().some((p) => p.pid === helper && p.state === "T")))
          const [result] = yield* Effect.all([Effect.result(pool.spawn(sh(stopper))), hold], { concurrency: 2 })
          assert.strictEqual(result._tag, "Failure")
          if (result._tag === "Failure") assert.match(result.failure.message, /did not answer/)
          yield* eventually("the stopped helper to be killed", () => !isAlive(helper!))
          assert.deepStrictEqual(survivors(prefix).map(show), [], "the tree of the unanswered spawn runs")
        })).pipe(Effect.ensuring(Effect.sync(() => {
          if (helper !== undefined) signal(helper, "SIGKILL")
        })))
    }
  )
})
