/**
 * Adversarial (third round): the host's current directory has been removed.
 *
 * The launcher now sends the helper `process.cwd()` for a spawn without `cwd`.
 * `process.cwd()` throws (ENOENT, "process.cwd failed") once the host's
 * directory has been removed; the host's own fork does not care (the child
 * inherits the directory, removed or not). Through the helper the spawn dies
 * with a defect instead of running, and the throw happens after the entry was
 * registered with the helper (and its IPC channel ref'd), before it is sent:
 * that entry is never forgotten.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { cleanupPools, sh, withPool } from "./harness.ts"

afterEach(cleanupPools)

const kill = { grace: "300 millis", forceWait: "500 millis" } as const

describe("adversarial fork helper, round 3: a removed current directory", () => {
  it.live("a spawn without cwd from a host whose directory was removed runs, as the host's own fork does", () => {
    const before = process.cwd()
    const gone = fs.mkdtempSync(path.join(os.tmpdir(), "adv3-fh-cwd-"))
    return withPool(
      { name: "adv3-fh-cwd", forkFrom: "helper", kill, containment: "process-group" },
      (pool) =>
        Effect.gen(function*() {
          // The helper is started (and loaded) while the directory still exists.
          const first = yield* Effect.scoped(Effect.flatMap(pool.spawn(sh("exit 0")), (m) => m.awaitExit))
          assert.deepStrictEqual(first, { code: 0, signal: null })
          process.chdir(gone)
          fs.rmdirSync(gone)
          const exit = yield* Effect.exit(Effect.scoped(Effect.flatMap(pool.spawn(sh("exit 3")), (m) => m.awaitExit)))
          process.chdir(before)
          assert.deepStrictEqual(
            exit._tag === "Success" ? exit.value : String(exit.cause),
            { code: 3, signal: null }
          )
        })
    ).pipe(Effect.ensuring(Effect.sync(() => {
      process.chdir(before)
      fs.rmSync(gone, { recursive: true, force: true })
    })))
  })
})
