/**
 * The doctor report: what a pool runs, what its ledger says, and what the OS
 * shows, side by side, for an operator at 3 a.m. Schema-described, so it is
 * served as JSON (`DoctorHttp`) and printed as a tree (`shepherd doctor`).
 * Environment values never appear, only names.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"
import * as Containment from "./Containment.ts"
import { EnvPolicy } from "./EnvPolicy.ts"
import { ProcessIdentity } from "./ProcessIdentity.ts"
import { RecoveryReport, TickReport } from "./Reaper.ts"
import { Outcome } from "./Teardown.ts"

/**
 * One live process of a tree.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Member = Schema.Struct({
  pid: Schema.Int,
  ppid: Schema.Int,
  pgid: Schema.Int,
  state: Schema.String,
  rssKiB: Schema.Number,
  /**
   * The command line as the OS shows it; for a tree spawned with `Redacted`
   * arguments or environment values, the executable's name and
   * `<arguments hidden>` (a member may carry a secret in any argument).
   */
  command: Schema.String
})

/**
 * @since 0.1.0
 * @category schemas
 */
export const ProcessEntry = Schema.Struct({
  shepherdId: Schema.String,
  pid: Schema.Int,
  pgid: Schema.Int,
  identity: ProcessIdentity,
  command: Schema.String,
  ageMs: Schema.Number,
  slotWaitMs: Schema.Number,
  /** `running`: the leader lives; `exited`: the leader is gone, its teardown is under way. */
  state: Schema.Literals(["running", "exited"]),
  members: Schema.Array(Member),
  /** The tree's cgroup leaf (cgroup containment). */
  cgroup: Schema.optionalKey(Schema.String),
  env: Schema.Struct({
    inherited: Schema.Int,
    stripped: Schema.Array(Schema.String),
    preserved: Schema.Array(Schema.String),
    explicit: Schema.Array(Schema.String)
  })
})

/**
 * @since 0.1.0
 * @category schemas
 */
export const SessionEntry = Schema.Struct({
  id: Schema.String,
  closing: Schema.Boolean,
  processes: Schema.Array(ProcessEntry),
  /** The session's limits, as asked for. */
  limits: Schema.optionalKey(Containment.Limits),
  /** The session's cgroup: usage and limits as the kernel reports them (cgroup containment). */
  usage: Schema.optionalKey(Containment.Usage)
})

/**
 * How a recent tree ended.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Ended = Schema.Struct({
  shepherdId: Schema.String,
  session: Schema.String,
  pid: Schema.Int,
  command: Schema.String,
  outcome: Outcome,
  description: Schema.String,
  durationMs: Schema.Number,
  at: Schema.Number
})

/**
 * The three-way comparison of pool, ledger and OS.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Comparison = Schema.Struct({
  /** Processes carrying this pool's `SHEPHERD_ID` that neither the pool nor the ledger tracks. */
  untracked: Schema.Array(Schema.Struct({ shepherdId: Schema.String, pids: Schema.Array(Schema.Int) })),
  /** Live ledger entries the pool does not track (its reaper will terminate or prune them). */
  stale: Schema.Array(Schema.Struct({
    shepherdId: Schema.String,
    session: Schema.String,
    command: Schema.String,
    pid: Schema.optionalKey(Schema.Int),
    alive: Schema.Array(Schema.Int)
  })),
  /** Tracked processes whose tree has no live member left (the teardown is catching up). */
  vanished: Schema.Array(Schema.Struct({ shepherdId: Schema.String, pid: Schema.Int })),
  /** Tracked processes the ledger does not list (a ledger write failed). */
  unrecorded: Schema.Array(Schema.String)
})

/**
 * @since 0.1.0
 * @category schemas
 */
export const DoctorReport = Schema.Struct({
  at: Schema.Number,
  pool: Schema.Struct({
    poolId: Schema.String,
    name: Schema.String,
    uptimeMs: Schema.Number,
    slots: Schema.Int,
    hardCap: Schema.Int,
    slotTimeoutMs: Schema.Number,
    kill: Schema.Struct({ signal: Schema.String, graceMs: Schema.Number, forceWaitMs: Schema.Number }),
    reapIntervalMs: Schema.Number,
    closing: Schema.Boolean
  }),
  host: Schema.optionalKey(ProcessIdentity),
  slots: Schema.Struct({
    total: Schema.Int,
    inUse: Schema.Int,
    free: Schema.Int,
    waiting: Schema.Int,
    longestWaitMs: Schema.Number
  }),
  sessions: Schema.Array(SessionEntry),
  recent: Schema.Array(Ended),
  ledger: Schema.optionalKey(Schema.Struct({
    path: Schema.String,
    live: Schema.Int,
    lastCompaction: Schema.optionalKey(Schema.Number),
    tornLine: Schema.Boolean,
    badLines: Schema.Int,
    quarantined: Schema.optionalKey(Schema.String),
    tookOverFrom: Schema.optionalKey(ProcessIdentity)
  })),
  recovery: Schema.optionalKey(RecoveryReport),
  reaper: Schema.Struct({ intervalMs: Schema.Number, lastTick: Schema.optionalKey(TickReport) }),
  lifeline: Schema.optionalKey(Schema.Struct({
    kind: Schema.String,
    pid: Schema.optionalKey(Schema.Int),
    alive: Schema.Boolean,
    watching: Schema.Int,
    restarts: Schema.Int,
    lastError: Schema.optionalKey(Schema.String),
    /** Spawns waiting for a stalled lifeline. */
    waiting: Schema.optionalKey(Schema.Int)
  })),
  /** What forks the trees: the host, or the pool's fork helper (its pid, deaths, why the host forks instead). */
  launcher: Schema.optionalKey(Schema.Struct({
    forkFrom: Schema.Literals(["host", "helper"]),
    pid: Schema.optionalKey(Schema.Int),
    alive: Schema.Boolean,
    deaths: Schema.Int,
    lastError: Schema.optionalKey(Schema.String),
    fallback: Schema.optionalKey(Schema.String)
  })),
  envPolicy: EnvPolicy,
  /** Which containment is in force, and why. */
  containment: Schema.optionalKey(Containment.Status),
  comparison: Comparison
})

/**
 * @since 0.1.0
 * @category models
 */
export interface DoctorReport extends Schema.Schema.Type<typeof DoctorReport> {}

/**
 * The report as JSON text.
 *
 * @since 0.1.0
 * @category encoding
 */
export const DoctorReportJson = Schema.fromJsonString(DoctorReport)
