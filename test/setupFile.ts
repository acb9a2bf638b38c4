/**
 * Runs before every test file: each file gets its own state directory
 * (removed after the file's tests), so pools of the same name in files that
 * run in parallel never share a ledger (the default ledger lives under
 * `$XDG_STATE_HOME/shepherd/`).
 */
import { afterAll } from "vitest"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

// Inside the run's directory, which globalSetup.ts removes: a file whose tests are all skipped runs
// no afterAll.
const stateHome = fs.mkdtempSync(path.join(process.env.SHEPHERD_TEST_RUN_DIR ?? os.tmpdir(), "shepherd-state-"))
process.env.XDG_STATE_HOME = stateHome
afterAll(() => fs.rmSync(stateHome, { recursive: true, force: true }))
