/**
 * How a supervised process tree is ended: send `signal` to every member,
 * wait up to `grace` for all of them to die, SIGKILL what is left, and wait
 * up to `forceWait` more.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import type { Signal } from "./Signal.ts"

/**
 * A resolved kill policy, durations in milliseconds.
 *
 * @since 0.1.0
 * @category models
 */
export interface KillPolicy {
  readonly signal: Signal
  readonly graceMs: number
  readonly forceWaitMs: number
}

/**
 * A kill policy as users write it: durations accept anything
 * `Duration.Input` accepts (`"5 seconds"`, `500`, ...).
 *
 * @since 0.1.0
 * @category models
 */
export interface KillPolicyInput {
  readonly signal?: Signal | undefined
  readonly grace?: Duration.Input | undefined
  readonly forceWait?: Duration.Input | undefined
}

/**
 * The defaults: SIGTERM, 5 s of grace, 1 s to confirm a SIGKILL.
 *
 * @since 0.1.0
 * @category constructors
 */
export const defaults: KillPolicy = { signal: "SIGTERM", graceMs: 5_000, forceWaitMs: 1_000 }

// The short forms people type on a command line or in an environment variable.
const shortForm = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$/
const shortUnits: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/**
 * The duration forms `durationMillis` accepts, for error messages.
 *
 * @since 0.1.0
 * @category constructors
 */
export const durationForms =
  "milliseconds (500), a short form (\"200ms\", \"5s\", \"1m\", \"1h\") or an Effect Duration (\"5 seconds\")"

/**
 * Parses a duration — milliseconds, a short form (`200ms`, `5s`, `1m`, `1h`,
 * `1d`) or an Effect `Duration` input (`"5 seconds"`) — or returns
 * `undefined` when it is not a finite, non-negative duration.
 *
 * @since 0.1.0
 * @category constructors
 */
export const durationMillis = (input: unknown): number | undefined => {
  if (typeof input !== "number" && typeof input !== "string" && typeof input !== "object") return undefined
  // Duration treats NaN as 0 ms, which would silently mean "SIGKILL at once".
  if (typeof input === "number" && !Number.isFinite(input)) return undefined
  const short = typeof input === "string" ? shortForm.exec(input) : null
  if (short !== null) return Number(short[1]) * shortUnits[short[2]!]!
  let millis: number
  try {
    millis = Duration.toMillis(input as Duration.Input)
  } catch {
    return undefined
  }
  return Number.isFinite(millis) && millis >= 0 ? millis : undefined
}

/**
 * Overrides `base` with the fields set in `input` (already validated).
 *
 * @since 0.1.0
 * @category combinators
 */
export const override = (base: KillPolicy, input: KillPolicyInput | undefined): KillPolicy =>
  input === undefined ? base : {
    signal: input.signal ?? base.signal,
    graceMs: input.grace === undefined ? base.graceMs : durationMillis(input.grace) ?? base.graceMs,
    forceWaitMs: input.forceWait === undefined ? base.forceWaitMs : durationMillis(input.forceWait) ?? base.forceWaitMs
  }
