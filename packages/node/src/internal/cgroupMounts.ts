/**
 * The cgroup2 mounts of this machine and where a cgroup appears in them:
 * parsing `/proc/self/mountinfo` (hybrid layouts included: cgroup2 at
 * `/sys/fs/cgroup/unified` next to v1 controllers) and `/proc/self/cgroup`.
 * Pure functions over the texts.
 *
 * @since 0.1.0
 */
import * as path from "node:path"

/**
 * One cgroup2 mount, as `/proc/self/mountinfo` lists it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Mount {
  /** Where it is mounted (`/sys/fs/cgroup`, `/sys/fs/cgroup/unified` in a hybrid layout). */
  readonly mountPoint: string
  /** The cgroup of the hierarchy shown at the mount point (`/` unless bind-mounted or namespaced). */
  readonly root: string
  /** The device number of the mount (`major:minor` as `stat` reports `st_dev`). */
  readonly dev: bigint
  readonly readOnly: boolean
}

/** The `\ooo` escapes of mountinfo (space, tab, newline, backslash). */
const unescape = (field: string): string =>
  field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)))

/** glibc's `makedev`, as Node reports `st_dev`. */
const makedev = (major: bigint, minor: bigint): bigint =>
  ((major & 0xfffff000n) << 32n) | ((major & 0xfffn) << 8n) | ((minor & 0xffffff00n) << 12n) | (minor & 0xffn)

/**
 * The cgroup2 mounts listed in a mountinfo text (see proc(5): the fields after ` - ` are the file
 * system type, the source and the super options).
 *
 * @since 0.1.0
 * @category parsing
 */
export const parseMountInfo = (text: string): Array<Mount> => {
  const out: Array<Mount> = []
  for (const line of text.split("\n")) {
    const dash = line.indexOf(" - ")
    if (dash < 0) continue
    const [fsType] = line.slice(dash + 3).split(" ")
    if (fsType !== "cgroup2") continue
    const fields = line.slice(0, dash).split(" ")
    const [majorMinor, root, mountPoint, options] = [fields[2], fields[3], fields[4], fields[5]]
    if (majorMinor === undefined || root === undefined || mountPoint === undefined || options === undefined) continue
    const [major, minor] = majorMinor.split(":")
    if (major === undefined || minor === undefined || !/^\d+$/.test(major) || !/^\d+$/.test(minor)) continue
    out.push({
      mountPoint: unescape(mountPoint),
      root: unescape(root),
      dev: makedev(BigInt(major), BigInt(minor)),
      readOnly: options.split(",").includes("ro")
    })
  }
  return out
}

/**
 * The host's v2 cgroup from a `/proc/<pid>/cgroup` text (the `0::<path>` line); `undefined` when
 * there is none (a pure v1 host), or when that cgroup was removed (` (deleted)`).
 *
 * @since 0.1.0
 * @category parsing
 */
export const parseOwnCgroup = (text: string): string | undefined => {
  for (const line of text.split("\n")) {
    if (!line.startsWith("0::")) continue
    const cgroup = line.slice(3)
    return cgroup.startsWith("/") && !cgroup.endsWith(" (deleted)") ? cgroup : undefined
  }
  return undefined
}

/**
 * Where cgroup `cgroup` (a path in the hierarchy) appears under `mount`, if the mount shows it.
 *
 * @since 0.1.0
 * @category parsing
 */
export const locate = (mount: Mount, cgroup: string): string | undefined => {
  const root = mount.root === "/" ? "" : mount.root
  if (cgroup !== root && !cgroup.startsWith(`${root}/`)) return undefined
  const rest = cgroup.slice(root.length)
  return rest === "" || rest === "/" ? mount.mountPoint : path.join(mount.mountPoint, rest)
}

/**
 * The nearest common ancestor, under `mount`, of `base` and the host's cgroup (the mount point when
 * the host's cgroup is not visible there).
 *
 * @since 0.1.0
 * @category parsing
 */
export const commonAncestor = (mount: Mount, base: string, ownCgroup: string | undefined): string => {
  const own = ownCgroup === undefined ? undefined : locate(mount, ownCgroup)
  if (own === undefined) return mount.mountPoint
  const a = base.split("/")
  const b = own.split("/")
  let i = 0
  while (i < a.length && i < b.length && a[i] === b[i]) i++
  const common = a.slice(0, i).join("/")
  return common.length < mount.mountPoint.length ? mount.mountPoint : common
}
