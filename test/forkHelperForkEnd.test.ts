/**
 * The fork helper at the end of a long fork: a helper blocked in uv_spawn()
 * past the answer budget (a slow PATH search) is busy, not stuck, while its
 * child has not exec'd. Once the child has exec'd (or exited), the helper has
 * its answer to send, but on a loaded machine it may not run at once. A CI
 * run saw the host judge it in that moment: its child no longer a copy of it,
 * the helper not yet heard from, so it was killed and the spawn failed ("did
 * not answer a ping").
 *
 * Staged without timing assumptions: the helper is stopped while its child is
 * still searching PATH, and continued only once that child has exec'd and a
 * few of the host's checks (every 100 ms past the budget) have run.
 */
import { afterAll, afterEach, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import * as ChildProcess from "effect/process/ChildProcess"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { cleanupPools, eventually, sh, usePool } from "./harness.ts"
import { isAlive, processes } from "./support.ts"
import { helperPool, helpers, makeSlowPath, signal } from "./forkHelperSupport.ts"

afterEach(cleanupPools)

const kill = { grace: "300 millis", forceWait: "500 millis" } as const
let dir = ""
/** 1200 slow PATH entries (see makeSlowPath): a search of seconds, well past a 500 ms budget. */
let slowPath = ""

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "fh-fork-end-"))
  slowPath = makeSlowPath(dir, 1200)
})
afterAll(() => {
  if (dir !== "") fs.rmSync(dir, { recursive: true, force: true })
})

/** The command line of `pid` (`undefined` once it is gone). */
const cmdline = (pid: number): string | undefined => {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "latin1")
  } catch {
    return undefined
  }
}

describe("fork helper: the end of a fork past the answer budget", () => {
  it.live("a helper that answers once its child has exec'd is not killed for its silence", () => {
    let helper: number | undefined
    return usePool(
      helperPool({ name: "t-fh-fork-end", kill, containment: "process-group" }, 500),
      (pool) =>
        Effect.gen(function*() {
          // A loaded helper first (its start budget is not the point here).
          yield* Effect.scoped(Effect.flatMap(pool.spawn(sh("exit 0")), (m) => m.awaitExit))
          helper = helpers()[0]?.pid
          assert.isDefined(helper)
          const own = cmdline(helper!)!
          const slow = yield* Effect.forkChild(Effect.result(Effect.scoped(Effect.flatMap(
            pool.spawn(ChildProcess.make("sh", ["-c", "exit 0"], { env: { PATH: slowPath }, extendEnv: true })),
            (m) => m.awaitExit
          ))))
          // Its child, still a copy of it (searching PATH): stop the helper there.
          let child: number | undefined
          yield* eventually("the helper's fork", () => {
            child = processes().find((p) => p.ppid === helper && cmdline(p.pid) === own)?.pid
            return child !== undefined
          })
          signal(helper!, "SIGSTOP")
          // The child runs on: it execs `sh -c "exit 0"` and exits (a zombie its stopped parent keeps).
          yield* eventually("the child's exec", () => cmdline(child!) !== own)
          // Past the budget, the host looks every 100 ms: let it look a few times.
          yield* Effect.sleep("400 millis")
          signal(helper!, "SIGCONT")
          const result = yield* Fiber.join(slow)
          assert.strictEqual(result._tag, "Success", result._tag === "Failure" ? result.failure.message : "")
          assert.deepStrictEqual(result._tag === "Success" ? result.success : undefined, { code: 0, signal: null })
          assert.isTrue(isAlive(helper!), "the same helper still runs")
        })
    ).pipe(Effect.ensuring(Effect.sync(() => helper !== undefined && signal(helper, "SIGCONT"))))
  }, 60_000)
})
