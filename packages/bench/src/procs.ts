/**
 * The benchmark's own view of `/proc`, independent of Shepherd's table: who is
 * alive, who belongs to a tree, and which processes this run started.
 *
 * Every process the benchmark starts carries `SHEPHERD_BENCH_RUN=<run id>` in
 * its environment (main.ts puts it in `process.env`, so every child inherits
 * it whatever spawns it), which is how leaks are found at the end.
 */
import * as fs from "node:fs"

export const markerName = "SHEPHERD_BENCH_RUN"

export interface Identity {
  readonly pid: number
  readonly startTime: string
}

export interface ProcStat {
  readonly pid: number
  readonly state: string
  readonly ppid: number
  readonly pgid: number
  readonly startTime: string
}

export const readStat = (pid: number): ProcStat | undefined => {
  let text: string
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, "latin1")
  } catch {
    return undefined
  }
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ")
  return { pid, state: rest[0]!, ppid: Number(rest[1]), pgid: Number(rest[2]), startTime: rest[19]! }
}

const dead = (state: string) => state === "Z" || state === "X" || state === "x"

export const listPids = (): Array<number> => {
  const out: Array<number> = []
  for (const name of fs.readdirSync("/proc")) {
    const c = name.charCodeAt(0)
    if (c >= 48 && c <= 57) out.push(Number(name))
  }
  return out
}

/** One variable of the environment `pid` started with. */
export const envVar = (pid: number, name: string): string | undefined => {
  let text: string
  try {
    text = fs.readFileSync(`/proc/${pid}/environ`, "latin1")
  } catch {
    return undefined
  }
  const key = `${name}=`
  for (const entry of text.split("\0")) if (entry.startsWith(key)) return entry.slice(key.length)
  return undefined
}

export const cmdline = (pid: number): string => {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "latin1").replace(/\0+$/, "").replace(/\0/g, " ")
  } catch {
    return ""
  }
}

/** Live (not zombie) and still the same process. */
export const isAlive = (id: Identity): boolean => {
  const s = readStat(id.pid)
  return s !== undefined && s.startTime === id.startTime && !dead(s.state)
}

export const identify = (pid: number): Identity | undefined => {
  const s = readStat(pid)
  return s === undefined || dead(s.state) ? undefined : { pid, startTime: s.startTime }
}

/** Live members of a process group. */
export const groupMembers = (pgid: number): Array<Identity> => {
  const out: Array<Identity> = []
  for (const pid of listPids()) {
    const s = readStat(pid)
    if (s !== undefined && s.pgid === pgid && !dead(s.state)) out.push({ pid, startTime: s.startTime })
  }
  return out
}

export interface Carrier extends Identity {
  readonly value: string
  readonly cmdline: string
}

/** Live processes (other than this one) whose environment has `name` with a value passing `match`. */
export const carriers = (name: string, match: (value: string) => boolean): Array<Carrier> => {
  const out: Array<Carrier> = []
  for (const pid of listPids()) {
    if (pid === process.pid) continue
    const s = readStat(pid)
    if (s === undefined || dead(s.state)) continue
    const value = envVar(pid, name)
    if (value !== undefined && match(value)) out.push({ pid, startTime: s.startTime, value, cmdline: cmdline(pid) })
  }
  return out
}

/** Live processes carrying a `SHEPHERD_ID` that starts with `prefix`. */
export const shepherdCarriers = (prefix: string): Array<Carrier> => carriers("SHEPHERD_ID", (v) => v.startsWith(prefix))

/** Live processes this run started (directly or not). */
export const runCarriers = (runId: string): Array<Carrier> => carriers(markerName, (v) => v === runId)

/** Live processes carrying the given `SHEPHERD_ID` exactly. */
export const membersById = (shepherdId: string): Array<Identity> => carriers("SHEPHERD_ID", (v) => v === shepherdId)

export const killAll = (ids: ReadonlyArray<Identity>, signal: NodeJS.Signals = "SIGKILL"): void => {
  for (const id of ids) {
    if (!isAlive(id)) continue
    try {
      process.kill(id.pid, signal)
    } catch {
      // gone
    }
  }
}

/** Polls `predicate` every `pollMs` until it holds or `ms` passes; resolves to whether it held. */
export const waitFor = async (predicate: () => boolean, ms: number, pollMs = 1): Promise<boolean> => {
  const deadline = performance.now() + ms
  while (true) {
    if (predicate()) return true
    if (performance.now() >= deadline) return false
    await new Promise((resolve) => setTimeout(resolve, pollMs))
  }
}

/** Polls until none of `ids` is alive; resolves to the time (performance.now) when that was seen, or fails. */
export const awaitGone = async (ids: ReadonlyArray<Identity>, ms: number): Promise<number> => {
  let left = ids.filter(isAlive)
  const ok = await waitFor(() => {
    left = left.filter(isAlive)
    return left.length === 0
  }, ms)
  if (!ok) throw new Error(`still alive after ${ms} ms: ${left.map((i) => `${i.pid} ${cmdline(i.pid)}`).join(", ")}`)
  return performance.now()
}
