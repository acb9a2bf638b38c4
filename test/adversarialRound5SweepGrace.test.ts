/**
 * Adversarial (fifth round): in a sweep, each tree's grace deadline now counts
 * from its own signal (before: from the end of the whole sweep).
 *
 * One session of 150 trees is closed at once. Every other tree traps SIGTERM and
 * needs a third of its grace to finish cleanly (its leader leaves a marker, then
 * exits 0); the others ignore SIGTERM (they must be SIGKILLed, each at its own
 * deadline, while the cooperative trees signalled after them are still inside
 * their grace). The first trees of the sweep have extra members (signalled after
 * an identity check in the table, which makes the sweep longer). Every
 * cooperative tree must be Graceful (its marker written: not SIGKILLed in its
 * grace), every stubborn one Forced, every slot back, nothing left.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { awaitStats, cleanupPools, eventually, sh, withPool } from "./harness.ts"
import { survivors } from "./support.ts"

afterEach(cleanupPools)

const n = 150

describe("adversarial round 5: a tree's grace in a sweep of many", () => {
  it.live("cooperative trees needing a third of their grace finish cleanly; stubborn ones are forced", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "adv5-grace-"))
    return withPool(
      { name: "adv5-grace", forkFrom: "helper", slots: n, kill: { grace: "3 seconds" } },
      (pool, prefix) =>
        Effect.gen(function*() {
          const quiet = { stdin: "ignore", stdout: "ignore", stderr: "ignore" } as const
          const cooperative = (i: number) => i % 2 === 1
          const script = (i: number) => {
            const extra = i < 20 ? "sleep 1000 & sleep 1000 & sleep 1000 & " : ""
            return cooperative(i)
              // `wait` returns on the trapped SIGTERM; the trap's own sleep starts after the sweep.
              ? `${extra}trap 'sleep 1; touch ${path.join(dir, String(i))}; exit 0' TERM; sleep 1000 & wait`
              : `${extra}trap '' TERM; sleep 1000 & wait`
          }
          const ms = yield* Effect.forEach(
            Array.from({ length: n }, (_, i) => i),
            (i) => pool.spawn(sh(script(i), quiet), { session: "many" }),
            { concurrency: 8 }
          )
          yield* eventually("every tree's members", () => {
            const count = new Map<string, number>()
            for (const p of survivors(prefix)) count.set(p.shepherdId!, (count.get(p.shepherdId!) ?? 0) + 1)
            return ms.every((m, i) => (count.get(m.shepherdId) ?? 0) >= (i < 20 ? 5 : 2))
          })
          const reports = yield* pool.closeSession("many")
          assert.strictEqual(reports.length, n)
          const byPid = new Map(reports.map((r) => [r.pid, r]))
          const wrong: Array<string> = []
          for (const [i, m] of ms.entries()) {
            const r = byPid.get(m.pid)
            const want = cooperative(i) ? "Graceful" : "Forced"
            const marker = fs.existsSync(path.join(dir, String(i)))
            if (r?._tag !== want || marker !== cooperative(i)) {
              wrong.push(`tree ${i}: ${r?._tag} (want ${want}), marker ${marker}, ${r?.durationMs} ms`)
            }
          }
          assert.deepStrictEqual(wrong, [])
          yield* awaitStats(pool, "every slot back", (s) => s.inUse === 0 && s.waiting === 0)
        })
    ).pipe(Effect.ensuring(Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))))
  }, 120_000)
})
