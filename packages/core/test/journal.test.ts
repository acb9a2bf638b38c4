/**
 * The journal (`internal/journal.ts`): every ledger and lifeline write of a
 * pool, counted; a failed write is logged and survived, except the intent's.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Metric } from "effect"
import * as Journal from "../src/internal/journal.ts"
import { Ledger, LedgerError, type LedgerRecord } from "../src/Ledger.ts"
import type * as Lifeline from "../src/Lifeline.ts"

const host = { pid: 1, startTime: "1", bootId: "b" }
const container = { pgid: 10, shepherdId: "p~1:1", leader: { pid: 10, startTime: "7", bootId: "b" } }

const ledger = (fail: boolean) => {
  const written: Array<LedgerRecord> = []
  const service = Ledger.of({
    path: ":test:",
    host,
    opened: { path: ":test:", tornLine: false, badLines: 0 },
    append: (record) =>
      fail
        ? Effect.fail(new LedgerError({ path: ":test:", reason: "disk full" }))
        : Effect.sync(() => void written.push(record)),
    entries: Effect.succeed([]),
    compact: Effect.void,
    lastCompaction: Effect.succeed(undefined)
  })
  return { service, written }
}

const lifeline = () => {
  const calls: Array<string> = []
  const attached: Lifeline.Attached = {
    ready: () => Effect.void,
    register: (c) => Effect.sync(() => void calls.push(`register ${c.shepherdId}`)),
    unregister: (id) => Effect.sync(() => void calls.push(`unregister ${id}`)),
    status: Effect.succeed({ kind: "test", alive: true, watching: 0, restarts: 0 })
  }
  return { attached, calls }
}

describe("journal", () => {
  it.effect("writes the records of a tree's life in order, counts them, and tells the lifeline", () =>
    Effect.gen(function*() {
      const { service, written } = ledger(false)
      const events = Metric.counter("test_journal_events", { incremental: true })
      const journal = Journal.make(service, events)
      const { attached, calls } = lifeline()
      yield* Journal.hostStarted(journal, "p~1", host, 1)
      journal.lifeline = attached
      yield* Journal.intent(journal, {
        poolId: "p~1",
        shepherdId: "p~1:1",
        session: "s",
        command: "sleep 1",
        redacted: false,
        at: 2
      })
      yield* Journal.registered(journal, container, 3)
      yield* Journal.released(journal, "p~1:1", "Graceful", "terminated", 4)
      yield* Journal.hostStopped(journal, "p~1", 5)
      assert.deepStrictEqual(written.map((r) => r._tag), [
        "HostStarted",
        "Intent",
        "Registered",
        "Exited",
        "HostStopped"
      ])
      assert.isFalse("redacted" in written[1]!)
      assert.deepStrictEqual(calls, ["register p~1:1", "unregister p~1:1"])
      assert.strictEqual((yield* Metric.value(events)).count, 5)
    }))

  it.effect("a failed write is logged and survived; a failed intent is the caller's", () =>
    Effect.gen(function*() {
      const { service } = ledger(true)
      const journal = Journal.make(service)
      yield* Journal.exited(journal, "p~1:1", "Gone", "reaped", 1)
      const error = yield* Effect.flip(Journal.intent(journal, {
        poolId: "p~1",
        shepherdId: "p~1:2",
        session: "s",
        command: "sleep 1",
        redacted: true,
        at: 2
      }))
      assert.strictEqual(error._tag, "LedgerError")
    }))

  it.effect("without a ledger, nothing is written and nothing fails", () =>
    Effect.gen(function*() {
      const journal = Journal.make(undefined)
      yield* Journal.intent(journal, {
        poolId: "p~1",
        shepherdId: "p~1:1",
        session: "s",
        command: "sleep 1",
        redacted: false,
        at: 1
      })
      yield* Journal.registered(journal, container, 2)
    }))
})
