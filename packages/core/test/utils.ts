/**
 * Helpers shared by the core tests: a pool over `TestOs`, and ways to drive
 * the `TestClock` while something waits on it.
 */
import { Effect, Exit, Fiber, Layer } from "effect"
import type { Scope } from "effect"
import { ChildProcess } from "effect/process"
import { TestClock } from "effect/testing"
import { ProcessPool } from "../src/ProcessPool.ts"
import type * as ShepherdConfig from "../src/ShepherdConfig.ts"
import type { InvalidConfig } from "../src/ShepherdError.ts"
import { TestOs } from "../src/testing.ts"

export const cmd = (name: string, ...args: Array<string>) => ChildProcess.make(name, args)

export const poolLayer = (os: TestOs.TestOs, config: ShepherdConfig.ShepherdConfig = {}) =>
  ProcessPool.layer(config).pipe(Layer.provide(os.layer))

/** Yields until `predicate` holds (other fibers run in between); fails the test after 1000 turns. */
export const waitUntil = (predicate: () => boolean, what = "condition") =>
  Effect.gen(function*() {
    for (let i = 0; i < 1000; i++) {
      if (predicate()) return
      yield* Effect.yieldNow
    }
    return yield* Effect.die(new Error(`waitUntil: ${what} never held`))
  })

/** Runs `effect` in a fiber and advances the TestClock by `ms` (default: one minute); returns its exit. */
export const settle = <A, E>(effect: Effect.Effect<A, E>, ms = 60_000) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.forkChild(effect)
    yield* TestClock.adjust(ms)
    const exit = fiber.pollUnsafe()
    if (exit === undefined) {
      yield* Fiber.interrupt(fiber)
      return yield* Effect.die(new Error(`settle: still running after ${ms} ms of TestClock time`))
    }
    return exit
  })

/** Like `settle`, but returns the success value (and fails the test otherwise). */
export const settleValue = <A, E>(effect: Effect.Effect<A, E>, ms?: number) =>
  Effect.flatMap(
    settle(effect, ms),
    (exit) => Exit.isSuccess(exit) ? Effect.succeed(exit.value) : Effect.die(exit.cause)
  )

/** A fiber's exit if it has completed, after letting every ready fiber run. */
export const poll = <A, E>(fiber: Fiber.Fiber<A, E>) =>
  Effect.andThen(TestClock.adjust(0), Effect.sync(() => fiber.pollUnsafe()))

/**
 * Runs `body` with a pool over `os`, then shuts the pool down while advancing
 * the TestClock, so no finalizer is left to sleep after the test body.
 */
export const withPool = <A, E>(
  os: TestOs.TestOs,
  config: ShepherdConfig.ShepherdConfig,
  body: (pool: ProcessPool["Service"]) => Effect.Effect<A, E, Scope.Scope>
): Effect.Effect<A, E | InvalidConfig, Scope.Scope> =>
  Effect.gen(function*() {
    const pool = yield* ProcessPool
    // On failure too: otherwise the layer's finalizer would wait on a TestClock nobody advances.
    const result = yield* body(pool).pipe(
      Effect.onExit((exit) => Exit.isFailure(exit) ? Effect.ignore(settle(pool.shutdown, 3_600_000)) : Effect.void)
    )
    yield* settleValue(pool.shutdown)
    return result
  }).pipe(Effect.provide(poolLayer(os, config)))

/** The typed error of a failed exit (throws otherwise). */
export const errorOf = <A, E>(exit: Exit.Exit<A, E> | undefined): E => {
  if (exit === undefined) throw new Error("expected a completed fiber, it is still running")
  if (Exit.isSuccess(exit)) throw new Error(`expected a failure, got success: ${String(exit.value)}`)
  const error = Exit.findErrorOption(exit)
  if (error._tag === "None") throw new Error(`expected a typed failure, got ${String(exit.cause)}`)
  return error.value
}

/** The value of a successful exit (throws otherwise). */
export const valueOf = <A, E>(exit: Exit.Exit<A, E> | undefined): A => {
  if (exit === undefined) throw new Error("expected a completed fiber, it is still running")
  if (Exit.isFailure(exit)) throw new Error(`expected a success, got ${String(exit.cause)}`)
  return exit.value
}
