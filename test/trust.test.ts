/**
 * "Never signal what is not provably ours", on real processes: a process
 * group whose recorded leader is gone proves nothing by itself. The attack:
 * a tree of ours ends, an unrelated program gets the old leader's pid, makes
 * it its process group (`setsid`), forks a worker without our cookie and
 * exits. Recovery, the sentinel and a fresh table must leave that worker
 * alone; a live table that saw a cookie-less member while the leader lived
 * still finds it once the leader is gone.
 *
 * A process gets a chosen pid through `/proc/sys/kernel/ns_last_pid` (root).
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import type { Container } from "@shepherd/core/ProcessTable"
import type { ProcessIdentity } from "@shepherd/core/ProcessIdentity"
import * as NodeProcessTable from "@shepherd/node/NodeProcessTable"
import { Effect } from "effect"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as readline from "node:readline"
import { fileURLToPath } from "node:url"
import { cleanupPools, eventually, sh, withPool } from "./harness.ts"
import { canChoosePid, isAlive, killSurvivors, survivors, waitUntil } from "./support.ts"

afterEach(cleanupPools)

/** Marks every test process for the suite's final survivor check (see globalSetup.ts). */
const marker = `SHEPHERD_TEST_RUN_DIR=${process.env.SHEPHERD_TEST_RUN_DIR ?? "/nonexistent"}`
const started: Array<number> = []
const killAll = () => {
  for (const pid of started.splice(0)) {
    try {
      process.kill(pid, "SIGKILL")
    } catch {
      // gone
    }
  }
}

/** The pid of the live process whose command line is exactly `argv`, if any. */
const findByArgv = (argv: ReadonlyArray<string>): number | undefined => {
  const wanted = `${argv.join("\u0000")}\u0000`
  for (const name of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue
    try {
      if (fs.readFileSync(`/proc/${name}/cmdline`, "latin1") === wanted && isAlive(Number(name))) return Number(name)
    } catch {
      // gone
    }
  }
  return undefined
}

/** A detached (own group) `sh -c script`, reaped by this process; resolves when it is gone. */
const spawnLeader = (script: string) => {
  const child = NodeChildProcess.spawn("sh", ["-c", script], { detached: true, stdio: "ignore" })
  started.push(child.pid!)
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()))
  return { pid: child.pid!, exited }
}

const identityOf = (pid: number): ProcessIdentity => {
  const identity = NodeProcessTable.identify(pid)
  assert.isDefined(identity, `pid ${pid} is alive`)
  return identity!
}

/**
 * The foreign program of the attack: gets `pid` (retrying while other processes race for it),
 * becomes the leader of process group `pid` with `setsid`, forks a worker without any
 * `SHEPHERD_ID` (only the test marker) and exits. Returns the worker's pid, or `undefined` when
 * the pid could not be had: another process forked between our write of `ns_last_pid` and our
 * fork and holds it (pid_max is 32768 here, and the suite forks thousands of processes).
 */
const reusePid = (pid: number): number | undefined => {
  const inner = `env -i ${marker} sleep 999 </dev/null >/dev/null 2>&1 & echo $$ $!`
  for (let attempt = 0; attempt < 50 && !fs.existsSync(`/proc/${pid}`); attempt++) {
    const out = NodeChildProcess.execFileSync("sh", [
      "-c",
      `echo ${pid - 1} > /proc/sys/kernel/ns_last_pid; setsid sh -c '${inner}'`
    ], { encoding: "latin1" })
    const [leader, worker] = out.trim().split(" ").map(Number)
    started.push(worker!)
    if (leader === pid) return worker!
    process.kill(worker!, "SIGKILL")
  }
  return undefined
}

/**
 * Stages the attack with `attempt` (from a fresh leader on), again while the pid it freed was
 * taken by a stranger before `reusePid` could have it: that is a failure to set the test up,
 * not of the code under test.
 */
const staged = async <A>(attempt: () => Promise<A | undefined>): Promise<A> => {
  for (let i = 0; i < 10; i++) {
    const result = await attempt()
    if (result !== undefined) return result
  }
  throw new Error("could not stage the pid reuse in 10 attempts")
}

/** The worker is alive and in the group of the reused pid, as the attack needs. */
const assertForeignWorker = (worker: number, pgid: number) => {
  assert.isTrue(isAlive(worker), `worker ${worker} alive`)
  const stat = fs.readFileSync(`/proc/${worker}/stat`, "latin1")
  assert.strictEqual(Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]), pgid)
}

const run = <A>(effect: Effect.Effect<A, unknown>) => Effect.runPromise(effect)

describe.skipIf(!canChoosePid)("trust: a leaderless process group", () => {
  it("a fresh table (recovery) does not count a foreign worker in the reused group", async () => {
    try {
      const { container, leader, worker } = await staged(async () => {
        const leader = spawnLeader("exec sleep 1000")
        const container: Container = { pgid: leader.pid, shepherdId: "t-trust:1", leader: identityOf(leader.pid) }
        process.kill(leader.pid, "SIGKILL")
        await leader.exited
        const worker = reusePid(leader.pid)
        return worker === undefined ? undefined : { container, leader, worker }
      })
      assertForeignWorker(worker, leader.pid)
      // The foreign leader has exited: the group is leaderless, exactly as after the crash.
      assert.isTrue(await waitUntil(() => !fs.existsSync(`/proc/${leader.pid}`)))

      const members = await run(NodeProcessTable.make().members(container))
      assert.notInclude(members.map((m) => m.pid), worker)
    } finally {
      killAll()
    }
  })

  it("a live table keeps a cookie-less member it saw while the leader lived; a fresh one leaves it", async () => {
    const go = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-trust-")), "go")
    try {
      const leader = spawnLeader(
        `env -i ${marker} sleep 997 </dev/null >/dev/null 2>&1 & while [ ! -e ${go} ]; do sleep 0.02; done`
      )
      const container: Container = { pgid: leader.pid, shepherdId: "t-trust:2", leader: identityOf(leader.pid) }
      const table = NodeProcessTable.make()
      let member: number | undefined
      assert.isTrue(await waitUntil(() => (member = findByArgv(["sleep", "997"])) !== undefined))
      started.push(member!)
      // Seen while the leader lives.
      assert.include((await run(table.members(container))).map((m) => m.pid), member)

      fs.writeFileSync(go, "")
      await leader.exited
      assert.include((await run(table.members(container))).map((m) => m.pid), member, "observed membership is kept")
      assert.notInclude(
        (await run(NodeProcessTable.make().members(container))).map((m) => m.pid),
        member,
        "without an observation or a cookie the leaderless group proves nothing"
      )
    } finally {
      killAll()
      fs.rmSync(path.dirname(go), { recursive: true, force: true })
    }
  })

  it("a child forked after the leader exited inherits its parent's observed membership", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-trust-"))
    const [go, fork] = [path.join(dir, "go"), path.join(dir, "fork")]
    try {
      const inner = `while [ ! -e ${fork} ]; do sleep 0.02; done; sleep 995 & wait`
      const leader = spawnLeader(
        `env -i ${marker} sh -c '${inner}' </dev/null >/dev/null 2>&1 & while [ ! -e ${go} ]; do sleep 0.02; done`
      )
      const container: Container = { pgid: leader.pid, shepherdId: "t-trust:3", leader: identityOf(leader.pid) }
      const table = NodeProcessTable.make()
      const pids = async () => (await run(table.members(container))).map((m) => m.pid)
      let parent: number | undefined
      assert.isTrue(await waitUntil(() => (parent = findByArgv(["sh", "-c", inner])) !== undefined))
      started.push(parent!)
      assert.include(await pids(), parent, "seen while the leader lives")

      fs.writeFileSync(go, "")
      await leader.exited
      fs.writeFileSync(fork, "")
      let child: number | undefined
      assert.isTrue(await waitUntil(() => (child = findByArgv(["sleep", "995"])) !== undefined))
      started.push(child!)
      const after = await pids()
      assert.include(after, parent)
      assert.include(after, child, "forked in the group after the leader exited, by a member seen while it lived")
    } finally {
      killAll()
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it("the sentinel leaves a foreign worker in the reused group alone", async () => {
    const sentinel = NodeChildProcess.spawn(
      process.execPath,
      [fileURLToPath(new URL("../packages/node/src/internal/sentinel.ts", import.meta.url))],
      { stdio: ["pipe", "ignore", "inherit"] }
    )
    started.push(sentinel.pid!)
    const sentinelExited = new Promise<void>((resolve) => sentinel.on("exit", () => resolve()))
    try {
      sentinel.stdin!.write("P t-trust-sentinel SIGTERM 300 500\n")
      let n = 0
      const { leader, worker } = await staged(async () => {
        const leader = spawnLeader("exec sleep 1000")
        const identity = identityOf(leader.pid)
        sentinel.stdin!.write(`+ t-trust-sentinel:${++n} ${leader.pid} ${leader.pid} ${identity.startTime}\n`)
        process.kill(leader.pid, "SIGKILL")
        await leader.exited
        const worker = reusePid(leader.pid)
        return worker === undefined ? undefined : { leader, worker }
      })
      assertForeignWorker(worker, leader.pid)
      assert.isTrue(await waitUntil(() => !fs.existsSync(`/proc/${leader.pid}`)))

      // The host "dies": the pipe closes without BYE and the sentinel sweeps.
      sentinel.stdin!.end()
      await sentinelExited
      assert.isTrue(isAlive(worker), "the foreign worker was not signalled")
    } finally {
      killAll()
    }
  })

  it("recovery after a host crash does not kill a foreign worker in the old leader's reused group", async () => {
    const fixture = fileURLToPath(new URL("./fixtures/crashHost.ts", import.meta.url))
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-trust-"))
    // One ledger per staging attempt: a failed attempt's entry would be recovered too.
    let ledger = path.join(dir, "pool.ledger")
    const hosts: Array<NodeChildProcess.ChildProcess> = []
    const startHost = (mode: string) => {
      const child = NodeChildProcess.spawn(process.execPath, [fixture, ledger, mode, "1"], {
        stdio: ["ignore", "pipe", "inherit"]
      })
      hosts.push(child)
      const lines = readline.createInterface({ input: child.stdout! })[Symbol.asyncIterator]()
      const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()))
      const ready = (async () => {
        while (true) {
          const next = await lines.next()
          if (next.done === true) throw new Error("host exited before it was ready")
          if (next.value.startsWith("{") && next.value.includes(`"poolId"`)) return JSON.parse(next.value)
        }
      })()
      return { child, exited, ready }
    }
    let prefix = "unset:"
    try {
      const { leaderPid, worker } = await staged(async () => {
        ledger = path.join(dir, `pool${hosts.length}.ledger`)
        const first = startHost("nolifeline")
        const { poolId, pids } = await first.ready
        prefix = `${poolId}:`
        const leaderPid: number = pids[0]
        first.child.kill("SIGKILL")
        await first.exited
        // The orphaned tree then ends by itself (here: helped), and its leader's pid is free.
        killSurvivors(prefix)
        assert.isTrue(await waitUntil(() => survivors(prefix).length === 0 && !fs.existsSync(`/proc/${leaderPid}`)))
        const worker = reusePid(leaderPid)
        return worker === undefined ? undefined : { leaderPid, worker }
      })
      assertForeignWorker(worker, leaderPid)
      assert.isTrue(await waitUntil(() => !fs.existsSync(`/proc/${leaderPid}`)))

      const second = startHost("lifeline")
      const next = await second.ready
      assert.strictEqual(next.recovery.entries.length, 1, JSON.stringify(next.recovery))
      assert.deepStrictEqual(next.recovery.entries[0].signalled, [], JSON.stringify(next.recovery))
      assert.isTrue(isAlive(worker), "the foreign worker survived recovery")
      second.child.kill("SIGTERM")
      await second.exited
    } finally {
      for (const host of hosts) host.kill("SIGKILL")
      killSurvivors(prefix)
      killAll()
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it.live("a live pool still tears down a cookie-less member it saw while the leader lived, after the leader exits", () => {
    const go = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-trust-")), "go")
    return withPool(
      { name: "t-trust-observed", kill: { grace: "300 millis", forceWait: "500 millis" } },
      (pool) =>
        Effect.gen(function*() {
          const managed = yield* pool.spawn(
            sh(
              `env -i ${marker} sh -c "trap '' TERM; exec sleep 996" </dev/null >/dev/null 2>&1 & ` +
                `while [ ! -e ${go} ]; do sleep 0.02; done`
            ),
            { session: "s" }
          )
          let member: number | undefined
          yield* eventually("the cookie-less member", () => (member = findByArgv(["sleep", "996"])) !== undefined)
          started.push(member!)
          // The pool looks at the tree while the leader lives (here: the doctor; also any teardown or reaper scan).
          const seen = (yield* pool.doctor).sessions.flatMap((s) => s.processes).flatMap((p) => p.members).map((m) =>
            m.pid
          )
          assert.include(seen, member)

          fs.writeFileSync(go, "")
          const report = yield* managed.awaitTeardown
          assert.strictEqual(report._tag, "Exited")
          assert.include([...report.signalled], member)
          assert.isFalse(isAlive(member!))
        }).pipe(Effect.ensuring(Effect.sync(() => {
          killAll()
          fs.rmSync(path.dirname(go), { recursive: true, force: true })
        })))
    )
  })
})

/**
 * Waits until `pid` runs with `SHEPHERD_ID=cookie`: a background job of a shell shows the shell's
 * environment until it execs, and the table remembers the cookie a process had when first read.
 */
const execed = async (pid: number, cookie: string) => {
  const carries = () => {
    try {
      return fs.readFileSync(`/proc/${pid}/environ`, "latin1").split("\0").includes(`SHEPHERD_ID=${cookie}`)
    } catch {
      return false
    }
  }
  assert.isTrue(await waitUntil(carries, 60_000), `pid ${pid} execs with its cookie`)
}

describe.skipIf(!canChoosePid)("trust: a pid reused between two scans", () => {
  it("a carrier born at a pid the table knew as another process is found at the next scan", async () => {
    try {
      const table = NodeProcessTable.make()
      const reborn = await staged(async () => {
        // Not this process's child (the table re-reads its own children's cookies until they exec).
        const pid = Number(
          NodeChildProcess.execFileSync("sh", [
            "-c",
            `env -u SHEPHERD_ID ${marker} sleep 1000 </dev/null >/dev/null 2>&1 & echo $!`
          ], { encoding: "latin1" }).trim()
        )
        started.push(pid)
        const before = { pid }
        // The table learns the pid as a process without a cookie.
        assert.notInclude((await run(table.carriers("t-reuse~1:"))).map((c) => c.identity.pid), before.pid)
        process.kill(before.pid, "SIGKILL")
        assert.isTrue(await waitUntil(() => !fs.existsSync(`/proc/${before.pid}`), 60_000), "reaped")
        // The same pid, now a process of ours (it carries the cookie), born before the next scan.
        let reborn: number | undefined
        for (let attempt = 0; attempt < 50 && reborn !== before.pid; attempt++) {
          if (reborn !== undefined) process.kill(reborn, "SIGKILL")
          if (fs.existsSync(`/proc/${before.pid}`)) return undefined // a stranger has it
          reborn = Number(
            NodeChildProcess.execFileSync("sh", [
              "-c",
              `echo ${before.pid - 1} > /proc/sys/kernel/ns_last_pid; ` +
              `env SHEPHERD_ID=t-reuse~1:1 ${marker} sleep 998 </dev/null >/dev/null 2>&1 & echo $!`
            ], { encoding: "latin1" }).trim()
          )
          started.push(reborn)
        }
        return reborn === before.pid ? reborn : undefined
      })
      await execed(reborn, "t-reuse~1:1")
      const found = (await run(table.carriers("t-reuse~1:"))).map((c) => c.identity.pid)
      assert.include(found, reborn, "the cache did not take the new process for the old one")
    } finally {
      killAll()
    }
  })
})

describe.skipIf(!canChoosePid)("trust: a pid reused after the pid counter wrapped", () => {
  it("a carrier born at a pid the table knew, once allocation went round pid_max, is found", async () => {
    const pidMax = Number(fs.readFileSync("/proc/sys/kernel/pid_max", "latin1").trim())
    /** A process not ours to reap (its shell exits), `cookie` in its environment or none. */
    const start = (cookie: string | undefined, lastPid: number) =>
      Number(
        NodeChildProcess.execFileSync("sh", [
          "-c",
          `echo ${lastPid} > /proc/sys/kernel/ns_last_pid; ` +
          `env ${
            cookie === undefined ? "-u SHEPHERD_ID" : `SHEPHERD_ID=${cookie}`
          } ${marker} sleep 997 </dev/null >/dev/null 2>&1 & echo $!`
        ], { encoding: "latin1" }).trim()
      )
    try {
      const table = NodeProcessTable.make()
      // A process at a pid just above the reserved range, where allocation restarts after a wrap;
      // its parent shell waits for it, so its pid is free as soon as it is killed (this machine's
      // init reaps orphans only every second or two, and the table re-reads everything every 3 s).
      const reborn = await staged(async () => {
        let pid: number | undefined
        let parent: NodeChildProcess.ChildProcess | undefined
        for (let wanted = 300; wanted < 400 && pid === undefined; wanted++) {
          const shell = NodeChildProcess.spawn("sh", [
            "-c",
            `echo ${
              wanted - 1
            } > /proc/sys/kernel/ns_last_pid; env -u SHEPHERD_ID ${marker} sleep 997 </dev/null >/dev/null 2>&1 & echo $!; wait`
          ], { stdio: ["ignore", "pipe", "ignore"] })
          const got = await new Promise<number>((resolve) =>
            shell.stdout!.once("data", (chunk: Buffer) => resolve(Number(chunk.toString().trim())))
          )
          started.push(got)
          if (got === wanted) {
            pid = got
            parent = shell
          } else process.kill(got, "SIGKILL")
        }
        assert.isDefined(pid, "a free pid just above 300")
        // A few more pids go by, so the table's first listing sees the counter past ours.
        for (let i = 0; i < 3; i++) NodeChildProcess.execFileSync("true")
        assert.notInclude((await run(table.carriers("t-wrap~1:"))).map((c) => c.identity.pid), pid)
        const reaped = new Promise<void>((resolve) => parent!.on("exit", () => resolve()))
        process.kill(pid!, "SIGKILL")
        await reaped
        // Allocation runs up to pid_max and wraps (forward only: no pid is set back); the first free
        // pid after the wrap is ours again.
        let reborn: number | undefined
        for (let attempt = 0; attempt < 20 && reborn !== pid; attempt++) {
          if (fs.existsSync(`/proc/${pid}`)) return undefined // a stranger has it
          reborn = start("t-wrap~1:1", pidMax - 1)
          started.push(reborn)
          if (reborn !== pid) process.kill(reborn, "SIGKILL")
        }
        return reborn === pid ? reborn : undefined
      })
      await execed(reborn, "t-wrap~1:1")
      const found = (await run(table.carriers("t-wrap~1:"))).map((c) => c.identity.pid)
      assert.include(found, reborn, "the cache did not take the new process for the old one")
    } finally {
      killAll()
    }
  })
})
