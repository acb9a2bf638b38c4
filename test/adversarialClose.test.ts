/**
 * Adversarial tests of the session-close driver (internal/terminate.ts `terminateMany`, issue 11:
 * it wakes only trees whose leader exited or whose kill was escalated, one round per burst of
 * exits, and proves lone leaders without a scan). A session of mixed trees whose leaders end at
 * scattered moments around the SIGTERM, the grace deadline and the SIGKILL: the close must end
 * (no lost wake-up: the harness's 60 s hang guard), nothing may survive, and each report must
 * match what the tree did.
 */
import { afterAll, afterEach, assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { assertNoSurvivors, awaitMembers, cleanupPools, sh, withPool } from "./harness.ts"

afterEach(() => {
  cleanupPools()
  fs.rmSync(go, { force: true })
})
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

const graceMs = 400
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-adv-close-"))
const go = path.join(dir, "go")
const kill = { grace: `${graceMs} millis`, forceWait: "500 millis" } as const

/** Shapes, each with the reports it may end with. */
const shapes: ReadonlyArray<
  { readonly script: (i: number) => string; readonly members: number; readonly may: ReadonlyArray<string> }
> = [
  // Dies on SIGTERM, with its child.
  { script: () => "sleep 1000 & wait", members: 2, may: ["Graceful"] },
  // Exits some time after SIGTERM (before the grace ends), its child dies on SIGTERM.
  {
    script: (i) => `trap 'sleep 0.${String(i % 3 + 1)}; exit 0' TERM; sleep 1000 & wait; wait`,
    members: 2,
    may: ["Graceful"]
  },
  // The leader dies on SIGTERM; a member of its group ignores it: SIGKILL after the grace.
  { script: () => "(trap '' TERM; sleep 1000) & sleep 1000 & wait", members: 3, may: ["Forced"] },
  // Ignores SIGTERM entirely.
  { script: () => "trap '' TERM; sleep 1000 & wait", members: 2, may: ["Forced"] },
  // On SIGTERM forks a replacement that ignores it, then exits: found by a fresh look, SIGKILLed.
  {
    script: () => "trap '(trap \"\" TERM; exec sleep 1000) & exit 0' TERM; sleep 1000 & wait; wait",
    members: 2,
    may: ["Forced"]
  },
  // Exits by itself around the grace deadline (once the test creates `go`), ignoring SIGTERM meanwhile.
  {
    script: () => `trap '' TERM; while [ ! -e ${go} ]; do sleep 0.02; done; exit 0`,
    members: 1,
    may: ["Exited", "Graceful", "Forced"]
  },
  // A lone leader (the fork witness may prove it alone) that dies on SIGTERM.
  { script: () => "exec sleep 1000", members: 1, may: ["Graceful"] }
]

describe.runIf(process.platform === "linux")(
  "adversarial: a session close of trees that end at scattered moments",
  () => {
    for (const round of [1, 2]) {
      it.live(`70 mixed trees close with every report true and nothing left (round ${round})`, () =>
        withPool({ name: `adv-close-${round}`, slots: 80, kill }, (pool, prefix) =>
          Effect.gen(function*() {
            const session = yield* pool.session(`close-${round}`)
            const trees = yield* Effect.forEach(
              Array.from({ length: 70 }, (_, i) => i),
              (i) => {
                const shape = shapes[i % shapes.length]!
                return Effect.map(session.spawn(sh(shape.script(i))), (m) => ({ m, shape, i }))
              },
              { concurrency: 16 }
            )
            for (const t of trees) yield* awaitMembers(t.m.shepherdId, t.shape.members)
            // One tree is escalated to SIGKILL while the close runs (an escalation wakes its tree).
            const escalated = trees.find((t) => t.i % shapes.length === 3)!
            const closing = yield* Effect.forkChild(pool.closeSession(`close-${round}`))
            yield* Effect.sleep(graceMs / 4)
            const forced = yield* escalated.m.terminate({ signal: "SIGKILL" })
            // The self-exiting trees go around the grace deadline (when is not asserted).
            yield* Effect.sleep(graceMs / 2)
            fs.writeFileSync(go, "")
            const reports = yield* Fiber.join(closing)
            assert.strictEqual(reports.length, 70)
            assertNoSurvivors(prefix)
            const byId = new Map(reports.map((r) => [r.shepherdId, r]))
            const wrong: Array<string> = []
            for (const t of trees) {
              const r = byId.get(t.m.shepherdId)
              if (r === undefined) {
                wrong.push(`${t.i}: no report`)
                continue
              }
              const may = t === escalated ? ["Forced"] : t.shape.may
              if (!may.includes(r._tag)) wrong.push(`${t.i} (${t.shape.script(t.i)}): ${r._tag}`)
            }
            assert.strictEqual(forced._tag, "Forced")
            assert.deepStrictEqual(wrong, [])
          })))
    }
  }
)
