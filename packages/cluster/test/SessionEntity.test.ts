/**
 * `@shepherd/cluster` on real processes: a private PostgreSQL server, three
 * runner processes, a client in the test. Sessions spawn process trees;
 * retries spawn nothing twice; unknown sessions and malformed commands get
 * typed errors; a SIGKILLed runner's trees die (its lifeline) and its
 * sessions answer from the other runners with those trees `Lost`.
 *
 * Every child carries `SHEPHERD_CLUSTER_TEST=<run id>` and a `SHEPHERD_ID`
 * starting with `cluster-<run id>-`; the last check (and the layer's
 * finalizer, even after a failure) asserts none survives. No wall-clock bound
 * is asserted: the waits are hang guards only.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import { Context, Effect, Exit, Fiber, Layer, Option, Scope, Stream } from "effect"
import type { Sharding } from "effect/cluster/Sharding"
import * as SqlClient from "effect/sql/SqlClient"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Harness from "../demo/harness.ts"
import * as ClusterConfig from "../src/ClusterConfig.ts"
import * as ClusterRunner from "../src/ClusterRunner.ts"
import * as SessionClient from "../src/SessionClient.ts"

const runId = globalThis.crypto.randomUUID().slice(0, 8)
const env = { SHEPHERD_CLUSTER_TEST: runId }
const grace = 300
const forceWait = 300
const lease = 6_000
const sleeper = ["sh", "-c", "trap '' TERM; sleep 1000 & wait"]

/** Pids of live processes of this run: by SHEPHERD_ID prefix or by marker. */
const survivors = (): Array<number> => {
  const out = new Set(Harness.carriers(`cluster-${runId}-`).map((p) => p.pid))
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "latin1")
      if (stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) === "Z") continue
      if (fs.readFileSync(`/proc/${entry}/environ`, "latin1").split("\0").includes(`SHEPHERD_CLUSTER_TEST=${runId}`)) {
        out.add(Number(entry))
      }
    } catch {
      // gone, or not ours to read
    }
  }
  return [...out]
}

class Cluster extends Context.Service<Cluster, {
  readonly client: SessionClient.SessionClient
  readonly runners: ReadonlyArray<Harness.RunnerProcess>
}>()("test/Cluster") {}

const clusterLayer = Layer.effect(
  Cluster,
  Effect.gen(function*() {
    // Registered first, so it runs last: after the runners and PostgreSQL are stopped, nothing of
    // this run may be left (and whatever is left is reported).
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        const left = survivors()
        if (left.length > 0) throw new Error(`processes of run ${runId} survive: ${left.join(", ")}`)
      })
    )
    const pg = yield* Harness.postgres
    const database = { host: "127.0.0.1", port: pg.port }
    yield* ClusterRunner.migrate.pipe(Effect.provide(ClusterRunner.database(database)))
    const scope = yield* Scope.Scope
    const context = yield* Layer.buildWithScope(
      ClusterRunner.layerClient({ database, sharding: { shardLockExpiration: lease } }),
      scope
    )
    const dir = yield* Effect.acquireRelease(
      Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-cluster-test-"))),
      (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
    )
    const runners = yield* Harness.startRunners(3, (i) => ({
      name: `cluster-${runId}-r${i}`,
      dbPort: pg.port,
      ledger: path.join(dir, `runner-${i}.ledger`),
      graceMs: grace,
      forceWaitMs: forceWait,
      shardLockExpirationMs: lease,
      slots: 16
    }))
    const sql = Context.get(context, SqlClient.SqlClient)
    yield* Harness.waitUntil(
      "the three runners to hold all shards",
      sql<{ address: string; n: string }>`SELECT address, count(*) AS n FROM cluster_locks GROUP BY address`.pipe(
        Effect.map((rows) => rows.length === 3 && rows.reduce((sum, row) => sum + Number(row.n), 0) === 300)
      )
    )
    const client = yield* SessionClient.make.pipe(Effect.provideContext(context as Context.Context<Sharding>))
    return Cluster.of({ client, runners })
  })
)

describe("ClusterConfig", () => {
  const kill = { signal: "SIGTERM" as const, graceMs: 1_000, forceWaitMs: 1_000 }

  it.effect("a shard lease shorter than twice the refresh interval plus the lifeline bound is refused", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(ClusterConfig.validate(kill, {
        shardLockExpiration: "5 seconds",
        shardLockRefreshInterval: "10 seconds",
        shardLockDisableAdvisory: true
      }))
      assert.strictEqual(error._tag, "InvalidClusterConfig")
      assert.strictEqual(error.field, "shardLockExpiration")
      // 3 s bound + 2 × 5/3 s: refused; 9 s (2 × 3 s + 3 s) is the least that passes.
      yield* ClusterConfig.validate(kill, {
        shardLockExpiration: "9 seconds",
        shardLockRefreshInterval: "10 seconds",
        shardLockDisableAdvisory: true
      })
      assert.strictEqual(ClusterConfig.lifelineBoundMs(kill), 3_000)
    }))

  it.effect("a refresh interval that is not a positive duration, or an endless lease, is refused", () =>
    Effect.gen(function*() {
      const cases: ReadonlyArray<Record<string, unknown>> = [
        { shardLockExpiration: "1 millis", shardLockRefreshInterval: -10_000 },
        { shardLockExpiration: "60 seconds", shardLockRefreshInterval: 0 },
        { shardLockExpiration: "60 seconds", shardLockRefreshInterval: "soon" },
        { shardLockExpiration: "Infinity", shardLockRefreshInterval: "1 second" }
      ]
      for (const timing of cases) {
        const error = yield* Effect.flip(
          ClusterConfig.validate(kill, { ...timing, shardLockDisableAdvisory: true } as ClusterConfig.LockTiming)
        )
        assert.strictEqual(error._tag, "InvalidClusterConfig", JSON.stringify(timing))
      }
    }))

  it.effect("advisory locks are refused: they end with the dead holder's connection", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(ClusterConfig.validate(kill, {
        shardLockExpiration: "60 seconds",
        shardLockRefreshInterval: "1 second",
        shardLockDisableAdvisory: false
      }))
      assert.strictEqual(error.field, "shardLockDisableAdvisory")
    }))

  it.effect("a runner layer with an unsafe lease fails to build with the typed error, before it connects", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(
        Layer.build(ClusterRunner.layer({
          host: "127.0.0.1",
          port: 1,
          database: { host: "127.0.0.1", port: 1 },
          pool: { kill: { grace: "5 seconds", forceWait: "1 second" }, ledger: false },
          sharding: { shardLockExpiration: "10 seconds" }
        })).pipe(Effect.scoped)
      )
      assert.isTrue(Exit.isFailure(exit))
      const error = Exit.isFailure(exit) ? Option.getOrUndefined(Exit.findErrorOption(exit)) : undefined
      assert.strictEqual((error as { _tag?: string } | undefined)?._tag, "InvalidClusterConfig")
      assert.strictEqual((error as { field?: string } | undefined)?.field, "shardLockExpiration")
    }))
})

const available = Harness.postgresAvailable()
if (!available) {
  console.warn("SessionEntity cluster tests skipped: PostgreSQL binaries not found (apt-get install -y postgresql)")
}

describe.skipIf(!available)("SessionEntity across three runners (skipped without PostgreSQL binaries)", () => {
  layer(clusterLayer, { excludeTestServices: true, timeout: "120 seconds" })((it) => {
    it.effect("unknown sessions and malformed commands get typed errors", () =>
      Effect.gen(function*() {
        const { client } = yield* Cluster
        const unknown = yield* Effect.flip(client.status(`never-${runId}`))
        assert.strictEqual(unknown._tag, "SessionNotFound")
        const unknownClose = yield* Effect.flip(client.close(`never-${runId}`))
        assert.strictEqual(unknownClose._tag, "SessionNotFound")
        for (
          const command of [
            { argv: [] },
            { argv: [""] },
            { argv: "sh" },
            { argv: ["sh"], kill: { graceMs: -1 } },
            // NUL cannot reach the OS nor PostgreSQL; `=` would end a variable's name.
            { argv: ["echo", "a\u0000b"] },
            { argv: ["true"], cwd: "/tmp\u0000x" },
            { argv: ["true"], env: { X: "a\u0000b" } },
            { argv: ["true"], env: { "A=B": "1" } },
            { argv: ["true"], env: { "": "1" } }
          ]
        ) {
          const malformed = yield* Effect.flip(client.spawn(`bad-${runId}`, command))
          assert.strictEqual(malformed._tag, "MalformedCommand", JSON.stringify(command))
        }
        // Checked by the runner: a grace longer than the one the shard lease was sized for.
        const tooSlow = yield* Effect.flip(
          client.spawn(`bad-${runId}`, { argv: sleeper, env, kill: { graceMs: 60_000 } })
        )
        assert.strictEqual(tooSlow._tag, "MalformedCommand")
        const missing = yield* Effect.flip(client.spawn(`bad-${runId}`, { argv: [`/nonexistent/${runId}`], env }))
        assert.strictEqual(missing._tag, "SpawnFailed")
        const status = yield* client.status(`bad-${runId}`)
        assert.deepStrictEqual(status.trees.map((t) => t.state), ["Failed"])
        // Ids PostgreSQL cannot store: typed errors at once (the session's entity used to fail to
        // start, retried without end).
        const nulSpawnId = yield* Effect.flip(
          client.spawn(`bad-${runId}`, { argv: ["true"], env }, { spawnId: "a\u0000" })
        )
        assert.strictEqual(nulSpawnId._tag, "MalformedCommand")
        const nulSession = yield* Effect.flip(client.spawn(`nul\u0000${runId}`, { argv: ["true"], env }))
        assert.strictEqual(nulSession._tag, "MalformedCommand")
        const nulStatus = yield* Effect.flip(client.status(`nul\u0000${runId}`)).pipe(Effect.timeout("30 seconds"))
        assert.strictEqual(nulStatus._tag, "SessionNotFound")
      }))

    it.effect("a retried Spawn returns the first result and spawns nothing", () =>
      Effect.gen(function*() {
        const { client } = yield* Cluster
        const session = `retry-${runId}`
        const first = yield* client.spawn(session, { argv: sleeper, env }, { spawnId: "only-once" })
        assert.strictEqual(first.state, "Running")
        const tree = () => Harness.carriers(`${first.shepherdId}`).filter((p) => p.shepherdId === first.shepherdId)
        // One tree on the OS: its leader and the sleep it forks.
        yield* Harness.waitUntil("the tree's sleep", Effect.sync(() => tree().length === 2))
        const second = yield* client.spawn(session, { argv: sleeper, env }, { spawnId: "only-once" })
        assert.strictEqual(second.pid, first.pid)
        assert.strictEqual(second.shepherdId, first.shepherdId)
        const status = yield* client.status(session)
        assert.strictEqual(status.trees.length, 1)
        // Still the one tree.
        assert.strictEqual(tree().length, 2)
        const closed = yield* client.close(session)
        assert.strictEqual(closed.state, "Closed")
        assert.deepStrictEqual(closed.trees.map((t) => t.state), ["Ended"])
        assert.strictEqual(tree().length, 0)
        const refused = yield* Effect.flip(client.spawn(session, { argv: sleeper, env }))
        assert.strictEqual(refused._tag, "SessionClosed")
      }))

    it.effect("Output streams a tree's retained and live lines; unknown trees and sessions get typed errors", () =>
      Effect.gen(function*() {
        const { client } = yield* Cluster
        const session = `output-${runId}`
        const script = "echo one; echo two >&2; sleep 0.5; echo three; trap '' TERM; sleep 1000 & wait"
        yield* client.spawn(session, { argv: ["sh", "-c", script], env }, { spawnId: "talker" })
        const lines = yield* client.output(session, "talker").pipe(Stream.take(3), Stream.runCollect)
        assert.deepStrictEqual([...lines].slice(0, 2).sort(), ["one", "two"])
        assert.strictEqual([...lines][2], "three")
        // A second reader gets the retained lines again.
        const again = yield* client.output(session, "talker").pipe(Stream.take(3), Stream.runCollect)
        assert.deepStrictEqual([...again].sort(), ["one", "three", "two"])
        const unknownTree = yield* client.output(session, "nobody").pipe(Stream.runCollect, Effect.flip)
        assert.strictEqual(unknownTree._tag, "OutputUnavailable")
        const unknownSession = yield* client.output(`never-${runId}`, "x").pipe(Stream.runCollect, Effect.flip)
        assert.strictEqual(unknownSession._tag, "SessionNotFound")
        // Closing the session ends the stream of a reader that is still waiting.
        const reader = yield* client.output(session, "talker").pipe(Stream.runCollect, Effect.forkChild)
        yield* client.close(session)
        const all = yield* Fiber.join(reader).pipe(Effect.timeout("60 seconds"))
        assert.deepStrictEqual([...all].sort(), ["one", "three", "two"])
      }))

    it.effect("a SIGKILLed runner's trees die and its sessions answer elsewhere, reporting them Lost", () =>
      Effect.gen(function*() {
        const { client, runners } = yield* Cluster
        const sessions = Array.from({ length: 6 }, (_, i) => `moving-${i}-${runId}`)
        yield* Effect.forEach(sessions, (s) => client.spawn(s, { argv: sleeper, env }, { spawnId: "a" }), {
          concurrency: "unbounded",
          discard: true
        })
        const before = yield* Effect.forEach(sessions, client.status, { concurrency: "unbounded" })
        const count = (r: Harness.RunnerProcess) => before.filter((s) => s.runner === r.address).length
        const victim = runners.reduce((a, b) => count(b) > count(a) ? b : a)
        const moved = before.filter((s) => s.runner === victim.address)
        assert.isAbove(moved.length, 0)
        assert.isAbove(Harness.carriers(`${victim.poolId}:`).length, 0)

        yield* Harness.sigkill(victim)
        yield* Harness.waitUntil(
          "the killed runner's trees to be gone",
          Effect.sync(() => Harness.carriers(`${victim.poolId}:`).length === 0)
        )
        const after = yield* Effect.forEach(moved, (s) => client.status(s.session), { concurrency: "unbounded" }).pipe(
          Effect.timeout("60 seconds")
        )
        for (const status of after) {
          assert.notStrictEqual(status.runner, victim.address)
          assert.deepStrictEqual(status.trees.map((t) => t.state), ["Lost"])
          assert.strictEqual(status.trees[0]!.runner, victim.address)
        }
        // The sessions go on: a new tree starts on the new runner.
        const fresh = yield* client.spawn(moved[0]!.session, { argv: sleeper, env }, { spawnId: "b" })
        assert.strictEqual(fresh.state, "Running")
        assert.notStrictEqual(fresh.runner, victim.address)
        const closed = yield* Effect.forEach(sessions, client.close, { concurrency: "unbounded" })
        assert.isTrue(closed.every((s) => s.state === "Closed" && s.trees.every((t) => t.state !== "Running")))
      }))

    it.effect("a runner stopped with SIGTERM hands its sessions over with their trees' reports (Ended, not Lost)", () =>
      Effect.gen(function*() {
        const { client, runners } = yield* Cluster
        const alive = runners.filter((r) => r.child.exitCode === null && r.child.signalCode === null)
        assert.isAbove(alive.length, 1)
        const sessions = Array.from({ length: 6 }, (_, i) => `handover-${i}-${runId}`)
        yield* Effect.forEach(sessions, (s) => client.spawn(s, { argv: sleeper, env }, { spawnId: "a" }), {
          concurrency: "unbounded",
          discard: true
        })
        const before = yield* Effect.forEach(sessions, client.status, { concurrency: "unbounded" })
        const count = (r: Harness.RunnerProcess) => before.filter((s) => s.runner === r.address).length
        const leaving = alive.reduce((a, b) => count(b) > count(a) ? b : a)
        const moved = before.filter((s) => s.runner === leaving.address)
        assert.isAbove(moved.length, 0)
        leaving.child.kill("SIGTERM")
        yield* Effect.callback<void>((resume) => {
          if (leaving.child.exitCode !== null || leaving.child.signalCode !== null) return resume(Effect.void)
          leaving.child.once("exit", () => resume(Effect.void))
        }).pipe(Effect.timeout("60 seconds"))
        assert.strictEqual(Harness.carriers(`${leaving.poolId}:`).length, 0)
        const after = yield* Effect.forEach(moved, (s) => client.status(s.session), { concurrency: "unbounded" }).pipe(
          Effect.timeout("60 seconds")
        )
        for (const status of after) {
          assert.notStrictEqual(status.runner, leaving.address)
          assert.deepStrictEqual(status.trees.map((t) => t.state), ["Ended"])
          assert.include(["Graceful", "Forced"], status.trees[0]!.outcome)
        }
        yield* Effect.forEach(sessions, client.close, { concurrency: "unbounded", discard: true })
      }))

    it.effect("nothing of this run is left but the runners' own processes", () =>
      Effect.sync(() => assert.deepStrictEqual(survivors(), [])))
  })
})
