/**
 * Run as `node underLoad.ts <quick|full> <tmpDir>`: scenario 9 (under load) in
 * a fresh process, whatever the bench process did before it; reports its
 * rows, targets and notes.
 */
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import type { Ctx } from "../pools.ts"
import { measure } from "../scenarios/underLoad.ts"
import { report } from "./protocol.ts"

const [mode = "full", tmpDir = "/tmp"] = process.argv.slice(2)
const ctx: Ctx = { quick: mode === "quick", runId: process.env.SHEPHERD_BENCH_RUN ?? "", tmpDir }

const fiber = Effect.runFork(measure(ctx))
// The parent's time limit: interrupting the scenario stops its busy loops before this process exits.
process.once("SIGTERM", () => Effect.runFork(Fiber.interrupt(fiber)))
Effect.runPromise(Fiber.join(fiber)).then(
  (output) => report(output),
  (error) => {
    process.stderr.write(`${String(error)}\n`)
    process.exit(1)
  }
)
