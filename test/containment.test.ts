/**
 * Containment on real processes (issue 12): under cgroup v2 containment the
 * `env -i` escape shapes (see escapeShapes.ts) leave 0 survivors when their
 * session closes, when the host gets SIGTERM, when it is SIGKILLed (the
 * lifeline; and, without one, the restarted host's recovery) and with
 * `shepherd run`; the doctor says which containment is in force and why; the
 * wrapper hands commands exactly their environment; limits that cannot be
 * applied fail with a typed error naming the controller; the process group +
 * cookie fallback is chosen and reported where asked for.
 *
 * Every test child carries a marker in its command line (the shapes clear
 * their environment): survivors are looked up by it, and SIGKILLed after each
 * test whatever happened. Tests that need a usable cgroup v2 base, or a
 * controller, are skipped with the reason in their title where there is none.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import * as ProcessLauncher from "@shepherd/core/ProcessLauncher"
import { ProcessPool } from "@shepherd/core/ProcessPool"
import * as ShepherdConfig from "@shepherd/core/ShepherdConfig"
import * as NodeContainment from "@shepherd/node/NodeContainment"
import * as NodeProcessLauncher from "@shepherd/node/NodeProcessLauncher"
import * as NodeProcessTable from "@shepherd/node/NodeProcessTable"
import { Effect, Exit, Layer, Stream } from "effect"
import { ChildProcess } from "effect/process"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as readline from "node:readline"
import { fileURLToPath } from "node:url"
import * as Cgroup from "../packages/node/src/internal/cgroup.ts"
import { escapeShapes, type Mark, marked, markedSleeps, newMark, sigkillMarked } from "./escapeShapes.ts"
import { eventually, track, usePool, withPool } from "./harness.ts"
import { isAlive, processes, readEnvVar, type ProcInfo, waitUntil } from "./support.ts"

const detection = Cgroup.detectUnsafe()
const usable = detection._tag === "Usable" ? detection : undefined
const noCgroups = usable === undefined
const skipped = noCgroups
  ? ` (skipped: cgroup v2 is not usable here: ${detection._tag === "Unusable" ? detection.reason : ""})`
  : ""
const kill = { grace: "200 millis", forceWait: "1 second" } as const
const quiet = { stdin: "ignore", stdout: "ignore", stderr: "ignore" } as const
const bin = fileURLToPath(new URL("../packages/cli/src/bin.ts", import.meta.url))
const escapeHost = fileURLToPath(new URL("./fixtures/escapeHost.ts", import.meta.url))

const show = (p: ProcInfo) => `pid ${p.pid} ppid ${p.ppid} pgid ${p.pgid}: ${p.cmdline}`

/** Marks and directories of the running test: marked processes SIGKILLed, directories removed, whatever happened. */
const marks: Array<Mark> = []
const dirs: Array<string> = []
const hosts: Array<NodeChildProcess.ChildProcess> = []
const mark = () => {
  const m = newMark()
  marks.push(m)
  return m
}
const tempDir = () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-containment-"))
  dirs.push(dir)
  return dir
}
afterEach(async () => {
  for (const host of hosts.splice(0)) {
    if (host.exitCode === null && host.signalCode === null) host.kill("SIGKILL")
  }
  for (const m of marks.splice(0)) {
    sigkillMarked(m)
    await waitUntil(() => marked(m).length === 0)
  }
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true })
})

const shell = (script: string, m: Mark, options: ChildProcess.CommandOptions = quiet) =>
  ChildProcess.make("sh", ["-c", script, m.sh], options)

const assertNoMarked = (m: Mark, what: string) => assert.deepStrictEqual(marked(m).map(show), [], what)

/** The pool's cgroup directory (cgroup containment). */
const poolDir = (pool: ProcessPool["Service"]) => pool.containment.cgroup?.pool ?? "(none)"

describe(`cgroup containment on real processes${skipped}`, () => {
  it.live.skipIf(noCgroups)(
    "auto picks cgroup v2 here and says why; the doctor shows it and each session's usage",
    () =>
      Effect.gen(function*() {
        let dir = ""
        yield* withPool({ name: "t-cg-auto", containment: "auto", ledger: false, kill }, (pool) =>
          Effect.gen(function*() {
            const m = mark()
            assert.strictEqual(pool.containment.kind, "cgroup")
            assert.strictEqual(pool.containment.requested, "auto")
            assert.include(pool.containment.reason, usable!.base)
            dir = poolDir(pool)
            assert.isTrue(dir.startsWith(`${usable!.base}/shepherd-`), dir)
            assert.isTrue(fs.existsSync(path.join(dir, Cgroup.sentinelDirName)), "the sentinel's leaf")
            const tree = yield* pool.spawn(shell(`exec ${m.sleep}`, m), { session: "usage" })
            yield* eventually("the sleep", () =>
              markedSleeps(m) === 1)
            const doctor = yield* pool.doctor
            assert.deepStrictEqual(doctor.containment, pool.containment)
            const session = doctor.sessions.find((s) => s.id === "usage")!
            const leaf = session.processes[0]!.cgroup!
            assert.strictEqual(leaf, path.join(dir, Cgroup.sessionDirName("usage"), `t-${tree.id}`))
            assert.strictEqual(session.usage?.cgroup, path.dirname(leaf))
            assert.strictEqual(session.usage?.processes, 1)
            assert.isAbove(session.usage?.cpuUsageUsec ?? 0, 0)
            // What the base lacks is named, not left out silently.
            for (const controller of ["memory", "pids", "cpu"]) {
              assert.strictEqual(
                session.usage?.unavailable.includes(controller),
                !usable!.controllers.includes(controller)
              )
            }
            const report = yield* tree.terminate()
            assert.strictEqual(report._tag, "Graceful")
            assertNoMarked(m, "after the tree's teardown")
            // The leaf goes with its tree, the session's cgroup with its last tree.
            yield* eventually("the leaf and the session's cgroup removed", () => !fs.existsSync(path.dirname(leaf)))
          }))
        assert.isFalse(fs.existsSync(dir), "the pool's cgroup is removed when the pool closes")
      })
  )

  it.live.skipIf(noCgroups)(
    "a session's cgroup removed by someone else while it was empty is made again",
    () =>
      withPool({ name: "t-cg-again", containment: "cgroup", ledger: false, kill }, (pool) =>
        Effect.gen(function*() {
          const m = mark()
          const first = yield* pool.spawn(shell(`exec ${m.sleep}`, m), { session: "again" })
          const leaf = (yield* pool.doctor).sessions[0]!.processes[0]!.cgroup!
          yield* first.terminate()
          yield* eventually("the leaf removed", () => !fs.existsSync(leaf))
          // The session's cgroup is kept a moment for its next tree: take it away meanwhile.
          if (fs.existsSync(path.dirname(leaf))) fs.rmdirSync(path.dirname(leaf))
          const second = yield* pool.spawn(shell(`exec ${m.sleep}`, m), { session: "again" })
          yield* eventually("the sleep", () => markedSleeps(m) === 1)
          assert.isTrue(fs.existsSync(path.dirname(leaf)), "a new session cgroup")
          assert.strictEqual((yield* second.terminate())._tag, "Graceful")
          assertNoMarked(m, "after the teardown")
        }))
  )

  for (const name of Object.keys(escapeShapes(newMark()))) {
    it.live.skipIf(noCgroups)(
      `${name}: its teardown leaves 0 survivors`,
      () =>
        withPool({ name: "t-cg-shapes", containment: "cgroup", ledger: false, kill }, (pool) =>
          Effect.gen(function*() {
            const m = mark()
            const shape = escapeShapes(m)[name]!
            const session = yield* pool.session("shapes")
            const tree = yield* session.spawn(shell(shape.script, m))
            yield* eventually(`the processes of "${name}"`, () => markedSleeps(m) >= shape.sleeps)
            const doctor = yield* pool.doctor
            const leaf = doctor.sessions.find((s) => s.id === "shapes")?.processes[0]?.cgroup
            // Whatever left the group and cleared its environment is in the leaf. (Seen first, then
            // the leaf: what forks in between is not taken for an escape.)
            const seen = marked(m)
            const inLeaf = new Set(leaf === undefined ? [] : procsOf(leaf))
            if (shape.staysUp) {
              const outside = seen.filter((p) => !inLeaf.has(p.pid) && isAlive(p.pid))
              assert.deepStrictEqual(outside.map(show), [], "marked processes outside the tree's leaf")
            }
            const reports = shape.staysUp ? yield* session.close : [yield* tree.awaitTeardown]
            assert.strictEqual(reports.length, 1)
            assert.include(["Graceful", "Forced", "Exited"], reports[0]!._tag, JSON.stringify(reports[0]))
            // "Done" is the leaf holding no live process: nothing marked may be alive now.
            assertNoMarked(m, `after the teardown of "${name}"`)
            if (leaf !== undefined) yield* eventually("the leaf removed", () => !fs.existsSync(leaf))
          }))
    )
  }

  it.live.skipIf(noCgroups)(
    "post-spawn placement (the faster mode) contains a tree that escapes after it started",
    () =>
      withPool({ name: "t-cg-post", containment: "cgroup", cgroup: { placement: "post-spawn" }, ledger: false, kill }, (
        pool
      ) =>
        Effect.gen(function*() {
          const m = mark()
          assert.strictEqual(pool.containment.cgroup?.placement, "post-spawn")
          // It escapes only after a moment: post-spawn placement has moved it by then.
          const script = `sleep 0.2; setsid env -i sh -c 'trap "" TERM; exec ${m.sleep}' ${m.sh} & exec ${m.sleep}`
          yield* pool.spawn(shell(script, m), { session: "post" })
          yield* eventually("both sleeps", () => markedSleeps(m) === 2)
          const reports = yield* pool.closeSession("post")
          assert.strictEqual(reports[0]?._tag, "Forced")
          assertNoMarked(m, "after the session's close")
        }))
  )

  it.live.skipIf(noCgroups)(
    "the wrapper hands the command exactly its environment; lookups fail the spawn as before",
    () =>
      withPool({ name: "t-cg-env", containment: "cgroup", ledger: false, kill }, (pool) =>
        Effect.gen(function*() {
          const run = (env: Record<string, string>, extra: ChildProcess.CommandOptions = {}) =>
            Effect.scoped(Effect.gen(function*() {
              const m = yield* pool.spawn(
                ChildProcess.make("/usr/bin/env", [], { env, stdin: "ignore", stderr: "ignore", ...extra })
              )
              const text = yield* m.handle.stdout.pipe(Stream.decodeText(), Stream.mkString)
              yield* m.awaitTeardown
              return text.split("\n").filter((l) => l !== "").sort()
            }))
          // dash would add PWD and reset IFS, OPTIND and PPID: the wrapper puts them back as given.
          const env = { A: "1", IFS: ":", OPTIND: "3", PPID: "1", SPACES: "a  b", EMPTY: "" }
          const expected = (e: Record<string, string>, id: string) =>
            [...Object.entries(e).map(([k, v]) => `${k}=${v}`), `SHEPHERD_ID=${id}`].sort()
          const first = yield* run(env)
          const firstId = first.find((l) => l.startsWith("SHEPHERD_ID="))!.slice("SHEPHERD_ID=".length)
          assert.deepStrictEqual(first, expected(env, firstId))
          const withPwd = { PWD: "/not/the/cwd", B: "2" }
          const second = yield* run(withPwd)
          const secondId = second.find((l) => l.startsWith("SHEPHERD_ID="))!.slice("SHEPHERD_ID=".length)
          assert.deepStrictEqual(second, expected(withPwd, secondId))

          const missing = yield* Effect.flip(pool.spawn(ChildProcess.make("/nonexistent/shepherd-cg-binary", [])))
          assert.strictEqual(missing._tag, "SpawnError")
          const missingInPath = yield* Effect.flip(pool.spawn(ChildProcess.make("shepherd-cg-no-such-command", [])))
          assert.strictEqual(missingInPath._tag, "SpawnError")
          if (missingInPath._tag === "SpawnError") assert.strictEqual(missingInPath.kind, "Launch")
          const plain = path.join(tempDir(), "not-executable")
          fs.writeFileSync(plain, "#!/bin/sh\n", { mode: 0o644 })
          const notExecutable = yield* Effect.flip(pool.spawn(ChildProcess.make(plain, [])))
          assert.strictEqual(notExecutable._tag, "SpawnError")
          // A script whose interpreter is missing fails a direct spawn (ENOENT): through the wrapper too,
          // not as the shell's exit status 127.
          const badInterpreter = path.join(tempDir(), "bad-interpreter")
          fs.writeFileSync(badInterpreter, "#!/nonexistent/shepherd-cg-interpreter -x\necho hi\n", { mode: 0o755 })
          const noInterpreter = yield* Effect.flip(pool.spawn(ChildProcess.make(badInterpreter, [])))
          assert.strictEqual(noInterpreter._tag, "SpawnError")
          if (noInterpreter._tag === "SpawnError") assert.strictEqual(noInterpreter.kind, "Launch")
          const shellOption = yield* Effect.scoped(Effect.gen(function*() {
            const m = yield* pool.spawn(ChildProcess.make("echo $((20 + 22))", { shell: true, stdin: "ignore" }))
            return yield* m.handle.stdout.pipe(Stream.decodeText(), Stream.mkString)
          }))
          assert.strictEqual(shellOption.trim(), "42")
        }))
  )

  it.live.skipIf(noCgroups)(
    "a command's own exit 125 is its exit code; a wrapper that could not place it is a SpawnError",
    () =>
      Effect.gen(function*() {
        const own = yield* withPool({ name: "t-cg-125", containment: "cgroup", ledger: false, kill }, (pool) =>
          Effect.scoped(Effect.flatMap(pool.spawn(ChildProcess.make("sh", ["-c", "exit 125"], quiet)), (m) =>
            m.handle.exitCode)))
        assert.strictEqual(own, 125)
        // A launcher under the containment that takes the leaf away before the wrapper can join it.
        const sabotage = Layer.effect(
          ProcessLauncher.ProcessLauncher,
          Effect.map(ProcessLauncher.ProcessLauncher, (base) =>
            ProcessLauncher.ProcessLauncher.of({
              inheritedEnv: base.inheritedEnv,
              launch: (command, env, options) => {
                const leaf = command.args[3]
                if (typeof leaf === "string" && fs.existsSync(path.join(leaf, "cgroup.procs"))) {
                  fs.rmdirSync(leaf)
                }
                return base.launch(command, env, options)
              }
            }))
        ).pipe(Layer.provide(NodeProcessLauncher.layer))
        const config = yield* ShepherdConfig.resolve({ name: "t-cg-125b", containment: "cgroup", ledger: false, kill })
        const layer = ProcessPool.layerResolved(config).pipe(
          Layer.provide(Layer.mergeAll(
            NodeProcessTable.layer,
            NodeContainment.layer(config).pipe(Layer.provide(sabotage))
          ))
        )
        const failed = yield* usePool(layer, (pool) =>
          Effect.scoped(Effect.flatMap(pool.spawn(ChildProcess.make("sh", ["-c", "exit 0"], quiet)), (m) =>
            Effect.flip(m.handle.exitCode))))
        assert.strictEqual(failed._tag, "PlatformError")
        const cause = failed.cause as { _tag?: string; kind?: string; message?: string }
        assert.strictEqual(cause._tag, "SpawnError")
        assert.strictEqual(cause.kind, "Containment")
        assert.include(cause.message, "never ran")
      })
  )

  it.live.skipIf(noCgroups)(
    "a limit whose controller is missing fails with LimitUnavailable naming the controller",
    () =>
      withPool({ name: "t-cg-limits", containment: "cgroup", ledger: false, kill }, (pool) =>
        Effect.gen(function*() {
          const cases = [
            { limits: { memoryMax: 64 * 1024 * 1024 }, controller: "memory", limit: "memory.max" },
            { limits: { pidsMax: 10 }, controller: "pids", limit: "pids.max" },
            { limits: { cpuMax: "50000 100000" }, controller: "cpu", limit: "cpu.max" },
            { limits: { cpuWeight: 50 }, controller: "cpu", limit: "cpu.weight" }
          ].filter((c) => !usable!.controllers.includes(c.controller))
          for (const c of cases) {
            const spawnError = yield* Effect.flip(
              pool.spawn(ChildProcess.make("true", [], quiet), { limits: c.limits })
            )
            assert.strictEqual(spawnError._tag, "LimitUnavailable")
            if (spawnError._tag === "LimitUnavailable") {
              assert.strictEqual(spawnError.controller, c.controller)
              assert.strictEqual(spawnError.limit, c.limit)
              assert.include(spawnError.reason, `${c.controller} controller is not available`)
            }
            const sessionError = yield* Effect.flip(Effect.scoped(pool.session("limited", { limits: c.limits })))
            assert.strictEqual(sessionError._tag, "LimitUnavailable")
            if (sessionError._tag === "LimitUnavailable") assert.strictEqual(sessionError.controller, c.controller)
          }
          const invalid = yield* Effect.flip(
            pool.spawn(ChildProcess.make("true", [], quiet), { limits: { cpuWeight: 0 } })
          )
          assert.strictEqual(invalid._tag, "SpawnError")
          if (invalid._tag === "SpawnError") assert.strictEqual(invalid.kind, "InvalidLimits")
          assert.strictEqual((yield* pool.stats).inUse, 0)
        }))
  )

  for (const controller of ["memory", "pids", "cpu"] as const) {
    const available = usable?.controllers.includes(controller) === true
    it.live.skipIf(!available)(
      `${controller} limits are written to the session's and the tree's cgroups${
        available ? "" : ` (skipped: the ${controller} controller is not available in the cgroup v2 base here)`
      }`,
      () =>
        withPool(
          { name: `t-cg-${controller}`, containment: "cgroup", ledger: false, kill },
          (pool) =>
            Effect.gen(function*() {
              const m = mark()
              const limits = controller === "memory"
                ? { memoryMax: 256 * 1024 * 1024 }
                : controller === "pids"
                ? { pidsMax: 50 }
                : { cpuWeight: 50 }
              const file = controller === "memory" ? "memory.max" : controller === "pids" ? "pids.max" : "cpu.weight"
              const value = String(Object.values(limits)[0])
              const session = yield* pool.session("limited", { limits })
              yield* session.spawn(shell(`exec ${m.sleep}`, m), { limits })
              yield* eventually("the sleep", () => markedSleeps(m) === 1)
              const entry = (yield* pool.doctor).sessions.find((s) => s.id === "limited")!
              const leaf = entry.processes[0]!.cgroup!
              assert.strictEqual(fs.readFileSync(path.join(leaf, file), "latin1").trim(), value)
              assert.strictEqual(fs.readFileSync(path.join(path.dirname(leaf), file), "latin1").trim(), value)
              assert.notInclude(entry.usage!.unavailable, controller)
              yield* session.close
              assertNoMarked(m, "after the session's close")
            })
        )
    )
  }
})

/** The pids in a cgroup, read directly (for assertions). */
const procsOf = (dir: string): Array<number> => {
  try {
    return fs.readFileSync(path.join(dir, "cgroup.procs"), "latin1").split("\n").filter((l) => l !== "").map(Number)
  } catch {
    return []
  }
}

/** Starts the escape host; resolves with its first JSON line, rejects if it exits first. */
const startEscapeHost = (m: Mark, ledger: string, lifeline: "lifeline" | "nolifeline") => {
  const child = NodeChildProcess.spawn(process.execPath, [escapeHost, m.id, ledger, lifeline], {
    stdio: ["ignore", "pipe", "inherit"],
    // These tests are about cgroups: also when the suite runs with SHEPHERD_CONTAINMENT=process-group.
    env: { ...process.env, SHEPHERD_CONTAINMENT: "auto" }
  })
  hosts.push(child)
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
    child.on("exit", (code, signal) => resolve({ code, signal }))
  )
  const lines = readline.createInterface({ input: child.stdout! })
  const ready = new Promise<{ poolId: string; containment: { kind: string; cgroup?: { pool: string } } }>(
    (resolve, reject) => {
      lines.on("line", (l) => {
        if (!l.startsWith("{")) return
        const parsed = JSON.parse(l)
        track(`${parsed.poolId}:`)
        resolve(parsed)
      })
      void exited.then(() => reject(new Error("the host exited before it was ready")))
    }
  )
  return { child, exited, ready }
}

/** Live lifeline sentinels of `poolId`. */
const sentinels = (poolId: string): Array<number> =>
  processes().filter((p) => p.state !== "Z" && p.state !== "X" && readEnvVar(p.pid, "SHEPHERD_SENTINEL") === poolId)
    .map((p) => p.pid)

describe(`cgroup containment when the host ends${skipped}`, () => {
  it.skipIf(noCgroups)("host SIGTERM: every escape shape is gone when the host has exited", async () => {
    const m = mark()
    const host = startEscapeHost(m, path.join(tempDir(), "escape.ledger"), "lifeline")
    const ready = await host.ready
    assert.strictEqual(ready.containment.kind, "cgroup")
    assert.isAtLeast(markedSleeps(m), 27)
    host.child.kill("SIGTERM")
    const exit = await host.exited
    assert.strictEqual(exit.code, 143)
    assertNoMarked(m, "after the host's SIGTERM")
    assert.isFalse(fs.existsSync(ready.containment.cgroup!.pool), "the pool's cgroup is removed")
  })

  it.skipIf(noCgroups)(
    "host SIGKILL: the lifeline ends every escape shape; a later pool removes the cgroup",
    async () => {
      const m = mark()
      const host = startEscapeHost(m, path.join(tempDir(), "escape.ledger"), "lifeline")
      const ready = await host.ready
      host.child.kill("SIGKILL")
      await host.exited
      // The sentinel sweeps (grace, SIGKILL, cgroup.kill) and exits: by then nothing marked is alive.
      assert.isTrue(await waitUntil(() => sentinels(ready.poolId).length === 0), "the sentinel finished")
      assertNoMarked(m, "after the host's SIGKILL")
      const dir = ready.containment.cgroup!.pool
      // What the sentinel could not remove (its own leaf, the pool's cgroup) goes at the next pool's start.
      await Effect.runPromise(
        withPool({ name: "t-cg-after", containment: "cgroup", ledger: false, kill }, () => Effect.void)
      )
      assert.isFalse(fs.existsSync(dir), `${dir} removed`)
    }
  )

  it.skipIf(noCgroups)("host SIGKILL without a lifeline: the restarted host recovers the escapes first", async () => {
    const m = mark()
    const ledger = path.join(tempDir(), "escape.ledger")
    const first = startEscapeHost(m, ledger, "nolifeline")
    const ready = await first.ready
    first.child.kill("SIGKILL")
    await first.exited
    assert.isAtLeast(markedSleeps(m), 27, "without a lifeline the trees outlive the host")
    const second = startEscapeHost(mark(), ledger, "lifeline")
    await second.ready
    assertNoMarked(m, "the restarted host's recovery ended the first host's trees before its pool opened")
    assert.isFalse(fs.existsSync(ready.containment.cgroup!.pool), "the dead host's cgroup is removed")
    second.child.kill("SIGTERM")
    assert.strictEqual((await second.exited).code, 143)
  })

  it.skipIf(noCgroups)("shepherd run: an escaped `setsid env -i` descendant is gone when run returns", async () => {
    const m = mark()
    const script = `setsid env -i sh -c 'trap "" TERM; exec ${m.sleep}' ${m.sh} & sleep 0.5`
    const code = await new Promise<number | null>((resolve) => {
      const child = NodeChildProcess.spawn(
        process.execPath,
        [bin, "run", "--grace", "200ms", "--", "sh", "-c", script],
        { stdio: "ignore", env: { ...process.env, SHEPHERD_CONTAINMENT: "auto" } }
      )
      hosts.push(child)
      child.on("exit", (c) => resolve(c))
    })
    assert.strictEqual(code, 0)
    assertNoMarked(m, "after shepherd run returned")
  })
})

/** Runs `shepherd <args>`; resolves with its exit code and output. */
const shepherd = (args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    NodeChildProcess.execFile(
      process.execPath,
      [bin, ...args],
      { env: { ...process.env, NO_COLOR: "1", ...env } },
      (error, stdout, stderr) =>
        resolve({ code: error === null ? 0 : (error as { code?: number }).code ?? null, stdout, stderr })
    )
  })

describe(`shepherd doctor and reap with cgroups${skipped}`, () => {
  it("doctor says which containment is in force and why", async () => {
    const json = await shepherd(["doctor", "--json"], { XDG_STATE_HOME: tempDir(), SHEPHERD_CONTAINMENT: "auto" })
    assert.strictEqual(json.code, 0, json.stderr)
    const report = JSON.parse(json.stdout) as { containment: { kind: string; requested: string; reason: string } }
    assert.strictEqual(report.containment.kind, noCgroups ? "process-group" : "cgroup")
    const plain = await shepherd(["doctor"], { XDG_STATE_HOME: tempDir(), SHEPHERD_CONTAINMENT: "auto" })
    assert.match(plain.stdout, noCgroups ? /^containment: process group \+ cookie/ : /^containment: cgroup v2 at /)
    const forced = await shepherd(["doctor"], { XDG_STATE_HOME: tempDir(), SHEPHERD_CONTAINMENT: "process-group" })
    assert.match(forced.stdout, /^containment: process group \+ cookie \(requested process-group\)/)
  })

  it.skipIf(noCgroups)("reap ends what a dead host's cgroups hold and removes them", async () => {
    const m = mark()
    const ledger = path.join(tempDir(), "escape.ledger")
    const host = startEscapeHost(m, ledger, "nolifeline")
    const ready = await host.ready
    host.child.kill("SIGKILL")
    await host.exited
    assert.isAtLeast(markedSleeps(m), 27)
    const dry = await shepherd(["reap", "--ledger", ledger, "--dry-run"])
    assert.strictEqual(dry.code, 0, dry.stderr)
    assert.include(dry.stdout, "would reap 1 cgroup(s) of dead hosts")
    assert.isAtLeast(markedSleeps(m), 27, "a dry run signals nothing")
    const reap = await shepherd(["reap", "--ledger", ledger], { SHEPHERD_GRACE: "200 millis" })
    assert.strictEqual(reap.code, 0, reap.stderr)
    assertNoMarked(m, "after shepherd reap")
    assert.isFalse(fs.existsSync(ready.containment.cgroup!.pool), "the dead host's cgroup is removed")
  })
})

describe("process group + cookie containment (the fallback)", () => {
  it.live("containment \"process-group\": no cgroups, said so, and limits are refused naming the controller", () =>
    withPool({ name: "t-pg", containment: "process-group", ledger: false, kill }, (pool) =>
      Effect.gen(function*() {
        assert.strictEqual(pool.containment.kind, "process-group")
        assert.strictEqual(pool.containment.requested, "process-group")
        assert.isUndefined(pool.containment.cgroup)
        assert.deepStrictEqual((yield* pool.doctor).containment, pool.containment)
        if (usable !== undefined) {
          const ours = fs.readdirSync(usable.base).filter((n) => n.includes(Cgroup.encodeName(pool.poolId)))
          assert.deepStrictEqual(ours, [])
        }
        const error = yield* Effect.flip(
          pool.spawn(ChildProcess.make("true", [], quiet), { limits: { memoryMax: 1 << 30 } })
        )
        assert.strictEqual(error._tag, "LimitUnavailable")
        if (error._tag === "LimitUnavailable") {
          assert.strictEqual(error.controller, "memory")
          assert.include(error.reason, "process group")
        }
        const m = mark()
        const tree = yield* pool.spawn(shell(`exec ${m.sleep}`, m), { session: "pg" })
        yield* eventually("the sleep", () => markedSleeps(m) === 1)
        assert.isUndefined((yield* pool.doctor).sessions[0]?.usage)
        yield* tree.terminate()
        assertNoMarked(m, "after the teardown")
      })))

  it.live("SHEPHERD_CONTAINMENT applies where the config says nothing, and a bad value names the field", () =>
    Effect.gen(function*() {
      const before = process.env.SHEPHERD_CONTAINMENT
      try {
        process.env.SHEPHERD_CONTAINMENT = "process-group"
        const kind = yield* withPool({ name: "t-pg-env", ledger: false }, (pool) => Effect.succeed(pool.containment))
        assert.strictEqual(kind.kind, "process-group")
        assert.strictEqual(kind.requested, "process-group")
        process.env.SHEPHERD_CONTAINMENT = "cgroups, please"
        const error = yield* Effect.flip(withPool({ name: "t-pg-env", ledger: false }, () => Effect.void))
        assert.strictEqual(error._tag, "InvalidConfig")
        if (error._tag === "InvalidConfig") {
          assert.strictEqual(error.field, "containment")
          assert.include(error.reason, "SHEPHERD_CONTAINMENT")
        }
        // The config wins over the variable.
        const configured = yield* withPool(
          { name: "t-pg-env", ledger: false, containment: "process-group" },
          (pool) => Effect.succeed(pool.containment.requested)
        )
        assert.strictEqual(configured, "process-group")
      } finally {
        if (before === undefined) delete process.env.SHEPHERD_CONTAINMENT
        else process.env.SHEPHERD_CONTAINMENT = before
      }
    }))

  it.live("containment \"cgroup\" where cgroups are not usable fails the layer with the reason", () =>
    Effect.gen(function*() {
      const dir = tempDir()
      const exit = yield* Effect.exit(
        withPool(
          { name: "t-cg-required", containment: "cgroup", cgroup: { base: dir }, ledger: false },
          () => Effect.void
        )
      )
      assert.isTrue(Exit.isFailure(exit))
      const error = Exit.isFailure(exit) ? exit.cause.reasons.find((r) => r._tag === "Fail") : undefined
      const failure = error?._tag === "Fail" ? error.error as { _tag: string; reason: string } : undefined
      assert.strictEqual(failure?._tag, "ContainmentUnavailable")
      assert.include(failure?.reason ?? "", dir)
      // auto falls back instead, and says why.
      const fallback = yield* withPool(
        { name: "t-cg-auto-fallback", containment: "auto", cgroup: { base: dir }, ledger: false },
        (pool) => Effect.succeed(pool.containment)
      )
      assert.strictEqual(fallback.kind, "process-group")
      assert.include(fallback.reason, "not usable")
    }))
})
