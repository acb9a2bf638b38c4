// The lifeline sentinel: one small process per pool, started by the host with
// a pipe on its stdin. The host writes what it supervises; if the pipe closes
// without a "BYE" (the host died without running finalizers: SIGKILL, OOM),
// the sentinel terminates every registered container and every process
// carrying `SHEPHERD_ID=<poolId>:*`, identity-checked, with the pool's
// KillPolicy, then exits.
//
// Protocol, one line each:
//   P <poolId> <signal> <graceMs> <forceWaitMs>
//   + <shepherdId> <pgid> <pid> <startTime>
//   - <shepherdId>
//   BYE
//
// It imports only `node:fs`, the `/proc` reader and the membership rules (no
// Effect), so that it starts fast; the host runs it as `.ts` from the sources
// (type stripping) and as `.js` once built.
import * as Membership from "@shepherd/core/Membership"
import type { Container } from "@shepherd/core/ProcessTable"
import * as fs from "node:fs"
import * as procfs from "./procfs.ts"

/** A process to terminate; a negative pid is a whole process group (no `/proc`). */
interface Target {
  readonly pid: number
  readonly startTime: string
  readonly bootId: string
}

let poolId: string | undefined
let signal: NodeJS.Signals = "SIGTERM"
let graceMs = 5000
let forceWaitMs = 1000
let bye = false
const containers = new Map<string, Container>()
const hasProc = fs.existsSync("/proc/self/stat")
const host: Membership.Host = { pid: process.pid, bootId: hasProc ? procfs.readBootId() : "unknown-boot" }

// Without /proc (macOS): each registered process group is one member, signalled as a group.
const groupMembers = (): Array<Target> => {
  const out: Array<Target> = []
  for (const c of containers.values()) {
    try {
      process.kill(-c.pgid, 0)
      out.push({ pid: -c.pgid, startTime: c.leader.startTime, bootId: host.bootId })
    } catch {
      // gone (or only zombies left)
    }
  }
  return out
}

// Members (the rules of `Membership`, as in the `/proc` table): every live process carrying our
// pool's cookie, plus the members of registered process groups whose leader is still the
// registered process, no older than it (whatever cookie they carry: a nested pool's tree inside
// ours is ours). A group whose leader is gone proves nothing here (the sentinel did not watch who
// was in it while the leader lived): there only the cookie counts.
const members = (): Array<Target> => {
  if (!hasProc) return groupMembers()
  const out: Array<Target> = []
  const byGroup = new Map<number, Membership.Judged>()
  for (const c of containers.values()) {
    const judged = Membership.judge(c, host, procfs.observe)
    if (judged.state === "led") byGroup.set(c.pgid, judged)
  }
  const prefix = poolId === undefined ? undefined : Membership.poolPrefix(poolId)
  for (const pid of procfs.listPids()) {
    if (pid === host.pid || pid <= 1) continue
    let stat: procfs.Stat | undefined
    try {
      stat = procfs.readStat(pid)
    } catch {
      continue // cannot be looked at: not ours to judge
    }
    if (stat === undefined || procfs.isDead(stat)) continue
    const cookie = procfs.readCookie(pid) ?? undefined
    const target = { pid, startTime: stat.startTime, bootId: host.bootId }
    if (prefix !== undefined && Membership.carriesPrefix(cookie, prefix)) {
      out.push(target)
      continue
    }
    const judged = byGroup.get(stat.pgid)
    const candidate = { pgid: stat.pgid, start: BigInt(stat.startTime), cookie, vouched: undefined }
    if (judged !== undefined && Membership.isMember(judged, candidate)) out.push(target)
  }
  return out
}

const alive = (m: Target): boolean => {
  if (m.pid < 0) {
    try {
      process.kill(m.pid, 0)
      return true
    } catch {
      return false
    }
  }
  return Membership.liveness(m, host, procfs.observe) === "alive"
}
const send = (m: Target, sig: NodeJS.Signals): void => {
  // Identity checked immediately before the signal.
  if (m.pid < 0 ? !alive(m) : Membership.signalVerdict(m, host, procfs.observe) !== "send") return
  try {
    process.kill(m.pid, sig)
  } catch {
    // gone or not ours
  }
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const waitGone = async (list: Array<Target>, ms: number): Promise<Array<Target>> => {
  const deadline = Date.now() + ms
  let poll = 1
  while (true) {
    list = list.filter(alive)
    if (list.length === 0) {
      list = members()
      if (list.length === 0) return []
    }
    if (Date.now() >= deadline) return list
    await sleep(Math.min(poll, Math.max(0, deadline - Date.now())))
    poll = Math.min(20, poll * 2)
  }
}

const terminateAll = async (): Promise<void> => {
  if (poolId === undefined) return
  let list = members()
  if (list.length === 0) return
  if (signal !== "SIGKILL") {
    for (const m of list) send(m, signal)
    list = await waitGone(list, graceMs)
  }
  if (list.length > 0) {
    list = members()
    for (const m of list) send(m, "SIGKILL")
    await waitGone(list, forceWaitMs)
  }
}

let buffer = ""
process.stdin.setEncoding("latin1")
process.stdin.on("data", (chunk: string) => {
  buffer += chunk
  let nl: number
  while ((nl = buffer.indexOf("\n")) >= 0) {
    const line = buffer.slice(0, nl)
    buffer = buffer.slice(nl + 1)
    const [op, a, b, c, d] = line.split(" ")
    if (op === "P") {
      poolId = a
      signal = b as NodeJS.Signals
      graceMs = Number(c)
      forceWaitMs = Number(d)
    } else if (op === "+" && a !== undefined && d !== undefined && /^\d+$/.test(d)) {
      containers.set(a, {
        shepherdId: a,
        pgid: Number(b),
        leader: { pid: Number(c), startTime: d, bootId: host.bootId }
      })
    } else if (op === "-" && a !== undefined) {
      containers.delete(a)
    } else if (op === "BYE") {
      bye = true
    }
  }
})
// A child the host was forking when it died gets its cookie only at exec:
// sweep again a few times after the first termination.
const sweep = async () => {
  await terminateAll()
  for (const delay of [50, 150, 300]) {
    await sleep(delay)
    await terminateAll()
  }
}
const onClose = () => {
  if (bye) process.exit(0)
  sweep().then(() => process.exit(0), () => process.exit(1))
}
process.stdin.on("end", onClose)
process.stdin.on("error", onClose)
// The host's terminal signals are not ours to obey: only the pipe decides.
for (const s of ["SIGINT", "SIGHUP", "SIGTERM"] as const) process.on(s, () => {})
