/**
 * Runs before every test file: each file gets its own state directory, so
 * pools of the same name in files that run in parallel never share a ledger
 * (the default ledger lives under `$XDG_STATE_HOME/shepherd/`).
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

process.env.XDG_STATE_HOME = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-state-"))
