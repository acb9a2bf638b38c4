/**
 * The typed errors of Shepherd. Every error is a `Schema.TaggedError`, so it
 * can be matched with `Effect.catchTag`, encoded into logs and ledgers, and
 * carries the facts an operator needs (which session, which command, which
 * limit).
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/**
 * The pool configuration is invalid. `field` names the offending field
 * (`slots`, `kill.grace`, ...); the layer fails to build with this error.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidConfig extends Schema.TaggedError<InvalidConfig>()("InvalidConfig", {
  field: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `invalid Shepherd config: ${this.field}: ${this.reason}`
  }
}

/**
 * No pool slot became free within `slotTimeout`.
 *
 * @since 0.1.0
 * @category errors
 */
export class SlotTimeout extends Schema.TaggedError<SlotTimeout>()("SlotTimeout", {
  session: Schema.String,
  command: Schema.String,
  waitedMs: Schema.Number,
  slots: Schema.Number
}) {
  override get message(): string {
    return `no pool slot became free within ${this.waitedMs} ms (slots: ${this.slots}) for ${this.command}`
  }
}

/**
 * The pool already tracks or queues `hardCap` requests; the request was
 * refused at once instead of waiting.
 *
 * @since 0.1.0
 * @category errors
 */
export class HardCapExceeded extends Schema.TaggedError<HardCapExceeded>()("HardCapExceeded", {
  session: Schema.String,
  command: Schema.String,
  hardCap: Schema.Number,
  tracked: Schema.Number,
  waiting: Schema.Number
}) {
  override get message(): string {
    return `hard cap of ${this.hardCap} reached (${this.tracked} tracked, ${this.waiting} waiting): refused ${this.command}`
  }
}

/**
 * Why a spawn failed before its tree ran: `Launch` (the operating system
 * refused the command), `Ledger` (its intent could not be recorded),
 * `InvalidKillPolicy` (the per-spawn kill policy), `Pipeline` (pipelines are
 * not supervised as one tree).
 *
 * @since 0.1.0
 * @category errors
 */
export const SpawnErrorKind = Schema.Literals(["Launch", "Ledger", "InvalidKillPolicy", "Pipeline"])

/**
 * @since 0.1.0
 * @category errors
 */
export type SpawnErrorKind = typeof SpawnErrorKind.Type

/**
 * The command could not be started: the operating system refused it
 * (missing executable, bad working directory, permission, ...), its intent
 * could not be recorded in the ledger, or the request was invalid. `kind`
 * says which, `reason` in words. The slot it held was released.
 *
 * @since 0.1.0
 * @category errors
 */
export class SpawnError extends Schema.TaggedError<SpawnError>()("SpawnError", {
  session: Schema.String,
  command: Schema.String,
  kind: SpawnErrorKind,
  reason: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {
  override get message(): string {
    return `could not spawn ${this.command}: ${this.reason}`
  }
}

/**
 * The pool or the session is closing or closed; nothing new is spawned into it.
 *
 * @since 0.1.0
 * @category errors
 */
export class PoolClosed extends Schema.TaggedError<PoolClosed>()("PoolClosed", {
  pool: Schema.String,
  session: Schema.optionalKey(Schema.String)
}) {
  override get message(): string {
    return this.session === undefined
      ? `pool ${this.pool} is closed`
      : `session ${this.session} of pool ${this.pool} is closed`
  }
}

/**
 * Any error `ProcessPool.spawn` can fail with.
 *
 * @since 0.1.0
 * @category errors
 */
export type SpawnFailure = SlotTimeout | HardCapExceeded | SpawnError | PoolClosed
