/**
 * The ledger: an append-only journal of what a pool started, so that a host
 * that restarts after a crash can terminate what its predecessor left behind.
 *
 * One Schema-encoded line per event. Replaying the events yields the live
 * entries (an intent without an exit). This module holds the record schemas,
 * the replay state shared by every implementation, the port, and an
 * in-memory implementation for tests; `@shepherd/node` has the file ledger.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import { CgroupRef } from "./Containment.ts"
import { ProcessIdentity } from "./ProcessIdentity.ts"
import type { Container } from "./ProcessTable.ts"

/**
 * A host started a pool on this ledger.
 *
 * @since 0.1.0
 * @category records
 */
export const HostStarted = Schema.TaggedStruct("HostStarted", {
  poolId: Schema.String,
  host: ProcessIdentity,
  at: Schema.Number
})

/**
 * A host closed its pool cleanly.
 *
 * @since 0.1.0
 * @category records
 */
export const HostStopped = Schema.TaggedStruct("HostStopped", {
  poolId: Schema.String,
  at: Schema.Number
})

/**
 * Written *before* the OS spawn: if the host dies between this line and the
 * next, recovery still knows the `SHEPHERD_ID` to look for.
 *
 * @since 0.1.0
 * @category records
 */
export const Intent = Schema.TaggedStruct("Intent", {
  poolId: Schema.String,
  shepherdId: Schema.String,
  session: Schema.String,
  /** Display text; `Redacted` arguments are already hidden. */
  command: Schema.String,
  /** The command has `Redacted` arguments or environment values: readers hide its members' arguments. */
  redacted: Schema.optionalKey(Schema.Boolean),
  at: Schema.Number
})

/**
 * Written right after the OS spawn.
 *
 * @since 0.1.0
 * @category records
 */
export const Registered = Schema.TaggedStruct("Registered", {
  shepherdId: Schema.String,
  pgid: Schema.Int,
  identity: ProcessIdentity,
  /** The tree's cgroup leaf (cgroup containment; absent in ledgers written before it). */
  cgroup: Schema.optionalKey(CgroupRef),
  at: Schema.Number
})

/**
 * The tree is gone (or the spawn failed); `outcome` is a `Teardown.Outcome`
 * (the teardown report's tag, `Gone`, `OtherBoot` or `SpawnFailed`). It is
 * read back as any string, so that a ledger written by another version opens.
 *
 * @since 0.1.0
 * @category records
 */
export const ExitedRecord = Schema.TaggedStruct("Exited", {
  shepherdId: Schema.String,
  outcome: Schema.String,
  detail: Schema.String,
  at: Schema.Number
})

/**
 * @since 0.1.0
 * @category records
 */
export const LedgerRecord = Schema.Union([HostStarted, HostStopped, Intent, Registered, ExitedRecord])

/**
 * @since 0.1.0
 * @category records
 */
export type LedgerRecord = typeof LedgerRecord.Type

/**
 * One line of the ledger file: the JSON encoding of a record.
 *
 * @since 0.1.0
 * @category records
 */
export const LedgerLine = Schema.fromJsonString(LedgerRecord)

/**
 * A live entry: a process the ledger says may still be running.
 *
 * @since 0.1.0
 * @category models
 */
export interface Entry {
  readonly poolId: string
  readonly shepherdId: string
  readonly session: string
  readonly command: string
  /** See `Intent.redacted`. */
  readonly redacted?: boolean | undefined
  readonly intentAt: number
  /** Absent when the host died between the intent and the spawn's registration. */
  readonly pgid?: number | undefined
  readonly identity?: ProcessIdentity | undefined
  /** The tree's cgroup leaf, when it had one. */
  readonly cgroup?: CgroupRef | undefined
  /** The host that owned the pool, if its start was recorded. */
  readonly host?: ProcessIdentity | undefined
}

/**
 * The container a ledger entry names, for a host with no handle to its tree
 * (recovery, the reaper, the doctor, `shepherd reap`). An entry whose
 * registration was never written has no process group and no leader: its
 * members are then found by cookie only (`pgid` -1 and a leader that names
 * no process).
 *
 * @since 0.1.0
 * @category constructors
 */
export const containerOf = (
  entry: {
    readonly shepherdId: string
    readonly pgid?: number | undefined
    readonly identity?: ProcessIdentity | undefined
    readonly cgroup?: CgroupRef | undefined
  },
  bootId: string
): Container => ({
  pgid: entry.pgid ?? -1,
  shepherdId: entry.shepherdId,
  leader: entry.identity ?? { pid: -1, startTime: "0", bootId },
  ...(entry.cgroup === undefined ? {} : { cgroup: entry.cgroup })
})

/**
 * The replay state: live entries and known hosts. Every implementation
 * applies each record to it, so the live set is never re-read from disk.
 *
 * @since 0.1.0
 * @category models
 */
export class State {
  readonly live = new Map<string, Entry>()
  readonly hosts = new Map<string, ProcessIdentity>()
  /** Records applied since the state was built or compacted. */
  events = 0

  apply(record: LedgerRecord): void {
    this.events++
    switch (record._tag) {
      case "HostStarted":
        this.hosts.set(record.poolId, record.host)
        return
      case "HostStopped":
        return
      case "Intent":
        this.live.set(record.shepherdId, {
          poolId: record.poolId,
          shepherdId: record.shepherdId,
          session: record.session,
          command: record.command,
          ...(record.redacted === true ? { redacted: true } : {}),
          intentAt: record.at,
          host: this.hosts.get(record.poolId)
        })
        return
      case "Registered": {
        const entry = this.live.get(record.shepherdId)
        if (entry !== undefined) {
          this.live.set(record.shepherdId, {
            ...entry,
            pgid: record.pgid,
            identity: record.identity,
            ...(record.cgroup === undefined ? {} : { cgroup: record.cgroup })
          })
        }
        return
      }
      case "Exited":
        this.live.delete(record.shepherdId)
        return
    }
  }

  /** The shortest record sequence that replays to the current live set. */
  compacted(): Array<LedgerRecord> {
    const out: Array<LedgerRecord> = []
    const pools = new Set<string>()
    for (const entry of this.live.values()) pools.add(entry.poolId)
    for (const poolId of pools) {
      const host = this.hosts.get(poolId)
      if (host !== undefined) out.push({ _tag: "HostStarted", poolId, host, at: 0 })
    }
    for (const e of this.live.values()) {
      out.push({
        _tag: "Intent",
        poolId: e.poolId,
        shepherdId: e.shepherdId,
        session: e.session,
        command: e.command,
        ...(e.redacted === true ? { redacted: true } : {}),
        at: e.intentAt
      })
      if (e.pgid !== undefined && e.identity !== undefined) {
        out.push({
          _tag: "Registered",
          shepherdId: e.shepherdId,
          pgid: e.pgid,
          identity: e.identity,
          ...(e.cgroup === undefined ? {} : { cgroup: e.cgroup }),
          at: e.intentAt
        })
      }
    }
    return out
  }
}

/**
 * What opening the ledger found: lines skipped, files quarantined.
 *
 * @since 0.1.0
 * @category models
 */
export interface OpenReport {
  readonly path: string
  /** The last line was incomplete (the host died mid-write): it is kept in the quarantined copy. */
  readonly tornLine: boolean
  /**
   * Where the ledger as found was kept aside (`<ledger>.corrupt-<time>`), when
   * some of its lines could not be parsed (a torn last line included).
   */
  readonly quarantined?: string | undefined
  /** Lines that could not be parsed (not counting a torn last line). */
  readonly badLines: number
  /** A previous owner's lock was taken over (its host was gone). */
  readonly tookOverFrom?: ProcessIdentity | undefined
}

/**
 * The ledger could not be used: its directory or file is not provably ours
 * (a symlink, a FIFO, another owner, writable by other users), the file is
 * not a ledger, the path cannot hold files (`/proc`), or an I/O error.
 * `reason` says which, and how to fix it.
 *
 * @since 0.1.0
 * @category errors
 */
export class LedgerError extends Schema.TaggedError<LedgerError>()("LedgerError", {
  path: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `ledger ${this.path}: ${this.reason}`
  }
}

/**
 * Another live host owns the ledger, or its lock cannot be judged yet.
 *
 * **Details**
 *
 * `owner` is the live host that holds the lock. When the lock file is
 * unreadable and young (a host may be creating it), `ownerPid` is `-1`,
 * `owner` is the caller's own identity, and `reason` says what was found.
 *
 * @since 0.1.0
 * @category errors
 */
export class LedgerLocked extends Schema.TaggedError<LedgerLocked>()("LedgerLocked", {
  path: Schema.String,
  ownerPid: Schema.Int,
  owner: ProcessIdentity,
  /** Why the ledger counts as locked, when no live owner is known. */
  reason: Schema.optionalKey(Schema.String)
}) {
  override get message(): string {
    return this.reason !== undefined
      ? `ledger ${this.path} is locked: ${this.reason}`
      : `ledger ${this.path} is owned by the live Shepherd host pid ${this.ownerPid}; it releases the lock when it stops`
  }
}

/**
 * @since 0.1.0
 * @category services
 */
export class Ledger extends Context.Service<Ledger, {
  readonly path: string
  /** This host's identity (its boot id tells entries of an earlier boot apart). */
  readonly host: ProcessIdentity
  /** What opening the ledger found. */
  readonly opened: OpenReport
  /** Appends one record; compacts when the file has grown. */
  readonly append: (record: LedgerRecord) => Effect.Effect<void, LedgerError>
  /** The live entries, from the replay state. */
  readonly entries: Effect.Effect<ReadonlyArray<Entry>>
  /** Rewrites the ledger as its live set (temp file + rename). */
  readonly compact: Effect.Effect<void, LedgerError>
  /** When the ledger was last compacted (epoch ms), if ever in this host. */
  readonly lastCompaction: Effect.Effect<number | undefined>
}>()("@shepherd/core/Ledger") {
  /**
   * An in-memory ledger, for tests: `records` seeds it (as if read from disk).
   *
   * @since 0.1.0
   * @category layers
   */
  static readonly layerMemory = (options: {
    readonly host: ProcessIdentity
    readonly records?: ReadonlyArray<LedgerRecord> | undefined
  }): Layer.Layer<Ledger> =>
    Layer.sync(Ledger, () => {
      const state = new State()
      const journal: Array<LedgerRecord> = [...(options.records ?? [])]
      for (const r of journal) state.apply(r)
      let lastCompaction: number | undefined
      return Ledger.of({
        path: ":memory:",
        host: options.host,
        opened: { path: ":memory:", tornLine: false, badLines: 0 },
        append: (record) =>
          Effect.sync(() => {
            journal.push(record)
            state.apply(record)
          }),
        entries: Effect.sync(() => [...state.live.values()]),
        compact: Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Effect.sync(() => {
            journal.splice(0, journal.length, ...state.compacted())
            lastCompaction = now
          })),
        lastCompaction: Effect.sync(() => lastCompaction)
      })
    })
}
