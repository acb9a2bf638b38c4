/**
 * Run as `node fresh.ts <scenario> <quick|full> <tmpDir>`: a scenario (`ledger`, `underLoad`) in a
 * fresh process, whatever the bench process did before it; reports its rows, targets and notes.
 */
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import type { ScenarioOutput } from "../harness.ts"
import type { Ctx } from "../pools.ts"
import { report } from "./protocol.ts"

const [scenario = "", mode = "full", tmpDir = "/tmp"] = process.argv.slice(2)
const ctx: Ctx = { quick: mode === "quick", runId: process.env.SHEPHERD_BENCH_RUN ?? "", tmpDir }

const measures: Record<string, () => Promise<(ctx: Ctx) => Effect.Effect<ScenarioOutput>>> = {
  ledger: async () => (await import("../scenarios/ledger.ts")).measure,
  underLoad: async () => (await import("../scenarios/underLoad.ts")).measure
}
const load = measures[scenario]
if (load === undefined) {
  process.stderr.write(`unknown scenario ${JSON.stringify(scenario)}\n`)
  process.exit(2)
}
const fiber = Effect.runFork(Effect.flatMap(Effect.promise(load), (measure) => measure(ctx)))
// The parent's time limit: interrupting the scenario stops what it started (scenario 9's busy loops)
// before this process exits.
process.once("SIGTERM", () => Effect.runFork(Fiber.interrupt(fiber)))
Effect.runPromise(Fiber.join(fiber)).then(
  (output) => report(output),
  (error) => {
    process.stderr.write(`${String(error)}\n`)
    process.exit(1)
  }
)
