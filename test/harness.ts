/**
 * Effect-side helpers for the real-process suite: build a pool, remember its
 * `SHEPHERD_ID` prefix for cleanup, wait for process trees to appear, and
 * assert that nothing carrying the prefix is left.
 */
import { assert } from "@effect/vitest"
import * as fs from "node:fs"
import * as path from "node:path"
import { type PoolStats, ProcessPool } from "@shepherd/core/ProcessPool"
import type { ShepherdConfig } from "@shepherd/core/ShepherdConfig"
import * as NodeShepherd from "@shepherd/node/NodeShepherd"
import { Effect, type Layer, References, type Scope } from "effect"
import { ChildProcess } from "effect/process"
import { killSurvivors, type ProcInfo, processes, survivors } from "./support.ts"

/** Prefixes of every pool a test built; `cleanupPools` kills whatever still carries one. */
const tracked = new Set<string>()

/** Remembers `prefix` for `cleanupPools`, and for the run's final check in globalSetup.ts. */
export const track = (prefix: string): void => {
  tracked.add(prefix)
  const runDir = process.env.SHEPHERD_TEST_RUN_DIR
  if (runDir === undefined) return
  try {
    fs.appendFileSync(path.join(runDir, "prefixes"), `${prefix}\n`)
  } catch {
    // the run directory is gone (run outside the suite's globalSetup)
  }
}

/** For `afterEach`: SIGKILL every survivor of every pool built since the last call. */
export const cleanupPools = (): void => {
  for (const prefix of tracked) killSurvivors(prefix)
  tracked.clear()
}

/** `sh -c script` as an Effect command. */
export const sh = (script: string, options?: ChildProcess.CommandOptions): ChildProcess.StandardCommand =>
  options === undefined ? ChildProcess.make("sh", ["-c", script]) : ChildProcess.make("sh", ["-c", script], options)

/** A short, readable line per process (for assertion messages). */
export const show = (p: ProcInfo): string => `pid ${p.pid} pgid ${p.pgid} ppid ${p.ppid} ${p.shepherdId}: ${p.cmdline}`

/** Live processes carrying exactly `shepherdId`. */
export const membersOf = (shepherdId: string): Array<ProcInfo> =>
  processes().filter((p) => p.shepherdId === shepherdId && p.state !== "Z" && p.state !== "X")

/** Asserts that no live process carries `prefix` (a pool prefix `<poolId>:` or one `SHEPHERD_ID`). */
export const assertNoSurvivors = (prefix: string): void => {
  const left = survivors(prefix)
  assert.deepStrictEqual(left.map(show), [], `survivors of ${prefix}`)
}

/**
 * How long the polling helpers wait before they fail with what they waited for. Only a guard against
 * a hang, never a figure a test proves: a loaded machine may take seconds to start a process.
 */
export const hangGuardMs = 60_000

/** Polls (every 10 ms, real time) until `predicate` holds; fails the test after `ms` (a hang guard). */
export const eventually = (what: string, predicate: () => boolean, ms = hangGuardMs): Effect.Effect<void> =>
  Effect.gen(function*() {
    const deadline = Date.now() + ms
    while (!predicate()) {
      if (Date.now() > deadline) return yield* Effect.die(new Error(`timed out after ${ms} ms waiting for ${what}`))
      yield* Effect.sleep(10)
    }
  })

/** Polls the pool's stats (every 2 ms) until `predicate` holds; fails the test after `ms` (a hang guard). */
export const awaitStats = (
  pool: ProcessPool["Service"],
  what: string,
  predicate: (stats: PoolStats) => boolean,
  ms = hangGuardMs
): Effect.Effect<PoolStats> =>
  Effect.gen(function*() {
    const deadline = Date.now() + ms
    while (true) {
      const stats = yield* pool.stats
      if (predicate(stats)) return stats
      if (Date.now() > deadline) {
        return yield* Effect.die(new Error(`timed out after ${ms} ms waiting for ${what}: ${JSON.stringify(stats)}`))
      }
      yield* Effect.sleep(2)
    }
  })

/** Waits until at least `n` live processes carry `shepherdId` (the tree has finished forking). */
export const awaitMembers = (shepherdId: string, n: number, ms = hangGuardMs): Effect.Effect<Array<ProcInfo>> =>
  Effect.andThen(
    eventually(`${n} members of ${shepherdId}`, () => membersOf(shepherdId).length >= n, ms),
    Effect.sync(() => membersOf(shepherdId))
  )

/**
 * Builds `layer`, runs `body` with the pool in a scope, closes the pool, and
 * asserts that no process carrying the pool's prefix survived. Survivors are
 * SIGKILLed afterwards whatever happened.
 */
export const usePool = <ROut, LE, A, E>(
  layer: Layer.Layer<ROut | ProcessPool, LE>,
  body: (pool: ProcessPool["Service"], prefix: string) => Effect.Effect<A, E, NoInfer<ROut> | ProcessPool | Scope.Scope>
): Effect.Effect<A, E | LE> => {
  let prefix: string | undefined
  const program: Effect.Effect<A, E, ROut | ProcessPool | Scope.Scope> = Effect.gen(function*() {
    const pool = yield* ProcessPool
    prefix = `${pool.poolId}:`
    track(prefix)
    return yield* body(pool, prefix)
  })
  return program.pipe(
    Effect.scoped,
    Effect.provide(layer, { local: true }),
    // Forced teardowns log at Info; keep the test output to warnings (Escaped, ...).
    Effect.provideService(References.MinimumLogLevel, "Warn"),
    // The pool's layer is closed here: every tree it started must be gone.
    Effect.tap(() => Effect.sync(() => assertNoSurvivors(prefix!))),
    Effect.ensuring(Effect.sync(() => {
      if (prefix !== undefined) killSurvivors(prefix)
    }))
  )
}

/** The errors `NodeShepherd.layer` can fail with. */
export type LayerError = Layer.Error<ReturnType<typeof NodeShepherd.layer>>

/** `usePool` with `NodeShepherd.layer(config)`. */
export const withPool = <A, E>(
  config: ShepherdConfig,
  body: (pool: ProcessPool["Service"], prefix: string) => Effect.Effect<A, E, ProcessPool | Scope.Scope>
): Effect.Effect<A, E | LayerError> => usePool(NodeShepherd.layer(config), body)
