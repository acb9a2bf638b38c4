/**
 * What every Node launcher shares, whoever forks the child (the host, or the
 * fork helper): the checks of a command before it is started, the mapping of
 * spawn errors, the exit bookkeeping, and the I/O half of the handle built
 * from the child's three stdio streams.
 *
 * @since 0.4.0
 */
import type { ExitStatus, Launched } from "@shepherd/core/ProcessLauncher"
import * as NodeSink from "@effect/platform-node/NodeSink"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as PlatformError from "effect/PlatformError"
import type * as ChildProcess from "effect/process/ChildProcess"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import type * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import type { Readable, Writable } from "node:stream"
import * as outputTap from "./outputTap.ts"

const errnoTag = (code: string | undefined): PlatformError.SystemErrorTag => {
  switch (code) {
    case "ENOENT":
      return "NotFound"
    case "EACCES":
    case "EPERM":
      return "PermissionDenied"
    default:
      return "Unknown"
  }
}

/** An errno as Node reports it (an `ErrnoException`, or its fields sent over IPC). */
export interface Errno {
  readonly code?: string | undefined
  readonly syscall?: string | undefined
  readonly message: string
}

/** A failed spawn as a `PlatformError`. */
export const spawnError = (command: ChildProcess.StandardCommand, error: Errno, description: string) =>
  PlatformError.systemError({
    _tag: errnoTag(error.code),
    module: "ChildProcess",
    method: "spawn",
    syscall: error.syscall,
    pathOrDescriptor: command.command,
    description
  })

/** Node's stdio type of one of the command's stdio options. */
export const toStdio = (
  option:
    | ChildProcess.CommandInput
    | ChildProcess.CommandOutput
    | ChildProcess.StdinConfig
    | ChildProcess.StdoutConfig
    | undefined
): NodeChildProcess.IOType => {
  if (option === undefined) return "pipe"
  if (typeof option === "string") return option === "overlapped" ? "overlapped" : option
  if (Stream.isStream(option) || Sink.isSink(option)) return "pipe"
  return toStdio(option.stream)
}

/** The three stdio types of a command. */
export const stdioOf = (
  options: ChildProcess.CommandOptions
): [NodeChildProcess.IOType, NodeChildProcess.IOType, NodeChildProcess.IOType] => [
  options.stdin === undefined ? "pipe" : toStdio(options.stdin),
  toStdio(options.stdout),
  toStdio(options.stderr)
]

/**
 * The options Shepherd refuses, and the working directory checked (Node reports
 * a bad cwd as "spawn <cmd> ENOENT", indistinguishable from a missing
 * executable). Returns the cwd to use.
 */
export const checkCommand = Effect.fnUntraced(function*(command: ChildProcess.StandardCommand) {
  const options = command.options
  if (options.additionalFds !== undefined && Object.keys(options.additionalFds).length > 0) {
    return yield* Effect.fail(PlatformError.badArgument({
      module: "Shepherd",
      method: "spawn",
      description: "additionalFds are not supported by Shepherd yet"
    }))
  }
  if (options.shell !== undefined && options.shell !== false && command.args.length > 0) {
    return yield* Effect.fail(PlatformError.badArgument({
      module: "Shepherd",
      method: "spawn",
      description: "The shell option cannot be combined with arguments; pass the whole script as the command"
    }))
  }
  if (options.cwd === undefined) return undefined
  const dir = options.cwd
  yield* Effect.tryPromise({
    try: () => fs.promises.access(dir),
    catch: (error) => spawnError(command, error as NodeJS.ErrnoException, `working directory ${dir} is not accessible`)
  })
  return dir
})

/** A leader's exit, as the launchers record it. */
export interface ExitWatch {
  readonly exited: Deferred.Deferred<ExitStatus>
  status: ExitStatus | undefined
  /** One listener is the common case (the pool's); more (a session close) are rare. */
  listeners: (() => void) | Array<() => void> | undefined
}

export const makeExitWatch = (): ExitWatch => ({
  exited: Deferred.makeUnsafe<ExitStatus>(),
  status: undefined,
  listeners: undefined
})

/** Records the exit (once) and tells the listeners. */
export const recordExit = (watch: ExitWatch, status: ExitStatus): void => {
  if (watch.status !== undefined) return
  watch.status = status
  Deferred.doneUnsafe(watch.exited, Exit.succeed(status))
  const listeners = watch.listeners
  watch.listeners = undefined
  if (typeof listeners === "function") listeners()
  else if (listeners !== undefined) { for (const f of listeners) f() }
}

/** Records a Node child's exit (its own function: its closure holds nothing else). */
export const watchChild = (child: NodeChildProcess.ChildProcess): ExitWatch => {
  const watch = makeExitWatch()
  child.on("exit", (code, signal) => recordExit(watch, { code, signal }))
  return watch
}

/** `Launched.onExit` of a watch. */
export const onExit = (watch: ExitWatch) => (f: () => void): void => {
  if (watch.status !== undefined) f()
  else if (watch.listeners === undefined) watch.listeners = f
  else if (typeof watch.listeners === "function") watch.listeners = [watch.listeners, f]
  else watch.listeners.push(f)
}

const getInputFd = () => Sink.drain
const getOutputFd = () => Stream.empty
/** The I/O of a process with no pipe at all (every stdio ignored or inherited), shared. */
const noIo: Launched["io"] = {
  stdin: Sink.drain,
  stdout: Stream.empty,
  stderr: Stream.empty,
  all: Stream.empty,
  getInputFd,
  getOutputFd
}

/** The parent ends of a child's stdio pipes (`null` where it has none). */
export interface Pipes {
  readonly stdin: Writable | null
  readonly stdout: Readable | null
  readonly stderr: Readable | null
}

/**
 * The I/O half of the handle from the child's pipes. Output is tapped at once
 * (a chatty child never blocks on a full pipe); a stdin `Stream` is fed by a
 * fiber of the current scope.
 */
export const io = Effect.fnUntraced(function*(command: ChildProcess.StandardCommand, pipes: Pipes) {
  const options = command.options
  // When the process scope closes (after the teardown), the pipes must not keep the host's event
  // loop alive: a descendant that survived (Escaped) could hold their other end forever.
  if (pipes.stdin !== null || pipes.stdout !== null || pipes.stderr !== null) {
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const stream of [pipes.stdin, pipes.stdout, pipes.stderr]) {
          ;(stream as unknown as { unref?: () => void } | null)?.unref?.()
        }
      })
    )
  }
  let stdinSink: Sink.Sink<void, Uint8Array, never, PlatformError.PlatformError> = Sink.drain
  if (pipes.stdin !== null) {
    const writable = pipes.stdin
    // Writes can fail with EPIPE after the child died; never let that crash the host.
    writable.on("error", () => {})
    const config = typeof options.stdin === "object" && !Stream.isStream(options.stdin) ? options.stdin : undefined
    stdinSink = NodeSink.fromWritable({
      evaluate: () => writable,
      onError: (error) =>
        PlatformError.systemError({
          _tag: "Unknown",
          module: "ChildProcess",
          method: "fromWritable(stdin)",
          description: String(error)
        }),
      endOnDone: config?.endOnDone ?? true,
      encoding: config?.encoding ?? "utf-8"
    })
    const source = Stream.isStream(options.stdin)
      ? options.stdin
      : config !== undefined && Stream.isStream(config.stream)
      ? config.stream
      : undefined
    if (source !== undefined) {
      yield* Effect.forkScoped(Effect.ignore(Stream.run(source, stdinSink)))
    }
  }
  let out: Stream.Stream<Uint8Array, PlatformError.PlatformError> = pipes.stdout === null
    ? Stream.empty
    : outputTap.tap(pipes.stdout, "stdout")
  let err: Stream.Stream<Uint8Array, PlatformError.PlatformError> = pipes.stderr === null
    ? Stream.empty
    : outputTap.tap(pipes.stderr, "stderr")
  // An output option may be a Sink, or a config whose `stream` is one.
  const sinkOf = (option: ChildProcess.CommandOptions["stdout"]) =>
    typeof option !== "object"
      ? undefined
      : Sink.isSink(option)
      ? option
      : Sink.isSink(option.stream)
      ? option.stream
      : undefined
  const outSink = sinkOf(options.stdout)
  const errSink = sinkOf(options.stderr)
  if (outSink !== undefined) out = Stream.transduce(out, outSink)
  if (errSink !== undefined) err = Stream.transduce(err, errSink)
  if (stdinSink === Sink.drain && out === Stream.empty && err === Stream.empty) return noIo
  const result: Launched["io"] = {
    stdin: stdinSink,
    stdout: out,
    stderr: err,
    // Built when used: most callers never read both streams merged.
    all: Stream.suspend(() => Stream.merge(out, err)),
    getInputFd,
    getOutputFd
  }
  return result
})
