/**
 * A runner process for `pnpm demo:cluster` and the cluster tests: one
 * `ProcessPool` (ledger + lifeline) hosting `SessionEntity`, joined to the
 * cluster through PostgreSQL. Its options come as JSON in argv[2]
 * (`RunnerSpec`); it prints `{"ready":true,...}` once its layer is built and
 * runs until SIGTERM/SIGINT or its stdin closes (pool shutdown, shards handed
 * off) or SIGKILL (its lifeline ends its trees).
 */
import { ProcessPool } from "@shepherd/core/ProcessPool"
import * as NodeShepherd from "@shepherd/node/NodeShepherd"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as References from "effect/References"
import * as ClusterRunner from "../src/ClusterRunner.ts"

/** What the parent passes in argv[2]. */
export interface RunnerSpec {
  readonly name: string
  readonly port: number
  readonly dbPort: number
  readonly ledger: string
  readonly graceMs: number
  readonly forceWaitMs: number
  readonly shardLockExpirationMs: number
  readonly slots: number
}

const spec = JSON.parse(process.argv[2]!) as RunnerSpec

// The parent holds our stdin: when it closes (the parent is gone, even SIGKILLed), shut down as on SIGTERM.
process.stdin.on("end", () => process.kill(process.pid, "SIGTERM"))
process.stdin.resume()
// With the parent gone, a log line to our stdout pipe fails with EPIPE: that must not end the shutdown.
process.stdout.on("error", () => {})

const program = Effect.gen(function*() {
  const pool = yield* ProcessPool
  process.stdout.write(`${JSON.stringify({ ready: true, pid: process.pid, port: spec.port, poolId: pool.poolId })}\n`)
  return yield* Effect.never
})

NodeShepherd.runMain(
  program.pipe(
    Effect.provide(
      ClusterRunner.layer({
        host: "127.0.0.1",
        port: spec.port,
        database: { host: "127.0.0.1", port: spec.dbPort },
        pool: {
          name: spec.name,
          ledger: spec.ledger,
          slots: spec.slots,
          kill: { grace: spec.graceMs, forceWait: spec.forceWaitMs }
        },
        sharding: { shardLockExpiration: spec.shardLockExpirationMs }
      }).pipe(Layer.provide(Layer.succeed(References.MinimumLogLevel, "Warn")))
    ),
    Effect.provideService(References.MinimumLogLevel, "Warn")
  )
)
