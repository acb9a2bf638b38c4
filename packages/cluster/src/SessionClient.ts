/**
 * `SessionClient`: the client side of `SessionEntity`. It checks a command
 * before it goes on the wire (a malformed one fails with `MalformedCommand`),
 * gives each spawn an id (so that retrying it never spawns twice), and finds
 * each session wherever the cluster placed it.
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
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import {
  MalformedCommand,
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
  /** Tears the session's trees down and closes it. */
  readonly close: (session: string) => Effect.Effect<SessionStatus, SessionNotFound | StorageFailed | TransportError>
}

const decodeCommand = Schema.decodeUnknownEffect(Command)

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
        const decoded = yield* decodeCommand(command).pipe(
          Effect.mapError((error) => new MalformedCommand({ reason: error.message }))
        )
        const spawnId = options?.spawnId ?? globalThis.crypto.randomUUID()
        return yield* clientFor(session).Spawn({ spawnId, command: decoded })
      }),
    status: (session) => clientFor(session).Status(),
    close: (session) => clientFor(session).Close()
  }
})
