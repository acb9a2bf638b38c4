/**
 * The launcher under cgroup containment: the Node launcher, with each tree
 * started in a cgroup leaf of its own (created in its session's cgroup, with
 * its limits, and removed when the pool closes the tree's scope).
 *
 * With the `wrapper` placement the command runs through `/bin/sh`, which joins
 * the leaf and then `exec`s it (`wrapExact`: same pid, same environment), so
 * everything it ever forks is in the leaf. Because `spawn` now starts the
 * shell, the command is first looked up as `exec` would (PATH of its own
 * environment, its working directory), so that a missing or non-executable
 * command, or a script whose `#!` interpreter is missing, still fails the
 * spawn with `NotFound`/`PermissionDenied`. A wrapper
 * that exits 125 in a leaf where nothing ever ran (no CPU time in `cpu.stat`)
 * could not place the command: its exit status carries a `SpawnError`
 * (`Containment`) instead of passing 125 off as the command's own code.
 *
 * With `post-spawn` the pid is moved after `spawn()` returned.
 *
 * A launched tree's `alone` reads the leaf: no live process in it but the
 * leader is the proof (stronger than the fork witness, and one small read).
 *
 * @since 0.2.0
 */
import type { ExitStatus, Launched, LaunchOptions } from "@shepherd/core/ProcessLauncher"
import { ProcessLauncher } from "@shepherd/core/ProcessLauncher"
import { LimitUnavailable, SpawnError } from "@shepherd/core/ShepherdError"
import * as Effect from "effect/Effect"
import * as PlatformError from "effect/PlatformError"
import * as ChildProcess from "effect/process/ChildProcess"
import * as Redacted from "effect/Redacted"
import * as fs from "node:fs"
import * as path from "node:path"
import { type Cgroup, CgroupFailure, readIn, withVerified } from "./cgroupFs.ts"
import { placeUnsafe } from "./cgroupMembers.ts"
import { placementFailedCode, wrapExact } from "./cgroupPlacement.ts"
import { type CgroupPool, createLeaf, LimitFailure, releaseLeaf } from "./cgroupPool.ts"
import * as cgroupTable from "./cgroupTable.ts"

// dash's default search path, used when the environment has no PATH.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

const executable = (file: string): "ok" | "ENOENT" | "EACCES" => {
  try {
    if (!fs.statSync(file).isFile()) return "EACCES"
    fs.accessSync(file, fs.constants.X_OK)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    return code === "ENOENT" || code === "ENOTDIR" ? "ENOENT" : "EACCES"
  }
  return interpreterOf(file)
}

const head = Buffer.alloc(256)

/**
 * A script's `#!` interpreter as `execve` would find it: a missing one fails
 * a direct spawn with ENOENT, while through the wrapper the shell's failed
 * `exec` would only be an exit status 127. "ok" when the file is no script or
 * cannot be read (the exec decides).
 */
const interpreterOf = (file: string): "ok" | "ENOENT" | "EACCES" => {
  let n: number
  try {
    // Non-blocking: a file swapped for a FIFO since the stat must not block the host in open().
    const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY)
    try {
      n = fs.readSync(fd, head, 0, head.length, 0)
    } finally {
      fs.closeSync(fd)
    }
  } catch {
    return "ok"
  }
  if (n < 3 || head[0] !== 0x23 || head[1] !== 0x21) return "ok"
  const line = head.toString("latin1", 2, n).split("\n")[0]!.trim()
  const interpreter = line.split(/[ \t]/)[0] ?? ""
  if (!interpreter.startsWith("/")) return "ok"
  try {
    if (!fs.statSync(interpreter).isFile()) return "EACCES"
    fs.accessSync(interpreter, fs.constants.X_OK)
    return "ok"
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    return code === "ENOENT" || code === "ENOTDIR" ? "ENOENT" : "EACCES"
  }
}

/** Where each command was found last, by working directory, PATH and name. */
const found = new Map<string, string>()

/**
 * How `exec` would find `file`: `ok`, or the errno a direct spawn would have failed with.
 *
 * @since 0.2.0
 * @category placement
 */
export const lookUp = (file: string, pathVariable: string | undefined, cwd: string): "ok" | "ENOENT" | "EACCES" => {
  if (file.includes("/")) return executable(path.resolve(cwd, file))
  // Where it was found last time is checked first: one stat per spawn rather than one per PATH entry.
  const key = `${cwd}\0${pathVariable}\0${file}`
  const known = found.get(key)
  if (known !== undefined && executable(known) === "ok") return "ok"
  let denied = false
  for (const dir of (pathVariable ?? defaultPath).split(":")) {
    const candidate = path.resolve(cwd, dir, file)
    const result = executable(candidate)
    if (result === "ok") {
      if (found.size >= 256) found.clear()
      found.set(key, candidate)
      return "ok"
    }
    if (result === "EACCES") denied = true
  }
  return denied ? "EACCES" : "ENOENT"
}

/**
 * Nothing ever ran in the leaf: no CPU time was spent in it, or it is not there any more (only we
 * remove it, once the tree is gone; a leaf removed under a live wrapper could not receive it).
 */
const neverRan = (leaf: Cgroup): boolean => {
  try {
    return withVerified(leaf, (dir) => /^usage_usec 0$/m.test(readIn(dir, "cpu.stat")))
  } catch (error) {
    // Otherwise it cannot be told: the exit status is the command's own.
    return error instanceof CgroupFailure && (error.reason === "NotFound" || error.reason === "Swapped")
  }
}

const unwrapWord = (word: string | Redacted.Redacted<string>): string =>
  Redacted.isRedacted(word) ? Redacted.value(word) : word

// A generator function of its own (not a closure over its arguments): no callback it creates may
// keep `env`, the process's own copy of the environment, alive for as long as the process lives.
const launchInLeaf = Effect.fnUntraced(function*(
  base: ProcessLauncher["Service"],
  p: CgroupPool,
  command: ChildProcess.StandardCommand,
  env: Readonly<Record<string, string>>,
  options: LaunchOptions
) {
  const { display, session } = options
  const shellOption = command.options.shell
  // What the base refuses (shell with arguments, extra descriptors) it refuses unwrapped.
  if (
    (shellOption !== undefined && shellOption !== false && command.args.length > 0) ||
    (command.options.additionalFds !== undefined && Object.keys(command.options.additionalFds).length > 0)
  ) {
    return yield* base.launch(command, env, options)
  }
  const file = shellOption === undefined || shellOption === false
    ? command.command
    : typeof shellOption === "string"
    ? shellOption
    : "/bin/sh"
  const args = shellOption === undefined || shellOption === false ? command.args : ["-c", command.command]

  let wrapper = p.placement === "wrapper"
  if (wrapper) {
    const cwd = command.options.cwd ?? process.cwd()
    // A working directory that is not there is the base's error to report (it checks first).
    const found = fs.existsSync(cwd) ? lookUp(file, env.PATH, cwd) : "ok"
    if (found !== "ok") {
      return yield* PlatformError.systemError({
        _tag: found === "ENOENT" ? "NotFound" : "PermissionDenied",
        module: "ChildProcess",
        method: "spawn",
        syscall: `spawn ${file}`,
        pathOrDescriptor: command.command,
        description: `${display}: ${found}`
      })
    }
  }

  const leaf = yield* Effect.try({
    try: () => createLeaf(p, options),
    catch: (error) =>
      error instanceof LimitFailure
        ? new LimitUnavailable({ ...error.refusal, session })
        : new SpawnError({
          session,
          command: display,
          kind: "Containment",
          reason: `cannot create the tree's cgroup: ${error instanceof Error ? error.message : String(error)}`
        })
  })
  // Registered before the launch: the scope closes it after the launch's own finalizers.
  yield* Effect.addFinalizer(() => releaseLeaf(p, session, leaf))

  let launched: Launched
  const line = wrapper ? wrapExact(leaf, file, args.map(unwrapWord), env) : undefined
  if (line !== undefined && !("unwrappable" in line)) {
    // The command's own argument words (Redacted ones included) stay as they were given.
    const words = [...line.args.slice(0, line.args.length - args.length), ...args]
    launched = yield* base.launch(
      ChildProcess.make(line.command, words, { ...command.options, shell: false }),
      line.env,
      options
    )
  } else {
    if (line !== undefined) {
      yield* Effect.logDebug(`cgroup placement after spawn for ${display}: ${line.unwrappable}`)
    }
    wrapper = false
    launched = yield* base.launch(command, env, options)
    try {
      placeUnsafe(leaf, launched.pid)
    } catch (error) {
      // Gone already: it ran (briefly) outside the leaf; its group and cookie still cover it.
      if (!(error instanceof CgroupFailure && error.reason === "NoSuchProcess")) {
        launched.signal?.("SIGKILL")
        return yield* new SpawnError({
          session,
          command: display,
          kind: "Containment",
          reason: `cannot move pid ${launched.pid} into its cgroup: ${
            error instanceof Error ? error.message : String(error)
          }`
        })
      }
    }
  }

  const ref = cgroupTable.toRef(leaf)
  const pid = launched.pid
  let patched: ExitStatus | undefined
  // Decided once, by the first to ask after the exit: the exit callback, or whoever the exit woke
  // first. Always before the leaf's removal, which waits for the teardown (that asks too).
  const exitStatus = (): ExitStatus | undefined => {
    if (patched !== undefined || !wrapper) return patched ?? launched.exitStatus()
    const status = launched.exitStatus()
    if (status === undefined) return undefined
    patched = status.code === placementFailedCode && neverRan(leaf)
      ? {
        ...status,
        spawnError: new SpawnError({
          session,
          command: display,
          kind: "Containment",
          reason: `the command never ran: it could not be placed in its cgroup ${leaf.path}`
        })
      }
      : status
    return patched
  }
  if (wrapper) launched.onExit?.(() => void exitStatus())
  const decorated: Launched = {
    ...launched,
    cgroup: ref,
    exitStatus,
    exit: Effect.map(launched.exit, (status) => exitStatus() ?? status),
    // The leaf holds every descendant (wrapper) or every one forked after the move (post-spawn,
    // where the fork witness must prove the first moments too).
    alone: wrapper
      ? () => cgroupTable.alone(ref, pid) ?? launched.alone?.() ?? false
      : () => launched.alone?.() === true && cgroupTable.alone(ref, pid) === true
  }
  return decorated
})

/**
 * The launcher of `pools` (by pool id): a launch for a pool without cgroups goes to `base` as it is.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = (
  base: ProcessLauncher["Service"],
  pools: ReadonlyMap<string, CgroupPool>
): ProcessLauncher["Service"] =>
  ProcessLauncher.of({
    inheritedEnv: base.inheritedEnv,
    status: base.status,
    launch: (command, env, options) => {
      const pool = options === undefined ? undefined : pools.get(options.poolId)
      return pool === undefined || options === undefined
        ? base.launch(command, env, options)
        : launchInLeaf(base, pool, command, env, options)
    }
  })
