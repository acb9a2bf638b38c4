/**
 * The registry of a pool's sessions: opening and joining them, forgetting
 * implicit ones once idle, closing one (every tree at once, with one
 * `terminateMany` driver) or all of them (the pool's shutdown).
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import type * as Containment from "../Containment.ts"
import type { ManagedProcess } from "../ManagedProcess.ts"
import type { ProcessPool, Session } from "../ProcessPool.ts"
import type { ExitStatus } from "../ProcessLauncher.ts"
import type { Container } from "../ProcessTable.ts"
import { PoolClosed } from "../ShepherdError.ts"
import type * as Teardown from "../Teardown.ts"
import * as Journal from "./journal.ts"
import { type Input as TerminateInput, type Result as TerminateResult, terminateMany } from "./terminate.ts"
import { Flag } from "./flag.ts"

/**
 * The session that `spawn` uses when no `session` option is given (public as
 * `ProcessPool.CurrentSession`).
 *
 * @since 0.1.0
 * @category references
 */
export const CurrentSession = Context.Reference<string | undefined>("@shepherd/core/CurrentSession", {
  defaultValue: () => undefined
})

/**
 * The exact session a `Session` handle or `withSession` spawns into: once that session is closed,
 * its spawns fail with PoolClosed instead of silently opening a new session with the same id.
 *
 * @since 0.1.0
 * @category references
 */
export const BoundSession = Context.Reference<{ readonly poolId: string; readonly state: SessionState } | undefined>(
  "@shepherd/core/ProcessPool/BoundSession",
  { defaultValue: () => undefined }
)

/**
 * What a session holds of one of its trees (see `tree.ts`).
 *
 * @since 0.1.0
 * @category models
 */
export interface TreeState {
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

/**
 * @since 0.1.0
 * @category models
 */
export interface SessionState {
  readonly id: string
  readonly processes: Set<TreeState>
  /** Spawns between slot and registration: closing waits for them. */
  readonly launching: Set<Deferred.Deferred<void>>
  /** Spawn requests in flight (waiting for a slot or launching). */
  pending: number
  /** Opened by `session`/`withSession` (closed by them), rather than implicitly by a spawn. */
  owned: boolean
  /** Raised when closing starts: slot waiters of this session give up. */
  readonly closingSignal: Flag
  closed: Deferred.Deferred<ReadonlyArray<Teardown.Teardown>> | undefined
  /** Resource limits of the session's cgroup (cgroup containment), set by `session(id, { limits })`. */
  limits?: Containment.Limits | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Registry {
  readonly poolId: string
  readonly sessions: Map<string, SessionState>
  /** Each caller scope's parallel child, which holds its processes' scopes and sessions' closes. */
  readonly parallelChildren: WeakMap<Scope.Scope, Scope.Closeable>
  /** The pool refuses new spawns and sessions. */
  closing: boolean
  /** Raised when the pool begins closing: slot waiters give up. */
  readonly poolClosing: Flag
  shutdown: Deferred.Deferred<ReadonlyArray<Teardown.Teardown>> | undefined
}

/**
 * @since 0.1.0
 * @category constructors
 */
export const make = (poolId: string): Registry => ({
  poolId,
  sessions: new Map(),
  parallelChildren: new WeakMap(),
  closing: false,
  poolClosing: new Flag(),
  shutdown: undefined
})

/**
 * @since 0.1.0
 * @category errors
 */
export const closed = (registry: Registry, session?: string): PoolClosed =>
  new PoolClosed(session === undefined ? { pool: registry.poolId } : { pool: registry.poolId, session })

/**
 * Opens (or joins) a session. A spawn counts itself as pending in the same synchronous step, so
 * an implicit session cannot be forgotten between the lookup and the spawn.
 *
 * @since 0.1.0
 * @category constructors
 */
export const open = (registry: Registry, id: string, forSpawn = false): Effect.Effect<SessionState, PoolClosed> =>
  Effect.suspend(() => {
    if (registry.closing) return Effect.fail(closed(registry, id))
    let state = registry.sessions.get(id)
    if (state === undefined) {
      state = {
        id,
        processes: new Set(),
        launching: new Set(),
        pending: 0,
        owned: false,
        closingSignal: new Flag(),
        closed: undefined
      }
      registry.sessions.set(id, state)
    }
    if (state.closed !== undefined) return Effect.fail(closed(registry, id))
    if (forSpawn) state.pending++
    return Effect.succeed(state)
  })

/**
 * A spawn into a session it is bound to (a `Session` handle, `withSession`): counted as pending,
 * unless that session is closed.
 *
 * @since 0.1.0
 * @category constructors
 */
export const join = (registry: Registry, state: SessionState): Effect.Effect<SessionState, PoolClosed> =>
  Effect.suspend(() => {
    if (state.closed !== undefined) return Effect.fail(closed(registry, state.id))
    state.pending++
    return Effect.succeed(state)
  })

/**
 * A session opened implicitly by `spawn(..., { session })` is forgotten once it is empty, so
 * per-request session ids do not pile up; one opened by `session`/`withSession` lives until closed.
 *
 * @since 0.1.0
 * @category combinators
 */
export const forgetIfIdle = (registry: Registry, state: SessionState): void => {
  if (state.owned || state.closed !== undefined || state.pending > 0 || state.processes.size > 0) return
  if (registry.sessions.get(state.id) === state) registry.sessions.delete(state.id)
}

/**
 * Each caller scope gets one parallel child that holds its processes' scopes, so that closing
 * the caller's (usually sequential) scope tears its trees down concurrently.
 *
 * @since 0.1.0
 * @category resource management
 */
export const parallelChildOf = (registry: Registry, scope: Scope.Scope): Effect.Effect<Scope.Closeable> =>
  Effect.suspend(() => {
    const existing = registry.parallelChildren.get(scope)
    if (existing !== undefined && existing.state._tag !== "Closed") return Effect.succeed(existing)
    return Effect.tap(
      Scope.fork(scope, "parallel"),
      (child) => Effect.sync(() => registry.parallelChildren.set(scope, child))
    )
  })

/**
 * Closes a session (idempotent): waits for its launches, then tears every tree down with one
 * driver (one signal sweep, one scan per phase), each tree's report done as soon as it is gone.
 *
 * @since 0.1.0
 * @category resource management
 */
export const closeState = (
  registry: Registry,
  state: SessionState
): Effect.Effect<ReadonlyArray<Teardown.Teardown>> =>
  Effect.suspend(() => {
    if (state.closed !== undefined) return Deferred.await(state.closed)
    const done = Deferred.makeUnsafe<ReadonlyArray<Teardown.Teardown>>()
    state.closed = done
    state.closingSignal.raise()
    return Effect.forEach([...state.launching], Deferred.await, { discard: true }).pipe(
      Effect.andThen(Effect.suspend(() =>
        Effect.flatMap(Clock.currentTimeMillis, (since) => {
          const trees = [...state.processes]
          const claimed = trees.map((p) => p.begin(since))
          const mine = trees.filter((_, i) => claimed[i] !== undefined)
          // Each tree's report (slot, ledger, lifeline) is done as soon as that tree is gone.
          return Effect.andThen(
            terminateMany(
              claimed.filter((input) => input !== undefined),
              (i, result) => Effect.asVoid(mine[i]!.finish(result))
            ),
            Effect.forEach(trees, (p) => p.awaitDone)
          )
        })
      )),
      Effect.tap(logClose(state.id)),
      Effect.tap((reports) =>
        Effect.sync(() => {
          if (registry.sessions.get(state.id) === state) registry.sessions.delete(state.id)
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
  const line =
    `session ${session} closed: ${reports.length} tree(s) (${
      [...counts].map(([tag, n]) => `${n} ${tag}`).join(", ")
    }), ` +
    `slowest ${slowest} ms`
  return (counts.has("Forced") || counts.has("Escaped") || counts.has("Unverified")
    ? Effect.logInfo(line)
    : Effect.logDebug(line))
    .pipe(Effect.annotateLogs({ session }))
}

/**
 * Closes a session by id (an unknown id is a no-op returning `[]`).
 *
 * @since 0.1.0
 * @category resource management
 */
export const close = (registry: Registry, id: string): Effect.Effect<ReadonlyArray<Teardown.Teardown>> =>
  Effect.suspend(() => {
    const state = registry.sessions.get(id)
    return state === undefined ? Effect.succeed([]) : closeState(registry, state)
  })

/**
 * Opens (or joins) a session owned by the caller's Scope. The close goes into the caller scope's
 * parallel child, like its processes' scopes: sessions opened in one (sequential) scope close
 * together with each other and with its processes.
 *
 * @since 0.1.0
 * @category resource management
 */
export const openScoped = (
  registry: Registry,
  id: string,
  limits?: Containment.Limits | undefined
): Effect.Effect<SessionState, PoolClosed, Scope.Scope> =>
  Effect.uninterruptible(Effect.gen(function*() {
    const parallel = yield* parallelChildOf(registry, yield* Scope.Scope)
    const state = yield* open(registry, id)
    state.owned = true
    // The session's cgroup takes them at its trees' next launch (checked by the caller).
    if (limits !== undefined) state.limits = limits
    yield* Scope.addFinalizer(parallel, closeState(registry, state))
    return state
  }))

/**
 * Binds `effect`'s spawns to the session `state` (see `BoundSession`).
 *
 * @since 0.1.0
 * @category combinators
 */
export const bind = <A, E, R>(registry: Registry, state: SessionState, effect: Effect.Effect<A, E, R>) =>
  Effect.provideService(effect, BoundSession, { poolId: registry.poolId, state })

/**
 * The `Session` handle of an open session.
 *
 * @since 0.1.0
 * @category constructors
 */
export const handle = (registry: Registry, state: SessionState, spawn: ProcessPool["Service"]["spawn"]): Session => ({
  id: state.id,
  spawn: (command, options) => bind(registry, state, spawn(command, { ...options, session: undefined })),
  processes: Effect.sync(() => [...state.processes].map((p) => p.managed)),
  close: closeState(registry, state)
})

/**
 * Runs `effect` in session `id` (its spawns default to it) and closes the session afterwards.
 *
 * @since 0.1.0
 * @category resource management
 */
export const withSession = <A, E, R>(
  registry: Registry,
  id: string,
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, E | PoolClosed, Exclude<R, Scope.Scope>> =>
  Effect.scoped(
    Effect.flatMap(openScoped(registry, id), (state) =>
      bind(registry, state, Effect.provideService(effect, CurrentSession, id)))
  ) as Effect.Effect<A, E | PoolClosed, Exclude<R, Scope.Scope>>

/**
 * Every live process, all sessions.
 *
 * @since 0.1.0
 * @category getters
 */
export const processes = (registry: Registry): ReadonlyArray<ManagedProcess> =>
  [...registry.sessions.values()].flatMap((s) => [...s.processes].map((p) => p.managed))

/**
 * Closes the pool (idempotent): refuses new spawns, closes every session concurrently, then
 * records the host's clean stop.
 *
 * @since 0.1.0
 * @category resource management
 */
export const shutdown = (
  registry: Registry,
  journal: Journal.Journal
): Effect.Effect<ReadonlyArray<Teardown.Teardown>> =>
  Effect.suspend(() => {
    if (registry.shutdown !== undefined) return Deferred.await(registry.shutdown)
    const done = Deferred.makeUnsafe<ReadonlyArray<Teardown.Teardown>>()
    registry.shutdown = done
    registry.closing = true
    registry.poolClosing.raise()
    return Effect.forEach([...registry.sessions.values()], (state) => closeState(registry, state), {
      concurrency: "unbounded"
    }).pipe(
      Effect.map((all) => all.flat()),
      Effect.tap(() =>
        Effect.flatMap(Clock.currentTimeMillis, (at) => Journal.hostStopped(journal, registry.poolId, at))
      ),
      Effect.tap((reports) => Deferred.succeed(done, reports)),
      Effect.withSpan("ProcessPool.shutdown", { attributes: { poolId: registry.poolId } }),
      Effect.uninterruptible
    )
  })
