/**
 * Shepherd's metrics. Every update carries the attribute `pool` (the pool id),
 * so several pools in one host stay apart; an OpenTelemetry or Prometheus
 * exporter picks them up from Effect's metric registry.
 *
 * @since 0.1.0
 */
import * as Metric from "effect/Metric"

const durationBoundaries = Metric.exponentialBoundaries({ start: 1, factor: 2, count: 16 })

const spawnedWith = (attributes?: Metric.Metric.Attributes) =>
  Metric.counter("shepherd_processes_spawned", {
    description: "Processes spawned",
    incremental: true,
    attributes
  })

/**
 * @since 0.1.0
 * @category metrics
 */
export const spawned = spawnedWith()

const runningWith = (attributes?: Metric.Metric.Attributes) =>
  Metric.gauge("shepherd_processes_running", {
    description: "Supervised trees alive (spawned and not yet torn down)",
    attributes
  })

/**
 * @since 0.1.0
 * @category metrics
 */
export const running = runningWith()

const exitedWith = (attributes?: Metric.Metric.Attributes) =>
  Metric.counter("shepherd_processes_exited", {
    description: "Supervised trees gone, by outcome",
    incremental: true,
    attributes
  })

/**
 * Exits by outcome (attribute `outcome`: Exited, Graceful, Forced, Escaped, Unverified).
 *
 * @since 0.1.0
 * @category metrics
 */
export const exited = exitedWith()

/**
 * @since 0.1.0
 * @category metrics
 */
export const spawnFailures = Metric.counter("shepherd_spawn_failures", {
  description: "Spawn requests that failed (attribute `reason`: SpawnError, SlotTimeout, HardCapExceeded, PoolClosed)",
  incremental: true
})

const slotWaitersWith = (attributes?: Metric.Metric.Attributes) =>
  Metric.gauge("shepherd_slot_waiters", {
    description: "Spawn requests waiting for a pool slot",
    attributes
  })

/**
 * @since 0.1.0
 * @category metrics
 */
export const slotWaiters = slotWaitersWith()

const slotWaitWith = (attributes?: Metric.Metric.Attributes) =>
  Metric.histogram("shepherd_slot_wait_ms", {
    description: "Time a spawn request waited for a slot (ms)",
    boundaries: durationBoundaries,
    attributes
  })

/**
 * @since 0.1.0
 * @category metrics
 */
export const slotWait = slotWaitWith()

const teardownDurationWith = (attributes?: Metric.Metric.Attributes) =>
  Metric.histogram("shepherd_teardown_ms", {
    description: "Time from the start of a teardown until the tree was confirmed gone (ms)",
    boundaries: durationBoundaries,
    attributes
  })

/**
 * @since 0.1.0
 * @category metrics
 */
export const teardownDuration = teardownDurationWith()

/**
 * @since 0.1.0
 * @category metrics
 */
export const orphansReaped = Metric.counter("shepherd_orphans_reaped", {
  description: "Trees terminated by recovery or the reaper (attribute `source`: recovery, stale, untracked)",
  incremental: true
})

const ledgerEventsWith = (attributes?: Metric.Metric.Attributes) =>
  Metric.counter("shepherd_ledger_events", {
    description: "Records appended to the ledger",
    incremental: true,
    attributes
  })

/**
 * @since 0.1.0
 * @category metrics
 */
export const ledgerEvents = ledgerEventsWith()

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

/**
 * A pool's metrics with its attributes fixed at construction: the same series
 * as `Metric.withAttributes(metric, attributes)`, without the context copy that
 * `withAttributes` makes on every update (a spawn updates several).
 *
 * @since 0.2.0
 * @category constructors
 */
export const forPool = (attributes: Readonly<Record<string, string>>) => ({
  spawned: spawnedWith(attributes),
  running: runningWith(attributes),
  slotWaiters: slotWaitersWith(attributes),
  slotWait: slotWaitWith(attributes),
  teardownDuration: teardownDurationWith(attributes),
  ledgerEvents: ledgerEventsWith(attributes),
  /** `exited` per outcome. */
  exitedBy: (outcome: string) => exitedWith({ ...attributes, outcome })
})
