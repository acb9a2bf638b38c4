/**
 * What `pnpm demo:cluster` and the cluster tests share: a private PostgreSQL
 * server (`scripts/pg.sh`), runner processes (`runner.ts`) and the `/proc`
 * checks. Every resource is scoped: closing the scope stops the runners
 * (SIGTERM, then SIGKILL of our own child after 15 s) and the server, and
 * removes its directory, also when the program failed half-way.
 */
import * as NodeProcessTable from "@shepherd/node/NodeProcessTable"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import type { RunnerSpec } from "./runner.ts"

const here = path.dirname(fileURLToPath(import.meta.url))
const pgScript = path.resolve(here, "../../../scripts/pg.sh")
const runnerScript = path.join(here, "runner.ts")

const exited = (child: NodeChildProcess.ChildProcess) => child.exitCode !== null || child.signalCode !== null

const waitExit = (child: NodeChildProcess.ChildProcess) =>
  Effect.callback<void>((resume) => {
    if (exited(child)) return resume(Effect.void)
    child.once("exit", () => resume(Effect.void))
  })

/** Whether the PostgreSQL binaries are installed (`apt-get install -y postgresql`). */
export const postgresAvailable = (): boolean =>
  NodeChildProcess.spawnSync("bash", [pgScript, "available"], { stdio: "ignore" }).status === 0

const run = (args: ReadonlyArray<string>) =>
  Effect.callback<string, Error>((resume) => {
    // The script picks a free port with `$NODE` (this very Node).
    const env = { ...process.env, NODE: process.execPath }
    NodeChildProcess.execFile("bash", [pgScript, ...args], { timeout: 60_000, env }, (error, stdout, stderr) => {
      if (error) resume(Effect.fail(new Error(`scripts/pg.sh ${args[0]} failed: ${error.message}\n${stderr}`)))
      else resume(Effect.succeed(stdout.trim()))
    })
  })

/**
 * A private PostgreSQL server on a free port; stopped and removed when the scope closes. A watchdog
 * (`bash`, its own process group) holds a pipe from this process and runs `scripts/pg.sh stop` when
 * the pipe closes: when the scope closes, and also when this process dies without running finalizers.
 */
export const postgres = Effect.acquireRelease(
  Effect.gen(function*() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-pg-"))
    const watchdog = NodeChildProcess.spawn(
      "bash",
      ["-c", "read -r _ || true; exec bash \"$0\" stop \"$1\"", pgScript, dir],
      { stdio: ["pipe", "ignore", "ignore"], detached: true, env: { ...process.env, NODE: process.execPath } }
    )
    const port = yield* run(["start", dir]).pipe(
      Effect.onError(() => Effect.sync(() => watchdog.stdin!.end()))
    )
    return { dir, port: Number(port), watchdog }
  }),
  ({ dir, watchdog }) =>
    Effect.gen(function*() {
      watchdog.stdin!.end()
      const stopped = yield* waitExit(watchdog).pipe(Effect.timeout("60 seconds"), Effect.option)
      if (stopped._tag === "None") yield* Effect.ignore(run(["stop", dir]))
    })
)

/** A free TCP port of 127.0.0.1 (for a runner). */
export const freePort = Effect.callback<number>((resume) => {
  const server = net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const port = (server.address() as net.AddressInfo).port
    server.close(() => resume(Effect.succeed(port)))
  })
})

/** A runner process we started. */
export interface RunnerProcess {
  readonly index: number
  readonly child: NodeChildProcess.ChildProcess
  readonly pid: number
  readonly port: number
  readonly poolId: string
  readonly address: string
}

/** Starts a runner and waits for its ready line; SIGTERMs it (SIGKILL after 15 s) when the scope closes. */
export const startRunner = (index: number, spec: RunnerSpec, options?: { readonly quiet?: boolean }) =>
  Effect.acquireRelease(
    Effect.callback<RunnerProcess, Error>((resume) => {
      const child = NodeChildProcess.spawn(process.execPath, [runnerScript, JSON.stringify(spec)], {
        // Its stdin is a pipe from this process: the runner shuts down (as on SIGTERM) when it closes.
        stdio: ["pipe", "pipe", options?.quiet === true ? "ignore" : "inherit"]
      })
      let buffer = ""
      child.stdout!.on("data", (chunk: Buffer) => {
        buffer += chunk.toString()
        let nl: number
        while ((nl = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, nl)
          buffer = buffer.slice(nl + 1)
          if (line.startsWith("{\"ready\"")) {
            const ready = JSON.parse(line) as { pid: number; port: number; poolId: string }
            resume(Effect.succeed({
              index,
              child,
              pid: ready.pid,
              port: ready.port,
              poolId: ready.poolId,
              address: `127.0.0.1:${ready.port}`
            }))
          }
        }
      })
      child.on(
        "exit",
        (code, signal) =>
          resume(Effect.fail(new Error(`runner ${index} exited before it was ready (${code ?? signal})`)))
      )
    }).pipe(Effect.timeout("60 seconds")),
    ({ child }) =>
      Effect.gen(function*() {
        if (exited(child)) return
        child.kill("SIGTERM")
        yield* waitExit(child).pipe(Effect.timeout("15 seconds"), Effect.ignore)
        if (!exited(child)) {
          child.kill("SIGKILL")
          yield* waitExit(child)
        }
      })
  )

/** Starts runners 1..`count` together, each on a free port, with the spec `spec(i)` gives. */
export const startRunners = (count: number, spec: (index: number) => Omit<RunnerSpec, "port">) =>
  Effect.forEach(
    Array.from({ length: count }, (_, i) => i + 1),
    (i) => Effect.flatMap(freePort, (port) => startRunner(i, { ...spec(i), port })),
    { concurrency: "unbounded" }
  )

/** SIGKILLs a runner we started (we hold its ChildProcess) and waits until it is gone. */
export const sigkill = (runner: RunnerProcess) =>
  Effect.callback<void>((resume) => {
    if (exited(runner.child)) return resume(Effect.void)
    runner.child.once("exit", () => resume(Effect.void))
    runner.child.kill("SIGKILL")
  })

/** Live processes (zombies excluded) carrying a `SHEPHERD_ID` that starts with `prefix`, from `/proc`. */
export const carriers = (prefix: string) => NodeProcessTable.carriers(prefix)

/** Polls `check` every 50 ms until it holds; fails after `limit` (a hang guard, not a timing assertion). */
export const waitUntil = <E, R>(
  what: string,
  check: Effect.Effect<boolean, E, R>,
  limit: Duration.Input = "60 seconds"
) =>
  Effect.gen(function*() {
    while (!(yield* check)) yield* Effect.sleep("50 millis")
  }).pipe(
    Effect.timeoutOrElse({
      duration: limit,
      orElse: () =>
        Effect.fail(new Error(`gave up waiting (${Duration.format(Duration.fromInputUnsafe(limit))}) for ${what}`))
    })
  )

/** A process as seen once: its pid and its start time (clock ticks since boot, `/proc/<pid>/stat` field 22). */
export interface Seen {
  readonly pid: number
  readonly start: string
}

const statOf = (pid: number): { readonly state: string; readonly start: string } | undefined => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "latin1")
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return { state: fields[0]!, start: fields[19]! }
  } catch {
    return undefined
  }
}

/** The carriers of `prefix` with their start times, to watch them cheaply afterwards. */
export const snapshot = (prefix: string): Array<Seen> =>
  carriers(prefix).flatMap((p) => {
    const stat = statOf(p.pid)
    return stat === undefined ? [] : [{ pid: p.pid, start: stat.start }]
  })

/** Those of `seen` still alive (same pid and start time, not a zombie): reads only their own `/proc` entries. */
export const stillAlive = (seen: ReadonlyArray<Seen>): Array<Seen> =>
  seen.filter((p) => {
    const stat = statOf(p.pid)
    return stat !== undefined && stat.start === p.start && stat.state !== "Z" && stat.state !== "X"
  })
