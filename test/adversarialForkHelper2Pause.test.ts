/**
 * Adversarial (second round): a helper killed for the host's own silence.
 *
 * The answer timer is the host's: when the host's event loop itself stalls for
 * `answerWithinMs` (a sync call, a GC pause, a debugger, SIGSTOP/SIGCONT of
 * the host), libuv runs the expired timer before it reads the helper's
 * messages waiting in the channel. The launcher then kills a helper that is
 * healthy and answering, fails every spawn in flight (and sweeps its tree),
 * and orphans every live tree of that helper: their exit statuses are lost
 * (read from /proc after init reaped them: `{ code: null, signal: null }`).
 *
 * The pause is placed exactly: right after the launcher arms its answer timer
 * (a `setTimeout` of `answerWithinMs`), the next check phase holds the loop
 * (Atomics.wait, no CPU) for a few times `answerWithinMs`.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { cleanupPools, sh, usePool } from "./harness.ts"
import { isAlive } from "./support.ts"
import { helperPool, helpers, signal } from "./forkHelperSupport.ts"

afterEach(cleanupPools)

const kill = { grace: "300 millis", forceWait: "500 millis" } as const
const answerWithinMs = 1_000

/** Holds the host's event loop for `ms` once the launcher has armed its next answer timer. */
const pauseAfterNextSpawn = (ms: number) => {
  const original = globalThis.setTimeout
  globalThis.setTimeout = ((f: (...a: Array<unknown>) => void, delay?: number, ...rest: Array<unknown>) => {
    if (delay === answerWithinMs) {
      globalThis.setTimeout = original
      setImmediate(() => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms))
    }
    return original(f, delay, ...rest)
  }) as typeof setTimeout
  return () => {
    globalThis.setTimeout = original
  }
}

const layer = helperPool({ name: "adv2-fh-pause", kill, containment: "process-group" }, answerWithinMs)

describe("adversarial fork helper, round 2: the host's pause", () => {
  it.live("a host paused longer than answerWithinMs: the healthy helper is kept, the spawn succeeds, live trees keep their exit codes", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "adv2-fh-pause-"))
    const go = path.join(dir, "go")
    let helper: number | undefined
    let restore = () => {}
    return usePool(layer, (pool) =>
      Effect.gen(function*() {
        // A live tree of the helper, which exits with 7 once told to.
        const live = yield* pool.spawn(sh(`while [ ! -e ${go} ]; do sleep 0.05; done; exit 7`))
        helper = helpers()[0]?.pid
        assert.isDefined(helper)
        restore = pauseAfterNextSpawn(4 * answerWithinMs)
        const next = yield* Effect.result(Effect.scoped(pool.spawn(sh("exit 0"))))
        restore()
        const stillThere = isAlive(helper!)
        fs.writeFileSync(go, "")
        const status = yield* live.awaitExit
        assert.deepStrictEqual(
          { spawn: next._tag === "Failure" ? next.failure.message : "ok", helperKept: stillThere, status },
          { spawn: "ok", helperKept: true, status: { code: 7, signal: null } }
        )
      })).pipe(Effect.ensuring(Effect.sync(() => {
        restore()
        fs.writeFileSync(go, "")
        if (helper !== undefined) signal(helper, "SIGKILL")
        fs.rmSync(dir, { recursive: true, force: true })
      })))
  })
})
