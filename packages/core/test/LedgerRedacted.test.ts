/**
 * The ledger's `redacted` mark on an intent (readers such as `shepherd doctor`
 * hide the members' arguments of such a tree) survives replay, compaction and
 * the JSON line encoding.
 */
import { assert, describe, it } from "@effect/vitest"
import { Schema } from "effect"
import { type LedgerRecord, LedgerLine, State } from "../src/Ledger.ts"

const intent = (shepherdId: string, redacted?: boolean): LedgerRecord => ({
  _tag: "Intent",
  poolId: "p",
  shepherdId,
  session: "s",
  command: "tool --token <redacted>",
  ...(redacted === undefined ? {} : { redacted }),
  at: 1
})

describe("Ledger redacted intents", () => {
  it("keep their mark through replay, compaction and the line encoding", () => {
    const state = new State()
    state.apply(intent("p:1", true))
    state.apply(intent("p:2"))
    assert.strictEqual(state.live.get("p:1")?.redacted, true)
    assert.isUndefined(state.live.get("p:2")?.redacted)

    const lines = state.compacted().map((r) => Schema.encodeSync(LedgerLine)(r))
    const replayed = new State()
    for (const line of lines) replayed.apply(Schema.decodeUnknownSync(LedgerLine)(line))
    assert.strictEqual(replayed.live.get("p:1")?.redacted, true)
    assert.isUndefined(replayed.live.get("p:2")?.redacted)
  })
})
