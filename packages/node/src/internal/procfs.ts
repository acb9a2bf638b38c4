import * as fs from "node:fs"

/** The fields of `/proc/<pid>/stat` that Shepherd uses. */
export interface Stat {
  readonly pid: number
  readonly state: string
  readonly ppid: number
  readonly pgid: number
  readonly sid: number
  /** Field 22: start time in clock ticks since boot, kept as text (exact). */
  readonly startTime: string
}

/** Parses `/proc/<pid>/stat`; the command name may contain spaces and parentheses, so split after the last `)`. */
export const parseStat = (pid: number, text: string): Stat | undefined => {
  const close = text.lastIndexOf(")")
  if (close < 0) return undefined
  // Fields after the comm: 3=state 4=ppid 5=pgrp 6=session ... 22=starttime
  const rest = text.slice(close + 2).split(" ")
  const startTime = rest[19]
  if (rest.length < 20 || startTime === undefined) return undefined
  return { pid, state: rest[0]!, ppid: Number(rest[1]), pgid: Number(rest[2]), sid: Number(rest[3]), startTime }
}

export const readStat = (pid: number): Stat | undefined => {
  let text: string
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, "latin1")
  } catch {
    return undefined
  }
  return parseStat(pid, text)
}

/** Zombies (`Z`) and dead tasks (`X`, `x`) are dead. */
export const isDead = (stat: Stat): boolean => stat.state === "Z" || stat.state === "X" || stat.state === "x"

export const readBootId = (): string => {
  try {
    return fs.readFileSync("/proc/sys/kernel/random/boot_id", "latin1").trim()
  } catch {
    return "unknown-boot"
  }
}

const cookiePrefix = Buffer.from("SHEPHERD_ID=")

/** The `SHEPHERD_ID` a process started with (its initial environment), if readable. */
export const readCookie = (pid: number): string | undefined => {
  let buf: Buffer
  try {
    buf = fs.readFileSync(`/proc/${pid}/environ`)
  } catch {
    return undefined
  }
  let at = buf.indexOf(cookiePrefix)
  while (at > 0 && buf[at - 1] !== 0) at = buf.indexOf(cookiePrefix, at + 1)
  if (at < 0) return undefined
  const end = buf.indexOf(0, at)
  return buf.toString("latin1", at + cookiePrefix.length, end < 0 ? buf.length : end)
}

export const listPids = (): Array<number> => {
  const pids: Array<number> = []
  for (const name of fs.readdirSync("/proc")) {
    const c = name.charCodeAt(0)
    if (c >= 48 && c <= 57) pids.push(Number(name))
  }
  return pids
}

/** Owner uid of a process, or undefined if it is gone. */
export const ownerUid = (pid: number): number | undefined => {
  try {
    return fs.statSync(`/proc/${pid}`).uid
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
