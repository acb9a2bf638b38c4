/**
 * The portable process table (what runs where there is no `/proc`, e.g.
 * macOS), exercised here on Linux: trees are their process groups, signalled
 * as groups, with the same graceful-to-forced escalation.
 */
import { assert, describe, it } from "@effect/vitest"
import { ProcessPool } from "@shepherd/core/ProcessPool"
import { ProcessTable } from "@shepherd/core/ProcessTable"
import * as NodeProcessLauncher from "@shepherd/node/NodeProcessLauncher"
import * as NodeProcessTable from "@shepherd/node/NodeProcessTable"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { awaitMembers, sh, usePool } from "./harness.ts"
import { isAlive, trees } from "./support.ts"

const layer = ProcessPool.layer({ name: "t-portable", kill: { grace: "200 millis", forceWait: "500 millis" } }).pipe(
  Layer.provide([Layer.succeed(ProcessTable, NodeProcessTable.makePortable()), NodeProcessLauncher.layer])
)

describe("portable process table", () => {
  it.live("signals whole process groups: every member of a cooperative and a TERM-ignoring tree dies", () =>
    usePool(layer, (pool) =>
      Effect.gen(function*() {
        const cooperative = yield* pool.spawn(sh(trees.cooperative), { session: "p" })
        const stubborn = yield* pool.spawn(sh(trees.ignoresTerm), { session: "p" })
        const members = [
          ...(yield* awaitMembers(cooperative.shepherdId, 3)),
          ...(yield* awaitMembers(stubborn.shepherdId, 3))
        ]
        const reports = yield* pool.closeSession("p")
        // Every member died: the group signals reached them all (SIGKILL for the TERM-ignoring one).
        assert.deepStrictEqual(members.filter((p) => isAlive(p.pid)), [])
        assert.strictEqual(reports.length, 2)
        for (const r of reports) assert.include(r.signalled, -r.pid, "signalled as one group")
        // On Linux a group of zombies still answers kill(-pgid, 0), and this sandbox's init reaps
        // orphans late, so the portable table may report Escaped here; on macOS such a group
        // answers EPERM and counts as gone. The /proc table (Linux default) never has this problem.
        for (const r of reports) assert.include(["Graceful", "Forced", "Escaped"], r._tag)
      })))
})
