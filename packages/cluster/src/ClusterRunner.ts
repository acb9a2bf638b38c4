/**
 * Runner and client layers: a runner process hosts one `ProcessPool` (with
 * its ledger and lifeline, `NodeShepherd.layer`) and the `SessionEntity`,
 * joins the cluster over TCP sockets (`effect/cluster` SocketRunner) and keeps
 * shard leases, messages and session records in PostgreSQL
 * (`@effect/sql-pg`). A client joins without hosting entities.
 *
 * @since 0.1.0
 */
import * as NodeClusterSocket from "@effect/platform-node/NodeClusterSocket"
import * as NodeCrypto from "@effect/platform-node/NodeCrypto"
import * as PgClient from "@effect/sql-pg/PgClient"
import type { ProcessPool } from "@shepherd/core/ProcessPool"
import * as ShepherdConfig from "@shepherd/core/ShepherdConfig"
import type { ContainmentUnavailable, InvalidConfig } from "@shepherd/core/ShepherdError"
import type { LedgerError, LedgerLocked } from "@shepherd/core/Ledger"
import * as NodeShepherd from "@shepherd/node/NodeShepherd"
import type * as MessageStorage from "effect/cluster/MessageStorage"
import * as RunnerAddress from "effect/cluster/RunnerAddress"
import * as RunnerHealth from "effect/cluster/RunnerHealth"
import * as Runners from "effect/cluster/Runners"
import type { Sharding } from "effect/cluster/Sharding"
import * as ShardingConfig from "effect/cluster/ShardingConfig"
import * as SocketRunner from "effect/cluster/SocketRunner"
import * as SqlMessageStorage from "effect/cluster/SqlMessageStorage"
import * as SqlRunnerStorage from "effect/cluster/SqlRunnerStorage"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as RpcSerialization from "effect/rpc/RpcSerialization"
import type { SocketServerError } from "effect/socket/SocketServer"
import type * as SqlClient from "effect/sql/SqlClient"
import type { MigrationError } from "effect/sql/Migrator"
import type { SqlError } from "effect/sql/SqlError"
import { InvalidClusterConfig } from "./ClusterError.ts"
import * as ClusterConfig from "./ClusterConfig.ts"
import * as SessionEntity from "./SessionEntity.ts"
import * as TreeStore from "./TreeStore.ts"

/**
 * Where the PostgreSQL database is.
 *
 * @since 0.1.0
 * @category models
 */
export interface DatabaseOptions {
  readonly host: string
  readonly port: number
  readonly database?: string | undefined
  readonly username?: string | undefined
  readonly password?: string | undefined
}

/**
 * The effect/cluster timing Shepherd runners use unless told otherwise: lease
 * rows only (no advisory locks, see `ClusterConfig`), and quick detection of a
 * dead runner (a health ping every 2 s, assignments and unprocessed messages
 * looked at every second). The lease (`shardLockExpiration`, 35 s by default)
 * must suit the pool's kill policy: `ClusterConfig.validate`.
 *
 * @since 0.1.0
 * @category models
 */
export const shardingDefaults: Partial<ShardingConfig.ShardingConfig["Service"]> = {
  shardLockDisableAdvisory: true,
  runnerHealthCheckInterval: "2 seconds",
  refreshAssignmentsInterval: "1 second",
  entityMessagePollInterval: "1 second"
}

/**
 * A runner's options.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunnerOptions {
  /** The address other runners and clients reach this runner at. */
  readonly host: string
  readonly port: number
  /** Where to listen, when it differs from `host` (e.g. `0.0.0.0`). */
  readonly listenHost?: string | undefined
  readonly database: DatabaseOptions
  /** The runner's pool (slots, kill policy, ledger, ...). Its lifeline must stay on. */
  readonly pool?: ShepherdConfig.ShepherdConfig | undefined
  /** effect/cluster settings over `shardingDefaults`. */
  readonly sharding?: Partial<ShardingConfig.ShardingConfig["Service"]> | undefined
}

/**
 * The SQL client for the cluster's database.
 *
 * @since 0.1.0
 * @category layers
 */
export const database = (options: DatabaseOptions): Layer.Layer<SqlClient.SqlClient, SqlError> =>
  PgClient.layer({
    host: options.host,
    port: options.port,
    database: options.database ?? "postgres",
    username: options.username ?? "postgres",
    ...(options.password === undefined ? {} : { password: Redacted.make(options.password) }),
    applicationName: "@shepherd/cluster"
  })

/**
 * Creates every table (effect/cluster's messages, runners and shard leases,
 * and the session records) once. Run it before starting several runners at
 * once: their own migrations then find nothing to do.
 *
 * @since 0.1.0
 * @category migrations
 */
export const migrate: Effect.Effect<void, SqlError | MigrationError, SqlClient.SqlClient> = Effect.gen(function*() {
  yield* SqlMessageStorage.migrations()
  yield* SqlRunnerStorage.migrations({})
  yield* TreeStore.migrate
})

const transport = (config: ShardingConfig.ShardingConfig["Service"], clientOnly: boolean) => {
  const runner: Layer.Layer<Sharding | Runners.Runners, SocketServerError, any> = clientOnly
    ? Layer.provide(SocketRunner.layerClientOnly, NodeClusterSocket.layerClientProtocol)
    : Layer.provide(SocketRunner.layer, [NodeClusterSocket.layerSocketServer, NodeClusterSocket.layerClientProtocol])
  const health = clientOnly ? Layer.empty : RunnerHealth.layerPing.pipe(
    Layer.provide(Runners.layerRpc),
    Layer.provide(NodeClusterSocket.layerClientProtocol)
  )
  return runner.pipe(
    Layer.provide(health),
    Layer.provideMerge(SqlMessageStorage.layer.pipe(Layer.provide(NodeCrypto.layerDigest))),
    Layer.provide(Layer.orDie(SqlRunnerStorage.layer)),
    Layer.provide(ShardingConfig.layer(config)),
    Layer.provide(RpcSerialization.layerSchemaBinary())
  ) as Layer.Layer<Sharding | Runners.Runners | MessageStorage.MessageStorage, SocketServerError, SqlClient.SqlClient>
}

/**
 * A runner: the pool, the entity, the cluster transport and the database.
 * Fails with `InvalidClusterConfig` naming the field when the shard lease
 * does not outlast the pool's lifeline bound (see `ClusterConfig`).
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: RunnerOptions
): Layer.Layer<
  ProcessPool | Sharding,
  | InvalidClusterConfig
  | InvalidConfig
  | LedgerError
  | LedgerLocked
  | ContainmentUnavailable
  | SqlError
  | SocketServerError
> =>
  Layer.unwrap(Effect.gen(function*() {
    const pool = yield* ShepherdConfig.resolve(options.pool ?? {})
    const sharding: ShardingConfig.ShardingConfig["Service"] = {
      ...ShardingConfig.defaults,
      ...shardingDefaults,
      runnerAddress: Option.some(RunnerAddress.make(options.host, options.port)),
      runnerListenAddress: options.listenHost === undefined
        ? Option.none()
        : Option.some(RunnerAddress.make(options.listenHost, options.port)),
      ...options.sharding
    }
    yield* ClusterConfig.validate(pool.kill, sharding)
    if (!pool.lifeline) {
      return yield* new InvalidClusterConfig({
        field: "pool.lifeline",
        reason: "must stay on: a SIGKILLed runner's trees are ended by its lifeline"
      })
    }
    const entity = SessionEntity.layer.pipe(Layer.provide(TreeStore.TreeStore.layer))
    return Layer.provideMerge(entity, Layer.mergeAll(NodeShepherd.layerResolved(pool), transport(sharding, false)))
      .pipe(Layer.provide(database(options.database)))
  }))

/**
 * A client: sends messages to sessions wherever they live; hosts none.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerClient = (
  options: { readonly database: DatabaseOptions; readonly sharding?: Partial<ShardingConfig.ShardingConfig["Service"]> }
): Layer.Layer<Sharding | SqlClient.SqlClient, SqlError | SocketServerError> =>
  transport(
    { ...ShardingConfig.defaults, ...shardingDefaults, runnerAddress: Option.none(), ...options.sharding },
    true
  ).pipe(Layer.provideMerge(database(options.database)))
