/**
 * Crash safety on real processes: a host SIGKILLed with TERM-ignoring trees
 * (setsid and double-forked descendants included) leaves nothing behind
 * (lifeline), and a restarted host on the same ledger recovers what a host
 * without a lifeline left.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as readline from "node:readline"
import { fileURLToPath } from "node:url"
import { track } from "./harness.ts"
import { killSurvivors, processes, readEnvVar, survivors, waitUntil } from "./support.ts"

const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url))

/** Live lifeline sentinels of `poolId`. */
const sentinels = (poolId: string): Array<number> =>
  processes().filter((p) => p.state !== "Z" && p.state !== "X" && readEnvVar(p.pid, "SHEPHERD_SENTINEL") === poolId)
    .map((p) => p.pid)

/** Hosts and temporary directories of the running test: killed and removed after it, whatever happened. */
const started: Array<Host> = []
const made: Array<string> = []
afterEach(async () => {
  for (const host of started.splice(0)) {
    if (host.child.exitCode === null && host.child.signalCode === null) host.child.kill("SIGKILL")
    await host.exited
  }
  for (const dir of made.splice(0)) fs.rmSync(dir, { recursive: true, force: true })
})

interface Host {
  readonly child: NodeChildProcess.ChildProcess
  readonly lines: AsyncIterator<string>
  readonly exited: Promise<number | null>
  /** In the host's environment, and so in its fork helper's. */
  readonly tag: string
}

/** The live fork helpers of `host`. */
const forkHelpers = (host: Host) =>
  processes().filter((p) =>
    p.state !== "Z" && p.cmdline.includes("forkHelper") && readEnvVar(p.pid, "SHEPHERD_TEST_HOST") === host.tag
  )

const startHost = (args: ReadonlyArray<string>, script = "crashHost.ts"): Host => {
  const tag = `${process.pid}-${started.length}-${Math.random()}`
  const child = NodeChildProcess.spawn(process.execPath, [fixture(script), ...args], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, SHEPHERD_TEST_HOST: tag }
  })
  const lines = readline.createInterface({ input: child.stdout! })[Symbol.asyncIterator]()
  const exited = new Promise<number | null>((resolve) =>
    child.on("exit", (code, signal) => resolve(code ?? (signal === null ? null : -1)))
  )
  const host = { child, lines, exited, tag }
  started.push(host)
  return host
}

const readJson = async (host: Host, key: string): Promise<any> => {
  while (true) {
    const next = await host.lines.next()
    if (next.done === true) throw new Error("host exited before it was ready")
    if (next.value.startsWith("{") && next.value.includes(`"${key}"`)) {
      const parsed = JSON.parse(next.value)
      if (typeof parsed.poolId === "string") track(`${parsed.poolId}:`)
      return parsed
    }
  }
}

const tempLedger = () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-crash-"))
  made.push(dir)
  return path.join(dir, "pool.ledger")
}

describe("host crash", () => {
  it.each(["host", "helper"] as const)(
    "a SIGKILLed host (trees forked by the %s) leaves no survivor: every tree is gone by the time its lifeline sentinel exits",
    async (forkFrom) => {
      const host = startHost([tempLedger(), "lifeline", "4", forkFrom])
      const ready = await readJson(host, "poolId")
      const prefix = `${ready.poolId}:`
      try {
        assert.isAtLeast(survivors(prefix).length, 8, "the trees run before the crash")
        assert.isTrue(await waitUntil(() => sentinels(ready.poolId).length === 1), "one sentinel runs")
        assert.strictEqual(forkHelpers(host).length, forkFrom === "helper" ? 1 : 0, "fork helpers")
        host.child.kill("SIGKILL")
        await host.exited
        // The sentinel exits once its sweep is done: nothing may be left by then. (How long the sweep
        // takes, grace + forceWait at most, is not asserted: the wait below only guards against a hang.)
        assert.isTrue(await waitUntil(() => sentinels(ready.poolId).length === 0), "the sentinel finished")
        assert.deepStrictEqual(survivors(prefix), [], "survivors of the sentinel's sweep")
        // The fork helper leaves with its host (its channel closed).
        assert.isTrue(await waitUntil(() => forkHelpers(host).length === 0), "the fork helper exited")
      } finally {
        killSurvivors(prefix)
        for (const pid of [...sentinels(ready.poolId), ...forkHelpers(host).map((p) => p.pid)]) {
          try {
            process.kill(pid, "SIGKILL")
          } catch {
            // gone
          }
        }
      }
    }
  )

  it("a restarted host recovers what a crashed host without lifeline left, then the ledger is clean", async () => {
    const ledger = tempLedger()
    const first = startHost([ledger, "nolifeline", "4"])
    const ready = await readJson(first, "poolId")
    const prefix = `${ready.poolId}:`
    try {
      first.child.kill("SIGKILL")
      await first.exited
      // Without a lifeline the orphans outlive the host: they are still there when the next host
      // recovers them (each recovery entry below signalled someone).
      const orphans = survivors(prefix)
      assert.isAtLeast(orphans.length, 8, "without a lifeline the orphans outlive the host")

      const second = startHost([ledger, "lifeline", "1"])
      const next = await readJson(second, "poolId")
      assert.strictEqual(next.recovery.entries.length, 4)
      for (const entry of next.recovery.entries) {
        assert.include(["Graceful", "Forced"], entry.outcome)
        assert.isAbove(entry.signalled.length, 0)
      }
      assert.deepStrictEqual(survivors(prefix), [], "recovery terminated every orphan before the pool opened")

      // A third host on the same ledger is refused while the second lives.
      const third = startHost([ledger, "lifeline", "1"])
      assert.strictEqual(await third.exited, 1)

      second.child.kill("SIGTERM")
      assert.strictEqual(await second.exited, 143)
      assert.deepStrictEqual(survivors(`${next.poolId}:`), [])

      // The next host finds nothing left to recover.
      const fourth = startHost([ledger, "lifeline", "1"])
      const last = await readJson(fourth, "poolId")
      assert.strictEqual(last.recovery.entries.length, 0)
      fourth.child.kill("SIGTERM")
      assert.strictEqual(await fourth.exited, 143)
    } finally {
      killSurvivors(prefix)
    }
  })
})
