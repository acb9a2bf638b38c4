/**
 * The `/proc` table's incremental view of every pid: what a scan has read
 * (start time, parent, group, cookie) and who vouched for each process's
 * group, so that a scan reads only processes it has not seen before (a `/proc`
 * listing is cheap; reading every process's stat and environ is not).
 *
 * Start time and cookie never change for a process; an entry is dropped when
 * its pid disappears and replaced when the pid shows another start time. A pid
 * that died and was handed to a new process between two listings is caught by
 * the kernel's pid clock (`procfs.readPidClock`): every listed pid allocated
 * since the previous listing is read again, and everything is read again when
 * the clock cannot be read, when the allocations may have gone round
 * `pid_max`, and at least every `fullScanMs`.
 */
import * as Membership from "@shepherd/core/Membership"
import { helperPids } from "./helperPids.ts"
import * as procfs from "./procfs.ts"

/** What the cache knows of one pid. */
export interface Known {
  readonly startTime: string
  readonly start: bigint
  readonly ppid: number
  pgid: number
  /**
   * The start time of the process that led `pgid` when this process was seen in it (the group
   * is that leader's for as long as it has members), or inherited from a parent vouched in the
   * same group; `undefined` when nobody could vouch.
   */
  vouched: string | undefined
  /** `null`: not read yet. */
  cookie: string | undefined | null
}

/** Re-read everything at least this often. */
const fullScanMs = 3_000

/**
 * The cache of one table. `self` is the host's pid, `hostCookie` its own
 * `SHEPHERD_ID` (its children show it until they exec).
 */
export const make = (self: number, hostCookie: string | undefined) => {
  const known = new Map<number, Known>()
  let lastFullScan = 0
  const pidMax = procfs.readPidMax()
  let clock: procfs.PidClock | undefined

  // Within one scan a pid's stat is read once (the leader is looked at as group owner and as member).
  let scanStats: Map<number, procfs.Stat | undefined> | undefined
  const statOf = (pid: number): procfs.Stat | undefined => {
    if (scanStats === undefined) return procfs.readStat(pid)
    if (scanStats.has(pid)) return scanStats.get(pid)
    const stat = procfs.readStat(pid)
    scanStats.set(pid, stat)
    return stat
  }
  /** Runs `body` as one scan: every stat it reads is read once. */
  const scanning = <A>(body: () => A): A => {
    scanStats = new Map()
    try {
      return body()
    } finally {
      scanStats = undefined
    }
  }

  const learn = (stat: procfs.Stat): Known => {
    const entry: Known = {
      startTime: stat.startTime,
      start: BigInt(stat.startTime),
      ppid: stat.ppid,
      pgid: stat.pgid,
      vouched: undefined,
      cookie: null
    }
    known.set(stat.pid, entry)
    return entry
  }

  /** Brings `entry` (the cached view of `pid`, if any) up to date with `stat`; returns the entry to use. */
  const observe = (
    pid: number,
    stat: procfs.Stat,
    entry: Known | undefined,
    changed: Array<[number, Known]>
  ): Known => {
    if (entry === undefined || entry.startTime !== stat.startTime) {
      const fresh = learn(stat)
      changed.push([pid, fresh])
      return fresh
    }
    if (entry.pgid !== stat.pgid) {
      entry.pgid = stat.pgid
      changed.push([pid, entry])
    }
    return entry
  }

  // Only new pids and group changes are vouched for (see `Membership.vouch`), reading each group's
  // leader once per batch, parents before children (a parent starts first).
  const vouchAll = (changed: Array<[number, Known]>): void => {
    if (changed.length > 1) changed.sort((a, b) => (a[1].start < b[1].start ? -1 : a[1].start > b[1].start ? 1 : 0))
    const leaders = new Map<number, string | undefined>()
    const leaderStartTime = (pgid: number): string | undefined => {
      if (!leaders.has(pgid)) {
        let startTime: string | undefined
        try {
          startTime = procfs.readStat(pgid)?.startTime
        } catch {
          startTime = undefined
        }
        leaders.set(pgid, startTime)
      }
      return leaders.get(pgid)
    }
    for (const [pid, entry] of changed) {
      entry.vouched = Membership.vouch(
        { pid, pgid: entry.pgid, startTime: entry.startTime, start: entry.start },
        leaderStartTime,
        known.get(entry.ppid)
      )
    }
  }

  /** Lists `/proc` and brings the cache up to date; returns the pids listed. */
  const refresh = (): Array<number> => {
    const pids = procfs.listPids()
    // Read after the listing: every pid it shows was allocated before this reading.
    const before = clock
    clock = procfs.readPidClock()
    const now = Date.now()
    const from = before?.lastPid ?? 0
    const to = clock?.lastPid ?? 0
    const forks = clock === undefined || before === undefined ? Number.POSITIVE_INFINITY : clock.forks - before.forks
    // Read everything again when the range may have gone round pid_max (300: pids below it are
    // reserved, a wrap restarts above them), or is narrower than the forks since (the last pid was
    // set back through ns_last_pid; or forks in other pid namespaces, counted too, which only costs
    // time).
    const full = now - lastFullScan >= fullScanMs || forks >= pidMax - 300 || (to - from + pidMax) % pidMax < forks
    if (full) lastFullScan = now
    // Handed out since the last listing (the range wraps at pid_max): such a known pid may be new.
    const allocated = (pid: number) => from <= to ? pid > from && pid <= to : pid > from || pid <= to
    const listed = new Set<number>()
    const changed: Array<[number, Known]> = []
    for (const pid of pids) {
      listed.add(pid)
      const entry = known.get(pid)
      if (entry !== undefined && !full && !allocated(pid)) continue
      let stat: procfs.Stat | undefined
      try {
        stat = statOf(pid)
      } catch {
        // Someone else's process we may not look at (hidepid, another user): it cannot be ours.
        known.delete(pid)
        continue
      }
      if (stat === undefined) known.delete(pid)
      else observe(pid, stat, entry, changed)
    }
    for (const pid of known.keys()) if (!listed.has(pid)) known.delete(pid)
    vouchAll(changed)
    return pids
  }

  const cookieOf = (pid: number, entry: Known): string | undefined => {
    if (entry.cookie !== null) return entry.cookie
    const cookie = procfs.readCookie(pid)
    if (cookie === null) return undefined // unreadable: not ours to judge, and not remembered
    // Our own children (and our fork helpers') show the host's environment until they exec: remember
    // such a child's cookie only once it differs from the host's own (so it was set by the exec).
    const launcher = entry.ppid === self || helperPids.has(entry.ppid)
    if (!launcher || (cookie !== undefined && cookie !== hostCookie)) entry.cookie = cookie
    return cookie
  }

  /** A fresh look at a candidate: alive (not a zombie) and still the process the cache knew. */
  const confirm = (pid: number, entry: Known): Known | undefined => {
    const stat = statOf(pid)
    if (stat === undefined) {
      known.delete(pid)
      return undefined
    }
    if (procfs.isDead(stat)) return undefined
    const changed: Array<[number, Known]> = []
    const fresh = observe(pid, stat, entry, changed)
    vouchAll(changed)
    return fresh
  }

  return { known, statOf, scanning, refresh, cookieOf, confirm }
}
