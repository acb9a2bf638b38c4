/**
 * Cgroup v2 primitives on the file system, synchronous and free of Effect
 * (the lifeline sentinel loads them): the names of our cgroups, creating and
 * removing them, their members (`cgroup.procs`), `populated` (`cgroup.events`),
 * `cgroup.kill`, and moving a pid into a cgroup.
 *
 * **Identity.** A cgroup of ours is recorded with the `st_dev`/`st_ino` it had
 * when we created it (kernfs numbers cgroups with 64-bit ids that are not
 * reused while the machine runs). Every later read or write opens the
 * directory without following a symlink, checks that it is still that
 * cgroup, and reaches the file through the opened descriptor
 * (`/proc/self/fd/<fd>/<file>`), so a cgroup removed and recreated under the
 * same name (by someone else, or a dead host's leaf whose name came back) is
 * refused (`Swapped`), never read or killed.
 *
 * @since 0.1.0
 */
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import { writeAll } from "./safeFiles.ts"

/** @internal */
export const O_RDONLY = fs.constants.O_RDONLY
/** @internal */
export const O_WRONLY = fs.constants.O_WRONLY
// Linux has both; elsewhere cgroups do not exist and nothing here runs.
/** @internal */
export const O_DIRECTORY = fs.constants.O_DIRECTORY ?? 0
/** @internal */
export const O_NOFOLLOW = fs.constants.O_NOFOLLOW ?? 0

/**
 * A cgroup directory and the identity it had when we created (or first saw) it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Cgroup {
  readonly path: string
  readonly dev: bigint
  readonly ino: bigint
}

/**
 * Why an operation on a cgroup failed.
 *
 * @since 0.1.0
 * @category models
 */
export type FailureReason =
  | "NotFound"
  | "AlreadyExists"
  | "PermissionDenied"
  | "Busy"
  /** The path now holds another cgroup than the one we recorded. */
  | "Swapped"
  /** The path is not a cgroup of the recorded cgroup2 file system. */
  | "NotCgroup"
  /** A pid to move is gone. */
  | "NoSuchProcess"
  | "BadName"
  | "Unknown"

/**
 * A failed cgroup operation (the Effect facade turns it into `CgroupError`).
 *
 * @since 0.1.0
 * @category errors
 */
export class CgroupFailure extends Error {
  readonly reason: FailureReason
  readonly path: string
  constructor(reason: FailureReason, path: string, message: string) {
    super(message)
    this.reason = reason
    this.path = path
  }
}

/** @internal */
export const errnoOf = (error: unknown): string | undefined => (error as NodeJS.ErrnoException | undefined)?.code

const reasonOf = (code: string | undefined): FailureReason => {
  switch (code) {
    case "ENOENT":
      return "NotFound"
    case "EEXIST":
      return "AlreadyExists"
    case "EACCES":
    case "EPERM":
    case "EROFS":
      return "PermissionDenied"
    case "EBUSY":
    case "ENOTEMPTY":
      return "Busy"
    case "ESRCH":
      return "NoSuchProcess"
    case "ELOOP":
    case "ENOTDIR":
      return "NotCgroup"
    default:
      return "Unknown"
  }
}

const fail = (what: string, path: string, error: unknown): never => {
  if (error instanceof CgroupFailure) throw error
  const code = errnoOf(error)
  throw new CgroupFailure(reasonOf(code), path, `${what} ${path}: ${code ?? String(error)}`)
}

/** @internal */
export const inCgroupFs = (stat: fs.BigIntStats, dev: bigint): boolean => stat.dev === dev

/** The name of a probe cgroup: never taken for a pool's (those start with `shepherd-`). */
export const probeName = (): string => `probe.shepherd-${process.pid}-${crypto.randomBytes(4).toString("hex")}`

// Names: letters, digits and `-` stand for themselves; every other byte of the UTF-8 text is
// `_xx` (lowercase hex), so the encoding is reversible and never holds `/`, `.`, a space or a
// newline. A name that would pass 200 characters is cut and ends in `_h` and a hash (not reversible).
const maxName = 200

/**
 * The file-name-safe form of an id (pool or session).
 *
 * @since 0.1.0
 * @category names
 */
export const encodeName = (id: string): string => {
  let out = ""
  for (const byte of Buffer.from(id, "utf8")) {
    const c = String.fromCharCode(byte)
    out += /[A-Za-z0-9-]/.test(c) ? c : `_${byte.toString(16).padStart(2, "0")}`
  }
  if (out.length <= maxName) return out
  const hash = crypto.createHash("sha256").update(id).digest("hex").slice(0, 16)
  return `${out.slice(0, maxName - 18).replace(/_[0-9a-f]?$/, "")}_h${hash}`
}

/**
 * The id an `encodeName` result stands for; `undefined` for a name it cannot have made (or a cut one).
 *
 * @since 0.1.0
 * @category names
 */
export const decodeName = (name: string): string | undefined => {
  if (!/^(?:[A-Za-z0-9-]|_[0-9a-f]{2})*$/.test(name)) return undefined
  const bytes: Array<number> = []
  for (let i = 0; i < name.length; i++) {
    if (name[i] === "_") {
      bytes.push(parseInt(name.slice(i + 1, i + 3), 16))
      i += 2
    } else {
      bytes.push(name.charCodeAt(i))
    }
  }
  const id = Buffer.from(bytes).toString("utf8")
  return encodeName(id) === name ? id : undefined
}

/**
 * @since 0.1.0
 * @category names
 */
export const poolPrefix = "shepherd-"

/**
 * @since 0.1.0
 * @category names
 */
export const poolDirName = (poolId: string): string => `${poolPrefix}${encodeName(poolId)}`

/**
 * @since 0.1.0
 * @category names
 */
export const sessionDirName = (sessionId: string): string => `s-${encodeName(sessionId)}`

/**
 * @since 0.1.0
 * @category names
 */
export const treeDirName = (seq: number): string => {
  if (!Number.isSafeInteger(seq) || seq < 0) throw new CgroupFailure("BadName", String(seq), `bad tree number ${seq}`)
  return `t-${seq}`
}

/**
 * The sentinel's leaf in a pool's cgroup.
 *
 * @since 0.1.0
 * @category names
 */
export const sentinelDirName = "sentinel"

/**
 * Runs `f` with a path to `cgroup` that cannot be swapped under it: the directory opened without
 * following a symlink, checked against the recorded identity, and reached through the descriptor.
 *
 * @since 0.1.0
 * @category identity
 */
export const withVerified = <A>(cgroup: Cgroup, f: (dir: string) => A): A => {
  const fd = openUnsafe(cgroup)
  try {
    return f(`/proc/self/fd/${fd}`)
  } finally {
    fs.closeSync(fd)
  }
}

/**
 * Opens `cgroup`'s directory, checked to be the recorded cgroup; the caller closes the descriptor.
 * Handed to a child (`stdio[3]`), it lets the wrapper join exactly this cgroup (`wrapThroughFd`).
 *
 * @since 0.1.0
 * @category identity
 */
export const openUnsafe = (cgroup: Cgroup): number => {
  let fd: number
  try {
    fd = fs.openSync(cgroup.path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
  } catch (error) {
    return fail("cannot open cgroup", cgroup.path, error)
  }
  const stat = fs.fstatSync(fd, { bigint: true })
  if (stat.dev !== cgroup.dev || stat.ino !== cgroup.ino) {
    fs.closeSync(fd)
    throw new CgroupFailure(
      "Swapped",
      cgroup.path,
      `${cgroup.path} is no longer the cgroup we created (inode ${cgroup.ino}, now ${stat.ino}): refused`
    )
  }
  return fd
}

/**
 * Whether `cgroup` is still the recorded one (`false` when it is gone or swapped).
 *
 * @since 0.1.0
 * @category identity
 */
export const isIntact = (cgroup: Cgroup): boolean => {
  try {
    const stat = fs.lstatSync(cgroup.path, { bigint: true })
    return stat.dev === cgroup.dev && stat.ino === cgroup.ino
  } catch {
    return false
  }
}

/**
 * Creates cgroup `name` in `parent` (which must still be the recorded one) and records it.
 * `AlreadyExists` when the name is taken: nothing is reused.
 *
 * @since 0.1.0
 * @category layout
 */
export const createUnsafe = (parent: Cgroup, name: string): Cgroup => {
  if (!/^[A-Za-z0-9_-][A-Za-z0-9_.-]*$/.test(name) || name.length > 255) {
    throw new CgroupFailure("BadName", name, `not a cgroup name of ours: ${JSON.stringify(name)}`)
  }
  const path = `${parent.path}/${name}`
  return withVerified(parent, (dir) => {
    try {
      fs.mkdirSync(`${dir}/${name}`, { mode: 0o755 })
    } catch (error) {
      return fail("cannot create cgroup", path, error)
    }
    const stat = fs.lstatSync(`${dir}/${name}`, { bigint: true })
    if (!stat.isDirectory() || !inCgroupFs(stat, parent.dev)) {
      throw new CgroupFailure("NotCgroup", path, `${path} is not a cgroup`)
    }
    return { path, dev: stat.dev, ino: stat.ino }
  })
}

/**
 * One attempt to remove `cgroup`: `"busy"` while it holds live processes or child cgroups;
 * `"gone"` when it is not there any more (or the path holds another cgroup, which is left alone).
 *
 * @since 0.1.0
 * @category layout
 */
export const removeOnceUnsafe = (cgroup: Cgroup): "removed" | "gone" | "busy" => {
  if (!isIntact(cgroup)) return "gone"
  try {
    fs.rmdirSync(cgroup.path)
    return "removed"
  } catch (error) {
    const code = errnoOf(error)
    if (code === "ENOENT") return "gone"
    if (code === "EBUSY" || code === "ENOTEMPTY") return "busy"
    return fail("cannot remove cgroup", cgroup.path, error)
  }
}

/**
 * The child cgroups of `cgroup`, recorded as they are now.
 *
 * @since 0.1.0
 * @category layout
 */
export const childrenUnsafe = (cgroup: Cgroup): Array<Cgroup> =>
  withVerified(cgroup, (dir) => {
    const out: Array<Cgroup> = []
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue
      try {
        const stat = fs.lstatSync(`${dir}/${entry.name}`, { bigint: true })
        if (stat.isDirectory() && stat.dev === cgroup.dev) {
          out.push({ path: `${cgroup.path}/${entry.name}`, dev: stat.dev, ino: stat.ino })
        }
      } catch {
        // removed meanwhile
      }
    }
    return out
  })

const readIn = (dir: string, file: string): string => {
  const fd = fs.openSync(`${dir}/${file}`, O_RDONLY | O_NOFOLLOW)
  try {
    return fs.readFileSync(fd, "latin1")
  } finally {
    fs.closeSync(fd)
  }
}

const writeIn = (dir: string, file: string, text: string): void => {
  const fd = fs.openSync(`${dir}/${file}`, O_WRONLY | O_NOFOLLOW)
  try {
    writeAll(fd, Buffer.from(text, "latin1"))
  } finally {
    fs.closeSync(fd)
  }
}

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
    const name = cgroup.path.slice(cgroup.path.lastIndexOf("/") + 1)
    if (!name.startsWith(poolPrefix)) continue
    try {
      const sentinel = childrenUnsafe(cgroup).find((c) => c.path.endsWith(`/${sentinelDirName}`))
      out.push({
        poolId: decodeName(name.slice(poolPrefix.length)),
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
