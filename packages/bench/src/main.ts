/**
 * `pnpm bench [--quick] [--only=1,3] [--self-test-leak]`: runs the scenarios,
 * prints a markdown table, writes packages/bench/results/latest.json, and fails
 * loudly (exit code 1) if any process it started, or any process of a `b-...`
 * pool, survives. `--self-test-leak` deliberately leaks one `sleep` to show
 * that the check works.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeChildProcess from "node:child_process"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
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
import { carriers, type Carrier, isAlive, killAll, listPids, markerName, runCarriers, waitFor } from "./procs.ts"
import * as cooperativeTeardown from "./scenarios/cooperativeTeardown.ts"
import * as forcedTeardown from "./scenarios/forcedTeardown.ts"
import * as ledger from "./scenarios/ledger.ts"
import * as memory from "./scenarios/memory.ts"
import * as reaper from "./scenarios/reaper.ts"
import * as slotHandoff from "./scenarios/slotHandoff.ts"
import * as spawnThroughput from "./scenarios/spawnThroughput.ts"
import * as spawnVsHeap from "./scenarios/spawnVsHeap.ts"

interface Scenario {
  readonly id: string
  readonly title: string
  /** Upper bound of the scenario's run time; it is interrupted (and fails the run) past it. */
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
  { id: "8", title: "spawn cost vs host heap", budgetMs: { full: 120_000, quick: 30_000 }, run: spawnVsHeap.run }
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
const runId = `${process.pid}-${Date.now().toString(36)}`
// Every child of this process (whoever spawns it) inherits the marker: that is how leaks are found.
process.env[markerName] = runId
const resultsFile = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "results", "latest.json")

/** Processes this run started, or of a `b-` pool, or a `b-` pool's sentinel, that are still alive. */
const leftovers = (): Array<Carrier> => {
  const seen = new Set<number>()
  const out: Array<Carrier> = []
  const add = (list: Array<Carrier>) => {
    for (const c of list) {
      if (!seen.has(c.pid)) {
        seen.add(c.pid)
        out.push(c)
      }
    }
  }
  add(runCarriers(runId))
  add(carriers("SHEPHERD_ID", (v) => v.startsWith("b-")))
  add(carriers("SHEPHERD_SENTINEL", (v) => v.startsWith("b-")))
  return out
}

/** Waits briefly for processes on their way out (sentinels saying goodbye), then reports and kills the rest. */
const sweep = (where: string): Effect.Effect<Array<string>> =>
  Effect.promise(async () => {
    let left = leftovers()
    await waitFor(
      () => {
        left = left.filter(isAlive)
        return left.length === 0
      },
      3_000,
      20
    )
    if (left.length === 0) return []
    const lines = left.map((c) => `${where}: pid ${c.pid} ${c.cmdline}`)
    killAll(left)
    return lines
  })

const program = Effect.gen(function*() {
  const started = performance.now()
  const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-bench-"))
  const ctx: Ctx = { quick, runId, tmpDir }
  const machine = machineInfo()
  const loadAtStart = os.loadavg()
  const processesAtStart = listPids().length
  log(`${quick ? "quick" : "full"} run ${runId} on ${machine.cpuModel} × ${machine.cores}, node ${machine.node}`)
  const rows: Array<Row> = []
  const targets: Array<Target> = []
  const notes: Array<string> = []
  const failures: Array<string> = []
  const leaks: Array<string> = []
  const timings: Record<string, number> = {}
  yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(tmpDir, { recursive: true, force: true })))

  // A hard bound on the whole run, whatever a scenario does: kill what this run started and exit.
  const deadlineMs = quick ? 120_000 : 480_000
  const watchdog = setTimeout(() => {
    const left = leftovers()
    killAll(left)
    process.stderr.write(
      `\nBENCHMARK FAILED: the run exceeded ${deadlineMs / 1000} s; killed ${left.length} process(es)\n`
    )
    process.exit(2)
  }, deadlineMs)
  watchdog.unref()
  yield* Effect.addFinalizer(() => Effect.sync(() => clearTimeout(watchdog)))

  for (const scenario of args.includes("--self-test-leak") ? [...scenarios, leakOne] : scenarios) {
    if (only !== undefined && !only.includes(scenario.id) && scenario !== leakOne) continue
    const budget = quick ? scenario.budgetMs.quick : scenario.budgetMs.full
    log(`scenario ${scenario.id}: ${scenario.title} (budget ${budget / 1000} s)`)
    const t0 = performance.now()
    const exit = yield* scenario.run(ctx).pipe(
      Effect.timeoutOrElse({
        duration: budget,
        orElse: () => Effect.die(new Error(`scenario ${scenario.id} exceeded its budget of ${budget} ms`))
      }),
      Effect.exit
    )
    timings[scenario.id] = Math.round(performance.now() - t0)
    if (Exit.isSuccess(exit)) {
      rows.push(...exit.value.rows)
      targets.push(...exit.value.targets)
      notes.push(...exit.value.notes)
    } else {
      const message = `scenario ${scenario.id} failed: ${String(exit.cause)}`
      failures.push(message)
      log(message)
    }
    const leaked = yield* sweep(`after scenario ${scenario.id}`)
    if (leaked.length > 0) {
      leaks.push(...leaked)
      log(`LEAK after scenario ${scenario.id}: ${leaked.length} process(es)`)
    }
  }

  // The final check, by /proc: nothing carrying a b- SHEPHERD_ID and nothing this run started.
  const finalLeft = leftovers()
  const shepherdLeft = carriers("SHEPHERD_ID", () => true)
  const summaries = summarize(rows)
  const elapsedMs = Math.round(performance.now() - started)
  const problems = [...failures, ...leaks, ...finalLeft.map((c) => `survivor at the end: pid ${c.pid} ${c.cmdline}`)]
  const report = {
    passed: problems.length === 0,
    problems,
    mode: quick ? "quick" : "full",
    runId,
    machine,
    elapsedMs,
    scenarioMs: timings,
    // Other work on the machine skews every figure: recorded so that a noisy run can be recognised.
    load: { atStart: loadAtStart, atEnd: os.loadavg(), processesAtStart },
    rows: summaries,
    targets,
    notes,
    failures,
    cleanup: {
      leaks,
      finalLeftovers: finalLeft.map((c) => ({ pid: c.pid, cmdline: c.cmdline })),
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
      `${processesAtStart} processes (incl. kernel threads) at start`,
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
  out.push(`JSON: ${path.relative(process.cwd(), resultsFile)}`)
  process.stdout.write(`${out.join("\n")}\n`)

  if (problems.length > 0) {
    killAll(finalLeft)
    process.stderr.write(`\nBENCHMARK FAILED:\n${problems.map((p) => `  - ${p}`).join("\n")}\n`)
    return yield* Effect.die(new Error(`${problems.length} problem(s)`))
  }
  log(`clean: no survivor carrying SHEPHERD_ID=b-* or ${markerName}=${runId}`)
})

program.pipe(
  Effect.scoped,
  // Forced teardowns log at Info: keep the output to the report.
  Effect.provideService(References.MinimumLogLevel, "Warn"),
  NodeRuntime.runMain
)
