/**
 * A host's SIGTERM on real processes (test/fixtures/termHost.ts under
 * `NodeShepherd.runMain`): every child gets its SIGTERM before any child is
 * SIGKILLed, whatever scope holds its session; and HTTP clients of
 * `DoctorHttp` (an idle keep-alive connection, a request still being sent)
 * do not hold the host or its children's teardown up.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Effect } from "effect"
import { cleanupPools, eventually, show, track } from "./harness.ts"
import { isAlive, survivors } from "./support.ts"

afterEach(cleanupPools)

const fixture = fileURLToPath(new URL("./fixtures/termHost.ts", import.meta.url))

interface Ready {
  readonly prefix: string
  readonly leaders: ReadonlyArray<number>
  readonly port?: number
}

interface Host {
  readonly child: NodeChildProcess.ChildProcess
  readonly ready: Promise<Ready>
  readonly exited: Promise<void>
  readonly markers: string
}

/** Starts the fixture; it is SIGKILLed with whatever it left when the test's scope closes. */
const startHost = (graceMs: number, sessions: number, withHttp: boolean) =>
  Effect.acquireRelease(
    Effect.sync((): Host => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-termhost-"))
      const args = [fixture, String(graceMs), dir, String(sessions), ...(withHttp ? ["http"] : [])]
      const child = NodeChildProcess.spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] })
      let stderr = ""
      child.stderr!.on("data", (chunk: Buffer) => {
        stderr += chunk.toString("utf8")
      })
      const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()))
      const ready = new Promise<Ready>((resolve, reject) => {
        let out = ""
        child.stdout!.on("data", (chunk: Buffer) => {
          out += chunk.toString("utf8")
          const line = out.split("\n").find((l) => l.startsWith("{"))
          if (line !== undefined) {
            const parsed = JSON.parse(line) as Ready
            track(parsed.prefix)
            resolve(parsed)
          }
        })
        void exited.then(() => reject(new Error(`host exited before ready:\n${stderr}`)))
      })
      return { child, ready, exited, markers: path.join(dir, "term") }
    }),
    (host) =>
      Effect.promise(async () => {
        if (host.child.exitCode === null && host.child.signalCode === null) host.child.kill("SIGKILL")
        await host.exited
        cleanupPools()
        fs.rmSync(path.dirname(host.markers), { recursive: true, force: true })
      })
  )

const awaitReady = (host: Host) =>
  Effect.promise(() => host.ready).pipe(
    Effect.timeoutOrElse({ duration: "60 seconds", orElse: () => Effect.die(new Error("host never became ready")) })
  )

/** Waits for the host to exit; `ms` only guards against a hang. */
const awaitExit = (host: Host, ms: number) =>
  Effect.promise(() => host.exited).pipe(
    Effect.timeoutOrElse({ duration: ms, orElse: () => Effect.die(new Error(`host still running after ${ms} ms`)) })
  )

/** Leaders that recorded a SIGTERM so far. */
const termed = (host: Host): Set<number> => {
  try {
    return new Set(fs.readFileSync(host.markers, "utf8").split("\n").filter((l) => l.length > 0).map(Number))
  } catch {
    return new Set()
  }
}

describe("a host's SIGTERM", () => {
  it.live(
    "reaches every child of 5 sessions opened in the program scope before the first child dies",
    () =>
      Effect.gen(function*() {
        const graceMs = 1_000
        const host = yield* startHost(graceMs, 5, false)
        const ready = yield* awaitReady(host)
        assert.strictEqual(ready.leaders.length, 5)

        host.child.kill("SIGTERM")
        // Poll until the first leader is dead (SIGKILLed after its grace), then read who had a SIGTERM by then.
        yield* eventually("a leader to die", () => ready.leaders.some((pid) => !isAlive(pid)), 60_000)
        const byThen = termed(host)
        assert.sameMembers([...byThen], [...ready.leaders], "every leader recorded SIGTERM before the first one died")

        yield* awaitExit(host, 60_000)
        assert.deepStrictEqual(survivors(ready.prefix).map(show), [])
      }),
    120_000
  )
})

describe("DoctorHttp clients at shutdown", () => {
  it.live(
    "an idle keep-alive connection and a half-sent request hold neither the host nor its children's teardown",
    () =>
      Effect.gen(function*() {
        const graceMs = 1_000
        const host = yield* startHost(graceMs, 3, true)
        const ready = yield* awaitReady(host)
        assert.isNumber(ready.port)
        const port = ready.port!

        // A keep-alive client: one request answered, the connection left open and idle.
        const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
        yield* Effect.addFinalizer(() => Effect.sync(() => agent.destroy()))
        const status = yield* Effect.promise(() =>
          new Promise<number>((resolve, reject) => {
            const req = http.get({ host: "127.0.0.1", port, path: "/doctor", agent }, (res) => {
              res.resume()
              res.on("end", () => resolve(res.statusCode ?? 0))
            })
            req.on("error", reject)
          })
        )
        assert.strictEqual(status, 200)
        // A client still sending its request: headers begun, never finished.
        const slow = net.connect({ host: "127.0.0.1", port })
        yield* Effect.addFinalizer(() => Effect.sync(() => slow.destroy()))
        let slowClosedByServer = false
        let slowReceived = ""
        slow.on("data", (chunk: Buffer) => {
          slowReceived += chunk.toString("latin1")
        })
        slow.on("close", () => {
          slowClosedByServer = true
        })
        slow.on("error", () => {})
        yield* Effect.promise(() => new Promise<void>((resolve) => slow.once("connect", () => resolve())))
        slow.write("GET /doctor HTTP/1.1\r\nHost: 127.0.0.1\r\n")

        host.child.kill("SIGTERM")
        // Neither client closes anything: the host must, and must not wait for them. Had it waited (the
        // router's own close waits up to 20 s), the server's headersTimeout (10 s) would have answered the
        // half-sent request with a 408 first: so the order proves it, with no figure (the wait is a guard).
        yield* awaitExit(host, 60_000)
        for (const pid of ready.leaders) assert.isFalse(isAlive(pid), `leader ${pid}`)
        assert.deepStrictEqual(survivors(ready.prefix).map(show), [])
        yield* eventually("the server to close the half-sent request's connection", () => slowClosedByServer)
        assert.strictEqual(slowReceived, "", "the half-sent request was cut at shutdown, not timed out by the server")
      }).pipe(Effect.scoped),
    120_000
  )
})
