/**
 * Adversarial (fourth round): a stranger takes a helper leader's pid within one
 * synchronous run of the host's teardowns. Found against a shortcut since
 * removed: the launcher named a sweep's leaders from one reading of the
 * helper's children, reused for up to 1 ms, and a leader that died, was reaped
 * and had its pid taken within that millisecond let the stranger have the
 * pool's signal. The launcher now keeps each leader's `/proc/<pid>/stat` open
 * (`Entry.statFd`): once the leader is reaped it reads ESRCH, whoever has the
 * pid.
 *
 * Staged with `ns_last_pid` (root), in one synchronous run of the host:
 * - tree X's teardown signals X's leader;
 * - tree A's leader is SIGKILLed (from outside: an OOM kill, a user); the helper
 *   reaps it; a stranger forks into its pid;
 * - tree A's teardown signals A's leader.
 * Under cgroup containment (auto here) A's empty leaf proves the leader "alone",
 * so its teardown signals it at once, within the same run. The stranger must live.
 * The attempts go on until 3 stagings were hit or 80 attempts were made.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { ProcessPool } from "@shepherd/core/ProcessPool"
import { Effect, Fiber, References } from "effect"
import { ChildProcess } from "effect/process"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import { helperPool } from "./forkHelperSupport.ts"
import { cleanupPools, track } from "./harness.ts"
import { canChoosePid, isAlive, killMatching, statOf } from "./support.ts"

afterEach(cleanupPools)

const forkers: Array<NodeChildProcess.ChildProcess> = []
const cleanup = () => {
  for (const f of forkers.splice(0)) f.kill("SIGKILL")
  killMatching((cmdline) => cmdline === "sleep 1000.41" || cmdline === "sleep 1000.42")
}
afterEach(cleanup)

describe.skipIf(!canChoosePid)("adversarial round 4: a stale reading of the helper's children", () => {
  it.live(
    "a stranger that takes a leader's pid within the reading's millisecond is never signalled",
    () =>
      Effect.gen(function*() {
        const results = yield* Effect.scoped(
          Effect.gen(function*() {
            const pool = yield* ProcessPool
            track(`${pool.poolId}:`)
            const sleep = ChildProcess.make("sleep", ["1000.41"], {
              stdin: "ignore",
              stdout: "ignore",
              stderr: "ignore"
            })
            let staged = 0
            const hit: Array<string> = []
            const notes: Array<string> = []
            // A stranger on demand: one `sleep` forked per line on its stdin.
            const f = NodeChildProcess.spawn("sh", ["-c", "while read x; do sleep 1000.42 & done"], {
              stdio: ["pipe", "ignore", "ignore"],
              detached: true,
              env: { PATH: process.env.PATH, ADV4_STRANGER: "1" }
            })
            forkers.push(f)
            for (let attempt = 0; attempt < 80 && hit.length < 3; attempt++) {
              const x = yield* pool.spawn(sleep)
              const a = yield* pool.spawn(sleep)
              const pid = a.pid
              // Both trees exec'd: nothing of them is in flight.
              yield* Effect.sleep(30)
              // One synchronous run from here to A's signal.
              const t0 = performance.now()
              const fx = yield* Effect.forkChild(x.terminate(), { startImmediately: true })
              const strangerIn = yield* Effect.sync(() => {
                process.kill(pid, "SIGKILL")
                while (fs.existsSync(`/proc/${pid}`) && performance.now() - t0 < 3) { /* the helper reaps */ }
                if (fs.existsSync(`/proc/${pid}`)) return false
                fs.writeFileSync("/proc/sys/kernel/ns_last_pid", `${pid - 1}`)
                f.stdin!.write("x\n")
                while (statOf(pid)?.ppid !== f.pid && performance.now() - t0 < 3) { /* the stranger forks */ }
                return statOf(pid)?.ppid === f.pid
              })
              const fa = yield* Effect.forkChild(a.terminate(), { startImmediately: true })
              notes.push(`${strangerIn ? "staged" : "not staged"} ${(performance.now() - t0).toFixed(2)} ms`)
              const report = yield* Fiber.join(fa)
              yield* Fiber.join(fx)
              if (strangerIn) {
                staged++
                if (report.signalled.includes(pid) || !isAlive(pid)) {
                  hit.push(
                    `stranger ${pid}: A's teardown ${report._tag}, signalled [${report.signalled}], alive ${
                      isAlive(pid)
                    }`
                  )
                }
                try {
                  process.kill(pid, "SIGKILL")
                } catch {
                  // gone
                }
              }
            }
            return { staged, hit, notes }
          }).pipe(
            Effect.provide(helperPool({ name: "adv4-stale", kill: { grace: "2 seconds" } }, 10_000), { local: true }),
            Effect.provideService(References.MinimumLogLevel, "Error")
          )
        )
        assert.deepStrictEqual(
          results.hit,
          [],
          `strangers signalled (of ${results.staged} staged): ${results.notes.join(", ")}`
        )
      }).pipe(Effect.ensuring(Effect.sync(cleanup))),
    120_000
  )
})
