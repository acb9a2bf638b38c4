/**
 * Timing, statistics, the markdown table and the JSON report.
 *
 * A scenario produces `Row`s (samples of one variant) and `Target`s (a check
 * of one figure against the issue's goal). `main.ts` collects them.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

/** Whether a larger or a smaller figure is better. */
export type Better = "higher" | "lower" | "info"

/** Samples of one variant of one scenario. */
export interface Row {
  /** Scenario heading, e.g. "1. spawn→exit /bin/true, sequential". Rows with the same `group` share a baseline. */
  readonly scenario: string
  /** Rows are compared inside a group (default: the scenario). */
  readonly group?: string | undefined
  readonly variant: string
  readonly unit: string
  readonly better: Better
  readonly samples: ReadonlyArray<number>
  /** True for the row the others of its group are compared with. */
  readonly baseline?: boolean | undefined
  readonly note?: string | undefined
}

/** A row with its statistics and its ratio to the group's baseline. */
export interface Summary extends Row {
  readonly median: number
  readonly min: number
  readonly max: number
  readonly n: number
  /** `median / baseline median`; absent when the group has no baseline. */
  readonly ratio: number | undefined
}

/** One of the issue's goals, checked. */
export interface Target {
  readonly id: string
  readonly goal: string
  readonly measured: string
  readonly met: boolean
  readonly note?: string | undefined
}

export interface ScenarioOutput {
  readonly rows: ReadonlyArray<Row>
  readonly targets: ReadonlyArray<Target>
  readonly notes: ReadonlyArray<string>
}

export const emptyOutput: ScenarioOutput = { rows: [], targets: [], notes: [] }

/** Rows of millisecond samples (lower is better), one per variant; the `raw…` variant is the baseline. */
export const msRows = (scenario: string, samples: Readonly<Record<string, Array<number>>>, unit = "ms"): Array<Row> =>
  Object.entries(samples).map(([variant, s]) => ({
    scenario,
    variant,
    unit,
    better: "lower",
    samples: s,
    baseline: variant.startsWith("raw")
  }))

export const median = (xs: ReadonlyArray<number>): number => {
  if (xs.length === 0) return Number.NaN
  const s = [...xs].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

export const summarize = (rows: ReadonlyArray<Row>): Array<Summary> => {
  const baselines = new Map<string, number>()
  for (const r of rows) {
    if (r.baseline === true) baselines.set(r.group ?? r.scenario, median(r.samples))
  }
  return rows.map((r) => {
    const m = median(r.samples)
    const base = baselines.get(r.group ?? r.scenario)
    return {
      ...r,
      median: m,
      min: r.samples.length === 0 ? Number.NaN : Math.min(...r.samples),
      max: r.samples.length === 0 ? Number.NaN : Math.max(...r.samples),
      n: r.samples.length,
      ratio: base === undefined || base === 0 || Number.isNaN(m) ? undefined : m / base
    }
  })
}

/** Three significant digits, at most two decimals for large values; thousands separated. */
export const fmt = (x: number): string => {
  if (!Number.isFinite(x)) return String(x)
  const a = Math.abs(x)
  if (a >= 1000) return Math.round(x).toLocaleString("en-US")
  if (a >= 100) return x.toFixed(0)
  if (a >= 10) return x.toFixed(1)
  if (a >= 1) return x.toFixed(2)
  return x.toFixed(3)
}

const arrow = (b: Better) => b === "higher" ? "↑" : b === "lower" ? "↓" : ""

export const table = (summaries: ReadonlyArray<Summary>): string => {
  const lines = [
    "| scenario | variant | median | min–max | runs | × baseline |",
    "| --- | --- | ---: | ---: | ---: | ---: |"
  ]
  let last = ""
  for (const s of summaries) {
    const scenario = s.scenario === last ? "" : s.scenario
    last = s.scenario
    const unit = `${s.unit}${arrow(s.better) === "" ? "" : ` ${arrow(s.better)}`}`
    const ratio = s.baseline === true ? "1.00 (baseline)" : s.ratio === undefined ? "" : `${s.ratio.toFixed(2)}`
    const variant = s.note === undefined ? s.variant : `${s.variant} (${s.note})`
    lines.push(
      `| ${scenario} | ${variant} | ${fmt(s.median)} ${unit} | ${fmt(s.min)}–${fmt(s.max)} | ${s.n} | ${ratio} |`
    )
  }
  return lines.join("\n")
}

export const targetTable = (targets: ReadonlyArray<Target>): string => {
  const lines = ["| # | goal | measured | result |", "| --- | --- | --- | --- |"]
  for (const t of targets) {
    lines.push(
      `| ${t.id} | ${t.goal} | ${t.measured} | ${t.met ? "met" : "**missed**"}${
        t.note === undefined ? "" : ` — ${t.note}`
      } |`
    )
  }
  return lines.join("\n")
}

export interface MachineInfo {
  readonly cpuModel: string
  readonly cores: number
  readonly memoryBytes: number
  readonly node: string
  readonly platform: string
  readonly kernel: string
  readonly date: string
  readonly pidMax: number | undefined
  readonly maxUserProcesses: string | undefined
  /**
   * Where Shepherd's modules came from: its built packages, as installed (what `pnpm bench` runs), or
   * its TypeScript sources (the `@shepherd/source` condition). From the sources its fork helper strips
   * their types at load and keeps the stripper's memory, which every fork then copies.
   */
  readonly shepherdFrom: "built packages" | "sources"
}

const readTrim = (file: string): string | undefined => {
  try {
    return fs.readFileSync(file, "utf8").trim()
  } catch {
    return undefined
  }
}

export const machineInfo = (): MachineInfo => {
  const cpus = os.cpus()
  const limits = readTrim("/proc/self/limits")
  const nproc = limits?.split("\n").find((l) => l.startsWith("Max processes"))?.split(/\s{2,}/)[1]
  const pidMax = readTrim("/proc/sys/kernel/pid_max")
  return {
    cpuModel: cpus[0]?.model ?? "unknown",
    cores: cpus.length,
    memoryBytes: os.totalmem(),
    node: process.version,
    platform: `${os.platform()} ${os.arch()}`,
    kernel: os.release(),
    date: new Date().toISOString(),
    pidMax: pidMax === undefined ? undefined : Number(pidMax),
    maxUserProcesses: nproc,
    shepherdFrom: import.meta.resolve("@shepherd/node/NodeShepherd").endsWith(".ts") ? "sources" : "built packages"
  }
}

export const writeJson = (file: string, value: unknown): void => {
  fs.mkdirSync(path.dirname(file), { recursive: true })
  fs.writeFileSync(file, `${JSON.stringify(value, null, 2)}\n`)
}

/** Milliseconds since `start` (a `performance.now()` value). */
export const since = (start: number): number => performance.now() - start

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Runs `task` `total` times with at most `concurrency` in flight. */
export const promisePool = async (total: number, concurrency: number, task: (i: number) => Promise<unknown>) => {
  let next = 0
  const worker = async () => {
    while (next < total) {
      const i = next++
      await task(i)
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, total) }, worker))
}

/** Progress on stderr, so that stdout stays the report. */
export const log = (line: string): void => {
  process.stderr.write(`[bench ${(performance.now() / 1000).toFixed(1)}s] ${line}\n`)
}
