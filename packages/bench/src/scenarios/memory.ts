/**
 * 7. Memory: JS heap per tracked live process at N = 300, measured in a fresh
 * `node --expose-gc` child per contender and run (src/child/memory.ts):
 * heapUsed after two full GCs, before and after starting N `sleep 1000`
 * (stdio ignored) whose handles are kept.
 */
import * as Effect from "effect/Effect"
import { fileURLToPath } from "node:url"
import { fmt, log, median, type Row, type ScenarioOutput, type Target } from "../harness.ts"
import { runChild } from "../child/protocol.ts"
import type { Ctx } from "../pools.ts"

const script = fileURLToPath(new URL("../child/memory.ts", import.meta.url))

interface Result {
  readonly perProcess: number
  /** The fork helper's resident memory growth per process (the helper's own heap is not the host's). */
  readonly helperRssPerProcess?: number
}

const variants: ReadonlyArray<[string, string]> = [
  ["raw", "raw child_process.spawn (ChildProcess kept)"],
  ["execa", "execa 10 (subprocess kept)"],
  ["effect", "Effect ChildProcess (handle in a scope)"],
  ["shepherd", "Shepherd pool.spawn (ledger+slots+lifeline)"],
  ["shepherd-helper", "Shepherd (fork helper, the default) pool.spawn"]
]

export const run = (ctx: Ctx): Effect.Effect<ScenarioOutput> =>
  Effect.gen(function*() {
    const n = ctx.quick ? 100 : 300
    const runs = ctx.quick ? 1 : 2
    const scenario = `7. JS heap per live tracked process, N = ${n}`
    const samples = new Map<string, Array<number>>(variants.map(([v]) => [v, []]))
    const helperRss: Array<number> = []
    for (let r = 0; r < runs; r++) {
      for (const [variant] of variants) {
        const result = yield* Effect.promise(() =>
          runChild<Result>(script, [variant, String(n), ctx.tmpDir], ["--expose-gc"], 60_000)
        )
        samples.get(variant)!.push(result.perProcess / 1024)
        if (result.helperRssPerProcess !== undefined) helperRss.push(result.helperRssPerProcess / 1024)
      }
    }
    const rows: Array<Row> = variants.map(([variant, label]) => ({
      scenario,
      variant: label,
      unit: "KiB",
      better: "lower",
      samples: samples.get(variant)!,
      baseline: variant === "raw"
    }))
    const others = `execa ${fmt(median(samples.get("execa")!))}, Effect ${fmt(median(samples.get("effect")!))}, raw ${
      fmt(median(samples.get("raw")!))
    }`
    const targets: Array<Target> = [["shepherd", ""], ["shepherd-helper", ", fork helper"]].map(([variant, which]) => {
      const shepherd = median(samples.get(variant!)!)
      return {
        id: `7${which === "" ? "" : ` (${which!.slice(2)})`}`,
        goal: `Shepherd ≤ 8 KiB of JS heap per tracked live process (N = ${n})`,
        measured: `${fmt(shepherd)} KiB (${others})${
          which === "" || helperRss.length === 0
            ? ""
            : `; the helper's resident memory grew by ${fmt(median(helperRss))} KiB per process`
        }`,
        met: shepherd <= 8,
        note: ctx.quick ? "quick mode measures N = 100" : undefined
      }
    })
    log(`7: ${variants.map(([v]) => `${v} ${fmt(median(samples.get(v)!))} KiB`).join(", ")}`)
    return {
      rows,
      targets,
      notes: [
        `7: one fresh node --expose-gc process per contender and run (${runs} run(s)); heapUsed after gc() ×2, before vs after N live \`sleep 1000\` with stdio ignored; spawned 8 at a time; each child tears its processes down and the parent checks /proc. ` +
        "The fork helper row is the host's heap: the helper's own memory (its ChildProcess per tree) is in its own process, reported as its resident growth per process (page-granular, the helper never collected on purpose)."
      ]
    }
  })
