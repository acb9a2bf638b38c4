/**
 * `SessionClient`: the client side of `SessionEntity`. It checks a command
 * before it goes on the wire (a malformed one fails with `MalformedCommand`),
 * gives each spawn an id (so that retrying it never spawns twice), finds
 * each session wherever the cluster placed it, and sends a request again when
 * its session moved while it ran.
 *
 * @since 0.1.0
 */
import type {
  AlreadyProcessingMessage,
  EntityNotAssignedToRunner,
  MailboxFull,
  PersistenceError
} from "effect/cluster/ClusterError"
import type { Sharding } from "effect/cluster/Sharding"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import type * as Stream from "effect/Stream"
import {
  MalformedCommand,
  type OutputUnavailable,
  type SessionClosed,
  type SessionNotFound,
  type SpawnFailed,
  type StorageFailed
} from "./ClusterError.ts"
import { Command, SessionEntity, type SessionStatus } from "./SessionEntity.ts"
import type { TreeRecord } from "./TreeStore.ts"

/**
 * The errors of the cluster transport (the session's runner is gone or busy).
 *
 * @since 0.1.0
 * @category errors
 */
export type TransportError = MailboxFull | AlreadyProcessingMessage | PersistenceError | EntityNotAssignedToRunner

/**
 * @since 0.1.0
 * @category models
 */
export interface SessionClient {
  /**
   * Spawns `command` (decoded from unknown input) in `session`, opening the
   * session if needed. Pass the same `spawnId` when retrying: the first
   * result comes back and nothing is spawned again.
   */
  readonly spawn: (
    session: string,
    command: unknown,
    options?: { readonly spawnId?: string | undefined }
  ) => Effect.Effect<TreeRecord, MalformedCommand | SessionClosed | SpawnFailed | StorageFailed | TransportError>
  /** The session's trees (those of earlier runners included: `Lost` when their runner died). */
  readonly status: (session: string) => Effect.Effect<SessionStatus, SessionNotFound | StorageFailed | TransportError>
  /**
   * The tree's output lines (stdout and stderr merged): the last 1000, then
   * the live ones until its output ends. Not resent when the session moves.
   */
  readonly output: (
    session: string,
    spawnId: string
  ) => Stream.Stream<string, SessionNotFound | OutputUnavailable | TransportError>
  /** Tears the session's trees down and closes it. */
  readonly close: (session: string) => Effect.Effect<SessionStatus, SessionNotFound | StorageFailed | TransportError>
}

const decodeCommand = Schema.decodeUnknownEffect(Command)

/**
 * A request whose session moved while it ran (its entity was stopped on the
 * old runner) ends as an interruption that is not ours: send it again, up to
 * 10 times. Safe for every message: `Spawn` carries its id, `Close` and
 * `Status` are idempotent. An interruption of the caller itself is not caught.
 */
const resend = <A, E>(request: Effect.Effect<A, E>, attempt = 0): Effect.Effect<A, E> =>
  Effect.catchCause(
    request,
    (cause) =>
      attempt < 10 && Cause.hasInterruptsOnly(cause)
        ? Effect.delay(resend(request, attempt + 1), "200 millis")
        : Effect.failCause(cause)
  )

/**
 * Makes a client (needs the cluster's `Sharding`, e.g. `ClusterRunner.layerClient`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<SessionClient, never, Sharding> = Effect.gen(function*() {
  const clientFor = yield* SessionEntity.client
  return {
    spawn: (session, command, options) =>
      Effect.gen(function*() {
        if (session.includes("\u0000")) {
          return yield* new MalformedCommand({ reason: "the session id must not contain NUL (\\u0000)" })
        }
        const decoded = yield* decodeCommand(command).pipe(
          Effect.mapError((error) => new MalformedCommand({ reason: error.message }))
        )
        const spawnId = options?.spawnId ?? globalThis.crypto.randomUUID()
        if (spawnId === "" || spawnId.includes("\u0000")) {
          return yield* new MalformedCommand({ reason: "spawnId must be non-empty, without NUL (\\u0000)" })
        }
        return yield* resend(clientFor(session).Spawn({ spawnId, command: decoded }))
      }),
    status: (session) => resend(clientFor(session).Status()),
    output: (session, spawnId) => clientFor(session).Output({ spawnId }),
    close: (session) => resend(clientFor(session).Close())
  }
})
