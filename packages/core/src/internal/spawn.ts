/**
 * A spawn request, up to the moment its tree launches: which session it goes
 * to, its kill policy, its slot (hard cap, FIFO wait, timeout), and the
 * session's knowledge that a launch is under way.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import type * as ChildProcess from "effect/process/ChildProcess"
import * as CommandLine from "effect/process/CommandLine"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Containment from "../Containment.ts"
import * as KillPolicy from "../KillPolicy.ts"
import type { ManagedProcess } from "../ManagedProcess.ts"
import * as Metrics from "../Metrics.ts"
import type { SpawnOptions } from "../ProcessPool.ts"
import * as ShepherdConfig from "../ShepherdConfig.ts"
import { LimitUnavailable, type SpawnFailure, SpawnError } from "../ShepherdError.ts"
import * as Sessions from "./sessions.ts"
import * as Slots from "./slots.ts"
import * as Tracing from "./tracing.ts"
import * as Tree from "./tree.ts"

/**
 * @since 0.1.0
 * @category models
 */
export interface Context extends Tree.Context {
  readonly config: ShepherdConfig.Resolved
  readonly slots: Slots.Slots
  readonly containment: Containment.Attached
}

const decodeKill = Schema.decodeUnknownResult(ShepherdConfig.KillPolicyConfig)
const decodeLimits = Schema.decodeUnknownResult(Containment.Limits)

/**
 * Checks `limits` against the pool's containment: `LimitUnavailable` naming
 * the first controller that is missing, before anything is spawned.
 *
 * @since 0.2.0
 * @category constructors
 */
export const checkLimits = (
  containment: Containment.Attached,
  session: string,
  limits: Containment.Limits | undefined
): LimitUnavailable | undefined => {
  if (limits === undefined) return undefined
  const refusal = containment.checkLimits(limits)
  return refusal === undefined ? undefined : new LimitUnavailable({ ...refusal, session })
}

/**
 * The pool's `spawn`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (ctx: Context): (
  command: ChildProcess.Command,
  options?: SpawnOptions
) => Effect.Effect<ManagedProcess, SpawnFailure, Scope.Scope> => {
  const { config, registry, slots } = ctx
  const spawnFailed = (error: SpawnFailure) =>
    Metric.update(Metric.withAttributes(Metrics.spawnFailures, { ...ctx.metrics.attributes, reason: error._tag }), 1)

  const spawn = Effect.fnUntraced(function*(
    command: ChildProcess.Command,
    options?: SpawnOptions
  ): Effect.fn.Return<ManagedProcess, SpawnFailure, Scope.Scope> {
    const bound = options?.session === undefined ? yield* Sessions.BoundSession : undefined
    const target = bound !== undefined && bound.poolId === ctx.poolId ? bound.state : undefined
    const sessionId = options?.session ?? target?.id ?? (yield* Sessions.CurrentSession) ?? "default"
    const display = command._tag === "StandardCommand"
      ? CommandLine.display([command.command, ...command.args])
      : "<pipeline>"
    if (Tracing.observed(yield* Effect.fiber)) {
      yield* Effect.annotateCurrentSpan({ session: sessionId, command: display })
    }
    if (command._tag !== "StandardCommand") {
      return yield* new SpawnError({
        session: sessionId,
        command: display,
        kind: "Pipeline",
        reason: "pipelines are not supervised as one tree yet: spawn each stage and connect their streams"
      })
    }
    let policy = config.kill
    if (options?.kill !== undefined) {
      const decoded = decodeKill(options.kill)
      if (decoded._tag === "Failure") {
        return yield* new SpawnError({
          session: sessionId,
          command: display,
          kind: "InvalidKillPolicy",
          reason: `invalid kill policy: ${decoded.failure.message}`
        })
      }
      policy = KillPolicy.override(config.kill, decoded.success as KillPolicy.KillPolicyInput)
    }
    let limits: Containment.Limits | undefined
    if (options?.limits !== undefined) {
      const decoded = decodeLimits(options.limits)
      if (decoded._tag === "Failure") {
        return yield* new SpawnError({
          session: sessionId,
          command: display,
          kind: "InvalidLimits",
          reason: `invalid limits: ${decoded.failure.message}`
        })
      }
      limits = decoded.success
      const refused = checkLimits(ctx.containment, sessionId, limits)
      if (refused !== undefined) return yield* refused
    }
    const callerScope = yield* Scope.Scope
    const waitStart = yield* Clock.currentTimeMillis
    const openForSpawn = target === undefined
      ? Sessions.open(registry, sessionId, true)
      : Sessions.join(registry, target)

    // Opening (which counts the request as pending) and the `ensuring` that uncounts it sit in one
    // uninterruptible region: nothing can interrupt in between.
    return yield* Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(openForSpawn, (session) =>
        Effect.gen(function*() {
          // Built before the wait for a slot: a queued spawn starts as soon as one is free.
          const env = Tree.environment(ctx, command)
          const acquired = yield* Slots.take(
            slots,
            { session: sessionId, command: display },
            waitStart,
            (giveUp) => {
              const stopSession = session.closingSignal.listen(giveUp)
              const stopPool = registry.poolClosing.listen(giveUp)
              return () => {
                stopSession()
                stopPool()
              }
            },
            restore
          )
          if (!acquired) return yield* Sessions.closed(registry, sessionId)

          // From here on we hold one permit; every path must give it back exactly once.
          const releaseSlot = Slots.hold(slots)
          if (registry.closing || session.closed !== undefined) {
            yield* releaseSlot
            return yield* Sessions.closed(registry, sessionId)
          }
          // Until this spawn has registered its tree (or failed), a closing session waits for it.
          const launchDone = Deferred.makeUnsafe<void>()
          session.launching.add(launchDone)
          return yield* Tree.launch(ctx, {
            session,
            command,
            display,
            policy,
            releaseSlot,
            waitStart,
            callerScope,
            limits,
            env
          }).pipe(
            Effect.ensuring(Effect.sync(() => {
              session.launching.delete(launchDone)
              Deferred.doneUnsafe(launchDone, Exit.void)
            }))
          )
        }).pipe(Effect.ensuring(Effect.sync(() => {
          session.pending--
          Sessions.forgetIfIdle(registry, session)
        }))))
    )
  }, Effect.tapError(spawnFailed))
  return (command, options) => Tracing.span(spawn(command, options), "ProcessPool.spawn", () => ({}))
}
