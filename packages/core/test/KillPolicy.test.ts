/**
 * KillPolicy parsing and overriding, and the one-line teardown descriptions.
 */
import { assert, describe, it } from "@effect/vitest"
import { Duration } from "effect"
import * as KillPolicy from "../src/KillPolicy.ts"
import * as Teardown from "../src/Teardown.ts"

describe("KillPolicy", () => {
  it("durationMillis accepts finite, non-negative durations only", () => {
    assert.strictEqual(KillPolicy.durationMillis(500), 500)
    assert.strictEqual(KillPolicy.durationMillis(0), 0)
    assert.strictEqual(KillPolicy.durationMillis("5 seconds"), 5000)
    assert.strictEqual(KillPolicy.durationMillis(Duration.minutes(1)), 60_000)
    assert.isUndefined(KillPolicy.durationMillis(-1))
    assert.isUndefined(KillPolicy.durationMillis("soon"))
    assert.isUndefined(KillPolicy.durationMillis(Number.POSITIVE_INFINITY))
    assert.isUndefined(KillPolicy.durationMillis(true))
    assert.isUndefined(KillPolicy.durationMillis(undefined))
  })

  it("durationMillis accepts the short forms people type", () => {
    assert.strictEqual(KillPolicy.durationMillis("200ms"), 200)
    assert.strictEqual(KillPolicy.durationMillis("5s"), 5000)
    assert.strictEqual(KillPolicy.durationMillis("1.5s"), 1500)
    assert.strictEqual(KillPolicy.durationMillis("1m"), 60_000)
    assert.strictEqual(KillPolicy.durationMillis("2h"), 7_200_000)
    assert.strictEqual(KillPolicy.durationMillis("200 ms"), 200)
    assert.isUndefined(KillPolicy.durationMillis("-5s"))
    assert.isUndefined(KillPolicy.durationMillis("5x"))
    assert.isUndefined(KillPolicy.durationMillis("ms"))
  })

  it("durationMillis rejects NaN", () => {
    assert.isUndefined(KillPolicy.durationMillis(Number.NaN))
  })

  it("override replaces only the fields that are set", () => {
    assert.strictEqual(KillPolicy.override(KillPolicy.defaults, undefined), KillPolicy.defaults)
    assert.deepStrictEqual(KillPolicy.override(KillPolicy.defaults, { grace: "250 millis" }), {
      signal: "SIGTERM",
      graceMs: 250,
      forceWaitMs: 1000
    })
    assert.deepStrictEqual(KillPolicy.override(KillPolicy.defaults, { signal: "SIGINT", forceWait: 0 }), {
      signal: "SIGINT",
      graceMs: 5000,
      forceWaitMs: 0
    })
    assert.deepStrictEqual(
      KillPolicy.override(KillPolicy.defaults, { grace: -1 }),
      KillPolicy.defaults,
      "an invalid duration keeps the base value"
    )
  })
})

describe("Teardown.describe", () => {
  const common = { pid: 10, shepherdId: "p:1", session: "s", command: "cmd", durationMs: 5003.4 }

  it("describes each outcome in one line", () => {
    assert.strictEqual(
      Teardown.describe(new Teardown.Exited({ ...common, signalled: [], code: 0, signal: null })),
      "exited by itself with code 0"
    )
    assert.strictEqual(
      Teardown.describe(new Teardown.Exited({ ...common, signalled: [11, 12], code: null, signal: "SIGSEGV" })),
      "exited by itself on SIGSEGV; 2 leftover member(s) terminated in 5003 ms"
    )
    assert.strictEqual(
      Teardown.describe(new Teardown.Graceful({ ...common, signalled: [10], signal: "SIGTERM" })),
      "terminated gracefully by SIGTERM in 5003 ms"
    )
    assert.strictEqual(
      Teardown.describe(new Teardown.Forced({ ...common, signalled: [10, 11], forced: [10, 11] })),
      "forced: SIGKILL to 2 pid(s), gone after 5003 ms"
    )
    assert.strictEqual(
      Teardown.describe(new Teardown.Escaped({ ...common, signalled: [10], escaped: [12, 13] })),
      "ESCAPED: pid(s) 12, 13 still alive after 5003 ms"
    )
    assert.strictEqual(
      Teardown.describe(new Teardown.Unverified({ ...common, signalled: [], reason: "no /proc" })),
      "unverified after 5003 ms: no /proc"
    )
  })
})
