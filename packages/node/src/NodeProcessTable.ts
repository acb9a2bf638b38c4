/**
 * The Linux `/proc` process table: identity (pid + start time + boot id),
 * zombie-aware liveness, identity-checked signals, and container membership
 * by process group, by the `SHEPHERD_ID` cookie and, under cgroup
 * containment, by the tree's cgroup leaf (`cgroup.kill` in one write, and
 * its "empty" event).
 *
 * @since 0.1.0
 */
import { ProcessTable, ProcessTableError } from "@shepherd/core/ProcessTable"
import type { Carrier, Container, ProcessInfo, SignalResult } from "@shepherd/core/ProcessTable"
import type { ProcessIdentity } from "@shepherd/core/ProcessIdentity"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as fs from "node:fs"
import * as Membership from "@shepherd/core/Membership"
import * as cgroupTable from "./internal/cgroupTable.ts"
import * as portable from "./internal/portableTable.ts"
import * as processCache from "./internal/processCache.ts"
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
  const host: Membership.Host = { pid: self, bootId }
  const euid = process.geteuid?.() ?? -1
  const cache = processCache.make(self, process.env.SHEPHERD_ID)
  const known = cache.known
  let pending: Array<Request> | undefined

  const ours = (pid: number) => euid === 0 || procfs.ownerUid(pid) === euid

  // A group's leader, looked at once per scan (it is also looked at as a member).
  const observeLeader: Membership.Observe = (pid) => {
    try {
      return cache.statOf(pid)
    } catch {
      return "unreadable"
    }
  }

  // Whatever goes wrong, every request of the batch is answered: nobody waits forever.
  const runBatch = () => {
    const batch = pending!
    pending = undefined
    let results: ReadonlyArray<ReadonlyArray<ProcessIdentity>>
    try {
      results = cache.scanning(() => scan(batch.map((r) => r.container)))
    } catch (error) {
      const failure = Effect.fail(new ProcessTableError({ reason: `cannot read /proc: ${String(error)}` }))
      for (const r of batch) r.resume(failure)
      return
    }
    batch.forEach((r, i) => r.resume(withLeaf(r.container, results[i]!)))
  }

  // Cgroup containment: every live process in the tree's leaf is a member too, whatever it did to
  // its group and environment (the union of leaf, process group and cookie).
  const withLeaf = (
    container: Container,
    found: ReadonlyArray<ProcessIdentity>
  ): Effect.Effect<ReadonlyArray<ProcessIdentity>, ProcessTableError> => {
    if (container.cgroup === undefined) return Effect.succeed(found)
    let inLeaf: ReadonlyArray<ProcessIdentity>
    try {
      inLeaf = cgroupTable.membersOf(container.cgroup, bootId)
    } catch (error) {
      return Effect.fail(
        new ProcessTableError({ reason: `cannot read cgroup ${container.cgroup.path}: ${String(error)}` })
      )
    }
    if (inLeaf.length === 0) return Effect.succeed(found)
    const known = new Set(found.map((m) => m.pid))
    return Effect.succeed([...found, ...inLeaf.filter((m) => !known.has(m.pid))])
  }

  // `Membership.isMember` for a whole batch of containers at once: one pass over `/proc`, with
  // the containers indexed by group and by cookie. A process carrying one container's cookie
  // belongs to that one only.
  const scan = (batch: ReadonlyArray<Container>): ReadonlyArray<ReadonlyArray<ProcessIdentity>> => {
    const pids = cache.refresh()
    const byGroup = new Map<number, Array<number>>()
    const byCookie = new Map<string, Array<number>>()
    const addCookie = (shepherdId: string, i: number) => {
      const list = byCookie.get(shepherdId)
      if (list === undefined) byCookie.set(shepherdId, [i])
      else list.push(i)
    }
    let minStart: bigint | undefined
    const judged = batch.map((r, i) => {
      const group = Membership.judge(r, host, observeLeader)
      addCookie(r.shepherdId, i)
      if (group.state === "foreign") {
        minStart = 0n // its descendants' start times are unknown: read every cookie
        return group
      }
      const list = byGroup.get(r.pgid)
      if (list === undefined) byGroup.set(r.pgid, [i])
      else list.push(i)
      if (minStart === undefined || group.leaderStart < minStart) minStart = group.leaderStart
      return group
    })
    const results: Array<Array<ProcessIdentity>> = batch.map(() => [])
    const match = (pid: number, entry: processCache.Known): Array<number> => {
      // Descendants always start after their container's leader: only they can carry a cookie of ours.
      const cookie = minStart !== undefined && entry.start >= minStart ? cache.cookieOf(pid, entry) : undefined
      if (cookie !== undefined) {
        const byThisCookie = byCookie.get(cookie)
        if (byThisCookie !== undefined) return byThisCookie
        // Another cookie (a nested pool's, or the host's own before a child's exec) inside one of our
        // trusted groups is still a member of that group.
      }
      return (byGroup.get(entry.pgid) ?? []).filter((i) => Membership.inGroup(judged[i]!, entry))
    }
    for (const pid of pids) {
      if (pid === self || pid <= 1) continue
      let entry = known.get(pid)
      if (entry === undefined || match(pid, entry).length === 0) continue
      const fresh = cache.confirm(pid, entry)
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

  // Not confirmed dead counts as alive: a teardown keeps waiting (and reports Escaped) rather than lie.
  const alive = (identity: ProcessIdentity): boolean => Membership.liveness(identity, host, procfs.observe) !== "dead"

  const signal = (identity: ProcessIdentity, signal: NodeJS.Signals): SignalResult => {
    // Identity is checked immediately before the signal.
    const verdict = Membership.signalVerdict(identity, host, procfs.observe)
    if (verdict !== "send") return verdict
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
        for (const pid of cache.refresh()) {
          if (pid === self || pid <= 1) continue
          const entry = known.get(pid)
          if (entry === undefined || (notBefore !== undefined && entry.start < notBefore)) continue
          if (!Membership.carriesPrefix(cache.cookieOf(pid, entry), prefix)) continue
          const fresh = cache.confirm(pid, entry)
          if (fresh === undefined || !ours(pid)) continue
          if (fresh !== entry && !Membership.carriesPrefix(cache.cookieOf(pid, fresh), prefix)) continue
          out.push({
            identity: { pid, startTime: fresh.startTime, bootId },
            shepherdId: cache.cookieOf(pid, fresh)!,
            pgid: fresh.pgid
          })
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
    signal: (identity, sig) => Effect.sync(() => signal(identity, sig)),
    killContainer: (container) =>
      Effect.sync(() => container.cgroup !== undefined && cgroupTable.kill(container.cgroup)),
    watchEmpty: (container, f) => container.cgroup === undefined ? noop : cgroupTable.watchEmpty(container.cgroup, f)
  })
}

const noop = () => {}

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
    return stat === undefined
      ? undefined
      : { pid, startTime: stat.startTime, bootId: cachedBootId ??= procfs.readBootId() }
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
export const makePortable: () => ProcessTable["Service"] = portable.make

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
    out.push({
      pid,
      ppid: stat.ppid,
      pgid: stat.pgid,
      sid: stat.sid,
      state: stat.state,
      shepherdId,
      cmdline: procfs.readCmdline(pid)
    })
  }
  return out
}
