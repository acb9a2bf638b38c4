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
import * as Schema from "effect/Schema"

/**
 * What one container's cleanup did.
 *
 * @since 0.1.0
 * @category models
 */
export const Action = Schema.Struct({
  shepherdId: Schema.String,
  outcome: Schema.String,
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
