/**
 * The members of our cgroups and what can be done to them, synchronous and
 * free of Effect (the lifeline sentinel loads them): `cgroup.procs`,
 * `populated` from `cgroup.events`, `cgroup.kill`, moving a pid in, and the
 * pools' cgroups under a base. Every access goes through `withVerified`: a
 * cgroup that is not the one we created is never read or written.
 *
 * @since 0.1.0
 */
import * as fs from "node:fs"
import { type Cgroup, CgroupFailure, childrenUnsafe, errnoOf, fail, readIn, withVerified, writeIn } from "./cgroupFs.ts"
import { type HostMark, parsePoolDirName, sentinelDirName } from "./cgroupNames.ts"

const collectProcs = (dir: string, out: Array<number>, recursive: boolean): void => {
  for (const line of readIn(dir, "cgroup.procs").split("\n")) if (line !== "") out.push(Number(line))
  if (!recursive) return
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    if (!entry.isDirectory()) continue
    try {
      collectProcs(`${dir}/${entry.name}`, out, true)
    } catch (error) {
      if (errnoOf(error) !== "ENOENT") throw error // a child cgroup removed meanwhile was empty
    }
  }
}

/**
 * The pids in `cgroup` (and, when `recursive`, in every cgroup below it). Zombies are not listed.
 * A pid read here is ours by construction: only our wrapper and our post-spawn placement move
 * processes into our cgroups, and their descendants cannot leave (unless they may write
 * `cgroup.procs` elsewhere: root, or the delegated user).
 *
 * @since 0.1.0
 * @category members
 */
export const procsUnsafe = (cgroup: Cgroup, recursive = false): Array<number> =>
  withVerified(cgroup, (dir) => {
    const out: Array<number> = []
    try {
      collectProcs(dir, out, recursive)
    } catch (error) {
      return fail("cannot read the members of cgroup", cgroup.path, error)
    }
    return out
  })

/**
 * Parses `populated` from a `cgroup.events` text.
 *
 * @since 0.1.0
 * @category members
 */
export const parsePopulated = (events: string): boolean | undefined => {
  const match = /^populated ([01])$/m.exec(events)
  return match === null ? undefined : match[1] === "1"
}

/**
 * Whether any live process is in `cgroup` or below it (`cgroup.events`; zombies do not count).
 *
 * @since 0.1.0
 * @category members
 */
export const populatedUnsafe = (cgroup: Cgroup): boolean =>
  withVerified(cgroup, (dir) => {
    let text: string
    try {
      text = readIn(dir, "cgroup.events")
    } catch (error) {
      return fail("cannot read cgroup.events of", cgroup.path, error)
    }
    const populated = parsePopulated(text)
    if (populated === undefined) throw new CgroupFailure("NotCgroup", cgroup.path, `no populated in ${cgroup.path}`)
    return populated
  })

/**
 * SIGKILLs every process in `cgroup` and below it, atomically with respect to forks
 * (`cgroup.kill`, Linux 5.14+). Refused (`Swapped`) when the path holds another cgroup.
 *
 * @since 0.1.0
 * @category teardown
 */
export const killUnsafe = (cgroup: Cgroup): void =>
  withVerified(cgroup, (dir) => {
    try {
      writeIn(dir, "cgroup.kill", "1")
    } catch (error) {
      fail("cannot write cgroup.kill of", cgroup.path, error)
    }
  })

/**
 * Moves process `pid` (with its threads) into `cgroup`. Its descendants forked before the move stay
 * where they are: that is the race of post-spawn placement.
 *
 * @since 0.1.0
 * @category placement
 */
export const placeUnsafe = (cgroup: Cgroup, pid: number): void =>
  withVerified(cgroup, (dir) => {
    try {
      writeIn(dir, "cgroup.procs", String(pid))
    } catch (error) {
      fail(`cannot move pid ${pid} into cgroup`, cgroup.path, error)
    }
  })

/**
 * A pool's cgroup found under a base.
 *
 * @since 0.1.0
 * @category models
 */
export interface PoolEntry {
  /** The pool's id, when the name is one `poolDirName` makes reversibly. */
  readonly poolId: string | undefined
  /** The host that created it, when its name records one (`hostPoolDirName`). */
  readonly host?: HostMark | undefined
  readonly cgroup: Cgroup
  /** Whether a live process is in it (its sentinel's leaf included). */
  readonly populated: boolean
  /** Whether a live process is in its sentinel's leaf (`false` when it has none). */
  readonly sentinelAlive: boolean
}

/**
 * The pools' cgroups under `base` (ours and other hosts', dead or alive): what recovery and
 * `shepherd reap` look at.
 *
 * @since 0.1.0
 * @category layout
 */
export const listPoolsUnsafe = (base: Cgroup): Array<PoolEntry> => {
  const out: Array<PoolEntry> = []
  for (const cgroup of childrenUnsafe(base)) {
    const parsed = parsePoolDirName(cgroup.path.slice(cgroup.path.lastIndexOf("/") + 1))
    if (parsed === undefined) continue
    try {
      const sentinel = childrenUnsafe(cgroup).find((c) => c.path.endsWith(`/${sentinelDirName}`))
      out.push({
        poolId: parsed.poolId,
        ...(parsed.host === undefined ? {} : { host: parsed.host }),
        cgroup,
        populated: populatedUnsafe(cgroup),
        sentinelAlive: sentinel !== undefined && populatedUnsafe(sentinel)
      })
    } catch {
      // removed meanwhile
    }
  }
  return out
}
