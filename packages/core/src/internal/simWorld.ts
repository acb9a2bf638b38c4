/**
 * The state of `TestOs`'s simulated operating system: one record for the
 * processes, the signals, the launch counters, the behaviours, the host
 * environment and the broken-table switch, and small functions over it
 * (liveness, death, the peak counters, and what `Membership` sees of a pid).
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberSet from "effect/FiberSet"
import type { ExitStatus } from "../ProcessLauncher.ts"
import * as Membership from "../Membership.ts"
import type { ProcessIdentity } from "../ProcessIdentity.ts"
import type { Behaviour, Options, ProcessInfo, SignalRecord, TermResponse } from "../testing/TestOs.ts"

/**
 * A simulated process: the public view plus what only the simulation reads.
 *
 * @since 0.1.0
 * @category models
 */
export interface SimProcess extends ProcessInfo {
  exitedAt: number | undefined
  status: ExitStatus | undefined
  readonly rssKiB: number
  readonly onTerm: TermResponse
  readonly exitCode: number
  /** Resolved when it dies (leaders only: the launcher's `exit`). */
  readonly exited: Deferred.Deferred<ExitStatus> | undefined
  /** Who vouched for its group when it started (`Membership.vouch`). */
  readonly vouched: string | undefined
  /** A graceful handler is already running. */
  terminating: boolean
}

/**
 * @since 0.1.0
 * @category models
 */
export interface SimWorld {
  readonly behaviours: Map<string, Behaviour>
  readonly defaultBehaviour: Behaviour
  readonly defaultDelayMs: number
  hostEnv: Readonly<Record<string, string | undefined>>
  /** The reason `members` and `carriers` fail with, if the table is broken. */
  tableBroken: string | undefined
  /** Every process ever started, in start order. */
  readonly all: Array<SimProcess>
  readonly byPid: Map<number, SimProcess>
  readonly signals: Array<SignalRecord>
  /** Command lines in the order their launch was requested. */
  readonly order: Array<string>
  nextPid: number
  sequence: number
  /** Launches waiting out their launch delay. */
  inFlight: number
  peakAlive: number
  peakBusy: number
  readonly host: Membership.Host
  /** What the membership rules see of a pid: a live process (no zombies here), or nothing. */
  readonly observe: Membership.Observe
}

/**
 * The fibers of delayed effects (graceful handlers, natural exits), owned by the layer's scope.
 *
 * @since 0.1.0
 * @category models
 */
export type Timers = FiberSet.FiberSet<void, never>

/**
 * The boot id of every simulated identity.
 *
 * @since 0.1.0
 * @category constants
 */
export const bootId = "test-os"

/**
 * @since 0.1.0
 * @category guards
 */
export const isLive = (p: SimProcess): boolean => p.status === undefined

/**
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options | undefined, hostPid: number): SimWorld => {
  const byPid = new Map<number, SimProcess>()
  return {
    behaviours: new Map(),
    defaultBehaviour: options?.defaultBehaviour ?? { onTerm: "exit" },
    defaultDelayMs: options?.launchDelay === undefined
      ? 0
      : Duration.toMillis(Duration.fromInputUnsafe(options.launchDelay)),
    hostEnv: { ...options?.env },
    tableBroken: undefined,
    all: [],
    byPid,
    signals: [],
    order: [],
    nextPid: 1000,
    sequence: 0,
    inFlight: 0,
    peakAlive: 0,
    peakBusy: 0,
    host: { pid: hostPid, bootId },
    observe: (pid) => {
      const p = byPid.get(pid)
      return p !== undefined && isLive(p) ? { startTime: p.identity.startTime, state: state(p) } : undefined
    }
  }
}

/**
 * The `ps` state of a live process: `D` (uninterruptible sleep) for `unkillable` members, else `S`.
 *
 * @since 0.1.0
 * @category getters
 */
export const state = (p: SimProcess): "D" | "S" => p.role === "unkillable" ? "D" : "S"

/**
 * The public view of a process, a snapshot.
 *
 * @since 0.1.0
 * @category getters
 */
export const info = (p: SimProcess): ProcessInfo => {
  const { exitCode: _c, exited: _e, onTerm: _o, rssKiB: _r, terminating: _t, vouched: _v, ...view } = p
  return view
}

/**
 * Records the peaks of alive leaders and of busy slots (alive leaders + launches in progress).
 *
 * @since 0.1.0
 * @category combinators
 */
export const measure = (world: SimWorld): void => {
  let leaders = 0
  for (const p of world.all) if (p.role === "leader" && isLive(p)) leaders++
  if (leaders > world.peakAlive) world.peakAlive = leaders
  if (leaders + world.inFlight > world.peakBusy) world.peakBusy = leaders + world.inFlight
}

/**
 * Ends a live process now (no zombies) and resolves its `exited`.
 *
 * @since 0.1.0
 * @category combinators
 */
export const die = (p: SimProcess, status: ExitStatus): Effect.Effect<void> =>
  Effect.flatMap(Clock.currentTimeMillis, (now) =>
    Effect.sync(() => {
      if (!isLive(p)) return
      p.status = status
      p.exitedAt = now
      if (p.exited !== undefined) Deferred.doneUnsafe(p.exited, Exit.succeed(status))
    }))

/**
 * The live process of an identity, by the rules of `Membership.liveness`.
 *
 * @since 0.1.0
 * @category getters
 */
export const lookup = (world: SimWorld, identity: ProcessIdentity): SimProcess | undefined =>
  Membership.liveness(identity, world.host, world.observe) === "alive" ? world.byPid.get(identity.pid) : undefined

/**
 * What the membership rules know of a process.
 *
 * @since 0.1.0
 * @category getters
 */
export const candidate = (p: SimProcess): Membership.Candidate => ({
  pgid: p.pgid,
  start: BigInt(p.identity.startTime),
  cookie: p.shepherdId,
  vouched: p.vouched
})

/**
 * Runs `effect` after `ms` milliseconds of `Clock` time in a fiber of `timers`
 * (at once when `ms <= 0`). Timers are interruptible whatever the caller's
 * mask: closing the layer must never wait for them.
 *
 * @since 0.1.0
 * @category combinators
 */
export const after = (timers: Timers, ms: number, effect: Effect.Effect<void>): Effect.Effect<void> =>
  ms <= 0
    ? effect
    : Effect.asVoid(FiberSet.run(timers, Effect.interruptible(Effect.andThen(Effect.sleep(ms), effect))))
