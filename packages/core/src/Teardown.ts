/**
 * The teardown report: how one supervised process tree ended.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

const common = {
  /** pid of the process the pool started (the group leader). */
  pid: Schema.Int,
  /** the `SHEPHERD_ID` value carried by the tree. */
  shepherdId: Schema.String,
  session: Schema.String,
  command: Schema.String,
  /** pids that were signalled (graceful or forced), leader included. */
  signalled: Schema.Array(Schema.Int),
  /** from the start of the teardown until the tree was confirmed gone. */
  durationMs: Schema.Number
}

/**
 * The leader exited by itself; no signal reached it. Members it left behind
 * (if any) were terminated and are listed in `signalled`.
 *
 * @since 0.1.0
 * @category models
 */
export class Exited extends Schema.TaggedClass<Exited>()("Exited", {
  ...common,
  code: Schema.NullOr(Schema.Int),
  signal: Schema.NullOr(Schema.String)
}) {}

/**
 * Every member died within the grace period after the graceful signal.
 *
 * @since 0.1.0
 * @category models
 */
export class Graceful extends Schema.TaggedClass<Graceful>()("Graceful", {
  ...common,
  signal: Schema.String
}) {}

/**
 * At least one member outlived the grace period and was SIGKILLed; all are gone.
 *
 * @since 0.1.0
 * @category models
 */
export class Forced extends Schema.TaggedClass<Forced>()("Forced", {
  ...common,
  forced: Schema.Array(Schema.Int)
}) {}

/**
 * Processes of the tree were still alive after SIGKILL and `forceWait`
 * (uninterruptible sleep, another user, a stopped tracer, ...).
 *
 * @since 0.1.0
 * @category models
 */
export class Escaped extends Schema.TaggedClass<Escaped>()("Escaped", {
  ...common,
  escaped: Schema.Array(Schema.Int)
}) {}

/**
 * The platform could not confirm the tree's fate (no process table).
 *
 * @since 0.1.0
 * @category models
 */
export class Unverified extends Schema.TaggedClass<Unverified>()("Unverified", {
  ...common,
  reason: Schema.String
}) {}

/**
 * @since 0.1.0
 * @category schemas
 */
export const Teardown = Schema.Union([Exited, Graceful, Forced, Escaped, Unverified])

/**
 * @since 0.1.0
 * @category models
 */
export type Teardown = Exited | Graceful | Forced | Escaped | Unverified

/**
 * How a tree's supervision ended, as reports, reaper actions and the ledger's
 * `Exited` records name it: a teardown report's tag, or `Gone` (an orphan
 * tree had no live member), `OtherBoot` (a ledger entry of an earlier boot,
 * never signalled), `SpawnFailed` (the OS refused the command).
 *
 * @since 0.1.0
 * @category schemas
 */
export const Outcome = Schema.Literals([
  "Exited",
  "Graceful",
  "Forced",
  "Escaped",
  "Unverified",
  "Gone",
  "OtherBoot",
  "SpawnFailed"
])

/**
 * @since 0.1.0
 * @category models
 */
export type Outcome = typeof Outcome.Type

/**
 * The tree is known to be gone: every outcome but `Escaped` and `Unverified`,
 * whose ledger entries stay live for the reaper to try again.
 *
 * @since 0.1.0
 * @category predicates
 */
export const isFinal = (outcome: Outcome): boolean => outcome !== "Escaped" && outcome !== "Unverified"

/**
 * The tree is known to be gone (every outcome but `Escaped` and `Unverified`).
 *
 * @since 0.1.0
 * @category predicates
 */
export const isGone = (report: Teardown): boolean => isFinal(report._tag)

/**
 * One line for logs and terminals, e.g. `forced after 5003 ms (SIGKILL 2 pids)`.
 *
 * @since 0.1.0
 * @category formatting
 */
export const describe = (report: Teardown): string => {
  const ms = `${Math.round(report.durationMs)} ms`
  switch (report._tag) {
    case "Exited":
      return report.code !== null
        ? `exited by itself with code ${report.code}${leftovers(report)}`
        : report.signal !== null
        ? `exited by itself on ${report.signal}${leftovers(report)}`
        : `exited by itself (status unknown)${leftovers(report)}`
    case "Graceful":
      return `terminated gracefully by ${report.signal} in ${ms}`
    case "Forced":
      return `forced: SIGKILL to ${report.forced.length} pid(s), gone after ${ms}`
    case "Escaped":
      return `ESCAPED: pid(s) ${report.escaped.join(", ")} still alive after ${ms}`
    case "Unverified":
      return `unverified after ${ms}: ${report.reason}`
  }
}

const leftovers = (report: Exited): string => {
  const others = report.signalled.filter((pid) => pid !== report.pid)
  return others.length === 0
    ? ""
    : `; ${others.length} leftover member(s) terminated in ${Math.round(report.durationMs)} ms`
}
