/**
 * A broken install: the fork helper's file is missing (a bundler that left it
 * out, a partial copy). The helper then cannot load, and the launcher must fall
 * back to the host forking, run every spawn exactly once, and say so.
 *
 * Staged on a copy of @shepherd/node's sources without `internal/forkHelper.ts`
 * (inside the package, so that its imports resolve as the original's do).
 */
import { afterAll, afterEach, assert, beforeAll, describe, it } from "@effect/vitest"
import type * as NodeHelperLauncherModule from "@shepherd/node/NodeHelperLauncher"
import { Effect, Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import { cleanupPools, sh } from "./harness.ts"
import { helpers, signal } from "./forkHelperSupport.ts"
import { processes } from "./support.ts"

afterEach(cleanupPools)

const prefix = `t-fh-missing-${process.pid}-${Date.now()}`
const nodeSrc = fileURLToPath(new URL("../packages/node/src", import.meta.url))
const copy = path.join(path.dirname(nodeSrc), `.test-missing-helper-${process.pid}`)
let Launcher: typeof NodeHelperLauncherModule

beforeAll(async () => {
  fs.cpSync(nodeSrc, copy, { recursive: true })
  fs.rmSync(path.join(copy, "internal", "forkHelper.ts"))
  Launcher = await import(pathToFileURL(path.join(copy, "NodeHelperLauncher.ts")).href)
})
afterAll(() => fs.rmSync(copy, { recursive: true, force: true }))

describe("fork helper missing", () => {
  it.live("the host forks instead, each spawn runs once, and the status says why", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "t-fh-missing-"))
    const marker = path.join(dir, "runs")
    const before = new Set(helpers().map((h) => h.pid))
    return Effect.scoped(Effect.gen(function*() {
      const launcher = yield* Launcher.make()
      const scope = yield* Effect.scope
      const statuses: Array<{ code: number | null }> = []
      for (let i = 1; i <= 3; i++) {
        const launched = yield* Scope.provide(scope)(launcher.launch(
          sh(`echo run >> ${marker}; exit ${i}`),
          { ...(process.env as Record<string, string>), SHEPHERD_ID: `${prefix}:${i}` }
        ))
        statuses.push({ code: (yield* launched.exit).code })
      }
      assert.deepStrictEqual(statuses, [{ code: 1 }, { code: 2 }, { code: 3 }])
      const runs = fs.readFileSync(marker, "utf8").split("\n").filter((l) => l !== "").length
      assert.strictEqual(runs, 3, "each spawn ran its command once")
      const status = yield* launcher.status!
      assert.strictEqual(status.alive, false)
      assert.include(status.fallback ?? "", "could not load")
      assert.isAtLeast(status.deaths, 1)
    })).pipe(Effect.ensuring(Effect.sync(() => {
      for (const h of helpers()) if (!before.has(h.pid)) signal(h.pid, "SIGKILL")
      for (const p of processes()) if (p.shepherdId?.startsWith(prefix)) signal(p.pid, "SIGKILL")
      fs.rmSync(dir, { recursive: true, force: true })
    })))
  }, 60_000)
})
