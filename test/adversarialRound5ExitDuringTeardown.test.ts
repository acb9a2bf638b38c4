/**
 * Adversarial (fifth round): a leader's exit while its tree's teardown already
 * runs now starts a watcher only when the pool's policy would escalate that
 * teardown (`escalates(policy, running)`: SIGKILL, or a shorter grace).
 *
 * The paths of a leader that exits during a running teardown:
 * - a session close (the pool's own policy): the leader dies on SIGTERM at once,
 *   a member it leaves behind needs a second of its three to finish cleanly;
 * - the same, the leader trapping SIGTERM and exiting on its own (code 3) half a
 *   second later, with no member;
 * - `terminate({ grace })` with a grace LONGER than the pool's: the pool's policy
 *   "escalates" it, so the leader's exit now (as before) fires the escalation;
 * - the same without members;
 * - `terminate({ grace })` with a shorter grace than the pool's (no watcher now).
 * Every tree must end, its report be right (Graceful: every member left within
 * the grace it was given), its slot come back, and a member that needs only
 * part of its grace must be allowed to finish (its marker written), not SIGKILLed.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import type { ManagedProcess } from "@shepherd/core/ManagedProcess"
import type { ProcessPool } from "@shepherd/core/ProcessPool"
import type { Teardown } from "@shepherd/core/Teardown"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { awaitMembers, awaitStats, cleanupPools, sh, withPool } from "./harness.ts"

afterEach(cleanupPools)

const node = JSON.stringify(process.execPath)
const mark = "adv5-exitdt"

/** A node process (marked) that, on SIGTERM, takes `ms` to finish, then writes `marker` and exits `code`. */
const slowOnTerm = (ms: number, marker: string, code: number) =>
  `${node} -e ${
    JSON.stringify(
      `process.title=${JSON.stringify(mark)};process.on("SIGTERM",()=>setTimeout(()=>{require("fs").writeFileSync(${
        JSON.stringify(marker)
      },"");process.exit(${code})},${ms}));setInterval(()=>{},1e6)`
    )
  } ${mark}`

const config = { name: "adv5-exitdt", forkFrom: "helper" as const, slots: 1, kill: { grace: "3 seconds" } }

/** A tree whose leader (sh) dies on SIGTERM at once, leaving a member that needs 1 s of its grace. */
const withMember = (marker: string) => sh(`${slowOnTerm(1_000, marker, 0)} & wait`)
/** A lone leader that traps SIGTERM and exits on its own (code 3) after 500 ms. */
const lone = (marker: string) => sh(`exec ${slowOnTerm(500, marker, 3)}`)

const body = (
  make: (marker: string) => ReturnType<typeof sh>,
  members: number,
  stop: (pool: ProcessPool["Service"], m: ManagedProcess) => Effect.Effect<ReadonlyArray<Teardown>>
) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "adv5-exitdt-"))
  const marker = path.join(dir, "done")
  return withPool(config, (pool) =>
    Effect.gen(function*() {
      const m = yield* pool.spawn(make(marker), { session: "s" })
      yield* awaitMembers(m.shepherdId, members)
      // Give node the time to install its handler: wait until the member's title shows.
      yield* awaitMembers(m.shepherdId, members).pipe(
        Effect.repeat({ until: (ps) => ps.filter((p) => p.cmdline.startsWith(mark)).length >= 1 })
      )
      const reports = yield* stop(pool, m)
      assert.strictEqual(reports.length, 1)
      const report = reports[0]!
      assert.strictEqual(
        fs.existsSync(marker),
        true,
        `the member needing 1 s of its grace was not allowed to finish: ${JSON.stringify(report)}`
      )
      assert.strictEqual(report._tag, "Graceful", JSON.stringify(report))
      // The slot came back: the pool's one slot takes a new tree.
      yield* awaitStats(pool, "the slot back", (s) => s.inUse === 0 && s.waiting === 0)
      const next = yield* pool.spawn(sh("exit 5"), { session: "t" })
      const status = yield* next.awaitExit
      assert.deepStrictEqual(status, { code: 5, signal: null })
    })).pipe(Effect.ensuring(Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))))
}

describe("adversarial round 5: a leader exiting while its teardown runs", () => {
  it.live(
    "session close: the leader dies on SIGTERM, its member finishes within the pool's grace",
    () => body(withMember, 2, (pool) => pool.closeSession("s")),
    120_000
  )

  it.live(
    "session close: a lone leader exits on its own during the grace",
    () => body(lone, 1, (pool) => pool.closeSession("s")),
    120_000
  )

  it.live(
    "terminate with a shorter grace than the pool's (2 s of 3): the leader dies, its member finishes",
    () => body(withMember, 2, (_, m) => Effect.map(m.terminate({ grace: "2 seconds" }), (r) => [r])),
    120_000
  )

  it.live(
    "terminate with a longer grace than the pool's: the leader dies, its member finishes",
    () => body(withMember, 2, (_, m) => Effect.map(m.terminate({ grace: "30 seconds" }), (r) => [r])),
    120_000
  )

  it.live(
    "terminate with a longer grace than the pool's: a lone leader exits on its own",
    () => body(lone, 1, (_, m) => Effect.map(m.terminate({ grace: "30 seconds" }), (r) => [r])),
    120_000
  )
})
