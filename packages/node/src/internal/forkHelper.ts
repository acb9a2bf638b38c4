/**
 * The fork helper: a small process that forks a pool's trees instead of the
 * host (`forkFrom: "helper"`). fork(2) copies the page tables of the process
 * that forks: from a host holding GiBs of `Buffer` memory every spawn blocks
 * its event loop for tens of milliseconds; from this process, about 1 ms, and
 * never the host's event loop.
 *
 * Protocol, over the Node IPC channel (JSON), host → helper:
 * - `{ t: "spawn", id, file, args, env, cwd?, stdio, shell? }`, where `env` is
 *   `{ whole, id }` (kept as the base of later requests) or `{ base, set, unset }`
 *   (changes to the base last sent whole)
 * - `{ t: "kill", id, signal }`: signals a child while it is unreaped (it
 *   cannot name anything else then): a leader whose start time could not be
 *   read, which the host cannot identity-check
 *
 * helper → host, in this order for one id:
 * - `{ t: "pipe", id, fd }` with the parent end of that stdio pipe as the
 *   message's handle (one message per piped fd; the helper never reads them)
 * - `{ t: "spawned", id, pid, startTime, mark, forks }` or `{ t: "failed", id, code?, syscall?, message, forks }`
 * - an entry `{ id, code, signal }` of `{ t: "exits", exits, forks }`: the first
 *   exit of a turn of the helper's event loop at once, the others of that turn
 *   in chunks of up to 16 (a SIGKILL sweep ends hundreds of leaders at once); every other
 *   message first sends the exits seen before it
 *
 * and, for the host's watchdog, `{ t: "ready", forks }` once it is loaded,
 * `{ t: "pong", forks }` to each `{ t: "ping" }`.
 *
 * `forks` counts the helper's forks so far, and `mark` is the machine's fork
 * count with the helper's own just before the spawn: the fork witness of a
 * helper's tree (see `NodeHelperLauncher`). The helper exits when its
 * channel closes (the host exited or released it): ending the trees is the
 * pool's and the lifeline's work, not the helper's.
 *
 * @since 0.4.0
 */
import * as NodeChildProcess from "node:child_process"
import * as procfs from "./procfs.ts"

/** @internal */
export interface SpawnRequest {
  readonly t: "spawn"
  readonly id: number
  readonly file: string
  readonly args: ReadonlyArray<string>
  /**
   * The child's environment: whole (`whole`, kept as the base of later requests under `id`), or as
   * changes to the base last sent whole (`base`, then `set` and `unset`): most spawns of a pool differ
   * from it only in their `SHEPHERD_ID`.
   */
  readonly env:
    | { readonly whole: Readonly<Record<string, string>>; readonly id: number }
    | {
      readonly base: number
      readonly set: Readonly<Record<string, string>>
      readonly unset: ReadonlyArray<string>
    }
  readonly cwd?: string | undefined
  readonly stdio: readonly [NodeChildProcess.IOType, NodeChildProcess.IOType, NodeChildProcess.IOType]
  readonly shell?: boolean | string | undefined
}

/** @internal */
export interface KillRequest {
  readonly t: "kill"
  readonly id: number
  readonly signal: NodeJS.Signals
}

/** @internal The machine's fork count, and the helper's own forks, just before a spawn. */
export interface Mark {
  readonly forks: number
  readonly own: number
}

/** @internal */
export type Reply =
  | { readonly t: "pipe"; readonly id: number; readonly fd: 0 | 1 | 2 }
  | {
    readonly t: "spawned"
    readonly id: number
    readonly pid: number
    readonly startTime: string
    readonly mark: Mark | null
    readonly forks: number
  }
  | {
    readonly t: "failed"
    readonly id: number
    readonly code?: string | undefined
    readonly syscall?: string | undefined
    readonly message: string
    readonly forks: number
  }
  | {
    readonly t: "exits"
    readonly exits: ReadonlyArray<{ readonly id: number; readonly code: number | null; readonly signal: string | null }>
    readonly forks: number
  }
  | { readonly t: "ready"; readonly forks: number }
  | { readonly t: "pong"; readonly forks: number }

/** The exits of one turn travel at most this many to a message. */
const exitChunk = 16

const run = () => {
  const children = new Map<number, NodeChildProcess.ChildProcess>()
  let forks = 0
  let exits: Array<{ id: number; code: number | null; signal: string | null }> = []
  let batching = false
  const write = (reply: Reply, handle?: unknown) => {
    if (process.connected) process.send!(reply, handle as never, { keepOpen: false }, () => {})
  }
  const flushExits = () => {
    if (exits.length === 0) return
    const batch = exits
    exits = []
    write({ t: "exits", exits: batch, forks })
  }
  // The exits seen so far go first: an answer never overtakes the exit of a tree whose pid it reuses.
  const send = (reply: Reply, handle?: unknown) => {
    flushExits()
    write(reply, handle)
  }
  const failed = (id: number, error: NodeJS.ErrnoException) =>
    send({ t: "failed", id, code: error.code, syscall: error.syscall, message: error.message, forks })

  /** The environment last sent whole, the base of the changes of later requests. */
  let base: { readonly id: number; readonly env: Readonly<Record<string, string>> } | undefined

  const spawn = (request: SpawnRequest) => {
    const { id } = request
    // No prototype: a variable may be named `__proto__`.
    const env: Record<string, string> = Object.create(null)
    if ("whole" in request.env) {
      Object.assign(env, request.env.whole)
      base = { id: request.env.id, env: request.env.whole }
    } else {
      if (base?.id !== request.env.base) {
        failed(
          id,
          Object.assign(new Error(`environment base ${request.env.base} is not the last one sent`), {
            code: "EINVAL"
          })
        )
        return
      }
      Object.assign(env, base.env, request.env.set)
      for (const name of request.env.unset) delete env[name]
    }
    // The fork witness's mark, taken here, where this process's own forks are counted exactly: the
    // machine's fork count now, and how many of them were this process's.
    const kernel = procfs.readForks()
    const mark = kernel === undefined ? null : { forks: kernel, own: forks }
    let child: NodeChildProcess.ChildProcess
    try {
      child = NodeChildProcess.spawn(request.file, request.args as Array<string>, {
        cwd: request.cwd,
        env,
        stdio: [...request.stdio],
        // As the host launcher spawns: its own process group (not on Windows), no console window.
        detached: process.platform !== "win32",
        windowsHide: true,
        shell: request.shell
      })
    } catch (error) {
      failed(id, error as NodeJS.ErrnoException)
      return
    }
    if (child.pid === undefined) {
      child.on("error", (error) => failed(id, error))
      return
    }
    forks++
    const pid = child.pid
    // Read now, before this process could have reaped the child: the pid names it.
    let startTime = "0"
    try {
      startTime = procfs.readStat(pid)?.startTime ?? "0"
    } catch {
      // unreadable: "0" matches no process, so the host signals nothing by this identity
    }
    children.set(id, child)
    child.on("error", () => {})
    child.on("exit", (code, signal) => {
      children.delete(id)
      exits.push({ id, code, signal })
      if (batching) {
        // Hundreds of exits reaped in one go take the helper milliseconds: the host, idle once its
        // sweep is over, starts on them a chunk at a time instead of after the last.
        if (exits.length >= exitChunk) flushExits()
        return
      }
      // The first exit goes at once (a slot waits for it); the others of this turn of the event
      // loop (a SIGKILL sweep ends hundreds of leaders at once) follow in chunks.
      flushExits()
      batching = true
      setImmediate(() => {
        batching = false
        flushExits()
      })
    })
    const streams = [child.stdin, child.stdout, child.stderr] as const
    // The pipes are the host's, however long their transfer waits behind another (a handle is sent
    // once the previous one is acknowledged): when the child exits, Node destroys its stdin and
    // resumes its unread outputs, unless it no longer knows them.
    const forgotten = child as unknown as { stdin: unknown; stdout: unknown; stderr: unknown; stdio: Array<unknown> }
    forgotten.stdin = null
    forgotten.stdout = null
    forgotten.stderr = null
    forgotten.stdio.fill(null)
    for (const fd of [0, 1, 2] as const) {
      const stream = streams[fd]
      if (stream === null) continue
      // Not a byte is read here: the output belongs to the host, which gets the pipe itself.
      const handle = (stream as unknown as { _handle?: { readStop?: () => void } })._handle
      handle?.readStop?.()
      send({ t: "pipe", id, fd }, stream)
    }
    send({ t: "spawned", id, pid, startTime, mark, forks })
  }

  process.on("message", (message: SpawnRequest | KillRequest | { readonly t: "ping" }) => {
    if (message.t === "spawn") spawn(message)
    else if (message.t === "ping") send({ t: "pong", forks })
    else if (message.t === "kill") {
      // Node refuses once it has reaped the child: until then its pid cannot name anything else.
      children.get(message.id)?.kill(message.signal)
    }
  })
  process.on("disconnect", () => process.exit(0))
  // Everything this process needs is loaded: from now on the host may count on it.
  send({ t: "ready", forks })
}

if (process.send !== undefined) run()
