/**
 * The reaper: a fiber forked into the pool's layer scope, repeated on a
 * `Schedule`, that prunes ledger entries whose processes are gone,
 * terminates what the ledger still lists but the pool no longer tracks, and
 * finds processes that carry this pool's `SHEPHERD_ID` but are tracked
 * nowhere (a write lost in a crash). Ticks never overlap; a failing tick is
 * logged and the loop goes on.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import * as Orphans from "./internal/orphans.ts"
import type { KillPolicy } from "./KillPolicy.ts"
import type { Ledger } from "./Ledger.ts"
import * as Metrics from "./Metrics.ts"
import type { ProcessIdentity } from "./ProcessIdentity.ts"
import type { ProcessTable } from "./ProcessTable.ts"
import { isFinal, Outcome } from "./Teardown.ts"

/**
 * What one container's cleanup did.
 *
 * @since 0.1.0
 * @category models
 */
export const Action = Schema.Struct({
  shepherdId: Schema.String,
  outcome: Outcome,
  signalled: Schema.Array(Schema.Int),
  durationMs: Schema.Number
})

/**
 * @since 0.1.0
 * @category models
 */
export interface Action extends Schema.Schema.Type<typeof Action> {}

/**
 * What one reaper tick did.
 *
 * @since 0.1.0
 * @category models
 */
export const TickReport = Schema.Struct({
  tick: Schema.Int,
  at: Schema.Number,
  durationMs: Schema.Number,
  /** Ledger entries whose processes were already gone, now recorded as exited. */
  pruned: Schema.Int,
  /** Ledger entries the pool no longer tracks whose processes were still alive. */
  stale: Schema.Array(Action),
  /** Processes carrying this pool's `SHEPHERD_ID` that neither the pool nor the ledger tracked. */
  untracked: Schema.Array(Action),
  error: Schema.optionalKey(Schema.String)
})

/**
 * @since 0.1.0
 * @category models
 */
export interface TickReport extends Schema.Schema.Type<typeof TickReport> {}

/**
 * What the pool did at start with the entries an earlier host left in the
 * ledger.
 *
 * @since 0.1.0
 * @category models
 */
export const RecoveryReport = Schema.Struct({
  at: Schema.Number,
  durationMs: Schema.Number,
  /** One action per live entry found; `outcome` is `Gone`, `Graceful`, `Forced`, `Escaped`, `OtherBoot` or `Unverified`. */
  entries: Schema.Array(Schema.Struct({
    ...Action.fields,
    poolId: Schema.String,
    session: Schema.String,
    command: Schema.String,
    pid: Schema.optionalKey(Schema.Int)
  }))
})

/**
 * @since 0.1.0
 * @category models
 */
export interface RecoveryReport extends Schema.Schema.Type<typeof RecoveryReport> {}

/**
 * Terminates a tree the caller has no handle to — a ledger entry of a dead
 * host, or processes that carry a `SHEPHERD_ID` — with `policy`. Members are
 * found by cookie and, when `pgid` and `leader` are known, by process group;
 * every signal is identity-checked, and an entry of another boot is never
 * signalled (`OtherBoot`). `Gone` means nothing was alive.
 *
 * @since 0.1.0
 * @category constructors
 */
export const cleanup = (options: {
  readonly table: ProcessTable["Service"]
  readonly policy: KillPolicy
  readonly bootId: string
  readonly shepherdId: string
  readonly pgid?: number | undefined
  readonly leader?: ProcessIdentity | undefined
}): Effect.Effect<Action> =>
  Effect.flatMap(Deferred.make<void>(), (hurry) =>
    Orphans.cleanup(
      { table: options.table, policy: options.policy, hurry, bootId: options.bootId },
      options.shepherdId,
      options.pgid,
      options.leader
    ))

/**
 * What a pool's reaper works with.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly poolId: string
  readonly table: ProcessTable["Service"]
  /** Absent: only cookie carriers are looked for. */
  readonly ledger: Ledger["Service"] | undefined
  readonly policy: KillPolicy
  /** Completed when the host demands an immediate kill: graces end at once. */
  readonly hurry: Deferred.Deferred<void>
  /** This boot's id: a ledger entry of another boot is never signalled. */
  readonly bootId: string
  /** Trees the pool tracks itself (their own teardown ends them): left alone. */
  readonly isTracked: (shepherdId: string) => boolean
  /** Closes the ledger entry of a tree found gone (the pool's journal). */
  readonly exited: (shepherdId: string, outcome: Outcome, detail: string, at: number) => Effect.Effect<void>
  /** Attributes of the `orphansReaped` metric updates (the pool's id). */
  readonly attributes: Readonly<Record<string, string>>
}

/**
 * Recovery, before a pool accepts spawns: terminates what an earlier host
 * left in the ledger (every live entry at once), closes the entries found
 * gone, and logs what it did. `undefined` without a ledger.
 *
 * @since 0.1.0
 * @category running
 */
export const recover = (options: Options): Effect.Effect<RecoveryReport | undefined> =>
  options.ledger === undefined ? Effect.undefined : Effect.tap(
    Orphans.recover(options, options.ledger, options.exited),
    (recovery) => {
      if (recovery.entries.length === 0) return Effect.void
      const signalled = recovery.entries.filter((e) => e.signalled.length > 0).length
      return Effect.andThen(
        Metric.update(
          Metric.withAttributes(Metrics.orphansReaped, { ...options.attributes, source: "recovery" }),
          signalled
        ),
        Effect.logWarning(
          `recovered ${recovery.entries.length} ledger entr${
            recovery.entries.length === 1 ? "y" : "ies"
          } of an earlier host ` +
            `(${signalled} still alive and terminated) in ${recovery.durationMs} ms`
        )
      )
    }
  )

/**
 * A pool's reaper: ticks that never overlap, and the last tick's report.
 *
 * @since 0.1.0
 * @category models
 */
export interface Reaper {
  /** One tick; ledger entries in `skip` are left to a later tick (recovery has just acted on them). */
  readonly tick: (skip: ReadonlySet<string>) => Effect.Effect<TickReport>
  /** One tick now (it waits for a running tick). */
  readonly reapNow: Effect.Effect<TickReport>
  /** The last tick, if one ran. */
  readonly lastTick: Effect.Effect<Option.Option<TickReport>>
}

/**
 * The reaper of one pool. A one-permit semaphore keeps ticks (scheduled or
 * `reapNow`) from overlapping.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<Reaper> =>
  Effect.map(Semaphore.make(1), (tickLock) => {
    let tickCount = 0
    let lastTick: TickReport | undefined
    const { ledger, table, poolId } = options
    const hostStart = ledger?.host.startTime
    const tick = (skip: ReadonlySet<string>): Effect.Effect<TickReport> =>
      tickLock.withPermit(
        Effect.gen(function*() {
          const at = yield* Clock.currentTimeMillis
          const tick = ++tickCount
          let pruned = 0
          const stale: Array<Action> = []
          const untracked: Array<Action> = []
          const known = new Set<string>()
          const failure = yield* Effect.gen(function*() {
            // 1. Ledger entries the pool does not track: gone already (a lost exit record) or still alive.
            const entries = ledger === undefined ? [] : yield* ledger.entries
            for (const entry of entries) known.add(entry.shepherdId)
            yield* Effect.forEach(
              entries.filter((e) => !options.isTracked(e.shepherdId) && !skip.has(e.shepherdId)),
              (entry) =>
                Effect.gen(function*() {
                  const action = yield* Orphans.cleanup(options, entry.shepherdId, entry.pgid, entry.identity)
                  if (action.outcome === "Gone") pruned++
                  else stale.push(action)
                  if (isFinal(action.outcome)) yield* options.exited(entry.shepherdId, action.outcome, "reaped", at)
                }),
              { concurrency: "unbounded", discard: true }
            )
            // 2. Processes that carry this pool's cookie but that nothing tracks.
            const carriers = yield* table.carriers(`${poolId}:`, { notBefore: hostStart })
            const orphanIds = new Set<string>()
            for (const c of carriers) {
              if (!options.isTracked(c.shepherdId) && !known.has(c.shepherdId)) orphanIds.add(c.shepherdId)
            }
            yield* Effect.forEach(orphanIds, (shepherdId) =>
              Effect.map(Orphans.cleanup(options, shepherdId, undefined, undefined), (action) => {
                untracked.push(action)
              }), { concurrency: "unbounded", discard: true })
          }).pipe(
            Effect.match({
              onFailure: (error) => error.reason,
              onSuccess: () =>
                undefined
            })
          )
          const report: TickReport = {
            tick,
            at,
            durationMs: (yield* Clock.currentTimeMillis) - at,
            pruned,
            stale,
            untracked,
            ...(failure === undefined ? {} : { error: failure })
          }
          lastTick = report
          const terminated = (actions: ReadonlyArray<Action>) =>
            actions.filter((a) => a.signalled.length > 0).length
          const reaped = (source: string) =>
            Metric.withAttributes(Metrics.orphansReaped, { ...options.attributes, source })
          yield* Metric.update(reaped("stale"), terminated(stale))
          yield* Metric.update(reaped("untracked"), terminated(untracked))
          if (failure !== undefined) yield* Effect.logWarning(`reaper tick ${tick} failed: ${failure}`)
          else if (stale.length + untracked.length > 0) {
            const outcomes = [...stale, ...untracked].map((a) => a.outcome).join(", ")
            yield* Effect.logWarning(
              `reaper: ${stale.length} stale and ${untracked.length} untracked tree(s) (${outcomes}), pruned ${pruned} entr(ies)`
            )
          }
          return report
        }).pipe(Effect.withSpan("ProcessPool.reap", { attributes: { poolId } }))
      )
    return {
      tick,
      reapNow: tick(new Set()),
      lastTick: Effect.sync(() => Option.fromNullishOr(lastTick))
    }
  })

// A tick is not interrupted half-way (it may have signalled an orphan it has yet to SIGKILL).
const logged = (tick: Effect.Effect<TickReport>) =>
  tick.pipe(
    Effect.catchCause((cause) => Effect.logWarning("reaper tick failed", cause)),
    Effect.uninterruptible
  )

/**
 * Runs the first tick now and forks the repeats into `scope`, every
 * `intervalMs` after that. Entries in `skip` (what recovery has just
 * terminated or given up on as escaped) wait for the second tick: trying
 * again at once would cost another grace period before the pool opens.
 *
 * **Details**
 *
 * The first tick runs while the pool is built, before its first spawn (a
 * tick forked "at start" ran up to seconds late while a busy program
 * spawned). Fork the repeats before registering the pool's shutdown
 * finalizer, so that closing the scope shuts the sessions down first and only
 * then interrupts the reaper.
 *
 * @since 0.1.0
 * @category running
 */
export const start = (
  reaper: Reaper,
  options: { readonly intervalMs: number; readonly skip: ReadonlySet<string>; readonly scope: Scope.Scope }
): Effect.Effect<void> =>
  Effect.andThen(
    logged(reaper.tick(options.skip)),
    // `schedule` (unlike `repeat`) waits a full interval before its first run.
    logged(reaper.reapNow).pipe(
      Effect.schedule(Schedule.spaced(options.intervalMs)),
      Effect.interruptible,
      Effect.forkIn(options.scope),
      Effect.asVoid
    )
  )
