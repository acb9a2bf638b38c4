/**
 * Adversarial (second round, revised after the third): a child of the fork
 * helper that is still searching a slow PATH (an automounted or hung network
 * directory; here symlink chains) keeps the helper blocked in uv_spawn() and
 * shows the helper's environment, not the tree's cookie, until its exec. The
 * second round made the host kill such a helper as stuck, and showed the
 * sweep, an `env -i` leader and a reaper tick could then lose the tree; since
 * the third round a helper with a child before its exec is busy, not stuck.
 */
import { afterAll, afterEach, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import * as ChildProcess from "effect/process/ChildProcess"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { cleanupPools, eventually, sh, show, usePool } from "./harness.ts"
import { isAlive, processes, readEnvVar } from "./support.ts"
import { helperPool, helpers, signal, makeSlowPath } from "./forkHelperSupport.ts"

afterEach(cleanupPools)

const kill = { grace: "300 millis", forceWait: "500 millis" } as const
/** Marks this file's helper and its pre-exec children (they show the helper's environment). */
const mark = `adv2-fh-${process.pid}-${Math.random().toString(36).slice(2)}`
let dir = ""
/**
 * 1200 slow PATH entries (see makeSlowPath): a search of a few seconds, within the default answer
 * budget (10 s). A search that outlasts the budget is adversarialForkHelper3SlowExec.test.ts's.
 */
let slowPath = ""

beforeAll(() => {
  process.env.ADV2_FH_MARK = mark
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "adv2-fh-"))
  slowPath = makeSlowPath(dir, 1200)
})
afterAll(() => {
  delete process.env.ADV2_FH_MARK
  for (const p of processes()) {
    if (p.cmdline.startsWith("sleep 1000.7")) signal(p.pid, "SIGKILL")
  }
  if (dir !== "") fs.rmSync(dir, { recursive: true, force: true })
})

/** Forks of this file's helpers that have not exec'd yet (they still show the helper's command line). */
const preExec = () =>
  processes().filter((p) =>
    p.ppid !== process.pid && p.cmdline.includes("forkHelper") && readEnvVar(p.pid, "ADV2_FH_MARK") === mark
  )
const running = (marker: string) =>
  processes().filter((p) => p.cmdline === `sleep ${marker}` && p.state !== "Z" && p.state !== "X")

const layer = (name: string) => helperPool({ name, kill, containment: "process-group" }, 10_000)

// Round 3 changed the premise: a helper blocked in a spawn whose child has not exec'd yet is busy, not
// stuck, and is no longer killed; the spawn ends as the kernel says. These keep the slow PATH as a
// regression test of that rule: the tree is then an ordinary tree of the pool, cookie or not (env -i),
// and nothing of it outlives the pool. (A helper that dies on its own while its child is still
// before its exec is a gap the README documents.)
describe("adversarial fork helper, round 2: a child still searching a slow PATH", () => {
  for (
    const [what, marker, command] of [
      [
        "a plain leader",
        "1000.71",
        () => ChildProcess.make("sleep", ["1000.71"], { env: { PATH: slowPath }, extendEnv: true })
      ],
      [
        "a leader that scrubs its environment (exec env -i)",
        "1000.72",
        () => ChildProcess.make("sh", ["-c", "exec env -i sleep 1000.72"], { env: { PATH: slowPath }, extendEnv: true })
      ]
    ] as const
  ) {
    it.live(
      `${what}: its helper is not killed, the reaper meanwhile changes nothing, the tree ends with the pool`,
      () => {
        let helper: number | undefined
        return usePool(layer(`adv2-fh-path-${marker.slice(-1)}`), (pool) =>
          Effect.gen(function*() {
            yield* Effect.scoped(pool.spawn(sh("exit 0")))
            helper = helpers()[0]?.pid
            assert.isDefined(helper)
            const spawn = yield* Effect.forkChild(Effect.result(pool.spawn(command())))
            yield* eventually("the helper's fork, before its exec", () => preExec().length > 0)
            yield* pool.reapNow
            const result = yield* Fiber.join(spawn)
            assert.strictEqual(
              result._tag === "Success" ? "Success" : result.failure.message,
              "Success",
              "the helper answered once its child had exec'd"
            )
            assert.isTrue(isAlive(helper!), "the busy helper was not killed")
            yield* eventually("the tree to run", () => running(marker).length > 0)
            yield* pool.reapNow
            assert.strictEqual(running(marker).length, 1, "the reaper left the pool's tree alone")
          })).pipe(
            Effect.tap(() =>
              Effect.sync(() => assert.deepStrictEqual(running(marker).map(show), [], "outlived the pool"))
            ),
            Effect.ensuring(Effect.sync(() => {
              if (helper !== undefined) signal(helper, "SIGKILL")
              for (const p of running(marker)) signal(p.pid, "SIGKILL")
            }))
          )
      },
      120_000
    )
  }
})
