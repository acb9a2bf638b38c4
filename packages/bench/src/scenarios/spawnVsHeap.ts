/**
 * 8. Spawn cost vs host memory (informational): a fresh node child grows its
 * JS heap to 50 MiB, 1 GiB and 2 GiB (every page written), then measures the
 * time blocked inside `child_process.spawn` (called directly, and called by
 * Shepherd's launcher) and Shepherd's `pool.spawn` latency for `/bin/true`
 * (src/child/spawnCost.ts). Ratios are to the same
 * contender at 50 MiB.
 */
import * as Effect from "effect/Effect"
import { fileURLToPath } from "node:url"
import { fmt, log, median, type Row, type ScenarioOutput } from "../harness.ts"
import { runChild } from "../child/protocol.ts"
import type { Ctx } from "../pools.ts"

const script = fileURLToPath(new URL("../child/spawnCost.ts", import.meta.url))

interface Result {
  readonly heapMiB: number
  readonly allocMs: number
  readonly rss: number
  readonly raw: ReadonlyArray<number>
  readonly shepherd: ReadonlyArray<number>
  readonly shepherdBlocked: ReadonlyArray<number>
}

export const run = (ctx: Ctx): Effect.Effect<ScenarioOutput> =>
  Effect.gen(function*() {
    const sizes = ctx.quick ? [50, 1024] : [50, 1024, 2048]
    const count = ctx.quick ? 10 : 20
    const scenario = "8. spawn cost vs host heap (informational)"
    const rows: Array<Row> = []
    const notes: Array<string> = []
    const results: Array<Result> = []
    for (const heapMiB of sizes) {
      const r = yield* Effect.promise(() =>
        runChild<Result>(script, [String(heapMiB), String(count), ctx.tmpDir], ["--max-old-space-size=4096"], 90_000)
      )
      results.push(r)
      log(
        `8 ${heapMiB} MiB (rss ${fmt(r.rss / 2 ** 20)} MiB, allocated in ${fmt(r.allocMs)} ms): raw ${
          fmt(median(r.raw))
        } ms, Shepherd blocked ${fmt(median(r.shepherdBlocked))} ms, pool.spawn ${fmt(median(r.shepherd))} ms`
      )
    }
    const label = (mib: number) => mib >= 1024 ? `${mib / 1024} GiB` : `${mib} MiB`
    for (const r of results) {
      rows.push({
        scenario,
        group: "8-raw",
        variant: `raw: blocked in child_process.spawn(), heap ${label(r.heapMiB)}`,
        unit: "ms",
        better: "info",
        samples: r.raw,
        baseline: r.heapMiB === sizes[0]
      })
    }
    for (const r of results) {
      rows.push({
        scenario,
        group: "8-shepherd-blocked",
        variant: `Shepherd: blocked in child_process.spawn(), heap ${label(r.heapMiB)}`,
        unit: "ms",
        better: "info",
        samples: r.shepherdBlocked,
        baseline: r.heapMiB === sizes[0]
      })
    }
    for (const r of results) {
      rows.push({
        scenario,
        group: "8-shepherd",
        variant: `Shepherd: pool.spawn → process, heap ${label(r.heapMiB)}`,
        unit: "ms",
        better: "info",
        samples: r.shepherd,
        baseline: r.heapMiB === sizes[0]
      })
    }
    notes.push(
      `8: ${count} spawns per contender and size, one child per size; heap grown with arrays of doubles in 512 KiB pieces ` +
        `(allocation took ${results.map((r) => `${label(r.heapMiB)} ${fmt(r.allocMs / 1000)} s`).join(", ")}; RSS ${
          results.map((r) => `${fmt(r.rss / 2 ** 20)} MiB`).join(", ")
        }).` +
        (ctx.quick ? " Quick mode skips 2 GiB (about 5 s of allocation)." : "")
    )
    return { rows, targets: [], notes }
  })
