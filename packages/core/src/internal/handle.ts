/**
 * The adapter between a supervised tree and Effect's `ChildProcessSpawner`:
 * a tree seen as a `ChildProcessHandle`, and a spawn failure seen as the
 * `PlatformError` a spawner fails with.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as PlatformError from "effect/PlatformError"
import * as ChildProcessSpawner from "effect/process/ChildProcessSpawner"
import * as KillPolicy from "../KillPolicy.ts"
import type { Launched } from "../ProcessLauncher.ts"
import type { SpawnFailure } from "../ShepherdError.ts"
import type { Teardown } from "../Teardown.ts"

/**
 * The `ChildProcessHandle` of a tree: its leader's pid, exit code and I/O;
 * `kill` tears the whole tree down with `policy` overridden by the options.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  launched: Launched,
  policy: KillPolicy.KillPolicy,
  stopWith: (kill: KillPolicy.KillPolicy) => Effect.Effect<Teardown>
): ChildProcessSpawner.ChildProcessHandle =>
  ChildProcessSpawner.makeHandle({
    pid: ChildProcessSpawner.ProcessId(launched.pid),
    exitCode: Effect.flatMap(launched.exit, (status) =>
      status.spawnError !== undefined
        // The command never ran (its containment could not place it): a spawn failure, not an exit code.
        ? Effect.fail(toPlatformError(status.spawnError))
        : status.code !== null
        ? Effect.succeed(ChildProcessSpawner.ExitCode(status.code))
        : Effect.fail(
          PlatformError.systemError({
            _tag: "Unknown",
            module: "ChildProcess",
            method: "exitCode",
            description: `Process interrupted due to receipt of signal: '${status.signal}'`
          })
        )),
    isRunning: Effect.sync(() => launched.exitStatus() === undefined),
    kill: (opts) =>
      Effect.asVoid(stopWith(KillPolicy.override(policy, {
        signal: opts?.killSignal === undefined ? undefined : opts.killSignal as KillPolicy.KillPolicy["signal"],
        grace: opts?.forceKillAfter
      }))),
    ...launched.io,
    // Shepherd never lets a process outlive its scope: unref is a no-op.
    unref: Effect.succeed(Effect.void)
  })

/**
 * A spawn failure as a spawner's `PlatformError`: the OS's own reason when
 * there is one (NotFound, PermissionDenied, ...), `TimedOut` for a slot
 * timeout, `Busy` for a closed pool or the hard cap.
 *
 * @since 0.1.0
 * @category errors
 */
export const toPlatformError = (error: SpawnFailure): PlatformError.PlatformError =>
  PlatformError.systemError({
    _tag: error._tag === "SpawnError"
      ? PlatformError.isPlatformError(error.cause) && error.cause.reason._tag !== "BadArgument"
        ? error.cause.reason._tag
        : "Unknown"
      : error._tag === "SlotTimeout"
      ? "TimedOut"
      : error._tag === "LimitUnavailable"
      ? "Unknown"
      : "Busy",
    module: "Shepherd",
    method: "spawn",
    description: error.message,
    cause: error
  })
