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
import * as Exit from "effect/Exit"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as PlatformError from "effect/PlatformError"
import type * as ChildProcess from "effect/process/ChildProcess"
import * as ChildProcessSpawner from "effect/process/ChildProcessSpawner"
import * as CommandLine from "effect/process/CommandLine"
import * as Redacted from "effect/Redacted"
import * as References from "effect/References"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Semaphore from "effect/Semaphore"
import type * as Doctor from "./Doctor.ts"
import * as EnvPolicy from "./EnvPolicy.ts"
import * as Journal from "./internal/journal.ts"
import * as Orphans from "./internal/orphans.ts"
import {
  type Input as TerminateInput,
  type Result as TerminateResult,
  terminate,
  terminateMany
} from "./internal/terminate.ts"
import * as KillPolicy from "./KillPolicy.ts"
import * as Metrics from "./Metrics.ts"
import { containerOf, Ledger, type LedgerRecord } from "./Ledger.ts"
import { Lifeline } from "./Lifeline.ts"
import type * as Lifeline_ from "./Lifeline.ts"
import type { ManagedProcess } from "./ManagedProcess.ts"
import { type ExitStatus, ProcessLauncher } from "./ProcessLauncher.ts"
import { type Container, ProcessTable } from "./ProcessTable.ts"
import * as ShepherdConfig from "./ShepherdConfig.ts"
import type * as ShepherdError from "./ShepherdError.ts"
import { HardCapExceeded, type InvalidConfig, PoolClosed, SlotTimeout, SpawnError } from "./ShepherdError.ts"
import type * as Reaper from "./Reaper.ts"
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
export const CurrentSession = Context.Reference<string | undefined>("@shepherd/core/CurrentSession", {
  defaultValue: () => undefined
})

// The exact session a `Session` handle or `withSession` spawns into: once that session is closed,
// its spawns fail with PoolClosed instead of silently opening a new session with the same id.
const BoundSession = Context.Reference<{ readonly poolId: string; readonly state: unknown } | undefined>(
  "@shepherd/core/ProcessPool/BoundSession",
  { defaultValue: () => undefined }
)

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
  /** Opens (or joins) a session; it is closed when the current Scope closes. */
  readonly session: (id: string) => Effect.Effect<Session, PoolClosed, Scope.Scope>
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
  /** The doctor report: pool, sessions and their trees, ledger, reaper, lifeline, and the pool/ledger/OS comparison. */
  readonly doctor: Effect.Effect<Doctor.DoctorReport>
}>()("@shepherd/core/ProcessPool") {
  /**
   * The pool, given a process table and a launcher (see `NodeShepherd.layer`
   * for the Node composition). A `Ledger` and a `Lifeline`, when provided,
   * are used too. Fails with `InvalidConfig` naming the field.
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
    Effect.map(ProcessPool, (pool: ProcessPool["Service"]) =>
      ChildProcessSpawner.make((command) =>
        pool.spawn(command).pipe(
          Effect.map((managed) => managed.handle),
          Effect.mapError((error) =>
            PlatformError.systemError({
              // The OS's own reason when there is one (NotFound, PermissionDenied, ...).
              _tag: error._tag === "SpawnError"
                ? PlatformError.isPlatformError(error.cause) && error.cause.reason._tag !== "BadArgument"
                  ? error.cause.reason._tag
                  : "Unknown"
                : error._tag === "SlotTimeout"
                ? "TimedOut"
                : "Busy",
              module: "Shepherd",
              method: "spawn",
              description: error.message,
              cause: error
            })
          )
        )
      ))
  )
}

interface SessionState {
  readonly id: string
  readonly processes: Set<ProcessState>
  /** Spawns between slot and registration: closing waits for them. */
  readonly launching: Set<Deferred.Deferred<void>>
  /** Spawn requests in flight (waiting for a slot or launching). */
  pending: number
  /** Opened by `session`/`withSession` (closed by them), rather than implicitly by a spawn. */
  owned: boolean
  /** Completed when closing starts: slot waiters of this session give up. */
  readonly closingSignal: Deferred.Deferred<void>
  closed: Deferred.Deferred<ReadonlyArray<Teardown.Teardown>> | undefined
}

interface ProcessState {
  readonly managed: ManagedProcess
  /** For closes of many trees at once: claim the teardown (undefined if one runs already)... */
  readonly begin: (since: number) => TerminateInput | undefined
  /** ...and finish it with the result of `terminateMany`. */
  readonly finish: (result: TerminateResult) => Effect.Effect<Teardown.Teardown>
  readonly awaitDone: Effect.Effect<Teardown.Teardown>
  readonly exitStatus: () => ExitStatus | undefined
  readonly container: Container
  /** The values of the command's `Redacted` arguments and environment variables (empty: none). */
  readonly secrets: ReadonlyArray<string>
}

const recentLimit = 50

const debugEnabled = (minimum: string) => minimum === "Debug" || minimum === "Trace" || minimum === "All"

const decodeKill = Schema.decodeUnknownResult(ShepherdConfig.KillPolicyConfig)

const secretsOf = (command: ChildProcess.StandardCommand): ReadonlyArray<string> => {
  const values = [
    ...command.args.filter(Redacted.isRedacted),
    ...Object.values(command.options.env ?? {}).filter(Redacted.isRedacted)
  ].map((r) => Redacted.value(r as Redacted.Redacted<string>)).filter((v) => v.length > 0)
  // Also as a latin1 reading of its UTF-8 bytes: that is how a process table may decode a command line.
  // (Byte by byte: spreading a large secret's bytes as arguments would throw a RangeError.)
  const latin1 = values.map((v) => {
    let text = ""
    for (const byte of new TextEncoder().encode(v)) text += String.fromCharCode(byte)
    return text
  })
  // Longest first, so that a secret containing another is masked whole.
  return [...new Set([...values, ...latin1])].sort((a, b) => b.length - a.length)
}

/**
 * A member's command line as the doctor shows it for a tree spawned with
 * `Redacted` values: the executable's name only. A member may carry a secret
 * anywhere in its arguments (a child can re-exec with it in another position),
 * so arguments are never shown; occurrences in the name itself are masked.
 */
const hideArguments = (commandLine: string, secrets: ReadonlyArray<string>): string => {
  const masked = secrets.reduce((text, secret) => text.split(secret).join("<redacted>"), commandLine)
  const program = masked.split(" ")[0] ?? ""
  const name = program.slice(program.lastIndexOf("/") + 1)
  return `${name.length === 0 ? "?" : name} <arguments hidden>`
}

const unwrapEnv = (env: ChildProcess.CommandOptions["env"]): Record<string, string | undefined> => {
  const out: Record<string, string | undefined> = {}
  if (env === undefined) return out
  for (const [name, value] of Object.entries(env)) {
    out[name] = value === undefined ? undefined : Redacted.isRedacted(value) ? Redacted.value(value) : value
  }
  return out
}

const make = Effect.fnUntraced(function*(config: ShepherdConfig.Resolved) {
  const table = yield* ProcessTable
  const launcher = yield* ProcessLauncher
  const ledger = Option.getOrUndefined(yield* Effect.serviceOption(Ledger))
  const lifelineService = Option.getOrUndefined(yield* Effect.serviceOption(Lifeline))
  const layerScope = yield* Scope.Scope
  const poolId = `${config.name}~${globalThis.crypto.randomUUID().slice(0, 8)}`
  const slots = yield* Semaphore.make(config.slots)
  const watchers = yield* FiberSet.make<unknown, never>()
  const hurry = yield* Deferred.make<void>()
  const poolClosing = yield* Deferred.make<void>()
  const sessions = new Map<string, SessionState>()
  let closing = false
  let shutdownResult: Deferred.Deferred<ReadonlyArray<Teardown.Teardown>> | undefined
  let inUse = 0
  let waiting = 0
  let counter = 0
  /** Every tree the pool owns, from its ledger intent until its exit is recorded. */
  const tracked = new Set<string>()
  /** Start times of waiting spawn requests, for the doctor's "longest wait". */
  const waitingSince = new Map<number, number>()
  let waitTokens = 0
  /** The last teardown reports, newest last, for the doctor. */
  const recent: Array<Teardown.Teardown & { readonly at: number }> = []
  const poolStartedAt = yield* Clock.currentTimeMillis
  // Every metric update of this pool carries its id.
  const attributes = { pool: poolId }
  const m = {
    spawned: Metric.withAttributes(Metrics.spawned, attributes),
    running: Metric.withAttributes(Metrics.running, attributes),
    slotWaiters: Metric.withAttributes(Metrics.slotWaiters, attributes),
    slotWait: Metric.withAttributes(Metrics.slotWait, attributes),
    teardownDuration: Metric.withAttributes(Metrics.teardownDuration, attributes),
    ledgerEvents: Metric.withAttributes(Metrics.ledgerEvents, attributes)
  }
  let live = 0
  const orphanContext: Orphans.Context = {
    table,
    policy: config.kill,
    hurry,
    bootId: ledger?.host.bootId ?? "unknown"
  }

  const journal = Journal.make(ledger, m.ledgerEvents)
  const record = (entry: LedgerRecord) => Journal.record(journal, entry)

  // Before the pool accepts spawns: terminate what an earlier host left behind.
  const recovery = ledger === undefined
    ? undefined
    : yield* Orphans.recover(orphanContext, ledger, (...args) => Journal.exited(journal, ...args))
  if (recovery !== undefined && recovery.entries.length > 0) {
    const signalled = recovery.entries.filter((e) => e.signalled.length > 0).length
    yield* Metric.update(Metric.withAttributes(Metrics.orphansReaped, { ...attributes, source: "recovery" }), signalled)
    yield* Effect.logWarning(
      `recovered ${recovery.entries.length} ledger entr${recovery.entries.length === 1 ? "y" : "ies"} of an earlier host ` +
        `(${signalled} still alive and terminated) in ${recovery.durationMs} ms`
    )
  }
  if (ledger !== undefined) {
    yield* record({ _tag: "HostStarted", poolId, host: ledger.host, at: yield* Clock.currentTimeMillis })
  }
  const lifeline = lifelineService === undefined || !config.lifeline
    ? undefined
    : yield* lifelineService.attach(poolId, config.kill)

  const closed = (session?: string) =>
    new PoolClosed(session === undefined ? { pool: poolId } : { pool: poolId, session })

  /**
   * Opens (or joins) a session. A spawn counts itself as pending in the same synchronous step, so
   * an implicit session cannot be forgotten between the lookup and the spawn.
   */
  const openSession = (id: string, forSpawn = false): Effect.Effect<SessionState, PoolClosed> =>
    Effect.suspend(() => {
      if (closing) return Effect.fail(closed(id))
      let state = sessions.get(id)
      if (state === undefined) {
        state = {
          id,
          processes: new Set(),
          launching: new Set(),
          pending: 0,
          owned: false,
          closingSignal: Deferred.makeUnsafe(),
          closed: undefined
        }
        sessions.set(id, state)
      }
      if (state.closed !== undefined) return Effect.fail(closed(id))
      if (forSpawn) state.pending++
      return Effect.succeed(state)
    })

  // A session opened implicitly by `spawn(..., { session })` is forgotten once it is empty, so
  // per-request session ids do not pile up; one opened by `session`/`withSession` lives until closed.
  const forgetIfIdle = (state: SessionState) => {
    if (state.owned || state.closed !== undefined || state.pending > 0 || state.processes.size > 0) return
    if (sessions.get(state.id) === state) sessions.delete(state.id)
  }

  // Each caller scope gets one parallel child that holds its processes' scopes, so that closing
  // the caller's (usually sequential) scope tears its trees down concurrently.
  const parallelChildren = new WeakMap<Scope.Scope, Scope.Closeable>()
  const parallelChildOf = (scope: Scope.Scope): Effect.Effect<Scope.Closeable> =>
    Effect.suspend(() => {
      const existing = parallelChildren.get(scope)
      if (existing !== undefined && existing.state._tag !== "Closed") return Effect.succeed(existing)
      return Effect.tap(Scope.fork(scope, "parallel"), (child) => Effect.sync(() => parallelChildren.set(scope, child)))
    })

  const closeSessionState = (state: SessionState): Effect.Effect<ReadonlyArray<Teardown.Teardown>> =>
    Effect.suspend(() => {
      if (state.closed !== undefined) return Deferred.await(state.closed)
      const done = Deferred.makeUnsafe<ReadonlyArray<Teardown.Teardown>>()
      state.closed = done
      Deferred.doneUnsafe(state.closingSignal, Exit.void)
      return Effect.forEach([...state.launching], Deferred.await, { discard: true }).pipe(
        Effect.andThen(Effect.suspend(() =>
          Effect.flatMap(Clock.currentTimeMillis, (since) => {
            // One driver for every tree of the session: one signal sweep, one scan per phase.
            const states = [...state.processes]
            const claimed = states.map((p) => p.begin(since))
            const mine = states.filter((_, i) => claimed[i] !== undefined)
            // Each tree's report (slot, ledger, lifeline) is done as soon as that tree is gone.
            return Effect.andThen(
              terminateMany(
                claimed.filter((input) => input !== undefined),
                (i, result) => Effect.asVoid(mine[i]!.finish(result))
              ),
              Effect.forEach(states, (p) => p.awaitDone, { concurrency: "unbounded" })
            )
          })
        )),
        Effect.tap(logClose(state.id)),
        Effect.tap((reports) =>
          Effect.sync(() => {
            if (sessions.get(state.id) === state) sessions.delete(state.id)
            Deferred.doneUnsafe(done, Exit.succeed(reports))
          })
        ),
        Effect.withSpan("ProcessPool.closeSession", { attributes: { session: state.id } }),
        Effect.uninterruptible
      )
    })

  const logClose = (session: string) => (reports: ReadonlyArray<Teardown.Teardown>) => {
    if (reports.length === 0) return Effect.void
    const counts = new Map<string, number>()
    for (const r of reports) counts.set(r._tag, (counts.get(r._tag) ?? 0) + 1)
    const slowest = Math.round(Math.max(...reports.map((r) => r.durationMs)))
    const line = `session ${session} closed: ${reports.length} tree(s) (${[...counts].map(([tag, n]) => `${n} ${tag}`).join(", ")}), ` +
      `slowest ${slowest} ms`
    return (counts.has("Forced") || counts.has("Escaped") || counts.has("Unverified") ? Effect.logInfo(line) : Effect.logDebug(line))
      .pipe(Effect.annotateLogs({ session }))
  }

  const closeSession = (id: string) =>
    Effect.suspend(() => {
      const state = sessions.get(id)
      return state === undefined ? Effect.succeed([]) : closeSessionState(state)
    })

  const logReport = (report: Teardown.Teardown) =>
    Effect.flatMap(References.MinimumLogLevel, (minimum) => {
      // One line per tree only at Debug (a session close can end hundreds); closes summarize at Info.
      // A tree that escaped or could not be verified is always worth a warning of its own.
      const warn = report._tag === "Escaped" || report._tag === "Unverified"
      if (!warn && !debugEnabled(minimum)) return Effect.void
      const line = `${report.command} (pid ${report.pid}, session ${report.session}): ${Teardown.describe(report)}`
      return (warn ? Effect.logWarning(line) : Effect.logDebug(line)).pipe(
        Effect.annotateLogs({ shepherdId: report.shepherdId, outcome: report._tag })
      )
    })

  const spawnFailed = (error: SpawnFailure) =>
    Metric.update(Metric.withAttributes(Metrics.spawnFailures, { ...attributes, reason: error._tag }), 1)

  const spawn = Effect.fn("ProcessPool.spawn")(function*(
    command: ChildProcess.Command,
    options?: SpawnOptions
  ): Effect.fn.Return<ManagedProcess, SpawnFailure, Scope.Scope> {
    const bound = options?.session === undefined ? yield* BoundSession : undefined
    const target = bound !== undefined && bound.poolId === poolId ? bound.state as SessionState : undefined
    const sessionId = options?.session ?? target?.id ?? (yield* CurrentSession) ?? "default"
    const display = command._tag === "StandardCommand"
      ? CommandLine.display([command.command, ...command.args])
      : "<pipeline>"
    yield* Effect.annotateCurrentSpan({ session: sessionId, command: display })
    if (command._tag !== "StandardCommand") {
      return yield* new SpawnError({
        session: sessionId,
        command: display,
        reason: "pipelines are not supervised as one tree yet: spawn each stage and connect their streams"
      })
    }
    let policy = config.kill
    if (options?.kill !== undefined) {
      const decoded = decodeKill(options.kill)
      if (decoded._tag === "Failure") {
        return yield* new SpawnError({ session: sessionId, command: display, reason: `invalid kill policy: ${decoded.failure.message}` })
      }
      policy = KillPolicy.override(config.kill, decoded.success as KillPolicy.KillPolicyInput)
    }
    const callerScope = yield* Scope.Scope
    const waitStart = yield* Clock.currentTimeMillis
    const openForSpawn: Effect.Effect<SessionState, PoolClosed> = target === undefined
      ? openSession(sessionId, true)
      : Effect.suspend(() => {
        if (target.closed !== undefined) return Effect.fail(closed(sessionId))
        target.pending++
        return Effect.succeed(target)
      })

    // Opening (which counts the request as pending) and the `ensuring` that uncounts it sit in one
    // uninterruptible region: nothing can interrupt in between.
    return yield* Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(openForSpawn, (session) => Effect.gen(function*() {
        // Check and count in one synchronous step: concurrent requests cannot both pass the cap.
        if (inUse + waiting >= config.hardCap) {
          return yield* new HardCapExceeded({
            session: sessionId,
            command: display,
            hardCap: config.hardCap,
            tracked: inUse,
            waiting
          })
        }
        waiting++
        const waitToken = ++waitTokens
        waitingSince.set(waitToken, waitStart)
        yield* Metric.update(m.slotWaiters, waiting)
        const gaveUp = Effect.raceFirst(Deferred.await(session.closingSignal), Deferred.await(poolClosing))
        const waitForSlot = Effect.raceFirst(Effect.as(slots.take(1), true), Effect.as(gaveUp, false)).pipe(
          Number.isFinite(config.slotTimeoutMs)
            ? Effect.timeoutOrElse({
              duration: config.slotTimeoutMs,
              orElse: () =>
                Effect.fail(
                  new SlotTimeout({ session: sessionId, command: display, waitedMs: config.slotTimeoutMs, slots: config.slots })
                )
            })
            : (self) => self
        )
        // Fast path: nobody else waits and a slot is free, so taking it at once cannot overtake
        // anyone (FIFO holds) and the racing and timing machinery is not needed.
        const acquired = yield* (waiting === 1 ? slots.takeIfAvailable(1) : Effect.succeed(false)).pipe(
          Effect.flatMap((fast) => fast ? Effect.succeed(true) : restore(waitForSlot)),
          Effect.ensuring(Effect.suspend(() => {
            waiting--
            waitingSince.delete(waitToken)
            return Metric.update(m.slotWaiters, waiting)
          }))
        )
        if (!acquired) return yield* closed(sessionId)

        // From here on we hold one permit; every path must give it back exactly once.
        inUse++
        let held = true
        const releaseSlot = Effect.suspend(() => {
          if (!held) return Effect.void
          held = false
          inUse--
          return slots.release(1)
        })
        if (closing || session.closed !== undefined) {
          yield* releaseSlot
          return yield* closed(sessionId)
        }
        // Until this spawn has registered its tree (or failed), a closing session waits for it.
        const launchDone = Deferred.makeUnsafe<void>()
        session.launching.add(launchDone)
        return yield* Effect.gen(function*() {
          const slotWaitMs = (yield* Clock.currentTimeMillis) - waitStart
          const id = ++counter
          const shepherdId = `${poolId}:${id}`
          const inherits = command.options.env === undefined || command.options.extendEnv === true
          const { env, explain } = EnvPolicy.apply(
            config.env,
            inherits ? launcher.inheritedEnv() : {},
            unwrapEnv(command.options.env)
          )
          env.SHEPHERD_ID = shepherdId
          const secrets = secretsOf(command)

          tracked.add(shepherdId)
          if (ledger !== undefined) {
            const intent = yield* Effect.result(ledger.append({
              _tag: "Intent",
              poolId,
              shepherdId,
              session: sessionId,
              command: display,
              ...(secrets.length === 0 ? {} : { redacted: true }),
              at: yield* Clock.currentTimeMillis
            }))
            if (intent._tag === "Success") yield* Metric.update(m.ledgerEvents, 1)
            if (intent._tag === "Failure") {
              // Without the intent a crash could leave this tree unknown to the next host: refuse.
              tracked.delete(shepherdId)
              yield* releaseSlot
              return yield* new SpawnError({ session: sessionId, command: display, reason: intent.failure.message })
            }
          }
          const procScope = yield* Scope.fork(yield* parallelChildOf(callerScope), "sequential")
          const launched = yield* launcher.launch(command, env).pipe(
            Scope.provide(procScope),
            Effect.catch((error) =>
              Effect.andThen(
                Effect.andThen(
                  Effect.andThen(releaseSlot, Scope.close(procScope, Exit.void)),
                  Effect.andThen(
                    Effect.flatMap(Clock.currentTimeMillis, (at) =>
                      record({ _tag: "Exited", shepherdId, outcome: "SpawnFailed", detail: error.message, at })),
                    Effect.sync(() => tracked.delete(shepherdId))
                  )
                ),
                Effect.fail(
                  new SpawnError({
                    session: sessionId,
                    command: display,
                    reason: error.message,
                    cause: error
                  })
                )
              )
            )
          )
          const startedAt = yield* Clock.currentTimeMillis
          const container = { pgid: launched.pgid, shepherdId, leader: launched.identity }
          yield* record({ _tag: "Registered", shepherdId, pgid: launched.pgid, identity: launched.identity, at: startedAt })
          if (lifeline !== undefined) yield* lifeline.register(container)
          const done = Deferred.makeUnsafe<Teardown.Teardown>()
          let running: KillPolicy.KillPolicy | undefined
          const escalate = Deferred.makeUnsafe<void>()
          let state: ProcessState

          /** Claims the teardown: its `terminate` input, or undefined when one runs already. */
          const begin = (kill: KillPolicy.KillPolicy, since?: number): TerminateInput | undefined => {
            if (running !== undefined) {
              // A teardown runs already: a harsher request (SIGKILL, a shorter grace) cuts its grace short.
              if (kill.signal === "SIGKILL" || kill.graceMs < running.graceMs) Deferred.doneUnsafe(escalate, Exit.void)
              return undefined
            }
            running = kill
            return {
              table,
              container,
              policy: kill,
              leader: { exitStatus: launched.exitStatus, exit: launched.exit, signal: launched.signal },
              hurry,
              escalate,
              since
            }
          }

          /** Turns the raw result into the report and does the bookkeeping of a tree that is gone. */
          const finish = (r: TerminateResult): Effect.Effect<Teardown.Teardown> =>
            Effect.succeed(r).pipe(
              Effect.map((r): Teardown.Teardown => {
                const common = {
                  pid: launched.pid,
                  shepherdId,
                  session: sessionId,
                  command: display,
                  signalled: r.signalled,
                  durationMs: r.durationMs
                }
                switch (r.outcome._tag) {
                  case "Exited":
                    return new Teardown.Exited({ ...common, code: r.outcome.status.code, signal: r.outcome.status.signal })
                  case "Gone":
                    return new Teardown.Exited({ ...common, code: null, signal: null })
                  case "Graceful":
                    return new Teardown.Graceful({ ...common, signal: running?.signal ?? policy.signal })
                  case "Forced":
                    return new Teardown.Forced({ ...common, forced: r.forced })
                  case "Escaped":
                    return new Teardown.Escaped({ ...common, escaped: r.outcome.escaped })
                  case "Unverified":
                    return new Teardown.Unverified({ ...common, reason: r.outcome.reason })
                }
              }),
              Effect.tap((report) =>
                Effect.gen(function*() {
                  if (Teardown.isGone(report)) {
                    yield* record({
                      _tag: "Exited",
                      shepherdId,
                      outcome: report._tag,
                      detail: Teardown.describe(report),
                      at: yield* Clock.currentTimeMillis
                    })
                    if (lifeline !== undefined) yield* lifeline.unregister(shepherdId)
                  }
                  // Escaped or Unverified: the ledger entry and the lifeline stay, and the reaper
                  // (to which the tree is now untracked) keeps trying.
                  session.processes.delete(state)
                  forgetIfIdle(session)
                  tracked.delete(shepherdId)
                  recent.push({ ...report, at: yield* Clock.currentTimeMillis } as Teardown.Teardown & { at: number })
                  if (recent.length > recentLimit) recent.shift()
                  live--
                  yield* Metric.update(m.running, live)
                  yield* Metric.update(Metric.withAttributes(Metrics.exited, { ...attributes, outcome: report._tag }), 1)
                  yield* Metric.update(m.teardownDuration, report.durationMs)
                  // The slot first: whoever awaits the report may spawn again at once.
                  yield* releaseSlot
                  Deferred.doneUnsafe(done, Exit.succeed(report))
                })
              ),
              Effect.tap(logReport),
              Effect.tap(() => Scope.close(procScope, Exit.void)),
              Effect.withSpan("ProcessPool.teardown", { attributes: { shepherdId, pid: launched.pid } }),
              Effect.uninterruptible
            )

          const stopWith = (kill: KillPolicy.KillPolicy): Effect.Effect<Teardown.Teardown> =>
            Effect.suspend(() => {
              const input = begin(kill)
              return input === undefined
                ? Deferred.await(done)
                : Effect.uninterruptible(Effect.flatMap(terminate(input), finish))
            })

          const stop = stopWith(policy)
          const exitCode = Effect.flatMap(launched.exit, (status) =>
            status.code !== null
              ? Effect.succeed(ChildProcessSpawner.ExitCode(status.code))
              : Effect.fail(
                PlatformError.systemError({
                  _tag: "Unknown",
                  module: "ChildProcess",
                  method: "exitCode",
                  description: `Process interrupted due to receipt of signal: '${status.signal}'`
                })
              ))
          const handle = ChildProcessSpawner.makeHandle({
            pid: ChildProcessSpawner.ProcessId(launched.pid),
            exitCode,
            isRunning: Effect.sync(() => launched.exitStatus() === undefined),
            kill: (opts) =>
              Effect.asVoid(stopWith(KillPolicy.override(policy, {
                signal: opts?.killSignal === undefined ? undefined : opts.killSignal as KillPolicy.KillPolicy["signal"],
                grace: opts?.forceKillAfter
              }))),
            ...launched.io,
            // Shepherd never lets a process outlive its scope: unref is a no-op.
            unref: Effect.succeed(Effect.void)
          })
          const managed: ManagedProcess = {
            id,
            shepherdId,
            session: sessionId,
            pid: launched.pid,
            pgid: launched.pgid,
            identity: launched.identity,
            command: display,
            startedAt,
            slotWaitMs,
            policy,
            env: explain,
            handle,
            awaitExit: launched.exit,
            terminate: (input) => stopWith(KillPolicy.override(policy, input)),
            awaitTeardown: Deferred.await(done),
            teardown: Effect.suspend(() =>
              Deferred.isDoneUnsafe(done) ? Effect.asSome(Deferred.await(done)) : Effect.succeedNone
            )
          }
          if (debugEnabled(yield* References.MinimumLogLevel)) {
            yield* Effect.logDebug(
              `spawned ${display} (pid ${launched.pid}, session ${sessionId}); env: ${explain.inherited.length} inherited, ` +
                `stripped [${explain.stripped.join(", ")}], preserved [${explain.preserved.join(", ")}], explicit [${explain.explicit.join(", ")}]`
            ).pipe(Effect.annotateLogs({ shepherdId }))
          }
          state = {
            managed,
            begin: (since) => begin(policy, since),
            finish,
            awaitDone: Deferred.await(done),
            exitStatus: launched.exitStatus,
            container,
            secrets
          }
          session.processes.add(state)
          live++
          yield* Metric.update(m.running, live)
          yield* Metric.update(m.spawned, 1)
          yield* Metric.update(m.slotWait, slotWaitMs)
          yield* Scope.addFinalizer(procScope, stop)
          // Natural exit: clean up what the leader left behind and return the slot at once.
          yield* FiberSet.run(watchers, Effect.andThen(launched.exit, stop))
          if (closing || session.closed !== undefined) {
            // The session began closing while we were launching: its close (which waited for
            // this launch) tears the tree down; the caller gets PoolClosed.
            return yield* closed(sessionId)
          }
          return managed
        }).pipe(
          Effect.ensuring(Effect.sync(() => {
            session.launching.delete(launchDone)
            Deferred.doneUnsafe(launchDone, Exit.void)
          }))
        )
      }).pipe(Effect.ensuring(Effect.sync(() => {
        session.pending--
        forgetIfIdle(session)
      }))))
    )
  }, Effect.tapError(spawnFailed))

  const makeSession = (state: SessionState): Session => ({
    id: state.id,
    spawn: (command, options) =>
      spawn(command, { ...options, session: undefined }).pipe(Effect.provideService(BoundSession, { poolId, state })),
    processes: Effect.sync(() => [...state.processes].map((p) => p.managed)),
    close: closeSessionState(state)
  })

  const openOwned = (id: string) =>
    Effect.map(openSession(id), (state) => {
      state.owned = true
      return state
    })

  // The close goes into the caller scope's parallel child, like its processes' scopes: sessions
  // opened in one (sequential) scope close together with each other and with its processes.
  const openScoped = (id: string): Effect.Effect<SessionState, PoolClosed, Scope.Scope> =>
    Effect.uninterruptible(Effect.gen(function*() {
      const parallel = yield* parallelChildOf(yield* Scope.Scope)
      const state = yield* openOwned(id)
      yield* Scope.addFinalizer(parallel, closeSessionState(state))
      return state
    }))

  const session = (id: string) => Effect.map(openScoped(id), makeSession)

  const withSession = <A, E, R>(id: string, effect: Effect.Effect<A, E, R>) =>
    Effect.scoped(
      Effect.flatMap(openScoped(id), (state) =>
        effect.pipe(
          Effect.provideService(CurrentSession, id),
          Effect.provideService(BoundSession, { poolId, state })
        ))
    ) as Effect.Effect<A, E | PoolClosed, Exclude<R, Scope.Scope>>

  // The reaper. A one-permit semaphore keeps ticks (scheduled or `reapNow`) from overlapping.
  const tickLock = yield* Semaphore.make(1)
  let tickCount = 0
  let lastTick: Reaper.TickReport | undefined
  const hostStart = ledger?.host.startTime
  /** One tick; ledger entries in `skip` are left to a later tick (recovery has just acted on them). */
  const reapTick = (skip: ReadonlySet<string>): Effect.Effect<Reaper.TickReport> => tickLock.withPermit(Effect.gen(function*() {
    const at = yield* Clock.currentTimeMillis
    const tick = ++tickCount
    let pruned = 0
    const stale: Array<Reaper.Action> = []
    const untracked: Array<Reaper.Action> = []
    const known = new Set<string>()
    const failure = yield* Effect.gen(function*() {
      // 1. Ledger entries the pool does not track: gone already (a lost exit record) or still alive.
      const entries = ledger === undefined ? [] : yield* ledger.entries
      for (const entry of entries) known.add(entry.shepherdId)
      yield* Effect.forEach(entries.filter((e) => !tracked.has(e.shepherdId) && !skip.has(e.shepherdId)), (entry) =>
        Effect.gen(function*() {
          const action = yield* Orphans.cleanup(orphanContext, entry.shepherdId, entry.pgid, entry.identity)
          if (action.outcome === "Gone") pruned++
          else stale.push(action)
          if (Teardown.isFinal(action.outcome)) {
            yield* Journal.exited(journal, entry.shepherdId, action.outcome, "reaped", at)
          }
        }), { concurrency: "unbounded", discard: true })
      // 2. Processes that carry this pool's cookie but that nothing tracks.
      const carriers = yield* table.carriers(`${poolId}:`, { notBefore: hostStart })
      const orphanIds = new Set<string>()
      for (const c of carriers) {
        if (!tracked.has(c.shepherdId) && !known.has(c.shepherdId)) orphanIds.add(c.shepherdId)
      }
      yield* Effect.forEach(orphanIds, (shepherdId) =>
        Effect.map(Orphans.cleanup(orphanContext, shepherdId, undefined, undefined), (action) => {
          untracked.push(action)
        }), { concurrency: "unbounded", discard: true })
    }).pipe(
      Effect.match({ onFailure: (error) => error.reason, onSuccess: () => undefined })
    )
    const report: Reaper.TickReport = {
      tick,
      at,
      durationMs: (yield* Clock.currentTimeMillis) - at,
      pruned,
      stale,
      untracked,
      ...(failure === undefined ? {} : { error: failure })
    }
    lastTick = report
    const terminated = (actions: ReadonlyArray<Reaper.Action>) => actions.filter((a) => a.signalled.length > 0).length
    yield* Metric.update(Metric.withAttributes(Metrics.orphansReaped, { ...attributes, source: "stale" }), terminated(stale))
    yield* Metric.update(Metric.withAttributes(Metrics.orphansReaped, { ...attributes, source: "untracked" }), terminated(untracked))
    if (failure !== undefined) yield* Effect.logWarning(`reaper tick ${tick} failed: ${failure}`)
    else if (stale.length + untracked.length > 0) {
      const outcomes = [...stale, ...untracked].map((a) => a.outcome).join(", ")
      yield* Effect.logWarning(
        `reaper: ${stale.length} stale and ${untracked.length} untracked tree(s) (${outcomes}), pruned ${pruned} entr(ies)`
      )
    }
    return report
  }).pipe(Effect.withSpan("ProcessPool.reap", { attributes: { poolId } })))
  const reapOnce = reapTick(new Set())

  const doctor: Effect.Effect<Doctor.DoctorReport> = Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const states = [...sessions.values()].flatMap((s) => [...s.processes])
    // One coalesced scan serves every tree's member list.
    const membersOf = yield* Effect.forEach(states, (p) =>
      Effect.orElseSucceed(table.members(p.container), () => []), { concurrency: "unbounded" })
    const described = new Map<string, ReadonlyArray<Doctor.DoctorReport["sessions"][number]["processes"][number]["members"][number]>>()
    for (const [i, p] of states.entries()) {
      const infos = yield* Effect.forEach(membersOf[i]!, (identity) => table.inspect(identity))
      described.set(
        p.managed.shepherdId,
        infos.filter((x) => x !== undefined).map((info) =>
          p.secrets.length === 0 ? info : { ...info, command: hideArguments(info.command, p.secrets) }
        )
      )
    }
    const entries = ledger === undefined ? [] : yield* ledger.entries
    const inLedger = new Set(entries.map((e) => e.shepherdId))
    const carriers = yield* Effect.orElseSucceed(table.carriers(`${poolId}:`, { notBefore: hostStart }), () => [])
    const untracked = new Map<string, Array<number>>()
    for (const c of carriers) {
      if (tracked.has(c.shepherdId) || inLedger.has(c.shepherdId)) continue
      untracked.set(c.shepherdId, [...(untracked.get(c.shepherdId) ?? []), c.identity.pid])
    }
    const stale = yield* Effect.forEach(entries.filter((e) => !tracked.has(e.shepherdId)), (e) =>
      Effect.map(
        Effect.orElseSucceed(
          table.members(containerOf(e, orphanContext.bootId)),
          () => []
        ),
        (alive) => ({
          shepherdId: e.shepherdId,
          session: e.session,
          command: e.command,
          ...(e.identity === undefined ? {} : { pid: e.identity.pid }),
          alive: alive.map((m) => m.pid)
        })
      ))
    const longestWaitMs = waitingSince.size === 0 ? 0 : now - Math.min(...waitingSince.values())
    const lifelineStatus = lifeline === undefined ? undefined : yield* lifeline.status
    const lastCompaction = ledger === undefined ? undefined : yield* ledger.lastCompaction
    return {
      at: now,
      pool: {
        poolId,
        name: config.name,
        uptimeMs: now - poolStartedAt,
        slots: config.slots,
        hardCap: config.hardCap,
        slotTimeoutMs: config.slotTimeoutMs,
        kill: config.kill,
        reapIntervalMs: config.reapIntervalMs,
        closing
      },
      ...(ledger === undefined ? {} : { host: ledger.host }),
      slots: { total: config.slots, inUse, free: config.slots - inUse, waiting, longestWaitMs },
      sessions: [...sessions.values()].map((s) => ({
        id: s.id,
        closing: s.closed !== undefined,
        processes: [...s.processes].map((p) => ({
          shepherdId: p.managed.shepherdId,
          pid: p.managed.pid,
          pgid: p.managed.pgid,
          identity: p.managed.identity,
          command: p.managed.command,
          ageMs: now - p.managed.startedAt,
          slotWaitMs: p.managed.slotWaitMs,
          state: p.exitStatus() === undefined ? "running" as const : "exited" as const,
          members: described.get(p.managed.shepherdId) ?? [],
          env: {
            inherited: p.managed.env.inherited.length,
            stripped: p.managed.env.stripped,
            preserved: p.managed.env.preserved,
            explicit: p.managed.env.explicit
          }
        }))
      })),
      recent: recent.map((r) => ({
        shepherdId: r.shepherdId,
        session: r.session,
        pid: r.pid,
        command: r.command,
        outcome: r._tag,
        description: Teardown.describe(r),
        durationMs: r.durationMs,
        at: r.at
      })),
      ...(ledger === undefined ? {} : {
        ledger: {
          path: ledger.path,
          live: entries.length,
          ...(lastCompaction === undefined ? {} : { lastCompaction }),
          tornLine: ledger.opened.tornLine,
          badLines: ledger.opened.badLines,
          ...(ledger.opened.quarantined === undefined ? {} : { quarantined: ledger.opened.quarantined }),
          ...(ledger.opened.tookOverFrom === undefined ? {} : { tookOverFrom: ledger.opened.tookOverFrom })
        }
      }),
      ...(recovery === undefined ? {} : { recovery }),
      reaper: { intervalMs: config.reapIntervalMs, ...(lastTick === undefined ? {} : { lastTick }) },
      ...(lifelineStatus === undefined ? {} : {
        lifeline: {
          kind: lifelineStatus.kind,
          ...(lifelineStatus.pid === undefined ? {} : { pid: lifelineStatus.pid }),
          alive: lifelineStatus.alive,
          watching: lifelineStatus.watching,
          restarts: lifelineStatus.restarts,
          ...(lifelineStatus.lastError === undefined ? {} : { lastError: lifelineStatus.lastError })
        }
      }),
      envPolicy: config.env,
      comparison: {
        untracked: [...untracked].map(([shepherdId, pids]) => ({ shepherdId, pids })),
        stale,
        vanished: states.filter((_, i) => membersOf[i]!.length === 0).map((p) => ({
          shepherdId: p.managed.shepherdId,
          pid: p.managed.pid
        })),
        unrecorded: ledger === undefined
          ? []
          : states.map((p) => p.managed.shepherdId).filter((id) => !inLedger.has(id))
      }
    }
  }).pipe(Effect.withSpan("ProcessPool.doctor", { attributes: { poolId } }))

  const shutdown = Effect.suspend(() => {
    if (shutdownResult !== undefined) return Deferred.await(shutdownResult)
    const done = Deferred.makeUnsafe<ReadonlyArray<Teardown.Teardown>>()
    shutdownResult = done
    closing = true
    Deferred.doneUnsafe(poolClosing, Exit.void)
    return Effect.forEach([...sessions.values()], closeSessionState, { concurrency: "unbounded" }).pipe(
      Effect.map((all) => all.flat()),
      Effect.tap(() => Effect.flatMap(Clock.currentTimeMillis, (at) => record({ _tag: "HostStopped", poolId, at }))),
      Effect.tap((reports) => Deferred.succeed(done, reports)),
      Effect.withSpan("ProcessPool.shutdown", { attributes: { poolId } }),
      Effect.uninterruptible
    )
  })
  // The first tick runs here, before the pool accepts its first spawn (a tick forked "at start"
  // ran up to seconds late while a busy program spawned). The repeats are forked before the
  // shutdown finalizer is registered, so that closing the layer shuts the sessions down first and
  // only then interrupts the reaper. A tick is not interrupted half-way (it may have signalled an
  // orphan it has yet to SIGKILL).
  const logged = (tick: Effect.Effect<Reaper.TickReport>) =>
    tick.pipe(
      Effect.catchCause((cause) => Effect.logWarning("reaper tick failed", cause)),
      Effect.uninterruptible
    )
  // What recovery has just terminated (or given up on as escaped) waits for the next tick: trying
  // again at once would cost another grace period before the pool opens.
  yield* logged(reapTick(new Set(recovery?.entries.map((e) => e.shepherdId) ?? [])))
  // `schedule` (unlike `repeat`) waits a full interval before its first run.
  yield* logged(reapOnce).pipe(
    Effect.schedule(Schedule.spaced(config.reapIntervalMs)),
    Effect.interruptible,
    Effect.forkIn(layerScope)
  )
  yield* Scope.addFinalizer(layerScope, Effect.asVoid(shutdown))

  return ProcessPool.of({
    poolId,
    config,
    spawn,
    session,
    withSession,
    closeSession,
    processes: Effect.sync(() => [...sessions.values()].flatMap((s) => [...s.processes].map((p) => p.managed))),
    stats: Effect.sync(() => ({
      poolId,
      slots: config.slots,
      hardCap: config.hardCap,
      inUse,
      waiting,
      sessions: [...sessions.keys()],
      closing
    })),
    hurry: Deferred.succeed(hurry, undefined).pipe(Effect.asVoid),
    shutdown,
    recovery,
    reapNow: reapOnce,
    lastTick: Effect.sync(() => Option.fromNullishOr(lastTick)),
    lifeline: lifeline === undefined ? Effect.succeedNone : Effect.asSome(lifeline.status),
    doctor
  })
})
