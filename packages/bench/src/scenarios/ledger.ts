/**
 * 5. Ledger throughput: 1000 tracked processes register (Intent + Registered)
 * and then exit (Exited) — 3000 events — through `NodeLedger.append`, vs the
 * seed approach: a JSON registry of the live processes rewritten whole with
 * `writeFileSync` on every change.
 */
import type { LedgerRecord } from "@shepherd/core/Ledger"
import * as NodeLedger from "@shepherd/node/NodeLedger"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { fmt, log, median, type Row, type ScenarioOutput, since, type Target } from "../harness.ts"
import type { Ctx } from "../pools.ts"

/** The records of `count` processes: every intent and registration, then every exit. */
const records = (count: number, run: number): Array<LedgerRecord> => {
  const poolId = `b-ledger~${run.toString(16).padStart(8, "0")}`
  const out: Array<LedgerRecord> = []
  const at = Date.now()
  for (let i = 1; i <= count; i++) {
    const shepherdId = `${poolId}:${i}`
    out.push({ _tag: "Intent", poolId, shepherdId, session: `s-${i % 10}`, command: "sh -c 'sleep 1000 & wait'", at })
    out.push({
      _tag: "Registered",
      shepherdId,
      pgid: 100_000 + i,
      identity: { pid: 100_000 + i, startTime: String(9_000_000 + i), bootId: "00000000-0000-0000-0000-000000000000" },
      at
    })
  }
  for (let i = 1; i <= count; i++) {
    out.push({ _tag: "Exited", shepherdId: `${poolId}:${i}`, outcome: "Exited", detail: "exited with code 0", at })
  }
  return out
}

/** The seed approach: a registry object, the whole file rewritten per change. */
const seed = (file: string, events: ReadonlyArray<LedgerRecord>) => {
  const registry: Record<string, unknown> = {}
  for (const e of events) {
    switch (e._tag) {
      case "Intent":
        registry[e.shepherdId] = { session: e.session, command: e.command, at: e.at }
        break
      case "Registered":
        registry[e.shepherdId] = { ...(registry[e.shepherdId] as object), pgid: e.pgid, identity: e.identity }
        break
      case "Exited":
        delete registry[e.shepherdId]
        break
      default:
        break
    }
    fs.writeFileSync(file, JSON.stringify(registry))
  }
}

export const run = (ctx: Ctx): Effect.Effect<ScenarioOutput> =>
  Effect.gen(function*() {
    // quick mode: 300 processes (900 events), the seed approach is O(n²) and takes ~4-10 s at 1000
    const count = ctx.quick ? 300 : 1000
    const runs = ctx.quick ? 3 : 7
    const seedRuns = ctx.quick ? 1 : 3
    const scenario = `5. ledger: ${count} processes register + exit (${3 * count} events)`
    const samples: Record<string, Array<number>> = {
      "seed: writeFileSync whole JSON registry per change": [],
      "NodeLedger.append (intents written at once, the rest batched per turn)": []
    }
    for (let r = 0; r < runs; r++) {
      const events = records(count, r)
      const file = path.join(ctx.tmpDir, `b-ledger-${r}.ledger`)
      const start = performance.now()
      yield* Effect.scoped(Effect.gen(function*() {
        const ledger = yield* Effect.orDie(NodeLedger.make({ path: file }))
        for (const e of events) yield* Effect.orDie(ledger.append(e))
      }))
      samples["NodeLedger.append (intents written at once, the rest batched per turn)"]!.push(
        events.length / (since(start) / 1000)
      )
      if (r < seedRuns) {
        const seedFile = path.join(ctx.tmpDir, `b-seed-${r}.json`)
        const t = performance.now()
        seed(seedFile, events)
        samples["seed: writeFileSync whole JSON registry per change"]!.push(events.length / (since(t) / 1000))
      }
    }
    const rows: Array<Row> = Object.entries(samples).map(([variant, s]) => ({
      scenario,
      variant,
      unit: "events/s",
      better: "higher",
      samples: s,
      baseline: variant.startsWith("seed")
    }))
    const ledger = median(samples["NodeLedger.append (intents written at once, the rest batched per turn)"]!)
    const base = median(samples["seed: writeFileSync whole JSON registry per change"]!)
    const targets: Array<Target> = [{
      id: "5",
      goal: "ledger ≥ 50× the seed approach",
      measured: `${fmt(ledger / base)}× (${fmt(ledger)} vs ${fmt(base)} events/s)`,
      met: ledger >= 50 * base,
      note: ctx.quick ? "quick mode: 300 processes, which favours the seed approach" : undefined
    }]
    log(`5: ledger ${fmt(ledger)} events/s, seed ${fmt(base)} events/s`)
    return {
      rows,
      targets,
      notes: [
        `5: the ledger time includes opening it (lock file, replay, first compaction) and the compactions it does on its own; ${runs} runs (seed ${seedRuns}). Files in ${
          path.dirname(ctx.tmpDir)
        } (the same disk for both).`
      ]
    }
  })
