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
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as PlatformError from "effect/PlatformError"
import type * as ChildProcess from "effect/process/ChildProcess"
import * as Redacted from "effect/Redacted"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import { type ExitStatus, type Launched, ProcessLauncher } from "../ProcessLauncher.ts"
import * as Membership from "../Membership.ts"
import type { ProcessIdentity } from "../ProcessIdentity.ts"
import {
  type Carrier,
  type Container,
  type ProcessInfo as TableProcessInfo,
  ProcessTable,
  ProcessTableError,
  type SignalResult
} from "../ProcessTable.ts"
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

interface SimProcess {
  readonly pid: number
  readonly ppid: number
  readonly pgid: number
  readonly rssKiB: number
  readonly identity: ProcessIdentity
  readonly role: Role
  readonly command: string
  readonly line: string
  readonly shepherdId: string | undefined
  readonly env: Readonly<Record<string, string>>
  readonly startedAt: number
  readonly onTerm: TermResponse
  readonly exitCode: number
  readonly exited: Deferred.Deferred<ExitStatus> | undefined
  /** Who vouched for its group when it started (`Membership.vouch`). */
  readonly vouched: string | undefined
  exitedAt: number | undefined
  status: ExitStatus | undefined
  /** A graceful handler is already running. */
  terminating: boolean
}

const bootId = "test-os"

/**
 * The pid of the simulated host: the parent of every leader.
 *
 * @since 0.1.0
 * @category constants
 */
export const hostPid = 999

const unwrap = (word: string | Redacted.Redacted<string>): string =>
  Redacted.isRedacted(word) ? Redacted.value(word) : word

const info = (p: SimProcess): ProcessInfo => ({
  pid: p.pid,
  ppid: p.ppid,
  pgid: p.pgid,
  identity: p.identity,
  role: p.role,
  command: p.command,
  line: p.line,
  shepherdId: p.shepherdId,
  env: p.env,
  startedAt: p.startedAt,
  exitedAt: p.exitedAt,
  status: p.status
})

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
  const behaviours = new Map<string, Behaviour>()
  const defaultBehaviour: Behaviour = options?.defaultBehaviour ?? { onTerm: "exit" }
  const defaultDelayMs = options?.launchDelay === undefined
    ? 0
    : Duration.toMillis(Duration.fromInputUnsafe(options.launchDelay))
  let hostEnv: Readonly<Record<string, string | undefined>> = { ...options?.env }
  let tableBroken: string | undefined
  const all: Array<SimProcess> = []
  const byPid = new Map<number, SimProcess>()
  const signals: Array<SignalRecord> = []
  const order: Array<string> = []
  let nextPid = 1000
  let sequence = 0
  let inFlight = 0
  let peakAlive = 0
  let peakBusy = 0

  const isLive = (p: SimProcess) => p.status === undefined
  const aliveLeaders = () => {
    let n = 0
    for (const p of all) if (p.role === "leader" && isLive(p)) n++
    return n
  }
  const measure = () => {
    const leaders = aliveLeaders()
    if (leaders > peakAlive) peakAlive = leaders
    if (leaders + inFlight > peakBusy) peakBusy = leaders + inFlight
  }

  const die = (p: SimProcess, status: ExitStatus): Effect.Effect<void> =>
    Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Effect.sync(() => {
        if (!isLive(p)) return
        p.status = status
        p.exitedAt = now
        if (p.exited !== undefined) Deferred.doneUnsafe(p.exited, Exit.succeed(status))
      }))

  // What the membership rules see of a pid: a live process (no zombies here), or nothing.
  const host: Membership.Host = { pid: hostPid, bootId }
  const observe: Membership.Observe = (pid) => {
    const p = byPid.get(pid)
    return p !== undefined && isLive(p) ? { startTime: p.identity.startTime, state: p.role === "unkillable" ? "D" : "S" } : undefined
  }
  const lookup = (identity: ProcessIdentity): SimProcess | undefined =>
    Membership.liveness(identity, host, observe) === "alive" ? byPid.get(identity.pid) : undefined
  const candidate = (p: SimProcess): Membership.Candidate => ({
    pgid: p.pgid,
    start: BigInt(p.identity.startTime),
    cookie: p.shepherdId,
    vouched: p.vouched
  })

  const build = Effect.gen(function*() {
    const timers = yield* FiberSet.make<void, never>()
    // Timers are interruptible whatever the caller's mask: closing the layer must never wait for them.
    const after = (ms: number, effect: Effect.Effect<void>): Effect.Effect<void> =>
      ms <= 0
        ? effect
        : Effect.asVoid(FiberSet.run(timers, Effect.interruptible(Effect.andThen(Effect.sleep(ms), effect))))

    const deliver = (p: SimProcess, signal: Signal): Effect.Effect<void> => {
      if (p.role === "unkillable") return Effect.void
      if (signal === "SIGKILL") return die(p, { code: null, signal })
      const answer = p.onTerm
      if (answer === "ignore") return Effect.void
      if (answer === "exit") return die(p, { code: null, signal })
      if (p.terminating) return Effect.void
      p.terminating = true
      return after(answer.exitAfterMs, die(p, { code: answer.code ?? p.exitCode, signal: null }))
    }

    const table = ProcessTable.of({
      members: (container: Container) =>
        Effect.suspend(() =>
          tableBroken !== undefined
            ? Effect.fail(new ProcessTableError({ reason: tableBroken }))
            : Effect.sync(() => {
              const judged = Membership.judge(container, host, observe)
              return all.filter((p) => isLive(p) && Membership.isMember(judged, candidate(p))).map((p) => p.identity)
            })
        ),
      isAlive: (identity) => Effect.sync(() => lookup(identity) !== undefined),
      inspect: (identity) =>
        Effect.sync((): TableProcessInfo | undefined => {
          const p = lookup(identity)
          return p === undefined ? undefined : {
            pid: p.pid,
            ppid: p.ppid,
            pgid: p.pgid,
            state: p.role === "unkillable" ? "D" : "S",
            rssKiB: p.rssKiB,
            command: p.line
          }
        }),
      carriers: (prefix, carrierOptions) =>
        Effect.suspend(() => {
          if (tableBroken !== undefined) return Effect.fail(new ProcessTableError({ reason: tableBroken }))
          const notBefore = carrierOptions?.notBefore === undefined ? undefined : Number(carrierOptions.notBefore)
          const found: Array<Carrier> = []
          for (const p of all) {
            if (!isLive(p) || p.shepherdId === undefined || !p.shepherdId.startsWith(prefix)) continue
            if (notBefore !== undefined && Number(p.identity.startTime) < notBefore) continue
            found.push({ identity: p.identity, shepherdId: p.shepherdId, pgid: p.pgid })
          }
          return Effect.succeed(found)
        }),
      signal: (identity, signal) =>
        Effect.suspend((): Effect.Effect<SignalResult> => {
          const verdict = Membership.signalVerdict(identity, host, observe)
          const p = byPid.get(identity.pid)
          if (verdict !== "send" || p === undefined) return Effect.succeed(verdict === "not-ours" ? verdict : "gone")
          return Effect.flatMap(Clock.currentTimeMillis, (at) => {
            signals.push({ pid: p.pid, role: p.role, command: p.command, signal, at })
            return Effect.as(Effect.andThen(deliver(p, signal), Effect.sync(measure)), "sent" as const)
          })
        })
    })

    const launch = Effect.fnUntraced(function*(
      command: ChildProcess.StandardCommand,
      env: Readonly<Record<string, string>>
    ) {
      const line = [command.command, ...command.args.map(unwrap)].join(" ")
      const behaviour = behaviours.get(command.command) ?? defaultBehaviour
      const delayMs = behaviour.launchDelayMs ?? defaultDelayMs
      order.push(line)
      inFlight++
      measure()
      yield* Effect.sleep(delayMs).pipe(Effect.ensuring(Effect.sync(() => inFlight--)))
      if (behaviour.failSpawn !== undefined) {
        return yield* Effect.fail(PlatformError.systemError({
          _tag: behaviour.failSpawn,
          module: "ChildProcess",
          method: "spawn",
          syscall: `spawn ${command.command}`,
          pathOrDescriptor: command.command,
          description: `${line}: simulated ${behaviour.failSpawn}`
        }))
      }
      const now = yield* Clock.currentTimeMillis
      const leaderTerm = behaviour.onTerm ?? "exit"
      const shepherdId = env.SHEPHERD_ID
      const exitCode = behaviour.exitCode ?? 0
      const start = (
        role: Role,
        parent: SimProcess | undefined,
        exited?: Deferred.Deferred<ExitStatus>
      ): SimProcess => {
        const pid = nextPid++
        const pgid = parent === undefined || role === "escaped" ? pid : parent.pgid
        const startTime = String(++sequence)
        const vouched = Membership.vouch(
          { pid, pgid, startTime, start: BigInt(startTime) },
          (group) => {
            const leader = observe(group)
            return leader === undefined || leader === "unreadable" ? undefined : leader.startTime
          },
          parent === undefined ? undefined : candidate(parent)
        )
        const p: SimProcess = {
          pid,
          ppid: parent === undefined ? hostPid : role === "escaped" ? 1 : parent.pid,
          pgid,
          rssKiB: behaviour.rssKiB ?? 1024,
          identity: { pid, startTime, bootId },
          role,
          command: command.command,
          line,
          shepherdId,
          env,
          startedAt: now,
          onTerm: role === "leader" ? leaderTerm : behaviour.childrenOnTerm ?? leaderTerm,
          exitCode,
          exited,
          vouched,
          exitedAt: undefined,
          status: undefined,
          terminating: false
        }
        all.push(p)
        byPid.set(pid, p)
        return p
      }
      const exited = Deferred.makeUnsafe<ExitStatus>()
      const leader = start("leader", undefined, exited)
      for (let i = 0; i < (behaviour.children ?? 0); i++) start("child", leader)
      for (let i = 0; i < (behaviour.unkillable ?? 0); i++) start("unkillable", leader)
      for (let i = 0; i < (behaviour.escapedChildren ?? 0); i++) start("escaped", leader)
      measure()
      if (behaviour.exitAfterMs !== undefined) {
        const natural = die(leader, { code: exitCode, signal: null })
        yield* after(behaviour.exitAfterMs, Effect.andThen(natural, Effect.sync(measure)))
      }
      const launched: Launched = {
        pid: leader.pid,
        pgid: leader.pgid,
        identity: leader.identity,
        exit: Deferred.await(exited),
        exitStatus: () => leader.status,
        io: {
          stdin: Sink.drain,
          stdout: Stream.empty,
          stderr: Stream.empty,
          all: Stream.empty,
          getInputFd: () => Sink.drain,
          getOutputFd: () => Stream.empty
        }
      }
      return launched
    })

    const launcher = ProcessLauncher.of({
      inheritedEnv: () => ({ ...hostEnv }),
      launch
    })
    return Context.make(ProcessTable, table).pipe(Context.add(ProcessLauncher, launcher))
  })

  return {
    layer: Layer.effectContext(build),
    define: (command, behaviour) => {
      behaviours.set(command, behaviour)
    },
    setEnv: (env) => {
      hostEnv = { ...env }
    },
    breakTable: (reason) => {
      tableBroken = reason
    },
    exit: (pid, status) =>
      Effect.suspend(() => {
        const p = byPid.get(pid)
        return p === undefined
          ? Effect.void
          : Effect.andThen(die(p, status ?? { code: 0, signal: null }), Effect.sync(measure))
      }),
    vanish: (pid) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.sync(() => {
          const p = byPid.get(pid)
          if (p === undefined || !isLive(p)) return
          p.status = { code: null, signal: "SIGKILL" }
          p.exitedAt = now
          measure()
        })),
    alive: () => all.filter(isLive).map(info),
    processes: () => all.map(info),
    process: (pid) => {
      const p = byPid.get(pid)
      return p === undefined ? undefined : info(p)
    },
    signalsSent: () => [...signals],
    spawnOrder: () => [...order],
    launching: () => inFlight,
    maxAlive: () => peakAlive,
    maxBusy: () => peakBusy
  }
}
