/**
 * The `ProcessPool` service: spawn processes as scoped resources, group them
 * into sessions, bound how many run at once, and tear whole trees down with a
 * timed graceful-to-forced kill.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import type * as ChildProcess from "effect/process/ChildProcess"
import * as ChildProcessSpawner from "effect/process/ChildProcessSpawner"
import * as Schema from "effect/Schema"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Containment from "./Containment.ts"
import type * as Doctor from "./Doctor.ts"
import * as DoctorReport from "./internal/doctorReport.ts"
import * as Handle from "./internal/handle.ts"
import * as Journal from "./internal/journal.ts"
import * as Sessions from "./internal/sessions.ts"
import * as Slots from "./internal/slots.ts"
import * as Spawn from "./internal/spawn.ts"
import * as Tree from "./internal/tree.ts"
import type * as KillPolicy from "./KillPolicy.ts"
import { Ledger } from "./Ledger.ts"
import { Lifeline } from "./Lifeline.ts"
import type * as Lifeline_ from "./Lifeline.ts"
import type { ManagedProcess } from "./ManagedProcess.ts"
import * as Metrics from "./Metrics.ts"
import { ProcessLauncher } from "./ProcessLauncher.ts"
import { ProcessTable } from "./ProcessTable.ts"
import * as Reaper from "./Reaper.ts"
import * as ShepherdConfig from "./ShepherdConfig.ts"
import type * as ShepherdError from "./ShepherdError.ts"
import type { InvalidConfig, LimitUnavailable, PoolClosed } from "./ShepherdError.ts"
import * as Teardown from "./Teardown.ts"

/**
 * Options of one spawn.
 *
 * @since 0.1.0
 * @category models
 */
export interface SpawnOptions {
  /** The session to spawn into (created if needed). Default: the current session, else `"default"`. */
  readonly session?: string | undefined
  /** Overrides of the pool's KillPolicy for this process. */
  readonly kill?: KillPolicy.KillPolicyInput | undefined
  /**
   * Resource limits of this tree's cgroup (`memory.max`, `pids.max`, `cpu.max`,
   * `cpu.weight`). Fails with `LimitUnavailable`, naming the controller, where
   * they cannot be applied.
   */
  readonly limits?: Containment.Limits | undefined
}

/**
 * Options of a session opened with `session`.
 *
 * @since 0.2.0
 * @category models
 */
export interface SessionOptions {
  /**
   * Resource limits of the whole session (its cgroup, which holds its trees'
   * leaves). Fails with `LimitUnavailable`, naming the controller, where they
   * cannot be applied.
   */
  readonly limits?: Containment.Limits | undefined
}

/**
 * A session: a group of processes that end together.
 *
 * @since 0.1.0
 * @category models
 */
export interface Session {
  readonly id: string
  /** Spawns into this session; the process is also bound to the caller's Scope. */
  readonly spawn: (
    command: ChildProcess.Command,
    options?: Omit<SpawnOptions, "session">
  ) => Effect.Effect<ManagedProcess, SpawnFailure, Scope.Scope>
  /** The session's live processes. */
  readonly processes: Effect.Effect<ReadonlyArray<ManagedProcess>>
  /** Closes the session (idempotent): every tree is torn down concurrently. */
  readonly close: Effect.Effect<ReadonlyArray<Teardown.Teardown>>
}

/**
 * A snapshot of the pool's slot accounting.
 *
 * @since 0.1.0
 * @category models
 */
export interface PoolStats {
  readonly poolId: string
  readonly slots: number
  readonly hardCap: number
  /** Slots held by running (or terminating) processes. */
  readonly inUse: number
  /** Requests waiting for a slot. */
  readonly waiting: number
  readonly sessions: ReadonlyArray<string>
  readonly closing: boolean
}

/**
 * Any error `spawn` can fail with.
 *
 * @since 0.1.0
 * @category errors
 */
export type SpawnFailure = ShepherdError.SpawnFailure

/**
 * The session that `spawn` uses when no `session` option is given; set by
 * `withSession`.
 *
 * @since 0.1.0
 * @category references
 */
export const CurrentSession = Sessions.CurrentSession

/**
 * @since 0.1.0
 * @category services
 */
export class ProcessPool extends Context.Service<ProcessPool, {
  /** Unique per pool instance; the prefix of every `SHEPHERD_ID` (`<poolId>:<n>`). */
  readonly poolId: string
  readonly config: ShepherdConfig.Resolved
  /**
   * Spawns `command` (built with Effect's `ChildProcess.make`) as a supervised
   * tree bound to the current Scope and to its session.
   */
  readonly spawn: (
    command: ChildProcess.Command,
    options?: SpawnOptions
  ) => Effect.Effect<ManagedProcess, SpawnFailure, Scope.Scope>
  /**
   * Opens (or joins) a session; it is closed when the current Scope closes.
   * With `limits`, fails with `LimitUnavailable` where they cannot be applied.
   */
  readonly session: (
    id: string,
    options?: SessionOptions
  ) => Effect.Effect<Session, PoolClosed | LimitUnavailable, Scope.Scope>
  /** Runs `effect` in session `id` (its spawns default to it) and closes the session afterwards. */
  readonly withSession: <A, E, R>(
    id: string,
    effect: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | PoolClosed, Exclude<R, Scope.Scope>>
  /** Closes a session from outside (idempotent; an unknown id is a no-op returning `[]`). */
  readonly closeSession: (id: string) => Effect.Effect<ReadonlyArray<Teardown.Teardown>>
  /** Live processes, all sessions. */
  readonly processes: Effect.Effect<ReadonlyArray<ManagedProcess>>
  readonly stats: Effect.Effect<PoolStats>
  /** Ends every grace period now: running and future teardowns SIGKILL at once (a host's second signal). */
  readonly hurry: Effect.Effect<void>
  /** Closes the pool: refuses new spawns and closes every session concurrently. */
  readonly shutdown: Effect.Effect<ReadonlyArray<Teardown.Teardown>>
  /** What the pool did at start with an earlier host's ledger entries (absent without a ledger). */
  readonly recovery: Reaper.RecoveryReport | undefined
  /** Runs one reaper tick now (it waits for a running tick: ticks never overlap). */
  readonly reapNow: Effect.Effect<Reaper.TickReport>
  /** The last reaper tick, if one ran. */
  readonly lastTick: Effect.Effect<Option.Option<Reaper.TickReport>>
  /** The lifeline's status (absent without a lifeline). */
  readonly lifeline: Effect.Effect<Option.Option<Lifeline_.Status>>
  /** Which containment is in force (cgroup v2 or process group + cookie) and why. */
  readonly containment: Containment.Status
  /** The doctor report: pool, sessions and their trees, ledger, reaper, lifeline, and the pool/ledger/OS comparison. */
  readonly doctor: Effect.Effect<Doctor.DoctorReport>
}>()("@shepherd/core/ProcessPool") {
  /**
   * The pool, given a process table and a launcher (see `NodeShepherd.layer`
   * for the Node composition). A `Ledger`, a `Lifeline` and a `Containment`,
   * when provided, are used too. Fails with `InvalidConfig` naming the field.
   *
   * @since 0.1.0
   * @category layers
   */
  static readonly layer = (
    config: ShepherdConfig.ShepherdConfig = {}
  ): Layer.Layer<ProcessPool, InvalidConfig, ProcessTable | ProcessLauncher> =>
    Layer.effect(ProcessPool, Effect.flatMap(ShepherdConfig.resolve(config), make))

  /**
   * The pool for an already validated configuration.
   *
   * @since 0.1.0
   * @category layers
   */
  static readonly layerResolved = (
    config: ShepherdConfig.Resolved
  ): Layer.Layer<ProcessPool, never, ProcessTable | ProcessLauncher> => Layer.effect(ProcessPool, make(config))

  /**
   * Like `layer`, reading `SHEPHERD_*` environment variables over `config`.
   *
   * @since 0.1.0
   * @category layers
   */
  static readonly layerConfig = (
    config: ShepherdConfig.ShepherdConfig = {}
  ): Layer.Layer<ProcessPool, InvalidConfig, ProcessTable | ProcessLauncher> =>
    Layer.effect(ProcessPool, Effect.flatMap(ShepherdConfig.fromEnv(config), make))

  /**
   * Shepherd as an Effect `ChildProcessSpawner`: existing code that runs
   * `yield* ChildProcess.make(...)` becomes supervised by providing this layer.
   * Each process is spawned into the current session (see `withSession`).
   *
   * @since 0.1.0
   * @category layers
   */
  static readonly spawner: Layer.Layer<ChildProcessSpawner.ChildProcessSpawner, never, ProcessPool> = Layer.effect(
    ChildProcessSpawner.ChildProcessSpawner,
    Effect.map(
      ProcessPool,
      (pool: ProcessPool["Service"]) =>
        ChildProcessSpawner.make((command) =>
          pool.spawn(command).pipe(Effect.map((managed) => managed.handle), Effect.mapError(Handle.toPlatformError))
        )
    )
  )
}

const decodeLimits = Schema.decodeUnknownResult(Containment.Limits)

const make = Effect.fnUntraced(function*(config: ShepherdConfig.Resolved) {
  const table = yield* ProcessTable
  const launcher = yield* ProcessLauncher
  const ledger = Option.getOrUndefined(yield* Effect.serviceOption(Ledger))
  const lifelineService = Option.getOrUndefined(yield* Effect.serviceOption(Lifeline))
  const containmentService = Option.getOrUndefined(yield* Effect.serviceOption(Containment.Containment))
  const layerScope = yield* Scope.Scope
  const poolId = `${config.name}~${globalThis.crypto.randomUUID().slice(0, 8)}`
  // Every metric update of this pool carries its id.
  const attributes = { pool: poolId }
  const metrics = Metrics.forPool(attributes)
  const slots = yield* Slots.make(config, metrics.slotWaiters)
  const watchers = yield* FiberSet.make<unknown, never>()
  const hurry = yield* Deferred.make<void>()
  const startedAt = yield* Clock.currentTimeMillis
  const bootId = ledger?.host.bootId ?? "unknown"
  const journal = Journal.make(ledger, metrics.ledgerEvents)
  const trees = Tree.makeTrees()
  const reaperOptions: Reaper.Options = {
    poolId,
    table,
    ledger,
    policy: config.kill,
    hurry,
    bootId,
    isTracked: (shepherdId) => trees.tracked.has(shepherdId),
    exited: (shepherdId, outcome, detail, at) => Journal.exited(journal, shepherdId, outcome, detail, at),
    attributes
  }

  // Before the pool accepts spawns: terminate what an earlier host left behind.
  const recovery = yield* Reaper.recover(reaperOptions)
  if (ledger !== undefined) yield* Journal.hostStarted(journal, poolId, ledger.host, yield* Clock.currentTimeMillis)
  // Before the lifeline, whose sentinel goes into the pool's cgroup; its finalizer (removing the
  // pool's cgroups) runs after the sessions' shutdown, registered later.
  const containment = containmentService === undefined
    ? Containment.processGroup(config.containment ?? "auto", "no Containment service is provided")
    : yield* containmentService.attach(poolId, {
      policy: config.kill,
      // The earlier hosts of this ledger: what their containers still hold is ours to end.
      recover: [...new Set(recovery?.entries.map((e) => e.poolId) ?? [])]
    })
  if (lifelineService !== undefined && config.lifeline) {
    journal.lifeline = yield* lifelineService.attach(
      poolId,
      config.kill,
      containment.lifeline === undefined
        ? { registerWaitMs: config.lifelineWaitMs }
        : { cgroup: containment.lifeline, registerWaitMs: config.lifelineWaitMs }
    )
  }
  const registry = Sessions.make(poolId)
  const ctx: Spawn.Context = {
    poolId,
    config,
    envPolicy: config.env,
    table,
    launcher,
    hurry,
    journal,
    registry,
    slots,
    trees,
    watchers,
    runWatcher: yield* FiberSet.runtime(watchers)<never>(),
    containment,
    metrics: {
      attributes,
      spawned: metrics.spawned,
      running: metrics.running,
      slotWait: metrics.slotWait,
      teardownDuration: metrics.teardownDuration,
      exited: Object.fromEntries(
        Teardown.Outcome.literals.map((outcome) => [outcome, metrics.exitedBy(outcome)])
      ) as Record<
        Teardown.Outcome,
        Metric.Metric<number, unknown>
      >
    }
  }
  const spawn = Spawn.make(ctx)
  const reaper = yield* Reaper.make(reaperOptions)
  const shutdown = Sessions.shutdown(registry, journal)
  // The first tick runs now, before the first spawn; the repeats are forked before the shutdown
  // finalizer is registered, so that closing the layer shuts the sessions down first and only
  // then interrupts the reaper.
  yield* Reaper.start(reaper, {
    intervalMs: config.reapIntervalMs,
    skip: new Set(recovery?.entries.map((e) => e.shepherdId) ?? []),
    scope: layerScope
  })
  yield* Scope.addFinalizer(layerScope, Effect.asVoid(shutdown))

  return ProcessPool.of({
    poolId,
    config,
    spawn,
    session: (id, options) =>
      Effect.suspend(() => {
        if (options?.limits === undefined) {
          return Effect.map(Sessions.openScoped(registry, id), (state) => Sessions.handle(registry, state, spawn))
        }
        const decoded = decodeLimits(options.limits)
        if (decoded._tag === "Failure") return Effect.die(decoded.failure)
        const refused = Spawn.checkLimits(containment, id, decoded.success)
        return refused !== undefined ? Effect.fail(refused) : Effect.map<
          Sessions.SessionState,
          PoolClosed | LimitUnavailable,
          Scope.Scope,
          Session
        >(
          Sessions.openScoped(registry, id, decoded.success),
          (state) => Sessions.handle(registry, state, spawn)
        )
      }),
    withSession: (id, effect) => Sessions.withSession(registry, id, effect),
    closeSession: (id) => Sessions.close(registry, id),
    processes: Effect.sync(() => Sessions.processes(registry)),
    stats: Effect.sync(() => ({
      poolId,
      slots: config.slots,
      hardCap: config.hardCap,
      inUse: slots.inUse,
      waiting: slots.waiting,
      sessions: [...registry.sessions.keys()],
      closing: registry.closing
    })),
    hurry: Deferred.succeed(hurry, undefined).pipe(Effect.asVoid),
    shutdown,
    recovery,
    reapNow: reaper.reapNow,
    lastTick: reaper.lastTick,
    lifeline: journal.lifeline === undefined ? Effect.succeedNone : Effect.asSome(journal.lifeline.status),
    containment: containment.status,
    doctor: DoctorReport.make({ ...ctx, startedAt, bootId, recovery, reaper })
  })
})
