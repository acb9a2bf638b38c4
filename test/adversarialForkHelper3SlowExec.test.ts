/**
 * Adversarial (third round): a healthy helper blocked in uv_spawn() for longer
 * than the default answer budget (10 s).
 *
 * The helper forks synchronously: uv_spawn() returns once the child has exec'd,
 * and libuv searches PATH in the child, one failed execve() per entry. A PATH
 * with a slow entry (an automounted or hung network directory; here symlink
 * chains) keeps the helper there past 10 s: it is not stuck, it is doing the
 * host's work, as the host itself would block in its own fork. The launcher
 * takes it for stuck and kills it: the slow spawn fails (where the host's own
 * fork succeeds), and every live tree of the helper is orphaned, its exit
 * status lost (`{ code: null, signal: null }` from /proc).
 *
 * Real processes; no timing assertion (the PATH is only made long enough to
 * pass the default budget on an idle machine; a loaded one only takes longer).
 */
import { afterAll, afterEach, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as ChildProcess from "effect/process/ChildProcess"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { cleanupPools, sh, withPool } from "./harness.ts"
import { processes } from "./support.ts"
import { signal, makeSlowPath } from "./forkHelperSupport.ts"

afterEach(cleanupPools)

const kill = { grace: "300 millis", forceWait: "500 millis" } as const
let dir = ""
/** 6000 slow PATH entries (see makeSlowPath): a search that outlasts the default answer budget of 10 s. */
let slowPath = ""

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "adv3-fh-slow-"))
  slowPath = makeSlowPath(dir, 6000)
})
afterAll(() => {
  for (const p of processes()) if (p.cmdline.startsWith("sleep 1000.96")) signal(p.pid, "SIGKILL")
  if (dir !== "") fs.rmSync(dir, { recursive: true, force: true })
})

describe("adversarial fork helper, round 3: a helper blocked in a slow exec", () => {
  it.live(
    "a spawn whose PATH search outlasts the budget: it runs, and the helper's live trees keep their exit codes",
    () => {
      const go = path.join(dir, "go")
      return withPool(
        { name: "adv3-fh-slow", forkFrom: "helper", kill, containment: "process-group" },
        (pool) =>
          Effect.gen(function*() {
            const live = yield* pool.spawn(sh(`while [ ! -e ${go} ]; do sleep 0.05; done; exit 7`))
            const slow = yield* Effect.result(Effect.scoped(Effect.flatMap(
              pool.spawn(ChildProcess.make("sh", ["-c", "exit 0"], { env: { PATH: slowPath }, extendEnv: true })),
              (m) => m.awaitExit
            )))
            fs.writeFileSync(go, "")
            const status = yield* live.awaitExit
            // The spawn ends as the kernel says (it ran, or exec refused the huge PATH: E2BIG), not
            // by the helper being killed for it; the helper's other tree keeps its exit code.
            if (slow._tag === "Failure") assert.notInclude(slow.failure.message, "did not answer")
            assert.deepStrictEqual(status, { code: 7, signal: null })
          })
      ).pipe(Effect.ensuring(Effect.sync(() => fs.writeFileSync(go, ""))))
    },
    120_000
  )
})
