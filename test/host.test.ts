/**
 * A real host process (test/fixtures/host.ts, run by the pinned Node) under
 * `NodeShepherd.runMain`: SIGTERM tears every session down and exits 143; a
 * second SIGTERM ends the grace period at once (with an hour-long grace, the
 * host exiting at all proves it).
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import { fileURLToPath } from "node:url"
import { Effect } from "effect"
import { cleanupPools, eventually, show, track } from "./harness.ts"
import { isAlive, processes, readEnvVar, survivors } from "./support.ts"

afterEach(cleanupPools)

const fixture = fileURLToPath(new URL("./fixtures/host.ts", import.meta.url))

interface Ready {
  readonly prefix: string
  readonly pids: ReadonlyArray<number>
}

interface Exit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

interface Host {
  readonly child: NodeChildProcess.ChildProcess
  readonly ready: Promise<Ready>
  readonly exit: Promise<Exit>
}

/** `true` once `signal` is no longer pending for `pid`: the kernel has delivered it (or `pid` is gone). */
const delivered = (pid: number, signal: number): boolean => {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, "latin1")
    const bit = 1n << BigInt(signal - 1)
    return ["SigPnd", "ShdPnd"].every((field) => {
      const line = status.split("\n").find((l) => l.startsWith(`${field}:`))
      return line === undefined || (BigInt(`0x${line.slice(field.length + 1).trim()}`) & bit) === 0n
    })
  } catch {
    return true
  }
}

/** SIGKILL leftovers of a host of this run that never reported its prefix. */
const killHostLeftovers = () => {
  const runDir = process.env.SHEPHERD_TEST_RUN_DIR
  for (const p of survivors("t-host~")) {
    if (runDir === undefined || readEnvVar(p.pid, "SHEPHERD_TEST_RUN_DIR") !== runDir) continue
    try {
      process.kill(p.pid, "SIGKILL")
    } catch {
      // gone
    }
  }
}

/** Starts the fixture host; it is SIGKILLed (with its leftovers) when the test's scope closes. */
const startHost = (graceMs: number, mode: "jobs" | "scoped") =>
  Effect.acquireRelease(
    Effect.sync((): Host => {
      const child = NodeChildProcess.spawn(process.execPath, [fixture, String(graceMs), mode], {
        stdio: ["ignore", "pipe", "pipe"]
      })
      let stderr = ""
      child.stderr!.on("data", (chunk: Buffer) => {
        stderr += chunk.toString("utf8")
      })
      const exit = new Promise<Exit>((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })))
      const ready = new Promise<Ready>((resolve, reject) => {
        let out = ""
        child.stdout!.on("data", (chunk: Buffer) => {
          out += chunk.toString("utf8")
          const line = out.split("\n").find((l) => l.startsWith("{"))
          if (line !== undefined) resolve(JSON.parse(line) as Ready)
        })
        void exit.then((e) => reject(new Error(`host exited before ready (${e.code ?? e.signal}):\n${stderr}`)))
      })
      return { child, ready, exit }
    }),
    ({ child }) =>
      Effect.sync(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
        killHostLeftovers()
      })
  )

const awaitReady = (host: Host) =>
  Effect.promise(() => host.ready).pipe(
    Effect.timeoutOrElse({ duration: "60 seconds", orElse: () => Effect.die(new Error("host never became ready")) }),
    Effect.tap((ready) => Effect.sync(() => track(ready.prefix)))
  )

/** Waits for the host to exit; `ms` only guards against a hang. */
const awaitExit = (host: Host, ms = 60_000) =>
  Effect.promise(() => host.exit).pipe(
    Effect.timeoutOrElse({ duration: ms, orElse: () => Effect.die(new Error(`host still running after ${ms} ms`)) })
  )

describe("host signals (NodeShepherd.runMain)", () => {
  it.live("SIGTERM tears every session down and exits 143", () =>
    Effect.gen(function*() {
      const graceMs = 300
      const host = yield* startHost(graceMs, "jobs")
      const ready = yield* awaitReady(host)
      assert.isTrue(ready.prefix.startsWith("t-host~"))
      assert.strictEqual(ready.pids.length, 18)
      // 6 trees led by children of the host or of its fork helper, plus 3 setsid grandchildren leading
      // groups of their own
      const forkers = new Set([
        host.child.pid,
        ...processes().filter((p) => p.ppid === host.child.pid && p.cmdline.includes("forkHelper")).map((p) => p.pid)
      ])
      const leaders = survivors(ready.prefix).filter((p) => p.pgid === p.pid)
      assert.strictEqual(leaders.filter((p) => forkers.has(p.ppid)).length, 6)
      assert.strictEqual(leaders.filter((p) => !forkers.has(p.ppid)).length, 3)

      // (That every child is signalled together, not session after session, is shutdown.test.ts's order.)
      host.child.kill("SIGTERM")
      const exit = yield* awaitExit(host)

      assert.strictEqual(exit.code, 143)
      assert.strictEqual(exit.signal, null)
      for (const pid of ready.pids) assert.isFalse(isAlive(pid), `pid ${pid}`)
      assert.deepStrictEqual(survivors(ready.prefix).map(show), [])
    }))

  /**
   * Two SIGTERMs, the second once the kernel has delivered the first (two pending SIGTERMs would merge
   * into one). The grace period is an hour: a host that exits at all (the guard is 60 s) ended it early.
   */
  const doubleSignal = (mode: "jobs" | "scoped") =>
    Effect.gen(function*() {
      const host = yield* startHost(3_600_000, mode)
      const ready = yield* awaitReady(host)

      host.child.kill("SIGTERM")
      yield* eventually("the first SIGTERM to be delivered", () => delivered(host.child.pid!, 15))
      host.child.kill("SIGTERM")
      const exit = yield* awaitExit(host)

      assert.strictEqual(exit.code, 143)
      for (const pid of ready.pids) assert.isFalse(isAlive(pid), `pid ${pid}`)
      assert.deepStrictEqual(survivors(ready.prefix).map(show), [])
    })

  it.live("a second SIGTERM ends an hour-long grace period at once (sessions in the program scope)", () =>
    doubleSignal("scoped"))

  it.live("a second SIGTERM ends an hour-long grace period at once (sessions in job fibers)", () =>
    doubleSignal("jobs"))
})
