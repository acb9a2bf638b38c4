/**
 * Building the things under test: Shepherd pools (named `b-...`, temp ledger,
 * lifeline on) and Effect's own spawner, each scoped, and the checks that
 * nothing they started survives them.
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import { ProcessPool } from "@shepherd/core/ProcessPool"
import type { ShepherdConfig } from "@shepherd/core/ShepherdConfig"
import * as NodeShepherd from "@shepherd/node/NodeShepherd"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ChildProcess from "effect/process/ChildProcess"
import { ChildProcessSpawner } from "effect/process/ChildProcessSpawner"
import type * as Scope from "effect/Scope"
import * as path from "node:path"
import { shepherdCarriers } from "./procs.ts"
import { ownPoolIds } from "./sweep.ts"

/** What every scenario gets. */
export interface Ctx {
  readonly quick: boolean
  readonly runId: string
  /** A temporary directory for ledgers and registry files, removed at the end. */
  readonly tmpDir: string
}

let ledgerCount = 0

/** A pool configuration: name `b-<name>`, a fresh ledger file in the temp directory, lifeline on. */
export const poolConfig = (
  ctx: Ctx,
  name: string,
  extra: Omit<ShepherdConfig, "name" | "ledger"> = {}
): ShepherdConfig => ({
  lifeline: true,
  ...extra,
  name: `b-${name}`,
  ledger: path.join(ctx.tmpDir, `b-${name}-${++ledgerCount}.ledger`)
})

/** Fails loudly if anything carrying `prefix` is alive. */
export const assertNoShepherdSurvivors = (prefix: string): Effect.Effect<void> =>
  Effect.suspend(() => {
    const left = shepherdCarriers(prefix)
    return left.length === 0
      ? Effect.void
      : Effect.die(
        new Error(`survivors of ${prefix}: ${left.map((c) => `${c.pid} ${c.value} ${c.cmdline}`).join("; ")}`)
      )
  })

/**
 * Runs `body` with a pool built from `layer`, closes the pool, and checks
 * with `/proc` that nothing carrying the pool's prefix is left.
 */
export const usePool = <A, E, LE>(
  layer: Layer.Layer<ProcessPool, LE>,
  body: (pool: ProcessPool["Service"]) => Effect.Effect<A, E, ProcessPool | Scope.Scope>
): Effect.Effect<A, E> => {
  let prefix: string | undefined
  return Effect.gen(function*() {
    const pool = yield* ProcessPool
    // The leak sweep counts this pool's members and sentinel as this run's (see sweep.ts).
    ownPoolIds.add(pool.poolId)
    prefix = `${pool.poolId}:`
    return yield* body(pool)
  }).pipe(
    Effect.scoped,
    Effect.provide(Layer.orDie(layer), { local: true }),
    Effect.tap(() => prefix === undefined ? Effect.void : assertNoShepherdSurvivors(prefix))
  )
}

/** `usePool` with `NodeShepherd.layer(config)`. */
export const withPool = <A, E>(
  config: ShepherdConfig,
  body: (pool: ProcessPool["Service"]) => Effect.Effect<A, E, ProcessPool | Scope.Scope>
): Effect.Effect<A, E> => usePool(NodeShepherd.layer(config), body)

/** Runs `body` with Effect's own Node spawner (`NodeServices.layer`, default spawner options). */
export const withEffectSpawner = <A, E>(
  body: (spawner: ChildProcessSpawner["Service"]) => Effect.Effect<A, E, Scope.Scope>
): Effect.Effect<A, E> =>
  Effect.gen(function*() {
    const spawner = yield* ChildProcessSpawner
    return yield* body(spawner)
  }).pipe(Effect.scoped, Effect.provide(NodeServices.layer, { local: true }))

/** No stdio: the same for every contender, so that only process handling is compared. */
export const quiet = { stdin: "ignore", stdout: "ignore", stderr: "ignore" } as const

export const sh = (script: string): ChildProcess.StandardCommand => ChildProcess.make("sh", ["-c", script], quiet)

/** Trees used across scenarios. */
export const trees = {
  /** 3 processes, all die on SIGTERM. */
  cooperative: "sleep 1000 & sleep 1000 & wait",
  /** 1 process that ignores SIGTERM (an ignored disposition survives exec). */
  ignoresTermSingle: "trap '' TERM; exec sleep 1000",
  /** 2 processes that ignore SIGTERM (the shape of test/scale.test.ts). */
  ignoresTermPair: "trap '' TERM; sleep 1000 & wait"
} as const
