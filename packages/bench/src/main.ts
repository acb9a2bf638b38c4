/**
 * `pnpm bench [--quick] [--only=1,3] [--self-test-leak] [--max-load-factor=8]`:
 * runs the scenarios, prints a markdown table, writes
 * packages/bench/results/latest.json, and fails loudly (exit code 1) if any
 * process of this run survives a scenario (see sweep.ts for "of this run";
 * other `b-*` carriers are reported and left alone). Time limits scale with
 * the measured load (runner.ts); past `--max-load-factor` the run stops with
 * "machine too loaded to measure" and exit code 3 (`--limit-scale=0.05` shrinks
 * the limits to exercise that path). `--self-test-leak`
 * deliberately leaks one `sleep` to show that the check works.
 *
 * Shepherd is measured as installed: `pnpm bench` builds @shepherd/core and
 * @shepherd/node first and runs their `dist` (run with the `@shepherd/source`
 * condition, it measures the sources, and the header says so).
 *
 * Killed from outside, the run still leaves nothing: on SIGTERM or SIGINT it
 * interrupts the scenario and sweeps before exiting (exit code 130); on
 * SIGKILL its watchdog process (watchdog.ts) kills what carries the marker.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeChildProcess from "node:child_process"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as crypto from "node:crypto"
import * as References from "effect/References"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import {
  emptyOutput,
  log,
  machineInfo,
  type Row,
  type ScenarioOutput,
  summarize,
  table,
  type Target,
  targetTable,
  writeJson
} from "./harness.ts"
import type { Ctx } from "./pools.ts"
import { carriers, listPids, markerName } from "./procs.ts"
import { type Load, measureLoad, runWithLimit } from "./runner.ts"
import * as cooperativeTeardown from "./scenarios/cooperativeTeardown.ts"
import * as forcedTeardown from "./scenarios/forcedTeardown.ts"
import * as ledger from "./scenarios/ledger.ts"
import * as memory from "./scenarios/memory.ts"
import * as reaper from "./scenarios/reaper.ts"
import * as slotHandoff from "./scenarios/slotHandoff.ts"
import * as spawnThroughput from "./scenarios/spawnThroughput.ts"
import * as spawnVsHeap from "./scenarios/spawnVsHeap.ts"
import * as underLoad from "./scenarios/underLoad.ts"
import { classify, type Ownership, ownPoolIds, sweep, sweepSync } from "./sweep.ts"
import { startWatchdog } from "./watchdog.ts"

interface Scenario {
  readonly id: string
  readonly title: string
  /** Run time on an idle machine, with room; multiplied by the load factor, it is the scenario's limit (interrupted and failed past it). */
  readonly budgetMs: { readonly full: number; readonly quick: number }
  readonly run: (ctx: Ctx) => Effect.Effect<ScenarioOutput>
}

const scenarios: ReadonlyArray<Scenario> = [
  { id: "1", title: "spawn→exit throughput", budgetMs: { full: 120_000, quick: 30_000 }, run: spawnThroughput.run },
  {
    id: "2",
    title: "cooperative tree teardown",
    budgetMs: { full: 90_000, quick: 20_000 },
    run: cooperativeTeardown.run
  },
  { id: "3", title: "forced teardown at scale", budgetMs: { full: 180_000, quick: 40_000 }, run: forcedTeardown.run },
  { id: "4", title: "slot hand-off", budgetMs: { full: 60_000, quick: 15_000 }, run: slotHandoff.run },
  { id: "5", title: "ledger throughput", budgetMs: { full: 90_000, quick: 20_000 }, run: ledger.run },
  { id: "6", title: "reaper tick and tree discovery", budgetMs: { full: 90_000, quick: 30_000 }, run: reaper.run },
  { id: "7", title: "memory per tracked process", budgetMs: { full: 120_000, quick: 40_000 }, run: memory.run },
  { id: "8", title: "spawn cost vs host memory", budgetMs: { full: 120_000, quick: 30_000 }, run: spawnVsHeap.run },
  // Its own CPU hog slows its second half: the budget has room for that (the load measured before it is the outside's).
  { id: "9", title: "under load", budgetMs: { full: 90_000, quick: 30_000 }, run: underLoad.run }
]

/** Deliberately leaves a process behind (`--self-test-leak`). */
const leakOne: Scenario = {
  id: "leak",
  title: "self-test: leak one process",
  budgetMs: { full: 5_000, quick: 5_000 },
  run: () =>
    Effect.sync(() => {
      NodeChildProcess.spawn("sleep", ["1000"], { stdio: "ignore", detached: true }).unref()
      return emptyOutput
    })
}

const args = process.argv.slice(2)
const quick = args.includes("--quick")
const only = args.find((a) => a.startsWith("--only="))?.slice("--only=".length).split(",")
const maxLoadArg = args.find((a) => a.startsWith("--max-load-factor="))?.slice("--max-load-factor=".length)
/** Past this factor (limits × 8, e.g. load 16 on 2 cores) the figures mean little: stop, exit code 3. */
const maxLoadFactor = maxLoadArg === undefined ? 8 : Number(maxLoadArg)
/** Multiplies every scenario's limit (default 1): `--limit-scale=0.05` exercises the limit path on purpose. */
const limitScaleArg = args.find((a) => a.startsWith("--limit-scale="))?.slice("--limit-scale=".length)
const limitScale = limitScaleArg === undefined ? 1 : Number(limitScaleArg)
const runId = `${process.pid}-${crypto.randomUUID().slice(0, 8)}`
// Set before anything is spawned: every child of this process that inherits its environment (raw, execa,
// Effect, Shepherd's members and its sentinel) carries the marker; see sweep.ts for the other two rules.
process.env[markerName] = runId
const resultsFile = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "results", "latest.json")
const fmtLoad = (l: Load) =>
  `load factor ${l.factor.toFixed(2)} (1-min load ${l.perCore.toFixed(2)}/core, CPU contention ${
    l.contention.toFixed(2)
  })`

const program = Effect.gen(function*() {
  const started = performance.now()
  // First of all, before any scenario: the watchdog process that kills this run's processes should this
  // one die without cleaning up (SIGKILL, a crash); spared by this run's own sweeps.
  const watchdog = startWatchdog(runId)
  const own: Ownership = { runId, poolIds: ownPoolIds, descendants: true, spare: [watchdog.identity] }
  // Runs last (finalizers run in reverse): after an interruption (SIGTERM, SIGINT) or a failure, one more
  // sweep (the scenario's was done by runWithLimit); then the watchdog is told that this run is done.
  yield* Effect.addFinalizer((exit) =>
    Effect.promise(async () => {
      if (!Exit.isSuccess(exit)) {
        const swept = await sweep(own, "at exit", 0)
        if (swept.killed.length > 0) log(`at exit: killed ${swept.killed.length} process(es) of this run`)
      }
      watchdog.done()
    })
  )
  const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-bench-"))
  const ctx: Ctx = { quick, runId, tmpDir }
  const machine = machineInfo()
  const loadAtStart = os.loadavg()
  const loads: Record<string, Load> = { start: measureLoad() }
  let factor = loads["start"]!.factor
  // The whole run's deadline uses the largest factor seen: time granted under load stays granted.
  let deadlineFactor = factor
  let tooLoaded: string | undefined
  const processesAtStart = listPids().length
  log(
    `${quick ? "quick" : "full"} run ${runId} on ${machine.cpuModel} × ${machine.cores}, node ${machine.node}, ` +
      `Shepherd from its ${machine.shepherdFrom}`
  )
  log(`at start: ${fmtLoad(loads["start"]!)}; limits × ${factor.toFixed(2)}`)
  const rows: Array<Row> = []
  const targets: Array<Target> = []
  const notes: Array<string> = []
  const failures: Array<string> = []
  const leaks: Array<string> = []
  /** Other runs' b-* carriers seen (reported, never signalled); the report lists the first `shownForeign`. */
  const foreign = new Set<string>()
  const shownForeign = 20
  const timings: Record<string, number> = {}
  yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(tmpDir, { recursive: true, force: true })))

  // A hard bound on the whole run (scaled by the load factor), whatever a scenario does: kill what is
  // provably this run's, pass after pass, and exit.
  const deadlineMs = quick ? 120_000 : 480_000
  const deadline = setInterval(() => {
    if (performance.now() - started <= deadlineMs * deadlineFactor) return
    const killed = sweepSync(own)
    watchdog.done()
    process.stderr.write(
      `\nBENCHMARK FAILED: the run exceeded ${Math.round(deadlineMs * deadlineFactor / 1000)} s (${
        deadlineMs / 1000
      } s × load factor ${deadlineFactor.toFixed(2)}); killed ${killed} process(es) of this run\n`
    )
    process.exit(2)
  }, 1_000)
  deadline.unref()
  yield* Effect.addFinalizer(() => Effect.sync(() => clearInterval(deadline)))

  for (const scenario of args.includes("--self-test-leak") ? [...scenarios, leakOne] : scenarios) {
    if (only !== undefined && !only.includes(scenario.id) && scenario !== leakOne) continue
    // The outside load: the 1-min average read before this run started (later ones hold this run's own
    // work), and the CPU this process gets now (a hog started meanwhile shows there).
    const load = measureLoad(loadAtStart[0])
    loads[scenario.id] = load
    factor = Math.max(1, load.factor)
    deadlineFactor = Math.max(deadlineFactor, factor)
    if (!(factor <= maxLoadFactor)) {
      tooLoaded = `machine too loaded to measure: ${fmtLoad(load)} > ${maxLoadFactor} before scenario ${scenario.id}`
      log(tooLoaded)
      break
    }
    const budget = quick ? scenario.budgetMs.quick : scenario.budgetMs.full
    const limit = Math.round(budget * factor * limitScale)
    log(`scenario ${scenario.id}: ${scenario.title} (limit ${(limit / 1000).toFixed(0)} s; ${fmtLoad(load)})`)
    const t0 = performance.now()
    const { exit, sweep: swept } = yield* runWithLimit(scenario.run(ctx), limit, own, `after scenario ${scenario.id}`)
    timings[scenario.id] = Math.round(performance.now() - t0)
    if (exit !== undefined && Exit.isSuccess(exit)) {
      rows.push(...exit.value.rows)
      targets.push(...exit.value.targets)
      notes.push(...exit.value.notes)
    } else {
      const message = exit === undefined
        ? `scenario ${scenario.id} exceeded its limit of ${(limit / 1000).toFixed(0)} s (${
          budget / 1000
        } s × load factor ${factor.toFixed(2)}); stopped, and its processes swept`
        : `scenario ${scenario.id} failed: ${String(exit.cause)}`
      failures.push(message)
      log(message)
    }
    // Another run's scenario may hold a thousand b-* processes: a count and a few examples in the log.
    const fresh = swept.foreign.map((line) => line.slice(line.indexOf("pid "))).filter((f) => !foreign.has(f))
    for (const f of fresh) foreign.add(f)
    if (fresh.length > 0) {
      log(
        `after scenario ${scenario.id}: ${fresh.length} b-* carrier(s) of another run, not ours: left alone, e.g. ${
          fresh.slice(0, 3).join("; ")
        }`
      )
    }
    if (swept.killed.length > 0) {
      leaks.push(...swept.killed)
      log(`LEAK after scenario ${scenario.id}: ${swept.killed.length} process(es)`)
    }
  }

  // The final check, by /proc: nothing of this run alive (other b-* carriers are reported, left alone).
  const final = classify(own)
  const finalLeft = final.ours
  for (const c of final.foreign) foreign.add(`pid ${c.pid} ${c.cmdline} (${c.value}): not ours: left alone`)
  const shepherdLeft = carriers("SHEPHERD_ID", () => true)
  const summaries = summarize(rows)
  const elapsedMs = Math.round(performance.now() - started)
  const problems = [...failures, ...leaks, ...finalLeft.map((c) => `survivor at the end: pid ${c.pid} ${c.cmdline}`)]
  const report = {
    passed: problems.length === 0 && tooLoaded === undefined,
    problems,
    stoppedEarly: tooLoaded,
    mode: quick ? "quick" : "full",
    runId,
    machine,
    elapsedMs,
    scenarioMs: timings,
    // Other work on the machine skews every figure: recorded so that a noisy run can be recognised.
    load: { atStart: loadAtStart, atEnd: os.loadavg(), processesAtStart, maxLoadFactor, beforeScenario: loads },
    rows: summaries,
    targets,
    notes,
    failures,
    cleanup: {
      leaks,
      finalLeftovers: finalLeft.map((c) => ({ pid: c.pid, cmdline: c.cmdline })),
      notOursLeftAloneCount: foreign.size,
      notOursLeftAlone: [...foreign].slice(0, shownForeign),
      otherShepherdCarriers: shepherdLeft.filter((c) => !c.value.startsWith("b-")).length
    }
  }
  writeJson(resultsFile, report)

  const out: Array<string> = []
  out.push(`## Shepherd benchmarks (${report.mode})`, "")
  out.push(
    `${machine.cpuModel}, ${machine.cores} cores, ${(machine.memoryBytes / 2 ** 30).toFixed(1)} GiB, ` +
      `Node ${machine.node}, ${machine.platform} ${machine.kernel}, ${machine.date}; total ${
        (elapsedMs / 1000).toFixed(1)
      } s; ` +
      `load average ${loadAtStart.map((l) => l.toFixed(2)).join(" ")} at start, ${
        report.load.atEnd.map((l) => l.toFixed(2)).join(" ")
      } at end; ` +
      `${processesAtStart} processes (incl. kernel threads) at start; Shepherd from its ${machine.shepherdFrom}`,
    ""
  )
  out.push(table(summaries), "")
  out.push(
    "× baseline = median ÷ the median of the row marked baseline in the same group (↑: higher is better, ↓: lower is better); " +
      "min–max over the runs (scenario 8: over single spawns).",
    ""
  )
  out.push("### Targets", "", targetTable(targets), "")
  if (notes.length > 0) out.push("### Notes", "", ...notes.map((n) => `- ${n}`), "")
  if (report.cleanup.otherShepherdCarriers > 0) {
    out.push(
      `${report.cleanup.otherShepherdCarriers} live process(es) carry a SHEPHERD_ID of another program (not b-*, not started by this run); not counted.`,
      ""
    )
  }
  if (foreign.size > 0) {
    out.push(
      `${foreign.size} live process(es) carry a b-* SHEPHERD_ID or sentinel of another run (not this run's marker, pools or descendants); reported, not signalled:`,
      "",
      ...[...foreign].slice(0, shownForeign).map((f) => `- ${f}`),
      ...(foreign.size > shownForeign ? [`- … and ${foreign.size - shownForeign} more`] : []),
      ""
    )
  }
  out.push(`JSON: ${path.relative(process.cwd(), resultsFile)}`)
  process.stdout.write(`${out.join("\n")}\n`)

  if (problems.length > 0) {
    yield* Effect.promise(() => sweep(own, "at the end", 0))
    process.stderr.write(`\nBENCHMARK FAILED:\n${problems.map((p) => `  - ${p}`).join("\n")}\n`)
    return yield* Effect.die(new Error(`${problems.length} problem(s)`))
  }
  if (tooLoaded !== undefined) {
    process.stderr.write(`\n${tooLoaded}; stopped early, nothing of this run left behind (exit code 3)\n`)
    process.exitCode = 3
    return
  }
  log(`clean: no survivor of this run (${markerName}=${runId}, its pools, its descendants)`)
})

program.pipe(
  Effect.scoped,
  // Forced teardowns log at Info: keep the output to the report.
  Effect.provideService(References.MinimumLogLevel, "Warn"),
  NodeRuntime.runMain
)
