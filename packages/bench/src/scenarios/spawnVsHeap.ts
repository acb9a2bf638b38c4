/**
 * 8. Spawn cost vs host memory (informational): a fresh node child grows its
 * memory, every page written, then measures the time blocked inside
 * `child_process.spawn` (called directly, and called by Shepherd's launcher)
 * and Shepherd's `pool.spawn` latency for `/bin/true` (src/child/spawnCost.ts).
 *
 * Two kinds of host memory: the JS heap (50 MiB, 1 GiB, 2 GiB), which V8
 * maps with MADV_DONTFORK so that `fork` skips it (the cheap case), and
 * `Buffer`/ArrayBuffer memory (1 GiB, 2 GiB), ordinary memory whose page
 * tables `fork` copies (the expensive case). The time is libuv's `fork`
 * inside `uv_spawn`, the same for raw `child_process` and for Shepherd, which
 * calls it; not Shepherd's own code. One child at a time (at most 2 GiB of
 * ballast alive), each exits before the next starts. Ratios are to the same
 * contender with a 50 MiB heap.
 */
import * as Effect from "effect/Effect"
import { fileURLToPath } from "node:url"
import { runChild } from "../child/protocol.ts"
import { fmt, log, median, type Row, type ScenarioOutput } from "../harness.ts"
import type { Ctx } from "../pools.ts"

const script = fileURLToPath(new URL("../child/spawnCost.ts", import.meta.url))

type Kind = "heap" | "buffers"

interface Result {
  readonly kind: Kind
  readonly sizeMiB: number
  readonly allocMs: number
  readonly rss: number
  readonly dontForkMiB: number
  readonly raw: ReadonlyArray<number>
  readonly shepherd: ReadonlyArray<number>
  readonly shepherdBlocked: ReadonlyArray<number>
  readonly helper: ReadonlyArray<number>
}

const label = (mib: number) => mib >= 1024 ? `${mib / 1024} GiB` : `${mib} MiB`
const what = (r: Result) => `${r.kind === "heap" ? "JS heap" : "Buffer memory"} ${label(r.sizeMiB)}`

export const run = (ctx: Ctx): Effect.Effect<ScenarioOutput> =>
  Effect.gen(function*() {
    const cases: ReadonlyArray<readonly [Kind, number]> = ctx.quick
      ? [["heap", 50], ["heap", 512], ["buffers", 512], ["buffers", 1024]]
      : [["heap", 50], ["heap", 1024], ["heap", 2048], ["buffers", 1024], ["buffers", 2048]]
    const count = ctx.quick ? 10 : 20
    const scenario = "8. spawn cost vs host memory (informational)"
    const rows: Array<Row> = []
    const results: Array<Result> = []
    for (const [kind, size] of cases) {
      const r = yield* Effect.promise(() =>
        runChild<Result>(
          script,
          [kind, String(size), String(count), ctx.tmpDir],
          ["--max-old-space-size=4096"],
          90_000
        )
      )
      results.push(r)
      log(
        `8 ${what(r)} (rss ${fmt(r.rss / 2 ** 20)} MiB, ${fmt(r.dontForkMiB)} MiB not copied by fork, allocated in ${
          fmt(r.allocMs)
        } ms): raw ${fmt(median(r.raw))} ms, Shepherd blocked ${fmt(median(r.shepherdBlocked))} ms, pool.spawn ${
          fmt(median(r.shepherd))
        } ms, fork helper pool.spawn ${fmt(median(r.helper))} ms`
      )
    }
    const base = (r: Result) => r === results[0]
    const groups: ReadonlyArray<readonly [string, string, (r: Result) => ReadonlyArray<number>]> = [
      ["8-raw", "raw: blocked in child_process.spawn()", (r) => r.raw],
      ["8-shepherd-blocked", "Shepherd: blocked in child_process.spawn()", (r) => r.shepherdBlocked],
      ["8-shepherd", "Shepherd: pool.spawn → process", (r) => r.shepherd],
      ["8-helper", "Shepherd (fork helper, the default): pool.spawn → process", (r) => r.helper]
    ]
    for (const [group, variant, samples] of groups) {
      for (const r of results) {
        rows.push({
          scenario,
          group,
          variant: `${variant}, ${what(r)}`,
          unit: "ms",
          better: "info",
          samples: samples(r),
          baseline: base(r)
        })
      }
    }
    const notes = [
      `8: ${count} spawns per contender and case, one fresh child per case (at most 2 GiB of ballast alive at a time); ` +
      "the JS heap grown with arrays of doubles in 512 KiB pieces, Buffer memory with `Buffer.allocUnsafe` in 256 MiB pieces, every page written " +
      `(allocation took ${results.map((r) => `${what(r)} ${fmt(r.allocMs / 1000)} s`).join(", ")}; RSS ${
        results.map((r) => `${fmt(r.rss / 2 ** 20)} MiB`).join(", ")
      }; resident in MADV_DONTFORK mappings: ${results.map((r) => `${fmt(r.dontForkMiB)} MiB`).join(", ")}). ` +
      "The time blocked is libuv's fork in uv_spawn (the same call for raw and for Shepherd, not Shepherd's code): " +
      "the fork helper rows fork in the helper, a small process of its own, and the host's event loop is never blocked in fork; " +
      "V8 maps its heap with MADV_DONTFORK, so fork skips it, while Buffer/ArrayBuffer memory is copied page-table entry by entry." +
      (ctx.quick ? " Quick mode: 512 MiB and 1 GiB, no 2 GiB." : "")
    ]
    return { rows, targets: [], notes }
  })
