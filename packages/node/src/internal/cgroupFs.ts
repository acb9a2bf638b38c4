/**
 * Cgroup v2 primitives on the file system, synchronous and free of Effect
 * (the lifeline sentinel loads them): creating, listing and removing our
 * cgroups, each checked to be the one we created.
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

/** @internal */
export const fail = (what: string, path: string, error: unknown): never => {
  if (error instanceof CgroupFailure) throw error
  const code = errnoOf(error)
  throw new CgroupFailure(reasonOf(code), path, `${what} ${path}: ${code ?? String(error)}`)
}

/** @internal */
export const inCgroupFs = (stat: fs.BigIntStats, dev: bigint): boolean => stat.dev === dev

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
/** @internal */
export const readIn = (dir: string, file: string): string => {
  const fd = fs.openSync(`${dir}/${file}`, O_RDONLY | O_NOFOLLOW)
  try {
    return fs.readFileSync(fd, "latin1")
  } finally {
    fs.closeSync(fd)
  }
}

/** @internal */
export const writeIn = (dir: string, file: string, text: string): void => {
  const fd = fs.openSync(`${dir}/${file}`, O_WRONLY | O_NOFOLLOW)
  try {
    writeAll(fd, Buffer.from(text, "latin1"))
  } finally {
    fs.closeSync(fd)
  }
}
