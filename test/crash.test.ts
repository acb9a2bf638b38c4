/**
 * Crash safety on real processes: a host SIGKILLed with TERM-ignoring trees
 * (setsid and double-forked descendants included) leaves nothing behind
 * (lifeline), and a restarted host on the same ledger recovers what a host
 * without a lifeline left.
 */
import { assert, describe, it } from "@effect/vitest"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as readline from "node:readline"
import { fileURLToPath } from "node:url"
import { killSurvivors, survivors, waitUntil } from "./support.ts"

const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url))
const grace = 300
const forceWait = 500

interface Host {
  readonly child: NodeChildProcess.ChildProcess
  readonly lines: AsyncIterator<string>
  readonly exited: Promise<number | null>
}

const startHost = (args: ReadonlyArray<string>, script = "crashHost.ts"): Host => {
  const child = NodeChildProcess.spawn(process.execPath, [fixture(script), ...args], {
    stdio: ["ignore", "pipe", "inherit"]
  })
  const lines = readline.createInterface({ input: child.stdout! })[Symbol.asyncIterator]()
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code, signal) => resolve(code ?? (signal === null ? null : -1))))
  return { child, lines, exited }
}

const readJson = async (host: Host, key: string): Promise<any> => {
  while (true) {
    const next = await host.lines.next()
    if (next.done === true) throw new Error("host exited before it was ready")
    if (next.value.startsWith("{") && next.value.includes(`"${key}"`)) return JSON.parse(next.value)
  }
}

const tempLedger = () => path.join(fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-crash-")), "pool.ledger")

describe("host crash", () => {
  it("a SIGKILLed host leaves no survivor: the lifeline ends every tree within grace + forceWait + 1 s", async () => {
    const host = startHost([tempLedger(), "lifeline", "4"])
    const ready = await readJson(host, "poolId")
    const prefix = `${ready.poolId}:`
    try {
      assert.isAtLeast(survivors(prefix).length, 8, "the trees run before the crash")
      host.child.kill("SIGKILL")
      await host.exited
      const gone = await waitUntil(() => survivors(prefix).length === 0, grace + forceWait + 1000)
      assert.isTrue(gone, `survivors: ${JSON.stringify(survivors(prefix))}`)
    } finally {
      killSurvivors(prefix)
    }
  })

  it("a restarted host recovers what a crashed host without lifeline left, then the ledger is clean", async () => {
    const ledger = tempLedger()
    const first = startHost([ledger, "nolifeline", "4"])
    const ready = await readJson(first, "poolId")
    const prefix = `${ready.poolId}:`
    try {
      first.child.kill("SIGKILL")
      await first.exited
      await new Promise((r) => setTimeout(r, 300))
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
