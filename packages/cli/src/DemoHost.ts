/**
 * The host that `shepherd demo` crashes on purpose: it opens a pool on the
 * ledger given in argv[2] (with or without a lifeline, argv[3]), starts three
 * TERM-ignoring trees — one with a `setsid` grandchild, one double-forked —
 * prints `{ poolId, pids }` and waits to be SIGKILLed.
 *
 * @since 0.1.0
 */
import { ProcessPool } from "@shepherd/core/ProcessPool"
import * as NodeShepherd from "@shepherd/node/NodeShepherd"
import * as Effect from "effect/Effect"
import * as ChildProcess from "effect/process/ChildProcess"

const trees = [
  "trap '' TERM; sleep 1000 & wait",
  "setsid sh -c \"trap '' TERM; sleep 1000\" & trap '' TERM; wait",
  "(sh -c \"trap '' TERM; sleep 1000\" &) ; trap '' TERM; sleep 1000"
]

const program = Effect.gen(function*() {
  const pool = yield* ProcessPool
  const pids: Array<number> = []
  for (const script of trees) {
    pids.push((yield* pool.spawn(ChildProcess.make("sh", ["-c", script]), { session: "night-shift" })).pid)
  }
  yield* Effect.sleep("100 millis")
  process.stdout.write(`${JSON.stringify({ poolId: pool.poolId, pids })}\n`)
  return yield* Effect.never
}).pipe(Effect.scoped)

NodeShepherd.runMain(program.pipe(Effect.provide(NodeShepherd.layer({
  name: "demo-crashed-host",
  ledger: process.argv[2]!,
  lifeline: process.argv[3] === "lifeline",
  kill: { grace: "500 millis", forceWait: "500 millis" }
}))))
