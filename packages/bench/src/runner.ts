/**
 * Running one scenario under a time limit, and the load measurement that
 * scales the limits.
 *
 * On a loaded machine every figure (and every scenario's run time) stretches:
 * before each scenario the runner measures how much CPU this process actually
 * gets (a short busy loop: wall time ÷ CPU time) and the 1-minute load average
 * per core, and multiplies the scenario's limit by the larger of the two. Past
 * `maxLoadFactor` the run stops: "machine too loaded to measure", exit code 3.
 *
 * Whether the scenario ends, fails, hits its limit or the run is interrupted
 * by a signal, the same sweep runs after it (sweep.ts): a scenario stopped
 * early leaves nothing of this run alive.
 */
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as os from "node:os"
import { log } from "./harness.ts"
import { type Ownership, sweep, type SweepResult } from "./sweep.ts"

/** Wall time ÷ CPU time of a short busy loop (median of three): ≈ 1 on an idle machine, ≈ (load + 1) ÷ cores when busy. */
export const contention = (sliceMs = 40): number => {
  const ratios: Array<number> = []
  for (let i = 0; i < 3; i++) {
    const cpu0 = process.cpuUsage()
    const t0 = performance.now()
    let x = 0
    while (performance.now() - t0 < sliceMs) x += Math.sqrt(x + 1)
    const wallMs = performance.now() - t0
    const cpu = process.cpuUsage(cpu0)
    const cpuMs = (cpu.user + cpu.system) / 1000
    ratios.push(x < 0 ? 0 : wallMs / Math.max(cpuMs, 1))
  }
  return ratios.sort((a, b) => a - b)[1]!
}

export interface Load {
  /** 1-minute load average ÷ cores. */
  readonly perCore: number
  /** `contention()`. */
  readonly contention: number
  /** max(1, perCore, contention): what the time limits are multiplied by. */
  readonly factor: number
}

/**
 * The load now. `outsideLoad1` replaces the 1-minute load average when given
 * (between scenarios the average still holds this run's own previous work,
 * so main passes the one it read before starting).
 */
export const measureLoad = (outsideLoad1?: number): Load => {
  const cores = Math.max(1, os.cpus().length)
  const perCore = (outsideLoad1 ?? os.loadavg()[0]!) / cores
  const c = contention()
  return { perCore, contention: c, factor: Math.max(1, perCore, c) }
}

export interface Limited<A> {
  /** The scenario's exit, or undefined when it was stopped at its limit. */
  readonly exit: Exit.Exit<A> | undefined
  readonly sweep: SweepResult
}

/**
 * Runs `body` for at most `limitMs`; past it, interrupts it (waiting at most
 * `interruptMs` for its finalizers), and in every case sweeps this run's
 * processes afterwards. When the run itself is interrupted (a signal), the
 * scenario is interrupted too (waiting at most `signalMs`) and swept at once.
 */
export const runWithLimit = <A>(
  body: Effect.Effect<A>,
  limitMs: number,
  own: Ownership,
  where: string,
  interruptMs = 10_000,
  signalMs = 2_000
): Effect.Effect<Limited<A>> =>
  Effect.gen(function*() {
    const fiber = yield* Effect.forkDetach(body)
    // The interruption runs the scenario's finalizers (pools close, scopes kill their children); a
    // finalizer stuck on a loaded machine must not hold the run: the sweep after it kills what is left.
    const stop = (ms: number) =>
      Effect.gen(function*() {
        yield* Effect.forkDetach(Fiber.interrupt(fiber))
        yield* Fiber.await(fiber).pipe(Effect.timeoutOrElse({ duration: ms, orElse: () => Effect.succeed(undefined) }))
      })
    const exit = yield* Fiber.await(fiber).pipe(
      Effect.timeoutOrElse({ duration: limitMs, orElse: () => Effect.succeed(undefined) }),
      // The run itself is interrupted (SIGTERM, SIGINT: runMain interrupts the main fiber): the scenario
      // runs detached, so stop it too, briefly, and kill what it left before the run's own finalizers.
      Effect.onInterrupt(() =>
        Effect.andThen(
          stop(signalMs),
          Effect.promise(async () => {
            const swept = await sweep(own, `${where} (interrupted)`, 0)
            log(`interrupted: killed ${swept.killed.length} process(es) of this run ${where}`)
          })
        )
      )
    )
    if (exit === undefined) yield* stop(interruptMs)
    const swept = yield* Effect.promise(() => sweep(own, where))
    return { exit, sweep: swept }
  })
