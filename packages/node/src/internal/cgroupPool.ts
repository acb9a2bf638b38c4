/**
 * One pool's cgroups under cgroup containment:
 * `<base>/shepherd-<pool id>.<host pid>.<host start>/` holding the sentinel's
 * leaf, one cgroup per session (while the session has trees) and one leaf per
 * tree; the limits written into them (with their controllers enabled down the
 * chain); each session's usage; what dead hosts left under the base
 * (recovery); and the pool's removal when it closes.
 *
 * @since 0.2.0
 */
import type * as Containment from "@shepherd/core/Containment"
import { entries as limitEntries } from "@shepherd/core/Containment"
import type { KillPolicy } from "@shepherd/core/KillPolicy"
import type { LaunchOptions } from "@shepherd/core/ProcessLauncher"
import * as Effect from "effect/Effect"
import * as Cgroup from "./cgroup.ts"
import {
  type Cgroup as CgroupT,
  CgroupFailure,
  childrenUnsafe,
  createUnsafe,
  isIntact,
  readIn,
  removeOnceUnsafe,
  withVerified,
  writeIn
} from "./cgroupFs.ts"
import { procsUnsafe } from "./cgroupMembers.ts"
import * as procfs from "./procfs.ts"

/**
 * A session's cgroup: it exists while the session has trees (and a moment after, for its next one).
 *
 * @since 0.2.0
 * @category models
 */
export interface SessionCgroup {
  readonly cgroup: CgroupT
  /** Leaves in it that are not removed yet. */
  leaves: number
  /** The session limits written into it (their JSON), so that they are written once. */
  applied: string
  /** The removal of the empty cgroup, due a moment after its last leaf went (cancelled by a new leaf). */
  idle: ReturnType<typeof setTimeout> | undefined
}

/**
 * How long an empty session cgroup is kept for the session's next tree: a session spawning one
 * tree after another reuses it instead of creating and removing a cgroup per tree.
 */
const idleMs = 1000

/**
 * @since 0.2.0
 * @category models
 */
export interface CgroupPool {
  readonly poolId: string
  readonly usable: Cgroup.Usable
  readonly placement: Containment.Placement
  readonly base: CgroupT
  readonly pool: CgroupT
  readonly sentinel: CgroupT
  readonly sessions: Map<string, SessionCgroup>
  /** Controllers enabled in `cgroup.subtree_control`, by cgroup path. */
  readonly enabled: Map<string, Set<string>>
}

/**
 * A limit could not be applied (becomes `LimitUnavailable`).
 *
 * @since 0.2.0
 * @category errors
 */
export class LimitFailure extends Error {
  readonly refusal: Containment.Refusal
  constructor(refusal: Containment.Refusal) {
    super(`${refusal.limit}: ${refusal.reason}`)
    this.refusal = refusal
  }
}

const describe = (error: unknown) => error instanceof Error ? error.message : String(error)

/** Enables `controller` for the children of `parent` (idempotent, remembered). */
const enable = (p: CgroupPool, parent: CgroupT, controller: string): void => {
  let set = p.enabled.get(parent.path)
  if (set?.has(controller) === true) return
  withVerified(parent, (dir) => {
    if (!readIn(dir, "cgroup.subtree_control").split(/\s+/).includes(controller)) {
      // EBUSY here is the no-internal-processes rule: `parent` holds processes of its own.
      writeIn(dir, "cgroup.subtree_control", `+${controller}`)
    }
  })
  if (set === undefined) p.enabled.set(parent.path, set = new Set())
  set.add(controller)
}

/** Enables each limit's controller in every cgroup from the base down to `parents` (the last is the target's parent). */
const enableFor = (p: CgroupPool, limits: Containment.Limits, parents: ReadonlyArray<CgroupT>): void => {
  for (const { controller, file } of limitEntries(limits)) {
    if (!p.usable.controllers.includes(controller)) {
      throw new LimitFailure({
        controller,
        limit: file,
        reason: `the ${controller} controller is not available in ${p.usable.base} (cgroup.controllers: ${
          p.usable.controllers.join(" ") || "none"
        })`
      })
    }
    for (const parent of parents) {
      try {
        enable(p, parent, controller)
      } catch (error) {
        throw new LimitFailure({
          controller,
          limit: file,
          reason: `cannot enable the ${controller} controller in ${parent.path}/cgroup.subtree_control: ${
            describe(error)
          }${
            error instanceof CgroupFailure && error.reason === "Busy"
              ? " (it holds processes of its own: the no-internal-processes rule)"
              : ""
          }`
        })
      }
    }
  }
}

const writeLimits = (cgroup: CgroupT, limits: Containment.Limits): void => {
  for (const { controller, file, value } of limitEntries(limits)) {
    try {
      withVerified(cgroup, (dir) => writeIn(dir, file, value))
    } catch (error) {
      throw new LimitFailure({
        controller,
        limit: file,
        reason: `cannot write ${cgroup.path}/${file}: ${describe(error)}`
      })
    }
  }
}

/**
 * Why `limits` cannot be applied in this pool, or `undefined` (their controllers are then enabled
 * down to the pool's cgroup).
 *
 * @since 0.2.0
 * @category limits
 */
export const checkLimits = (p: CgroupPool, limits: Containment.Limits): Containment.Refusal | undefined => {
  try {
    enableFor(p, limits, [p.base, p.pool])
    return undefined
  } catch (error) {
    if (error instanceof LimitFailure) return error.refusal
    throw error
  }
}

/**
 * Creates the leaf of one tree (and its session's cgroup, at the session's first tree), with the
 * session's and the tree's limits. Throws `LimitFailure` or `CgroupFailure`; nothing is left behind
 * then.
 *
 * @since 0.2.0
 * @category layout
 */
export const createLeaf = (p: CgroupPool, options: LaunchOptions): CgroupT => {
  const known = p.sessions.get(options.session)
  if (known !== undefined && known.leaves === 0 && !isIntact(known.cgroup)) {
    // Removed by someone else while it was empty (only then can it be): start a new one.
    if (known.idle !== undefined) clearTimeout(known.idle)
    p.sessions.delete(options.session)
  }
  let session = p.sessions.get(options.session)
  if (session === undefined) {
    session = {
      cgroup: createUnsafe(p.pool, Cgroup.sessionDirName(options.session)),
      leaves: 0,
      applied: "",
      idle: undefined
    }
    p.sessions.set(options.session, session)
  }
  const own = session
  if (own.idle !== undefined) {
    clearTimeout(own.idle)
    own.idle = undefined
  }
  const dropSessionIfIdle = () => {
    if (own.leaves === 0) removeIdleSession(p, options.session, own)
  }
  let leaf: CgroupT | undefined
  try {
    const key = JSON.stringify(options.sessionLimits ?? {})
    if (key !== own.applied && options.sessionLimits !== undefined) {
      enableFor(p, options.sessionLimits, [p.base, p.pool])
      writeLimits(own.cgroup, options.sessionLimits)
      own.applied = key
    }
    const seq = Number(options.shepherdId.slice(options.shepherdId.lastIndexOf(":") + 1))
    leaf = createUnsafe(own.cgroup, Cgroup.treeDirName(seq))
    if (options.limits !== undefined) {
      enableFor(p, options.limits, [p.base, p.pool, own.cgroup])
      writeLimits(leaf, options.limits)
    }
  } catch (error) {
    if (leaf !== undefined) removeOnceUnsafe(leaf)
    dropSessionIfIdle()
    throw error
  }
  own.leaves++
  return leaf
}

/**
 * Removes a tree's leaf once the tree is gone (and its session's cgroup with its last leaf). A leaf
 * still holding a process (one that survived SIGKILL: the teardown reported it `Escaped`) is tried
 * for a moment, then left for the pool's close.
 *
 * @since 0.2.0
 * @category layout
 */
export const releaseLeaf = (p: CgroupPool, sessionId: string, leaf: CgroupT): Effect.Effect<void> =>
  Effect.gen(function*() {
    // The common case (the tree is gone, its leaf empty) costs one lstat and one rmdir.
    let first: "removed" | "gone" | "busy" | undefined
    try {
      first = removeOnceUnsafe(leaf)
    } catch {
      first = undefined
    }
    if (first === "busy" || first === undefined) {
      const removed = yield* Effect.result(Cgroup.remove(leaf, { timeout: "100 millis" }))
      if (removed._tag === "Failure") {
        return yield* Effect.logWarning(`cgroup ${leaf.path} left for the pool's close: ${removed.failure.detail}`)
      }
    }
    const session = p.sessions.get(sessionId)
    if (session === undefined || leaf.path.slice(0, leaf.path.lastIndexOf("/")) !== session.cgroup.path) return
    session.leaves--
    if (session.leaves === 0 && session.idle === undefined) {
      session.idle = setTimeout(() => removeIdleSession(p, sessionId, session), idleMs)
      session.idle.unref()
    }
  })

/** Removes a session's cgroup that has no leaf (left alone, and kept, if it is busy). */
const removeIdleSession = (p: CgroupPool, sessionId: string, session: SessionCgroup): void => {
  if (session.idle !== undefined) clearTimeout(session.idle)
  session.idle = undefined
  if (session.leaves > 0 || p.sessions.get(sessionId) !== session) return
  try {
    if (removeOnceUnsafe(session.cgroup) !== "busy") p.sessions.delete(sessionId)
  } catch {
    // the pool's close removes it
  }
}

const readNumber = (dir: string, file: string): number | undefined => {
  try {
    const n = Number(readIn(dir, file).trim())
    return Number.isFinite(n) ? n : undefined
  } catch {
    return undefined
  }
}
const readText = (dir: string, file: string): string | undefined => {
  try {
    return readIn(dir, file).trim()
  } catch {
    return undefined
  }
}
const field = (text: string | undefined, name: string): number | undefined => {
  const match = text === undefined ? null : new RegExp(`^${name} (\\d+)$`, "m").exec(text)
  return match === null ? undefined : Number(match[1])
}

/**
 * A session's usage and limits as its cgroup reports them; `undefined` when the session has no
 * cgroup now (no tree).
 *
 * @since 0.2.0
 * @category usage
 */
export const usage = (p: CgroupPool, sessionId: string): Containment.Usage | undefined => {
  const session = p.sessions.get(sessionId)
  if (session === undefined) return undefined
  try {
    return withVerified(session.cgroup, (dir) => {
      const unavailable: Array<string> = []
      const cpuUsageUsec = field(readText(dir, "cpu.stat"), "usage_usec")
      const memoryCurrent = readNumber(dir, "memory.current")
      const memory = memoryCurrent === undefined ? undefined : {
        current: memoryCurrent,
        max: readText(dir, "memory.max") ?? "max",
        oomKills: field(readText(dir, "memory.events"), "oom_kill") ?? 0
      }
      if (memory === undefined) unavailable.push("memory")
      const pidsCurrent = readNumber(dir, "pids.current")
      const pids = pidsCurrent === undefined
        ? undefined
        : { current: pidsCurrent, max: readText(dir, "pids.max") ?? "max" }
      if (pids === undefined) unavailable.push("pids")
      const weight = readNumber(dir, "cpu.weight")
      const cpu = weight === undefined ? undefined : { max: readText(dir, "cpu.max") ?? "max", weight }
      if (cpu === undefined) unavailable.push("cpu")
      return {
        cgroup: session.cgroup.path,
        processes: procsUnsafe(session.cgroup, true).length,
        ...(cpuUsageUsec === undefined ? {} : { cpuUsageUsec }),
        ...(memory === undefined ? {} : { memory }),
        ...(pids === undefined ? {} : { pids }),
        ...(cpu === undefined ? {} : { cpu }),
        unavailable
      }
    })
  } catch {
    return undefined // removed meanwhile
  }
}

/** Signals every process in `cgroup` and below it (pids read from our checked cgroup are ours). */
const signalAll = (cgroup: CgroupT, signal: NodeJS.Signals): number => {
  let pids: Array<number>
  try {
    pids = procsUnsafe(cgroup, true)
  } catch {
    return 0
  }
  for (const pid of pids) {
    try {
      process.kill(pid, signal)
    } catch {
      // gone
    }
  }
  return pids.length
}

/** Waits up to `ms` for `cgroup` to hold no live process (the event, or a poll); `true` when empty. */
const emptyWithin = (cgroup: CgroupT, ms: number): Effect.Effect<boolean> =>
  Cgroup.awaitEmpty(cgroup, { pollInterval: "50 millis" }).pipe(
    Effect.timeout(ms),
    Effect.match({ onFailure: () => false, onSuccess: () => true })
  )

/**
 * Terminates what is left in a cgroup of ours with `policy` (signal, grace, `cgroup.kill`, force
 * wait) and removes it with everything below it. Returns how many processes were in it, and
 * whether it is gone.
 *
 * @since 0.2.0
 * @category teardown
 */
export const terminateAndRemove = (
  cgroup: CgroupT,
  policy: KillPolicy
): Effect.Effect<{ readonly processes: number; readonly removed: boolean }> =>
  Effect.gen(function*() {
    let processes = 0
    if (policy.signal !== "SIGKILL") {
      processes = signalAll(cgroup, policy.signal)
      if (processes > 0) yield* emptyWithin(cgroup, policy.graceMs)
    }
    const killed = yield* Effect.result(Cgroup.kill(cgroup))
    if (killed._tag === "Failure") return { processes, removed: false }
    const removed = yield* Effect.result(Cgroup.remove(cgroup, { timeout: Math.max(policy.forceWaitMs, 100) }))
    return { processes, removed: removed._tag === "Success" }
  })

/**
 * A pool's cgroup under the base whose host is gone: the host named in the cgroup's name is no
 * longer that process, and its sentinel's leaf is empty (a live sentinel is still terminating it).
 * Cgroups without a host in their name are never taken for dead ones.
 *
 * @since 0.2.0
 * @category recovery
 */
export const isDead = (entry: Cgroup.PoolEntry): boolean =>
  entry.host !== undefined && !hostAlive(entry.host) && !entry.sentinelAlive

/**
 * Recovery at a pool's start: the cgroups of dead hosts whose pool id is in `poolIds` (the earlier
 * hosts of this pool's ledger) are terminated with `policy` and removed; the empty cgroups of any
 * dead host are removed (there is nothing to end in them, whoever's they were). What other dead
 * hosts left is for their own ledger's next host, or `shepherd reap`.
 *
 * @since 0.2.0
 * @category recovery
 */
export const recoverDead = (
  usable: Cgroup.Usable,
  policy: KillPolicy,
  poolIds: ReadonlyArray<string>
): Effect.Effect<ReadonlyArray<{ readonly cgroup: string; readonly processes: number }>> =>
  Effect.gen(function*() {
    const ours = new Set(poolIds)
    const pools = yield* Effect.orElseSucceed(Cgroup.listPools(usable), () => [])
    const dead = pools.filter((entry) =>
      isDead(entry) && (!entry.populated || (entry.poolId !== undefined && ours.has(entry.poolId)))
    )
    const done = yield* Effect.forEach(dead, (entry) =>
      Effect.map(
        entry.populated
          ? terminateAndRemove(entry.cgroup, policy)
          : Effect.as(Effect.ignore(Cgroup.remove(entry.cgroup)), { processes: 0, removed: true }),
        (r) => ({ cgroup: entry.cgroup.path, processes: r.processes })
      ), { concurrency: "unbounded" })
    return done
  })

/**
 * Whether the host a pool's cgroup names is still that process (same pid and start time, alive).
 *
 * @since 0.2.0
 * @category recovery
 */
export const hostAlive = (host: Cgroup.HostMark): boolean => {
  try {
    const stat = procfs.readStat(host.pid)
    return stat !== undefined && !procfs.isDead(stat) && stat.startTime === host.startTime
  } catch {
    return true // cannot be looked at: not ours to judge dead
  }
}

/**
 * Closes the pool's cgroups (its sessions are closed by then): what is left in them is killed,
 * the sentinel is given a moment to exit after its goodbye (then killed too), and everything is
 * removed. A cgroup that still holds a process after that is logged and left for recovery.
 *
 * @since 0.2.0
 * @category teardown
 */
export const close = (p: CgroupPool): Effect.Effect<void> =>
  Effect.gen(function*() {
    for (const session of p.sessions.values()) if (session.idle !== undefined) clearTimeout(session.idle)
    p.sessions.clear()
    const children = yield* Effect.orElseSucceed(Effect.try(() => childrenUnsafe(p.pool)), () => [])
    for (const child of children) {
      if (child.ino !== p.sentinel.ino) yield* Effect.ignore(Cgroup.kill(child))
    }
    const first = yield* Effect.result(Cgroup.remove(p.pool, { timeout: "2 seconds" }))
    if (first._tag === "Success") return
    yield* Effect.ignore(Cgroup.kill(p.pool))
    const second = yield* Effect.result(Cgroup.remove(p.pool, { timeout: "2 seconds" }))
    if (second._tag === "Failure") {
      yield* Effect.logWarning(
        `cgroup ${p.pool.path} could not be removed (${second.failure.detail}); the next host's recovery or \`shepherd reap\` removes it`
      )
    }
  })
