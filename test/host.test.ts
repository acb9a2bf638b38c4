/**
 * A real host process (test/fixtures/host.ts, run by the pinned Node) under
 * `NodeShepherd.runMain`: SIGTERM tears every session down and exits 143; a
 * second SIGTERM ends the grace period at once.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import * as NodeChildProcess from "node:child_process"
import { fileURLToPath } from "node:url"
import { Effect } from "effect"
import { cleanupPools, show, track } from "./harness.ts"
import { isAlive, readEnvVar, survivors } from "./support.ts"

afterEach(cleanupPools)

const fixture = fileURLToPath(new URL("./fixtures/host.ts", import.meta.url))
const forceWaitMs = 500 // as configured in the fixture

interface Ready {
  readonly prefix: string
  readonly pids: ReadonlyArray<number>
}

interface Exit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  /** `performance.now()` when the host exited. */
  readonly at: number
}

interface Host {
  readonly child: NodeChildProcess.ChildProcess
  readonly ready: Promise<Ready>
  readonly exit: Promise<Exit>
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
      const exit = new Promise<Exit>((resolve) =>
        child.on("exit", (code, signal) => resolve({ code, signal, at: performance.now() }))
      )
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
    Effect.timeoutOrElse({ duration: "20 seconds", orElse: () => Effect.die(new Error("host never became ready")) }),
    Effect.tap((ready) => Effect.sync(() => track(ready.prefix)))
  )

const awaitExit = (host: Host, ms: number) =>
  Effect.promise(() => host.exit).pipe(
    Effect.timeoutOrElse({ duration: ms, orElse: () => Effect.die(new Error(`host still running after ${ms} ms`)) })
  )

describe("host signals (NodeShepherd.runMain)", () => {
  it.live("SIGTERM tears every session down and exits 143 within grace + forceWait", () =>
    Effect.gen(function*() {
      const graceMs = 300
      const host = yield* startHost(graceMs, "jobs")
      const ready = yield* awaitReady(host)
      assert.isTrue(ready.prefix.startsWith("t-host~"))
      assert.strictEqual(ready.pids.length, 18)
      // 6 trees led by children of the host, plus 3 setsid grandchildren leading groups of their own
      const leaders = survivors(ready.prefix).filter((p) => p.pgid === p.pid)
      assert.strictEqual(leaders.filter((p) => p.ppid === host.child.pid).length, 6)
      assert.strictEqual(leaders.filter((p) => p.ppid !== host.child.pid).length, 3)

      const start = performance.now()
      host.child.kill("SIGTERM")
      const exit = yield* awaitExit(host, 10_000)
      const elapsed = exit.at - start

      assert.strictEqual(exit.code, 143)
      assert.strictEqual(exit.signal, null)
      assert.isBelow(elapsed, graceMs + forceWaitMs + 1_500)
      for (const pid of ready.pids) assert.isFalse(isAlive(pid), `pid ${pid}`)
      assert.deepStrictEqual(survivors(ready.prefix).map(show), [])
    }), 30_000)

  /** Two SIGTERMs 100 ms apart; the host must exit long before `graceMs`, leaving nothing. */
  const doubleSignal = (graceMs: number, mode: "jobs" | "scoped") =>
    Effect.gen(function*() {
      const host = yield* startHost(graceMs, mode)
      const ready = yield* awaitReady(host)

      const start = performance.now()
      host.child.kill("SIGTERM")
      yield* Effect.sleep(100)
      host.child.kill("SIGTERM")
      const exit = yield* awaitExit(host, graceMs + 5_000)
      const elapsed = exit.at - start

      assert.strictEqual(exit.code, 143)
      for (const pid of ready.pids) assert.isFalse(isAlive(pid), `pid ${pid}`)
      assert.deepStrictEqual(survivors(ready.prefix).map(show), [])
      assert.isBelow(elapsed, 100 + forceWaitMs + 1_500, `exited after ${Math.round(elapsed)} ms (grace ${graceMs} ms)`)
    })

  it.live("a second SIGTERM ends a 10 s grace period at once (sessions in the program scope)", () =>
    doubleSignal(10_000, "scoped"), 30_000)

  it.live("a second SIGTERM ends a 3 s grace period at once (sessions in job fibers)", () =>
    doubleSignal(3_000, "jobs"), 30_000)
})
