/**
 * The doctor's three-way comparison (pool vs ledger vs OS) and the metrics
 * after a known workload, on the in-memory OS.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Metric } from "effect"
import { Ledger } from "../src/Ledger.ts"
import * as Metrics from "../src/Metrics.ts"
import { ProcessLauncher } from "../src/ProcessLauncher.ts"
import { ProcessPool } from "../src/ProcessPool.ts"
import { TestOs } from "../src/testing.ts"
import { cmd, settleValue } from "./utils.ts"

const host = { pid: 1, startTime: "1", bootId: "test-boot" }

const withLedgerPool = <A, E>(
  os: TestOs.TestOs,
  body: (pool: ProcessPool["Service"]) => Effect.Effect<A, E, Ledger | ProcessLauncher>
) =>
  Effect.gen(function*() {
    const pool = yield* ProcessPool
    const result = yield* body(pool)
    yield* settleValue(pool.shutdown)
    return result
  }).pipe(
    Effect.provide(
      ProcessPool.layer({ name: "t-doctor", reapInterval: "1 hour", kill: { grace: 1000, forceWait: 500 } }).pipe(
        Layer.provideMerge(Layer.mergeAll(os.layer, Ledger.layerMemory({ host })))
      )
    )
  )

describe("doctor", () => {
  it.effect("compares pool, ledger and OS: untracked carriers, stale entries, vanished trees", () =>
    Effect.gen(function*() {
      const os = TestOs.make({ env: { PATH: "/bin", SECRET_TOKEN: "hunter2" } })
      os.define("worker", { onTerm: "exit", children: 1 })
      const report = yield* withLedgerPool(os, (pool) =>
        Effect.gen(function*() {
          const kept = yield* pool.spawn(cmd("worker"), { session: "alpha" })
          const lost = yield* pool.spawn(cmd("worker"), { session: "beta" })
          // An untracked tree: it carries the pool's cookie but the pool never spawned it.
          const launcher = yield* ProcessLauncher
          const planted = yield* launcher.launch(cmd("worker"), { SHEPHERD_ID: `${pool.poolId}:999` })
          // A stale entry: the ledger lists it, the pool does not track it.
          const ledger = yield* Ledger
          yield* ledger.append({
            _tag: "Intent",
            poolId: pool.poolId,
            shepherdId: `${pool.poolId}:888`,
            session: "ghost",
            command: "ghost",
            at: 0
          })
          // A vanished tree: its processes are gone but the pool was never told.
          yield* os.vanish(lost.pid)
          for (const p of os.alive().filter((p) => p.shepherdId === lost.shepherdId)) yield* os.vanish(p.pid)
          const report = yield* pool.doctor
          yield* os.exit(planted.pid)
          return { report, kept, lost }
        }).pipe(Effect.scoped))
      const { kept, lost, report: r } = report
      assert.deepStrictEqual(r.comparison.untracked.map((u) => u.shepherdId), [
        `t-doctor~${r.pool.poolId.split("~")[1]}:999`
      ])
      assert.deepStrictEqual(r.comparison.stale.map((s) => [s.shepherdId, s.alive]), [[`${r.pool.poolId}:888`, []]])
      assert.deepStrictEqual(r.comparison.vanished, [{ shepherdId: lost.shepherdId, pid: lost.pid }])
      assert.deepStrictEqual(r.comparison.unrecorded, [])
      // The tracked, healthy tree is shown with its members.
      const alpha = r.sessions.find((s) => s.id === "alpha")!
      assert.strictEqual(alpha.processes[0]!.shepherdId, kept.shepherdId)
      assert.strictEqual(alpha.processes[0]!.members.length, 2)
      assert.strictEqual(alpha.processes[0]!.state, "running")
      assert.deepStrictEqual(r.slots, { total: 4, inUse: 2, free: 2, waiting: 0, longestWaitMs: 0 })
      assert.strictEqual(r.ledger?.live, 3)
      assert.strictEqual(r.reaper.intervalMs, 3_600_000)
      // Names only, never values.
      assert.strictEqual(alpha.processes[0]!.env.inherited, 2)
      assert.notInclude(JSON.stringify(r), "hunter2")
    }))
})

describe("metrics", () => {
  it.effect("count spawns, exits by outcome, failures and teardown durations of a known workload", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      os.define("quick", { exitAfterMs: 10, exitCode: 3 })
      os.define("polite", { onTerm: "exit" })
      os.define("stubborn", { onTerm: "ignore" })
      os.define("missing", { failSpawn: "NotFound" })
      const poolId = yield* withLedgerPool(os, (pool) =>
        Effect.gen(function*() {
          const quick = yield* pool.spawn(cmd("quick"))
          yield* settleValue(quick.awaitTeardown)
          yield* pool.spawn(cmd("polite"))
          yield* pool.spawn(cmd("stubborn"))
          yield* Effect.flip(pool.spawn(cmd("missing")))
          yield* settleValue(pool.closeSession("default"))
          return pool.poolId
        }).pipe(Effect.scoped))
      const at = (metric: Metric.Metric<any, any>, attributes: Record<string, string> = {}) =>
        Metric.value(Metric.withAttributes(metric, { pool: poolId, ...attributes }))
      assert.strictEqual((yield* at(Metrics.spawned)).count, 3)
      assert.strictEqual((yield* at(Metrics.exited, { outcome: "Exited" })).count, 1)
      assert.strictEqual((yield* at(Metrics.exited, { outcome: "Graceful" })).count, 1)
      assert.strictEqual((yield* at(Metrics.exited, { outcome: "Forced" })).count, 1)
      assert.strictEqual((yield* at(Metrics.spawnFailures, { reason: "SpawnError" })).count, 1)
      assert.strictEqual((yield* at(Metrics.running)).value, 0)
      const teardowns = yield* at(Metrics.teardownDuration)
      assert.strictEqual(teardowns.count, 3)
      assert.isAtLeast(teardowns.max, 1000, "the forced teardown lasted the grace")
      // Intent + Registered + Exited per spawned tree, Intent + Exited for the failed spawn, HostStarted/Stopped.
      assert.strictEqual((yield* at(Metrics.ledgerEvents)).count, 3 * 3 + 2 + 2)
    }))
})
