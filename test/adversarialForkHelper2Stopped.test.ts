/**
 * Adversarial (second round): a helper that stops while no spawn is in flight.
 *
 * A stuck helper is found out only by a spawn that waits for it (killed after
 * `answerWithinMs`), or for a leader the host SIGKILLed itself (looked for in
 * /proc after 200 ms). A leader that dies otherwise (it exits, the OOM killer,
 * an operator) under a stopped helper (SIGSTOP: an operator, a debugger, a
 * tree doing `kill -STOP $PPID`) stays its unreaped zombie: its exit is never
 * reported, so its slot is never given back. With every slot held by such
 * trees, the next spawn waits for a slot forever and never reaches the helper,
 * the one thing that would find it stuck: the pool is deadlocked.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { cleanupPools, eventually, sh, withPool } from "./harness.ts"
import { isAlive, processes } from "./support.ts"
import { helpers, signal } from "./forkHelperSupport.ts"

afterEach(cleanupPools)

const kill = { grace: "300 millis", forceWait: "500 millis" } as const

describe("adversarial fork helper, round 2: a helper stopped between spawns", () => {
  it.live("a leader that dies under a stopped helper: its exit is seen, its slot given back", () => {
    let helper: number | undefined
    return withPool(
      { name: "adv2-fh-stopped", forkFrom: "helper", slots: 1, kill, containment: "process-group" },
      (pool) =>
        Effect.gen(function*() {
          const m = yield* pool.spawn(sh("exec sleep 1000.91"))
          helper = helpers()[0]?.pid
          assert.isDefined(helper)
          signal(helper!, "SIGSTOP")
          yield* eventually("the helper to stop", () => processes().some((p) => p.pid === helper && p.state === "T"))
          // Not the pool's signal: the OOM killer, an operator.
          signal(m.pid, "SIGKILL")
          yield* eventually("the leader to die", () => !isAlive(m.pid))
          // A hang guard only (a stopped helper never reaps it): the pool must learn of the exit.
          const status = yield* Effect.timeoutOption(m.awaitExit, "20 seconds")
          assert.isTrue(status._tag === "Some", "the leader's exit was never reported")
          // The one slot came back: the next tree runs.
          const next = yield* Effect.timeoutOption(
            Effect.scoped(Effect.flatMap(pool.spawn(sh("exit 0")), (n) => n.awaitExit)),
            "20 seconds"
          )
          assert.isTrue(next._tag === "Some", "the next spawn never got the slot")
        })
    ).pipe(Effect.ensuring(Effect.sync(() => {
      if (helper !== undefined) signal(helper, "SIGKILL")
    })))
  })
})
