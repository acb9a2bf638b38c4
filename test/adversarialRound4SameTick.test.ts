/**
 * Adversarial (fourth round): a tree of the same pool takes the pid of a leader
 * whose exit the host has not read yet.
 *
 * Pid, start time (10 ms clock ticks) and parent cannot tell two trees of one
 * fork helper apart: the pool's next tree, forked into the reaped leader's pid
 * within the same clock tick, passed for the old leader and got its teardown's
 * signal (found when a sweep read the helper's children, and with the stat check
 * it fell back to while a spawn was unanswered; as old as the helper). The
 * launcher now keeps each leader's `/proc/<pid>/stat` open (`Entry.statFd`): once
 * the leader is reaped it reads ESRCH, whoever has the pid since. Under
 * cgroup containment (auto here) the old leader's empty leaf proves it "alone",
 * so the teardown signals it at once, without a scan (which would have read the
 * exit first).
 *
 * Staged with `ns_last_pid` (root), in one synchronous run of the host: A's
 * leader dies as soon as its spawn returns (SIGKILLed from outside: the OOM
 * killer, a user; or a command that fails at once) and is reaped by the helper,
 * its exit unread by the host; B is
 * spawned (its request sent, its answer not read) and forked into A's pid; A's
 * scope closes. An attempt counts when B holds A's pid with A's start time. B must
 * survive A's teardown.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { ProcessPool } from "@shepherd/core/ProcessPool"
import { Effect, Fiber, References } from "effect"
import { ChildProcess } from "effect/process"
import * as fs from "node:fs"
import { helperPool, helpers } from "./forkHelperSupport.ts"
import { cleanupPools, track } from "./harness.ts"
import { canChoosePid, isAlive, killMatching, statOf } from "./support.ts"

afterEach(cleanupPools)

const cleanup = () => {
  killMatching((cmdline) => cmdline.endsWith("sleep 1000.43"))
}
afterEach(cleanup)

describe.skipIf(!canChoosePid)("adversarial round 4: the pool's next tree in a reaped leader's pid", () => {
  it.live(
    "a tree forked into a reaped leader's pid within its clock tick survives that leader's teardown",
    () =>
      Effect.gen(function*() {
        const results = yield* Effect.scoped(
          Effect.gen(function*() {
            const pool = yield* ProcessPool
            track(`${pool.poolId}:`)
            const quiet = { stdin: "ignore", stdout: "ignore", stderr: "ignore" } as const
            let staged = 0
            const hit: Array<string> = []
            const notes: Array<string> = []
            // The helper, started by a first tree.
            yield* Effect.scoped(pool.spawn(ChildProcess.make("true", [], quiet)))
            const helper = helpers()[0]!.pid
            for (let attempt = 0; attempt < 80 && hit.length < 3; attempt++) {
              const outcome = yield* Effect.scoped(Effect.gen(function*() {
                const a = yield* pool.spawn(ChildProcess.make("sleep", ["1000.43"], quiet))
                const pid = a.pid
                // From here on, one synchronous run: the host reads nothing of the helper. A's leader
                // ends at once (killed from outside, or a command that fails at once).
                process.kill(pid, "SIGKILL")
                const end = performance.now() + 50
                while (fs.existsSync(`/proc/${pid}`) && performance.now() < end) { /* the helper reaps A */ }
                if (fs.existsSync(`/proc/${pid}`)) return "A not reaped"
                fs.writeFileSync("/proc/sys/kernel/ns_last_pid", `${pid - 1}`)
                const fb = yield* Effect.forkChild(pool.spawn(ChildProcess.make("sleep", ["1000.43"], quiet)), {
                  startImmediately: true
                })
                while (statOf(pid)?.ppid !== helper && performance.now() < end) { /* the helper forks B */ }
                const b = statOf(pid)
                if (b?.ppid !== helper || b.startTime !== a.identity.startTime) {
                  yield* Fiber.join(fb)
                  return b?.ppid !== helper ? "B elsewhere" : `+${Number(b.startTime) - Number(a.identity.startTime)}`
                }
                staged++
                const report = yield* Fiber.join(yield* Effect.forkChild(a.terminate(), { startImmediately: true }))
                const bTree = yield* Fiber.join(fb)
                const survived = isAlive(pid) && statOf(pid)?.startTime === b.startTime
                if (report.signalled.includes(pid) || !survived) {
                  hit.push(
                    `B (pid ${bTree.pid}) after A's teardown: ${report._tag}, signalled [${report.signalled}], B alive ${survived}`
                  )
                }
                return "staged"
              }))
              notes.push(outcome)
            }
            return { staged, hit, notes }
          }).pipe(
            Effect.provide(helperPool({ name: "adv4-tick", kill: { grace: "2 seconds" } }, 10_000), { local: true }),
            Effect.provideService(References.MinimumLogLevel, "Error")
          )
        )
        assert.deepStrictEqual(
          results.hit,
          [],
          `trees of the pool signalled by another tree's teardown (of ${results.staged} staged): ${
            results.notes.join(", ")
          }`
        )
      }).pipe(Effect.ensuring(Effect.sync(cleanup))),
    120_000
  )
})
