/**
 * The Node launcher: `node:child_process.spawn` in a new session and process
 * group, with exactly the environment the pool computed, output pipes that
 * never block the child, and no kill-on-close of its own (the pool's KillPolicy
 * owns teardown, so the stock spawner's 1 s zombie-counting poll never runs).
 *
 * @since 0.1.0
 */
import { ProcessLauncher } from "@shepherd/core/ProcessLauncher"
import type { ExitStatus, Launched } from "@shepherd/core/ProcessLauncher"
import * as NodeSink from "@effect/platform-node/NodeSink"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as PlatformError from "effect/PlatformError"
import * as ChildProcess from "effect/process/ChildProcess"
import * as CommandLine from "effect/process/CommandLine"
import * as Redacted from "effect/Redacted"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import { identify } from "./NodeProcessTable.ts"
import * as forkWitness from "./internal/forkWitness.ts"
import * as outputTap from "./internal/outputTap.ts"

const unwrap = (value: CommandLine.Word): string => Redacted.isRedacted(value) ? Redacted.value(value) : value

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

const spawnError = (command: ChildProcess.StandardCommand, error: NodeJS.ErrnoException, description: string) =>
  PlatformError.systemError({
    _tag: errnoTag(error.code),
    module: "ChildProcess",
    method: "spawn",
    syscall: error.syscall,
    pathOrDescriptor: command.command,
    description
  })

const toStdio = (
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

interface ExitWatch {
  readonly exited: Deferred.Deferred<ExitStatus>
  status: ExitStatus | undefined
  /** One listener is the common case (the pool's); more (a session close) are rare. */
  listeners: (() => void) | Array<() => void> | undefined
}

/** Records the child's exit and tells the listeners (its own function: its closure holds nothing else). */
const watchExit = (child: NodeChildProcess.ChildProcess): ExitWatch => {
  const watch: ExitWatch = { exited: Deferred.makeUnsafe<ExitStatus>(), status: undefined, listeners: undefined }
  child.on("exit", (code, signal) => {
    const status: ExitStatus = { code, signal }
    watch.status = status
    Deferred.doneUnsafe(watch.exited, Exit.succeed(status))
    const listeners = watch.listeners
    watch.listeners = undefined
    if (typeof listeners === "function") listeners()
    else if (listeners !== undefined) { for (const f of listeners) f() }
  })
  return watch
}

const ignore = () => {}
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

const launch = Effect.fnUntraced(function*(
  command: ChildProcess.StandardCommand,
  env: Readonly<Record<string, string>>
) {
  const options = command.options
  const display = CommandLine.display([command.command, ...command.args])
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
  let cwd: string | undefined
  if (options.cwd !== undefined) {
    const dir = options.cwd
    // Node reports a bad cwd as "spawn <cmd> ENOENT", indistinguishable from a missing executable.
    yield* Effect.tryPromise({
      try: () => fs.promises.access(dir),
      catch: (error) =>
        spawnError(command, error as NodeJS.ErrnoException, `working directory ${dir} is not accessible`)
    })
    cwd = dir
  }
  const stdin = options.stdin === undefined ? "pipe" : toStdio(options.stdin)
  const stdout = toStdio(options.stdout)
  const stderr = toStdio(options.stderr)

  const before = forkWitness.mark()
  // Spawned here, not in a callback: no closure may keep `env` (every process's own copy of the
  // environment) alive for as long as the process lives.
  let child: NodeChildProcess.ChildProcess
  try {
    child = NodeChildProcess.spawn(command.command, command.args.map(unwrap), {
      cwd,
      env,
      stdio: [stdin, stdout, stderr],
      // Own session and process group: the group is the container, and no terminal signal reaches it behind our back.
      detached: process.platform !== "win32",
      shell: options.shell,
      windowsHide: true
    })
  } catch (error) {
    // Node throws, instead of emitting "error", for every errno but EACCES, EAGAIN, EMFILE, ENFILE
    // and ENOENT (lib/internal/child_process.js): E2BIG, ENOTDIR (a cwd that is a file), ...
    const e = error as NodeJS.ErrnoException
    return yield* Effect.fail(spawnError(command, e, `${display}: ${e.code ?? e.message}`))
  }
  const watch = watchExit(child)
  if (child.pid === undefined) {
    // Node reports a failed spawn (a missing executable, EACCES) on the next tick, without a pid.
    return yield* Effect.callback<never, PlatformError.PlatformError>((resume) => {
      child.on("error", (error: NodeJS.ErrnoException) => {
        resume(Effect.fail(spawnError(command, error, `${display}: ${error.code ?? error.message}`)))
      })
    })
  }
  // A pid means the exec succeeded (libuv's spawn returns only then); its "spawn" event is not
  // waited for, which saves a suspension per spawn. A later "error" (a failed kill) must not crash.
  forkWitness.forked()
  child.on("error", ignore)
  const pid = child.pid
  const identity = identify(pid) ?? { pid, startTime: "0", bootId: "unknown" }
  // When the process scope closes (after the teardown), the pipes must not keep the host's event
  // loop alive: a descendant that survived (Escaped) could hold their other end forever.
  if (child.stdin !== null || child.stdout !== null || child.stderr !== null) {
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const stream of [child.stdin, child.stdout, child.stderr]) {
          ;(stream as unknown as { unref?: () => void } | null)?.unref?.()
        }
      })
    )
  }

  let stdinSink: Sink.Sink<void, Uint8Array, never, PlatformError.PlatformError> = Sink.drain
  if (child.stdin !== null) {
    const writable = child.stdin
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
  let out: Stream.Stream<Uint8Array, PlatformError.PlatformError> = child.stdout === null
    ? Stream.empty
    : outputTap.tap(child.stdout, "stdout")
  let err: Stream.Stream<Uint8Array, PlatformError.PlatformError> = child.stderr === null
    ? Stream.empty
    : outputTap.tap(child.stderr, "stderr")
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

  const launched: Launched = {
    pid,
    pgid: pid,
    identity,
    exit: Deferred.await(watch.exited),
    exitStatus: () => watch.status,
    onExit: (f) => {
      if (watch.status !== undefined) f()
      else if (watch.listeners === undefined) watch.listeners = f
      else if (typeof watch.listeners === "function") watch.listeners = [watch.listeners, f]
      else watch.listeners.push(f)
    },
    alone: () => forkWitness.alone(before),
    // Node refuses (returns false) once it has reaped the child, so this never reaches a reused pid.
    signal: (signal) => watch.status === undefined && child.kill(signal),
    io: stdinSink === Sink.drain && out === Stream.empty && err === Stream.empty ? noIo : {
      stdin: stdinSink,
      stdout: out,
      stderr: err,
      // Built when used: most callers never read both streams merged.
      all: Stream.suspend(() => Stream.merge(out, err)),
      getInputFd,
      getOutputFd
    }
  }
  return launched
})

/**
 * @since 0.1.0
 * @category constructors
 */
export const make = (): ProcessLauncher["Service"] =>
  ProcessLauncher.of({
    // Read-only use: the pool builds each child's environment as a new object from it.
    inheritedEnv: () => process.env,
    launch
  })

/**
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<ProcessLauncher> = Layer.sync(ProcessLauncher, make)
