/**
 * Adversarial (second round): a fork helper that cannot start.
 *
 * The helper is forked with the host's NODE_OPTIONS reduced to the flags that
 * match `--conditions=` or `-C` glued to its value. Node also accepts the
 * value as the next word (`-C @shepherd/source`, `--conditions @shepherd/source`):
 * both words are dropped, the helper resolves `@shepherd/core` to its
 * `dist/` (absent from a source checkout; as absent as `internal/forkHelper.js`
 * next to a bundle) and dies at its first import.
 *
 * There is no handshake: a helper that dies before it ever answered counts as
 * a helper that lost a spawn. Each of the first five spawns of every minute is
 * sent to a new helper that dies, and fails ("exited before it answered")
 * instead of being forked by the host.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { cleanupPools, sh, withPool } from "./harness.ts"

afterEach(cleanupPools)

const kill = { grace: "300 millis", forceWait: "500 millis" } as const

describe("adversarial fork helper, round 2: a helper that cannot start", () => {
  it.live("NODE_OPTIONS=\"-C @shepherd/source\" (Node's own spelling): spawns still succeed", () => {
    const before = process.env.NODE_OPTIONS
    process.env.NODE_OPTIONS = "-C @shepherd/source"
    return withPool({ name: "adv2-fh-start", forkFrom: "helper", kill }, (pool) =>
      Effect.gen(function*() {
        const outcomes: Array<string> = []
        for (let i = 0; i < 3; i++) {
          const r = yield* Effect.result(Effect.scoped(Effect.flatMap(pool.spawn(sh("exit 0")), (m) => m.awaitExit)))
          outcomes.push(r._tag === "Success" ? "ok" : r.failure.message)
        }
        assert.deepStrictEqual(outcomes, ["ok", "ok", "ok"])
      })).pipe(Effect.ensuring(Effect.sync(() => {
        if (before === undefined) delete process.env.NODE_OPTIONS
        else process.env.NODE_OPTIONS = before
      })))
  })
})
