/**
 * PID-reuse-safe process identity: a pid alone names whatever process holds
 * that number now; (pid, start time, boot id) names one process forever.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/**
 * The identity of one OS process. `startTime` is the kernel's start time of
 * the process (clock ticks since boot on Linux, field 22 of
 * `/proc/<pid>/stat`); `bootId` tells boots apart.
 *
 * @since 0.1.0
 * @category schemas
 */
export const ProcessIdentity = Schema.Struct({
  pid: Schema.Int,
  // Decimal clock ticks: a ledger line with anything else is bad input (quarantined), not an identity.
  startTime: Schema.String.check(Schema.isPattern(/^\d+$/)),
  bootId: Schema.String
})

/**
 * @since 0.1.0
 * @category models
 */
export interface ProcessIdentity extends Schema.Schema.Type<typeof ProcessIdentity> {}

/**
 * Two identities name the same process.
 *
 * @since 0.1.0
 * @category predicates
 */
export const same = (a: ProcessIdentity, b: ProcessIdentity): boolean =>
  a.pid === b.pid && a.startTime === b.startTime && a.bootId === b.bootId
