/**
 * 9. Under load: does Shepherd keep its ratio to raw when every core is busy?
 *
 * Scenario 1's sequential spawn→exit throughput (raw `child_process.spawn` vs
 * Shepherd `pool.spawn`, the same contenders, exported from
 * spawnThroughput.ts) and scenario 4's slot hand-off (raw FIFO queue vs
 * Shepherd `slots: 1`, from slotHandoff.ts), measured twice: on the quiet
 * machine, then while a CPU hog keeps every core busy — one
 * `sh -c 'while :; do :; done'` per core, started by this scenario, carrying
 * the run's marker (it inherits the environment) so that every sweep and the
 * run's watchdog own them, and stopped (SIGKILL, then gone from /proc, not
 * even a zombie) when the scenario ends, fails or is interrupted, so that the
 * load the runner measures before the next scenario is not this one's.
 *
 * It runs in a fresh Node process (src/child/fresh.ts), as scenarios 5, 7
 * and 8 do: by its turn the bench process has started thousands of processes
 * (scenario 3), and forking from it has become slower than from a fresh host
 * (raw spawns at 190–330/s there, 450–470/s from a fresh process), which
 * would measure the bench's history, not the load.
 *
 * Fairness: raw, Shepherd and Shepherd with its fork helper take turns, 10
 * spawns at a time (the order rotating slice by slice), so all see the same
 * load, whose slow and fast spells outlast a run; each phase starts with
 * a warm-up of every contender
 * (not recorded), the loaded one after the hogs are running. The target
 * compares Shepherd's ratio to raw under load with its ratio on the quiet
 * machine, both from the same run.
 */
import * as Effect from "effect/Effect"
import * as NodeChildProcess from "node:child_process"
import * as os from "node:os"
import { inFreshProcess } from "../child/protocol.ts"
import { fmt, log, median, type Row, type ScenarioOutput, since, type Target } from "../harness.ts"
import { type Ctx, scopedPool, usePool, withPool } from "../pools.ts"
import { cmdline, type Identity, identify, isAlive, readStat, waitFor } from "../procs.ts"
import { contention } from "../runner.ts"
import { handoffPool, rawHandoff, shepherdHandoff } from "./slotHandoff.ts"
import { rawRunner, shepherdRunner, spawnPoolConfig } from "./spawnThroughput.ts"

const hogScript = "while :; do :; done"
/** How much worse Shepherd's ratio to raw may get under load. */
const tolerance = 1.5

/** Starts one busy loop per core and waits until each has exec'd; their identities. */
const startHogs = (count: number): Effect.Effect<Array<Identity>> =>
  Effect.promise(async () => {
    const hogs: Array<Identity> = []
    for (let i = 0; i < count; i++) {
      // inherits the environment, so it carries the run's marker; a process group of its own
      const child = NodeChildProcess.spawn("sh", ["-c", hogScript], { stdio: "ignore", detached: true })
      child.on("error", () => {
        // reported below: it never shows up in /proc
      })
      const id = child.pid === undefined ? undefined : identify(child.pid)
      if (id !== undefined) hogs.push(id)
    }
    const ready = await waitFor(
      () => hogs.length === count && hogs.every((h) => isAlive(h) && cmdline(h.pid).includes(hogScript)),
      10_000,
      5
    )
    if (!ready) {
      stopNow(hogs)
      throw new Error(`the CPU hog did not start: ${hogs.length} of ${count} busy loops`)
    }
    return hogs
  })

const stopNow = (hogs: ReadonlyArray<Identity>): void => {
  for (const h of hogs) {
    if (!isAlive(h)) continue
    try {
      process.kill(h.pid, "SIGKILL")
    } catch {
      // gone
    }
  }
}

/** SIGKILLs the busy loops and waits until they have left /proc (reaped, not zombies). */
const stopHogs = (hogs: ReadonlyArray<Identity>): Effect.Effect<void> =>
  Effect.promise(async () => {
    stopNow(hogs)
    const inProc = (h: Identity) => readStat(h.pid)?.startTime === h.startTime
    const gone = await waitFor(() => !hogs.some(inProc), 10_000, 5)
    if (!gone) throw new Error(`the CPU hog did not leave /proc: ${hogs.filter(inProc).map((h) => h.pid).join(", ")}`)
  })

type Phase = "quiet" | "loaded"

interface PhaseSamples {
  readonly spawnRaw: Array<number>
  readonly spawnShepherd: Array<number>
  readonly spawnHelper: Array<number>
  readonly handoffRaw: Array<number>
  readonly handoffShepherd: Array<number>
  readonly handoffHelper: Array<number>
}

/** The order of run `r`: rotated, so that every contender sees the same load. */
const rotated = <A>(items: ReadonlyArray<A>, r: number): Array<A> => items.map((_, k) => items[(k + r) % items.length]!)

/** `measure` in a fresh Node process: interrupted, it stops its busy loops (the run's sweep ends what is left). */
export const run = (ctx: Ctx): Effect.Effect<ScenarioOutput> => inFreshProcess("underLoad", ctx)

/** The scenario itself, in the process that runs it. */
export const measure = (ctx: Ctx): Effect.Effect<ScenarioOutput> => {
  const count = ctx.quick ? 25 : 100
  const slice = ctx.quick ? 5 : 10
  const spawnRuns = ctx.quick ? 4 : 9
  const handoffRuns = ctx.quick ? 16 : 40
  const cores = Math.max(1, os.cpus().length)
  const marks: Array<number> = []
  const helperMarks: Array<number> = []
  return withPool(
    spawnPoolConfig(ctx),
    (spawnPool) =>
      usePool(
        handoffPool(ctx, marks, "load-handoff"),
        (slotPool) =>
          usePool(handoffPool(ctx, helperMarks, "load-handoff-fh", "helper"), (helperSlotPool) =>
            Effect.gen(function*() {
              const spawnShepherd = shepherdRunner(spawnPool)
              const spawnHelper = shepherdRunner(yield* scopedPool({ ...spawnPoolConfig(ctx), forkFrom: "helper" }))
              const handoffShepherd = shepherdHandoff(slotPool, marks)
              const handoffHelper = shepherdHandoff(helperSlotPool, helperMarks)

              const measurePhase = (phase: Phase) =>
                Effect.gen(function*() {
                  const s: PhaseSamples = {
                    spawnRaw: [],
                    spawnShepherd: [],
                    spawnHelper: [],
                    handoffRaw: [],
                    handoffShepherd: [],
                    handoffHelper: []
                  }
                  // warm-up (not recorded): JIT, the pools' first ticks, and the load settling in
                  yield* rawRunner(10, 1)
                  yield* spawnShepherd(10, 1)
                  yield* spawnHelper(10, 1)
                  yield* rawHandoff
                  yield* handoffShepherd
                  yield* handoffHelper
                  // One run: `count` spawns per contender, taken in slices of `slice` that alternate
                  // (the order rotating slice by slice), each contender's time summed over its slices.
                  // Under busy loops the machine switches between slow and fast spells lasting longer
                  // than a whole run of one contender (one run of 100 could be 3× faster than the
                  // next): alternating slices lets every contender see the same spells.
                  const contenders: ReadonlyArray<readonly [typeof rawRunner, Array<number>]> = [
                    [rawRunner, s.spawnRaw],
                    [spawnShepherd, s.spawnShepherd],
                    [spawnHelper, s.spawnHelper]
                  ]
                  const spawnRun = (r: number) =>
                    Effect.gen(function*() {
                      const spent = contenders.map(() => 0)
                      for (let k = 0; k < count / slice; k++) {
                        for (const j of rotated([0, 1, 2], r + k)) {
                          const start = performance.now()
                          yield* contenders[j]![0](slice, 1)
                          spent[j]! += since(start)
                        }
                      }
                      contenders.forEach(([, into], j) => into.push(count / (spent[j]! / 1000)))
                    })
                  for (let r = 0; r < spawnRuns; r++) yield* spawnRun(r)
                  const handoffs = [
                    Effect.map(rawHandoff, (ms) => void s.handoffRaw.push(ms)),
                    Effect.map(handoffShepherd, (ms) => void s.handoffShepherd.push(ms)),
                    Effect.map(handoffHelper, (ms) => void s.handoffHelper.push(ms))
                  ]
                  for (let r = 0; r < handoffRuns; r++) for (const e of rotated(handoffs, r)) yield* e
                  log(
                    `9 ${phase}: spawn→exit raw ${fmt(median(s.spawnRaw))}/s, Shepherd ${
                      fmt(median(s.spawnShepherd))
                    }/s, fork helper ${fmt(median(s.spawnHelper))}/s; hand-off raw ${
                      fmt(median(s.handoffRaw))
                    } ms, Shepherd ${fmt(median(s.handoffShepherd))} ms, fork helper ${fmt(median(s.handoffHelper))} ms`
                  )
                  return s
                })

              const quiet = yield* measurePhase("quiet")
              let loadedContention = Number.NaN
              const loaded = yield* Effect.acquireUseRelease(
                startHogs(cores),
                () =>
                  Effect.gen(function*() {
                    // the CPU this process gets with the hog running (≈ 1 when idle), recorded as evidence of the load
                    loadedContention = contention()
                    return yield* measurePhase("loaded")
                  }),
                stopHogs
              )

              const load = `${cores} busy loop(s)`
              const rows: Array<Row> = []
              const spawnScenario = "9. under load: spawn→exit /bin/true, sequential"
              const handoffScenario = "9. under load: slot hand-off"
              for (const [phase, s] of [["quiet", quiet], ["loaded", loaded]] as const) {
                const when = phase === "quiet" ? "quiet" : `loaded (${load})`
                rows.push(
                  {
                    scenario: spawnScenario,
                    group: `9-spawn-${phase}`,
                    variant: `raw child_process.spawn, ${when}`,
                    unit: "spawns/s",
                    better: "higher",
                    samples: s.spawnRaw,
                    baseline: true
                  },
                  {
                    scenario: spawnScenario,
                    group: `9-spawn-${phase}`,
                    variant: `Shepherd pool.spawn, ${when}`,
                    unit: "spawns/s",
                    better: "higher",
                    samples: s.spawnShepherd
                  },
                  {
                    scenario: spawnScenario,
                    group: `9-spawn-${phase}`,
                    variant: `Shepherd (fork helper, the default) pool.spawn, ${when}`,
                    unit: "spawns/s",
                    better: "higher",
                    samples: s.spawnHelper
                  }
                )
              }
              for (const [phase, s] of [["quiet", quiet], ["loaded", loaded]] as const) {
                const when = phase === "quiet" ? "quiet" : `loaded (${load})`
                rows.push(
                  {
                    scenario: handoffScenario,
                    group: `9-handoff-${phase}`,
                    variant: `raw FIFO queue, ${when}`,
                    unit: "ms",
                    better: "lower",
                    samples: s.handoffRaw,
                    baseline: true
                  },
                  {
                    scenario: handoffScenario,
                    group: `9-handoff-${phase}`,
                    variant: `Shepherd slots: 1, ${when}`,
                    unit: "ms",
                    better: "lower",
                    samples: s.handoffShepherd
                  },
                  {
                    scenario: handoffScenario,
                    group: `9-handoff-${phase}`,
                    variant: `Shepherd (fork helper, the default) slots: 1, ${when}`,
                    unit: "ms",
                    better: "lower",
                    samples: s.handoffHelper
                  }
                )
              }

              const ratio = (a: Array<number>, b: Array<number>) => median(a) / median(b)
              const targets: Array<Target> = [["", "spawnShepherd", "handoffShepherd"], [
                ", fork helper",
                "spawnHelper",
                "handoffHelper"
              ]].flatMap(([which, spawnKey, handoffKey]) => {
                const spawnQuiet = ratio(quiet[spawnKey as "spawnShepherd"], quiet.spawnRaw)
                const spawnLoaded = ratio(loaded[spawnKey as "spawnShepherd"], loaded.spawnRaw)
                const handoffQuiet = ratio(quiet[handoffKey as "handoffShepherd"], quiet.handoffRaw)
                const handoffLoaded = ratio(loaded[handoffKey as "handoffShepherd"], loaded.handoffRaw)
                return [
                  {
                    id: `9 (spawn→exit${which})`,
                    goal: `under load (${load}), Shepherd's throughput ratio to raw ≥ its quiet ratio ÷ ${tolerance}`,
                    measured: `${fmt(spawnQuiet)}× raw quiet, ${fmt(spawnLoaded)}× raw loaded (${
                      fmt(spawnLoaded / spawnQuiet)
                    } of quiet)`,
                    met: spawnLoaded >= spawnQuiet / tolerance
                  },
                  {
                    id: `9 (hand-off${which})`,
                    goal:
                      `under load (${load}), Shepherd's hand-off latency ratio to raw ≤ ${tolerance} × its quiet ratio`,
                    measured: `${fmt(handoffQuiet)}× raw quiet, ${fmt(handoffLoaded)}× raw loaded (${
                      fmt(handoffLoaded / handoffQuiet)
                    } × quiet)`,
                    met: handoffLoaded <= tolerance * handoffQuiet
                  }
                ]
              })
              return {
                rows,
                targets,
                notes: [
                  `9: the contenders of scenarios 1 (sequential, ${count} spawns per contender and run, in slices of ${slice} that alternate between the contenders, ${spawnRuns} runs per phase) and 4 (${handoffRuns} hand-offs per phase), ` +
                  `first on the quiet machine, then with \`sh -c '${hogScript}'\` × ${cores} (one per core, same priority, carrying the run marker; ` +
                  `CPU contention seen by the bench with them running: ${
                    fmt(loadedContention)
                  }, ≈ 1 when idle); raw, Shepherd and its fork-helper variant take turns (the order rotates per run), ` +
                  "a warm-up of each in each phase; the busy loops are SIGKILLed and gone from /proc before the scenario returns " +
                  "(they also raise the 1-minute load average printed at the end). It runs in a fresh Node process: its rows are not comparable with scenario 1's, measured in the bench process."
                ]
              }
            }))
      )
  )
}
