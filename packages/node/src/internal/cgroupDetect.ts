/**
 * Whether cgroup v2 containment is usable here, and where: the cgroup2 mounts
 * (from `/proc/self/mountinfo`, hybrid layouts included), the host's own v2
 * cgroup (from `/proc/self/cgroup`), and a base chosen in this order:
 * the configured path → the host's own cgroup when it is writable (a delegated
 * subtree, as systemd gives a user service with `Delegate=yes`) → the root of
 * a writable cgroup2 mount. The chosen base is probed (a cgroup is created
 * and removed). Synchronous and cheap (two small `/proc` reads, a mkdir and
 * an rmdir: well under a millisecond), and free of Effect so that the lifeline
 * sentinel can use it.
 *
 * @since 0.1.0
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { type Cgroup, errnoOf, inCgroupFs, O_DIRECTORY, O_NOFOLLOW, O_RDONLY } from "./cgroupFs.ts"
import { commonAncestor, locate, type Mount, parseMountInfo, parseOwnCgroup } from "./cgroupMounts.ts"
import { probeName } from "./cgroupNames.ts"

export type { Mount } from "./cgroupMounts.ts"

/**
 * Cgroup v2 containment is possible, below `base`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Usable {
  readonly _tag: "Usable"
  /** The directory under which pools create their cgroups (a real path in the cgroup2 file system). */
  readonly base: string
  /** How the base was found. */
  readonly source: "configured" | "delegated" | "mount"
  /** The mount point of the cgroup2 file system that holds the base. */
  readonly mount: string
  /** The `st_dev` of that file system: every cgroup we create must have it. */
  readonly dev: bigint
  /** The host's own v2 cgroup, as `/proc/self/cgroup` names it (`0::<path>`), if it has one. */
  readonly ownCgroup: string | undefined
  /** The controllers available in the base (`cgroup.controllers`): limits need them. */
  readonly controllers: ReadonlyArray<string>
}

/**
 * Cgroup v2 containment is not possible; `reason` says why, for the doctor and the log.
 *
 * @since 0.1.0
 * @category models
 */
export interface Unusable {
  readonly _tag: "Unusable"
  readonly reason: string
  /** Each base that was considered, and why it was not taken. */
  readonly tried: ReadonlyArray<{ readonly base: string; readonly reason: string }>
}

/**
 * @since 0.1.0
 * @category models
 */
export type Detection = Usable | Unusable

const describe = (error: unknown) => errnoOf(error) ?? (error instanceof Error ? error.message : String(error))

const readControllers = (base: string): Array<string> => {
  try {
    return fs.readFileSync(path.join(base, "cgroup.controllers"), "latin1").trim().split(/\s+/).filter((c) => c !== "")
  } catch {
    return []
  }
}

/**
 * Why `base` cannot hold our cgroups, or `undefined` when it can: it must be a real directory (no
 * symlink on the way) in the cgroup2 file system of `mount`, where this process may create a cgroup
 * that has `cgroup.kill` and type `domain`, and move processes into it: `cgroup.procs` writable
 * there and in `ancestor`, the nearest common ancestor of the host's cgroup and `base` (moving a
 * process needs write access to the common ancestor of where it is and where it goes; default
 * `base`). The probe cgroup is removed again.
 *
 * @since 0.1.0
 * @category probing
 */
export const probe = (base: string, mount: Mount, ancestor: string = base): string | undefined => {
  let real: string
  try {
    real = fs.realpathSync(base)
  } catch (error) {
    return `${base} cannot be resolved: ${describe(error)}`
  }
  if (real !== path.resolve(base)) return `${base} goes through a symlink (to ${real}): configure the real path`
  let dirFd: number
  try {
    dirFd = fs.openSync(base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
  } catch (error) {
    return `${base} is not a directory that can be opened: ${describe(error)}`
  }
  try {
    const stat = fs.fstatSync(dirFd, { bigint: true })
    if (stat.dev !== mount.dev) return `${base} is not in the cgroup2 file system mounted at ${mount.mountPoint}`
  } finally {
    fs.closeSync(dirFd)
  }
  if (mount.readOnly) {
    return `the cgroup2 file system at ${mount.mountPoint} is mounted read-only (a container without privileges?)`
  }
  try {
    fs.accessSync(base, fs.constants.W_OK)
  } catch {
    return `${base} is not writable by this process (uid ${process.geteuid?.()}): run as root, or in a delegated subtree (systemd-run --user --scope -p Delegate=yes)`
  }
  const probeDir = path.join(base, probeName())
  try {
    fs.mkdirSync(probeDir, { mode: 0o755 })
  } catch (error) {
    return `cannot create a cgroup in ${base}: ${describe(error)}`
  }
  try {
    const created = fs.lstatSync(probeDir, { bigint: true })
    if (!created.isDirectory() || !inCgroupFs(created, mount.dev)) return `${probeDir} is not a cgroup`
    if (!fs.existsSync(path.join(probeDir, "cgroup.kill"))) {
      return `cgroups in ${base} have no cgroup.kill (Linux 5.14 or later is needed)`
    }
    const type = fs.readFileSync(path.join(probeDir, "cgroup.type"), "latin1").trim()
    if (type !== "domain") return `cgroups created in ${base} are of type "${type}", not "domain"`
    for (const procs of [path.join(probeDir, "cgroup.procs"), path.join(ancestor, "cgroup.procs")]) {
      try {
        fs.accessSync(procs, fs.constants.W_OK)
      } catch {
        return `${procs} is not writable: processes could not be moved into our cgroups`
      }
    }
    return undefined
  } catch (error) {
    return `cannot inspect the probe cgroup ${probeDir}: ${describe(error)}`
  } finally {
    try {
      fs.rmdirSync(probeDir)
    } catch {
      // nothing we could do; an empty probe cgroup costs nothing
    }
  }
}

/**
 * Options of `detect`; the texts default to this process's `/proc/self/mountinfo` and `/proc/self/cgroup`.
 *
 * @since 0.1.0
 * @category models
 */
export interface DetectOptions {
  /** The configured base (`cgroup.base`): when given, it is the only candidate. */
  readonly base?: string | undefined
  readonly mountInfo?: string | undefined
  readonly procCgroup?: string | undefined
}

const readText = (file: string): string | undefined => {
  try {
    return fs.readFileSync(file, "latin1")
  } catch {
    return undefined
  }
}

/**
 * Finds a base for our cgroups, or says why there is none.
 *
 * @since 0.1.0
 * @category detection
 */
export const detect = (options: DetectOptions = {}): Detection => {
  if (process.platform !== "linux") return unusable(`cgroups exist only on Linux (this is ${process.platform})`, [])
  const mountInfo = options.mountInfo ?? readText("/proc/self/mountinfo")
  if (mountInfo === undefined) return unusable("/proc/self/mountinfo cannot be read (is /proc mounted?)", [])
  const mounts = parseMountInfo(mountInfo)
  const ownCgroup = parseOwnCgroup(options.procCgroup ?? readText("/proc/self/cgroup") ?? "")
  const candidates: Array<{ base: string; mount: Mount | undefined; source: Usable["source"] }> = []
  if (options.base !== undefined) {
    const base = path.resolve(options.base)
    const mount = mounts.find((m) => base === m.mountPoint || base.startsWith(`${m.mountPoint}/`))
    candidates.push({ base, mount, source: "configured" })
  } else {
    for (const mount of mounts) {
      const own = ownCgroup === undefined ? undefined : locate(mount, ownCgroup)
      if (own !== undefined && own !== mount.mountPoint) candidates.push({ base: own, mount, source: "delegated" })
      candidates.push({ base: mount.mountPoint, mount, source: "mount" })
    }
  }
  if (candidates.length === 0) {
    return unusable("no cgroup2 file system is mounted (cgroup v1 only, or none)", [])
  }
  const tried: Array<{ base: string; reason: string }> = []
  for (const candidate of candidates) {
    const reason = candidate.mount === undefined
      ? `${candidate.base} is not below a cgroup2 mount (${
        mounts.map((m) => m.mountPoint).join(", ") || "there is none"
      })`
      : probe(candidate.base, candidate.mount, commonAncestor(candidate.mount, candidate.base, ownCgroup))
    if (reason !== undefined) {
      tried.push({ base: candidate.base, reason })
      continue
    }
    const mount = candidate.mount!
    return {
      _tag: "Usable",
      base: candidate.base,
      source: candidate.source,
      mount: mount.mountPoint,
      dev: mount.dev,
      ownCgroup,
      controllers: readControllers(candidate.base)
    }
  }
  return unusable(tried.map((t) => t.reason).join("; "), tried)
}

const unusable = (reason: string, tried: Unusable["tried"]): Unusable => ({ _tag: "Unusable", reason, tried })

/**
 * The base as a cgroup of ours would record it, for the layout functions (the base itself was not
 * created by us: its identity is what it is now).
 *
 * @since 0.1.0
 * @category constructors
 */
export const baseOf = (usable: Usable): Cgroup => {
  const stat = fs.lstatSync(usable.base, { bigint: true })
  return { path: usable.base, dev: stat.dev, ino: stat.ino }
}
