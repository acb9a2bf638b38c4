/**
 * One supervised tree, from the moment it holds a slot: intent → launch →
 * register → watch its natural exit → teardown → report. Its teardown runs
 * once, whoever asks first (its scope, its session, the leader's exit, a
 * `terminate`); the report closes its ledger entry and returns its slot.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberSet from "effect/FiberSet"
import * as Metric from "effect/Metric"
import type * as ChildProcess from "effect/process/ChildProcess"
import * as Redacted from "effect/Redacted"
import * as References from "effect/References"
import * as Scope from "effect/Scope"
import type * as Containment from "../Containment.ts"
import * as EnvPolicy from "../EnvPolicy.ts"
import * as KillPolicy from "../KillPolicy.ts"
import type { ManagedProcess } from "../ManagedProcess.ts"
import type { Launched, ProcessLauncher } from "../ProcessLauncher.ts"
import type { Container, ProcessTable } from "../ProcessTable.ts"
import { type LimitUnavailable, type PoolClosed, SpawnError } from "../ShepherdError.ts"
import * as Teardown from "../Teardown.ts"
import * as Handle from "./handle.ts"
import * as Journal from "./journal.ts"
import * as Sessions from "./sessions.ts"
import * as Tracing from "./tracing.ts"
import { Escalation, type Input as TerminateInput, type Result as TerminateResult, terminate } from "./terminate.ts"

/**
 * What every tree of a pool shares.
 *
 * @since 0.1.0
 * @category models
 */
export interface Context {
  readonly poolId: string
  readonly envPolicy: EnvPolicy.EnvPolicy
  readonly table: ProcessTable["Service"]
  readonly launcher: ProcessLauncher["Service"]
  readonly hurry: Deferred.Deferred<void>
  readonly journal: Journal.Journal
  readonly registry: Sessions.Registry
  /** The leaders' exit watchers. */
  readonly watchers: FiberSet.FiberSet<unknown, never>
  /** Runs an effect at once as a fiber of `watchers` (from a launcher's exit callback). */
  readonly runWatcher: (effect: Effect.Effect<unknown>) => unknown
  readonly trees: Trees
  /** The pool's metrics, with its id as attribute. */
  readonly metrics: {
    readonly attributes: Readonly<Record<string, string>>
    readonly spawned: Metric.Metric<number, unknown>
    readonly running: Metric.Metric<number, unknown>
    readonly slotWait: Metric.Metric<number, unknown>
    readonly teardownDuration: Metric.Metric<number, unknown>
    /** `Metrics.exited` per outcome. */
    readonly exited: Readonly<Record<Teardown.Outcome, Metric.Metric<number, unknown>>>
  }
}

/**
 * The pool's bookkeeping of its trees.
 *
 * @since 0.1.0
 * @category models
 */
export interface Trees {
  /** The last tree's sequence number. */
  counter: number
  /** Trees spawned and not yet torn down. */
  live: number
  /** Every tree the pool owns, from its ledger intent until its teardown. */
  readonly tracked: Set<string>
  /** The last teardown reports, newest last, for the doctor. */
  readonly recent: Array<{ readonly report: Teardown.Teardown; readonly at: number }>
}

const recentLimit = 50

/** A spawn the lifeline could not protect against a hard death of the host. */
const lifelineRefused = (session: string, command: string, failure: Error): SpawnError =>
  new SpawnError({ session, command, kind: "Lifeline", reason: failure.message, cause: failure })

/**
 * @since 0.1.0
 * @category constructors
 */
export const makeTrees = (): Trees => ({ counter: 0, live: 0, tracked: new Set(), recent: [] })

/**
 * One spawn that holds a slot.
 *
 * @since 0.1.0
 * @category models
 */
export interface Request {
  readonly session: Sessions.SessionState
  readonly command: ChildProcess.StandardCommand
  readonly display: string
  readonly policy: KillPolicy.KillPolicy
  /** Gives the slot back (idempotent). */
  readonly releaseSlot: Effect.Effect<void>
  readonly waitStart: number
  /** The scope the tree is bound to, besides its session. */
  readonly callerScope: Scope.Scope
  /** Resource limits of this tree (cgroup containment). */
  readonly limits?: Containment.Limits | undefined
  /**
   * The child's environment (see `environment`), `SHEPHERD_ID` still to be set. Taken (cleared) by
   * `launch`: every closure of a live tree holds the request, and the copy must not live as long.
   */
  env: { readonly env: Record<string, string>; readonly explain: EnvPolicy.EnvExplain } | undefined
}

/**
 * The child's environment as of the spawn call: built before the spawn waits for its slot, so that a
 * queued spawn starts as soon as a slot is free (the host's environment is read variable by variable).
 *
 * @since 0.4.0
 * @category constructors
 */
export const environment = (
  ctx: Context,
  command: ChildProcess.StandardCommand
): { readonly env: Record<string, string>; readonly explain: EnvPolicy.EnvExplain } => {
  const inherits = command.options.env === undefined || command.options.extendEnv === true
  return EnvPolicy.apply(
    ctx.envPolicy,
    inherits ? ctx.launcher.inheritedEnv() : {},
    unwrapEnv(command.options.env)
  )
}

/**
 * Launches the tree and registers it in its session; the caller gets
 * `PoolClosed` when the session began closing meanwhile (its close, which
 * waited for this launch, tears the tree down).
 *
 * @since 0.1.0
 * @category constructors
 */
export const launch = (
  ctx: Context,
  request: Request
): Effect.Effect<ManagedProcess, SpawnError | PoolClosed | LimitUnavailable> =>
  Effect.gen(function*() {
    const { command, display, policy, releaseSlot, session } = request
    const sessionId = session.id
    const slotWaitMs = (yield* Clock.currentTimeMillis) - request.waitStart
    const id = ++ctx.trees.counter
    const shepherdId = `${ctx.poolId}:${id}`
    const { env, explain } = request.env!
    request.env = undefined
    env.SHEPHERD_ID = shepherdId
    const secrets = secretsOf(command)

    const lifeline = ctx.journal.lifeline
    if (lifeline !== undefined) {
      // A stalled lifeline: no fork whose registration would wait in the host's memory.
      const ready = yield* Effect.result(lifeline.ready(shepherdId))
      if (ready._tag === "Failure") {
        yield* releaseSlot
        return yield* lifelineRefused(sessionId, display, ready.failure)
      }
    }
    ctx.trees.tracked.add(shepherdId)
    if (ctx.journal.ledger !== undefined) {
      const intent = yield* Effect.result(Journal.intent(ctx.journal, {
        poolId: ctx.poolId,
        shepherdId,
        session: sessionId,
        command: display,
        redacted: secrets.length > 0,
        at: yield* Clock.currentTimeMillis
      }))
      if (intent._tag === "Failure") {
        // Without the intent a crash could leave this tree unknown to the next host: refuse.
        ctx.trees.tracked.delete(shepherdId)
        yield* releaseSlot
        return yield* new SpawnError({
          session: sessionId,
          command: display,
          kind: "Ledger",
          reason: intent.failure.message
        })
      }
    }
    const procScope = yield* Scope.fork(
      yield* Sessions.parallelChildOf(ctx.registry, request.callerScope),
      "sequential"
    )
    const options = { poolId: ctx.poolId, session: sessionId, shepherdId, display, limits: request.limits }
    const launched = yield* ctx.launcher.launch(command, env, { ...options, sessionLimits: session.limits }).pipe(
      Scope.provide(procScope),
      Effect.catch((error) =>
        Effect.andThen(
          Effect.andThen(
            Effect.andThen(releaseSlot, Scope.close(procScope, Exit.void)),
            Effect.andThen(
              Effect.flatMap(
                Clock.currentTimeMillis,
                (at) => Journal.exited(ctx.journal, shepherdId, "SpawnFailed", error.message, at)
              ),
              Effect.sync(() => ctx.trees.tracked.delete(shepherdId))
            )
          ),
          // The containment's own errors are typed already (a leaf it could not create, a limit).
          error._tag !== "PlatformError" ? Effect.fail(error) : Effect.fail(
            new SpawnError({
              session: sessionId,
              command: display,
              kind: "Launch",
              reason: error.message,
              cause: error
            })
          )
        )
      )
    )
    const startedAt = yield* Clock.currentTimeMillis
    const container: Container = launched.cgroup === undefined
      ? { pgid: launched.pgid, shepherdId, leader: launched.identity }
      : { pgid: launched.pgid, shepherdId, leader: launched.identity, cgroup: launched.cgroup }
    // The lifeline's registration waits (bounded) while the lifeline does not take it: a tree is not
    // handed to its caller before a hard death of the host would end it.
    const registration = yield* Effect.result(Journal.registered(ctx.journal, container, startedAt))
    const done = Deferred.makeUnsafe<Teardown.Teardown>()
    const awaitDone = Deferred.await(done)
    let running: KillPolicy.KillPolicy | undefined
    const escalate = new Escalation()
    let state: Sessions.TreeState

    /** Claims the teardown: its `terminate` input, or undefined when one runs already. */
    const begin = (kill: KillPolicy.KillPolicy, since?: number): TerminateInput | undefined => {
      if (running !== undefined) {
        // A teardown runs already: a harsher request (SIGKILL, a shorter grace) cuts its grace short.
        if (kill.signal === "SIGKILL" || kill.graceMs < running.graceMs) escalate.fire()
        return undefined
      }
      running = kill
      return {
        table: ctx.table,
        container,
        policy: kill,
        leader: {
          exitStatus: launched.exitStatus,
          exit: launched.exit,
          signal: launched.signal,
          alone: launched.alone,
          reaped: launched.reaped,
          onExit: launched.onExit
        },
        hurry: ctx.hurry,
        escalate,
        since
      }
    }

    /** Turns the raw result into the report and does the bookkeeping of a tree that is gone. */
    const finish = (r: TerminateResult): Effect.Effect<Teardown.Teardown> =>
      Tracing.span(
        Effect.uninterruptible(Effect.withFiber((fiber) => {
          const report = toReport(r, launched, shepherdId, sessionId, display, running?.signal ?? policy.signal)
          const at = fiber.getRef(Clock.Clock).currentTimeMillisUnsafe()
          session.processes.delete(state)
          Sessions.forgetIfIdle(ctx.registry, session)
          ctx.trees.tracked.delete(shepherdId)
          ctx.trees.recent.push({ report, at })
          if (ctx.trees.recent.length > recentLimit) ctx.trees.recent.shift()
          ctx.trees.live--
          const context = fiber.context
          ctx.metrics.running.updateUnsafe(ctx.trees.live, context)
          ctx.metrics.exited[report._tag].updateUnsafe(1, context)
          ctx.metrics.teardownDuration.updateUnsafe(report.durationMs, context)
          // The slot first (a queued spawn starts inside this release), then the records.
          return Effect.andThen(
            releaseSlot,
            Effect.andThen(
              // Escaped or Unverified: the ledger entry and the lifeline stay, and the reaper (to
              // which the tree is now untracked) keeps trying.
              Teardown.isGone(report)
                ? Journal.released(ctx.journal, shepherdId, report._tag, Teardown.describe(report), at)
                : Effect.void,
              Effect.suspend(() => {
                Deferred.doneUnsafe(done, Exit.succeed(report))
                return Effect.andThen(logReport(report), Effect.as(Scope.close(procScope, Exit.void), report))
              })
            )
          )
        })),
        "ProcessPool.teardown",
        () => ({ shepherdId, pid: launched.pid })
      )

    const stopWith = (kill: KillPolicy.KillPolicy): Effect.Effect<Teardown.Teardown> =>
      Effect.suspend(() => {
        const input = begin(kill)
        return input === undefined
          ? awaitDone
          : Effect.uninterruptible(Effect.flatMap(terminate(input), finish))
      })

    const stop = stopWith(policy)
    const managed: ManagedProcess = {
      id,
      shepherdId,
      session: sessionId,
      pid: launched.pid,
      pgid: launched.pgid,
      identity: launched.identity,
      command: display,
      startedAt,
      slotWaitMs,
      policy,
      env: explain,
      // Built on first use: most callers never ask for the ChildProcessHandle view.
      get handle() {
        const handle = Handle.make(launched, policy, stopWith)
        Object.defineProperty(this, "handle", { value: handle })
        return handle
      },
      awaitExit: launched.exit,
      terminate: (input) => stopWith(KillPolicy.override(policy, input)),
      awaitTeardown: awaitDone,
      teardown: Effect.suspend(() => Deferred.isDoneUnsafe(done) ? Effect.asSome(awaitDone) : Effect.succeedNone)
    }
    if (debugEnabled(yield* References.MinimumLogLevel)) {
      yield* Effect.logDebug(
        `spawned ${display} (pid ${launched.pid}, session ${sessionId}); env: ${explain.inherited.length} inherited, ` +
          `stripped [${explain.stripped.join(", ")}], preserved [${explain.preserved.join(", ")}], explicit [${
            explain.explicit.join(", ")
          }]`
      ).pipe(Effect.annotateLogs({ shepherdId }))
    }
    state = {
      managed,
      begin: (since) => begin(policy, since),
      finish,
      awaitDone,
      exitStatus: launched.exitStatus,
      container,
      secrets
    }
    session.processes.add(state)
    ctx.trees.live++
    const context = (yield* Effect.fiber).context
    ctx.metrics.running.updateUnsafe(ctx.trees.live, context)
    ctx.metrics.spawned.updateUnsafe(1, context)
    ctx.metrics.slotWait.updateUnsafe(slotWaitMs, context)
    yield* Scope.addFinalizer(procScope, stop)
    // Natural exit: clean up what the leader left behind and return the slot at once (from the
    // launcher's exit callback when it has one: no fiber per process waits for the exit). Not when
    // a teardown runs already: the leader's exit is then most likely its doing, the teardown sees it,
    // and the pool's policy must not cut a longer grace asked for it short (nor must a SIGKILL sweep
    // of hundreds of trees start a fiber per tree only to wait for their teardowns).
    if (launched.onExit !== undefined) {
      launched.onExit(() => {
        if (running === undefined) ctx.runWatcher(stop)
      })
    } else {
      yield* FiberSet.run(
        ctx.watchers,
        Effect.andThen(launched.exit, Effect.suspend(() => running === undefined ? stop : Effect.void))
      )
    }
    if (registration._tag === "Failure") {
      // Not protected against a hard host death: torn down (slot, ledger and lifeline as for any tree
      // that ends) and refused.
      yield* stop
      return yield* lifelineRefused(sessionId, display, registration.failure)
    }
    if (ctx.registry.closing || session.closed !== undefined) {
      // The session began closing while we were launching: its close (which waited for
      // this launch) tears the tree down; the caller gets PoolClosed.
      return yield* Sessions.closed(ctx.registry, sessionId)
    }
    return managed
  })

/** The teardown report of a tree, from the raw result of `terminate`. */
const toReport = (
  r: TerminateResult,
  launched: Launched,
  shepherdId: string,
  session: string,
  command: string,
  signal: string
): Teardown.Teardown => {
  const common = { pid: launched.pid, shepherdId, session, command, signalled: r.signalled, durationMs: r.durationMs }
  switch (r.outcome._tag) {
    case "Exited":
      return new Teardown.Exited({ ...common, code: r.outcome.status.code, signal: r.outcome.status.signal })
    case "Gone":
      return new Teardown.Exited({ ...common, code: null, signal: null })
    case "Graceful":
      return new Teardown.Graceful({ ...common, signal })
    case "Forced":
      return new Teardown.Forced({ ...common, forced: r.forced })
    case "Escaped":
      return new Teardown.Escaped({ ...common, escaped: r.outcome.escaped })
    case "Unverified":
      return new Teardown.Unverified({ ...common, reason: r.outcome.reason })
  }
}

/** Per-tree log lines are built only when they would be written. */
const debugEnabled = (minimum: string): boolean => minimum === "Debug" || minimum === "Trace" || minimum === "All"

const logReport = (report: Teardown.Teardown) =>
  Effect.flatMap(References.MinimumLogLevel, (minimum) => {
    // One line per tree only at Debug (a session close can end hundreds); closes summarize at Info.
    // A tree that escaped or could not be verified is always worth a warning of its own.
    const warn = !Teardown.isGone(report)
    if (!warn && !debugEnabled(minimum)) return Effect.void
    const line = `${report.command} (pid ${report.pid}, session ${report.session}): ${Teardown.describe(report)}`
    return (warn ? Effect.logWarning(line) : Effect.logDebug(line)).pipe(
      Effect.annotateLogs({ shepherdId: report.shepherdId, outcome: report._tag })
    )
  })

/**
 * The values of a command's `Redacted` arguments and environment variables, longest first.
 *
 * @since 0.1.0
 * @category getters
 */
export const secretsOf = (command: ChildProcess.StandardCommand): ReadonlyArray<string> => {
  const values = [
    ...command.args.filter(Redacted.isRedacted),
    ...Object.values(command.options.env ?? {}).filter(Redacted.isRedacted)
  ].map((r) => Redacted.value(r as Redacted.Redacted<string>)).filter((v) => v.length > 0)
  // Also as a latin1 reading of its UTF-8 bytes: that is how a process table may decode a command line.
  // (Byte by byte: spreading a large secret's bytes as arguments would throw a RangeError.)
  const latin1 = values.map((v) => {
    let text = ""
    for (const byte of new TextEncoder().encode(v)) text += String.fromCharCode(byte)
    return text
  })
  // Longest first, so that a secret containing another is masked whole.
  return [...new Set([...values, ...latin1])].sort((a, b) => b.length - a.length)
}

const unwrapEnv = (env: ChildProcess.CommandOptions["env"]): Record<string, string | undefined> => {
  // No prototype: a command may set or delete a variable named `__proto__`.
  const out: Record<string, string | undefined> = Object.create(null)
  if (env === undefined) return out
  for (const [name, value] of Object.entries(env)) {
    out[name] = value === undefined ? undefined : Redacted.isRedacted(value) ? Redacted.value(value) : value
  }
  return out
}
