/**
 * Who belongs to a container, what counts as dead, and whether a signal may
 * go: the trust rules of Shepherd as pure functions over plain records, shared
 * by every process table (`@shepherd/node`'s `/proc` table, its lifeline
 * sentinel, and `TestOs`). A table reads the facts; this module decides.
 *
 * **The rules**
 *
 * - A container's process group names the tree while its leader is *still the
 *   recorded process* (`"led"`). Once the leader is gone the id proves nothing
 *   by itself: Linux frees it when the group empties, and the next owner of
 *   that pid may build a group of its own with it (`"leaderless"`: a member
 *   counts only if it was seen in the group while that very leader held it,
 *   its `vouched` start time). A live leader with another start time, a group
 *   from another boot, or a leader that cannot be looked at make the group
 *   someone else's (`"foreign"`).
 * - A process carrying the container's `SHEPHERD_ID` cookie is a member,
 *   wherever it went (`setsid`, double fork).
 * - Under cgroup containment, a process in the container's cgroup leaf is a
 *   member, whatever it did to its group and environment: only the pool
 *   puts processes there, and their descendants cannot leave. The leaf is
 *   read through a descriptor checked against its recorded identity (the
 *   `/proc` table and the sentinel do this; it is not a rule over records).
 * - A group member without the cookie counts only if it started no earlier
 *   than the leader (a reused pgid cannot match an older, unrelated group).
 * - Zombies and dead tasks are dead, except a thread-group leader that left
 *   with `pthread_exit` while its other threads run on.
 * - A signal goes only to a process that is still, immediately before the
 *   signal, the recorded one: same pid, start time and boot, alive; never to
 *   the host itself, to init or to pid 0; never when it cannot be looked at.
 *
 * Nothing here imports a runtime module, so that the lifeline sentinel loads
 * it in a few milliseconds.
 *
 * @since 0.1.0
 */
import type { ProcessIdentity } from "./ProcessIdentity.ts"
import type { Container } from "./ProcessTable.ts"

/**
 * What a table saw of one process (the stat-like facts the rules need).
 * `startTime` is the kernel's start time (decimal clock ticks); `state` the
 * kernel state letter; `threads` the number of threads, needed only to tell a
 * zombie (`Z`) from a leader whose other threads still run.
 *
 * @since 0.1.0
 * @category models
 */
export interface Observed {
  readonly startTime: string
  readonly state: string
  readonly threads?: number | undefined
}

/**
 * A look at a pid: what was seen, `undefined` when no such process exists,
 * `"unreadable"` when it exists but cannot be looked at (another user's
 * process, `hidepid`, a read error): nothing can be concluded about it.
 *
 * @since 0.1.0
 * @category models
 */
export type Observation = Observed | undefined | "unreadable"

/**
 * How a table looks at a pid, called by the rules only when they need to.
 *
 * @since 0.1.0
 * @category models
 */
export type Observe = (pid: number) => Observation

/**
 * The process that applies the rules: its pid (never signalled, never a
 * member) and the boot it runs in.
 *
 * @since 0.1.0
 * @category models
 */
export interface Host {
  readonly pid: number
  readonly bootId: string
}

/**
 * What a container's process group proves (see the module's rules).
 *
 * @since 0.1.0
 * @category models
 */
export type GroupState = "led" | "leaderless" | "foreign"

/**
 * A container with its group judged: what membership is decided against.
 *
 * @since 0.1.0
 * @category models
 */
export interface Judged {
  readonly container: Container
  readonly state: GroupState
  /** The leader's start time as a number, for age comparisons. */
  readonly leaderStart: bigint
}

/**
 * The facts about a candidate member. `start` is its start time as a number;
 * `cookie` its `SHEPHERD_ID` (`undefined`: none, or not read); `vouched` the
 * start time of the leader that held `pgid` when the candidate was seen in
 * the group (see `vouch`).
 *
 * @since 0.1.0
 * @category models
 */
export interface Candidate {
  readonly pgid: number
  readonly start: bigint
  readonly cookie: string | undefined
  readonly vouched: string | undefined
}

/**
 * Judges a container's process group. The leader is looked at (a zombie
 * leader still holds the id: it still leads) unless the container is from
 * another boot or names no real group.
 *
 * @since 0.1.0
 * @category constructors
 */
export const judge = (container: Container, host: Host, observe: Observe): Judged => ({
  container,
  state: groupState(container, host, observe),
  leaderStart: BigInt(container.leader.startTime)
})

/**
 * The state of a container's process group (see `judge`).
 *
 * @since 0.1.0
 * @category predicates
 */
export const groupState = (container: Container, host: Host, observe: Observe): GroupState => {
  // A pgid from another boot names nothing of ours; only the cookie can still match.
  if (container.leader.bootId !== host.bootId || container.pgid <= 1) return "foreign"
  const leader = observe(container.pgid)
  if (leader === "unreadable") return "foreign"
  if (leader === undefined) return "leaderless"
  // Our leader has exited: a live process with its pid took the id after our group emptied (a start
  // time in the same 10 ms clock tick proves nothing). A zombie with its start time is still ours.
  if (container.leaderExited === true && !isDead(leader.state, leader.threads)) return "foreign"
  return container.leader.pid === container.pgid && leader.startTime === container.leader.startTime ? "led" : "foreign"
}

/**
 * The group rule alone: a member of the container's process group (the
 * caller checked `candidate.pgid`) belongs to it if the group is led and the
 * candidate is no older than the leader, or the group is leaderless and the
 * candidate was vouched for by that very leader.
 *
 * @since 0.1.0
 * @category predicates
 */
export const inGroup = (judged: Judged, candidate: Pick<Candidate, "start" | "vouched">): boolean =>
  judged.state === "led"
    ? candidate.start >= judged.leaderStart
    : judged.state === "leaderless" && candidate.vouched === judged.container.leader.startTime

/**
 * The cookie rule alone: the candidate carries the container's `SHEPHERD_ID`.
 *
 * @since 0.1.0
 * @category predicates
 */
export const carriesCookie = (container: Container, cookie: string | undefined): boolean =>
  cookie !== undefined && cookie === container.shepherdId

/**
 * Whether a live candidate belongs to a container: it carries the
 * container's cookie, or it passes the group rule. (Another cookie — a nested
 * pool's — inside a trusted group does not exclude it.) When one table
 * answers for several containers at once, a candidate carrying one of their
 * cookies belongs to that one only.
 *
 * @since 0.1.0
 * @category predicates
 */
export const isMember = (judged: Judged, candidate: Candidate): boolean =>
  carriesCookie(judged.container, candidate.cookie) ||
  (candidate.pgid === judged.container.pgid && inGroup(judged, candidate))

/**
 * The cookie prefix of every tree of a pool (`<poolId>:`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const poolPrefix = (poolId: string): string => `${poolId}:`

/**
 * The candidate carries a cookie starting with `prefix` (e.g. `poolPrefix`).
 *
 * @since 0.1.0
 * @category predicates
 */
export const carriesPrefix = (cookie: string | undefined, prefix: string): boolean =>
  cookie !== undefined && cookie.startsWith(prefix)

/**
 * Who vouches for a process newly seen in group `pgid`: the process itself
 * if it leads the group; else the group's leader, if it exists when looked at
 * *after* the process was seen (so the group cannot have been freed and
 * rebuilt in between; `leaderStartTime` reads it, alive or a zombie); else
 * its parent, if the parent was vouched in the same group and is not younger.
 * Returns the vouching leader's start time, `undefined` when nobody can.
 *
 * @since 0.1.0
 * @category constructors
 */
export const vouch = (
  process: { readonly pid: number; readonly pgid: number; readonly startTime: string; readonly start: bigint },
  leaderStartTime: (pgid: number) => string | undefined,
  parent: Pick<Candidate, "pgid" | "start" | "vouched"> | undefined
): string | undefined => {
  if (process.pgid === process.pid) return process.startTime
  const leader = leaderStartTime(process.pgid)
  if (leader !== undefined) return leader
  return parent !== undefined && parent.pgid === process.pgid && parent.start <= process.start
    ? parent.vouched
    : undefined
}

/**
 * Zombies (`Z`) and dead tasks (`X`, `x`) are dead — except a thread-group
 * leader that left with `pthread_exit` while its other threads run on: it
 * shows `Z` with more than one thread, and the process is alive. A zombie
 * whose threads could not be counted is dead.
 *
 * @since 0.1.0
 * @category predicates
 */
export const isDead = (state: string, threads?: number | undefined): boolean =>
  state === "X" || state === "x" || (state === "Z" && (threads === undefined || threads <= 1))

/**
 * Whether `identity` still names a live process: `"dead"` if it is from
 * another boot, gone, reused (another start time) or dead; `"unknown"` if it
 * cannot be looked at.
 *
 * @since 0.1.0
 * @category predicates
 */
export const liveness = (identity: ProcessIdentity, host: Host, observe: Observe): "alive" | "dead" | "unknown" => {
  if (identity.bootId !== host.bootId) return "dead"
  const seen = observe(identity.pid)
  if (seen === "unreadable") return "unknown"
  return seen === undefined || seen.startTime !== identity.startTime || isDead(seen.state, seen.threads)
    ? "dead"
    : "alive"
}

/**
 * The identity check immediately before a signal: `"send"` only if
 * `identity` still names a live process that is not the host, init or pid 0;
 * `"gone"` if it is dead or reused; `"not-ours"` if it is the host, init or
 * cannot be looked at (a reused pid is never signalled, and neither is a
 * process whose identity cannot be read).
 *
 * @since 0.1.0
 * @category predicates
 */
export const signalVerdict = (
  identity: ProcessIdentity,
  host: Host,
  observe: Observe
): "send" | "gone" | "not-ours" => {
  if (identity.pid === host.pid || identity.pid <= 1) return "not-ours"
  const alive = liveness(identity, host, observe)
  return alive === "alive" ? "send" : alive === "dead" ? "gone" : "not-ours"
}
