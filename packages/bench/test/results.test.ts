/**
 * A bench run writes its results to `results/latest.json`: that file must be ignored by git and not
 * tracked, so that running the bench never changes a tracked file (a chosen run's table goes to the
 * README deliberately).
 */
import { describe, expect, it } from "@effect/vitest"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..")
const results = "packages/bench/results/latest.json"
const git = (...args: Array<string>) => NodeChildProcess.spawnSync("git", ["-C", root, ...args], { encoding: "utf8" })
const inGit = fs.existsSync(path.join(root, ".git")) && git("rev-parse", "--git-dir").status === 0

describe("bench results", () => {
  it.runIf(inGit)("results/latest.json is ignored and untracked", () => {
    expect(git("check-ignore", "-q", results).status).toBe(0)
    expect(git("ls-files", "--", results).stdout.trim()).toBe("")
  })
})
