/**
 * Adversarial tests of the fork witness (issue 11) that it withstands: each leader leaves a
 * descendant behind in a shape that might slip past "the kernel's fork count and pid clock, and a
 * look at every pid handed out since", then exits by itself; the tree's teardown must end the
 * descendant (the report is Exited with the descendant signalled) and nothing may survive.
 * (The shape that does break it, a pid wrap made of failed forks, is in adversarialPidWrap.test.ts.)
 *
 * Every descendant here is settled before its leader exits (no execve() in flight): a process
 * inside execve() shows an empty environ, which the /proc scan misses whatever the witness says
 * (adversarialExecRace.test.ts); these tests are about the witness.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import type { ProcessPool } from "@shepherd/core/ProcessPool"
import { Effect, Fiber } from "effect"
import { ChildProcess } from "effect/process"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { assertNoSurvivors, cleanupPools, sh, withPool } from "./harness.ts"
import { isAlive, processes } from "./support.ts"

afterEach(cleanupPools)

const kill = { grace: "300 millis", forceWait: "500 millis" } as const
const node = process.execPath

/** Live processes whose command line carries `marker`. */
const marked = (marker: string) =>
  processes().filter((p) => p.cmdline.includes(marker) && p.state !== "Z" && p.state !== "X")

const killMarked = (marker: string) => {
  for (const p of marked(marker)) {
    try {
      process.kill(p.pid, "SIGKILL")
    } catch {
      // gone
    }
  }
}

/**
 * Spawns `command` (whose leader leaves a descendant carrying `marker` in its command line and
 * writes its pid to `pidFile` before exiting by itself), waits for the tree's report, and checks
 * that the descendant was found and is gone.
 */
const leavesBehind = (
  pool: ProcessPool["Service"],
  prefix: string,
  command: ChildProcess.StandardCommand,
  pidFile: string,
  marker: string
) =>
  Effect.gen(function*() {
    const managed = yield* pool.spawn(command, { session: "s" })
    const report = yield* managed.awaitTeardown
    const text = fs.existsSync(pidFile) ? fs.readFileSync(pidFile, "latin1").trim() : ""
    const left = marked(marker).map((p) => `${p.pid} pgid ${p.pgid}: ${p.cmdline}`)
    assert.deepStrictEqual(left, [], `report ${report._tag}, signalled ${JSON.stringify(report.signalled)}`)
    assert.strictEqual(report._tag, "Exited")
    if (text !== "") {
      const pid = Number(text)
      assert.isFalse(isAlive(pid))
      assert.include([...report.signalled], pid, "the descendant was found (not proven absent)")
    }
    assertNoSurvivors(prefix)
  })

/** `sh -c script marker` (the marker as $0 of the script: in the command line of every forked subshell). */
const shm = (script: string, marker: string) => ChildProcess.make("sh", ["-c", script, marker])

const mkfifo = (dir: string) => {
  const fifo = path.join(dir, "fifo")
  NodeChildProcess.execFileSync("mkfifo", [fifo])
  return fifo
}

const withDir = <A, E, R>(f: (dir: string) => Effect.Effect<A, E, R>) =>
  Effect.suspend(() => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-adv-witness-"))
    return f(dir).pipe(Effect.ensuring(Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))))
  })

// Both witnesses: the host's own (forkWitness) and the fork helper's (its mark, NodeHelperLauncher).
describe.runIf(process.platform === "linux").each(["host", "helper"] as const)(
  "adversarial: the fork witness holds (forked by the %s)",
  (forkFrom) => {
    it.live("a descendant forked by a worker thread, the leader exiting at once", () =>
      withDir((dir) =>
        withPool({ forkFrom, name: "adv-w-thread", kill }, (pool, prefix) => {
          const marker = `adv-w-thread-${path.basename(dir)}`
          const pidFile = path.join(dir, "pid")
          const worker = `
          const { spawn } = require("node:child_process")
          const fs = require("node:fs")
          const c = spawn("sleep", ["1000"], { stdio: "ignore", env: { ...process.env, ADV_MARK: "${marker}" } })
          // Settled: exec'd, its environ readable.
          const read = (f) => { try { return fs.readFileSync("/proc/" + c.pid + "/" + f, "latin1") } catch { return "" } }
          while (!read("cmdline").startsWith("sleep") || !read("environ").includes("ADV_MARK=")) {}
          fs.writeFileSync("${pidFile}", String(c.pid))
          require("node:worker_threads").parentPort.postMessage("forked")`
          const main = `
          const { Worker } = require("node:worker_threads")
          new Worker(${JSON.stringify(worker)}, { eval: true }).on("message", () => process.exit(0))`
          return leavesBehind(pool, prefix, ChildProcess.make(node, ["-e", main, marker]), pidFile, marker).pipe(
            Effect.ensuring(Effect.sync(() => killMarked(marker)))
          )
        })
      ))

    it.live("a descendant forked by a python thread (no exec), the process exiting at once", () =>
      withDir((dir) =>
        withPool({ forkFrom, name: "adv-w-pthread", kill }, (pool, prefix) => {
          const marker = `adv-w-pthread-${path.basename(dir)}`
          const pidFile = path.join(dir, "pid")
          // python's os.fork from a thread: the child of a thread (it stays python, sleeping), the
          // process then exits.
          const script = [
            "import os, threading, sys, time",
            "def f():",
            "    pid = os.fork()",
            "    if pid == 0:",
            "        time.sleep(1000)",
            "        os._exit(0)",
            `    open("${pidFile}", "w").write(str(pid))`,
            "t = threading.Thread(target=f); t.start(); t.join()",
            "os._exit(0)"
          ].join("\n")
          return leavesBehind(pool, prefix, ChildProcess.make("python3", ["-c", script, marker]), pidFile, marker).pipe(
            Effect.ensuring(Effect.sync(() => killMarked(marker)))
          )
        })
      ))

    it.live("a descendant in a new pid namespace (unshare --pid --fork)", () =>
      withDir((dir) =>
        withPool({ forkFrom, name: "adv-w-pidns", kill }, (pool, prefix) => {
          const marker = `adv-w-pidns-${path.basename(dir)}`
          const pidFile = path.join(dir, "pid")
          const started = path.join(dir, "started")
          const fifo = mkfifo(dir)
          // The descendant is pid 1 of its namespace (a shell blocked on a FIFO, no exec in flight);
          // the leader exits once it runs.
          const script = `unshare --pid --fork sh -c 'exec 3<>${fifo}; echo $$ > ${started}; read x <&3' ${marker} & ` +
            `while [ ! -s ${started} ]; do :; done; exit 0`
          return leavesBehind(pool, prefix, sh(script), pidFile, marker).pipe(
            Effect.ensuring(Effect.sync(() => killMarked(marker)))
          )
        })
      ))

    it.live("a descendant forked as the leader exits (no pause), 20 times", () =>
      withDir((dir) =>
        withPool({ forkFrom, name: "adv-w-atexit", slots: 4, kill }, (pool, prefix) =>
          Effect.gen(function*() {
            const marker = `adv-w-atexit-${path.basename(dir)}`
            const fifo = mkfifo(dir)
            yield* Effect.forEach(
              Array.from({ length: 20 }, (_, i) => i),
              (i) =>
                Effect.gen(function*() {
                  // A forked subshell (no exec) blocked on a FIFO, forked as the leader exits.
                  const managed = yield* pool.spawn(shm(`(exec 3<>${fifo}; read x <&3) & exit 0`, `${marker}-${i}`), {
                    session: "s"
                  })
                  const report = yield* managed.awaitTeardown
                  assert.strictEqual(report._tag, "Exited")
                }),
              { concurrency: 4, discard: true }
            )
            const left = marked(marker)
            killMarked(marker)
            assert.deepStrictEqual(left.map((p) => p.cmdline), [])
            assertNoSurvivors(prefix)
          }))
      ))

    it.live("a descendant hidden behind a burst of 300 short-lived forks (more than 64 foreign pids)", () =>
      withDir((dir) =>
        withPool({ forkFrom, name: "adv-w-burst", kill }, (pool, prefix) => {
          const marker = `adv-w-burst-${path.basename(dir)}`
          const pidFile = path.join(dir, "pid")
          const script = `i=0; while [ $i -lt 300 ]; do /bin/true; i=$((i+1)); done; ` +
            `sh -c 'exec sleep 1000' ${marker} & echo $! > ${pidFile}; ` +
            `i=0; while [ $i -lt 300 ]; do /bin/true; i=$((i+1)); done; exit 0`
          return leavesBehind(pool, prefix, sh(script), pidFile, marker).pipe(
            Effect.ensuring(Effect.sync(() => killMarked(marker)))
          )
        })
      ))

    it.live("a setsid descendant that keeps the cookie, among concurrent pools spawning in the same host", () =>
      withDir((dir) =>
        withPool(
          { forkFrom, name: "adv-w-other", slots: 8, kill },
          (other) =>
            withPool({ forkFrom, name: "adv-w-setsid", kill }, (pool, prefix) => {
              const marker = `adv-w-setsid-${path.basename(dir)}`
              const pidFile = path.join(dir, "pid")
              const fifo = mkfifo(dir)
              // The other pool's trees end and start all the while (its own forks, skipped by the walk).
              const churn = Effect.forEach(
                Array.from({ length: 40 }, (_, i) => i),
                () => Effect.flatMap(other.spawn(sh("sleep 0.01 & exit 0"), { session: "o" }), (m) => m.awaitTeardown),
                { concurrency: 8, discard: true }
              )
              return Effect.gen(function*() {
                const fiber = yield* Effect.forkChild(churn)
                for (let i = 0; i < 5; i++) {
                  fs.rmSync(pidFile, { force: true })
                  yield* leavesBehind(
                    pool,
                    prefix,
                    sh(
                      `setsid sh -c 'exec 3<>${fifo}; echo $$ > ${pidFile}; read x <&3' ${marker} & ` +
                        `while [ ! -s ${pidFile} ]; do :; done; exit 0`
                    ),
                    pidFile,
                    marker
                  )
                }
                yield* Fiber.join(fiber)
              }).pipe(Effect.ensuring(Effect.sync(() => killMarked(marker))))
            })
        )
      ))
  }
)
