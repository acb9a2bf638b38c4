/**
 * The Linux `/proc` process table: identity (pid + start time + boot id),
 * zombie-aware liveness, identity-checked signals, and container membership
 * by process group and by the `SHEPHERD_ID` cookie.
 *
 * @since 0.1.0
 */
import { ProcessTable, ProcessTableError } from "@shepherd/core/ProcessTable"
import type { Carrier, Container, ProcessInfo, SignalResult } from "@shepherd/core/ProcessTable"
import type { ProcessIdentity } from "@shepherd/core/ProcessIdentity"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as fs from "node:fs"
import * as procfs from "./internal/procfs.ts"

interface Request {
  readonly container: Container
  readonly resume: (effect: Effect.Effect<ReadonlyArray<ProcessIdentity>, ProcessTableError>) => void
}

/**
 * Builds the table. Scans are coalesced: every `members` request made while
 * a scan is pending joins it, so closing 300 processes at once reads `/proc`
 * a handful of times, not 300 times.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (): ProcessTable["Service"] => {
  const bootId = procfs.readBootId()
  const self = process.pid
  const euid = process.geteuid?.() ?? -1
  let pending: Array<Request> | undefined

  const ours = (pid: number) => euid === 0 || procfs.ownerUid(pid) === euid

  // Within one scan a pid's stat is read once (the leader is looked at as group owner and as member).
  let scanStats: Map<number, procfs.Stat | undefined> | undefined
  const statOf = (pid: number): procfs.Stat | undefined => {
    if (scanStats === undefined) return procfs.readStat(pid)
    if (scanStats.has(pid)) return scanStats.get(pid)
    const stat = procfs.readStat(pid)
    scanStats.set(pid, stat)
    return stat
  }

  // A process group id names our tree while its leader is the recorded process ("led"). Once the
  // leader is gone the id proves nothing by itself: Linux frees it when the group empties, and the
  // next owner of that pid may build a group of its own with it ("leaderless": members count only
  // if the table saw them in the group while the leader lived, see `vouched`). A live leader with
  // another start time means the pid was reused: the group is someone else's ("foreign").
  const groupState = (container: Container): "led" | "leaderless" | "foreign" => {
    let leader: procfs.Stat | undefined
    try {
      leader = statOf(container.pgid)
    } catch {
      return "foreign"
    }
    if (leader === undefined) return "leaderless"
    return container.leader.pid === container.pgid && leader.startTime === container.leader.startTime ? "led" : "foreign"
  }

  // What the table knows of every pid, so that a scan reads only processes it has not seen
  // before (a /proc listing is cheap; reading every process's stat and environ is not). Start
  // time and cookie never change for a process; the entry is dropped when its pid disappears,
  // replaced when the pid shows another start time, and everything is re-read at least every
  // `fullScanMs`, which bounds how long a pid reused between two listings can go unnoticed.
  interface Known {
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
  const known = new Map<number, Known>()
  const hostCookie = process.env.SHEPHERD_ID
  const fullScanMs = 3_000
  let lastFullScan = 0

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

  // Who vouches for a process's group: its leader, alive (or a zombie, which still holds the id)
  // when looked at *after* the process was seen in the group, so that the group cannot have been
  // freed and rebuilt in between; else its parent, if the parent was vouched in that group. Only
  // new pids and group changes are vouched for, reading each group's leader once per batch.
  const vouch = (pid: number, entry: Known, leaders: Map<number, string | undefined>): void => {
    if (entry.pgid === pid) {
      entry.vouched = entry.startTime
      return
    }
    if (!leaders.has(entry.pgid)) {
      let leader: procfs.Stat | undefined
      try {
        leader = procfs.readStat(entry.pgid)
      } catch {
        leader = undefined
      }
      leaders.set(entry.pgid, leader?.startTime)
    }
    const leader = leaders.get(entry.pgid)
    if (leader !== undefined) {
      entry.vouched = leader
      return
    }
    const parent = known.get(entry.ppid)
    entry.vouched = parent !== undefined && parent.pgid === entry.pgid && parent.start <= entry.start
      ? parent.vouched
      : undefined
  }

  /** Brings `entry` (the cached view of `pid`, if any) up to date with `stat`; returns the entry to use. */
  const observe = (pid: number, stat: procfs.Stat, entry: Known | undefined, changed: Array<[number, Known]>): Known => {
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

  /** Vouches for every changed entry, parents before children (a parent starts first). */
  const vouchAll = (changed: Array<[number, Known]>): void => {
    if (changed.length > 1) changed.sort((a, b) => (a[1].start < b[1].start ? -1 : a[1].start > b[1].start ? 1 : 0))
    const leaders = new Map<number, string | undefined>()
    for (const [pid, entry] of changed) vouch(pid, entry, leaders)
  }

  const refresh = (): Array<number> => {
    const pids = procfs.listPids()
    const now = Date.now()
    const full = now - lastFullScan >= fullScanMs
    if (full) lastFullScan = now
    const listed = new Set<number>()
    const changed: Array<[number, Known]> = []
    for (const pid of pids) {
      listed.add(pid)
      const entry = known.get(pid)
      if (entry !== undefined && !full) continue
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
    // Our own children show the host's environment until they exec: remember a child's cookie
    // only once it differs from the host's own (so it was set by the exec).
    if (entry.ppid !== self || (cookie !== undefined && cookie !== hostCookie)) entry.cookie = cookie
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

  // Whatever goes wrong, every request of the batch is answered: nobody waits forever.
  const runBatch = () => {
    const batch = pending!
    pending = undefined
    let results: ReadonlyArray<ReadonlyArray<ProcessIdentity>>
    try {
      scanStats = new Map()
      results = scan(batch.map((r) => r.container))
    } catch (error) {
      const failure = Effect.fail(new ProcessTableError({ reason: `cannot read /proc: ${String(error)}` }))
      for (const r of batch) r.resume(failure)
      return
    } finally {
      scanStats = undefined
    }
    batch.forEach((r, i) => r.resume(Effect.succeed(results[i]!)))
  }

  const scan = (batch: ReadonlyArray<Container>): ReadonlyArray<ReadonlyArray<ProcessIdentity>> => {
    const pids = refresh()
    const byGroup = new Map<number, Array<number>>()
    const byCookie = new Map<string, Array<number>>()
    const addCookie = (shepherdId: string, i: number) => {
      const list = byCookie.get(shepherdId)
      if (list === undefined) byCookie.set(shepherdId, [i])
      else list.push(i)
    }
    let minStart: bigint | undefined
    const leaderless = batch.map(() => false)
    batch.forEach((r, i) => {
      // A pgid from another boot names nothing of ours; only the cookie can still match.
      const state = r.leader.bootId !== bootId || r.pgid <= 1 ? "foreign" : groupState(r)
      leaderless[i] = state === "leaderless"
      if (state === "foreign") {
        addCookie(r.shepherdId, i)
        minStart = 0n // its descendants' start times are unknown: read every cookie
        return
      }
      const list = byGroup.get(r.pgid)
      if (list === undefined) byGroup.set(r.pgid, [i])
      else list.push(i)
      addCookie(r.shepherdId, i)
      const start = BigInt(r.leader.startTime)
      if (minStart === undefined || start < minStart) minStart = start
    })
    const results: Array<Array<ProcessIdentity>> = batch.map(() => [])
    const match = (pid: number, entry: Known): Array<number> => {
      // Descendants always start after their container's leader: only they can carry a cookie of ours.
      const cookie = minStart !== undefined && entry.start >= minStart ? cookieOf(pid, entry) : undefined
      if (cookie !== undefined) {
        const byThisCookie = byCookie.get(cookie)
        if (byThisCookie !== undefined) return byThisCookie
        // Another cookie (a nested pool's, or the host's own before a child's exec) inside one of our
        // trusted groups is still a member of that group.
      }
      // A group member without our cookie (it cleared its environment) counts only if it is younger
      // than the leader (a reused pgid cannot match an older, unrelated group) and, once the leader
      // is gone, only if it was seen in the group while that very leader held it.
      return (byGroup.get(entry.pgid) ?? []).filter((i) =>
        leaderless[i] ? entry.vouched === batch[i]!.leader.startTime : entry.start >= BigInt(batch[i]!.leader.startTime)
      )
    }
    for (const pid of pids) {
      if (pid === self || pid <= 1) continue
      let entry = known.get(pid)
      if (entry === undefined || match(pid, entry).length === 0) continue
      const fresh = confirm(pid, entry)
      if (fresh === undefined) continue
      if (fresh !== entry) {
        // The pid was reused since the cache saw it: judge the new process on its own.
        entry = fresh
        if (match(pid, entry).length === 0) continue
      }
      if (!ours(pid)) continue
      const identity: ProcessIdentity = { pid, startTime: entry.startTime, bootId }
      for (const i of match(pid, entry)) results[i]!.push(identity)
    }
    return results
  }

  const members = (container: Container) =>
    Effect.callback<ReadonlyArray<ProcessIdentity>, ProcessTableError>((resume) => {
      if (pending === undefined) {
        pending = []
        setImmediate(runBatch)
      }
      pending.push({ container, resume })
    })

  /** `undefined` when the process cannot be looked at (see `procfs.Unreadable`). */
  const aliveOrUnknown = (identity: ProcessIdentity): boolean | undefined => {
    if (identity.bootId !== bootId) return false
    try {
      const stat = procfs.readStat(identity.pid)
      return stat !== undefined && stat.startTime === identity.startTime && !procfs.isDead(stat)
    } catch {
      return undefined
    }
  }
  // Not confirmed dead counts as alive: a teardown keeps waiting (and reports Escaped) rather than lie.
  const alive = (identity: ProcessIdentity): boolean => aliveOrUnknown(identity) ?? true

  const signal = (identity: ProcessIdentity, signal: NodeJS.Signals): SignalResult => {
    if (identity.pid === self || identity.pid <= 1) return "not-ours"
    // Identity is checked immediately before the signal: a reused pid is never signalled, and
    // neither is a process whose identity cannot be read.
    const verified = aliveOrUnknown(identity)
    if (verified === undefined) return "not-ours"
    if (!verified) return "gone"
    try {
      process.kill(identity.pid, signal)
      return "sent"
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === "EPERM" ? "not-ours" : "gone"
    }
  }

  const carriers = (prefix: string, options?: { readonly notBefore?: string | undefined }) =>
    Effect.try({
      try: () => {
        const notBefore = options?.notBefore === undefined ? undefined : BigInt(options.notBefore)
        const out: Array<Carrier> = []
        for (const pid of refresh()) {
          if (pid === self || pid <= 1) continue
          const entry = known.get(pid)
          if (entry === undefined || (notBefore !== undefined && entry.start < notBefore)) continue
          const shepherdId = cookieOf(pid, entry)
          if (shepherdId === undefined || !shepherdId.startsWith(prefix)) continue
          const fresh = confirm(pid, entry)
          if (fresh === undefined || !ours(pid)) continue
          if (fresh !== entry && cookieOf(pid, fresh)?.startsWith(prefix) !== true) continue
          out.push({ identity: { pid, startTime: fresh.startTime, bootId }, shepherdId: cookieOf(pid, fresh)!, pgid: fresh.pgid })
        }
        return out
      },
      catch: (error) => new ProcessTableError({ reason: `cannot read /proc: ${String(error)}` })
    })

  const inspect = (identity: ProcessIdentity): ProcessInfo | undefined => {
    let stat: procfs.Stat | undefined
    try {
      stat = procfs.readStat(identity.pid)
    } catch {
      return undefined
    }
    if (stat === undefined || stat.startTime !== identity.startTime || identity.bootId !== bootId) return undefined
    return {
      pid: identity.pid,
      ppid: stat.ppid,
      pgid: stat.pgid,
      state: stat.state,
      rssKiB: procfs.readRssKiB(identity.pid),
      command: procfs.readCmdline(identity.pid)
    }
  }

  return ProcessTable.of({
    members,
    carriers,
    inspect: (identity) => Effect.sync(() => inspect(identity)),
    isAlive: (identity) => Effect.sync(() => alive(identity)),
    signal: (identity, sig) => Effect.sync(() => signal(identity, sig))
  })
}

let cachedBootId: string | undefined

/**
 * Reads the identity of a live process, if it exists.
 *
 * @since 0.1.0
 * @category constructors
 */
export const identify = (pid: number): ProcessIdentity | undefined => {
  try {
    const stat = procfs.readStat(pid)
    return stat === undefined ? undefined : { pid, startTime: stat.startTime, bootId: cachedBootId ??= procfs.readBootId() }
  } catch {
    return undefined
  }
}

/**
 * The table for platforms without `/proc` (macOS, the BSDs): a container is
 * its process group, addressed as one member with pid `-pgid`; signals go to
 * the whole group (`kill(-pgid, sig)`), and "alive" means the group still has
 * a signallable member (a group of zombies answers EPERM and counts as dead).
 * Descendants that left the group cannot be found, `carriers` finds nothing,
 * and group ids are not identity-checked (the same caveat as Effect's own
 * spawner). Used automatically where `/proc` is absent; not tested on macOS.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makePortable = (): ProcessTable["Service"] => {
  const groupAlive = (pgid: number): boolean => {
    try {
      process.kill(-pgid, 0)
      return true
    } catch {
      return false
    }
  }
  const alive = (identity: ProcessIdentity): boolean => {
    if (identity.pid < 0) return groupAlive(-identity.pid)
    try {
      process.kill(identity.pid, 0)
      return true
    } catch {
      return false
    }
  }
  // Windows has no process groups: there the leader alone is the container.
  const groups = process.platform !== "win32"
  return ProcessTable.of({
    members: (container) =>
      Effect.sync(() => {
        if (!groups) return container.leader.pid > 0 && alive(container.leader) ? [container.leader] : []
        return container.pgid > 1 && groupAlive(container.pgid)
          ? [{ pid: -container.pgid, startTime: container.leader.startTime, bootId: container.leader.bootId }]
          : []
      }),
    carriers: () => Effect.succeed([]),
    inspect: () => Effect.succeed(undefined),
    isAlive: (identity) => Effect.sync(() => alive(identity)),
    signal: (identity, signal) =>
      Effect.sync((): SignalResult => {
        if (identity.pid === process.pid || identity.pid === -process.pid || Math.abs(identity.pid) <= 1) return "not-ours"
        try {
          process.kill(identity.pid, signal)
          return "sent"
        } catch (error) {
          return (error as NodeJS.ErrnoException).code === "EPERM" ? "not-ours" : "gone"
        }
      })
  })
}

/**
 * The `/proc` table on Linux, the portable process-group table elsewhere.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<ProcessTable> = Layer.sync(
  ProcessTable,
  () => fs.existsSync("/proc/self/stat") ? make() : makePortable()
)

/**
 * A live process that carries a `SHEPHERD_ID`, as read from `/proc`.
 *
 * @since 0.1.0
 * @category models
 */
export interface CarrierInfo {
  readonly pid: number
  readonly ppid: number
  readonly pgid: number
  readonly sid: number
  readonly state: string
  readonly shepherdId: string
  readonly cmdline: string
}

/**
 * Every live (non-zombie) process whose `SHEPHERD_ID` starts with `prefix`
 * (e.g. a pool id followed by `:`). For diagnostics and demos; signals never
 * go through this list.
 *
 * @since 0.1.0
 * @category diagnostics
 */
export const carriers = (prefix: string): Array<CarrierInfo> => {
  const out: Array<CarrierInfo> = []
  for (const pid of procfs.listPids()) {
    if (pid === process.pid) continue
    let stat: procfs.Stat | undefined
    try {
      stat = procfs.readStat(pid)
    } catch {
      continue
    }
    if (stat === undefined || procfs.isDead(stat)) continue
    const shepherdId = procfs.readCookie(pid)
    if (typeof shepherdId !== "string" || !shepherdId.startsWith(prefix)) continue
    out.push({ pid, ppid: stat.ppid, pgid: stat.pgid, sid: stat.sid, state: stat.state, shepherdId, cmdline: procfs.readCmdline(pid) })
  }
  return out
}
