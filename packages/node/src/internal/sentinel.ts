// The lifeline sentinel: one small process per pool, started by the host with
// a pipe on its stdin. The host writes what it supervises; if the pipe closes
// without a "BYE" (the host died without running finalizers: SIGKILL, OOM),
// the sentinel terminates every registered container and every process
// carrying `SHEPHERD_ID=<poolId>:*`, identity-checked, with the pool's
// KillPolicy, then exits.
//
// Protocol, one line each:
//   P <poolId> <signal> <graceMs> <forceWaitMs>
//   C <pool cgroup> <dev> <ino> <sentinel leaf> <dev> <ino>   (cgroup containment; paths URI-encoded)
//   + <shepherdId> <pgid> <pid> <startTime>
//   - <shepherdId>
//   BYE
//
// Under cgroup containment every process in the pool's cgroup but the sentinel itself is a member
// too (read through the identity-checked cgroup: nothing that left its group and environment gets
// away), and the force phase ends with `cgroup.kill` on each of the pool's session cgroups.
//
// It imports only `node:fs`, `node:net`, the `/proc` reader and the membership rules (no
// Effect), so that it starts fast; the host runs it as `.ts` from the sources
// (type stripping) and as `.js` once built.
import * as Membership from "@shepherd/core/Membership"
import type { Container } from "@shepherd/core/ProcessTable"
import type { CgroupRef } from "@shepherd/core/Containment"
import * as fs from "node:fs"
import * as net from "node:net"
import { type Cgroup, childrenUnsafe, removeOnceUnsafe } from "./cgroupFs.ts"
import * as cgroupTable from "./cgroupTable.ts"
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
let poolCgroup: CgroupRef | undefined
let sentinelLeaf: CgroupRef | undefined
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
  const inPool = new Set<number>()
  if (poolCgroup !== undefined) {
    try {
      for (const m of cgroupTable.membersOf(poolCgroup, host.bootId, true)) {
        if (m.pid === host.pid) continue
        inPool.add(m.pid)
        out.push(m)
      }
    } catch {
      // unreadable: the group and cookie rules still apply
    }
  }
  for (const pid of procfs.listPids()) {
    if (inPool.has(pid)) continue
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
    killSessions()
    await waitGone(list, forceWaitMs)
  }
}

/** The pool's cgroups below it, but the sentinel's own leaf (the sessions'). */
const sessionCgroups = (): Array<Cgroup> => {
  if (poolCgroup === undefined) return []
  try {
    return childrenUnsafe(cgroupTable.fromRef(poolCgroup)).filter((c) => c.ino !== BigInt(sentinelLeaf?.ino ?? -1))
  } catch {
    return []
  }
}

// One write each kills everything in a session's cgroup, forks included.
const killSessions = (): void => {
  for (const c of sessionCgroups()) cgroupTable.kill(cgroupTable.toRef(c))
}

// Empty cgroups are removed (the next host removes the pool's own, once this sentinel is gone).
const removeEmpty = (c: Cgroup): void => {
  try {
    for (const child of childrenUnsafe(c)) removeEmpty(child)
    removeOnceUnsafe(c)
  } catch {
    // busy or gone
  }
}

let buffer = ""
const onData = (chunk: string): void => {
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
    } else if (op === "C") {
      const fields = line.split(" ")
      const ref = (i: number): CgroupRef | undefined =>
        /^\d+$/.test(fields[i + 1] ?? "") && /^\d+$/.test(fields[i + 2] ?? "")
          ? { path: decodeURIComponent(fields[i]!), dev: fields[i + 1]!, ino: fields[i + 2]! }
          : undefined
      poolCgroup = ref(1)
      sentinelLeaf = ref(4)
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
}
// A child the host was forking when it died gets its cookie only at exec:
// sweep again a few times after the first termination.
const sweep = async () => {
  await terminateAll()
  for (const delay of [50, 150, 300]) {
    await sleep(delay)
    await terminateAll()
  }
  for (const c of sessionCgroups()) removeEmpty(c)
}
const onClose = () => {
  if (bye) process.exit(0)
  sweep().then(() => process.exit(0), () => process.exit(1))
}
// The pipe is read paced: after a read, reading stops for `paceMs` (the kernel keeps what arrives
// meanwhile), so a host spawning hundreds of processes a second wakes this process about 50 times a
// second at most, not once per spawn (each wake-up of a Node process costs tens of µs of CPU, taken from the
// host's own cores). An idle host costs no wake-up at all, and its death (end of file) is seen at
// most `paceMs` late. `onread` is the stream mode in which a pause stops reading at the socket.
const paceMs = 20
const pipe = new net.Socket({
  fd: 0,
  readable: true,
  writable: false,
  onread: {
    buffer: Buffer.allocUnsafe(64 * 1024),
    callback: (n: number, buf: Uint8Array) => {
      onData(Buffer.from(buf.buffer, buf.byteOffset, n).toString("latin1"))
      pipe.pause()
      setTimeout(() => pipe.resume(), paceMs)
      return true
    }
  }
})
pipe.on("end", onClose)
pipe.on("error", onClose)
// The host's terminal signals are not ours to obey: only the pipe decides.
for (const s of ["SIGINT", "SIGHUP", "SIGTERM"] as const) process.on(s, () => {})
