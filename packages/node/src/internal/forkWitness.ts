/**
 * Proof, without a `/proc` scan, that a leader's tree has no member but the
 * leader: a look at only the processes created since the leader's fork.
 *
 * Every member of a tree descends from its leader, so each cost a fork after
 * the leader's. The kernel counts forks (`processes` in `/proc/stat`, threads
 * included) and hands out pids in order (`ns_last_pid`); the launcher counts
 * its own forks and remembers their pids. Read before the leader's fork and
 * again later:
 * - the machine-wide fork count grew by exactly the launcher's own forks:
 *   nothing else was created, the leader is alone; or
 * - too few forks happened for the pids to have gone round `pid_max`, so every
 *   process created since the leader has a pid in `(leader, ns_last_pid]`.
 *   Each such pid that is not one of the launcher's own children is looked
 *   at: gone, a zombie, or in another session and group without the tree's
 *   cookie, it is not a member. Anything that might be one (or that cannot be
 *   read) means "not proven".
 * "Not proven" (also: a clock that cannot be read, a range too long to walk)
 * only sends the caller to the full scan, which judges as before.
 *
 * A process that can write `ns_last_pid` (CAP_SYS_ADMIN in the namespace)
 * could fake the second clock, but such a process can also leave the tree in
 * ways no scan follows (`setsid env -i`); cgroup containment closes both.
 *
 * @since 0.2.0
 */
import * as procfs from "./procfs.ts"

/** The clocks as they stood before a leader's fork. */
export interface Mark {
  readonly clock: procfs.PidClock
  /** The launcher's own fork count at that moment. */
  readonly own: number
}

/** The launcher's own forks (children that got a pid), ever. */
let ownForks = 0
/** The pids of the launcher's latest forks, oldest first, and each one's own fork number. */
const recent: Array<number> = []
const forkNumber = new Map<number, number>()
const recentLimit = 16_384
/** Pids beyond this many since the leader's are not walked. */
const maxRange = 16_384
/** Past this many pids that are not the launcher's, a scan is cheaper than looking at each. */
const maxForeign = 64
const pidMax = procfs.readPidMax()

/** The latest reading. Any reading taken before a fork may serve as its mark: an older one only proves less. */
let latest: Mark | undefined
/** A reading taken in the current synchronous run of the event loop (trees closed together share it). */
let fresh: Mark | undefined

const read = (): Mark | undefined => {
  if (fresh !== undefined) return fresh
  const clock = procfs.readPidClock()
  latest = clock === undefined ? undefined : { clock, own: ownForks }
  if (latest !== undefined) {
    fresh = latest
    queueMicrotask(() => {
      fresh = undefined
      looked.clear()
    })
  }
  return latest
}

/**
 * The clocks before a fork: the latest reading (each `alone` reads them, so a
 * pool that spawns as its trees end reads them once per tree), or a fresh
 * one; `undefined` when they cannot be read (nothing will be proven).
 */
export const mark = (): Mark | undefined => latest ?? read()

/** Counts one of the launcher's forks (a child that got a pid). */
export const forked = (pid: number): void => {
  ownForks++
  recent.push(pid)
  forkNumber.set(pid, ownForks)
  if (recent.length > recentLimit) {
    const old = recent.shift()!
    if (forkNumber.get(old) === ownForks - recentLimit) forkNumber.delete(old)
  }
}

/** What a look at a pid found: gone (or a zombie), unreadable, or a live process's session, group and cookie. */
type Look = "gone" | "unreadable" | { readonly pgid: number; readonly sid: number; readonly cookie: string | undefined }

/** Looks taken with the current reading (many trees closed together walk the same pids). */
const looked = new Map<number, Look>()

const look = (pid: number): Look => {
  let found = looked.get(pid)
  if (found !== undefined) return found
  try {
    const stat = procfs.readStat(pid)
    if (stat === undefined || procfs.isDead(stat)) {
      found = "gone"
    } else {
      const cookie = procfs.readCookie(pid)
      found = cookie === null ? "unreadable" : { pgid: stat.pgid, sid: stat.sid, cookie }
    }
  } catch {
    found = "unreadable"
  }
  looked.set(pid, found)
  return found
}

/** `true` when process `pid` is certainly not in the tree of `leader` (whose cookie is `cookie`). */
const outside = (pid: number, leader: number, cookie: string): boolean => {
  const found = look(pid)
  if (found === "gone") return true
  if (found === "unreadable") return false
  // The leader started its own session and group: whoever shares either descends from it.
  return found.pgid !== leader && found.sid !== leader && found.cookie !== cookie
}

/**
 * Whether the leader `pid` (forked after `before` was read, with `cookie` in
 * its environment) provably has no other member in its tree now.
 */
export const alone = (before: Mark | undefined, pid: number, cookie: string): boolean => {
  if (before === undefined) return false
  const reading = read()
  if (reading === undefined) return false
  const forks = reading.clock.forks - before.clock.forks
  if (forks === reading.own - before.own) return true
  if (forks < 0 || forks >= pidMax / 2) return false
  const last = reading.clock.lastPid
  if (last < pid || last - pid > maxRange) return false
  // The leader is one of the own forks after the mark; the own forks after it are no members.
  const leader = forkNumber.get(pid)
  if (leader === undefined || leader <= before.own || leader > reading.own) return false
  let foreign = 0
  for (let q = pid + 1; q <= last; q++) {
    const n = forkNumber.get(q)
    if (n !== undefined && n > leader && n <= reading.own) continue
    if (++foreign > maxForeign || !outside(q, pid, cookie)) return false
  }
  return true
}
