/**
 * Building the things under test: Shepherd pools (named `b-...`, temp ledger,
 * lifeline on) and Effect's own spawner, each scoped, and the checks that
 * nothing they started survives them.
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import { ProcessPool } from "@shepherd/core/ProcessPool"
import type { ShepherdConfig } from "@shepherd/core/ShepherdConfig"
import * as NodeContainment from "@shepherd/node/NodeContainment"
import * as NodeShepherd from "@shepherd/node/NodeShepherd"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ChildProcess from "effect/process/ChildProcess"
import { ChildProcessSpawner } from "effect/process/ChildProcessSpawner"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
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

/**
 * A pool configuration: name `b-<name>`, a fresh ledger file in the temp directory, lifeline on,
 * process-group containment and forks from the host unless `extra` says otherwise (the rows and
 * targets measured before cgroup containment and the fork helper existed stay comparable; the cgroup
 * rows and the fork helper's, the default's, ask for theirs).
 */
export const poolConfig = (
  ctx: Ctx,
  name: string,
  extra: Omit<ShepherdConfig, "name" | "ledger"> = {}
): ShepherdConfig => ({
  lifeline: true,
  containment: "process-group",
  forkFrom: "host",
  ...extra,
  name: `b-${name}`,
  ledger: path.join(ctx.tmpDir, `b-${name}-${++ledgerCount}.ledger`)
})

/** Why cgroup containment cannot be measured here (`undefined`: it can). */
export const cgroupUnavailable = (): Effect.Effect<string | undefined> =>
  Effect.map(
    NodeContainment.inspect({ containment: "cgroup" }),
    (x) => x.kind === "cgroup" ? undefined : x.reason
  )

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

/**
 * A pool built in the current scope (for a scenario that measures a second pool beside its main
 * one): counted as this run's, and checked with `/proc` when the scope closes.
 */
export const scopedPool = (config: ShepherdConfig): Effect.Effect<ProcessPool["Service"], never, Scope.Scope> =>
  Effect.gen(function*() {
    // The pool lives in a scope of its own, closed before the check.
    const own = yield* Scope.make()
    const context = yield* Layer.buildWithScope(Layer.orDie(NodeShepherd.layer(config)), own)
    const pool = Context.get(context, ProcessPool)
    ownPoolIds.add(pool.poolId)
    yield* Effect.addFinalizer(() =>
      Effect.andThen(Scope.close(own, Exit.void), assertNoShepherdSurvivors(`${pool.poolId}:`))
    )
    return pool
  })

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
