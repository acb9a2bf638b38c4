/**
 * File safety for the ledger (see "Trust rules" in the design): a file or
 * directory is used only if it is ours (a regular file or a real directory
 * of this process's user, writable by nobody else, below parents nobody else
 * can change); files are opened without following symlinks or blocking on
 * FIFOs and checked through the opened descriptor; temporary files are
 * created exclusively under unpredictable names; a write counts only whole.
 */
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"

export const { O_APPEND, O_CREAT, O_EXCL, O_RDONLY, O_WRONLY } = fs.constants
// Windows has neither (nor symlinks an attacker could plant there without privileges).
const O_NOFOLLOW = fs.constants.O_NOFOLLOW ?? 0
const O_NONBLOCK = fs.constants.O_NONBLOCK ?? 0
/** This process's effective uid (`undefined` on Windows). */
export const euid = process.geteuid?.()

/** A file or directory we may not trust (or use); `reason` is the message for the operator. */
export class Refused extends Error {}

/** Why `stat` (of `name`) is not a file or directory of ours, if it is not. */
export const distrust = (name: string, stat: fs.Stats, kind: "file" | "directory"): string | undefined => {
  if (stat.isSymbolicLink()) return `${name} is a symlink: point the ledger at the real ${kind}`
  if (kind === "file" && !stat.isFile()) {
    return `${name} is not a regular file (${describeType(stat)}): remove it or choose another path`
  }
  if (kind === "directory" && !stat.isDirectory()) return `${name} is not a directory`
  // Windows has neither owners nor mode bits in this sense.
  if (euid === undefined) return undefined
  if (stat.uid !== euid) {
    return `${name} is owned by uid ${stat.uid}, not by this process's user (uid ${euid}): chown ${euid} ${name}, or choose another path`
  }
  if ((stat.mode & 0o022) !== 0) {
    const mode = (stat.mode & 0o7777).toString(8)
    return kind === "directory"
      ? `directory ${name} is writable by other users (mode ${mode}); they could plant or replace files there: chmod 700 ${name}, or use a private directory`
      : `${name} is writable by other users (mode ${mode}): chmod 600 ${name}`
  }
  return undefined
}

const describeType = (stat: fs.Stats) =>
  stat.isFIFO()
    ? "a FIFO"
    : stat.isSocket()
    ? "a socket"
    : stat.isDirectory()
    ? "a directory"
    : stat.isCharacterDevice() || stat.isBlockDevice()
    ? "a device"
    : "not a file"

/**
 * Opens an existing file without following a symlink or blocking on a FIFO,
 * and checks the opened descriptor (not the name, which could be swapped
 * meanwhile). `undefined` when there is no such file.
 */
export const openOwned = (file: string, flags: number, owner: "ours" | "any" = "ours"): number | undefined => {
  let fd: number
  try {
    fd = fs.openSync(file, flags | O_NOFOLLOW | O_NONBLOCK)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === "ENOENT") return undefined
    if (code === "ELOOP" || code === "EMLINK") {
      throw new Refused(`${file} is a symlink: point the ledger at the real file`)
    }
    throw error
  }
  const stat = fs.fstatSync(fd)
  const why = owner === "ours"
    ? distrust(file, stat, "file")
    : stat.isFile()
    ? undefined
    : `${file} is not a regular file (${describeType(stat)})`
  if (why !== undefined) {
    fs.closeSync(fd)
    throw new Refused(why)
  }
  return fd
}

/** Writes all of `data`: a short write is retried, and one that makes no progress is an error. */
export const writeAll = (fd: number, data: Buffer) => {
  let offset = 0
  while (offset < data.length) {
    const n = fs.writeSync(fd, data, offset, data.length - offset)
    if (n <= 0) throw new Error(`short write: ${offset} of ${data.length} bytes`)
    offset += n
  }
}

/** Unpredictable, and carrying our pid so that stray files of dead hosts can be told apart. */
export const tempSuffix = () => `${process.pid}-${crypto.randomBytes(8).toString("hex")}`

/** Creates `file` (which must not exist: no symlink is followed) with `data`, synced. */
export const createExclusive = (file: string, data: Buffer) => {
  const fd = fs.openSync(file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600)
  try {
    writeAll(fd, data)
    fs.fsyncSync(fd)
  } catch (error) {
    fs.closeSync(fd)
    fs.rmSync(file, { force: true })
    throw error
  }
  fs.closeSync(fd)
}

/** Replaces `file` with `text`: written aside (exclusively, synced), then renamed over it. */
export const writeAtomically = (file: string, text: string) => {
  const tmp = `${file}.tmp-${tempSuffix()}`
  createExclusive(tmp, Buffer.from(text))
  try {
    fs.renameSync(tmp, file)
  } catch (error) {
    fs.rmSync(tmp, { force: true })
    throw error
  }
  try {
    const dir = fs.openSync(path.dirname(file), "r")
    fs.fsyncSync(dir)
    fs.closeSync(dir)
  } catch {
    // directory fsync is best effort (not supported everywhere)
  }
}

// File systems that are not storage: `mkdir -p` under /proc never returns, and nothing written there persists.
const pseudoFileSystems = new Map<number, string>([
  [0x9fa0, "proc"],
  [0x62656572, "sysfs"],
  [0x27e0eb, "cgroup"],
  [0x63677270, "cgroup2"],
  [0x64626720, "debugfs"],
  [0x73636673, "securityfs"]
])

/**
 * Refuses a path whose directories another user could swap: every directory
 * the path goes through (as written, and as resolved through symlinks), from
 * `start` up to the root, must belong to root or to this process's user, and
 * be writable by nobody else unless it has the sticky bit (as `/tmp`, where
 * nobody may rename another's entries); a group that is its owner's private
 * group (see `privateGroup`) is nobody else. Otherwise that user could move the
 * ledger's directory away and put a symlink to another directory of ours in
 * its place, and every later compaction (which resolves the path again)
 * would replace a file there.
 */
/**
 * Whether group `gid` has no member but user `uid` (a user-private group, as
 * most distributions give each user, with a umask of 002): then a directory
 * writable by that group is writable by nobody else. Read from /etc/passwd and
 * /etc/group, as OpenSSH does for its StrictModes; a group found nowhere
 * (NSS, LDAP) is not proven private.
 */
const privateGroup = (gid: number, uid: number): boolean => {
  try {
    const users = fs.readFileSync("/etc/passwd", "utf8").split("\n").map((l) => l.split(":"))
    const owner = users.find((f) => f.length > 3 && f[2] !== "" && Number(f[2]) === uid)
    if (owner === undefined) return false
    // Nobody else has it as primary group.
    if (users.some((f) => f.length > 3 && f[3] !== "" && Number(f[3]) === gid && Number(f[2]) !== uid)) return false
    const group = fs.readFileSync("/etc/group", "utf8").split("\n").map((l) => l.split(":"))
      .find((f) => f.length > 3 && f[2] !== "" && Number(f[2]) === gid)
    if (group === undefined) return false
    const members = group[3]!.trim().split(",").filter((m) => m !== "")
    // No one else is listed in it, and the owner is in it (a group of no one is a setgid program's).
    return members.every((m) => m === owner[0]) && (Number(owner[3]) === gid || members.length === 1)
  } catch {
    return false
  }
}

const checkAncestors = (start: string) => {
  if (euid === undefined) return
  let real: string
  try {
    real = fs.realpathSync(start)
  } catch (error) {
    throw new Refused(`cannot resolve directory ${start}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`)
  }
  for (const chain of real === start ? [start] : [start, real]) {
    let current = chain
    while (true) {
      // A symlink on the way is as good as its owner: in a sticky directory, its owner can replace it.
      const link = fs.lstatSync(current)
      if (link.isSymbolicLink() && link.uid !== 0 && link.uid !== euid) {
        throw new Refused(
          `${current}, on the way to the ledger's directory, is a symlink owned by uid ${link.uid}: that user could point it elsewhere; use the real path`
        )
      }
      const stat = fs.statSync(current)
      if (stat.uid !== 0 && stat.uid !== euid) {
        throw new Refused(
          `${current}, a parent of the ledger's directory, is owned by uid ${stat.uid}: that user could replace the directories below it; use a path whose parents belong to root or to uid ${euid}`
        )
      }
      const othersWrite = (stat.mode & 0o002) !== 0 || ((stat.mode & 0o020) !== 0 && !privateGroup(stat.gid, stat.uid))
      if (othersWrite && (stat.mode & 0o1000) === 0) {
        const mode = (stat.mode & 0o7777).toString(8)
        throw new Refused(
          `${current}, a parent of the ledger's directory, is writable by other users without the sticky bit (mode ${mode}): they could move the directories below it away and plant others; chmod go-w ${current} (or +t), or use a private path`
        )
      }
      const parent = path.dirname(current)
      if (parent === current) break
      current = parent
    }
  }
}

/**
 * Makes sure the ledger's directory exists and is ours: a real directory
 * (no symlink), owned by this process's user, writable by nobody else, below
 * parents nobody else can change (see `checkAncestors`). Missing directories
 * are created 0700, below a nearest existing ancestor that must be a
 * directory on a real file system.
 */
export const prepareDirectory = (dir: string) => {
  let existing = dir
  while (true) {
    try {
      const stat = fs.statSync(existing)
      if (!stat.isDirectory()) throw new Refused(`${existing} is not a directory`)
      break
    } catch (error) {
      if (error instanceof Refused) throw error
      const code = (error as NodeJS.ErrnoException).code
      const parent = path.dirname(existing)
      if ((code !== "ENOENT" && code !== "ENOTDIR") || parent === existing) {
        throw new Refused(`cannot use directory ${existing}: ${code ?? String(error)}`)
      }
      existing = parent
    }
  }
  let fsType: number | undefined
  try {
    fsType = fs.statfsSync(existing).type
  } catch {
    // statfs is not available everywhere: the checks below still apply
  }
  const pseudo = fsType === undefined ? undefined : pseudoFileSystems.get(fsType)
  if (pseudo !== undefined) {
    throw new Refused(`${existing} is on the ${pseudo} pseudo file system, which cannot hold a ledger`)
  }
  checkAncestors(existing === dir ? path.dirname(dir) : existing)
  if (existing !== dir) {
    try {
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
    } catch (error) {
      throw new Refused(`cannot create directory ${dir}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`)
    }
  }
  const why = distrust(dir, fs.lstatSync(dir), "directory")
  if (why !== undefined) throw new Refused(why)
  try {
    fs.accessSync(dir, fs.constants.W_OK)
  } catch {
    throw new Refused(`directory ${dir} is not writable`)
  }
}

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

/** A pid is in use (by anyone: EPERM counts). */
export const pidAlive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM"
  }
}

/**
 * Removes what hosts that died mid-compaction or mid-lock left next to the
 * ledger: only regular files of ours, named as we name them, whose creating
 * pid is no longer alive (a live pid may be a host creating its lock now).
 */
export const removeStrayTemporaries = (file: string): Array<string> => {
  const dir = path.dirname(file)
  const base = escapeRegExp(path.basename(file))
  const patterns = [
    new RegExp(`^${base}\\.tmp-(\\d+)(?:-[0-9a-f]{16})?$`),
    new RegExp(`^${base}\\.lock\\.(\\d+)(?:-[0-9a-f]{16})?\\.tmp$`),
    new RegExp(`^${base}\\.lock\\.stale-(\\d+)(?:-[0-9a-f]{16})?$`)
  ]
  const removed: Array<string> = []
  for (const name of fs.readdirSync(dir)) {
    const match = patterns.map((p) => p.exec(name)).find((m) => m !== null)
    if (match === undefined || match === null) continue
    const pid = Number(match[1])
    if (pid !== process.pid && pidAlive(pid)) continue
    const full = path.join(dir, name)
    try {
      const stat = fs.lstatSync(full)
      if (!stat.isFile() || (euid !== undefined && stat.uid !== euid)) continue
      fs.unlinkSync(full)
      removed.push(full)
    } catch {
      // gone meanwhile
    }
  }
  return removed
}
