/**
 * The containment port: what holds one supervised tree so that none of its
 * members gets away, and what a pool reports about it.
 *
 * Two adapters exist in `@shepherd/node`: the process group plus the
 * `SHEPHERD_ID` cookie (everywhere, the fallback), and a cgroup v2 leaf per
 * tree (Linux, where a cgroup2 file system is writable: `NodeContainment`).
 * A pool without a `Containment` service uses the first and says so. The
 * choice is made when the layer is built (`containment` in the config).
 *
 * @since 0.2.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import type { KillPolicy } from "./KillPolicy.ts"

/**
 * Which containment a pool asks for: `auto` takes cgroup v2 where it is usable
 * and the process group + cookie elsewhere; `cgroup` fails the layer where
 * cgroups are not usable; `process-group` never uses cgroups.
 *
 * @since 0.2.0
 * @category schemas
 */
export const Mode = Schema.Literals(["auto", "cgroup", "process-group"])

/**
 * @since 0.2.0
 * @category models
 */
export type Mode = typeof Mode.Type

/**
 * How a child is put into its cgroup leaf: `wrapper` (default) runs it through
 * `/bin/sh`, which joins the leaf and then `exec`s the command, so nothing it
 * forks is ever outside; `post-spawn` moves the pid after `spawn()` returned
 * (faster, but what the child forks in its first moments stays outside).
 *
 * @since 0.2.0
 * @category schemas
 */
export const Placement = Schema.Literals(["wrapper", "post-spawn"])

/**
 * @since 0.2.0
 * @category models
 */
export type Placement = typeof Placement.Type

/**
 * A cgroup as Shepherd records it: its path and the identity it had when it
 * was created (`st_dev`, `st_ino`, decimal), so that a cgroup removed and
 * recreated under the same name is never taken for ours.
 *
 * @since 0.2.0
 * @category schemas
 */
export const CgroupRef = Schema.Struct({
  path: Schema.String,
  dev: Schema.String.check(Schema.isPattern(/^\d+$/)),
  ino: Schema.String.check(Schema.isPattern(/^\d+$/))
})

/**
 * @since 0.2.0
 * @category models
 */
export interface CgroupRef extends Schema.Schema.Type<typeof CgroupRef> {}

const cpuMaxPattern = /^(max|\d+)( \d+)?$/

/**
 * Resource limits of a session or of one spawn, applied to its cgroup
 * (`memory.max`, `pids.max`, `cpu.max`, `cpu.weight`). Each needs its
 * controller (`memory`, `pids`, `cpu`) in the pool's cgroup subtree: a limit
 * that cannot be applied fails with `LimitUnavailable`, naming the controller,
 * and is never ignored.
 *
 * @since 0.2.0
 * @category schemas
 */
export const Limits = Schema.Struct({
  /** `memory.max`: bytes, or `"max"`. */
  memoryMax: Schema.optionalKey(
    Schema.Union([Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)), Schema.Literal("max")])
  ),
  /** `pids.max`: processes (threads included), or `"max"`. */
  pidsMax: Schema.optionalKey(
    Schema.Union([Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)), Schema.Literal("max")])
  ),
  /** `cpu.max` as the kernel reads it: `"<quota> [<period>]"` in microseconds, or `"max"`. */
  cpuMax: Schema.optionalKey(
    Schema.String.check(
      Schema.makeFilter<string>((s) => cpuMaxPattern.test(s) || `expected "<quota> [<period>]" or "max"`)
    )
  ),
  /** `cpu.weight`: 1 to 10000 (100 is the default share). */
  cpuWeight: Schema.optionalKey(Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 10_000 })))
})

/**
 * @since 0.2.0
 * @category models
 */
export interface Limits extends Schema.Schema.Type<typeof Limits> {}

/**
 * The cgroup file and controller of each limit.
 *
 * @since 0.2.0
 * @category getters
 */
export const limitFiles: Readonly<Record<keyof Limits, { readonly file: string; readonly controller: string }>> = {
  memoryMax: { file: "memory.max", controller: "memory" },
  pidsMax: { file: "pids.max", controller: "pids" },
  cpuMax: { file: "cpu.max", controller: "cpu" },
  cpuWeight: { file: "cpu.weight", controller: "cpu" }
}

/**
 * The limits that are set, with their files and controllers, in a fixed order.
 *
 * @since 0.2.0
 * @category getters
 */
export const entries = (
  limits: Limits | undefined
): ReadonlyArray<
  { readonly key: keyof Limits; readonly file: string; readonly controller: string; readonly value: string }
> =>
  limits === undefined ? [] : (Object.keys(limitFiles) as Array<keyof Limits>).flatMap((key) => {
    const value = limits[key]
    return value === undefined ? [] : [{ key, ...limitFiles[key], value: String(value) }]
  })

/**
 * Which containment is in force for a pool, and why.
 *
 * @since 0.2.0
 * @category schemas
 */
export const Status = Schema.Struct({
  kind: Schema.Literals(["cgroup", "process-group"]),
  requested: Mode,
  /** Why this containment is in force (for `auto`: why cgroups were or were not usable). */
  reason: Schema.String,
  cgroup: Schema.optionalKey(Schema.Struct({
    /** The directory the pool's cgroup was created in. */
    base: Schema.String,
    /** How the base was found: configured, the host's delegated cgroup, or a writable mount. */
    source: Schema.String,
    placement: Placement,
    /** The pool's own cgroup (`<base>/shepherd-<pool id>...`). */
    pool: Schema.String,
    /** Controllers available in the base (limits need them). */
    controllers: Schema.Array(Schema.String)
  })),
  /** Cgroups of dead hosts found at start, and how many processes were still in each. */
  recovered: Schema.optionalKey(Schema.Array(Schema.Struct({ cgroup: Schema.String, processes: Schema.Int })))
})

/**
 * @since 0.2.0
 * @category models
 */
export interface Status extends Schema.Schema.Type<typeof Status> {}

/**
 * A session's resource usage and limits, as its cgroup reports them. What a
 * controller that is not available would report is absent, and the controller
 * is listed in `unavailable`.
 *
 * @since 0.2.0
 * @category schemas
 */
export const Usage = Schema.Struct({
  cgroup: Schema.String,
  /** Live processes in the session's cgroup (counted from `cgroup.procs`, needs no controller). */
  processes: Schema.Int,
  /** CPU time used so far (`cpu.stat`, needs no controller). */
  cpuUsageUsec: Schema.optionalKey(Schema.Number),
  memory: Schema.optionalKey(Schema.Struct({
    current: Schema.Number,
    max: Schema.String,
    /** `oom_kill` of `memory.events`: processes the kernel killed for this limit. */
    oomKills: Schema.Int
  })),
  pids: Schema.optionalKey(Schema.Struct({ current: Schema.Int, max: Schema.String })),
  cpu: Schema.optionalKey(Schema.Struct({ max: Schema.String, weight: Schema.Int })),
  unavailable: Schema.Array(Schema.String)
})

/**
 * @since 0.2.0
 * @category models
 */
export interface Usage extends Schema.Schema.Type<typeof Usage> {}

/**
 * Why a limit cannot be applied (see `LimitUnavailable`).
 *
 * @since 0.2.0
 * @category models
 */
export interface Refusal {
  readonly controller: string
  readonly limit: string
  readonly reason: string
}

/**
 * One pool's containment, once attached.
 *
 * @since 0.2.0
 * @category models
 */
export interface Attached {
  readonly status: Status
  /** Why `limits` cannot be applied (the first limit whose controller is missing), or `undefined`. */
  readonly checkLimits: (limits: Limits) => Refusal | undefined
  /** A session's usage, `undefined` when it has no cgroup (process-group containment, or no spawn yet). */
  readonly usage: (session: string) => Effect.Effect<Usage | undefined>
  /** The pool's cgroup and the sentinel's leaf in it, for the lifeline (cgroup containment only). */
  readonly lifeline?: { readonly pool: CgroupRef; readonly sentinel: CgroupRef } | undefined
}

/**
 * The process group + cookie containment, as a pool without a `Containment`
 * service (or with cgroups not usable) has it: no cgroups, so no limits.
 *
 * @since 0.2.0
 * @category constructors
 */
export const processGroup = (requested: Mode, reason: string): Attached => ({
  status: { kind: "process-group", requested, reason },
  checkLimits: (limits) => {
    const first = entries(limits)[0]
    return first === undefined ? undefined : {
      controller: first.controller,
      limit: first.file,
      reason: `containment is the process group + cookie (${reason}); limits need cgroup v2 containment`
    }
  },
  usage: () => Effect.undefined
})

/**
 * @since 0.2.0
 * @category services
 */
export class Containment extends Context.Service<Containment, {
  /**
   * Attaches containment to the pool `poolId` for the lifetime of the scope:
   * terminates what the dead hosts `recover` (pool ids of earlier hosts on
   * this pool's ledger) left in their containers, creates what the pool
   * needs, and removes it when the scope closes (after the pool's sessions).
   * What can fail is checked when the adapter's layer is built
   * (`ContainmentUnavailable`); a failure here is a defect.
   */
  readonly attach: (
    poolId: string,
    options: { readonly policy: KillPolicy; readonly recover?: ReadonlyArray<string> | undefined }
  ) => Effect.Effect<Attached, never, Scope.Scope>
}>()("@shepherd/core/Containment") {}
