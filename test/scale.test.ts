/**
 * Closing a large session costs one grace period, not one per process: every
 * tree gets its SIGTERM before the first tree is SIGKILLed. (How long the close
 * takes is measured by `pnpm bench`, scenario 3, not asserted here.)
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Fiber } from "effect"
import { assertNoSurvivors, cleanupPools, eventually, sh, show, withPool } from "./harness.ts"
import { isAlive, survivors } from "./support.ts"

afterEach(cleanupPools)

const count = 300
// Long enough that sending 300 SIGTERMs on a loaded machine fits inside it; one tree after the other
// would need 300 of them.
const grace = 4_000

describe("scale", () => {
  it.live(`closing a session of ${count} SIGTERM-ignoring trees signals every tree before the first is SIGKILLed`, () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-scale-"))
    const markers = path.join(dir, "term")
    // The leader records its SIGTERM and keeps waiting; its `sleep` ignores TERM: only SIGKILL ends the tree.
    const script = `trap 'echo $$ >> ${markers}' TERM; (trap '' TERM; exec sleep 1000) & while :; do wait; done`
    const termed = (): number => {
      try {
        return fs.readFileSync(markers, "utf8").split("\n").filter((l) => l.length > 0).length
      } catch {
        return 0
      }
    }
    return withPool(
      {
        name: "t-scale",
        slots: count,
        hardCap: count * 2,
        kill: { grace: `${grace} millis`, forceWait: "500 millis" }
      },
      (pool, prefix) =>
        Effect.gen(function*() {
          const session = yield* pool.session("big")
          const command = sh(script, { stdin: "ignore", stdout: "ignore", stderr: "ignore" })
          const spawned = yield* Effect.forEach(Array.from({ length: count }), () => session.spawn(command), {
            concurrency: 16
          })
          assert.strictEqual(spawned.length, count)
          // every tree has its leader and its sleep
          yield* eventually(`${count * 2} processes`, () => survivors(prefix).length === count * 2)
          const before = survivors(prefix)
          const leaders = spawned.map((m) => m.pid)

          // Watch for the first leader to die (SIGKILL after its grace), and count the SIGTERMs by then.
          const watcher = yield* Effect.forkChild(Effect.gen(function*() {
            yield* eventually("a leader to die", () => leaders.some((pid) => !isAlive(pid)))
            return termed()
          }))
          const reports = yield* session.close
          const termedByFirstDeath = yield* Fiber.join(watcher)

          assert.strictEqual(reports.length, count)
          const tags = new Set(reports.map((r) => r._tag))
          assert.deepStrictEqual([...tags], ["Forced"])
          assert.strictEqual(termedByFirstDeath, count, "every leader recorded SIGTERM before the first tree died")
          const alive = before.filter((p) => isAlive(p.pid))
          assert.deepStrictEqual(alive.map(show), [])
          assertNoSurvivors(prefix)
          assert.strictEqual((yield* pool.stats).inUse, 0)
        })
    ).pipe(Effect.ensuring(Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))))
  })
})
