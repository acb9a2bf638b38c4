/**
 * The pool configuration: a Schema, validated when the layer is built. An
 * invalid value fails the layer with `InvalidConfig` naming the field.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as SchemaIssue from "effect/SchemaIssue"
import * as Containment from "./Containment.ts"
import * as EnvPolicy from "./EnvPolicy.ts"
import * as KillPolicy from "./KillPolicy.ts"
import { InvalidConfig } from "./ShepherdError.ts"
import { Signal } from "./Signal.ts"

const isDuration = Schema.makeFilter<string | number>(
  (input) =>
    KillPolicy.durationMillis(input) !== undefined ||
    `expected a finite, non-negative duration: ${KillPolicy.durationForms}`
)
const isTimeout = Schema.makeFilter<string | number>(
  (input) =>
    input === "Infinity" || KillPolicy.durationMillis(input) !== undefined ||
    `expected a non-negative duration (${KillPolicy.durationForms}) or "Infinity"`
)

/**
 * A duration as written in config: milliseconds, a short form (`"200ms"`,
 * `"5s"`, `"1m"`) or a `Duration` string (`"5 seconds"`).
 *
 * @since 0.1.0
 * @category schemas
 */
export const DurationInput = Schema.Union([Schema.Number, Schema.String]).check(isDuration)

/**
 * @since 0.1.0
 * @category schemas
 */
export const KillPolicyConfig = Schema.Struct({
  signal: Schema.optionalKey(Signal),
  grace: Schema.optionalKey(DurationInput),
  forceWait: Schema.optionalKey(DurationInput)
})

/**
 * The configuration users write. Every field is optional.
 *
 * | field | default | meaning |
 * | --- | --- | --- |
 * | `name` | `"shepherd"` | pool name; part of every `SHEPHERD_ID` |
 * | `slots` | `4` | processes that may run at once |
 * | `hardCap` | `slots × 8` | tracked + waiting requests before `HardCapExceeded` |
 * | `slotTimeout` | `"30 seconds"` | longest wait for a slot (`"Infinity"`: unbounded) |
 * | `kill` | SIGTERM, 5 s, 1 s | default KillPolicy |
 * | `env` | `"inherit"` | `"inherit"`, `"agent-host"` or an `EnvPolicy` |
 * | `reapInterval` | `"30 seconds"` | period of the orphan reaper (it also runs at start) |
 * | `ledger` | per platform | ledger file path, or `false` for none (read by the platform layer) |
 * | `lifeline` | `true` | keep a lifeline so trees die with a host killed hard |
 * | `lifelineWait` | `"10 seconds"` | longest wait of a spawn for a stalled lifeline to take its registration (then `SpawnError` `"Lifeline"`) |
 * | `containment` | `SHEPHERD_CONTAINMENT`, else `"auto"` | `"auto"`, `"cgroup"` or `"process-group"` (read by the platform layer) |
 * | `cgroup.base` | detected | the cgroup v2 directory to create the pool's cgroup in |
 * | `cgroup.placement` | `"wrapper"` | `"wrapper"` (race-free) or `"post-spawn"` (faster, racy) |
 * | `forkFrom` | `SHEPHERD_FORK_FROM`, else `"helper"` | `"helper"`: a small helper process forks the trees, so a spawn never blocks the host's event loop for as long as fork(2) takes to copy the host's page tables (Linux; elsewhere the host forks); `"host"`: the host forks them itself, one process less (read by the platform layer) |
 *
 * @since 0.1.0
 * @category schemas
 */
export const ShepherdConfig = Schema.Struct({
  name: Schema.optionalKey(
    Schema.String.check(
      Schema.makeFilter<string>((s) =>
        /^[A-Za-z0-9._-]{1,64}$/.test(s) || "expected 1 to 64 characters of A-Z a-z 0-9 . _ -"
      )
    )
  ),
  slots: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))),
  hardCap: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))),
  slotTimeout: Schema.optionalKey(Schema.Union([Schema.Number, Schema.String]).check(isTimeout)),
  kill: Schema.optionalKey(KillPolicyConfig),
  env: Schema.optionalKey(Schema.Union([Schema.Literals(["inherit", "agent-host"]), EnvPolicy.EnvPolicy])),
  reapInterval: Schema.optionalKey(
    DurationInput.check(
      Schema.makeFilter<string | number>((input) =>
        (KillPolicy.durationMillis(input) ?? 0) > 0 || "expected a positive duration"
      )
    )
  ),
  ledger: Schema.optionalKey(Schema.Union([Schema.String.check(Schema.isMinLength(1)), Schema.Literal(false)])),
  lifeline: Schema.optionalKey(Schema.Boolean),
  lifelineWait: Schema.optionalKey(
    DurationInput.check(
      Schema.makeFilter<string | number>((input) =>
        (KillPolicy.durationMillis(input) ?? 0) > 0 || "expected a positive duration"
      )
    )
  ),
  containment: Schema.optionalKey(Containment.Mode),
  cgroup: Schema.optionalKey(Schema.Struct({
    base: Schema.optionalKey(
      Schema.String.check(Schema.makeFilter<string>((s) => s.startsWith("/") || "expected an absolute path"))
    ),
    placement: Schema.optionalKey(Containment.Placement)
  })),
  forkFrom: Schema.optionalKey(Schema.Literals(["host", "helper"]))
})

/**
 * @since 0.1.0
 * @category models
 */
export type ShepherdConfig = typeof ShepherdConfig.Type

/**
 * A validated, resolved configuration.
 *
 * @since 0.1.0
 * @category models
 */
export interface Resolved {
  readonly name: string
  readonly slots: number
  readonly hardCap: number
  readonly slotTimeoutMs: number
  readonly kill: KillPolicy.KillPolicy
  readonly env: EnvPolicy.EnvPolicy
  readonly reapIntervalMs: number
  /** The ledger path, `false` for none, `undefined` for the platform's default. */
  readonly ledger: string | false | undefined
  readonly lifeline: boolean
  /** Longest wait of a spawn for the lifeline to take its registration. */
  readonly lifelineWaitMs: number
  /** The containment asked for; `undefined` for the platform's default (`SHEPHERD_CONTAINMENT`, else `auto`). */
  readonly containment: Containment.Mode | undefined
  readonly cgroup: { readonly base: string | undefined; readonly placement: Containment.Placement }
  /** Which process forks the trees; `undefined` for the platform's default (`SHEPHERD_FORK_FROM`, else `"helper"`). */
  readonly forkFrom: ForkFrom | undefined
}

/**
 * Which process forks a pool's trees: the host itself, or the pool's fork helper.
 *
 * @since 0.4.0
 * @category models
 */
export type ForkFrom = "host" | "helper"

// The path of the first failing field, e.g. ["kill", "grace"].
const issuePath = (issue: SchemaIssue.Issue): ReadonlyArray<PropertyKey> => {
  switch (issue._tag) {
    case "Pointer":
      return [...issue.path, ...issuePath(issue.issue)]
    case "Composite":
    case "AnyOf":
      return issue.issues.length > 0 ? issuePath(issue.issues[0]!) : []
    case "Filter":
    case "Encoding":
      return issuePath(issue.issue)
    default:
      return []
  }
}

const toInvalidConfig = (error: Schema.SchemaError): InvalidConfig => {
  const path = issuePath(error.issue)
  return new InvalidConfig({
    field: path.length === 0 ? "(root)" : path.map(String).join("."),
    reason: error.message.split("\n")[0]!.trim()
  })
}

/**
 * Validates and resolves a configuration.
 *
 * @since 0.1.0
 * @category constructors
 */
export const resolve = (input: unknown): Effect.Effect<Resolved, InvalidConfig> =>
  Schema.decodeUnknownEffect(ShepherdConfig)(input ?? {}, { errors: "first" }).pipe(
    Effect.mapError(toInvalidConfig),
    Effect.flatMap((config) => {
      const slots = config.slots ?? 4
      const hardCap = config.hardCap ?? slots * 8
      if (hardCap < slots) {
        return Effect.fail(
          new InvalidConfig({ field: "hardCap", reason: `must be at least slots (${slots}), got ${hardCap}` })
        )
      }
      const kill = KillPolicy.override(KillPolicy.defaults, config.kill as KillPolicy.KillPolicyInput | undefined)
      return Effect.succeed<Resolved>({
        name: config.name ?? "shepherd",
        slots,
        hardCap,
        slotTimeoutMs: config.slotTimeout === undefined
          ? 30_000
          : config.slotTimeout === "Infinity"
          ? Number.POSITIVE_INFINITY
          : KillPolicy.durationMillis(config.slotTimeout)!,
        kill,
        env: config.env === undefined || config.env === "inherit"
          ? EnvPolicy.inherit
          : config.env === "agent-host"
          ? EnvPolicy.agentHost
          : config.env,
        reapIntervalMs: config.reapInterval === undefined ? 30_000 : KillPolicy.durationMillis(config.reapInterval)!,
        ledger: config.ledger,
        lifeline: config.lifeline ?? true,
        lifelineWaitMs: config.lifelineWait === undefined ? 10_000 : KillPolicy.durationMillis(config.lifelineWait)!,
        containment: config.containment,
        cgroup: { base: config.cgroup?.base, placement: config.cgroup?.placement ?? "wrapper" },
        forkFrom: config.forkFrom
      })
    })
  )

/**
 * Reads a configuration from `SHEPHERD_*` variables (`SHEPHERD_NAME`,
 * `SHEPHERD_SLOTS`, `SHEPHERD_HARD_CAP`, `SHEPHERD_SLOT_TIMEOUT`,
 * `SHEPHERD_KILL_SIGNAL`, `SHEPHERD_GRACE`, `SHEPHERD_FORCE_WAIT`,
 * `SHEPHERD_ENV_POLICY`, `SHEPHERD_REAP_INTERVAL`, `SHEPHERD_LEDGER`,
 * `SHEPHERD_CONTAINMENT`, `SHEPHERD_CGROUP_BASE`, `SHEPHERD_CGROUP_PLACEMENT`,
 * `SHEPHERD_FORK_FROM`), over `base`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromEnv = (base: ShepherdConfig = {}): Effect.Effect<Resolved, InvalidConfig> =>
  Effect.gen(function*() {
    const read = (name: string) =>
      Config.String(name).pipe(Config.option, Effect.map((o) => o._tag === "Some" ? o.value : undefined))
    const raw = {
      name: yield* read("SHEPHERD_NAME"),
      slots: yield* read("SHEPHERD_SLOTS"),
      hardCap: yield* read("SHEPHERD_HARD_CAP"),
      slotTimeout: yield* read("SHEPHERD_SLOT_TIMEOUT"),
      signal: yield* read("SHEPHERD_KILL_SIGNAL"),
      grace: yield* read("SHEPHERD_GRACE"),
      forceWait: yield* read("SHEPHERD_FORCE_WAIT"),
      env: yield* read("SHEPHERD_ENV_POLICY"),
      reapInterval: yield* read("SHEPHERD_REAP_INTERVAL"),
      ledger: yield* read("SHEPHERD_LEDGER"),
      containment: yield* read("SHEPHERD_CONTAINMENT"),
      cgroupBase: yield* read("SHEPHERD_CGROUP_BASE"),
      cgroupPlacement: yield* read("SHEPHERD_CGROUP_PLACEMENT"),
      forkFrom: yield* read("SHEPHERD_FORK_FROM")
    }
    const int = (s: string | undefined) => s === undefined ? undefined : /^-?\d+$/.test(s.trim()) ? Number(s) : s
    const duration = (s: string | undefined) =>
      s === undefined ? undefined : /^\d+(\.\d+)?$/.test(s.trim()) ? Number(s) : s
    const input: Record<string, unknown> = { ...base }
    const set = (key: string, value: unknown) => {
      if (value !== undefined) input[key] = value
    }
    set("name", raw.name)
    set("slots", int(raw.slots))
    set("hardCap", int(raw.hardCap))
    set("slotTimeout", duration(raw.slotTimeout))
    set("env", raw.env)
    set("reapInterval", duration(raw.reapInterval))
    set("ledger", raw.ledger === "false" ? false : raw.ledger)
    set("containment", raw.containment)
    set("forkFrom", raw.forkFrom)
    if (raw.cgroupBase !== undefined || raw.cgroupPlacement !== undefined) {
      const cgroup: Record<string, unknown> = { ...base.cgroup }
      if (raw.cgroupBase !== undefined) cgroup.base = raw.cgroupBase
      if (raw.cgroupPlacement !== undefined) cgroup.placement = raw.cgroupPlacement
      input.cgroup = cgroup
    }
    if (raw.signal !== undefined || raw.grace !== undefined || raw.forceWait !== undefined) {
      const kill: Record<string, unknown> = { ...base.kill }
      if (raw.signal !== undefined) kill.signal = raw.signal
      if (raw.grace !== undefined) kill.grace = duration(raw.grace)
      if (raw.forceWait !== undefined) kill.forceWait = duration(raw.forceWait)
      input.kill = kill
    }
    return yield* resolve(input)
  }).pipe(
    Effect.catchTag("ConfigError", (error) =>
      Effect.fail(new InvalidConfig({ field: "(environment)", reason: String(error) })))
  )

/**
 * Which process forks the trees of a resolved configuration: its own `forkFrom`, else
 * `fromEnvironment` (the value of `SHEPHERD_FORK_FROM`, read by the platform layer), else
 * `"helper"`. An invalid variable fails with `InvalidConfig` naming the field and the variable.
 *
 * @since 0.4.0
 * @category constructors
 */
export const forkFrom = (
  config: Resolved,
  fromEnvironment: string | undefined
): Effect.Effect<ForkFrom, InvalidConfig> => {
  if (config.forkFrom !== undefined) return Effect.succeed(config.forkFrom)
  if (fromEnvironment === undefined || fromEnvironment === "") return Effect.succeed("helper")
  return fromEnvironment === "host" || fromEnvironment === "helper"
    ? Effect.succeed(fromEnvironment)
    : Effect.fail(
      new InvalidConfig({
        field: "forkFrom",
        reason: `SHEPHERD_FORK_FROM=${JSON.stringify(fromEnvironment)}: expected "host" or "helper"`
      })
    )
}

/**
 * The containment of a resolved configuration: its own `containment`, else
 * `fromEnvironment` (the value of `SHEPHERD_CONTAINMENT`, read by the platform
 * layer), else `"auto"`. An invalid variable fails with `InvalidConfig` naming
 * the field and the variable.
 *
 * @since 0.2.0
 * @category constructors
 */
export const containment = (
  config: Resolved,
  fromEnvironment: string | undefined
): Effect.Effect<Containment.Mode, InvalidConfig> => {
  if (config.containment !== undefined) return Effect.succeed(config.containment)
  if (fromEnvironment === undefined || fromEnvironment === "") return Effect.succeed("auto")
  return Schema.decodeUnknownEffect(Containment.Mode)(fromEnvironment).pipe(
    Effect.mapError(() =>
      new InvalidConfig({
        field: "containment",
        reason: `SHEPHERD_CONTAINMENT=${JSON.stringify(fromEnvironment)}: expected "auto", "cgroup" or "process-group"`
      })
    )
  )
}
