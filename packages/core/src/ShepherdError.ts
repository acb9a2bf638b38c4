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
 * not supervised as one tree), `Containment` (its cgroup could not be
 * created, or the command could not be placed in it: nothing ran),
 * `InvalidLimits` (the per-spawn limits), `Lifeline` (the lifeline could not
 * take the tree's registration within `lifelineWait`: a tree that had started
 * was torn down; while the lifeline is stalled, spawns wait before forking).
 *
 * @since 0.1.0
 * @category errors
 */
export const SpawnErrorKind = Schema.Literals([
  "Launch",
  "Ledger",
  "InvalidKillPolicy",
  "Pipeline",
  "Containment",
  "InvalidLimits",
  "Lifeline"
])

/**
 * @since 0.1.0
 * @category errors
 */
export type SpawnErrorKind = typeof SpawnErrorKind.Type

/**
 * The command could not be started: the operating system refused it
 * (missing executable, bad working directory, permission, ...), its intent
 * could not be recorded in the ledger, the lifeline could not take its
 * registration (a tree that had started was torn down), or the request was
 * invalid. `kind` says which, `reason` in words. The slot it held was
 * released.
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
 * A resource limit (of a session or a spawn) cannot be applied: its
 * controller (`memory`, `pids`, `cpu`) is not available where the pool's
 * cgroups are, or the containment is not cgroup v2 at all. Limits are never
 * ignored silently.
 *
 * @since 0.2.0
 * @category errors
 */
export class LimitUnavailable extends Schema.TaggedError<LimitUnavailable>()("LimitUnavailable", {
  /** The cgroup controller the limit needs. */
  controller: Schema.String,
  /** The limit's cgroup file (`memory.max`, ...). */
  limit: Schema.String,
  session: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `cannot apply ${this.limit} (controller ${this.controller}) in session ${this.session}: ${this.reason}`
  }
}

/**
 * Cgroup containment was required (`containment: "cgroup"`) but cannot be
 * had here; `reason` says why (no writable cgroup2 file system, no
 * delegation, ...). The layer fails to build with this error.
 *
 * @since 0.2.0
 * @category errors
 */
export class ContainmentUnavailable extends Schema.TaggedError<ContainmentUnavailable>()("ContainmentUnavailable", {
  requested: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `containment "${this.requested}" is not available: ${this.reason}`
  }
}

/**
 * Any error `ProcessPool.spawn` can fail with.
 *
 * @since 0.1.0
 * @category errors
 */
export type SpawnFailure = SlotTimeout | HardCapExceeded | SpawnError | PoolClosed | LimitUnavailable
