/**
 * Everything a Node program needs: the `/proc` process table, the Node
 * launcher and the `ProcessPool`, composed as one layer; and `runMain`, which
 * tears every pool down on SIGINT/SIGTERM/SIGHUP and never hangs on a second
 * signal.
 *
 * @since 0.1.0
 */
import { ProcessPool } from "@shepherd/core/ProcessPool"
import type { LedgerError, LedgerLocked } from "@shepherd/core/Ledger"
import * as ShepherdConfig from "@shepherd/core/ShepherdConfig"
import type { ContainmentUnavailable, InvalidConfig } from "@shepherd/core/ShepherdError"
import type { ProcessLauncher } from "@shepherd/core/ProcessLauncher"
import type { ProcessTable } from "@shepherd/core/ProcessTable"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import type * as ChildProcessSpawner from "effect/process/ChildProcessSpawner"
import * as Runtime from "effect/Runtime"
import * as NodeContainment from "./NodeContainment.ts"
import * as NodeLedger from "./NodeLedger.ts"
import * as NodeLifeline from "./NodeLifeline.ts"
import * as NodeHelperLauncher from "./NodeHelperLauncher.ts"
import * as NodeProcessLauncher from "./NodeProcessLauncher.ts"
import * as NodeProcessTable from "./NodeProcessTable.ts"

/**
 * The Node implementations of Shepherd's ports.
 *
 * @since 0.1.0
 * @category layers
 */
export const platform: Layer.Layer<ProcessTable | ProcessLauncher> = Layer.mergeAll(
  NodeProcessTable.layer,
  NodeProcessLauncher.layer
)

// Pools of this host, so that a signal can shut every pool down (and a second one hurry it) at once.
// Each is kept with the context it was built in, so the shutdown's logs and spans reach the
// program's own logger and tracer.
const livePools = new Map<ProcessPool["Service"], Context.Context<never>>()

const register = Layer.effectDiscard(
  Effect.gen(function*() {
    const pool = yield* ProcessPool
    livePools.set(pool, yield* Effect.context<never>())
    // This finalizer runs before the pool's own: shut the pool down here (it is idempotent), so a
    // second signal during that teardown still finds the pool to hurry.
    yield* Effect.addFinalizer(() => pool.shutdown.pipe(Effect.ensuring(Effect.sync(() => livePools.delete(pool)))))
  })
)

/**
 * The pool and everything it needs on Node, for a validated configuration:
 * the `/proc` table, the launcher, the containment (cgroup v2 where usable,
 * see `NodeContainment`), the file ledger (unless `ledger: false`) and the
 * lifeline sentinel (unless `lifeline: false`). Fails with
 * `ContainmentUnavailable` when `containment: "cgroup"` cannot be had, and
 * with `InvalidConfig` for a bad `SHEPHERD_CONTAINMENT`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerResolved = (
  config: ShepherdConfig.Resolved
): Layer.Layer<ProcessPool, LedgerError | LedgerLocked | ContainmentUnavailable | InvalidConfig> => {
  const ledger = config.ledger === false
    ? Layer.empty
    : NodeLedger.layer({ path: config.ledger ?? NodeLedger.defaultPath(config.name) })
  const lifeline = config.lifeline ? NodeLifeline.layer : Layer.empty
  // The containment decorates the launcher: one per pool layer (cgroups where usable). The fork
  // helper needs /proc for its leaders' identities: elsewhere the host forks.
  const launcher = Layer.unwrap(Effect.map(
    ShepherdConfig.forkFrom(config, process.env.SHEPHERD_FORK_FROM),
    (from) => from === "helper" && process.platform === "linux" ? NodeHelperLauncher.layer : NodeProcessLauncher.layer
  ))
  const contained = NodeContainment.layer(config).pipe(Layer.provide(launcher))
  return Layer.provideMerge(register, ProcessPool.layerResolved(config)).pipe(
    Layer.provide(Layer.mergeAll(NodeProcessTable.layer, contained, ledger, lifeline))
  )
}

/**
 * A `ProcessPool` on Node. Fails with `InvalidConfig` naming the field,
 * with `LedgerLocked`/`LedgerError` when the ledger cannot be owned, or with
 * `ContainmentUnavailable` when `containment: "cgroup"` cannot be had.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  config: ShepherdConfig.ShepherdConfig = {}
): Layer.Layer<ProcessPool, InvalidConfig | LedgerError | LedgerLocked | ContainmentUnavailable> =>
  Layer.unwrap(Effect.map(ShepherdConfig.resolve(config), layerResolved))

/**
 * Like `layer`, reading `SHEPHERD_*` environment variables over `config`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: ShepherdConfig.ShepherdConfig = {}
): Layer.Layer<ProcessPool, InvalidConfig | LedgerError | LedgerLocked | ContainmentUnavailable> =>
  Layer.unwrap(Effect.map(ShepherdConfig.fromEnv(config), layerResolved))

/**
 * A supervised `ChildProcessSpawner` (plus the pool behind it): code written
 * against Effect's `ChildProcess` becomes supervised by providing this layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const spawner = (
  config: ShepherdConfig.ShepherdConfig = {}
): Layer.Layer<
  ChildProcessSpawner.ChildProcessSpawner | ProcessPool,
  InvalidConfig | LedgerError | LedgerLocked | ContainmentUnavailable
> => Layer.provideMerge(ProcessPool.spawner, layer(config))

const signalCodes: Record<string, number> = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 }

/**
 * Runs a program as a host: the first SIGINT/SIGTERM/SIGHUP shuts every pool
 * down at once (all their processes get their signal together, whatever scope
 * holds them; spawns fail with `PoolClosed` from then on) and interrupts the
 * program; a second signal ends every grace period at once (SIGKILL now); a
 * third exits immediately.
 *
 * Exit codes: 0 on success, 1 on failure, 128 + signal number when a signal
 * ended the program (130 SIGINT, 143 SIGTERM, 129 SIGHUP).
 *
 * @since 0.1.0
 * @category running
 */
export const runMain = <A, E>(effect: Effect.Effect<A, E>): void =>
  Runtime.makeRunMain(({ fiber }) => {
    let received: string | undefined
    let count = 0
    const onSignal = (signal: NodeJS.Signals) => {
      count++
      received ??= signal
      if (count === 1) {
        // Every pool starts its shutdown now, beside the program's interruption: each child gets its
        // signal at once, instead of when the scope holding its session comes to close.
        for (const [pool, context] of livePools) Effect.runForkWith(context)(pool.shutdown)
        fiber.interruptUnsafe(fiber.id)
      } else if (count === 2) {
        for (const [pool, context] of livePools) Effect.runForkWith(context)(pool.hurry)
      } else {
        process.exit(signalCodes[received] ?? 1)
      }
    }
    const signals: ReadonlyArray<NodeJS.Signals> = ["SIGINT", "SIGTERM", "SIGHUP"]
    for (const s of signals) process.on(s, onSignal)
    fiber.addObserver((exit) => {
      for (const s of signals) process.off(s, onSignal)
      const code = received !== undefined
        ? signalCodes[received] ?? 1
        : Exit.isSuccess(exit)
        ? 0
        : 1
      if (received !== undefined || code !== 0) process.exit(code)
    })
  })(effect)
