/**
 * Adversarial: the fork helper's leader is not the host's child, so the host
 * cannot rely on "an unreaped child's pid names nothing else" any more: the
 * helper reaps the leader at once, while the host hears of the exit only
 * when the helper's `exit` message is read. Until then the pool believes the
 * leader alive and signals it by pid after an identity check (pid and start
 * time, in clock ticks of 10 ms). A process that gets the freed pid within
 * the leader's own clock tick passes that check and gets the pool's signal.
 *
 * Staged with `ns_last_pid` (root): the host's event loop is held (a GC pause)
 * from the spawn's return until the helper has reaped the leader and the
 * stranger holds its pid; then the tree's scope closes.
 *
 * The leader's own signal is safe: the host checks it through the leader's
 * kept stat descriptor. The stranger also leads a group with the tree's id,
 * and with the same pid and start time it passed for the container's leader
 * in the process table, so its group for the tree's group: the table listed
 * it as a member once the leader's exit was read (a failing test until stop
 * 12). The table now knows when the leader has exited (its exit reported, or
 * its stat descriptor reading ESRCH): a live process holding the tree's
 * group id then took it after the tree's group was empty, whatever its start
 * time, and the group counts for nothing (`Container.leaderExited`). Under
 * cgroup containment (auto here) the stranger is not in the tree's leaf either.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import { cleanupPools, sh, withPool } from "./harness.ts"
import { canChoosePid, isAlive, statOf, strangerOn } from "./support.ts"

afterEach(cleanupPools)

const strangers: Array<NodeChildProcess.ChildProcess> = []
afterEach(() => {
  for (const s of strangers.splice(0)) s.kill("SIGKILL")
})

const scenario = (containment: "process-group" | "auto") =>
  withPool(
    { name: "adv-fh-reuse", forkFrom: "helper", kill: { grace: "2 seconds" }, containment },
    (pool) =>
      Effect.gen(function*() {
        let staged = 0
        let freed = 0
        const tries: Array<string> = []
        const hit: Array<string> = []
        for (let attempt = 0; attempt < 60 && staged < 3; attempt++) {
          let stranger: NodeChildProcess.ChildProcess | undefined
          const result = yield* Effect.scoped(Effect.gen(function*() {
            const m = yield* pool.spawn(sh("exit 0", { stdin: "ignore", stdout: "ignore", stderr: "ignore" }))
            // The host is busy until the helper has reaped the leader.
            const end = Date.now() + 5_000
            while (fs.existsSync(`/proc/${m.pid}`) && Date.now() < end) { /* busy */ }
            // A leader still unreaped (a zombie the pool's side holds) keeps its pid: nothing to stage.
            if (fs.existsSync(`/proc/${m.pid}`)) {
              return { pid: m.pid, startTime: m.identity.startTime, strangerStart: undefined }
            }
            freed++
            stranger = strangerOn(m.pid, "ADV_FH_STRANGER")
            strangers.push(stranger)
            return { pid: m.pid, startTime: m.identity.startTime, strangerStart: statOf(stranger.pid!)?.startTime }
          }))
          const s = stranger
          if (s === undefined) continue
          tries.push(`${s.pid === result.pid ? "pid" : "other-pid"} ${result.strangerStart} vs ${result.startTime}`)
          if (s.pid !== undefined && s.pid === result.pid && result.strangerStart === result.startTime) {
            staged++
            // The scope has closed: the tree's teardown ran. The stranger must be untouched.
            if (!isAlive(s.pid!)) {
              const how = yield* Effect.callback<string>((resume) => {
                if (s.exitCode !== null || s.signalCode !== null) {
                  resume(Effect.succeed(`${s.exitCode} ${s.signalCode}`))
                } else s.once("exit", (code, sig) => resume(Effect.succeed(`${code} ${sig}`)))
              })
              hit.push(`pid ${s.pid} ended: ${how}`)
            }
          }
          s.kill("SIGKILL")
        }
        // A loaded machine may not let the reuse be staged at all: inconclusive, not a failure, where the
        // test must pass; the failing variant fails then too (it cannot show the hole closed).
        if (containment === "process-group") {
          assert.isAbove(
            staged,
            0,
            `could not stage a pid reuse within the leader's clock tick (${freed} freed): ${tries}`
          )
        }
        assert.deepStrictEqual(hit, [], `strangers signalled by the pool (of ${staged} staged)`)
      })
  )

describe.skipIf(!canChoosePid)("adversarial fork helper: pid reuse", () => {
  it.live(
    "a stranger that takes a reaped leader's pid within its clock tick is never signalled (cgroup containment)",
    () => scenario("auto")
  )
  it.live(
    "a stranger that takes a reaped leader's pid within its clock tick is never signalled (process group)",
    () => scenario("process-group")
  )
})
