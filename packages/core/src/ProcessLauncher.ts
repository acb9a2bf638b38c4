/**
 * The launcher port: starts one OS process (never a pipeline) in its own
 * process group, with exactly the environment it is given, and without any
 * kill-on-close behaviour of its own: the pool owns the teardown.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type * as PlatformError from "effect/PlatformError"
import type * as ChildProcess from "effect/process/ChildProcess"
import type { ChildProcessHandle } from "effect/process/ChildProcessSpawner"
import type * as Scope from "effect/Scope"
import type { CgroupRef, Limits } from "./Containment.ts"
import type { ProcessIdentity } from "./ProcessIdentity.ts"
import type { LimitUnavailable, SpawnError } from "./ShepherdError.ts"
import type { Signal } from "./Signal.ts"

/**
 * How the leader ended: an exit code, or the signal that killed it.
 *
 * @since 0.1.0
 * @category models
 */
export interface ExitStatus {
  readonly code: number | null
  readonly signal: string | null
  /**
   * Set when the command never ran: the containment could not place it (its
   * placement wrapper exited before running anything). Optional.
   */
  readonly spawnError?: SpawnError | undefined
}

/**
 * What the pool tells a launcher about the tree it launches.
 *
 * @since 0.2.0
 * @category models
 */
export interface LaunchOptions {
  readonly poolId: string
  readonly session: string
  readonly shepherdId: string
  /** The display form of the command (for error messages). */
  readonly display: string
  /** Limits of this tree (checked by the pool against the containment before the launch). */
  readonly limits?: Limits | undefined
  /** Limits of its session. */
  readonly sessionLimits?: Limits | undefined
}

/**
 * A started process, as the launcher reports it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Launched {
  readonly pid: number
  readonly pgid: number
  readonly identity: ProcessIdentity
  /** Waits for the leader to exit; never fails. */
  readonly exit: Effect.Effect<ExitStatus>
  /** The leader's exit status if it has exited, synchronously. */
  readonly exitStatus: () => ExitStatus | undefined
  /**
   * Signals the leader, only while it provably is the leader: the host
   * launcher through its own handle to its unreaped child (which cannot name
   * another process); the fork helper's while the leader's `/proc/<pid>/stat`,
   * kept open since its identity was checked, shows it running (the descriptor
   * names the process, not the pid). `false` when it is not sent (reaped,
   * gone, cannot tell). Optional.
   */
  readonly signal?: ((signal: Signal) => boolean) | undefined
  /**
   * Whether the leader provably has no descendant right now (nothing but the
   * launcher's own children was forked since its fork), so that no scan is
   * needed to find its tree's other members. `false` means "not proven", and
   * is always a correct answer. Optional.
   */
  readonly alone?: (() => boolean) | undefined
  /**
   * Whether the leader's pid is provably free already (it was reaped), before its exit is reported
   * (`exitStatus`): the fork helper reaps a leader before the host hears of it. `false` means "not
   * proven". Optional.
   */
  readonly reaped?: (() => boolean) | undefined
  /**
   * Calls `f` once, synchronously, as soon as the leader's exit is known (after
   * `exitStatus` is set; at once if it is known already). Lets the pool react
   * to an exit without a fiber per process waiting on `exit`. Optional.
   */
  readonly onExit?: ((f: () => void) => void) | undefined
  /** The tree's cgroup leaf, under cgroup containment. Optional. */
  readonly cgroup?: CgroupRef | undefined
  /** The I/O half of an Effect `ChildProcessHandle`. */
  readonly io: Pick<ChildProcessHandle, "stdin" | "stdout" | "stderr" | "all" | "getInputFd" | "getOutputFd">
}

/**
 * What forks a pool's trees, as the doctor reports it.
 *
 * @since 0.4.0
 * @category models
 */
export interface LauncherStatus {
  /** `"host"` (the host forks) or `"helper"` (the pool's fork helper forks). */
  readonly forkFrom: "host" | "helper"
  /** The fork helper's pid, while one runs. */
  readonly pid?: number | undefined
  /** A fork helper runs and has said it is loaded. */
  readonly alive: boolean
  /** Fork helpers that died or were killed (stuck) so far. */
  readonly deaths: number
  /** Why the last one died. */
  readonly lastError?: string | undefined
  /** Why the host forks although a helper was asked for (it could not load, or died too often). */
  readonly fallback?: string | undefined
}

/**
 * @since 0.1.0
 * @category services
 */
export class ProcessLauncher extends Context.Service<ProcessLauncher, {
  /** The host environment children inherit (read, never mutated). */
  readonly inheritedEnv: () => Readonly<Record<string, string | undefined>>
  /**
   * Starts `command` with exactly `env`. I/O resources (and, under cgroup
   * containment, the tree's leaf) live in the current scope, which the pool
   * closes once the tree is gone.
   */
  readonly launch: (
    command: ChildProcess.StandardCommand,
    env: Readonly<Record<string, string>>,
    options?: LaunchOptions
  ) => Effect.Effect<Launched, PlatformError.PlatformError | SpawnError | LimitUnavailable, Scope.Scope>
  /** What forks the trees (for the doctor). Optional: a launcher without it is not reported. */
  readonly status?: Effect.Effect<LauncherStatus> | undefined
}>()("@shepherd/core/ProcessLauncher") {}
