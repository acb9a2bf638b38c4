/**
 * The leak sweep: after each scenario, at a time limit and at the end, find
 * what this run left alive and kill it — and only it.
 *
 * A process is this run's when, read from `/proc` with its start time before
 * and after (so that a pid reused in between is not mistaken for it), it
 *   - carries `SHEPHERD_BENCH_RUN=<this run's id>` in its environment (main.ts
 *     puts it in `process.env` before anything is spawned, so every child that
 *     inherits its environment has it, Shepherd's sentinel included), or
 *   - carries a `SHEPHERD_ID` / `SHEPHERD_SENTINEL` of a pool this run built
 *     (pool ids are `b-<name>~<random>`, recorded by `usePool`: covers a child
 *     spawned by Shepherd with an explicit environment), or
 *   - is a live descendant of this process (covers a raw, execa or Effect
 *     child spawned with an explicit `env:` that still has its parent).
 * Anything else carrying a `b-*` `SHEPHERD_ID` or `SHEPHERD_SENTINEL` belongs
 * to someone else (another bench run, another user): it is reported and left
 * alone, never signalled.
 */
import { type Carrier, cmdline, envVar, type Identity, isAlive, listPids, markerName, readStat } from "./procs.ts"

/** What this run owns. */
export interface Ownership {
  readonly runId: string
  /** Pool ids (`b-<name>~<random>`) of pools this run built. */
  readonly poolIds: ReadonlySet<string>
  /** Whether live descendants of this process count as ours (main: yes). */
  readonly descendants: boolean
  /** Processes of this run never to be signalled by the sweep (main: the run's watchdog process, see watchdog.ts). */
  readonly spare?: ReadonlyArray<Identity> | undefined
}

/** Pool ids of pools built in this process (filled by `usePool`). */
export const ownPoolIds = new Set<string>()

const dead = (state: string) => state === "Z" || state === "X" || state === "x"

export interface Classified {
  /** Provably this run's: to be signalled. */
  readonly ours: Array<Carrier>
  /** `b-*` carriers of someone else: reported, left alone. */
  readonly foreign: Array<Carrier>
}

const ownsByPool = (poolIds: ReadonlySet<string>, id: string | undefined, sentinel: string | undefined) => {
  if (sentinel !== undefined && poolIds.has(sentinel)) return true
  if (id === undefined) return false
  const colon = id.indexOf(":")
  return colon > 0 && poolIds.has(id.slice(0, colon))
}

/** One pass over `/proc`: this run's live processes, and other `b-*` carriers. */
export const classify = (own: Ownership): Classified => {
  const self = process.pid
  const spared = new Set((own.spare ?? []).map((id) => `${id.pid}/${id.startTime}`))
  const stats = new Map<number, { ppid: number; startTime: string; state: string }>()
  for (const pid of listPids()) {
    if (pid === self) continue
    const s = readStat(pid)
    if (s !== undefined) stats.set(pid, s)
  }
  const isDescendant = (pid: number): boolean => {
    let p = stats.get(pid)?.ppid
    for (let hops = 0; p !== undefined && p > 1 && hops < 64; hops++) {
      if (p === self) return true
      p = stats.get(p)?.ppid
    }
    return false
  }
  const ours: Array<Carrier> = []
  const foreign: Array<Carrier> = []
  for (const [pid, s] of stats) {
    if (dead(s.state) || spared.has(`${pid}/${s.startTime}`)) continue
    const marker = envVar(pid, markerName)
    const id = envVar(pid, "SHEPHERD_ID")
    const sentinel = envVar(pid, "SHEPHERD_SENTINEL")
    const line = cmdline(pid)
    // The environment and the command line read above are those of the process that had this start time.
    const again = readStat(pid)
    if (again === undefined || again.startTime !== s.startTime || dead(again.state)) continue
    const identity = { pid, startTime: s.startTime, cmdline: line }
    if (
      marker === own.runId || ownsByPool(own.poolIds, id, sentinel) || (own.descendants && isDescendant(pid))
    ) {
      ours.push({ ...identity, value: marker ?? id ?? sentinel ?? "(descendant)" })
    } else if (id?.startsWith("b-") === true || sentinel?.startsWith("b-") === true) {
      foreign.push({ ...identity, value: id ?? sentinel! })
    }
  }
  return { ours, foreign }
}

/** SIGKILLs each of `ids` that is still the same live process (pid and start time read together). */
export const killOurs = (ids: ReadonlyArray<Carrier>): void => {
  for (const id of ids) {
    if (!isAlive(id)) continue
    try {
      process.kill(id.pid, "SIGKILL")
    } catch {
      // gone
    }
  }
}

export interface SweepResult {
  /** This run's processes that were still alive after the wait, and were killed. */
  readonly killed: Array<string>
  /** Other `b-*` carriers: "pid …, cmdline: not ours: left alone". */
  readonly foreign: Array<string>
}

const pause = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/**
 * Waits up to `graceMs` for this run's processes to leave by themselves
 * (sentinels saying goodbye), then kills what is left, pass after pass, until
 * a pass finds none (a shell killed mid-fork may have started a child after
 * the previous pass). Other `b-*` carriers are reported, never signalled.
 */
export const sweep = async (own: Ownership, where: string, graceMs = 3_000): Promise<SweepResult> => {
  const deadline = performance.now() + graceMs
  let pass = classify(own)
  while (pass.ours.length > 0 && performance.now() < deadline) {
    await pause(20)
    pass = classify(own)
  }
  const killed: Array<string> = []
  const seen = new Set<string>()
  for (let round = 0; pass.ours.length > 0 && round < 100; round++) {
    for (const c of pass.ours) {
      const key = `${c.pid}/${c.startTime}`
      if (!seen.has(key)) {
        seen.add(key)
        killed.push(`${where}: pid ${c.pid} ${c.cmdline}`)
      }
    }
    killOurs(pass.ours)
    await pause(20)
    pass = classify(own)
  }
  const foreign = pass.foreign.map((c) => `${where}: pid ${c.pid} ${c.cmdline} (${c.value}): not ours: left alone`)
  return { killed, foreign }
}

/**
 * The same, synchronously, for the watchdog (no event loop to wait on): kill
 * passes until one finds nothing, with short blocking pauses between them.
 * While this runs, this process spawns nothing, so the passes converge.
 */
export const sweepSync = (own: Ownership): number => {
  const pauseSync = new Int32Array(new SharedArrayBuffer(4))
  let killed = 0
  for (let round = 0; round < 100; round++) {
    const { ours } = classify(own)
    if (ours.length === 0) break
    killed += ours.length
    killOurs(ours)
    Atomics.wait(pauseSync, 0, 0, 20)
  }
  return killed
}
