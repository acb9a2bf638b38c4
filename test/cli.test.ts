/**
 * The `shepherd` command on real processes: doctor and reap on the ledger of
 * a SIGKILLed host, run (exit code, signal forwarding, a tree that outlives
 * its leader), and bad arguments.
 */
import { assert, describe, it } from "@effect/vitest"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as readline from "node:readline"
import { fileURLToPath } from "node:url"
import { isAlive, killSurvivors, processes, survivors, waitUntil } from "./support.ts"

const bin = fileURLToPath(new URL("../packages/cli/src/bin.ts", import.meta.url))
const crashHost = fileURLToPath(new URL("./fixtures/crashHost.ts", import.meta.url))

interface Result {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

const shepherd = (args: ReadonlyArray<string>, env: Record<string, string> = {}): Promise<Result> =>
  new Promise((resolve) => {
    NodeChildProcess.execFile(process.execPath, [bin, ...args], { env: { ...process.env, NO_COLOR: "1", ...env } }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : (error as { code?: number }).code ?? null, stdout, stderr })
    })
  })

/** A host without lifeline, SIGKILLed: its ledger lists orphans that are still alive. */
const orphanedLedger = async () => {
  const ledger = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-cli-")), "crashed.ledger")
  const host = NodeChildProcess.spawn(process.execPath, [crashHost, ledger, "nolifeline", "2"], { stdio: ["ignore", "pipe", "ignore"] })
  const lines = readline.createInterface({ input: host.stdout! })
  const ready: { poolId: string } = await new Promise((resolve) => lines.on("line", (l) => l.startsWith("{") && resolve(JSON.parse(l))))
  await new Promise<void>((resolve) => {
    host.on("exit", () => resolve())
    host.kill("SIGKILL")
  })
  return { ledger, prefix: `${ready.poolId}:` }
}

describe("shepherd doctor and reap", () => {
  it("show a dead host's orphans, reap them identity-checked, and leave a clean ledger", async () => {
    const { ledger, prefix } = await orphanedLedger()
    try {
      const orphans = survivors(prefix)
      assert.isAtLeast(orphans.length, 4)

      const doctor = await shepherd(["doctor", "--ledger", ledger])
      assert.strictEqual(doctor.code, 0)
      assert.include(doctor.stdout, "(gone)", "the owner is reported dead")
      assert.include(doctor.stdout, "2 live entries")
      assert.include(doctor.stdout, "shepherd reap --ledger")

      const json = await shepherd(["doctor", "--ledger", ledger, "--json"])
      const report = JSON.parse(json.stdout) as { ledgers: Array<{ entries: Array<{ members: Array<{ pid: number }> }> }> }
      const listed = report.ledgers[0]!.entries.flatMap((e) => e.members.map((m) => m.pid)).sort()
      assert.deepStrictEqual(listed, orphans.map((p) => p.pid).sort(), "the doctor lists exactly the orphans /proc shows")

      const dry = await shepherd(["reap", "--ledger", ledger, "--dry-run"])
      assert.strictEqual(dry.code, 0)
      assert.include(dry.stdout, "would terminate")
      assert.strictEqual(survivors(prefix).length, orphans.length, "a dry run signals nothing")

      const reap = await shepherd(["reap", "--ledger", ledger], { SHEPHERD_GRACE: "200 millis" })
      assert.strictEqual(reap.code, 0)
      assert.match(reap.stdout, /Forced|Graceful/)
      assert.deepStrictEqual(survivors(prefix), [])

      const after = await shepherd(["doctor", "--ledger", ledger, "--json"])
      assert.strictEqual(JSON.parse(after.stdout).ledgers[0].entries.length, 0)
    } finally {
      killSurvivors(prefix)
    }
  }, 30_000)

  it("refuses to reap the ledger of a live host", async () => {
    const ledger = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-cli-")), "live.ledger")
    const host = NodeChildProcess.spawn(process.execPath, [crashHost, ledger, "lifeline", "1"], { stdio: ["ignore", "pipe", "ignore"] })
    const lines = readline.createInterface({ input: host.stdout! })
    const ready: { poolId: string } = await new Promise((resolve) => lines.on("line", (l) => l.startsWith("{") && resolve(JSON.parse(l))))
    try {
      const reap = await shepherd(["reap", "--ledger", ledger])
      assert.strictEqual(reap.code, 1)
      assert.include(reap.stderr, `live host pid ${host.pid}`)
      assert.strictEqual(survivors(`${ready.poolId}:`).length, 2, "nothing was signalled")
    } finally {
      host.kill("SIGTERM")
      await new Promise((resolve) => host.on("exit", resolve))
      killSurvivors(`${ready.poolId}:`)
    }
  }, 30_000)

  it("prints usage and exits 2 on bad arguments; a missing ledger is a one-line error", async () => {
    const unknownFlag = await shepherd(["doctor", "--bogus"])
    assert.strictEqual(unknownFlag.code, 2)
    assert.include(unknownFlag.stdout + unknownFlag.stderr, "USAGE")
    assert.include(unknownFlag.stdout + unknownFlag.stderr, "--bogus")
    const unknownCommand = await shepherd(["frobnicate"])
    assert.strictEqual(unknownCommand.code, 2)
    const missing = await shepherd(["doctor", "--ledger", "/nonexistent/x.ledger"])
    assert.strictEqual(missing.code, 1)
    assert.strictEqual(missing.stderr.trim(), "shepherd: no ledger at /nonexistent/x.ledger")
  }, 30_000)
})

describe("shepherd run", () => {
  it("exits with the command's code", async () => {
    const r = await shepherd(["run", "--", "sh", "-c", "echo out; exit 7"])
    assert.strictEqual(r.code, 7)
    assert.include(r.stdout, "out")
  }, 30_000)

  it("leaves nothing behind when the command exits and a descendant that escaped with setsid would have survived", async () => {
    const marker = `shepherd-run-test-${process.pid}-${Date.now()}`
    const r = await shepherd(["run", "--grace", "200 millis", "--", "sh", "-c", `setsid sh -c "trap '' TERM; exec -a ${marker} sleep 1000" & sleep 0.3; exit 0`])
    assert.strictEqual(r.code, 0)
    assert.deepStrictEqual(processes().filter((p) => p.cmdline.includes(marker)), [])
  }, 30_000)

  it("forwards SIGINT to the whole tree and exits 130", async () => {
    const child = NodeChildProcess.spawn(process.execPath, [bin, "run", "--grace", "200 millis", "--", "sh", "-c", "trap '' INT TERM; sleep 1000 & wait"], {
      stdio: "ignore"
    })
    const members = () => processes().filter((p) => p.shepherdId?.startsWith("shepherd-run~") === true && readParent(p.pid, child.pid!))
    assert.isTrue(await waitUntil(() => members().length >= 2, 5_000), "the tree runs")
    const pids = members().map((p) => p.pid)
    child.kill("SIGINT")
    const code = await new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)))
    assert.strictEqual(code, 130)
    assert.deepStrictEqual(pids.filter(isAlive), [])
  }, 30_000)
})

/** `pid` descends from `ancestor`. */
const readParent = (pid: number, ancestor: number): boolean => {
  let current = pid
  for (let i = 0; i < 20 && current > 1; i++) {
    if (current === ancestor) return true
    try {
      const stat = fs.readFileSync(`/proc/${current}/stat`, "latin1")
      current = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1])
    } catch {
      return false
    }
  }
  return false
}
