/**
 * The Node launcher: `node:child_process.spawn` in a new session and process
 * group, with exactly the environment the pool computed, output pipes that
 * never block the child, and no kill-on-close of its own (the pool's KillPolicy
 * owns teardown, so the stock spawner's 1 s zombie-counting poll never runs).
 *
 * @since 0.1.0
 */
import { ProcessLauncher } from "@shepherd/core/ProcessLauncher"
import type { Launched } from "@shepherd/core/ProcessLauncher"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as ChildProcess from "effect/process/ChildProcess"
import * as CommandLine from "effect/process/CommandLine"
import * as Redacted from "effect/Redacted"
import * as NodeChildProcess from "node:child_process"
import { identify } from "./NodeProcessTable.ts"
import * as forkWitness from "./internal/forkWitness.ts"
import * as launchIo from "./internal/launchIo.ts"

/** An argument as the child gets it. */
export const unwrap = (value: CommandLine.Word): string => Redacted.isRedacted(value) ? Redacted.value(value) : value

const ignore = () => {}

const launch = Effect.fnUntraced(function*(
  command: ChildProcess.StandardCommand,
  env: Readonly<Record<string, string>>
) {
  const display = CommandLine.display([command.command, ...command.args])
  const cwd = yield* launchIo.checkCommand(command)
  const before = forkWitness.mark()
  // Spawned here, not in a callback: no closure may keep `env` (every process's own copy of the
  // environment) alive for as long as the process lives.
  let child: NodeChildProcess.ChildProcess
  try {
    child = NodeChildProcess.spawn(command.command, command.args.map(unwrap), {
      cwd,
      env,
      stdio: launchIo.stdioOf(command.options),
      // Own session and process group: the group is the container, and no terminal signal reaches it behind our back.
      detached: process.platform !== "win32",
      shell: command.options.shell,
      windowsHide: true
    })
  } catch (error) {
    // Node throws, instead of emitting "error", for every errno but EACCES, EAGAIN, EMFILE, ENFILE
    // and ENOENT (lib/internal/child_process.js): E2BIG, ENOTDIR (a cwd that is a file), ...
    const e = error as NodeJS.ErrnoException
    return yield* Effect.fail(launchIo.spawnError(command, e, `${display}: ${e.code ?? e.message}`))
  }
  const watch = launchIo.watchChild(child)
  if (child.pid === undefined) {
    // Node reports a failed spawn (a missing executable, EACCES) on the next tick, without a pid.
    return yield* Effect.callback<never, ReturnType<typeof launchIo.spawnError>>((resume) => {
      child.on("error", (error: NodeJS.ErrnoException) => {
        resume(Effect.fail(launchIo.spawnError(command, error, `${display}: ${error.code ?? error.message}`)))
      })
    })
  }
  // A pid means the exec succeeded (libuv's spawn returns only then); its "spawn" event is not
  // waited for, which saves a suspension per spawn. A later "error" (a failed kill) must not crash.
  forkWitness.forked()
  child.on("error", ignore)
  const pid = child.pid
  const identity = identify(pid) ?? { pid, startTime: "0", bootId: "unknown" }
  const launched: Launched = {
    pid,
    pgid: pid,
    identity,
    exit: Deferred.await(watch.exited),
    exitStatus: () => watch.status,
    onExit: launchIo.onExit(watch),
    alone: () => forkWitness.alone(before),
    // Node refuses (returns false) once it has reaped the child, so this never reaches a reused pid.
    signal: (signal) => {
      if (watch.status !== undefined || !child.kill(signal)) return false
      forkWitness.signalled()
      return true
    },
    io: yield* launchIo.io(command, child)
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
    launch,
    status: Effect.succeed({ forkFrom: "host", alive: true, deaths: 0 })
  })

/**
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<ProcessLauncher> = Layer.sync(ProcessLauncher, make)
