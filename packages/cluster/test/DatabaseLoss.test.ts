/**
 * A runner that loses the database (its connection blackholed, not closed)
 * while a handler of one of its sessions waits for a query: the runner must
 * tear the session's trees down before its shard lease expires, so that the
 * session is never hosted by a second runner while the first one's trees
 * still run. (A handler interrupted in a query used to wait for the driver to
 * cancel it, seconds on a dead link, and held the teardown past the lease.)
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Fiber, Layer, Scope } from "effect"
import type { Sharding } from "effect/cluster/Sharding"
import * as SqlClient from "effect/sql/SqlClient"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import * as Harness from "../demo/harness.ts"
import * as ClusterRunner from "../src/ClusterRunner.ts"
import * as SessionClient from "../src/SessionClient.ts"

const runId = globalThis.crypto.randomUUID().slice(0, 8)
const env = { SHEPHERD_CLUSTER_TEST: runId }
const lease = 6_000
const sleeper = ["sh", "-c", "trap '' TERM; sleep 1000 & wait"]

/** A TCP proxy to PostgreSQL that `cut` turns into a blackhole: connections stay open, nothing passes. */
const proxy = (target: number) =>
  Effect.acquireRelease(
    Effect.callback<{ readonly port: number; readonly cut: () => void; readonly close: () => void }>((resume) => {
      let cut = false
      const sockets = new Set<net.Socket>()
      const server = net.createServer((client) => {
        sockets.add(client)
        client.on("error", () => {})
        if (cut) return
        const upstream = net.connect(target, "127.0.0.1")
        sockets.add(upstream)
        upstream.on("error", () => {})
        client.on("data", (data) => cut || upstream.write(data))
        upstream.on("data", (data) => cut || client.write(data))
        client.on("close", () => cut || upstream.destroy())
        upstream.on("close", () => cut || client.destroy())
      })
      server.listen(0, "127.0.0.1", () =>
        resume(Effect.succeed({
          port: (server.address() as net.AddressInfo).port,
          cut: () => {
            cut = true
          },
          close: () => {
            for (const socket of sockets) socket.destroy()
            server.close()
          }
        })))
    }),
    (p) => Effect.sync(p.close)
  )

describe.skipIf(!Harness.postgresAvailable())("a runner that loses the database", () => {
  it.live("tears its sessions' trees down before another runner can host them", () =>
    Effect.gen(function*() {
      const pg = yield* Harness.postgres
      const database = { host: "127.0.0.1", port: pg.port }
      yield* ClusterRunner.migrate.pipe(Effect.provide(ClusterRunner.database(database)))
      const context = yield* Layer.buildWithScope(
        ClusterRunner.layerClient({ database, sharding: { shardLockExpiration: lease } }),
        yield* Scope.Scope
      )
      const sql = Context.get(context, SqlClient.SqlClient)
      const client = yield* SessionClient.make.pipe(Effect.provideContext(context as Context.Context<Sharding>))
      const link = yield* proxy(pg.port)
      const dir = yield* Effect.acquireRelease(
        Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-cluster-dbloss-"))),
        (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
      )
      // Runner 1 reaches the database through the proxy that will be cut; runner 2 directly.
      const [cut] = yield* Harness.startRunners(2, (i) => ({
        name: `cluster-${runId}-r${i}`,
        dbPort: i === 1 ? link.port : pg.port,
        ledger: path.join(dir, `runner-${i}.ledger`),
        graceMs: 300,
        forceWaitMs: 300,
        shardLockExpirationMs: lease,
        slots: 16
      }))
      yield* Harness.waitUntil(
        "the two runners to hold all shards",
        sql<{ n: string }>`SELECT count(DISTINCT address) AS n FROM cluster_locks`.pipe(
          Effect.map((rows) => Number(rows[0]!.n) === 2)
        )
      )
      const sessions = Array.from({ length: 8 }, (_, i) => `dbloss-${i}-${runId}`)
      yield* Effect.forEach(sessions, (s) => client.spawn(s, { argv: sleeper, env }, { spawnId: "a" }), {
        concurrency: "unbounded",
        discard: true
      })
      const statuses = yield* Effect.forEach(sessions, client.status, { concurrency: "unbounded" })
      const onCut = statuses.filter((s) => s.runner === cut.address).map((s) => s.session)
      assert.isAbove(onCut.length, 0)
      const trees = Harness.snapshot(`${cut.poolId}:`)
      assert.isAbove(trees.length, 0)

      link.cut()
      // Ask its sessions again and again: the asks reach the cut runner (their handlers wait for the
      // database) until another runner hosts them. Whoever answers from elsewhere must find the
      // cut runner's trees gone.
      let overlap = -1
      const ask = (session: string) =>
        client.status(session).pipe(
          Effect.timeout("3 seconds"),
          Effect.tap((status) =>
            Effect.sync(() => {
              if (status.runner !== cut.address && overlap < 0) overlap = Harness.stillAlive(trees).length
            })
          ),
          Effect.ignore,
          Effect.repeat({ until: () => overlap >= 0 })
        )
      const asking = yield* Effect.forkChild(Effect.forEach(onCut, ask, { concurrency: "unbounded", discard: true }))
      yield* Harness.waitUntil("a session of the cut runner to answer from the other", Effect.sync(() => overlap >= 0))
      yield* Fiber.interrupt(asking)
      assert.strictEqual(overlap, 0, "processes of the cut runner still ran when the other runner hosted its session")

      yield* Harness.sigkill(cut)
      yield* Harness.waitUntil(
        "the cut runner's trees to be gone",
        Effect.sync(() => Harness.stillAlive(trees).length === 0)
      )
      yield* Effect.forEach(sessions, (s) => Effect.ignore(client.close(s)), {
        concurrency: "unbounded",
        discard: true
      })
      assert.strictEqual(Harness.carriers(`cluster-${runId}-`).length, 0)
    }).pipe(Effect.scoped), { timeout: 120_000 })
})
