/**
 * A tree's cgroup leaf as the process table, the launcher and the lifeline
 * see it: its members with their identities, whether the leader is alone in
 * it, `cgroup.kill`, and the "empty" event. Synchronous and free of Effect
 * (the sentinel loads it); every access is identity-checked (`cgroupFs.ts`).
 *
 * @since 0.2.0
 */
import type { CgroupRef } from "@shepherd/core/Containment"
import type { ProcessIdentity } from "@shepherd/core/ProcessIdentity"
import * as fs from "node:fs"
import { type Cgroup, CgroupFailure, withVerified } from "./cgroupFs.ts"
import { killUnsafe, populatedUnsafe, procsUnsafe } from "./cgroupMembers.ts"
import * as procfs from "./procfs.ts"

/**
 * A recorded cgroup as the ledger and the container hold it (decimal identity).
 *
 * @since 0.2.0
 * @category conversions
 */
export const toRef = (cgroup: Cgroup): CgroupRef => ({
  path: cgroup.path,
  dev: String(cgroup.dev),
  ino: String(cgroup.ino)
})

/**
 * @since 0.2.0
 * @category conversions
 */
export const fromRef = (ref: CgroupRef): Cgroup => ({ path: ref.path, dev: BigInt(ref.dev), ino: BigInt(ref.ino) })

/** Our leaf is gone (removed when empty) or the path holds another cgroup: nothing in it is ours. */
const notOurs = (error: unknown): boolean =>
  error instanceof CgroupFailure && (error.reason === "NotFound" || error.reason === "Swapped")

/**
 * The live processes in the leaf (with `recursive`, below it too), with their
 * identities. A pid read from our identity-checked cgroup is a member; to
 * keep a pid that was reused between the two reads from being taken for one,
 * a pid counts only if it is still in the cgroup after its identity was read
 * (a process that came in meanwhile is ours too, and a stale identity is
 * refused by the signal's own check). Throws `CgroupFailure` when the cgroup
 * cannot be read; a leaf that is gone or swapped has no member of ours.
 *
 * @since 0.2.0
 * @category members
 */
export const membersOf = (ref: CgroupRef, bootId: string, recursive = false): Array<ProcessIdentity> => {
  const cgroup = fromRef(ref)
  let first: Array<number>
  try {
    first = procsUnsafe(cgroup, recursive)
  } catch (error) {
    if (notOurs(error)) return []
    throw error
  }
  if (first.length === 0) return []
  const seen: Array<ProcessIdentity> = []
  for (const pid of first) {
    let stat: procfs.Stat | undefined
    try {
      stat = procfs.readStat(pid)
    } catch {
      continue // cannot be looked at: the next scan decides
    }
    if (stat !== undefined && !procfs.isDead(stat)) seen.push({ pid, startTime: stat.startTime, bootId })
  }
  let again: Set<number>
  try {
    again = new Set(procsUnsafe(cgroup, recursive))
  } catch (error) {
    if (notOurs(error)) return []
    throw error
  }
  return seen.filter((m) => again.has(m.pid))
}

/**
 * Whether `leader` is provably the only live process in the leaf (it may have
 * exited too); `undefined` when that cannot be told (the leaf cannot be read,
 * or is not ours any more).
 *
 * @since 0.2.0
 * @category members
 */
export const alone = (ref: CgroupRef, leader: number): boolean | undefined => {
  // Read by path, without the identity check (a session closing hundreds of trees asks for each):
  // a leaf cannot be removed while it holds a process, so if the path now names another cgroup,
  // ours was empty when it went and nothing of ours can be in it any more; a foreign cgroup read
  // by mistake can only make this say "not alone" (and the caller scans), or "alone" for a tree
  // that is indeed empty.
  let text: string
  try {
    text = fs.readFileSync(`${ref.path}/cgroup.procs`, "latin1")
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "ENOENT" ? true : undefined
  }
  for (const line of text.split("\n")) if (line !== "" && Number(line) !== leader) return false
  return true
}

/**
 * SIGKILLs everything in the cgroup and below it at once; `false` when it is
 * gone or not ours any more (nothing is written then).
 *
 * @since 0.2.0
 * @category teardown
 */
export const kill = (ref: CgroupRef): boolean => {
  try {
    killUnsafe(fromRef(ref))
    return true
  } catch {
    return false
  }
}

/**
 * Calls `f` once when the cgroup holds no live process (at once, from a
 * microtask, if it is empty or gone already): `fs.watch` on `cgroup.events`
 * through the checked directory. A hint only: a missed event costs the
 * caller's own poll. Returns a function that stops watching.
 *
 * @since 0.2.0
 * @category members
 */
export const watchEmpty = (ref: CgroupRef, f: () => void): () => void => {
  const cgroup = fromRef(ref)
  let done = false
  let watcher: fs.FSWatcher | undefined
  const stop = () => {
    done = true
    watcher?.close()
    watcher = undefined
  }
  const check = () => {
    if (done) return
    let empty: boolean
    try {
      empty = !populatedUnsafe(cgroup)
    } catch {
      empty = true // gone, swapped or unreadable: wake the caller, whose scan decides
    }
    if (empty) {
      stop()
      f()
    }
  }
  try {
    // The watch stays on the inode after the descriptor it was opened through is closed.
    watcher = withVerified(cgroup, (dir) => fs.watch(`${dir}/cgroup.events`, { persistent: false }, check))
    watcher.on("error", () => {})
  } catch {
    // gone already, or no inotify: the first check (or the caller's poll) decides
  }
  queueMicrotask(check)
  return stop
}
