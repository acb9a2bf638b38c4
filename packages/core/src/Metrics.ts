/**
 * Shepherd's metrics. Every update carries the attribute `pool` (the pool id),
 * so several pools in one host stay apart; an OpenTelemetry or Prometheus
 * exporter picks them up from Effect's metric registry.
 *
 * @since 0.1.0
 */
import * as Metric from "effect/Metric"

const durationBoundaries = Metric.exponentialBoundaries({ start: 1, factor: 2, count: 16 })

/**
 * @since 0.1.0
 * @category metrics
 */
export const spawned = Metric.counter("shepherd_processes_spawned", {
  description: "Processes spawned",
  incremental: true
})

/**
 * @since 0.1.0
 * @category metrics
 */
export const running = Metric.gauge("shepherd_processes_running", {
  description: "Supervised trees alive (spawned and not yet torn down)"
})

/**
 * Exits by outcome (attribute `outcome`: Exited, Graceful, Forced, Escaped, Unverified).
 *
 * @since 0.1.0
 * @category metrics
 */
export const exited = Metric.counter("shepherd_processes_exited", {
  description: "Supervised trees gone, by outcome",
  incremental: true
})

/**
 * @since 0.1.0
 * @category metrics
 */
export const spawnFailures = Metric.counter("shepherd_spawn_failures", {
  description: "Spawn requests that failed (attribute `reason`: SpawnError, SlotTimeout, HardCapExceeded, PoolClosed)",
  incremental: true
})

/**
 * @since 0.1.0
 * @category metrics
 */
export const slotWaiters = Metric.gauge("shepherd_slot_waiters", {
  description: "Spawn requests waiting for a pool slot"
})

/**
 * @since 0.1.0
 * @category metrics
 */
export const slotWait = Metric.histogram("shepherd_slot_wait_ms", {
  description: "Time a spawn request waited for a slot (ms)",
  boundaries: durationBoundaries
})

/**
 * @since 0.1.0
 * @category metrics
 */
export const teardownDuration = Metric.histogram("shepherd_teardown_ms", {
  description: "Time from the start of a teardown until the tree was confirmed gone (ms)",
  boundaries: durationBoundaries
})

/**
 * @since 0.1.0
 * @category metrics
 */
export const orphansReaped = Metric.counter("shepherd_orphans_reaped", {
  description: "Trees terminated by recovery or the reaper (attribute `source`: recovery, stale, untracked)",
  incremental: true
})

/**
 * @since 0.1.0
 * @category metrics
 */
export const ledgerEvents = Metric.counter("shepherd_ledger_events", {
  description: "Records appended to the ledger",
  incremental: true
})

/**
 * @since 0.1.0
 * @category metrics
 */
export const ledgerCompactions = Metric.counter("shepherd_ledger_compactions", {
  description: "Ledger compactions",
  incremental: true
})

/**
 * Lifeline restarts after the lifeline died on its own (attribute `outcome`:
 * `restarted`, or `failed` when it could not be kept alive).
 *
 * @since 0.1.0
 * @category metrics
 */
export const lifelineRestarts = Metric.counter("shepherd_lifeline_restarts", {
  description: "Lifelines restarted after dying on their own (attribute `outcome`: restarted, failed)",
  incremental: true
})
