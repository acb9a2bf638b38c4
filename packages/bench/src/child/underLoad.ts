/**
 * Run as `node underLoad.ts <quick|full> <tmpDir>`: scenario 9 (under load) in
 * a fresh process, whatever the bench process did before it; reports its
 * rows, targets and notes.
 */
import * as Effect from "effect/Effect"
import type { Ctx } from "../pools.ts"
import { measure } from "../scenarios/underLoad.ts"
import { report } from "./protocol.ts"

const [mode = "full", tmpDir = "/tmp"] = process.argv.slice(2)
const ctx: Ctx = { quick: mode === "quick", runId: process.env.SHEPHERD_BENCH_RUN ?? "", tmpDir }

Effect.runPromise(measure(ctx)).then(
  (output) => report(output),
  (error) => {
    process.stderr.write(`${String(error)}\n`)
    process.exit(1)
  }
)
