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
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Orphans from "./internal/orphans.ts"
import type { KillPolicy } from "./KillPolicy.ts"
import type { ProcessIdentity } from "./ProcessIdentity.ts"
import type { ProcessTable } from "./ProcessTable.ts"
import { Outcome } from "./Teardown.ts"

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
