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
// Plain JavaScript with no imports beyond node:fs, so that it starts fast and
// runs wherever the host's Node runs.
import * as fs from "node:fs"

let poolId
let signal = "SIGTERM"
let graceMs = 5000
let forceWaitMs = 1000
let bye = false
const containers = new Map()
const self = process.pid

const readStat = (pid) => {
  let text
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, "latin1")
  } catch {
    return undefined
  }
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ")
  return { state: rest[0], pgid: Number(rest[2]), startTime: rest[19] }
}
const dead = (stat) => stat === undefined || stat.state === "Z" || stat.state === "X" || stat.state === "x"
const cookieOf = (pid) => {
  let text
  try {
    text = fs.readFileSync(`/proc/${pid}/environ`, "latin1")
  } catch {
    return undefined
  }
  for (const entry of text.split("\0")) if (entry.startsWith("SHEPHERD_ID=")) return entry.slice(12)
  return undefined
}

// Members: every live process carrying our pool's cookie, plus members of
// registered process groups whose leader is still the registered process,
// younger than it, that carry no cookie. A group whose leader is gone proves
// nothing (Linux frees the id when the group empties, and the next owner of
// the pid may build a group of its own with it): there only the cookie counts.
const hasProc = fs.existsSync("/proc/self/stat")

// Without /proc (macOS): each registered process group is one member, signalled as a group.
const groupMembers = () => {
  const out = []
  for (const c of containers.values()) {
    try {
      process.kill(-c.pgid, 0)
      out.push({ pid: -c.pgid, startTime: undefined })
    } catch {
      // gone (or only zombies left)
    }
  }
  return out
}

const members = () => {
  if (!hasProc) return groupMembers()
  const out = []
  const byGroup = new Map()
  for (const c of containers.values()) {
    const leader = readStat(c.pgid)
    if (leader !== undefined && c.pid === c.pgid && leader.startTime === c.startTime) byGroup.set(c.pgid, c)
  }
  for (const name of fs.readdirSync("/proc")) {
    const c = name.charCodeAt(0)
    if (c < 48 || c > 57) continue
    const pid = Number(name)
    if (pid === self || pid <= 1) continue
    const stat = readStat(pid)
    if (dead(stat)) continue
    const cookie = cookieOf(pid)
    if (cookie !== undefined) {
      if (poolId !== undefined && cookie.startsWith(`${poolId}:`)) out.push({ pid, startTime: stat.startTime })
      continue
    }
    const container = byGroup.get(stat.pgid)
    if (container !== undefined && BigInt(stat.startTime) >= BigInt(container.startTime)) {
      out.push({ pid, startTime: stat.startTime })
    }
  }
  return out
}

const alive = (m) => {
  if (m.pid < 0) {
    try {
      process.kill(m.pid, 0)
      return true
    } catch {
      return false
    }
  }
  const stat = readStat(m.pid)
  return !dead(stat) && stat.startTime === m.startTime
}
const send = (m, sig) => {
  // Identity checked immediately before the signal.
  if (!alive(m)) return
  try {
    process.kill(m.pid, sig)
  } catch {
    // gone or not ours
  }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

const waitGone = async (list, ms) => {
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

const terminateAll = async () => {
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
process.stdin.on("data", (chunk) => {
  buffer += chunk
  let nl
  while ((nl = buffer.indexOf("\n")) >= 0) {
    const line = buffer.slice(0, nl)
    buffer = buffer.slice(nl + 1)
    const [op, a, b, c, d] = line.split(" ")
    if (op === "P") {
      poolId = a
      signal = b
      graceMs = Number(c)
      forceWaitMs = Number(d)
    } else if (op === "+") {
      containers.set(a, { pgid: Number(b), pid: Number(c), startTime: d })
    } else if (op === "-") {
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
for (const s of ["SIGINT", "SIGHUP", "SIGTERM"]) process.on(s, () => {})
