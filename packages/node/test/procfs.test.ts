/**
 * The `/proc` reader as the membership rules see it (`observe`, `isDead`), and the table's
 * incremental cache: what it learns of a process, its cookie, and who vouches for its group.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Membership from "@shepherd/core/Membership"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as processCache from "../src/internal/processCache.ts"
import * as procfs from "../src/internal/procfs.ts"

const hasProc = fs.existsSync("/proc/self/stat")

const waitUntil = async (check: () => boolean, ms = 60_000) => {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error("timed out")
    await new Promise((r) => setTimeout(r, 10))
  }
}
const countPauses = (f: () => void): number => {
  const before = procfs.pauses.taken
  f()
  return procfs.pauses.taken - before
}
const kill = (pid: number | undefined) => {
  try {
    if (pid !== undefined) process.kill(-pid, "SIGKILL")
  } catch {
    // gone
  }
}

describe("procfs", () => {
  it("parseStat splits after the last parenthesis of the command name", () => {
    const stat = procfs.parseStat(7, "7 (a) b (c)) S 1 7 7 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 12345 0 0")
    assert.deepStrictEqual(stat, { pid: 7, state: "S", ppid: 1, pgid: 7, sid: 7, flags: 4194560, startTime: "12345" })
    assert.isUndefined(procfs.parseStat(7, "7 (truncated"))
    assert.isUndefined(procfs.parseStat(7, "7 (a) S 1 7"))
  })

  it.runIf(hasProc)("observe gives the membership rules this process, alive, and nothing for a free pid", () => {
    const seen = procfs.observe(process.pid)
    assert.isObject(seen)
    const self = { pid: process.pid, startTime: (seen as Membership.Observed).startTime, bootId: procfs.readBootId() }
    const host = { pid: -1, bootId: self.bootId }
    assert.strictEqual(Membership.liveness(self, host, procfs.observe), "alive")
    assert.strictEqual(Membership.liveness({ ...self, startTime: "1" }, host, procfs.observe), "dead")
    assert.isUndefined(procfs.observe(4_194_000))
    assert.isAtLeast(procfs.threadCount(process.pid)!, 1)
  })

  // The look-again at an empty environ (a process inside execve()) is for that case only: a
  // process started with `env -i` or a kernel thread has no environment for good, and a scan that
  // waited on each would stall the host wherever such processes come and go.
  it.runIf(hasProc)("an environment that is empty for good is not waited for; a cookie is read", async () => {
    const empty = NodeChildProcess.spawn("sleep", ["30"], { stdio: "ignore", detached: true, env: {} })
    const marked = NodeChildProcess.spawn("sleep", ["30"], {
      stdio: "ignore",
      detached: true,
      env: { SHEPHERD_ID: `t-procfs-${process.pid}:2` }
    })
    try {
      // Wait until both have exec'd (their command name is sleep's).
      await waitUntil(() => [empty, marked].every((c) => procfs.readCmdline(c.pid!).startsWith("sleep")))
      const pauses = countPauses(() => {
        assert.isUndefined(procfs.readCookie(empty.pid!))
        assert.strictEqual(procfs.readCookie(marked.pid!), `t-procfs-${process.pid}:2`)
        if (fs.existsSync("/proc/2/stat") && ((procfs.readStat(2)?.flags ?? 0) & 0x200000) !== 0) {
          assert.isUndefined(procfs.readCookie(2))
        }
      })
      assert.strictEqual(pauses, 0)
    } finally {
      kill(empty.pid)
      kill(marked.pid)
    }
  })

  it.runIf(hasProc)("a real zombie is dead, and is not signalled", async () => {
    // `sh` forks a short sleep and execs a long one, which never reaps it: a zombie for a second.
    const child = NodeChildProcess.spawn("sh", ["-c", "sleep 0.01 & exec sleep 5"], { stdio: "ignore", detached: true })
    try {
      let zombie: procfs.Stat | undefined
      await waitUntil(() => {
        zombie = procfs.listPids().map((pid) => {
          try {
            return procfs.readStat(pid)
          } catch {
            return undefined
          }
        }).find((s) => s !== undefined && s.ppid === child.pid && s.state === "Z")
        return zombie !== undefined
      })
      assert.isTrue(procfs.isDead(zombie!))
      const identity = { pid: zombie!.pid, startTime: zombie!.startTime, bootId: procfs.readBootId() }
      const host = { pid: process.pid, bootId: identity.bootId }
      assert.strictEqual(Membership.signalVerdict(identity, host, procfs.observe), "gone")
      assert.isFalse(procfs.isDead(procfs.readStat(child.pid!)!))
    } finally {
      kill(child.pid)
    }
  })

  it.runIf(hasProc)("the cache learns a new group, reads a child's cookie, and vouches for its members", async () => {
    const cookie = `t-procfs-${process.pid}:1`
    const leader = NodeChildProcess.spawn("sh", ["-c", "sleep 30 & wait"], {
      stdio: "ignore",
      detached: true,
      env: { ...process.env, SHEPHERD_ID: cookie }
    })
    try {
      const cache = processCache.make(process.pid, process.env.SHEPHERD_ID)
      let member: number | undefined
      await waitUntil(() => {
        cache.refresh()
        member = [...cache.known.entries()].find(([pid, e]) => e.pgid === leader.pid && pid !== leader.pid)?.[0]
        return member !== undefined
      })
      const leaderEntry = cache.known.get(leader.pid!)!
      const memberEntry = cache.known.get(member!)!
      assert.strictEqual(leaderEntry.vouched, leaderEntry.startTime, "a leader vouches for itself")
      assert.strictEqual(memberEntry.vouched, leaderEntry.startTime, "a member is vouched for by its live leader")
      assert.strictEqual(cache.cookieOf(member!, memberEntry), cookie)
      assert.strictEqual(cache.confirm(member!, memberEntry), memberEntry)
    } finally {
      kill(leader.pid)
    }
  })

  it.runIf(hasProc)(
    "a kept stat descriptor names its process: a zombie reads as one, a reaped process as gone",
    async () => {
      // The shell forks a child it never waits for (it execs sleep): once killed, that child stays a zombie.
      const parent = NodeChildProcess.spawn("sh", ["-c", "sleep 30 & echo $!; exec sleep 30"], {
        stdio: ["ignore", "pipe", "ignore"],
        detached: true
      })
      try {
        const child = await new Promise<number>((resolve) =>
          parent.stdout!.once("data", (chunk: Buffer) => resolve(Number(String(chunk).trim())))
        )
        const fd = procfs.openStat(child)!
        try {
          assert.strictEqual(procfs.readOpenStat(fd, child)?.ppid, parent.pid)
          process.kill(child, "SIGKILL")
          await waitUntil(() => procfs.readOpenStat(fd, child)?.state === "Z")
          // Its parent dies: the init reaps the zombie, and the descriptor reads it as gone for good.
          kill(parent.pid)
          await waitUntil(() => procfs.readOpenStat(fd, child) === undefined)
          assert.isUndefined(procfs.readOpenStatText(fd))
        } finally {
          fs.closeSync(fd)
        }
      } finally {
        kill(parent.pid)
      }
    }
  )
})
