/**
 * The shape both exec-race tests drive: trees whose leader exits at once while a descendant (its own
 * session, so only the cookie makes it a member) goes on; every tree's teardown must leave that
 * descendant dead. Trees run 64 at a time, 8 in flight, until the first miss or `trees`.
 */
import { assert } from "@effect/vitest"
import type { ShepherdConfig } from "@shepherd/core/ShepherdConfig"
import { Effect } from "effect"
import type * as ChildProcess from "effect/process/ChildProcess"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { withPool } from "./harness.ts"
import { isAlive } from "./support.ts"

export const descendantRace = (options: {
  readonly label: string
  readonly pool: ShepherdConfig
  readonly trees: number
  /** The tree's command: starts the descendant and writes its pid to `pidFile`. */
  readonly command: (pidFile: string) => ChildProcess.StandardCommand
}): Effect.Effect<void, unknown> => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-race-"))
  const left: Array<number> = []
  return withPool(options.pool, (pool) =>
    Effect.gen(function*() {
      const misses: Array<string> = []
      let tries = 0
      while (misses.length === 0 && tries < options.trees) {
        yield* Effect.forEach(Array.from({ length: 64 }, (_, i) => tries + i), (i) =>
          Effect.gen(function*() {
            const pidFile = path.join(dir, `${i}`)
            const m = yield* pool.spawn(options.command(pidFile), { session: "s" })
            const report = yield* m.awaitTeardown
            const pid = Number(fs.readFileSync(pidFile, "latin1").trim())
            if (isAlive(pid)) {
              left.push(pid)
              misses.push(
                `tree ${m.shepherdId}: ${report._tag}, signalled ${JSON.stringify(report.signalled)}, ` +
                  `descendant ${pid} alive`
              )
            }
          }), { concurrency: 8, discard: true })
        tries += 64
      }
      console.log(`${options.label}: ${misses.length} miss(es) in ${tries} trees`, misses.slice(0, 3))
      assert.deepStrictEqual(misses, [])
    })).pipe(Effect.ensuring(Effect.sync(() => {
      for (const pid of left) {
        try {
          process.kill(pid, "SIGKILL")
        } catch {
          // gone
        }
      }
      fs.rmSync(dir, { recursive: true, force: true })
    })))
}
