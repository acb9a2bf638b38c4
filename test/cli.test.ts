/**
 * The `shepherd` command on real processes: doctor and reap on the ledger of
 * a SIGKILLed host, run (exit code, signal forwarding, a tree that outlives
 * its leader), and bad arguments.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as readline from "node:readline"
import { fileURLToPath } from "node:url"
import { track } from "./harness.ts"
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
    NodeChildProcess.execFile(
      process.execPath,
      [bin, ...args],
      { env: { ...process.env, NO_COLOR: "1", ...env } },
      (error, stdout, stderr) => {
        resolve({ code: error === null ? 0 : (error as { code?: number }).code ?? null, stdout, stderr })
      }
    )
  })

/** Temporary directories of the running test, removed after it whatever happened. */
const made: Array<string> = []
const tempDir = () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-cli-"))
  made.push(dir)
  return dir
}
afterEach(() => {
  for (const dir of made.splice(0)) fs.rmSync(dir, { recursive: true, force: true })
})

/** Starts the crash host; resolves with its pool id once it is ready, rejects if it exits first. */
const startCrashHost = (ledger: string, mode: "lifeline" | "nolifeline", trees: number) => {
  const host = NodeChildProcess.spawn(process.execPath, [crashHost, ledger, mode, String(trees)], {
    stdio: ["ignore", "pipe", "ignore"]
  })
  const exited = new Promise<void>((resolve) => host.on("exit", () => resolve()))
  const lines = readline.createInterface({ input: host.stdout! })
  const ready = new Promise<{ poolId: string }>((resolve, reject) => {
    lines.on("line", (l) => l.startsWith("{") && resolve(JSON.parse(l)))
    void exited.then(() => reject(new Error("the host exited before it was ready")))
  })
  /** Signals the host (if it still runs) and waits for its exit. */
  const kill = async (signal: NodeJS.Signals = "SIGKILL") => {
    if (host.exitCode === null && host.signalCode === null) host.kill(signal)
    await exited
  }
  return { host, ready, exited, kill }
}

/** A host without lifeline, SIGKILLed: its ledger lists orphans that are still alive. */
const orphanedLedger = async () => {
  const ledger = path.join(tempDir(), "crashed.ledger")
  const started = startCrashHost(ledger, "nolifeline", 2)
  try {
    const ready = await started.ready
    track(`${ready.poolId}:`)
    return { ledger, prefix: `${ready.poolId}:` }
  } finally {
    await started.kill()
  }
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
      const report = JSON.parse(json.stdout) as {
        ledgers: Array<{ entries: Array<{ members: Array<{ pid: number }> }> }>
      }
      const listed = report.ledgers[0]!.entries.flatMap((e) => e.members.map((m) => m.pid)).sort()
      assert.deepStrictEqual(
        listed,
        orphans.map((p) => p.pid).sort(),
        "the doctor lists exactly the orphans /proc shows"
      )

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
  })

  it("refuses to reap the ledger of a live host", async () => {
    const ledger = path.join(tempDir(), "live.ledger")
    const { host, ready: readyLine, kill } = startCrashHost(ledger, "lifeline", 1)
    let prefix: string | undefined
    try {
      const ready = await readyLine
      prefix = `${ready.poolId}:`
      track(prefix)
      const reap = await shepherd(["reap", "--ledger", ledger])
      assert.strictEqual(reap.code, 1)
      assert.include(reap.stderr, `live host pid ${host.pid}`)
      assert.strictEqual(survivors(prefix).length, 2, "nothing was signalled")
    } finally {
      await kill("SIGTERM")
      if (prefix !== undefined) killSurvivors(prefix)
    }
  })

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
  })
})

describe("shepherd run", () => {
  it("exits with the command's code", async () => {
    const r = await shepherd(["run", "--", "sh", "-c", "echo out; exit 7"])
    assert.strictEqual(r.code, 7)
    assert.include(r.stdout, "out")
  })

  it("leaves nothing behind when the command exits and a descendant that escaped with setsid would have survived", async () => {
    const marker = `shepherd-run-test-${process.pid}-${Date.now()}`
    const started = path.join(tempDir(), "started")
    const escapee = () => processes().filter((p) => p.cmdline.includes(marker) && p.state !== "Z")
    try {
      // The leader exits only once the escaped descendant has started (it touches `started` first).
      const script = `setsid sh -c "trap '' TERM; touch ${started}; exec -a ${marker} sleep 1000" & ` +
        `while [ ! -e ${started} ]; do sleep 0.01; done; exit 0`
      const r = await shepherd(["run", "--grace", "200 millis", "--", "sh", "-c", script])
      assert.strictEqual(r.code, 0)
      assert.isTrue(fs.existsSync(started), "the descendant did start")
      assert.deepStrictEqual(escapee(), [])
    } finally {
      for (const p of escapee()) sigkill(p.pid)
    }
  })

  it("forwards SIGINT to the whole tree and exits 130", async () => {
    const child = NodeChildProcess.spawn(process.execPath, [
      bin,
      "run",
      "--grace",
      "200 millis",
      "--",
      "sh",
      "-c",
      "trap '' INT TERM; sleep 1000 & wait"
    ], {
      stdio: "ignore"
    })
    const exited = new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)))
    const members = () =>
      processes().filter((p) => p.shepherdId?.startsWith("shepherd-run~") === true && readParent(p.pid, child.pid!))
    let pids: Array<number> = []
    try {
      // No start window: however long a loaded machine takes to start the tree (the wait is a hang guard).
      assert.isTrue(await waitUntil(() => members().length >= 2), "the tree runs")
      pids = members().map((p) => p.pid)
      child.kill("SIGINT")
      assert.strictEqual(await exited, 130)
      assert.deepStrictEqual(pids.filter(isAlive), [])
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
      for (const pid of [...pids, ...members().map((p) => p.pid)]) sigkill(pid)
    }
  })
})

const sigkill = (pid: number) => {
  try {
    process.kill(pid, "SIGKILL")
  } catch {
    // gone
  }
}

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
