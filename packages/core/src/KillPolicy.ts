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

/**
 * Parses a duration, or returns `undefined` when it is not a finite,
 * non-negative duration.
 *
 * @since 0.1.0
 * @category constructors
 */
export const durationMillis = (input: unknown): number | undefined => {
  if (typeof input !== "number" && typeof input !== "string" && typeof input !== "object") return undefined
  // Duration treats NaN as 0 ms, which would silently mean "SIGKILL at once".
  if (typeof input === "number" && !Number.isFinite(input)) return undefined
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
