/**
 * Run as `tini -s -- node teardown.ts <quick> <tmpDir> <runs>`: scenario 2's
 * contenders under a reaping init (every one `runs` times), reported as
 * samples per contender.
 */
import * as Effect from "effect/Effect"
import * as References from "effect/References"
import * as fs from "node:fs"
import * as path from "node:path"
import type { Ctx } from "../pools.ts"
import { measure } from "../scenarios/cooperativeTeardown.ts"
import { report } from "./protocol.ts"

const [quickArg = "true", tmpDir = "/tmp", runsArg = "4"] = process.argv.slice(2)
// a directory of its own: the pool's ledger file names restart from 1 in this process
const ctx: Ctx = {
  quick: quickArg === "true",
  runId: process.env.SHEPHERD_BENCH_RUN ?? "",
  tmpDir: fs.mkdtempSync(path.join(tmpDir, "tini-"))
}
const runs = Number(runsArg)

Effect.runPromise(measure(ctx, runs, runs).pipe(Effect.provideService(References.MinimumLogLevel, "Warn"))).then(
  report,
  (error) => {
    process.stderr.write(`${String(error)}\n`)
    process.exit(1)
  }
)
