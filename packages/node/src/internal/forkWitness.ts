/**
 * Proof, without a `/proc` scan, that a leader's tree has no member but the
 * leader: nothing was created on the machine since the leader's fork but the
 * launcher's own children.
 *
 * Every member of a tree descends from its leader, so each cost a successful
 * fork after the leader's. The kernel counts successful forks, threads
 * included, across every pid namespace (`processes` in `/proc/stat`); the
 * launcher counts its own. If, between a reading taken before the leader's
 * fork and one taken now, the machine's count grew by exactly the launcher's
 * own forks, no other process exists that did not exist before the leader:
 * the leader is alone. Anything else (a thread, another process forking, a
 * clock that cannot be read) only means "not proven", and the caller scans as
 * before.
 *
 * The pid clock (`ns_last_pid`) proves nothing here: a clone that fails after
 * the kernel allocated its pid (a full `pids.max`, a bad `CLONE_INTO_CGROUP`
 * descriptor) moves it without a fork, so the pids can go round `pid_max`
 * while the fork count stands still (test/adversarialPidWrap.test.ts). A fork
 * count cannot be moved without creating a process.
 *
 * @since 0.2.0
 */
import * as procfs from "./procfs.ts"

/** The fork count as it stood before a leader's fork. */
export interface Mark {
  readonly forks: number
  /** The launcher's own fork count at that moment. */
  readonly own: number
}

/** The launcher's own forks (children that got a pid), ever. */
let ownForks = 0

/**
 * A reading taken in the current synchronous run of the event loop: trees
 * closed together share it, and a spawn started from a tree's end uses the
 * reading that proved that tree alone.
 */
let fresh: Mark | undefined

const read = (): Mark | undefined => {
  if (fresh !== undefined) return fresh
  const forks = procfs.readForks()
  if (forks === undefined) return undefined
  fresh = { forks, own: ownForks }
  queueMicrotask(() => {
    fresh = undefined
  })
  return fresh
}

/**
 * The count just before a fork (an earlier reading would do, but every fork
 * elsewhere since it would leave the leader unproven); `undefined` when it
 * cannot be read (nothing will be proven).
 */
export const mark = (): Mark | undefined => read()

/** The machine's fork count now (the reading shared within this synchronous run), `undefined` if unreadable. */
export const machineForks = (): number | undefined => read()?.forks

/**
 * Forgets the reading of the current synchronous run once a leader was signalled: a later
 * `alone()` in the same run (the fork scan after a SIGKILL sweep) must count the forks made up to
 * the signal.
 */
export const signalled = (): void => {
  fresh = undefined
}

/** Counts one of the launcher's forks (a child that got a pid). */
export const forked = (): void => {
  ownForks++
}

/** Whether a leader forked after `before` was read provably has no other member in its tree now. */
export const alone = (before: Mark | undefined): boolean => {
  if (before === undefined) return false
  const now = read()
  return now !== undefined && now.forks - before.forks === now.own - before.own
}
