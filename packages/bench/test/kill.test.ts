/**
 * A bench run killed from outside leaves no process behind: SIGTERM (as
 * `timeout` sends, or Ctrl-C's SIGINT) makes the bench sweep its run before
 * exiting; after SIGKILL the run's watchdog process (src/child/watchdog.ts)
 * kills what carries the run's marker.
 *
 * Each test starts `main.ts --quick --only=3` (scenario 3 starts `sleep 1000`
 * trees at once, in process groups of their own), waits until some of its
 * marked `sleep`s are in /proc, kills the bench, and then polls /proc until
 * no process carries the run's marker: a hang guard of 60 s, never a bound
 * on how fast that goes. `afterEach` kills the bench and everything carrying
 * its marker, whatever the outcome.
 */
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { afterEach, describe, expect, it } from "vitest"
import { type Carrier, carriers, type Identity, identify, markerName, readStat, waitFor } from "../src/procs.ts"
import { killOurs } from "../src/sweep.ts"

const main = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "src", "main.ts")
const hangGuardMs = 60_000

interface Bench {
  readonly child: NodeChildProcess.ChildProcess
  readonly identity: Identity
  readonly runId: Promise<string>
  /** Everything written to stderr so far (the bench's log, then the watchdog's, which shares the pipe). */
  readonly stderr: () => string
  /** Resolves when every writer of stderr (the bench and its watchdog) has closed it. */
  readonly stderrClosed: Promise<void>
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

const benches: Array<Bench> = []
const runIds: Array<string> = []
/** Each bench's TMPDIR: a killed bench cannot remove its own temporary directory. */
const tmpDirs: Array<string> = []

const runCarriers = (runId: string): Array<Carrier> => carriers(markerName, (v) => v === runId)

afterEach(async () => {
  for (const b of benches.splice(0)) killOurs([{ ...b.identity, value: "", cmdline: "" }])
  for (const runId of runIds.splice(0)) {
    // pass after pass: a shell killed mid-fork may start a child after a pass
    await waitFor(
      () => {
        const left = runCarriers(runId)
        killOurs(left)
        return left.length === 0
      },
      hangGuardMs,
      50
    )
  }
  for (const dir of tmpDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true })
})

/** The test process's environment without a bench marker (the bench sets its own). */
const baseEnv = (): Record<string, string> => {
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && k !== markerName) env[k] = v
  return env
}

const startBench = (): Bench => {
  // process.execPath is the workspace's Node (24, runs .ts); NODE_OPTIONS carries the source condition.
  // No load refusal: this test is about the kill path, and must not depend on how loaded the machine is.
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-bench-kill-"))
  tmpDirs.push(tmp)
  const child = NodeChildProcess.spawn(process.execPath, [main, "--quick", "--only=3", "--max-load-factor=1000000"], {
    env: { ...baseEnv(), TMPDIR: tmp },
    stdio: ["ignore", "ignore", "pipe"]
  })
  const identity = child.pid === undefined ? undefined : identify(child.pid)
  if (identity === undefined) throw new Error("the bench did not start")
  let stderr = ""
  let resolveRunId: (id: string) => void = () => {}
  const runId = new Promise<string>((resolve) => {
    resolveRunId = resolve
  })
  child.stderr!.setEncoding("utf8")
  child.stderr!.on("data", (chunk: string) => {
    stderr += chunk
    const m = / run (\S+) on /.exec(stderr)
    if (m !== null) resolveRunId(m[1]!)
  })
  const stderrClosed = new Promise<void>((resolve) => child.stderr!.on("close", () => resolve()))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on("exit", (code, signal) => resolve({ code, signal }))
  )
  const bench: Bench = { child, identity, runId, stderr: () => stderr, stderrClosed, exited }
  benches.push(bench)
  void runId.then((id) => runIds.push(id))
  return bench
}

/** Resolves `p`, or fails after the hang guard with `what`. */
const guarded = <A>(p: Promise<A>, what: string, bench: Bench): Promise<A> =>
  Promise.race([
    p,
    new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error(`${what} within ${hangGuardMs} ms; stderr:\n${bench.stderr()}`)), hangGuardMs)
        .unref()
    )
  ])

/** Starts the bench, waits for its run id and for at least 3 of its marked `sleep 1000` in /proc. */
const startAndAwaitSleeps = async (): Promise<{ bench: Bench; runId: string }> => {
  const bench = startBench()
  const runId = await guarded(bench.runId, "no run id on stderr", bench)
  const sleeping = () => runCarriers(runId).filter((c) => c.cmdline.startsWith("sleep ")).length
  const ok = await waitFor(() => sleeping() >= 3, hangGuardMs, 20)
  if (!ok) throw new Error(`no marked sleep appeared; stderr:\n${bench.stderr()}`)
  return { bench, runId }
}

/** Polls /proc until no process carries the run's marker (the watchdog included); returns what is left. */
const awaitNoCarrier = async (runId: string): Promise<Array<Carrier>> => {
  await waitFor(() => runCarriers(runId).length === 0, hangGuardMs, 50)
  return runCarriers(runId)
}

describe("a killed bench run leaves nothing behind", () => {
  it("SIGTERM: the bench sweeps its run before it exits", async () => {
    const { bench, runId } = await startAndAwaitSleeps()

    bench.child.kill("SIGTERM")
    const exit = await guarded(bench.exited, "the bench did not exit after SIGTERM", bench)
    const left = await awaitNoCarrier(runId)

    expect(left.map((c) => `${c.pid} ${c.cmdline}`)).toEqual([])
    // runMain's exit code for an interruption; the bench's own sweep ran (the scenario's, or the one at exit)
    expect(exit).toEqual({ code: 130, signal: null })
    expect(bench.stderr()).toMatch(/(interrupted|at exit): killed \d+ process\(es\) of this run/)
  })

  it("SIGKILL: the run's watchdog process kills what carries the run's marker", async () => {
    const { bench, runId } = await startAndAwaitSleeps()
    const sleeps = runCarriers(runId).filter((c) => c.cmdline.startsWith("sleep "))
    // in process groups of their own (scenario 3's trees are detached): a signal to the bench's group misses them
    const benchGroup = readStat(bench.identity.pid)?.pgid
    expect(sleeps.filter((c) => readStat(c.pid)?.pgid !== benchGroup).length).toBeGreaterThanOrEqual(1)

    bench.child.kill("SIGKILL")
    const exit = await guarded(bench.exited, "the bench did not die of SIGKILL", bench)
    const left = await awaitNoCarrier(runId)
    await guarded(bench.stderrClosed, "the watchdog did not exit", bench)

    expect(left.map((c) => `${c.pid} ${c.cmdline}`)).toEqual([])
    expect(exit).toEqual({ code: null, signal: "SIGKILL" })
    expect(bench.stderr()).toContain(
      `bench watchdog: the bench (pid ${bench.identity.pid}) is gone without its own cleanup; killed`
    )
  })
})
