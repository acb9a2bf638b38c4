import * as Effect from "effect/Effect"
import * as ChildProcess from "effect/process/ChildProcess"
import { ProcessPool } from "@shepherd/core/ProcessPool"
import * as NodeShepherd from "@shepherd/node/NodeShepherd"
import * as Teardown from "@shepherd/core/Teardown"

const program = Effect.gen(function*() {
  const pool = yield* ProcessPool
  const t0 = Date.now()
  const reports = yield* Effect.scoped(Effect.gen(function*() {
    const s = yield* pool.session("s1")
    yield* s.spawn(ChildProcess.make("sh", ["-c", "sleep 30 & sleep 30 & wait"]))
    yield* s.spawn(ChildProcess.make("sh", ["-c", "trap '' TERM; sleep 30 & (setsid sh -c 'trap \"\" TERM; sleep 31' &) ; while true; do sleep 1; done"]))
    const p3 = yield* s.spawn(ChildProcess.make("sh", ["-c", "exit 3"]))
    const e = yield* p3.awaitTeardown
    console.log("p3", Teardown.describe(e))
    const echo = yield* s.spawn(ChildProcess.make("echo", ["hello"]))
    const { Stream } = yield* Effect.promise(() => import("effect"))
    const out = yield* Stream.mkString(Stream.decodeText(echo.handle.stdout))
    console.log("echo out", JSON.stringify(out))
    yield* Effect.sleep("300 millis")
    const t1 = Date.now()
    const r = yield* s.close
    console.log("close took", Date.now() - t1)
    return r
  }))
  for (const r of reports) console.log(r.command, "=>", Teardown.describe(r), r.signalled)
  const miss = yield* Effect.result(pool.spawn(ChildProcess.make("/nonexistent-bin")).pipe(Effect.scoped))
  console.log("missing:", miss._tag, miss._tag === "Failure" ? miss.failure.message : "")
  console.log(yield* pool.stats, Date.now() - t0)
})
Effect.runPromise(program.pipe(Effect.provide(NodeShepherd.layer({ name: "smoke", slots: 4, kill: { grace: "500 millis" } })))).then(() => console.log("done"), (e) => console.error("ERR", e))
