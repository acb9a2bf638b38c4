/**
 * The containment port in core (issue 12), over `TestOs`: without a
 * `Containment` service a pool reports the process group + cookie and refuses
 * limits naming the controller; with one, limits and session limits reach the
 * launcher, the status and each session's usage reach the doctor, and the
 * earlier hosts of the ledger are handed to `attach`; the ledger carries a
 * tree's cgroup (and old ledgers still parse); the force phase of a teardown
 * kills a container's cgroup and watches it empty.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Layer, Schema } from "effect"
import { ChildProcess } from "effect/process"
import { TestClock } from "effect/testing"
import * as Containment from "../src/Containment.ts"
import { terminate } from "../src/internal/terminate.ts"
import type { KillPolicy } from "../src/KillPolicy.ts"
import * as Ledger from "../src/Ledger.ts"
import { ProcessLauncher } from "../src/ProcessLauncher.ts"
import type { LaunchOptions } from "../src/ProcessLauncher.ts"
import { ProcessPool } from "../src/ProcessPool.ts"
import { type Container, ProcessTable } from "../src/ProcessTable.ts"
import { TestOs } from "../src/testing.ts"
import { cmd, poll, valueOf, withPool } from "./utils.ts"

const cgroup: Containment.CgroupRef = { path: "/sys/fs/cgroup/shepherd-x/s-a/t-1", dev: "38", ino: "4242" }

describe("containment port", () => {
  it.effect("without a Containment service: process group + cookie, said so; limits are refused", () =>
    withPool(TestOs.make(), { name: "c" }, (pool) =>
      Effect.gen(function*() {
        assert.strictEqual(pool.containment.kind, "process-group")
        assert.strictEqual(pool.containment.requested, "auto")
        assert.include(pool.containment.reason, "no Containment service")
        const error = yield* Effect.flip(pool.spawn(cmd("sleep"), { limits: { pidsMax: 10 } }))
        assert.strictEqual(error._tag, "LimitUnavailable")
        if (error._tag === "LimitUnavailable") {
          assert.strictEqual(error.controller, "pids")
          assert.strictEqual(error.limit, "pids.max")
          assert.strictEqual(error.session, "default")
        }
        const session = yield* Effect.flip(pool.session("s", { limits: { memoryMax: "max" } }))
        assert.strictEqual(session._tag, "LimitUnavailable")
        const invalid = yield* Effect.flip(pool.spawn(cmd("sleep"), { limits: { cpuMax: "half" } }))
        assert.strictEqual(invalid._tag, "SpawnError")
        if (invalid._tag === "SpawnError") assert.strictEqual(invalid.kind, "InvalidLimits")
        assert.strictEqual((yield* pool.stats).inUse, 0)
        const doctor = yield* pool.doctor
        assert.deepStrictEqual(doctor.containment, pool.containment)
      })))

  it.effect("with a Containment service: limits reach the launcher, status and usage reach the doctor", () => {
    const os = TestOs.make()
    const seen: Array<LaunchOptions | undefined> = []
    const attached: Array<{ poolId: string; recover: ReadonlyArray<string> | undefined }> = []
    const status: Containment.Status = {
      kind: "cgroup",
      requested: "cgroup",
      reason: "a test double",
      cgroup: { base: "/b", source: "configured", placement: "wrapper", pool: "/b/p", controllers: ["pids"] }
    }
    const containment = Layer.succeed(
      Containment.Containment,
      Containment.Containment.of({
        attach: (poolId, options) =>
          Effect.sync(() => {
            attached.push({ poolId, recover: options.recover })
            return {
              status,
              // Only pids is available.
              checkLimits: (limits) =>
                Containment.entries(limits).filter((e) => e.controller !== "pids").map((e) => ({
                  controller: e.controller,
                  limit: e.file,
                  reason: "missing"
                }))[0],
              usage: (session) =>
                Effect.succeed({ cgroup: `/b/p/s-${session}`, processes: 1, unavailable: ["memory", "cpu"] })
            }
          })
      })
    )
    // A launcher that records what the pool told it.
    const recording = Layer.effect(
      ProcessLauncher,
      Effect.map(ProcessLauncher, (base) =>
        ProcessLauncher.of({
          inheritedEnv: base.inheritedEnv,
          launch: (command, env, options) => {
            seen.push(options)
            return Effect.map(base.launch(command, env, options), (launched) => ({ ...launched, cgroup }))
          }
        }))
    )
    return Effect.gen(function*() {
      const pool = yield* ProcessPool
      assert.deepStrictEqual(pool.containment, status)
      assert.deepStrictEqual(attached, [{ poolId: pool.poolId, recover: [] }])
      const session = yield* pool.session("limited", { limits: { pidsMax: 20 } })
      const m = yield* session.spawn(cmd("sleep"), { limits: { pidsMax: 5 } })
      assert.deepStrictEqual(seen.map((o) => [o?.session, o?.limits, o?.sessionLimits]), [
        ["limited", { pidsMax: 5 }, { pidsMax: 20 }]
      ])
      assert.strictEqual(seen[0]?.shepherdId, m.shepherdId)
      const refused = yield* Effect.flip(session.spawn(cmd("sleep"), { limits: { memoryMax: 1024 } }))
      assert.strictEqual(refused._tag, "LimitUnavailable")
      const doctor = yield* pool.doctor
      const entry = doctor.sessions.find((s) => s.id === "limited")!
      assert.deepStrictEqual(entry.limits, { pidsMax: 20 })
      assert.deepStrictEqual(entry.usage, { cgroup: "/b/p/s-limited", processes: 1, unavailable: ["memory", "cpu"] })
      assert.strictEqual(entry.processes[0]?.cgroup, cgroup.path)
      yield* TestClock.adjust(0)
      const fiber = yield* Effect.forkChild(pool.shutdown)
      yield* TestClock.adjust(60_000)
      yield* Fiber.join(fiber)
    }).pipe(
      Effect.scoped,
      Effect.provide(
        ProcessPool.layer({ name: "c" }).pipe(
          Layer.provide(Layer.mergeAll(recording.pipe(Layer.provideMerge(os.layer)), containment))
        )
      )
    )
  })

  it("ledger records carry a tree's cgroup; records without one (older ledgers) still parse", () => {
    const line = Schema.encodeSync(Ledger.LedgerLine)({
      _tag: "Registered",
      shepherdId: "p:1",
      pgid: 10,
      identity: { pid: 10, startTime: "5", bootId: "b" },
      cgroup,
      at: 1
    })
    const back = Schema.decodeUnknownSync(Ledger.LedgerLine)(line)
    assert.deepStrictEqual(back._tag === "Registered" ? back.cgroup : undefined, cgroup)
    const old = Schema.decodeUnknownSync(Ledger.LedgerLine)(
      `{"_tag":"Registered","shepherdId":"p:1","pgid":10,"identity":{"pid":10,"startTime":"5","bootId":"b"},"at":1}`
    )
    assert.isTrue(old._tag === "Registered" && old.cgroup === undefined)
    const state = new Ledger.State()
    state.apply({ _tag: "Intent", poolId: "p", shepherdId: "p:1", session: "s", command: "c", at: 1 })
    state.apply(back)
    assert.deepStrictEqual(state.live.get("p:1")?.cgroup, cgroup)
    assert.deepStrictEqual(Ledger.containerOf(state.live.get("p:1")!, "b").cgroup, cgroup)
    const replayed = new Ledger.State()
    for (const r of state.compacted()) replayed.apply(r)
    assert.deepStrictEqual(replayed.live.get("p:1")?.cgroup, cgroup)
    assert.isUndefined(Ledger.containerOf({ shepherdId: "p:2" }, "b").cgroup)
  })
})

describe("teardown with a container's cgroup", () => {
  const policy: KillPolicy = { signal: "SIGTERM", graceMs: 5000, forceWaitMs: 1000 }

  it.effect("the force phase kills the cgroup once; a tree with members besides its leader is watched", () => {
    const os = TestOs.make()
    os.define("stubborn", { onTerm: "ignore", children: 1 })
    return Effect.gen(function*() {
      const base = yield* ProcessTable
      const launcher = yield* ProcessLauncher
      const killed: Array<string> = []
      let watches = 0
      let stops = 0
      const table = ProcessTable.of({
        ...base,
        killContainer: (container: Container) =>
          Effect.sync(() => {
            killed.push(container.shepherdId)
            return true
          }),
        watchEmpty: () => {
          watches++
          return () => {
            stops++
          }
        }
      })
      const launched = yield* Effect.orDie(
        launcher.launch(ChildProcess.make("stubborn", []), { SHEPHERD_ID: "t:1" })
      )
      const fiber = yield* Effect.forkChild(terminate({
        table,
        container: { pgid: launched.pgid, shepherdId: "t:1", leader: launched.identity, cgroup },
        policy,
        leader: { exitStatus: launched.exitStatus, exit: launched.exit },
        hurry: yield* Deferred.make<void>()
      }))
      yield* TestClock.adjust(4999)
      assert.isUndefined(yield* poll(fiber))
      assert.deepStrictEqual(killed, [])
      assert.strictEqual(watches, 1)
      yield* TestClock.adjust(1)
      const r = valueOf(yield* poll(fiber))
      assert.strictEqual(r.outcome._tag, "Forced")
      assert.deepStrictEqual(killed, ["t:1"])
      assert.strictEqual(stops, 1, "the watch is stopped when the teardown ends")
    }).pipe(Effect.provide(os.layer))
  })

  it.effect("a container without a cgroup is never killed through one", () => {
    const os = TestOs.make()
    os.define("stubborn", { onTerm: "ignore" })
    return Effect.gen(function*() {
      const base = yield* ProcessTable
      const launcher = yield* ProcessLauncher
      let calls = 0
      const table = ProcessTable.of({
        ...base,
        killContainer: () => Effect.sync(() => ++calls > 0),
        watchEmpty: () => {
          calls++
          return () => {}
        }
      })
      const launched = yield* Effect.orDie(launcher.launch(ChildProcess.make("stubborn", []), { SHEPHERD_ID: "t:1" }))
      const fiber = yield* Effect.forkChild(terminate({
        table,
        container: { pgid: launched.pgid, shepherdId: "t:1", leader: launched.identity },
        policy,
        leader: { exitStatus: launched.exitStatus, exit: launched.exit },
        hurry: yield* Deferred.make<void>()
      }))
      yield* TestClock.adjust(6000)
      assert.strictEqual(valueOf(yield* poll(fiber)).outcome._tag, "Forced")
      assert.strictEqual(calls, 0)
    }).pipe(Effect.provide(os.layer))
  })
})
