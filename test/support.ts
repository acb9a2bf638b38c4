/**
 * Shared helpers for tests on real processes: read `/proc`, find survivors by
 * their `SHEPHERD_ID`, and the process-tree shapes the suite exercises.
 */
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"

export interface ProcInfo {
  readonly pid: number
  readonly state: string
  readonly ppid: number
  readonly pgid: number
  readonly shepherdId: string | undefined
  readonly cmdline: string
}

const readStat = (pid: number) => {
  try {
    const text = fs.readFileSync(`/proc/${pid}/stat`, "latin1")
    const rest = text.slice(text.lastIndexOf(")") + 2).split(" ")
    return { state: rest[0]!, ppid: Number(rest[1]), pgid: Number(rest[2]) }
  } catch {
    return undefined
  }
}

/** The parent and start time (clock ticks since boot) of `pid`, if it is readable. */
export const statOf = (pid: number): { readonly ppid: number; readonly startTime: string } | undefined => {
  try {
    const text = fs.readFileSync(`/proc/${pid}/stat`, "latin1")
    const rest = text.slice(text.lastIndexOf(")") + 2).split(" ")
    return { ppid: Number(rest[1]), startTime: rest[19]! }
  } catch {
    return undefined
  }
}

/**
 * Starts a marked `sleep 1000` (its own session) on `pid` if the kernel hands that pid out next:
 * `ns_last_pid` set just below it (root; see `canChoosePid`). Whether it got the pid is the caller's
 * to check. Kill it through the returned handle (which refuses once it is reaped), never by pid.
 */
export const strangerOn = (pid: number, marker: string): NodeChildProcess.ChildProcess => {
  fs.writeFileSync("/proc/sys/kernel/ns_last_pid", `${pid - 1}`)
  return NodeChildProcess.spawn("sleep", ["1000"], {
    stdio: "ignore",
    detached: true,
    env: { [marker]: "1", PATH: process.env.PATH }
  })
}

/** The pids whose `/proc/<pid>/stat` this process holds open (one entry per descriptor). */
export const statFdsHeld = (): Array<number> => {
  const held: Array<number> = []
  for (const fd of fs.readdirSync("/proc/self/fd")) {
    let target: string
    try {
      target = fs.readlinkSync(`/proc/self/fd/${fd}`)
    } catch {
      continue // closed meanwhile (the readdir's own descriptor)
    }
    const m = /^\/proc\/(\d+)\/stat$/.exec(target)
    if (m !== null) held.push(Number(m[1]))
  }
  return held
}

/** SIGKILLs every process whose command line `matches` (a test's own marked children). */
export const killMatching = (matches: (cmdline: string) => boolean): void => {
  for (const p of processes()) {
    if (!matches(p.cmdline)) continue
    try {
      process.kill(p.pid, "SIGKILL")
    } catch {
      // gone
    }
  }
}

/** One variable of the environment `pid` started with, if readable. */
export const readEnvVar = (pid: number, name: string): string | undefined => {
  try {
    const entries = fs.readFileSync(`/proc/${pid}/environ`, "latin1").split("\0")
    const hit = entries.find((e) => e.startsWith(`${name}=`))
    return hit?.slice(name.length + 1)
  } catch {
    return undefined
  }
}

/** Every process on the machine, with its `SHEPHERD_ID` if it has one. */
export const processes = (): Array<ProcInfo> => {
  const out: Array<ProcInfo> = []
  for (const name of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue
    const pid = Number(name)
    const stat = readStat(pid)
    if (stat === undefined) continue
    let cmdline = ""
    try {
      cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "latin1").replace(/\0/g, " ").trim()
    } catch {
      // gone
    }
    out.push({ pid, ...stat, shepherdId: readEnvVar(pid, "SHEPHERD_ID"), cmdline })
  }
  return out
}

/** Live (non-zombie) processes whose `SHEPHERD_ID` starts with `prefix`. */
export const survivors = (prefix: string): Array<ProcInfo> =>
  processes().filter((p) => p.shepherdId?.startsWith(prefix) === true && p.state !== "Z" && p.state !== "X")

/** `true` while `pid` exists and is not a zombie. */
export const isAlive = (pid: number): boolean => {
  const stat = readStat(pid)
  return stat !== undefined && stat.state !== "Z" && stat.state !== "X"
}

/** The environment of a live process, as a record. */
export const environOf = (pid: number): Record<string, string> => {
  const env: Record<string, string> = {}
  for (const entry of fs.readFileSync(`/proc/${pid}/environ`, "latin1").split("\0")) {
    const eq = entry.indexOf("=")
    if (eq > 0) env[entry.slice(0, eq)] = entry.slice(eq + 1)
  }
  return env
}

/** SIGKILL whatever still carries `prefix` (cleanup after a failed assertion). */
export const killSurvivors = (prefix: string): void => {
  for (const p of survivors(prefix)) {
    try {
      process.kill(p.pid, "SIGKILL")
    } catch {
      // gone
    }
  }
}

/**
 * Polls `predicate` every 10 ms until it holds or `ms` passes. The default is only a guard against a
 * hang (a loaded machine may take seconds to start or reap a process), never a figure a test proves.
 */
export const waitUntil = async (predicate: () => boolean, ms = 60_000): Promise<boolean> => {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (predicate()) return true
    await new Promise((r) => setTimeout(r, 10))
  }
  return predicate()
}

/**
 * Process-tree shapes, as `sh -c` scripts. Every long sleep is `sleep 1000`
 * or similar; nothing here exits by itself within a test's lifetime.
 */
export const trees = {
  /** A leader with two background sleeps; everything dies on SIGTERM. */
  cooperative: "sleep 1000 & sleep 1000 & wait",
  /** Ignores SIGTERM, and so do its children (ignored dispositions are inherited). */
  ignoresTerm: "trap '' TERM; sleep 1000 & sleep 1000 & wait",
  /** A same-group member that outlives its leader. */
  memberOutlivesLeader: "(trap '' TERM HUP; sleep 1000) & sleep 0.2; exit 0",
  /** A grandchild that escapes the group with setsid. */
  setsidGrandchild: "setsid sh -c \"trap '' TERM; sleep 1000\" & trap '' TERM; wait",
  /** A double-forked grandchild (reparented to init/subreaper), same group. */
  doubleFork: "(sh -c \"trap '' TERM; sleep 1000\" &) ; trap '' TERM; sleep 1000",
  /** A setsid double-forked grandchild: new session and reparented. */
  setsidDoubleFork: "(setsid sh -c \"trap '' TERM; sleep 1000\" &) ; trap '' TERM; sleep 1000"
} as const

/** Whether this process can choose the next pid (root, `/proc/sys/kernel/ns_last_pid` writable). */
export const canChoosePid = (() => {
  try {
    fs.accessSync("/proc/sys/kernel/ns_last_pid", fs.constants.W_OK)
    return process.geteuid?.() === 0
  } catch {
    return false
  }
})()
