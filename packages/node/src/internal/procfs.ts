/**
 * Reading `/proc`: stat lines, cookies, owners, command lines, with one
 * reused buffer (shared by the `/proc` table, the ledger and the sentinel).
 */
import * as Membership from "@shepherd/core/Membership"
import * as fs from "node:fs"

/** The fields of `/proc/<pid>/stat` that Shepherd uses. */
export interface Stat {
  readonly pid: number
  readonly state: string
  readonly ppid: number
  readonly pgid: number
  readonly sid: number
  /** Field 9: the kernel's `PF_*` flags of the task. */
  readonly flags: number
  /** Field 22: start time in clock ticks since boot, kept as text (exact). */
  readonly startTime: string
}

/** Parses `/proc/<pid>/stat`; the command name may contain spaces and parentheses, so split after the last `)`. */
export const parseStat = (pid: number, text: string): Stat | undefined => {
  const close = text.lastIndexOf(")")
  if (close < 0) return undefined
  // Fields after the comm: 3=state 4=ppid 5=pgrp 6=session 9=flags ... 22=starttime. Walked, not split: a
  // scan reads this for every process, and the 52 fields of a split are mostly garbage.
  const fields: Array<string> = []
  let at = close + 2
  while (fields.length < 20) {
    const space = text.indexOf(" ", at)
    if (space < 0) {
      if (fields.length === 19 && at < text.length) fields.push(text.slice(at).trimEnd())
      break
    }
    if (fields.length < 4 || fields.length === 6 || fields.length === 19) fields.push(text.slice(at, space))
    else fields.push("")
    at = space + 1
  }
  const startTime = fields[19]
  if (fields.length < 20 || startTime === undefined || startTime === "") return undefined
  return {
    pid,
    state: fields[0]!,
    ppid: Number(fields[1]),
    pgid: Number(fields[2]),
    sid: Number(fields[3]),
    flags: Number(fields[6]),
    startTime
  }
}

// `/proc` files report size 0, so `readFileSync` stats, allocates 64 KiB chunks and concatenates:
// about 40 µs per file here. One reused buffer and a plain read(2) cost a third of that, and this
// runs for every process on the machine in a scan.
let scratch = Buffer.allocUnsafe(64 * 1024)

/**
 * A `/proc` file could not be read for another reason than the process being
 * gone (EMFILE, EACCES, ...): nothing can be concluded about that process.
 */
export class Unreadable extends Error {}

const gone = (error: unknown) => {
  const code = (error as NodeJS.ErrnoException).code
  return code === "ENOENT" || code === "ESRCH"
}

/**
 * Reads `fd` whole into the shared scratch buffer (growing it), from offset 0
 * when `fromStart` (a file kept open), else from where it stands; returns the byte count.
 */
const readAll = (fd: number, fromStart: boolean): number => {
  let length = 0
  while (true) {
    if (length === scratch.length) {
      const bigger = Buffer.allocUnsafe(scratch.length * 2)
      scratch.copy(bigger, 0, 0, length)
      scratch = bigger
    }
    const n = fs.readSync(fd, scratch, length, scratch.length - length, fromStart ? length : null)
    if (n === 0) return length
    length += n
  }
}

/** Reads a whole `/proc` file into the shared scratch buffer; returns the byte count, -1 if the process is gone. */
const readProc = (path: string): number => {
  let fd: number
  try {
    fd = fs.openSync(path, "r")
  } catch (error) {
    if (gone(error)) return -1
    throw new Unreadable(`${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`)
  }
  try {
    return readAll(fd, false)
  } catch (error) {
    if (gone(error)) return -1
    throw new Unreadable(`${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`)
  } finally {
    fs.closeSync(fd)
  }
}

/** The process's stat line; `undefined` when it is gone; throws `Unreadable` when that cannot be told. */
export const readStat = (pid: number): Stat | undefined => {
  const n = readProc(`/proc/${pid}/stat`)
  return n < 0 ? undefined : parseStat(pid, scratch.toString("latin1", 0, n))
}

/**
 * Opens `/proc/<pid>/stat` to be read again (`readOpenStat`): the descriptor names that process,
 * not its pid. Once the process is reaped it reads ESRCH, even if the pid names another process by
 * then (what a pidfd gives, from a file Node can open). `undefined` when it cannot be opened.
 */
export const openStat = (pid: number): number | undefined => {
  try {
    return fs.openSync(`/proc/${pid}/stat`, "r")
  } catch {
    return undefined
  }
}

/**
 * The stat line read again through an `openStat` descriptor, `undefined` once its process is reaped;
 * throws `Unreadable` when that cannot be told.
 */
export const readOpenStatText = (fd: number): string | undefined => {
  let n: number
  try {
    // One read from the start: a stat line is far shorter than the scratch buffer.
    n = fs.readSync(fd, scratch, 0, scratch.length, 0)
    if (n === scratch.length) n = readAll(fd, true)
  } catch (error) {
    if (gone(error)) return undefined
    throw new Unreadable(`stat descriptor ${fd}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`)
  }
  return scratch.toString("latin1", 0, n)
}

/**
 * The state letter (field 3) of an `openStat` descriptor's process, `undefined` once it is reaped;
 * throws `Unreadable`. The cheap look a signal takes: one read, no parse.
 */
export const readOpenState = (fd: number): string | undefined => {
  let n: number
  try {
    n = fs.readSync(fd, scratch, 0, 4096, 0)
  } catch (error) {
    if (gone(error)) return undefined
    throw new Unreadable(`stat descriptor ${fd}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`)
  }
  // The command name ends at the last ")" (a byte loop: Buffer#lastIndexOf costs more than the read).
  let close = n - 1
  while (close >= 0 && scratch[close] !== 0x29) close--
  if (close < 0 || close + 2 >= n) throw new Unreadable(`stat descriptor ${fd}: no state`)
  return String.fromCharCode(scratch[close + 2]!)
}

/** The stat of an `openStat` descriptor's process, `undefined` once it is reaped; throws `Unreadable`. */
export const readOpenStat = (fd: number, pid: number): Stat | undefined => {
  const text = readOpenStatText(fd)
  return text === undefined ? undefined : parseStat(pid, text)
}

/** The number of threads of a process, `undefined` if they cannot be counted. */
export const threadCount = (pid: number): number | undefined => {
  try {
    return fs.readdirSync(`/proc/${pid}/task`).length
  } catch {
    return undefined
  }
}

/** Dead as `Membership.isDead` says; the threads are counted only for a zombie. */
export const isDead = (stat: Stat): boolean => isDeadState(stat.pid, stat.state)

/** `isDead` from a state letter alone (the threads of `pid` are counted only for a zombie). */
export const isDeadState = (pid: number, state: string): boolean =>
  Membership.isDead(state, state === "Z" ? threadCount(pid) : undefined)

/**
 * A look at a pid for the membership rules (`Membership.Observe`): its stat
 * (with the thread count of a zombie), `undefined` when it is gone,
 * `"unreadable"` when that cannot be told.
 */
export const observe = (pid: number): Membership.Observation => {
  let stat: Stat | undefined
  try {
    stat = readStat(pid)
  } catch {
    return "unreadable"
  }
  return stat?.state === "Z" ? { startTime: stat.startTime, state: stat.state, threads: threadCount(pid) } : stat
}

export const readBootId = (): string => {
  try {
    return fs.readFileSync("/proc/sys/kernel/random/boot_id", "latin1").trim()
  } catch {
    return "unknown-boot"
  }
}

const cookiePrefix = Buffer.from("SHEPHERD_ID=")
/** `PF_EXITING` and `PF_KTHREAD` of `include/linux/sched.h`. */
const pfExiting = 0x4
const pfKthread = 0x200000
const pause = new Int32Array(new SharedArrayBuffer(4))
/** How many pauses `readCookie` took waiting for an environment (tests read it). */
export const pauses = { taken: 0 }

/** When the current synchronous run's pausing must end (performance.now()), once it paused. */
let pauseBudgetEnd: number | undefined
const pauseAllowed = (): boolean => {
  const now = performance.now()
  if (pauseBudgetEnd === undefined) {
    pauseBudgetEnd = now + 10
    queueMicrotask(() => {
      pauseBudgetEnd = undefined
    })
  }
  return now < pauseBudgetEnd
}

/**
 * Whether a process whose environment reads empty has one to come: `true`
 * while it is inside `execve()` (the kernel shows no environment between
 * `exec_mmap()` and `create_elf_tables()`, where its `env_end`, field 51 of
 * `/proc/<pid>/stat`, is still 0, and inside `create_elf_tables()`, where
 * the bounds are equal but no code is mapped yet), `false` when it really has
 * none (started with `env -i`), or is gone, dead, exiting or a kernel thread.
 * `undefined`: its environment has been set up since the read, so reading it
 * again now tells.
 */
const environmentPending = (pid: number): boolean | undefined => {
  const n = readProc(`/proc/${pid}/stat`)
  if (n < 0) return false
  const text = scratch.toString("latin1", 0, n)
  const stat = parseStat(pid, text)
  if (stat === undefined || isDead(stat) || (stat.flags & pfKthread) !== 0) return false
  // Fields 3.. after the command name; env_start and env_end are fields 50 and 51 (Linux 3.5+).
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ")
  // An exiting leader whose group still has another thread (field 20) may be in de_thread(): that
  // thread is inside execve() and takes over this pid (and its start time) with the new environment.
  if ((stat.flags & pfExiting) !== 0) return Number(fields[20 - 3]) > 1
  const envStart = fields[50 - 3]
  const envEnd = fields[51 - 3]
  if (envStart === undefined || envEnd === undefined) return true // an old kernel: look again
  if (envEnd === "0") return true
  if (envStart !== envEnd) return undefined
  // Equal bounds are not yet "none": create_elf_tables() sets env_start = env_end before its envp
  // loop and the final env_end after it, and load_elf_binary() sets start_code (field 26) only
  // after that. A process whose exec has completed has a start_code; one still inside has 0.
  return fields[26 - 3] === "0" ? true : false
}

/**
 * The `SHEPHERD_ID` in a process's environment at its last exec; `undefined`
 * when it has none (or is gone), `null` when that cannot be told (another
 * user's process; an exec that takes longer than the look-again). An empty one
 * of a process inside `execve()` is looked at again until the kernel has set it up.
 */
export const readCookie = (pid: number): string | undefined | null => {
  let n: number
  try {
    n = readProc(`/proc/${pid}/environ`)
    // A live process inside execve() shows an empty environment until the kernel has set up the
    // new one (and, while another of its threads execs, none at all: ESRCH, as if gone): judged
    // then, a descendant with the tree's cookie would pass for one without. The kernel's own
    // bounds tell that case from a process that has none (`env -i`, paid nothing). The wait blocks
    // the host, so it is bounded twice: about 2 ms per process, and 10 ms for all the processes one
    // scan (one synchronous run) meets inside an exec, however many a fork-heavy machine has. What
    // outlasts it (a loaded machine, a cold disk) cannot be told yet: `null`, which nobody
    // remembers, so the next scan or reaper tick reads it again.
    let pending: boolean | undefined
    for (let tries = 0; n <= 0 && tries < 40; tries++) {
      pending = environmentPending(pid)
      if (pending === false) return undefined
      if (pending === true) {
        if (!pauseAllowed()) break
        pauses.taken++
        Atomics.wait(pause, 0, 0, 0.05)
      }
      n = readProc(`/proc/${pid}/environ`)
    }
    if (n <= 0 && pending === true) return null
  } catch {
    return null
  }
  if (n <= 0) return undefined
  const env = scratch.subarray(0, n)
  let at = env.indexOf(cookiePrefix)
  while (at > 0 && env[at - 1] !== 0) at = env.indexOf(cookiePrefix, at + 1)
  if (at < 0) return undefined
  const end = env.indexOf(0, at)
  return env.toString("latin1", at + cookiePrefix.length, end < 0 ? n : end)
}

export const listPids = (): Array<number> => {
  const pids: Array<number> = []
  for (const name of fs.readdirSync("/proc")) {
    const c = name.charCodeAt(0)
    if (c >= 48 && c <= 57) pids.push(Number(name))
  }
  return pids
}

/**
 * Where the kernel's pid allocation stands: the last pid handed out in this
 * pid namespace, and the number of forks (threads included) since boot.
 * Between two readings, only pids in `(last₀, last₁]` (wrapping at
 * `pid_max`) can have been handed to a new process, unless so many forks
 * happened that the range went round. `undefined` when either cannot be read.
 */
export interface PidClock {
  readonly lastPid: number
  readonly forks: number
}

/**
 * The two clock files stay open and are read again from offset 0 (the kernel regenerates them on
 * every read at 0): a pool reads the clock at every tree's end, and an open and a close are most
 * of the cost of reading a file this small.
 */
const clockFiles = new Map<string, number>()

const readAgain = (path: string): number => {
  let fd = clockFiles.get(path)
  if (fd === undefined) {
    fd = fs.openSync(path, "r")
    clockFiles.set(path, fd)
  }
  try {
    return readAll(fd, true)
  } catch (error) {
    clockFiles.delete(path)
    fs.closeSync(fd)
    throw error
  }
}

/** Successful forks since boot, threads included (`processes` in `/proc/stat`); `undefined` when unreadable. */
export const readForks = (): number | undefined => {
  try {
    const n = readAgain("/proc/stat")
    // Only the `processes` line, read from the bytes (the file is long on a machine with many CPUs).
    const at = scratch.subarray(0, n).indexOf("\nprocesses ", 0, "latin1")
    const end = at < 0 ? -1 : scratch.subarray(0, n).indexOf(10, at + 1)
    const forks = at < 0 || end < 0 ? Number.NaN : Number(scratch.toString("latin1", at + 11, end))
    return Number.isSafeInteger(forks) ? forks : undefined
  } catch {
    return undefined
  }
}

/**
 * The last pid handed out in this pid namespace (`/proc/sys/kernel/ns_last_pid`, kept open), or
 * `undefined`. It moves with every pid allocated (a failed clone's too), so while it stands no
 * process has been created since it was read.
 */
export const readLastPid = (): number | undefined => {
  try {
    const n = readAgain("/proc/sys/kernel/ns_last_pid")
    const lastPid = Number(scratch.toString("latin1", 0, n).trim())
    return Number.isSafeInteger(lastPid) ? lastPid : undefined
  } catch {
    return undefined
  }
}

/** Reads the `PidClock`. */
export const readPidClock = (): PidClock | undefined => {
  try {
    const lastPid = readLastPid()
    const forks = readForks()
    return lastPid !== undefined && forks !== undefined ? { lastPid, forks } : undefined
  } catch {
    return undefined
  }
}

/** `/proc/sys/kernel/pid_max` (the Linux default, 4194304, if it cannot be read). */
export const readPidMax = (): number => {
  try {
    const value = Number(fs.readFileSync("/proc/sys/kernel/pid_max", "latin1").trim())
    return Number.isSafeInteger(value) && value > 0 ? value : 4_194_304
  } catch {
    return 4_194_304
  }
}

/**
 * The real uid of a process (the `Uid:` line of `/proc/<pid>/status`; the
 * owner of `/proc/<pid>` is root for non-dumpable processes), or undefined.
 */
export const ownerUid = (pid: number): number | undefined => {
  try {
    const n = readProc(`/proc/${pid}/status`)
    if (n < 0) return undefined
    const text = scratch.toString("latin1", 0, n)
    const at = text.indexOf("\nUid:")
    return at < 0 ? undefined : Number(text.slice(at + 5).trim().split(/\s+/)[0])
  } catch {
    return undefined
  }
}

/** The command line of a process, space-joined, or "" if it is gone. */
export const readCmdline = (pid: number): string => {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "latin1").replace(/\0+$/, "").replace(/\0/g, " ")
  } catch {
    return ""
  }
}

/** Resident set size in KiB (field 24 of stat is in pages; statm's second field too). */
export const readRssKiB = (pid: number): number => {
  try {
    const pages = Number(fs.readFileSync(`/proc/${pid}/statm`, "latin1").split(" ")[1])
    return Math.round((pages * pageSize) / 1024)
  } catch {
    return 0
  }
}

const pageSize = 4096
