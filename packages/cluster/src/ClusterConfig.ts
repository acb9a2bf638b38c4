/**
 * The timing rules that keep a session on one runner at a time.
 *
 * A runner holds each of its shards with a lease row in the database
 * (`shardLockExpiration`), refreshed every `min(shardLockRefreshInterval,
 * shardLockExpiration / 3)`. When a runner is SIGKILLed its trees are ended by
 * its lifeline within the lifeline bound, `grace + forceWait + 1 s`; when it
 * loses the database instead, it stops its sessions (their trees are torn down
 * within `grace + forceWait`) at most two refresh intervals after its last
 * successful refresh. Either way its trees are gone before its leases can
 * expire when
 *
 * ```text
 * shardLockExpiration ≥ 2 × refreshInterval + grace + forceWait + 1 s
 * ```
 *
 * and so a session's trees never run on two runners at once. PostgreSQL
 * advisory locks would break that (they end with the holder's connection, the
 * moment its process dies, before its lifeline is done), so runners use lease
 * rows only (`shardLockDisableAdvisory: true`).
 *
 * @since 0.1.0
 */
import type { KillPolicy } from "@shepherd/core/KillPolicy"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { InvalidClusterConfig } from "./ClusterError.ts"

/**
 * The timing fields of effect/cluster's `ShardingConfig` that the rule reads.
 *
 * @since 0.1.0
 * @category models
 */
export interface LockTiming {
  readonly shardLockExpiration: Duration.Input
  readonly shardLockRefreshInterval: Duration.Input
  readonly shardLockDisableAdvisory: boolean
}

/**
 * How long after its host dies a lifeline has ended a tree: grace + forceWait + 1 s.
 *
 * @since 0.1.0
 * @category getters
 */
export const lifelineBoundMs = (kill: KillPolicy): number => kill.graceMs + kill.forceWaitMs + 1_000

/**
 * The interval at which a runner refreshes its shard leases (effect/cluster's rule).
 *
 * @since 0.1.0
 * @category getters
 */
export const refreshIntervalMs = (timing: LockTiming): number =>
  Math.min(
    Duration.toMillis(Duration.fromInputUnsafe(timing.shardLockRefreshInterval)),
    Duration.toMillis(Duration.fromInputUnsafe(timing.shardLockExpiration)) / 3
  )

/**
 * The shortest safe `shardLockExpiration` for a kill policy and refresh interval.
 *
 * @since 0.1.0
 * @category getters
 */
export const minimumLockExpirationMs = (kill: KillPolicy, timing: LockTiming): number =>
  2 * refreshIntervalMs(timing) + lifelineBoundMs(kill)

/**
 * Checks the rule above; fails with `InvalidClusterConfig` naming
 * `shardLockExpiration` (or `shardLockDisableAdvisory`).
 *
 * @since 0.1.0
 * @category validation
 */
export const validate = (kill: KillPolicy, timing: LockTiming): Effect.Effect<void, InvalidClusterConfig> =>
  Effect.suspend(() => {
    if (!timing.shardLockDisableAdvisory) {
      return Effect.fail(
        new InvalidClusterConfig({
          field: "shardLockDisableAdvisory",
          reason: "must be true: a PostgreSQL advisory lock ends with its holder's connection, " +
            "before the dead holder's lifeline has ended its trees"
        })
      )
    }
    // Both durations must be finite and positive: a zero or negative refresh interval would make
    // the minimum below the lifeline bound (and the lease loop spin), an infinite lease would
    // never let a dead runner's sessions move.
    for (const field of ["shardLockRefreshInterval", "shardLockExpiration"] as const) {
      let ms: number
      try {
        ms = Duration.toMillis(Duration.fromInputUnsafe(timing[field]))
      } catch {
        return Effect.fail(new InvalidClusterConfig({ field, reason: "is not a duration" }))
      }
      if (!(ms > 0 && Number.isFinite(ms))) {
        return Effect.fail(new InvalidClusterConfig({ field, reason: `is ${ms} ms; it must be finite and positive` }))
      }
    }
    const expiration = Duration.toMillis(Duration.fromInputUnsafe(timing.shardLockExpiration))
    const minimum = minimumLockExpirationMs(kill, timing)
    if (!(expiration >= minimum)) {
      return Effect.fail(
        new InvalidClusterConfig({
          field: "shardLockExpiration",
          reason: `is ${expiration} ms; it must be at least ${minimum} ms: twice the lease refresh interval ` +
            `(${refreshIntervalMs(timing)} ms) plus the lifeline bound grace + forceWait + 1 s ` +
            `(${lifelineBoundMs(kill)} ms), or a session could run on a new runner while a dead one's trees still live`
        })
      )
    }
    return Effect.void
  })
