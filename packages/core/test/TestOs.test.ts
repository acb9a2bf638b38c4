/**
 * The simulated OS itself: trees, membership, signals, timers on the
 * TestClock, failures and introspection.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import type { Scope } from "effect"
import { ChildProcess } from "effect/process"
import { TestClock } from "effect/testing"
import { ProcessLauncher } from "../src/ProcessLauncher.ts"
import { ProcessTable } from "../src/ProcessTable.ts"
import { TestOs } from "../src/testing.ts"
import { errorOf, poll, valueOf } from "./utils.ts"

const withOs = <A, E>(
  os: TestOs.TestOs,
  body: (table: ProcessTable["Service"], launcher: ProcessLauncher["Service"]) => Effect.Effect<A, E, Scope.Scope>
) =>
  Effect.gen(function*() {
    return yield* body(yield* ProcessTable, yield* ProcessLauncher)
  }).pipe(Effect.provide(os.layer))

const launch = (launcher: ProcessLauncher["Service"], command: string, shepherdId: string, args: Array<string> = []) =>
  Effect.orDie(launcher.launch(ChildProcess.make(command, args), { SHEPHERD_ID: shepherdId, X: "1" }))

describe("TestOs", () => {
  it.effect("a tree has a leader, group members and escaped members, all found by members()", () => {
    const os = TestOs.make()
    os.define("tree", { children: 2, escapedChildren: 1, unkillable: 1 })
    return withOs(os, (table, launcher) =>
      Effect.gen(function*() {
        const a = yield* launch(launcher, "tree", "p:1", ["--a"])
        const b = yield* launch(launcher, "tree", "p:2")
        assert.strictEqual(a.pid, a.pgid)
        const roles = os.alive().filter((p) => p.shepherdId === "p:1").map((p) => p.role)
        assert.deepStrictEqual(roles, ["leader", "child", "child", "unkillable", "escaped"])
        const escaped = os.alive().find((p) => p.shepherdId === "p:1" && p.role === "escaped")!
        assert.notStrictEqual(escaped.pgid, a.pgid)
        const members = yield* table.members({ pgid: a.pgid, shepherdId: "p:1", leader: a.identity })
        assert.sameMembers(
          members.map((m) => m.pid),
          os.alive().filter((p) => p.shepherdId === "p:1").map((p) => p.pid)
        )
        assert.notInclude(members.map((m) => m.pid), b.pid)
        assert.strictEqual(os.process(a.pid)!.line, "tree --a")
        assert.deepStrictEqual(os.process(a.pid)!.env, { SHEPHERD_ID: "p:1", X: "1" })
        assert.deepStrictEqual(os.spawnOrder(), ["tree --a", "tree"])
      }))
  })

  it.effect("exit resolves when the exit time arrives; exitStatus is synchronous afterwards", () => {
    const os = TestOs.make()
    os.define("task", { exitAfterMs: 100, exitCode: 4 })
    return withOs(os, (_, launcher) =>
      Effect.gen(function*() {
        const p = yield* launch(launcher, "task", "p:1")
        const exit = yield* Effect.forkChild(p.exit)
        yield* TestClock.adjust(99)
        assert.isUndefined(yield* poll(exit))
        assert.isUndefined(p.exitStatus())
        yield* TestClock.adjust(1)
        assert.deepStrictEqual(valueOf(yield* poll(exit)), { code: 4, signal: null })
        assert.deepStrictEqual(p.exitStatus(), { code: 4, signal: null })
        assert.strictEqual(os.process(p.pid)!.exitedAt, 100)
        assert.deepStrictEqual(os.alive(), [])
      }))
  })

  it.effect("SIGKILL always kills; a dead or stale identity is gone and never signalled", () => {
    const os = TestOs.make()
    os.define("stubborn", { onTerm: "ignore" })
    return withOs(os, (table, launcher) =>
      Effect.gen(function*() {
        const p = yield* launch(launcher, "stubborn", "p:1")
        assert.strictEqual(yield* table.signal(p.identity, "SIGTERM"), "sent")
        assert.isTrue(yield* table.isAlive(p.identity))
        const stale = { ...p.identity, startTime: "999999" }
        assert.isFalse(yield* table.isAlive(stale))
        assert.strictEqual(yield* table.signal(stale, "SIGKILL"), "gone")
        assert.strictEqual(yield* table.signal(p.identity, "SIGKILL"), "sent")
        assert.deepStrictEqual(p.exitStatus(), { code: null, signal: "SIGKILL" })
        assert.strictEqual(yield* table.signal(p.identity, "SIGKILL"), "gone")
        assert.deepStrictEqual(os.signalsSent().map((s) => s.signal), ["SIGTERM", "SIGKILL"])
      }))
  })

  it.effect("a TERM handler exits after its delay with its code; a second TERM does not restart it", () => {
    const os = TestOs.make()
    os.define("handler", { onTerm: { exitAfterMs: 50, code: 143 } })
    return withOs(os, (table, launcher) =>
      Effect.gen(function*() {
        const p = yield* launch(launcher, "handler", "p:1")
        yield* table.signal(p.identity, "SIGTERM")
        yield* TestClock.adjust(30)
        yield* table.signal(p.identity, "SIGINT")
        yield* TestClock.adjust(20)
        assert.deepStrictEqual(p.exitStatus(), { code: 143, signal: null })
        assert.strictEqual(os.process(p.pid)!.exitedAt, 50)
      }))
  })

  it.effect("unkillable members survive SIGKILL until TestOs.exit", () => {
    const os = TestOs.make()
    os.define("stuck", { unkillable: 1 })
    return withOs(os, (table, launcher) =>
      Effect.gen(function*() {
        yield* launch(launcher, "stuck", "p:1")
        const stuck = os.alive().find((p) => p.role === "unkillable")!
        assert.strictEqual(yield* table.signal(stuck.identity, "SIGKILL"), "sent")
        assert.isTrue(yield* table.isAlive(stuck.identity))
        yield* os.exit(stuck.pid, { code: null, signal: "SIGKILL" })
        assert.isFalse(yield* table.isAlive(stuck.identity))
      }))
  })

  it.effect("failSpawn fails after the launch delay and creates nothing", () => {
    const os = TestOs.make({ launchDelay: "20 millis" })
    os.define("missing", { failSpawn: "NotFound" })
    return withOs(os, (_, launcher) =>
      Effect.gen(function*() {
        const fiber = yield* Effect.forkChild(launcher.launch(ChildProcess.make("missing", []), {}))
        yield* TestClock.adjust(0)
        assert.strictEqual(os.launching(), 1)
        assert.strictEqual(os.maxBusy(), 1)
        yield* TestClock.adjust(19)
        assert.isUndefined(yield* poll(fiber))
        yield* TestClock.adjust(1)
        const error = errorOf(yield* poll(fiber))
        assert.strictEqual(error._tag, "PlatformError")
        if (error._tag === "PlatformError") assert.strictEqual(error.reason._tag, "NotFound")
        assert.strictEqual(os.launching(), 0)
        assert.deepStrictEqual(os.processes(), [])
        assert.deepStrictEqual(os.spawnOrder(), ["missing"])
        assert.strictEqual(os.maxAlive(), 0)
      }))
  })

  it.effect("a behaviour's launchDelayMs overrides the OS-wide delay", () => {
    const os = TestOs.make({ launchDelay: 1000 })
    os.define("fast", { launchDelayMs: 5 })
    return withOs(os, (_, launcher) =>
      Effect.gen(function*() {
        const fiber = yield* Effect.forkChild(launch(launcher, "fast", "p:1"))
        yield* TestClock.adjust(5)
        const p = valueOf(yield* poll(fiber))
        assert.strictEqual(os.process(p.pid)!.startedAt, 5)
      }))
  })

  it.effect("carriers lists live processes by cookie prefix, optionally not before a start time", () => {
    const os = TestOs.make()
    os.define("tree", { escapedChildren: 1 })
    return withOs(os, (table, launcher) =>
      Effect.gen(function*() {
        const a = yield* launch(launcher, "tree", "pool-a:1")
        const b = yield* launch(launcher, "tree", "pool-a:2")
        yield* launch(launcher, "tree", "pool-b:1")
        const all = yield* table.carriers("pool-a:")
        assert.strictEqual(all.length, 4)
        assert.isTrue(all.every((c) => c.shepherdId.startsWith("pool-a:")))
        const later = yield* table.carriers("pool-a:", { notBefore: b.identity.startTime })
        assert.sameMembers([...new Set(later.map((c) => c.shepherdId))], ["pool-a:2"])
        yield* table.signal(a.identity, "SIGKILL")
        assert.strictEqual((yield* table.carriers("pool-a:1")).length, 1, "the escaped member still carries it")
        os.breakTable("EIO")
        const error = yield* Effect.flip(table.carriers("pool-a:"))
        assert.strictEqual(error.reason, "EIO")
      }))
  })

  it.effect("inspect reports parent, group, state, memory and command line of live processes", () => {
    const os = TestOs.make()
    os.define("tree", { children: 1, escapedChildren: 1, unkillable: 1, rssKiB: 2048 })
    return withOs(os, (table, launcher) =>
      Effect.gen(function*() {
        const leader = yield* launch(launcher, "tree", "p:1", ["-v"])
        const byRole = (role: TestOs.Role) => os.alive().find((p) => p.role === role)!
        const info = (p: TestOs.ProcessInfo) => table.inspect(p.identity)
        assert.deepStrictEqual(yield* info(byRole("leader")), {
          pid: leader.pid,
          ppid: TestOs.hostPid,
          pgid: leader.pid,
          state: "S",
          rssKiB: 2048,
          command: "tree -v"
        })
        const child = yield* info(byRole("child"))
        assert.deepStrictEqual([child?.ppid, child?.pgid], [leader.pid, leader.pid])
        const escaped = byRole("escaped")
        const escapedInfo = yield* info(escaped)
        assert.deepStrictEqual([escapedInfo?.ppid, escapedInfo?.pgid], [1, escaped.pid])
        assert.strictEqual((yield* info(byRole("unkillable")))?.state, "D")
        yield* table.signal(leader.identity, "SIGKILL")
        assert.isUndefined(yield* table.inspect(leader.identity))
      }))
  })

  it.effect("inheritedEnv returns a copy of the configurable host environment", () => {
    const os = TestOs.make({ env: { A: "1" } })
    return withOs(os, (_, launcher) =>
      Effect.sync(() => {
        const env = launcher.inheritedEnv() as Record<string, string | undefined>
        assert.deepStrictEqual(env, { A: "1" })
        env.A = "changed"
        assert.deepStrictEqual(launcher.inheritedEnv(), { A: "1" })
        os.setEnv({ B: "2" })
        assert.deepStrictEqual(launcher.inheritedEnv(), { B: "2" })
      }))
  })

  it.effect("maxAlive counts concurrently alive leaders only", () => {
    const os = TestOs.make()
    os.define("tree", { children: 3, exitAfterMs: 10 })
    return withOs(os, (_, launcher) =>
      Effect.gen(function*() {
        yield* launch(launcher, "tree", "p:1")
        yield* launch(launcher, "tree", "p:2")
        yield* TestClock.adjust(10)
        yield* launch(launcher, "tree", "p:3")
        assert.strictEqual(os.maxAlive(), 2)
        assert.strictEqual(os.alive().filter((p) => p.role === "leader").length, 1)
      }))
  })
})
