/**
 * `TreeStore`: the records a session's trees leave in the cluster's SQL
 * database (PostgreSQL through `@effect/sql-pg`). They outlive the runner that
 * spawned the trees, so that a session re-homed after its runner died reports
 * those trees as `Lost` instead of forgetting them, and so that a retried
 * `Spawn` (same client-generated `spawnId`) returns the first result instead
 * of spawning again.
 *
 * Two tables (created by `migrate`, idempotent):
 * `shepherd_cluster_sessions` (one row per session: open or closed, its
 * current owner) and `shepherd_cluster_trees` (one row per spawn, keyed by
 * session and `spawnId`).
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as SqlClient from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { StorageFailed } from "./ClusterError.ts"

/**
 * Where a tree stands:
 * - `Starting`: the spawn was recorded, the OS spawn not yet confirmed;
 * - `Running`: alive under the runner that hosts the session now;
 * - `Ended`: torn down or exited; `outcome` is the teardown report's tag;
 * - `Lost`: its runner died (or lost its shard) before a report was written:
 *   the runner's lifeline ended the tree, nobody wrote down how;
 * - `Failed`: the spawn was refused (`detail` says why).
 *
 * @since 0.1.0
 * @category models
 */
export const TreeState = Schema.Literals(["Starting", "Running", "Ended", "Lost", "Failed"])

/**
 * @since 0.1.0
 * @category models
 */
export type TreeState = typeof TreeState.Type

/**
 * One spawn of a session, as stored and as `Status`/`Spawn` return it.
 *
 * @since 0.1.0
 * @category models
 */
export class TreeRecord extends Schema.Class<TreeRecord>("@shepherd/cluster/TreeRecord")({
  session: Schema.String,
  spawnId: Schema.String,
  argv: Schema.Array(Schema.String),
  state: TreeState,
  /** The runner (host:port) that spawned the tree. */
  runner: Schema.String,
  runnerPid: Schema.Int,
  poolId: Schema.NullOr(Schema.String),
  /** The `SHEPHERD_ID` every member of the tree carries. */
  shepherdId: Schema.NullOr(Schema.String),
  pid: Schema.NullOr(Schema.Int),
  /** The teardown report's tag (`Exited`, `Graceful`, `Forced`, ...), `Lost` or `SpawnFailed`. */
  outcome: Schema.NullOr(Schema.String),
  detail: Schema.NullOr(Schema.String),
  /** Epoch milliseconds. */
  createdAt: Schema.Number,
  endedAt: Schema.NullOr(Schema.Number)
}) {}

/**
 * Who hosts a session now: the runner's address and pid, and a random id of
 * this activation of the session's entity.
 *
 * @since 0.1.0
 * @category models
 */
export interface Owner {
  readonly runner: string
  readonly runnerPid: number
  readonly incarnation: string
}

/**
 * @since 0.1.0
 * @category models
 */
export type SessionState = "Open" | "Closed"

/**
 * @since 0.1.0
 * @category services
 */
export class TreeStore extends Context.Service<TreeStore, {
  /** Marks the session's unfinished trees of earlier activations `Lost`; records `owner` as its host. Returns how many. */
  readonly adopt: (session: string, owner: Owner, at: number) => Effect.Effect<number, StorageFailed>
  readonly sessionState: (session: string) => Effect.Effect<Option.Option<SessionState>, StorageFailed>
  readonly openSession: (session: string, owner: Owner, at: number) => Effect.Effect<void, StorageFailed>
  readonly closeSession: (session: string, at: number) => Effect.Effect<void, StorageFailed>
  readonly find: (session: string, spawnId: string) => Effect.Effect<Option.Option<TreeRecord>, StorageFailed>
  /** Records a spawn before it happens; `false` when `spawnId` was recorded already. */
  readonly insertIntent: (
    session: string,
    spawnId: string,
    argv: ReadonlyArray<string>,
    owner: Owner,
    at: number
  ) => Effect.Effect<boolean, StorageFailed>
  readonly markRunning: (
    session: string,
    spawnId: string,
    facts: { readonly pid: number; readonly poolId: string; readonly shepherdId: string }
  ) => Effect.Effect<void, StorageFailed>
  /** Records how a tree ended (only while it is `Starting` or `Running`). */
  readonly markEnded: (
    session: string,
    spawnId: string,
    state: "Ended" | "Failed",
    outcome: string,
    detail: string,
    at: number
  ) => Effect.Effect<void, StorageFailed>
  readonly list: (session: string) => Effect.Effect<ReadonlyArray<TreeRecord>, StorageFailed>
}>()("@shepherd/cluster/TreeStore") {
  /**
   * The store on the `SqlClient` in context. Does not migrate (see `migrate`).
   *
   * @since 0.1.0
   * @category layers
   */
  static readonly layer: Layer.Layer<TreeStore, never, SqlClient.SqlClient> = Layer.effect(
    TreeStore,
    Effect.gen(function*() {
      return make(yield* SqlClient.SqlClient, yield* Effect.scope)
    })
  )
}

/**
 * Creates the tables if they do not exist. Run it once before the runners
 * start (see `ClusterRunner.migrate`): concurrent DDL from several runners
 * starting at once is what the migration race is made of.
 *
 * @since 0.1.0
 * @category migrations
 */
export const migrate: Effect.Effect<void, SqlError, SqlClient.SqlClient> = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE IF NOT EXISTS shepherd_cluster_sessions (
    session_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    runner TEXT NOT NULL,
    runner_pid INTEGER NOT NULL,
    incarnation TEXT NOT NULL,
    opened_at BIGINT NOT NULL,
    closed_at BIGINT
  )`
  yield* sql`CREATE TABLE IF NOT EXISTS shepherd_cluster_trees (
    session_id TEXT NOT NULL,
    spawn_id TEXT NOT NULL,
    argv TEXT NOT NULL,
    state TEXT NOT NULL,
    runner TEXT NOT NULL,
    runner_pid INTEGER NOT NULL,
    incarnation TEXT NOT NULL,
    pool_id TEXT,
    shepherd_id TEXT,
    pid INTEGER,
    outcome TEXT,
    detail TEXT,
    created_at BIGINT NOT NULL,
    ended_at BIGINT,
    PRIMARY KEY (session_id, spawn_id)
  )`
})

const fail = (operation: string) => (error: SqlError) =>
  new StorageFailed({ operation, reason: error.message || String(error.reason) })

const num = (value: unknown): number | null => value === null || value === undefined ? null : Number(value)
const str = (value: unknown): string | null => value === null || value === undefined ? null : String(value)

const toRecord = (row: Record<string, unknown>): TreeRecord =>
  new TreeRecord({
    session: String(row.session_id),
    spawnId: String(row.spawn_id),
    argv: JSON.parse(String(row.argv)) as Array<string>,
    state: row.state as TreeState,
    runner: String(row.runner),
    runnerPid: Number(row.runner_pid),
    poolId: str(row.pool_id),
    shepherdId: str(row.shepherd_id),
    pid: num(row.pid),
    outcome: str(row.outcome),
    detail: str(row.detail),
    createdAt: Number(row.created_at),
    endedAt: num(row.ended_at)
  })

/**
 * Runs a statement on a fiber of the store's scope and waits for it
 * interruptibly. A handler interrupted while the database does not answer (its
 * runner lost the database and is stopping its sessions) stops at once: it
 * does not wait for the driver to cancel the statement and drain the
 * connection (seconds on a dead link), which would hold the session's
 * teardown, and its trees, past the shard lease (see ClusterConfig). The
 * statement itself is interrupted in the background.
 */
const detached = (scope: Scope.Scope) => <A, E>(statement: Effect.Effect<A, E>): Effect.Effect<A, E> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(
      Effect.forkIn(statement, scope, { startImmediately: true }),
      (fiber) =>
        restore(Fiber.join(fiber)).pipe(
          Effect.onInterrupt(() => Effect.asVoid(Effect.forkIn(Fiber.interrupt(fiber), scope)))
        )
    )
  )

function make(sql: SqlClient.SqlClient, scope: Scope.Scope): TreeStore["Service"] {
  const store = makeUnbounded(sql)
  const d = detached(scope)
  return {
    adopt: (session, owner, at) => d(store.adopt(session, owner, at)),
    sessionState: (session) => d(store.sessionState(session)),
    openSession: (session, owner, at) => d(store.openSession(session, owner, at)),
    closeSession: (session, at) => d(store.closeSession(session, at)),
    find: (session, spawnId) => d(store.find(session, spawnId)),
    insertIntent: (session, spawnId, argv, owner, at) => d(store.insertIntent(session, spawnId, argv, owner, at)),
    markRunning: (session, spawnId, facts) => d(store.markRunning(session, spawnId, facts)),
    markEnded: (session, spawnId, state, outcome, detail, at) =>
      d(store.markEnded(session, spawnId, state, outcome, detail, at)),
    list: (session) => d(store.list(session))
  }
}

function makeUnbounded(sql: SqlClient.SqlClient): TreeStore["Service"] {
  return {
    adopt: (session, owner, at) =>
      Effect.gen(function*() {
        const lost = yield* sql`UPDATE shepherd_cluster_trees
        SET state = 'Lost', outcome = 'Lost', ended_at = ${at},
          detail = 'its runner ' || runner || ' (pid ' || runner_pid || ') stopped hosting the session before the tree was reported gone'
        WHERE session_id = ${session} AND incarnation <> ${owner.incarnation} AND state IN ('Starting', 'Running')
        RETURNING spawn_id`
        yield* sql`UPDATE shepherd_cluster_sessions
        SET runner = ${owner.runner}, runner_pid = ${owner.runnerPid}, incarnation = ${owner.incarnation}
        WHERE session_id = ${session}`
        return lost.length
      }).pipe(sql.withTransaction, Effect.mapError(fail("adopt"))),
    sessionState: (session) =>
      sql`SELECT state FROM shepherd_cluster_sessions WHERE session_id = ${session}`.pipe(
        Effect.map((rows) => rows.length === 0 ? Option.none() : Option.some(rows[0]!.state as SessionState)),
        Effect.mapError(fail("sessionState"))
      ),
    openSession: (session, owner, at) =>
      sql`INSERT INTO shepherd_cluster_sessions (session_id, state, runner, runner_pid, incarnation, opened_at)
      VALUES (${session}, 'Open', ${owner.runner}, ${owner.runnerPid}, ${owner.incarnation}, ${at})
      ON CONFLICT (session_id) DO NOTHING`.pipe(Effect.asVoid, Effect.mapError(fail("openSession"))),
    closeSession: (session, at) =>
      sql`UPDATE shepherd_cluster_sessions SET state = 'Closed', closed_at = ${at} WHERE session_id = ${session}`.pipe(
        Effect.asVoid,
        Effect.mapError(fail("closeSession"))
      ),
    find: (session, spawnId) =>
      sql`SELECT * FROM shepherd_cluster_trees WHERE session_id = ${session} AND spawn_id = ${spawnId}`.pipe(
        Effect.map((rows) => rows.length === 0 ? Option.none() : Option.some(toRecord(rows[0]!))),
        Effect.mapError(fail("find"))
      ),
    insertIntent: (session, spawnId, argv, owner, at) =>
      sql`INSERT INTO shepherd_cluster_trees
      (session_id, spawn_id, argv, state, runner, runner_pid, incarnation, created_at)
      VALUES (${session}, ${spawnId}, ${JSON.stringify(argv)}, 'Starting', ${owner.runner}, ${owner.runnerPid},
        ${owner.incarnation}, ${at})
      ON CONFLICT (session_id, spawn_id) DO NOTHING
      RETURNING spawn_id`.pipe(Effect.map((rows) => rows.length === 1), Effect.mapError(fail("insertIntent"))),
    markRunning: (session, spawnId, facts) =>
      sql`UPDATE shepherd_cluster_trees
      SET state = 'Running', pid = ${facts.pid}, pool_id = ${facts.poolId}, shepherd_id = ${facts.shepherdId}
      WHERE session_id = ${session} AND spawn_id = ${spawnId} AND state = 'Starting'`.pipe(
        Effect.asVoid,
        Effect.mapError(fail("markRunning"))
      ),
    markEnded: (session, spawnId, state, outcome, detail, at) =>
      sql`UPDATE shepherd_cluster_trees
      SET state = ${state}, outcome = ${outcome}, detail = ${detail}, ended_at = ${at}
      WHERE session_id = ${session} AND spawn_id = ${spawnId} AND state IN ('Starting', 'Running')`.pipe(
        Effect.asVoid,
        Effect.mapError(fail("markEnded"))
      ),
    list: (session) =>
      sql`SELECT * FROM shepherd_cluster_trees WHERE session_id = ${session} ORDER BY created_at, spawn_id`.pipe(
        Effect.map((rows) => rows.map(toRecord)),
        Effect.mapError(fail("list"))
      )
  }
}
