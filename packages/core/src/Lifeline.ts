/**
 * The lifeline port: makes a pool's process trees die with their host even
 * when the host dies without running finalizers (SIGKILL, OOM kill).
 *
 * A pool attaches one lifeline when it starts; the implementation keeps at
 * most one extra process per pool (see `NodeLifeline`), never one per child.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import type { CgroupRef } from "./Containment.ts"
import type { KillPolicy } from "./KillPolicy.ts"
import type { Container } from "./ProcessTable.ts"

/**
 * @since 0.1.0
 * @category models
 */
export interface Status {
  readonly kind: string
  /** pid of the sentinel process, if there is one. */
  readonly pid?: number | undefined
  readonly alive: boolean
  /** Containers the sentinel currently watches. */
  readonly watching: number
  /** How many times the lifeline was restarted after dying on its own. */
  readonly restarts: number
  /** Why the lifeline last died, or why it is not alive. */
  readonly lastError?: string | undefined
  /** Spawns waiting for the lifeline to take what was sent to it (a stalled lifeline). */
  readonly waiting?: number | undefined
}

/**
 * A tree could not be registered with the lifeline within its wait: the
 * lifeline's process did not take what was sent to it (stalled: stopped,
 * starved of CPU) for `waitedMs`. The tree would not be protected against a
 * hard host death: the pool fails its spawn (`SpawnError` of kind
 * `"Lifeline"`), after tearing it down if it had started.
 *
 * @since 0.2.0
 * @category errors
 */
export class LifelineUnavailable extends Schema.TaggedError<LifelineUnavailable>()("LifelineUnavailable", {
  shepherdId: Schema.String,
  waitedMs: Schema.Number,
  reason: Schema.String
}) {
  override get message(): string {
    return `lifeline: ${this.shepherdId} could not be registered within ${this.waitedMs} ms: ${this.reason}`
  }
}

/**
 * One pool's lifeline.
 *
 * @since 0.1.0
 * @category models
 */
export interface Attached {
  /**
   * Before a spawn forks: waits while the lifeline has not taken what was
   * sent to it (a stalled lifeline), so that no process is started whose
   * registration would wait in the host's memory; `LifelineUnavailable`
   * after the attach's `registerWaitMs`. Succeeds at once in the common case.
   */
  readonly ready: (shepherdId: string) => Effect.Effect<void, LifelineUnavailable>
  /**
   * Hands `container` to the lifeline. It succeeds once the registration is
   * where a hard death of the host cannot lose it (for `NodeLifeline`: in the
   * kernel's socket buffer towards the sentinel, not in the host's memory);
   * when the lifeline cannot take it within the attach's `registerWaitMs`, it
   * fails with `LifelineUnavailable`.
   */
  readonly register: (container: Container) => Effect.Effect<void, LifelineUnavailable>
  readonly unregister: (shepherdId: string) => Effect.Effect<void>
  readonly status: Effect.Effect<Status>
}

/**
 * @since 0.1.0
 * @category services
 */
export class Lifeline extends Context.Service<Lifeline, {
  /**
   * Attaches a lifeline to the pool `poolId`. When the scope closes (a clean
   * shutdown, after every tree was torn down) the lifeline is released
   * without killing anything; if the host dies instead, every registered
   * container and every process carrying `<poolId>:` is terminated with
   * `policy`. A lifeline that dies on its own is restarted with every
   * container still registered (a warning is logged); if it cannot be kept
   * alive, that is logged as an error and `status` says why.
   *
   * Under cgroup containment, `options.cgroup` names the pool's cgroup and
   * the leaf for the lifeline's own process: on the host's death everything
   * in the pool's cgroup is terminated too.
   *
   * `options.registerWaitMs` bounds how long `ready` and `register` wait for
   * a lifeline that does not take what is sent to it (default 10 000).
   */
  readonly attach: (
    poolId: string,
    policy: KillPolicy,
    options?: {
      readonly cgroup?: { readonly pool: CgroupRef; readonly sentinel: CgroupRef } | undefined
      readonly registerWaitMs?: number | undefined
    }
  ) => Effect.Effect<Attached, never, Scope.Scope>
}>()("@shepherd/core/Lifeline") {}
