/**
 * Closing a large session costs one grace period, not one per process.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { assertNoSurvivors, cleanupPools, eventually, sh, show, since, withPool } from "./harness.ts"
import { isAlive, survivors } from "./support.ts"

afterEach(cleanupPools)

const count = 300
const grace = 200

describe("scale", () => {
  it.live(`closing a session of ${count} SIGTERM-ignoring trees takes under 1 s`, () =>
    withPool(
      {
        name: "t-scale",
        slots: count,
        hardCap: count * 2,
        kill: { grace: `${grace} millis`, forceWait: "500 millis" }
      },
      (pool, prefix) =>
        Effect.gen(function*() {
          const session = yield* pool.session("big")
          // `sh` ignores TERM and waits; its `sleep` inherits the ignored disposition.
          const command = sh("trap '' TERM; sleep 1000 & wait", { stdin: "ignore", stdout: "ignore", stderr: "ignore" })
          const spawned = yield* Effect.forEach(Array.from({ length: count }), () => session.spawn(command), {
            concurrency: 16
          })
          assert.strictEqual(spawned.length, count)
          // every tree has its leader and its sleep
          yield* eventually(`${count * 2} processes`, () => survivors(prefix).length === count * 2, 15_000)
          const before = survivors(prefix)

          const start = performance.now()
          const reports = yield* session.close
          const elapsed = since(start)

          assert.strictEqual(reports.length, count)
          const tags = new Set(reports.map((r) => r._tag))
          assert.deepStrictEqual([...tags], ["Forced"])
          assert.isBelow(elapsed, 1_000, `closing ${count} trees took ${Math.round(elapsed)} ms`)
          const alive = before.filter((p) => isAlive(p.pid))
          assert.deepStrictEqual(alive.map(show), [])
          assertNoSurvivors(prefix)
          assert.strictEqual((yield* pool.stats).inUse, 0)
        })
    ), 60_000)
})
