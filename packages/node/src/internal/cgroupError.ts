/**
 * The error of the cgroup operations (see `cgroup.ts`), and the step that
 * turns a `CgroupFailure` of the synchronous primitives into it.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { CgroupFailure } from "./cgroupFs.ts"

/**
 * A cgroup operation failed; `reason` classifies it (`Swapped`: the path holds another cgroup than
 * the one we created, and nothing was done to it).
 *
 * @since 0.1.0
 * @category errors
 */
export class CgroupError extends Schema.TaggedError<CgroupError>()("CgroupError", {
  operation: Schema.String,
  path: Schema.String,
  reason: Schema.Literals([
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "Busy",
    "Swapped",
    "NotCgroup",
    "NoSuchProcess",
    "BadName",
    "Unknown"
  ]),
  detail: Schema.String
}) {
  override get message(): string {
    return `cgroup ${this.operation} failed (${this.reason}): ${this.detail}`
  }
}

/** @internal */
export const toError = (operation: string, path: string) => (error: unknown): CgroupError =>
  error instanceof CgroupFailure
    ? new CgroupError({ operation, path: error.path, reason: error.reason, detail: error.message })
    : new CgroupError({
      operation,
      path,
      reason: "Unknown",
      detail: error instanceof Error ? error.message : String(error)
    })

/** @internal */
export const attempt = <A>(operation: string, path: string, f: () => A): Effect.Effect<A, CgroupError> =>
  Effect.try({ try: f, catch: toError(operation, path) })
