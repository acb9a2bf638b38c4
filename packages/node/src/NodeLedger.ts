/**
 * The file ledger: one JSON line per event, appended whole (no rewrite of
 * the file per event; a write that does not complete is cut back to the last
 * whole line and fails), compacted atomically (temporary file + rename) when
 * it grows, owned by one host at a time through a lock file that carries the
 * owner's identity and executable.
 *
 * Trust: the ledger is used only in a directory of the host's user that no
 * other user can write, only as a regular file of that user that holds ledger
 * records (or is empty or absent); anything else is refused with a
 * `LedgerError` and left untouched. Nothing is opened through a symlink or
 * waited on as a FIFO; temporary and lock files are created exclusively under
 * unpredictable names.
 *
 * Durability: an appended line is in the kernel once `write` returns, so it
 * survives the host being SIGKILLed or OOM-killed; it is not fsynced per
 * event (a machine crash kills the children too, and the ledger of the
 * previous boot is then ignored by identity).
 *
 * @since 0.1.0
 */
import { Ledger, LedgerError, LedgerLocked, LedgerRecord, State } from "@shepherd/core/Ledger"
import type { Entry, OpenReport } from "@shepherd/core/Ledger"
import * as ProcessIdentity from "@shepherd/core/ProcessIdentity"
import * as Metrics from "@shepherd/core/Metrics"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { identify } from "./NodeProcessTable.ts"
import * as procfs from "./internal/procfs.ts"

/**
 * The default ledger path for a pool name:
 * `$XDG_STATE_HOME/shepherd/<name>.ledger`, else `~/.local/state/shepherd/<name>.ledger`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const defaultPath = (name: string): string => {
  const state = process.env.XDG_STATE_HOME !== undefined && process.env.XDG_STATE_HOME !== ""
    ? process.env.XDG_STATE_HOME
    : path.join(os.homedir(), ".local", "state")
  return path.join(state, "shepherd", `${name}.ledger`)
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly path: string
  /** Compact when this many events were appended since the last compaction (default 1000). */
  readonly compactEvery?: number | undefined
  /**
   * `false`: never rewrite the file (no compaction, no quarantine; records are
   * only appended), for tools that record exits in a ledger they do not own
   * for long (`shepherd reap`). Default `true`.
   */
  readonly rewrite?: boolean | undefined
}

// `JSON.parse` and then the record schema: three times faster than decoding `LedgerLine` (the
// same check) on a 100,000-line ledger.
const decodeRecord = Schema.decodeUnknownSync(LedgerRecord)
const decodeLine = (line: string): LedgerRecord => decodeRecord(JSON.parse(line))

/**
 * Parses a ledger file's text. A last line without its newline that is not a
 * record is torn (the host died mid-write).
 *
 * @since 0.1.0
 * @category parsing
 */
export const parse = (text: string): { records: Array<LedgerRecord>; badLines: number; tornLine: boolean } => {
  const records: Array<LedgerRecord> = []
  let badLines = 0
  let tornLine = false
  const lines = text.split("\n")
  const last = lines.pop() ?? ""
  for (const line of lines) {
    if (line.trim() === "") continue
    try {
      records.push(decodeLine(line))
    } catch {
      badLines++
    }
  }
  if (last.trim() !== "") {
    try {
      records.push(decodeLine(last))
    } catch {
      tornLine = true
    }
  }
  return { records, badLines, tornLine }
}

const { O_APPEND, O_CREAT, O_EXCL, O_RDONLY, O_WRONLY } = fs.constants
// Windows has neither (nor symlinks an attacker could plant there without privileges).
const O_NOFOLLOW = fs.constants.O_NOFOLLOW ?? 0
const O_NONBLOCK = fs.constants.O_NONBLOCK ?? 0
const euid = process.geteuid?.()

/** A file or directory we may not trust (or use); `reason` is the message for the operator. */
class Refused extends Error {}

/** Why `stat` (of `name`) is not a file or directory of ours, if it is not. */
const distrust = (name: string, stat: fs.Stats, kind: "file" | "directory"): string | undefined => {
  if (stat.isSymbolicLink()) return `${name} is a symlink: point the ledger at the real ${kind}`
  if (kind === "file" && !stat.isFile()) return `${name} is not a regular file (${describeType(stat)}): remove it or choose another path`
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
  stat.isFIFO() ? "a FIFO" : stat.isSocket() ? "a socket" : stat.isDirectory() ? "a directory" : stat.isCharacterDevice() || stat.isBlockDevice() ? "a device" : "not a file"

/**
 * Opens an existing file without following a symlink or blocking on a FIFO,
 * and checks the opened descriptor (not the name, which could be swapped
 * meanwhile). `undefined` when there is no such file.
 */
const openOwned = (file: string, flags: number, owner: "ours" | "any" = "ours"): number | undefined => {
  let fd: number
  try {
    fd = fs.openSync(file, flags | O_NOFOLLOW | O_NONBLOCK)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === "ENOENT") return undefined
    if (code === "ELOOP" || code === "EMLINK") throw new Refused(`${file} is a symlink: point the ledger at the real file`)
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
const writeAll = (fd: number, data: Buffer) => {
  let offset = 0
  while (offset < data.length) {
    const n = fs.writeSync(fd, data, offset, data.length - offset)
    if (n <= 0) throw new Error(`short write: ${offset} of ${data.length} bytes`)
    offset += n
  }
}

/** Unpredictable, and carrying our pid so that stray files of dead hosts can be told apart. */
const tempSuffix = () => `${process.pid}-${crypto.randomBytes(8).toString("hex")}`

/** Creates `file` (which must not exist: no symlink is followed) with `data`, synced. */
const createExclusive = (file: string, data: Buffer) => {
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

const writeAtomically = (file: string, text: string) => {
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

const encode = (record: LedgerRecord) => `${JSON.stringify(record)}\n`

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
const prepareDirectory = (dir: string) => {
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
  if (pseudo !== undefined) throw new Refused(`${existing} is on the ${pseudo} pseudo file system, which cannot hold a ledger`)
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

/** The ledger file as found: its text and how to tell later whether it changed. */
interface Found {
  readonly text: string
  readonly exists: boolean
  readonly version: string
  /** The file's owner, when it exists. */
  readonly uid?: number | undefined
}

const readLedgerFile = (file: string, owner: "ours" | "any" = "ours"): Found => {
  const fd = openOwned(file, O_RDONLY, owner)
  if (fd === undefined) return { text: "", exists: false, version: "none" }
  try {
    const stat = fs.fstatSync(fd)
    return { text: fs.readFileSync(fd, "utf8"), exists: true, version: `${stat.ino}:${stat.size}:${stat.mtimeMs}`, uid: stat.uid }
  } finally {
    fs.closeSync(fd)
  }
}

/**
 * A file with content but not one ledger record is not ours to rewrite: it is refused untouched.
 * The message describes the file without quoting it: a ledger path pointed at the wrong file (a
 * `.env`, a key) must not copy its first bytes into logs and terminals.
 */
const notALedger = (file: string, text: string, parsed: ReturnType<typeof parse>) =>
  parsed.records.length === 0 && text.trim() !== ""
    ? `${file} is not a Shepherd ledger (none of its ${parsed.badLines + (parsed.tornLine ? 1 : 0)} line(s), ${
      Buffer.byteLength(text)
    } bytes, is a ledger record): it is left untouched; check the path`
    : undefined

/**
 * What a lock file records: the owner's identity, a random token (this lock
 * and no other), and the owner's executable, which a live process must still
 * run to count as the owner.
 */
interface LockRecord extends ProcessIdentity.ProcessIdentity {
  readonly token?: string | undefined
  readonly exe?: string | undefined
}

type LockState =
  | { readonly _tag: "Missing" }
  | { readonly _tag: "Corrupt"; readonly ageMs: number }
  | { readonly _tag: "Valid"; readonly owner: LockRecord }

/** How long an unreadable lock is left alone: a host of an older version may be writing it. */
const corruptLockGraceMs = 10_000

const readLock = (lockFile: string, owner: "ours" | "any" = "ours"): LockState => {
  const fd = openOwned(lockFile, O_RDONLY, owner)
  if (fd === undefined) return { _tag: "Missing" }
  try {
    const ageMs = Date.now() - fs.fstatSync(fd).mtimeMs
    try {
      const record = JSON.parse(fs.readFileSync(fd, "utf8")) as LockRecord
      if (Number.isInteger(record.pid) && typeof record.startTime === "string" && typeof record.bootId === "string") {
        return { _tag: "Valid", owner: record }
      }
    } catch {
      // unparsable: corrupt
    }
    return { _tag: "Corrupt", ageMs }
  } finally {
    fs.closeSync(fd)
  }
}

const hasProc = fs.existsSync("/proc/self/stat")

/** The executable of a process (`undefined` when it cannot be read: a kernel thread, another user's process). */
const exeOf = (pid: number | "self"): string | undefined => {
  try {
    return fs.readlinkSync(`/proc/${pid}/exe`).replace(/ \(deleted\)$/, "")
  } catch {
    return undefined
  }
}

type OwnerState = "live" | "gone" | { readonly notAHost: string }

/**
 * Whether the lock's owner still holds it: the recorded process is alive
 * (same pid, start time and boot) *and* there is evidence that it is the
 * Shepherd host that wrote the lock: it runs as the ledger's user
 * (`hostUid`: ours when we would own the ledger; the file's owner when we
 * only look at it) and still runs the executable the lock recorded. Any
 * other live process with that identity (pid 1, a process whose pid a lock
 * was copied from) is not an owner.
 */
const ownerState = (owner: LockRecord, bootId: string, hostUid: number | undefined = euid): OwnerState => {
  if (!hasProc) {
    // No start times to compare: a live pid is taken for the owner (erring towards LedgerLocked).
    try {
      process.kill(owner.pid, 0)
      return "live"
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === "EPERM" ? "live" : "gone"
    }
  }
  if (owner.bootId !== bootId) return "gone"
  let stat: ReturnType<typeof procfs.readStat>
  try {
    stat = procfs.readStat(owner.pid)
  } catch {
    return "live" // cannot tell: assume the owner lives (LedgerLocked) rather than share the ledger
  }
  if (stat === undefined || stat.startTime !== owner.startTime || procfs.isDead(stat)) return "gone"
  const uid = procfs.ownerUid(owner.pid)
  if (hostUid !== undefined && uid !== undefined && uid !== hostUid) {
    return { notAHost: `pid ${owner.pid} is alive but runs as uid ${uid}, not as the ledger's user (uid ${hostUid})` }
  }
  const exe = exeOf(owner.pid)
  // A live process of our (non-root) user whose executable we cannot read is not told apart from
  // the owner: a host is non-dumpable when its node binary has file capabilities (`setcap
  // cap_net_bind_service`), and then only a ptrace-capable process may read its `/proc/<pid>/exe`.
  if (exe === undefined && owner.exe !== undefined && euid !== 0 && uid === hostUid) return "live"
  if (owner.exe === undefined || exe !== owner.exe) {
    return {
      notAHost: `pid ${owner.pid} is alive but runs ${exe ?? "an unreadable executable"}, not the Shepherd host ${
        owner.exe ?? "(the lock records no executable)"
      } that wrote the lock`
    }
  }
  return "live"
}

const identityOf = (owner: LockRecord): ProcessIdentity.ProcessIdentity => ({
  pid: owner.pid,
  startTime: owner.startTime,
  bootId: owner.bootId
})

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

const pidAlive = (pid: number) => {
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
const removeStrayTemporaries = (file: string): Array<string> => {
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

/**
 * Opens (and locks) a file ledger for the lifetime of the current scope.
 *
 * **Details**
 *
 * The ledger's directory must be a real directory owned by this process's
 * user and writable by nobody else, and the ledger a regular file of that
 * user holding ledger records (or empty, or absent: it is created 0600).
 * Anything else fails with a `LedgerError` saying why and how to fix it, and
 * is left untouched. A ledger with unparsable lines (a torn last line
 * included) is kept aside as `<ledger>.corrupt-<time>` (reported in
 * `opened.quarantined` and logged) before the pool rewrites it.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options) =>
  Effect.acquireRelease(
    Effect.try({
      try: () => open(options),
      catch: (error) =>
        error instanceof LedgerLocked || error instanceof LedgerError
          ? error
          : new LedgerError({ path: path.resolve(options.path), reason: error instanceof Refused ? error.message : String(error) })
    }),
    (handle) => Effect.sync(() => handle.close())
  ).pipe(
    Effect.tap((handle) => {
      const { quarantined, removed, takeover } = handle
      const where = `ledger ${handle.service.path}`
      return Effect.all([
        quarantined === undefined
          ? Effect.void
          : Effect.logWarning(`${where}: unparsable lines; the ledger as found is kept at ${quarantined}`),
        takeover === undefined ? Effect.void : Effect.logInfo(`${where}: lock taken over: ${takeover}`),
        removed.length === 0
          ? Effect.void
          : Effect.logInfo(`${where}: removed temporary files of dead hosts: ${removed.join(", ")}`)
      ], { discard: true })
    }),
    Effect.map((handle) => handle.service)
  )

const open = (options: Options) => {
  const file = path.resolve(options.path)
  const dir = path.dirname(file)
  const lockFile = `${file}.lock`
  const compactEvery = options.compactEvery ?? 1000
  const rewrite = options.rewrite ?? true
  const fail = (reason: string) => new LedgerError({ path: file, reason })
  prepareDirectory(dir)
  const host = identify(process.pid) ?? { pid: process.pid, startTime: "0", bootId: "unknown" }
  const bootId = host.bootId

  // Proven a ledger before anything is created next to it.
  let found = readLedgerFile(file)
  let parsed = parse(found.text)
  const refusal = notALedger(file, found.text, parsed)
  if (refusal !== undefined) throw fail(refusal)

  // The lock. It appears complete or not at all (written aside under an unpredictable name, then
  // hard-linked into place, which fails if a lock exists), so nobody ever reads a half-written one.
  // A lock whose owner is gone is moved aside by exactly one taker (rename), checked to be the lock
  // that was judged, and replaced the same way; whoever loses a race gets LedgerLocked.
  const lock: LockRecord = { ...host, token: crypto.randomBytes(16).toString("hex"), exe: exeOf("self") }
  let tookOverFrom: ProcessIdentity.ProcessIdentity | undefined
  let takeover: string | undefined
  const locked = (state: LockState) =>
    state._tag === "Valid"
      ? new LedgerLocked({ path: file, ownerPid: state.owner.pid, owner: identityOf(state.owner) })
      : new LedgerLocked({
        path: file,
        ownerPid: -1,
        owner: host,
        reason: state._tag === "Corrupt"
          ? `the lock ${lockFile} is unreadable and only ${Math.round(state.ageMs / 1000)} s old (a host may be creating it); ` +
            `it is taken over once ${corruptLockGraceMs / 1000} s old, or remove it if no Shepherd host uses this ledger`
          : `another host took the lock ${lockFile} over at the same time; retry`
      })
  const createLock = (): boolean => {
    const tmp = `${lockFile}.${tempSuffix()}.tmp`
    createExclusive(tmp, Buffer.from(JSON.stringify(lock)))
    try {
      fs.linkSync(tmp, lockFile)
      return true
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "EEXIST") return false
      throw fail(`cannot create lock ${lockFile}: ${String(error)}`)
    } finally {
      fs.rmSync(tmp, { force: true })
    }
  }
  const sameLock = (a: LockState, b: LockState) =>
    a._tag === "Valid" ? b._tag === "Valid" && ProcessIdentity.same(a.owner, b.owner) && a.owner.token === b.owner.token : b._tag === "Corrupt"
  if (!createLock()) {
    const judged = readLock(lockFile)
    if (judged._tag === "Corrupt" && judged.ageMs < corruptLockGraceMs) throw locked(judged)
    if (judged._tag === "Valid") {
      const state = ownerState(judged.owner, bootId)
      if (state === "live") throw locked(judged)
      takeover = state === "gone" ? `its owner pid ${judged.owner.pid} is gone` : state.notAHost
    } else if (judged._tag === "Corrupt") {
      takeover = `it was unreadable for ${Math.round(judged.ageMs / 1000)} s`
    }
    if (judged._tag !== "Missing") {
      const aside = `${lockFile}.stale-${tempSuffix()}`
      try {
        fs.renameSync(lockFile, aside)
      } catch {
        throw locked(readLock(lockFile)) // another host took it over first
      }
      const moved = readLock(aside)
      if (!sameLock(judged, moved)) {
        // What we moved is not the lock we judged: someone took over meanwhile. Put it back.
        try {
          fs.linkSync(aside, lockFile)
        } catch {
          // a third host holds the lock now
        }
        fs.rmSync(aside, { force: true })
        throw locked(moved)
      }
      fs.rmSync(aside, { force: true })
      if (judged._tag === "Valid") tookOverFrom = identityOf(judged.owner)
    }
    if (!createLock()) throw locked(readLock(lockFile))
  }

  const releaseLock = () => {
    try {
      // Remove the lock only if it is still ours.
      const current = readLock(lockFile)
      if (current._tag === "Valid" && current.owner.token === lock.token) fs.unlinkSync(lockFile)
    } catch {
      // gone or unreadable: nothing to release
    }
  }

  let fd = -1
  let removed: Array<string> = []
  let quarantined: string | undefined
  let size = 0
  try {
    removed = removeStrayTemporaries(file)
    // Replay what is there now (a previous owner may have written since the first read).
    const now = readLedgerFile(file)
    if (now.version !== found.version) {
      found = now
      parsed = parse(found.text)
      const changed = notALedger(file, found.text, parsed)
      if (changed !== undefined) throw fail(changed)
    }
    if (rewrite && (parsed.badLines > 0 || parsed.tornLine)) {
      // Never dropped: the ledger as found is kept aside (a hard link, so it is never missing) before
      // it is rewritten from what could be parsed.
      quarantined = `${file}.corrupt-${new Date().toISOString().replace(/[:.]/g, "-")}-${crypto.randomBytes(2).toString("hex")}`
      fs.linkSync(file, quarantined)
    }
  } catch (error) {
    releaseLock()
    throw error
  }
  const state = new State()
  for (const record of parsed.records) state.apply(record)
  const opened: OpenReport = {
    path: file,
    tornLine: parsed.tornLine,
    badLines: parsed.badLines,
    quarantined,
    tookOverFrom
  }

  let lastCompaction: number | undefined
  let batch: Array<string> = []
  /**
   * Appends whole lines or nothing: a write that fails part-way (a full disk) is cut back to
   * the last whole line, so no later line is glued to a fragment.
   */
  let needsNewline = false
  const appendText = (text: string) => {
    const data = Buffer.from(needsNewline ? `\n${text}` : text)
    try {
      writeAll(fd, data)
    } catch (error) {
      try {
        fs.ftruncateSync(fd, size)
      } catch {
        // The fragment stays: the next line starts on a line of its own, and the length of what
        // is whole is read again after it.
        needsNewline = true
      }
      throw error
    }
    size = needsNewline ? fs.fstatSync(fd).size : size + data.length
    needsNewline = false
  }
  const flushBatch = () => {
    if (batch.length === 0 || fd < 0) return
    try {
      appendText(batch.join(""))
      batch = []
    } catch {
      // kept for the next write; the next append reports the failure, and a compaction writes
      // the state, which has every record
    }
  }
  const compactions = Metric.withAttributes(Metrics.ledgerCompactions, { ledger: file })
  const reopen = () => {
    if (fd >= 0) fs.closeSync(fd)
    fd = -1 // never write into a descriptor number the OS may have handed to someone else
    const opened = openOwned(file, O_WRONLY | O_APPEND)
    if (opened === undefined) throw new Error(`${file} disappeared`)
    fd = opened
    size = fs.fstatSync(fd).size
  }
  const compactNow = () => {
    if (!rewrite) return
    const text = state.compacted().map(encode).join("")
    writeAtomically(file, text)
    // The batch is superseded: the compacted file was written from the state, which has every record.
    batch = []
    reopen()
    state.events = 0
    lastCompaction = Date.now()
  }
  try {
    if (rewrite) {
      // Start from a clean file: drops what was kept aside and anything already exited.
      compactNow()
    } else {
      // Records are appended to the file as found; a torn last line is ended first.
      if (!found.exists) createExclusive(file, Buffer.alloc(0))
      reopen()
      needsNewline = found.text.length > 0 && !found.text.endsWith("\n")
    }
  } catch (error) {
    if (fd >= 0) fs.closeSync(fd)
    releaseLock()
    throw error
  }

  const service = Ledger.of({
    path: file,
    host,
    opened,
    append: (record) =>
      Effect.try({
        try: () => {
          // An intent must be on disk before the spawn it announces (and is applied only once it
          // is); the other records only refine what recovery would find anyway, so they are
          // written in one batch per event-loop turn (always before the next intent).
          if (record._tag === "Intent" || record._tag === "HostStarted" || record._tag === "HostStopped") {
            appendText(batch.join("") + encode(record))
            batch = []
            state.apply(record)
          } else {
            state.apply(record)
            batch.push(encode(record))
            if (batch.length === 1) setImmediate(flushBatch)
          }
          if (rewrite && state.events >= compactEvery && state.events > 2 * state.live.size) {
            compactNow()
            return true
          }
          return false
        },
        catch: (error) => fail(`append failed: ${String(error)}`)
      }).pipe(Effect.flatMap((compacted) => compacted ? Metric.update(compactions, 1) : Effect.void)),
    entries: Effect.sync(() => [...state.live.values()]),
    compact: Effect.try({ try: compactNow, catch: (error) => fail(`compaction failed: ${String(error)}`) }).pipe(
      Effect.andThen(rewrite ? Metric.update(compactions, 1) : Effect.void)
    ),
    lastCompaction: Effect.sync(() => lastCompaction)
  })

  const close = () => {
    flushBatch()
    try {
      if (fd >= 0) fs.closeSync(fd)
    } catch {
      // already closed
    }
    fd = -1
    releaseLock()
  }
  return { service, close, quarantined, removed, takeover }
}

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<Ledger, LedgerError | LedgerLocked> =>
  Layer.effect(Ledger, make(options))

/**
 * A read-only look at a ledger file (of a running or a dead host): no lock is
 * taken and nothing is rewritten.
 *
 * @since 0.1.0
 * @category models
 */
export interface Snapshot {
  readonly path: string
  readonly exists: boolean
  /** The lock's owner, and whether that exact process is still alive. */
  readonly owner?: { readonly identity: ProcessIdentity.ProcessIdentity; readonly alive: boolean } | undefined
  readonly entries: ReadonlyArray<Entry>
  /** Every pool id the ledger mentions. */
  readonly poolIds: ReadonlyArray<string>
  readonly tornLine: boolean
  readonly badLines: number
  readonly sizeBytes: number
  /** Quarantined copies next to the ledger (`<ledger>.corrupt-*`). */
  readonly quarantined: ReadonlyArray<string>
}

/**
 * Reads a ledger without owning it, and without changing anything. Fails with
 * `LedgerError` when the file exists but cannot be read, is not a regular
 * file (a FIFO is never waited on), or holds no ledger record.
 *
 * @since 0.1.0
 * @category constructors
 */
export const snapshot = (file: string): Effect.Effect<Snapshot, LedgerError> =>
  Effect.try({
    try: () => {
      const resolved = path.resolve(file)
      const bootId = procfs.readBootId()
      // Read-only, and by anyone: the file must be a regular file (never a FIFO to block on) but
      // need not be ours.
      const found = readLedgerFile(resolved, "any")
      const parsed = parse(found.text)
      const refusal = notALedger(resolved, found.text, parsed)
      if (refusal !== undefined) throw new Refused(refusal)
      const lock = readLock(`${resolved}.lock`, "any")
      const owner: Snapshot["owner"] = lock._tag !== "Valid"
        ? undefined
        : { identity: identityOf(lock.owner), alive: ownerState(lock.owner, bootId, found.uid ?? euid) === "live" }
      const state = new State()
      const poolIds = new Set<string>()
      for (const record of parsed.records) {
        state.apply(record)
        if (record._tag === "HostStarted" || record._tag === "Intent") poolIds.add(record.poolId)
      }
      let quarantined: Array<string> = []
      try {
        const base = path.basename(resolved)
        quarantined = fs.readdirSync(path.dirname(resolved))
          .filter((name) => name.startsWith(`${base}.corrupt-`))
          .map((name) => path.join(path.dirname(resolved), name))
      } catch {
        quarantined = []
      }
      return {
        path: resolved,
        exists: found.exists,
        owner,
        entries: [...state.live.values()],
        poolIds: [...poolIds],
        tornLine: parsed.tornLine,
        badLines: parsed.badLines,
        sizeBytes: Buffer.byteLength(found.text),
        quarantined
      }
    },
    catch: (error) =>
      new LedgerError({ path: path.resolve(file), reason: error instanceof Refused ? error.message : `cannot read: ${String(error)}` })
  })

/**
 * Every ledger in a directory (default: the state directory of `defaultPath`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const list = (dir: string = path.dirname(defaultPath("x"))): ReadonlyArray<string> => {
  try {
    return fs.readdirSync(dir).filter((name) => name.endsWith(".ledger")).map((name) => path.join(dir, name))
  } catch {
    return []
  }
}
