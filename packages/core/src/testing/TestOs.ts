/**
 * A deterministic, in-memory operating system for tests: one object that
 * implements both ports the pool needs (`ProcessTable` and `ProcessLauncher`)
 * over simulated processes whose behaviour the test chooses per command name.
 *
 * Every moment in the simulation is read from Effect's `Clock` and every delay
 * is an `Effect.sleep`, so `TestClock` (from `effect/testing`) drives it: a
 * process that ignores SIGTERM for a 5 s grace period costs no wall time.
 *
 * **Example** (A pool over the simulated OS)
 *
 * ```ts
 * import { Effect, Fiber, Layer } from "effect"
 * import { ChildProcess } from "effect/process"
 * import { TestClock } from "effect/testing"
 * import { ProcessPool } from "@shepherd/core/ProcessPool"
 * import { TestOs } from "@shepherd/core/testing"
 *
 * const os = TestOs.make()
 * os.define("stubborn", { onTerm: "ignore" })
 *
 * // run with `it.effect` (TestClock); close sessions inside the test body so
 * // that no teardown is left to sleep in a finalizer
 * const program = Effect.gen(function*() {
 *   const pool = yield* ProcessPool
 *   yield* pool.spawn(ChildProcess.make("stubborn", []), { session: "s" })
 *   const closing = yield* Effect.forkChild(pool.closeSession("s"))
 *   yield* TestClock.adjust("5 seconds")
 *   const [report] = yield* Fiber.join(closing)
 *   // report._tag === "Forced"; os.signalsSent(): SIGTERM at 0, SIGKILL at 5000
 * }).pipe(Effect.provide(ProcessPool.layer().pipe(Layer.provide(os.layer))))
 * ```
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import type * as PlatformError from "effect/PlatformError"
import * as SimLauncher from "../internal/simLauncher.ts"
import * as SimTable from "../internal/simTable.ts"
import * as SimWorld from "../internal/simWorld.ts"
import { type ExitStatus, ProcessLauncher } from "../ProcessLauncher.ts"
import type { ProcessIdentity } from "../ProcessIdentity.ts"
import { ProcessTable } from "../ProcessTable.ts"
import type { Signal } from "../Signal.ts"

/**
 * How a simulated process answers a graceful (non-`SIGKILL`) signal:
 *
 * - `"exit"`: dies of the signal at once (status `{ code: null, signal }`);
 * - `"ignore"`: keeps running (only `SIGKILL` ends it);
 * - `{ exitAfterMs }`: a handler that cleans up and exits with `code`
 *   (default: the behaviour's `exitCode`, else `0`) after `exitAfterMs`.
 *
 * @since 0.1.0
 * @category models
 */
export type TermResponse =
  | "exit"
  | "ignore"
  | { readonly exitAfterMs: number; readonly code?: number | undefined }

/**
 * The behaviour of every process started with one command name.
 *
 * @since 0.1.0
 * @category models
 */
export interface Behaviour {
  /** Answer of the leader to a graceful signal. Default: `"exit"`. */
  readonly onTerm?: TermResponse | undefined
  /** Answer of the leader's members (`children`, `escapedChildren`) to a graceful signal. Default: `onTerm`. */
  readonly childrenOnTerm?: TermResponse | undefined
  /** The leader exits by itself this many milliseconds after it started. Default: never. */
  readonly exitAfterMs?: number | undefined
  /** The code of a natural exit (and of an `{ exitAfterMs }` handler). Default: `0`. */
  readonly exitCode?: number | undefined
  /** Members started with the leader in its process group (they outlive a natural exit of the leader). */
  readonly children?: number | undefined
  /** Members that carry the leader's `SHEPHERD_ID` but left its group (`setsid`, double fork). */
  readonly escapedChildren?: number | undefined
  /** Group members that survive even `SIGKILL` (uninterruptible sleep); only `TestOs.exit` ends them. */
  readonly unkillable?: number | undefined
  /** The launch fails with a `PlatformError` of this tag (e.g. `"NotFound"`): no process is created. */
  readonly failSpawn?: PlatformError.SystemErrorTag | undefined
  /** Time between the launch request and the process start (overrides the OS-wide `launchDelay`). */
  readonly launchDelayMs?: number | undefined
  /** Resident memory every process of the tree reports through `inspect`. Default: `1024`. */
  readonly rssKiB?: number | undefined
}

/**
 * The role of a simulated process in its tree.
 *
 * @since 0.1.0
 * @category models
 */
export type Role = "leader" | "child" | "escaped" | "unkillable"

/**
 * A simulated process, as the introspection functions report it.
 *
 * @since 0.1.0
 * @category models
 */
export interface ProcessInfo {
  readonly pid: number
  /** The simulated host (`TestOs.hostPid`) for leaders, the leader for members, `1` for escaped members. */
  readonly ppid: number
  readonly pgid: number
  readonly identity: ProcessIdentity
  readonly role: Role
  /** The command name (first word). */
  readonly command: string
  /** The command line, arguments included (`Redacted` ones revealed). */
  readonly line: string
  /** The `SHEPHERD_ID` value of its environment, if any. */
  readonly shepherdId: string | undefined
  /** The environment the launcher was given (shared by all members of the tree). */
  readonly env: Readonly<Record<string, string>>
  /** Clock milliseconds when it started. */
  readonly startedAt: number
  /** Clock milliseconds when it died, if it did. */
  readonly exitedAt: number | undefined
  readonly status: ExitStatus | undefined
}

/**
 * One signal that reached a live process.
 *
 * @since 0.1.0
 * @category models
 */
export interface SignalRecord {
  readonly pid: number
  readonly role: Role
  readonly command: string
  readonly signal: Signal
  /** Clock milliseconds when it was delivered. */
  readonly at: number
}

/**
 * Options of `make`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The host environment `inheritedEnv()` returns. Default: `{}`. */
  readonly env?: Readonly<Record<string, string | undefined>> | undefined
  /** The behaviour of commands that were not `define`d. Default: `{ onTerm: "exit" }`. */
  readonly defaultBehaviour?: Behaviour | undefined
  /** Time every launch takes before the process starts (emulates an await between slot and spawn). */
  readonly launchDelay?: Duration.Input | undefined
}

/**
 * The simulated operating system.
 *
 * @since 0.1.0
 * @category models
 */
export interface TestOs {
  /** Provides `ProcessTable` and `ProcessLauncher` over this simulation. Timers live in the layer's scope. */
  readonly layer: Layer.Layer<ProcessTable | ProcessLauncher>
  /** Sets the behaviour of every later launch of `command` (its first word). */
  readonly define: (command: string, behaviour: Behaviour) => void
  /** Replaces the host environment `inheritedEnv()` returns. */
  readonly setEnv: (env: Readonly<Record<string, string | undefined>>) => void
  /** Makes `members` fail with `ProcessTableError(reason)` (or work again with `undefined`). */
  readonly breakTable: (reason: string | undefined) => void
  /** Ends a process now, whatever its behaviour (a crash, or the end of an uninterruptible sleep). */
  readonly exit: (pid: number, status?: ExitStatus) => Effect.Effect<void>
  /** Ends a process without telling the launcher (a lost exit notification): the pool still tracks it. */
  readonly vanish: (pid: number) => Effect.Effect<void>
  /** Live processes, every role, in start order. */
  readonly alive: () => ReadonlyArray<ProcessInfo>
  /** Every process ever started, dead ones included, in start order. */
  readonly processes: () => ReadonlyArray<ProcessInfo>
  /** The process with this pid, dead or alive. */
  readonly process: (pid: number) => ProcessInfo | undefined
  /** Signals that reached a live process, in delivery order. */
  readonly signalsSent: () => ReadonlyArray<SignalRecord>
  /** Command lines in the order their launch was requested (failed launches included). */
  readonly spawnOrder: () => ReadonlyArray<string>
  /** Launches requested and not yet finished (waiting out their launch delay). */
  readonly launching: () => number
  /** The largest number of leaders alive at the same moment. */
  readonly maxAlive: () => number
  /** The largest number of (alive leaders + launches in progress) at the same moment: the slots really used. */
  readonly maxBusy: () => number
}

/**
 * The pid of the simulated host: the parent of every leader.
 *
 * @since 0.1.0
 * @category constants
 */
export const hostPid = 999

/**
 * Creates a simulated operating system. Nothing runs until its `layer` is
 * built; processes are started by the pool through the launcher.
 *
 * **Details**
 *
 * - `SIGKILL` always kills, except `unkillable` members; a process dies at
 *   once (no zombies), and `exitStatus()` reports it synchronously from then on.
 * - A process "exits" when its leader dies: the launcher's `exit` effect
 *   resolves then. Members do not die with their leader.
 * - `members(container)` returns the live processes that belong to the
 *   container by the rules of `Membership` (its led process group, members
 *   vouched for while the leader lived, and the `SHEPHERD_ID` cookie);
 *   `carriers(prefix)` the live processes whose `SHEPHERD_ID` starts with `prefix`;
 *   `inspect` reports state `S` (`D` for `unkillable` members), `rssKiB` and the command line.
 * - pids are never reused; identities are `(pid, start sequence, "test-os")`,
 *   the start sequence being a decimal counter (ordered like a kernel start time).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options?: Options): TestOs => {
  const world = SimWorld.make(options, hostPid)
  const measure = Effect.sync(() => SimWorld.measure(world))
  const build = Effect.map(
    FiberSet.make<void, never>(),
    (timers) =>
      Context.make(ProcessTable, SimTable.make(world, timers)).pipe(
        Context.add(ProcessLauncher, SimLauncher.make(world, timers))
      )
  )

  return {
    layer: Layer.effectContext(build),
    define: (command, behaviour) => {
      world.behaviours.set(command, behaviour)
    },
    setEnv: (env) => {
      world.hostEnv = { ...env }
    },
    breakTable: (reason) => {
      world.tableBroken = reason
    },
    exit: (pid, status) =>
      Effect.suspend(() => {
        const p = world.byPid.get(pid)
        return p === undefined
          ? Effect.void
          : Effect.andThen(SimWorld.die(p, status ?? { code: 0, signal: null }), measure)
      }),
    vanish: (pid) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.sync(() => {
          const p = world.byPid.get(pid)
          if (p === undefined || !SimWorld.isLive(p)) return
          p.status = { code: null, signal: "SIGKILL" }
          p.exitedAt = now
          SimWorld.measure(world)
        })),
    alive: () => world.all.filter(SimWorld.isLive).map(SimWorld.info),
    processes: () => world.all.map(SimWorld.info),
    process: (pid) => {
      const p = world.byPid.get(pid)
      return p === undefined ? undefined : SimWorld.info(p)
    },
    signalsSent: () => [...world.signals],
    spawnOrder: () => [...world.order],
    launching: () => world.inFlight,
    maxAlive: () => world.peakAlive,
    maxBusy: () => world.peakBusy
  }
}
