/**
 * The names of our cgroups: `shepherd-<pool id>` under the base, `sentinel`
 * and `s-<session id>` in a pool's, `t-<tree number>` in a session's. Ids are
 * encoded so that a name is always one plain path component.
 *
 * @since 0.1.0
 */
import * as crypto from "node:crypto"
import { CgroupFailure } from "./cgroupFs.ts"

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
 * The host that created a pool's cgroup, as its name records it.
 *
 * @since 0.2.0
 * @category models
 */
export interface HostMark {
  readonly pid: number
  /** The host's start time (clock ticks since boot, decimal). */
  readonly startTime: string
}

/**
 * A pool's cgroup name that also names its host: `shepherd-<pool id>.<pid>.<start time>` (`.`
 * never occurs in an encoded id), so that a later host can tell a dead host's cgroup from a live
 * one's without a ledger, whether or not it had a lifeline.
 *
 * @since 0.2.0
 * @category names
 */
export const hostPoolDirName = (poolId: string, host: HostMark): string => {
  if (!Number.isSafeInteger(host.pid) || host.pid <= 0 || !/^\d+$/.test(host.startTime)) {
    throw new CgroupFailure("BadName", String(host.pid), `bad host identity ${host.pid}/${host.startTime}`)
  }
  return `${poolDirName(poolId)}.${host.pid}.${host.startTime}`
}

/**
 * What a pool's cgroup name says: its pool id (when reversible) and its host (when recorded).
 * `undefined` for a name that is not a pool's.
 *
 * @since 0.2.0
 * @category names
 */
export const parsePoolDirName = (
  name: string
): { readonly poolId: string | undefined; readonly host: HostMark | undefined } | undefined => {
  if (!name.startsWith(poolPrefix)) return undefined
  const rest = name.slice(poolPrefix.length)
  const match = /^([^.]*)\.(\d+)\.(\d+)$/.exec(rest)
  if (match === null) return { poolId: decodeName(rest), host: undefined }
  return { poolId: decodeName(match[1]!), host: { pid: Number(match[2]), startTime: match[3]! } }
}

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
