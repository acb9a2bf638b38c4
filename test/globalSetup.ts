/**
 * The suite's last word: no process started by *this* run may survive it.
 * Survivors are reported, killed, and fail the run.
 *
 * Several runs (and demos) may share the machine, so "this run" is precise:
 * `setup` creates a run directory and exports its path as
 * `SHEPHERD_TEST_RUN_DIR`; workers inherit it, and so does every supervised
 * child that inherits its environment. Each test pool also appends its
 * `SHEPHERD_ID` prefix to `<run dir>/prefixes` (see `track` in harness.ts), which
 * covers children spawned with an explicit environment.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { type ProcInfo, readEnvVar, survivors, waitUntil } from "./support.ts"

export const runDirVariable = "SHEPHERD_TEST_RUN_DIR"

let runDir: string | undefined

export const setup = () => {
  runDir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-test-run-"))
  process.env[runDirVariable] = runDir
}

const ofThisRun = (dir: string, prefixes: ReadonlyArray<string>) => (p: ProcInfo) =>
  prefixes.some((prefix) => p.shepherdId?.startsWith(prefix) === true) || readEnvVar(p.pid, runDirVariable) === dir

export const teardown = async () => {
  const dir = runDir
  if (dir === undefined) return
  let prefixes: Array<string> = []
  try {
    prefixes = fs.readFileSync(path.join(dir, "prefixes"), "utf8").split("\n").filter((l) => l.length > 0)
  } catch {
    // no pool was built
  }
  // A sentinel may still be sweeping after the last test (a loaded machine can take seconds): wait
  // until nothing of this run is left, up to a hang guard, instead of a fixed pause.
  const ofRun = ofThisRun(dir, prefixes)
  await waitUntil(() => survivors("").filter(ofRun).length === 0, 60_000)
  const left = survivors("").filter(ofRun)
  fs.rmSync(dir, { recursive: true, force: true })
  if (left.length > 0) {
    for (const p of left) {
      try {
        process.kill(p.pid, "SIGKILL")
      } catch {
        // gone
      }
    }
    throw new Error(
      `${left.length} supervised process(es) survived the test suite:\n` +
        left.map((p) => `  pid ${p.pid} ${p.shepherdId}: ${p.cmdline}`).join("\n")
    )
  }
}
