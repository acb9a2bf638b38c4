/**
 * Adversarial (second round): the sweep of a spawn whose answer is lost.
 *
 * `NodeHelperLauncher.sweep(cookie)` believes a lost tree is gone once two
 * looks 20 ms apart find nothing carrying its cookie. Two ways to be carried
 * past that:
 *
 * - a child of the helper shows the *helper's* environment from its fork until
 *   its execve() installs the new one. libuv searches PATH in the child, one
 *   failed execve() per entry, before that: a slow PATH (an automounted or hung
 *   network directory; here symlink chains) keeps the child there for a second
 *   while the helper, blocked in uv_spawn() until the exec, cannot answer. The
 *   host kills the helper, the sweep sees nothing twice, the spawn fails, and
 *   then the tree starts with the cookie, unknown to the pool.
 * - a leader that scrubs its environment (`exec env -i ...`) carries no
 *   cookie at all: without its pid (the lost answer) nothing finds it, not the
 *   sweep, not the reaper. Forked by the host, its pid is never lost and its
 *   process group contains it.
 * - the reaper, the backstop for such a tree, reads each process's cookie once
 *   and remembers it (start time and cookie never change). Only the host's own
 *   children are exempt (they show the host's environment until they exec);
 *   the helper's are not: a tick that meets the child before its exec
 *   remembers it without a cookie, and no later tick finds the tree.
 *
 * Real processes; no timing assertion (the second in PATH only widens the
 * window; the test waits until the child has left it, however long it takes).
 */
import { afterAll, afterEach, assert, beforeAll, describe, it } from "@effect/vitest"
import { ProcessLauncher } from "@shepherd/core/ProcessLauncher"
import { ProcessPool } from "@shepherd/core/ProcessPool"
import * as ShepherdConfig from "@shepherd/core/ShepherdConfig"
import * as NodeContainment from "@shepherd/node/NodeContainment"
import * as NodeHelperLauncher from "@shepherd/node/NodeHelperLauncher"
import * as NodeProcessTable from "@shepherd/node/NodeProcessTable"
import { Effect, Fiber, Layer } from "effect"
import * as ChildProcess from "effect/process/ChildProcess"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { cleanupPools, eventually, sh, show, usePool } from "./harness.ts"
import { isAlive, processes, readEnvVar, survivors } from "./support.ts"

afterEach(cleanupPools)

const kill = { grace: "300 millis", forceWait: "500 millis" } as const
/** Marks this file's helper and its pre-exec children (they show the helper's environment). */
const mark = `adv2-fh-${process.pid}-${Math.random().toString(36).slice(2)}`
let dir = ""
/** PATH entries that each cost a failed execve() of a few ms: 39 symlinks of 1900 `./` each, then nothing. */
let slowPath = ""

beforeAll(() => {
  process.env.ADV2_FH_MARK = mark
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "adv2-fh-"))
  fs.mkdirSync(path.join(dir, "c"))
  const dots = "./".repeat(1900)
  for (let i = 0; i < 39; i++) {
    fs.symlinkSync(dots + (i === 38 ? "none" : `l${i + 1}`), path.join(dir, "c", `l${i}`))
  }
  fs.symlinkSync(path.join(dir, "c", "l0"), path.join(dir, "q"))
  slowPath = Array(400).fill(path.join(dir, "q")).join(":") + ":/usr/bin:/bin"
})
afterAll(() => {
  delete process.env.ADV2_FH_MARK
  for (const p of processes()) {
    if (p.cmdline.startsWith("sleep 1000.7")) signal(p.pid, "SIGKILL")
  }
  if (dir !== "") fs.rmSync(dir, { recursive: true, force: true })
})

const signal = (pid: number, sig: NodeJS.Signals) => {
  try {
    process.kill(pid, sig)
  } catch {
    // gone
  }
}

/** This host's fork helpers. */
const helpers = () => processes().filter((p) => p.ppid === process.pid && p.cmdline.includes("forkHelper"))
/** Forks of this file's helpers that have not exec'd yet (they still show the helper's command line). */
const preExec = () =>
  processes().filter((p) =>
    p.ppid !== process.pid && p.cmdline.includes("forkHelper") && readEnvVar(p.pid, "ADV2_FH_MARK") === mark
  )
const running = (marker: string) =>
  processes().filter((p) => p.cmdline === `sleep ${marker}` && p.state !== "Z" && p.state !== "X")

const layer = (name: string) =>
  Layer.unwrap(
    Effect.map(
      ShepherdConfig.resolve({ name, kill, containment: "process-group" }),
      (config) =>
        ProcessPool.layerResolved(config).pipe(Layer.provide(Layer.mergeAll(
          NodeProcessTable.layer,
          NodeContainment.layer(config).pipe(
            Layer.provide(Layer.effect(ProcessLauncher, NodeHelperLauncher.make({ answerWithinMs: 200 })))
          )
        )))
    )
  )

describe("adversarial fork helper, round 2: the lost tree's sweep", () => {
  it.live("a child still searching PATH when its helper is killed: the failed spawn leaves no carrier of its cookie", () => {
    let helper: number | undefined
    return usePool(layer("adv2-fh-path"), (pool, prefix) =>
      Effect.gen(function*() {
        yield* Effect.scoped(pool.spawn(sh("exit 0")))
        helper = helpers()[0]?.pid
        assert.isDefined(helper)
        const result = yield* Effect.result(pool.spawn(
          ChildProcess.make("sleep", ["1000.71"], { env: { PATH: slowPath }, extendEnv: true })
        ))
        assert.strictEqual(result._tag, "Failure", "the helper was blocked in uv_spawn(): no answer")
        yield* eventually("the helper to be killed", () => !isAlive(helper!))
        // However long the PATH search takes: once the child has exec'd (or died) it is judged.
        yield* eventually("the helper's fork to leave execve()", () => preExec().length === 0)
        assert.deepStrictEqual(running("1000.71").map(show), [], "the tree of the failed spawn runs")
        assert.deepStrictEqual(survivors(prefix).map(show), [], "a carrier of the pool's cookie runs")
      })).pipe(Effect.ensuring(Effect.sync(() => {
        if (helper !== undefined) signal(helper, "SIGKILL")
        for (const p of running("1000.71")) signal(p.pid, "SIGKILL")
      })))
  })

  it.live("a lost leader that scrubs its environment (exec env -i): the failed spawn leaves it running, found by nothing", () => {
    let helper: number | undefined
    return usePool(layer("adv2-fh-envi"), (pool) =>
      Effect.gen(function*() {
        yield* Effect.scoped(pool.spawn(sh("exit 0")))
        helper = helpers()[0]?.pid
        assert.isDefined(helper)
        const result = yield* Effect.result(pool.spawn(ChildProcess.make("sh", ["-c", "exec env -i sleep 1000.72"], {
          env: { PATH: slowPath },
          extendEnv: true
        })))
        assert.strictEqual(result._tag, "Failure")
        yield* eventually("the helper's fork to leave execve()", () => preExec().length === 0)
        yield* eventually(
          "the lost leader's own exec",
          () => !processes().some((p) => p.cmdline.includes("exec env -i sleep 1000.72"))
        )
        assert.deepStrictEqual(running("1000.72").map(show), [], "the lost leader runs, without a cookie")
      })).pipe(Effect.ensuring(Effect.sync(() => {
        if (helper !== undefined) signal(helper, "SIGKILL")
        for (const p of running("1000.72")) signal(p.pid, "SIGKILL")
      })))
  })

  it.live("a reaper tick that meets the helper's child before its exec: a later tick still finds the tree", () => {
    let helper: number | undefined
    return usePool(layer("adv2-fh-reap"), (pool, prefix) =>
      Effect.gen(function*() {
        yield* Effect.scoped(pool.spawn(sh("exit 0")))
        helper = helpers()[0]?.pid
        assert.isDefined(helper)
        const spawn = yield* Effect.forkChild(Effect.result(pool.spawn(
          ChildProcess.make("sleep", ["1000.73"], { env: { PATH: slowPath }, extendEnv: true })
        )))
        yield* eventually("the helper's fork, before its exec", () => preExec().length > 0)
        if (process.env.ADV2_CONTROL === undefined) yield* pool.reapNow
        const result = yield* Fiber.join(spawn)
        assert.strictEqual(result._tag, "Failure")
        yield* eventually("the helper's fork to leave execve()", () => preExec().length === 0)
        yield* pool.reapNow
        assert.deepStrictEqual(running("1000.73").map(show), [], "the reaper did not find the lost tree")
        assert.deepStrictEqual(survivors(prefix).map(show), [])
      })).pipe(Effect.ensuring(Effect.sync(() => {
        if (helper !== undefined) signal(helper, "SIGKILL")
        for (const p of running("1000.73")) signal(p.pid, "SIGKILL")
      })))
  })
})
