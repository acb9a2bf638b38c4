/**
 * A process that keeps exec'ing, with the cookie in every image, is never read as cookie-less
 * (`undefined`, which the process cache would remember): inside create_elf_tables()'s envp loop
 * /proc/<pid>/stat shows env_start == env_end != 0 (as for `env -i`) while environ is empty, and a
 * large environment widens that loop. "Cannot tell yet" (`null`, an exec that outlasts the bounded
 * look-again on a loaded machine) is allowed: it is not remembered.
 */
import { assert, describe, it } from "@effect/vitest"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as procfs from "../src/internal/procfs.ts"

const hasProc = fs.existsSync("/proc/self/stat")

describe("procfs: readCookie of a process inside execve()", () => {
  it.runIf(hasProc)("a process re-exec'ing with its cookie is never judged without it", () => {
    const env: Record<string, string> = { PATH: process.env.PATH ?? "/usr/bin:/bin" }
    for (let i = 0; i < 2000; i++) env[`V${i}`] = "1"
    env.SHEPHERD_ID = `t-execwin-${process.pid}:1`
    const script = `exec sh -c "$0" "$0"`
    const child = NodeChildProcess.spawn("sh", ["-c", script, script], { stdio: "ignore", detached: true, env })
    const pid = child.pid!
    const misses: Array<string> = []
    let reads = 0
    try {
      const start = procfs.readStat(pid)!.startTime
      const deadline = Date.now() + 3000
      while (Date.now() < deadline && misses.length === 0) {
        const cookie = procfs.readCookie(pid)
        reads++
        const stat = procfs.readStat(pid)
        if (cookie === undefined && stat !== undefined && stat.startTime === start && stat.state !== "Z") {
          misses.push(`read ${reads}: ${String(cookie)}`)
        }
      }
    } finally {
      try {
        process.kill(-pid, "SIGKILL")
      } catch {
        // gone
      }
    }
    assert.deepStrictEqual(misses, [], `after ${reads} reads`)
  }, 30_000)
})
