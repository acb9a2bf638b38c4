/**
 * Adversarial (fourth round): two pools in one host, each with its own fork
 * helper. Pool 1's leader A dies (its exit unread by the host); pool 2's next tree
 * B is forked into A's pid within A's clock tick (`ns_last_pid`, root); then A's
 * scope closes, in the same synchronous run of the host.
 *
 * Two situations are tried, alternately: no spawn of pool 1 unanswered, and a
 * spawn C of pool 1 forked but unanswered (written when the launcher's check
 * differed between them; it now reads A's kept stat descriptor in both, which
 * reads ESRCH once A is reaped). Either way B must survive A's teardown.
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
  killMatching((cmdline) => cmdline.endsWith("sleep 1000.44") || cmdline.endsWith("sleep 1000.45"))
}
afterEach(cleanup)

const childrenOf = (pid: number): Array<number> => {
  try {
    const text = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, "latin1").trim()
    return text === "" ? [] : text.split(" ").map(Number)
  } catch {
    return []
  }
}

describe.skipIf(!canChoosePid)("adversarial round 4: another pool's tree in a reaped leader's pid", () => {
  it.live(
    "a tree of pool 2 forked into pool 1's reaped leader's pid survives that leader's teardown",
    () =>
      Effect.gen(function*() {
        const quiet = { stdin: "ignore", stdout: "ignore", stderr: "ignore" } as const
        const sleep = (n: string) => ChildProcess.make("sleep", [n], quiet)
        const run = (pool1: ProcessPool["Service"], pool2: ProcessPool["Service"]) =>
          Effect.gen(function*() {
            track(`${pool1.poolId}:`)
            track(`${pool2.poolId}:`)
            yield* Effect.scoped(pool1.spawn(ChildProcess.make("true", [], quiet)))
            const helper1 = helpers()[0]!.pid
            yield* Effect.scoped(pool2.spawn(ChildProcess.make("true", [], quiet)))
            const helper2 = helpers().find((h) => h.pid !== helper1)!.pid
            const staged = { children: 0, fallback: 0 }
            const hit: Array<string> = []
            const notes: Array<string> = []
            for (let attempt = 0; attempt < 80 && (staged.children < 3 || staged.fallback < 3); attempt++) {
              const unanswered = attempt % 2 === 1
              const outcome = yield* Effect.scoped(Effect.gen(function*() {
                const a = yield* pool1.spawn(sleep("1000.44"))
                const pid = a.pid
                const end = performance.now() + 50
                // One synchronous run from here: the host reads nothing of either helper.
                process.kill(pid, "SIGKILL")
                while (fs.existsSync(`/proc/${pid}`) && performance.now() < end) { /* helper 1 reaps A */ }
                if (fs.existsSync(`/proc/${pid}`)) return "A not reaped"
                let fc: Fiber.Fiber<unknown, unknown> | undefined
                if (unanswered) {
                  const before = childrenOf(helper1).length
                  fc = yield* Effect.forkChild(pool1.spawn(sleep("1000.45")), { startImmediately: true })
                  while (childrenOf(helper1).length === before && performance.now() < end) { /* helper 1 forks C */ }
                }
                fs.writeFileSync("/proc/sys/kernel/ns_last_pid", `${pid - 1}`)
                const fb = yield* Effect.forkChild(pool2.spawn(sleep("1000.45")), { startImmediately: true })
                while (statOf(pid)?.ppid !== helper2 && performance.now() < end) { /* helper 2 forks B */ }
                const b = statOf(pid)
                if (b?.ppid !== helper2 || b.startTime !== a.identity.startTime) {
                  yield* Fiber.join(fb)
                  if (fc !== undefined) yield* Fiber.join(fc)
                  return b?.ppid !== helper2 ? "B elsewhere" : `+${Number(b.startTime) - Number(a.identity.startTime)}`
                }
                if (unanswered) staged.fallback++
                else staged.children++
                const report = yield* Fiber.join(yield* Effect.forkChild(a.terminate(), { startImmediately: true }))
                yield* Fiber.join(fb)
                if (fc !== undefined) yield* Fiber.join(fc)
                const survived = isAlive(pid) && statOf(pid)?.startTime === b.startTime
                if (report.signalled.includes(pid) || !survived) {
                  hit.push(
                    `${
                      unanswered ? "fallback" : "children"
                    }: B ${pid} signalled [${report.signalled}], alive ${survived}`
                  )
                }
                return unanswered ? "staged (fallback)" : "staged (children)"
              }))
              notes.push(outcome)
            }
            return { staged, hit, notes }
          })
        const pool = (name: string) => helperPool({ name, kill: { grace: "2 seconds" } }, 10_000)
        const results = yield* Effect.scoped(Effect.gen(function*() {
          const pool1 = yield* ProcessPool
          return yield* Effect.scoped(Effect.gen(function*() {
            const pool2 = yield* ProcessPool
            return yield* run(pool1, pool2)
          })).pipe(Effect.provide(pool("adv4-two-2"), { local: true }))
        })).pipe(
          Effect.provide(pool("adv4-two-1"), { local: true }),
          Effect.provideService(References.MinimumLogLevel, "Error")
        )
        assert.deepStrictEqual(results.hit, [], `pool 2's trees signalled by pool 1: ${results.notes.join(", ")}`)
        assert.isAbove(
          results.staged.children + results.staged.fallback,
          0,
          `never staged: ${results.notes.join(", ")}`
        )
      }).pipe(Effect.ensuring(Effect.sync(cleanup))),
    120_000
  )
})
