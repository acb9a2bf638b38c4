/**
 * The typed errors of `@shepherd/cluster`. Each is a `Schema.TaggedError`, so
 * it crosses the wire between a client and the runner that hosts a session and
 * can be matched with `Effect.catchTag` on the client.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/**
 * No session of this id was ever opened (no `Spawn` reached it).
 *
 * @since 0.1.0
 * @category errors
 */
export class SessionNotFound extends Schema.TaggedError<SessionNotFound>()("SessionNotFound", {
  session: Schema.String
}) {
  override get message(): string {
    return `unknown session ${JSON.stringify(this.session)}`
  }
}

/**
 * The session was closed with `Close`; it accepts no new spawns.
 *
 * @since 0.1.0
 * @category errors
 */
export class SessionClosed extends Schema.TaggedError<SessionClosed>()("SessionClosed", {
  session: Schema.String
}) {
  override get message(): string {
    return `session ${JSON.stringify(this.session)} is closed`
  }
}

/**
 * The command (argv, env, cwd, kill policy) does not decode; `reason` says
 * which field and why.
 *
 * @since 0.1.0
 * @category errors
 */
export class MalformedCommand extends Schema.TaggedError<MalformedCommand>()("MalformedCommand", {
  reason: Schema.String
}) {
  override get message(): string {
    return `malformed command: ${this.reason}`
  }
}

/**
 * The runner could not start the command: the pool refused it (`SlotTimeout`,
 * `HardCapExceeded`, `PoolClosed`, ...) or the OS did (`NotFound`, ...).
 * `cause` is the underlying error's tag.
 *
 * @since 0.1.0
 * @category errors
 */
export class SpawnFailed extends Schema.TaggedError<SpawnFailed>()("SpawnFailed", {
  session: Schema.String,
  spawnId: Schema.String,
  cause: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `spawn ${this.spawnId} in session ${JSON.stringify(this.session)} failed (${this.cause}): ${this.reason}`
  }
}

/**
 * The tree's output is not available: it was spawned by an earlier runner of
 * the session (output lives in the spawning runner's memory only), or never.
 *
 * @since 0.1.0
 * @category errors
 */
export class OutputUnavailable extends Schema.TaggedError<OutputUnavailable>()("OutputUnavailable", {
  session: Schema.String,
  spawnId: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `no output for ${this.spawnId} in session ${JSON.stringify(this.session)}: ${this.reason}`
  }
}

/**
 * The session records in the database could not be read or written.
 *
 * @since 0.1.0
 * @category errors
 */
export class StorageFailed extends Schema.TaggedError<StorageFailed>()("StorageFailed", {
  operation: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `session storage failed during ${this.operation}: ${this.reason}`
  }
}

/**
 * The cluster configuration is unsafe or invalid; `field` names the offending
 * field (e.g. `shardLockExpiration`). Runner layers fail to build with it.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidClusterConfig extends Schema.TaggedError<InvalidClusterConfig>()("InvalidClusterConfig", {
  field: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `invalid cluster config: ${this.field}: ${this.reason}`
  }
}
