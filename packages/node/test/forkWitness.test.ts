/**
 * The fork witness on real processes: a leader that left nobody behind is
 * proven alone without a scan; a leader that forked never is, whether its
 * descendant stays in its group, leaves for a session of its own with the
 * tree's cookie, or is gone already.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as forkWitness from "../src/internal/forkWitness.ts"
import * as procfs from "../src/internal/procfs.ts"

const hasClock = procfs.readForks() !== undefined

const cookie = `fw-test:${process.pid}-${Math.random().toString(36).slice(2)}`
const started: Array<number> = []

/** Spawns `sh -c script` as a leader the way the launcher does (own session, counted as one of its forks). */
const spawnLeader = (script: string) => {
  const before = forkWitness.mark()
  const child = NodeChildProcess.spawn("sh", ["-c", script], {
    stdio: "ignore",
    detached: true,
    env: { ...process.env, SHEPHERD_ID: cookie }
  })
  forkWitness.forked()
  started.push(child.pid!)
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()))
  return { pid: child.pid!, before, exited }
}

/** Every live process carrying this file's cookie. */
const carriers = (): Array<number> =>
  procfs.listPids().filter((pid) => {
    try {
      return procfs.readCookie(pid) === cookie
    } catch {
      return false
    }
  })

const waitUntil = async (check: () => boolean, ms = 60_000) => {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error("timed out")
    await new Promise((r) => setTimeout(r, 10))
  }
}

afterEach(async () => {
  for (const pid of carriers()) {
    try {
      process.kill(pid, "SIGKILL")
    } catch {
      // gone
    }
  }
  for (const pid of started.splice(0)) {
    try {
      process.kill(-pid, "SIGKILL")
    } catch {
      // gone
    }
  }
  await waitUntil(() => carriers().length === 0)
})

describe.runIf(hasClock)("forkWitness", () => {
  it("proves a leader that forked nothing alone, also after other leaders of the launcher", async (ctx) => {
    // Any other process forking meanwhile (a parallel test) leaves an attempt unproven, rightly:
    // the assertion is only made on attempts where the machine forked nothing else (the count,
    // read around the attempt, grew by our two forks alone).
    for (let attempt = 0; attempt < 30; attempt++) {
      const around = procfs.readForks()!
      const first = spawnLeader("exit 0")
      const second = spawnLeader("exit 0")
      await Promise.all([first.exited, second.exited])
      const proven = forkWitness.alone(first.before)
      if (procfs.readForks()! - around === 2) {
        assert.isTrue(proven)
        return
      }
    }
    ctx.skip("the machine never stayed quiet for one attempt: nothing to conclude")
  })

  it("never proves alone a leader whose child is still in its group", async () => {
    const leader = spawnLeader("sleep 1000 & exit 0")
    await leader.exited
    await waitUntil(() => carriers().length === 1)
    assert.isFalse(forkWitness.alone(leader.before))
  })

  it("never proves alone a leader whose child left for a session of its own with the cookie", async () => {
    const leader = spawnLeader("setsid sleep 1000 & exit 0")
    await leader.exited
    await waitUntil(() => carriers().some((pid) => procfs.readStat(pid)?.sid === pid))
    assert.isFalse(forkWitness.alone(leader.before))
  })

  it("never proves alone a live leader that has forked", async () => {
    const leader = spawnLeader("sleep 1000 & wait")
    await waitUntil(() => carriers().length === 2)
    assert.isFalse(forkWitness.alone(leader.before))
  })

  it("never proves alone a leader that forked, even when the child is gone", async () => {
    const leader = spawnLeader("sh -c 'exit 0'; exit 0")
    await leader.exited
    assert.isFalse(forkWitness.alone(leader.before))
  })

  it("proves nothing without a mark", async () => {
    const leader = spawnLeader("exit 0")
    await leader.exited
    assert.isFalse(forkWitness.alone(undefined))
    assert.isTrue(fs.existsSync("/proc/sys/kernel/ns_last_pid"))
  })
})
