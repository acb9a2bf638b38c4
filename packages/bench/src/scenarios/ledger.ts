/**
 * 5. Ledger throughput: 1000 tracked processes register (Intent + Registered)
 * and exit (Exited) — 3000 events — through `NodeLedger.append`, vs the seed
 * approach: a JSON registry of the live processes rewritten whole with
 * `writeFileSync` on every change. The events arrive as a pool produces them
 * (see `drive`): a few spawns in flight, intent, registration and exit in
 * separate event-loop turns, so that a write carries only what one turn
 * produced.
 */
import type { LedgerRecord } from "@shepherd/core/Ledger"
import * as NodeLedger from "@shepherd/node/NodeLedger"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { fmt, log, median, type Row, type ScenarioOutput, since, type Target } from "../harness.ts"
import { inFreshProcess } from "../child/protocol.ts"
import type { Ctx } from "../pools.ts"

/** The records of process `i` of a run: its intent, its registration, its exit. */
const recordsOf = (poolId: string, i: number, at: number) => {
  const shepherdId = `${poolId}:${i}`
  const intent: LedgerRecord = {
    _tag: "Intent",
    poolId,
    shepherdId,
    session: `s-${i % 10}`,
    command: "sh -c 'sleep 1000 & wait'",
    at
  }
  const registered: LedgerRecord = {
    _tag: "Registered",
    shepherdId,
    pgid: 100_000 + i,
    identity: { pid: 100_000 + i, startTime: String(9_000_000 + i), bootId: "00000000-0000-0000-0000-000000000000" },
    at
  }
  const exited: LedgerRecord = { _tag: "Exited", shepherdId, outcome: "Exited", detail: "exited with code 0", at }
  return { intent, registered, exited }
}

/** One event-loop turn (a macrotask): what separates a pool's intent, its spawn's registration and an exit. */
const turn = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))

/**
 * The events of `count` processes as a pool produces them: up to `inFlight` spawns at once, each
 * an intent, then (a turn later, the OS spawn) its registration; once `live` processes are
 * registered, every registration is followed (a turn later) by the exit of the oldest one, and the
 * last `live` exit at the end, `inFlight` at a time, each in its own turn. Every record goes through
 * `append`; returns them in the order appended.
 */
const drive = (
  append: (record: LedgerRecord) => Effect.Effect<void>,
  count: number,
  run: number,
  live: number,
  inFlight: number
): Effect.Effect<Array<LedgerRecord>> =>
  Effect.gen(function*() {
    const poolId = `b-ledger~${run.toString(16).padStart(8, "0")}`
    const at = Date.now()
    const order: Array<LedgerRecord> = []
    const write = (record: LedgerRecord) => {
      order.push(record)
      return append(record)
    }
    const alive: Array<LedgerRecord> = []
    const exitOne = Effect.suspend(() => {
      const exited = alive.shift()
      return exited === undefined ? Effect.void : Effect.andThen(turn, write(exited))
    })
    yield* Effect.forEach(
      Array.from({ length: count }, (_, k) => k + 1),
      (i) =>
        Effect.gen(function*() {
          const { exited, intent, registered } = recordsOf(poolId, i, at)
          yield* write(intent)
          yield* turn
          yield* write(registered)
          alive.push(exited)
          if (alive.length > live) yield* exitOne
        }),
      { concurrency: inFlight, discard: true }
    )
    yield* Effect.forEach(Array.from({ length: alive.length }), () => exitOne, {
      concurrency: inFlight,
      discard: true
    })
    return order
  })

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

/**
 * `measure` in a fresh Node process: in the bench process, after scenarios 1 to 4 (thousands of
 * processes, a larger heap), the ledger's rate fell by a third (88,000 against 150,000 events/s)
 * while the seed's, bound by its writes, did not: that measured the bench's history.
 */
export const run = (ctx: Ctx): Effect.Effect<ScenarioOutput> => inFreshProcess("ledger", ctx)

/** The scenario itself, in the process that runs it. */
export const measure = (ctx: Ctx): Effect.Effect<ScenarioOutput> =>
  Effect.gen(function*() {
    // quick mode: 300 processes (900 events), the seed approach is O(n²) and takes ~4-10 s at 1000
    const count = ctx.quick ? 300 : 1000
    const runs = ctx.quick ? 3 : 7
    const seedRuns = ctx.quick ? 1 : 3
    const warmups = ctx.quick ? 1 : 5
    // a pool's shape: 8 spawns in flight, half the processes alive at the peak
    const inFlight = 8
    const live = count / 2
    const scenario = `5. ledger: ${count} processes register + exit (${
      3 * count
    } events, ${inFlight} spawns in flight, exits interleaved, ≤ ${live} alive)`
    const ledgerName = "NodeLedger.append (intents written at once, the rest batched per turn)"
    const seedName = "seed: writeFileSync whole JSON registry per change"
    const coldLedgerName = "NodeLedger.append, first run in the process (cold JIT, informational)"
    const coldSeedName = "seed, first run in the process (informational)"
    const samples: Record<string, Array<number>> = {
      [seedName]: [],
      [ledgerName]: [],
      [coldLedgerName]: [],
      [coldSeedName]: []
    }
    /** One ledger run on a fresh file: the events it appended, and their rate. */
    const ledgerRun = (file: string, run: number) =>
      Effect.gen(function*() {
        const start = performance.now()
        const events = yield* Effect.scoped(Effect.gen(function*() {
          const ledger = yield* Effect.orDie(NodeLedger.make({ path: file }))
          return yield* drive((e) => Effect.orDie(ledger.append(e)), count, run, live, inFlight)
        }))
        if (events.length !== 3 * count) {
          return yield* Effect.die(new Error(`${events.length} events, not ${3 * count}`))
        }
        return { events, rate: events.length / (since(start) / 1000) }
      })
    /** The same events in the same order, written synchronously (no event-loop turns: in its favour). */
    const seedRun = (file: string, events: ReadonlyArray<LedgerRecord>) => {
      const t = performance.now()
      seed(file, events)
      return events.length / (since(t) / 1000)
    }
    // Warm-up, the same for both (not recorded, but the first runs are shown): the ledger's first
    // runs in a fresh process are its JIT's (53,000 events/s in the first, 140,000 from the sixth on).
    for (let r = 0; r < warmups; r++) {
      const { events, rate } = yield* ledgerRun(path.join(ctx.tmpDir, `b-ledger-warm-${r}.ledger`), runs + r)
      const seedRate = seedRun(path.join(ctx.tmpDir, `b-seed-warm-${r}.json`), events)
      if (r === 0) {
        samples[coldLedgerName]!.push(rate)
        samples[coldSeedName]!.push(seedRate)
      }
    }
    for (let r = 0; r < runs; r++) {
      const { events, rate } = yield* ledgerRun(path.join(ctx.tmpDir, `b-ledger-${r}.ledger`), r)
      samples[ledgerName]!.push(rate)
      if (r < seedRuns) samples[seedName]!.push(seedRun(path.join(ctx.tmpDir, `b-seed-${r}.json`), events))
    }
    const rows: Array<Row> = Object.entries(samples).map(([variant, s]) => ({
      scenario,
      variant,
      unit: "events/s",
      better: "higher",
      samples: s,
      baseline: variant === seedName
    }))
    const ledger = median(samples[ledgerName]!)
    const base = median(samples[seedName]!)
    const targets: Array<Target> = [{
      id: "5",
      goal: "ledger ≥ 50× the seed approach, events interleaved as a pool produces them",
      measured: `${fmt(ledger / base)}× (${fmt(ledger)} vs ${fmt(base)} events/s)`,
      met: ledger >= 50 * base,
      note: ctx.quick ? "quick mode: 300 processes, which favours the seed approach" : undefined
    }]
    log(`5: ledger ${fmt(ledger)} events/s, seed ${fmt(base)} events/s`)
    return {
      rows,
      targets,
      notes: [
        `5: as a pool produces them: up to ${inFlight} spawns in flight, each an intent then, an event-loop turn later, its registration; once ${live} are alive each registration is followed, a turn later, by the exit of the oldest; the rest exit at the end, ${inFlight} at a time, each in its own turn. The seed approach writes the same events in the same order, without the turns. The ledger time includes opening it (lock file, replay, first compaction) and the compactions it does on its own; ${runs} runs (seed ${seedRuns}) after ${warmups} warm-up run(s) of each (the first of each shown as an informational row), all in a fresh Node process. Files in ${
          path.dirname(ctx.tmpDir)
        } (the same disk for both).`
      ]
    }
  })
