/**
 * Restart recovery at scale, on the in-memory ledger and process table: tens
 * of thousands of entries of dead processes are recovered in one pass.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Layer } from "effect"
import * as KillPolicy from "../src/KillPolicy.ts"
import { Ledger, type LedgerRecord } from "../src/Ledger.ts"
import { ProcessTable } from "../src/ProcessTable.ts"
import { TestOs } from "../src/testing.ts"
import * as Orphans from "../src/internal/orphans.ts"

const bootId = "test-os"
const entries = 50_000

const records = (): Array<LedgerRecord> => {
  const poolId = "old~00000000"
  const out: Array<LedgerRecord> = [{
    _tag: "HostStarted",
    poolId,
    host: { pid: 4_194_000, startTime: "1", bootId },
    at: 1
  }]
  for (let i = 0; i < entries; i++) {
    const shepherdId = `${poolId}:${i}`
    // Pids the test OS never had: every leader is gone and its group proves nothing.
    const pid = 100_000 + i
    out.push({ _tag: "Intent", poolId, shepherdId, session: "s", command: "sleep 1000", at: 2 })
    out.push({ _tag: "Registered", shepherdId, pgid: pid, identity: { pid, startTime: "7", bootId }, at: 3 })
  }
  return out
}

describe("recovery at scale", () => {
  // On TestClock, which nothing here advances: a recovery that waited anywhere (a poll interval per
  // entry, as one entry at a time did) would never finish. It finishes at time 0, in one pass.
  it.effect("recovers 50,000 entries of dead processes in one pass, without waiting, and closes them all", () =>
    Effect.gen(function*() {
      const ledger = yield* Ledger
      const table = yield* ProcessTable
      const hurry = yield* Deferred.make<void>()
      const report = yield* Orphans.recover({ table, policy: KillPolicy.defaults, hurry, bootId }, ledger)
      assert.strictEqual(report.entries.length, entries)
      assert.isTrue(report.entries.every((e) => e.outcome === "Gone" && e.signalled.length === 0))
      assert.strictEqual(report.durationMs, 0, "no clock time passed")
      assert.isTrue(report.entries.every((e) => e.durationMs === 0))
      assert.deepStrictEqual(yield* ledger.entries, [], "every entry is closed in the ledger")
    }).pipe(Effect.provide(Layer.mergeAll(
      Ledger.layerMemory({ host: { pid: TestOs.hostPid, startTime: "1", bootId }, records: records() }),
      TestOs.make().layer
    ))))
})
