/**
 * The process-table port: how Shepherd sees and signals OS processes.
 *
 * Core decides *what* must happen (identity-checked signals, "done means no
 * member is alive"); a platform adapter (`@shepherd/node`'s `/proc` table, or
 * the in-memory table in `TestOs` from `@shepherd/core/testing`) knows *how*.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import type { CgroupRef } from "./Containment.ts"
import type { ProcessIdentity } from "./ProcessIdentity.ts"
import type { Signal } from "./Signal.ts"

/**
 * What one supervised tree is: the leader's process group, and the
 * `SHEPHERD_ID` cookie every descendant inherits (so members that left the
 * group with `setsid` or a double fork are still found), and, under cgroup
 * containment, its cgroup leaf (which nothing it forks can leave, whatever it
 * does to its group and environment).
 *
 * @since 0.1.0
 * @category models
 */
export interface Container {
  readonly pgid: number
  readonly shepherdId: string
  readonly leader: ProcessIdentity
  /** The tree's cgroup leaf (cgroup containment); every live process in it is a member. */
  readonly cgroup?: CgroupRef | undefined
  /**
   * The leader is known to have exited (its exit was reported, or its pid is known to be free): a
   * live process holding `pgid` now is another's, whatever its start time, since the id can only be
   * handed out again once the tree's group was empty. Its group is then judged by the cookie alone.
   */
  readonly leaderExited?: boolean | undefined
}

/**
 * The outcome of an identity-checked signal: `sent`; `gone` (no such process,
 * a zombie, or the pid now names another process); `not-ours` (EPERM).
 *
 * @since 0.1.0
 * @category models
 */
export type SignalResult = "sent" | "gone" | "not-ours"

/**
 * A live process that carries a `SHEPHERD_ID`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Carrier {
  readonly identity: ProcessIdentity
  readonly shepherdId: string
  readonly pgid: number
}

/**
 * What the doctor shows of one live process.
 *
 * @since 0.1.0
 * @category models
 */
export interface ProcessInfo {
  readonly pid: number
  readonly ppid: number
  readonly pgid: number
  /** Kernel state letter (`R`, `S`, `D`, `T`, `Z`, ...). */
  readonly state: string
  readonly rssKiB: number
  readonly command: string
}

/**
 * The process table could not be read.
 *
 * @since 0.1.0
 * @category errors
 */
export class ProcessTableError extends Schema.TaggedError<ProcessTableError>()("ProcessTableError", {
  reason: Schema.String
}) {}

/**
 * @since 0.1.0
 * @category services
 */
export class ProcessTable extends Context.Service<ProcessTable, {
  /** Live (non-zombie) members of a container: its process group plus every process carrying its cookie. */
  readonly members: (container: Container) => Effect.Effect<ReadonlyArray<ProcessIdentity>, ProcessTableError>
  /** The process still exists with the same start time and is not a zombie. */
  readonly isAlive: (identity: ProcessIdentity) => Effect.Effect<boolean>
  /**
   * Live processes of ours whose `SHEPHERD_ID` starts with `prefix`. With
   * `notBefore` (a start time), older processes are skipped cheaply.
   */
  readonly carriers: (
    prefix: string,
    options?: { readonly notBefore?: string | undefined }
  ) => Effect.Effect<ReadonlyArray<Carrier>, ProcessTableError>
  /** Describes a process for diagnostics, if `identity` still names it. */
  readonly inspect: (identity: ProcessIdentity) => Effect.Effect<ProcessInfo | undefined>
  /** Sends `signal` only if `identity` still names the same live process, owned by us. */
  readonly signal: (identity: ProcessIdentity, signal: Signal) => Effect.Effect<SignalResult>
  /**
   * SIGKILLs every process in the container's cgroup at once, forks included
   * (`cgroup.kill`); `false` when the container has no cgroup (or it is gone,
   * or no longer the recorded one). Optional: tables without cgroups omit it.
   */
  readonly killContainer?: ((container: Container) => Effect.Effect<boolean>) | undefined
  /**
   * Calls `f` once, from an event, when the container's cgroup holds no live
   * process any more (zombies do not count); returns a function that stops
   * watching. A hint that wakes a teardown early: it never decides alone.
   * Optional: tables without cgroups omit it.
   */
  readonly watchEmpty?: ((container: Container, f: () => void) => () => void) | undefined
}>()("@shepherd/core/ProcessTable") {}
