/**
 * The ledger's lock: one host owns a ledger at a time. The lock file carries
 * the owner's identity, a random token and its executable; a lock whose owner
 * is gone (or is a live process that is not the host that wrote it) is taken
 * over by exactly one taker.
 */
import { type LedgerError, LedgerLocked } from "@shepherd/core/Ledger"
import * as ProcessIdentity from "@shepherd/core/ProcessIdentity"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as procfs from "./procfs.ts"
import { createExclusive, euid, O_RDONLY, openOwned, tempSuffix } from "./safeFiles.ts"
/**
 * What a lock file records: the owner's identity, a random token (this lock
 * and no other), and the owner's executable, which a live process must still
 * run to count as the owner.
 */
export interface LockRecord extends ProcessIdentity.ProcessIdentity {
  readonly token?: string | undefined
  readonly exe?: string | undefined
}

export type LockState =
  | { readonly _tag: "Missing" }
  | { readonly _tag: "Corrupt"; readonly ageMs: number }
  | { readonly _tag: "Valid"; readonly owner: LockRecord }

/** How long an unreadable lock is left alone: a host of an older version may be writing it. */
export const corruptLockGraceMs = 10_000

/** Reads the lock file (see `openOwned` for `owner`). */
export const readLock = (lockFile: string, owner: "ours" | "any" = "ours"): LockState => {
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
export const exeOf = (pid: number | "self"): string | undefined => {
  try {
    return fs.readlinkSync(`/proc/${pid}/exe`).replace(/ \(deleted\)$/, "")
  } catch {
    return undefined
  }
}

export type OwnerState = "live" | "gone" | { readonly notAHost: string }

/**
 * Whether the lock's owner still holds it: the recorded process is alive
 * (same pid, start time and boot) *and* there is evidence that it is the
 * Shepherd host that wrote the lock: it runs as the ledger's user
 * (`hostUid`: ours when we would own the ledger; the file's owner when we
 * only look at it) and still runs the executable the lock recorded. Any
 * other live process with that identity (pid 1, a process whose pid a lock
 * was copied from) is not an owner.
 */
export const ownerState = (owner: LockRecord, bootId: string, hostUid: number | undefined = euid): OwnerState => {
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

/** The owner's identity, without the lock's own fields. */
export const identityOf = (owner: LockRecord): ProcessIdentity.ProcessIdentity => ({
  pid: owner.pid,
  startTime: owner.startTime,
  bootId: owner.bootId
})

/**
 * Takes the lock of ledger `file` for `host` (the owner's identity, in the boot
 * `host.bootId`), or fails with `LedgerLocked`. Returns what the open reports
 * (whom it took over from, and why) and how to release it.
 */
export const acquire = (
  file: string,
  host: ProcessIdentity.ProcessIdentity,
  fail: (reason: string) => LedgerError
) => {
  const lockFile = `${file}.lock`
  const bootId = host.bootId
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
          ? `the lock ${lockFile} is unreadable and only ${
            Math.round(state.ageMs / 1000)
          } s old (a host may be creating it); ` +
            `it is taken over once ${
              corruptLockGraceMs / 1000
            } s old, or remove it if no Shepherd host uses this ledger`
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
    a._tag === "Valid"
      ? b._tag === "Valid" && ProcessIdentity.same(a.owner, b.owner) && a.owner.token === b.owner.token
      : b._tag === "Corrupt"
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

  const release = () => {
    try {
      // Remove the lock only if it is still ours.
      const current = readLock(lockFile)
      if (current._tag === "Valid" && current.owner.token === lock.token) fs.unlinkSync(lockFile)
    } catch {
      // gone or unreadable: nothing to release
    }
  }

  return { tookOverFrom, takeover, release }
}
