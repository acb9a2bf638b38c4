/**
 * Adversarial (fourth round): the fork helper batches exits (the first of a turn
 * at once, the rest at setImmediate; any other message flushes them first).
 *
 * A burst: 48 leaders end together (released by one file), with exit codes 0..47
 * and some killed by a signal; the host's loop is held meanwhile, so the exits
 * arrive together. Every slot is taken, so the 48 spawns queued behind them
 * (commands that exit at once, with their own codes) are sent to the helper while
 * exits of the burst are still pending there: a queued spawn can get the pid of
 * a leader whose exit is still in a batch. Every status must be exact, every slot
 * returned, no process left.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { awaitStats, cleanupPools, sh, withPool } from "./harness.ts"

afterEach(cleanupPools)

const n = 48

describe("adversarial round 4: a burst of exits", () => {
  it.live("every status of a burst, and of the spawns started inside it, is exact; every slot comes back", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "adv4-burst-"))
    const go = path.join(dir, "go")
    return withPool(
      { name: "adv4-burst", forkFrom: "helper", slots: n, hardCap: n * 4, kill: { grace: "1 second" } },
      (pool) =>
        Effect.gen(function*() {
          const quiet = { stdin: "ignore", stdout: "ignore", stderr: "ignore" } as const
          const expected = (i: number) => i % 6 === 5 ? { code: null, signal: "SIGKILL" } : { code: i, signal: null }
          const first = yield* Effect.forEach(Array.from({ length: n }, (_, i) => i), (i) =>
            pool.spawn(sh(
              `while [ ! -e ${go} ]; do sleep 0.05; done; ${i % 6 === 5 ? "kill -9 $$" : `exit ${i}`}`,
              quiet
            )), { concurrency: "unbounded" })
          yield* awaitStats(pool, "every slot taken", (s) => s.inUse === n)
          // Queued behind the burst: each starts when a slot comes back, and ends at once.
          const queued = yield* Effect.forEach(
            Array.from({ length: n }, (_, i) => i),
            (i) =>
              Effect.forkChild(
                Effect.flatMap(pool.spawn(sh(`exit ${100 + i}`, quiet)), (m) => m.awaitExit)
              )
          )
          yield* awaitStats(pool, "the queue", (s) => s.waiting === n)
          setImmediate(() => {
            fs.writeFileSync(go, "")
            Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 300)
          })
          const statuses = yield* Effect.forEach(first, (m) => m.awaitExit)
          assert.deepStrictEqual(statuses, first.map((_, i) => expected(i)))
          const queuedStatuses = yield* Effect.forEach(queued, (f) => Fiber.await(f))
          assert.deepStrictEqual(
            queuedStatuses.map((e) => e._tag === "Success" ? e.value : String(e)),
            queued.map((_, i) => ({ code: 100 + i, signal: null }))
          )
          yield* awaitStats(pool, "every slot back", (s) => s.inUse === 0 && s.waiting === 0)
        })
    ).pipe(Effect.ensuring(Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))))
  }, 120_000)
})
