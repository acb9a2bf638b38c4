/**
 * A sentinel that dies on its own is not silent: the lifeline restarts it
 * with everything it must watch, says so (log, status, doctor), and the new
 * sentinel still ends the trees of a host that then dies hard. One that
 * keeps dying is given up on, loudly.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import type * as Lifeline from "@shepherd/core/Lifeline"
import { Effect, Option } from "effect"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { cleanupPools, eventually, sh, withPool } from "./harness.ts"
import { killSurvivors, processes, readEnvVar, survivors, trees, waitUntil } from "./support.ts"

afterEach(cleanupPools)

const grace = 300
const forceWait = 500

/** Live sentinels of `poolId`. */
const sentinels = (poolId: string): Array<number> =>
  processes().filter((p) => p.state !== "Z" && p.state !== "X" && readEnvVar(p.pid, "SHEPHERD_SENTINEL") === poolId)
    .map((p) => p.pid)

const sigkill = (pid: number) => {
  try {
    process.kill(pid, "SIGKILL")
  } catch {
    // gone
  }
}

describe("lifeline restarts", () => {
  it("a SIGKILLed sentinel is restarted and still ends every tree when the host then dies hard", async () => {
    const fixture = fileURLToPath(new URL("./fixtures/crashHost.ts", import.meta.url))
    const ledger = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-lifeline-")), "pool.ledger")
    const host = NodeChildProcess.spawn(process.execPath, [fixture, ledger, "lifeline", "4"], {
      stdio: ["ignore", "pipe", "pipe"]
    })
    let output = ""
    let ready: ((line: string) => void) | undefined
    const exited = new Promise<void>((resolve) => host.on("exit", () => resolve()))
    // A host that dies before it is ready fails the test at once, with what it printed.
    const readyLine = new Promise<string>((resolve, reject) => {
      ready = resolve
      void exited.then(() => reject(new Error(`host exited before ready:\n${output}`)))
    })
    const collect = (chunk: Buffer) => {
      output += chunk.toString("utf8")
      const line = output.split("\n").find((l) => l.startsWith("{") && l.includes(`"poolId"`))
      if (line !== undefined) ready?.(line)
    }
    host.stdout!.on("data", collect)
    host.stderr!.on("data", collect)
    let prefix = "unset:"
    let poolId = "unset"
    try {
      poolId = JSON.parse(await readyLine).poolId
      prefix = `${poolId}:`
      assert.isAtLeast(survivors(prefix).length, 8, "the trees run")
      assert.isTrue(await waitUntil(() => sentinels(poolId).length === 1), "one sentinel runs")
      const [first] = sentinels(poolId)

      sigkill(first!)
      const restarted = await waitUntil(() => {
        const now = sentinels(poolId)
        return now.length === 1 && now[0] !== first
      })
      assert.isTrue(restarted, `a new sentinel replaces ${first}: ${JSON.stringify(sentinels(poolId))}`)
      assert.isTrue(await waitUntil(() => output.includes("restarted as pid")), `a warning is logged:\n${output}`)

      host.kill("SIGKILL")
      await exited
      // The restarted sentinel exits once its sweep is done: nothing may be left by then.
      assert.isTrue(await waitUntil(() => sentinels(poolId).length === 0), "the sentinel finished")
      assert.deepStrictEqual(survivors(prefix), [], "survivors of the sentinel's sweep")
    } finally {
      host.kill("SIGKILL")
      killSurvivors(prefix)
      for (const pid of sentinels(poolId)) sigkill(pid)
      fs.rmSync(path.dirname(ledger), { recursive: true, force: true })
    }
  })

  it.live("the doctor shows each restart and its reason; a sentinel that keeps dying is given up on", () =>
    withPool(
      { name: "t-lifeline-restart", kill: { grace: `${grace} millis`, forceWait: `${forceWait} millis` } },
      (pool) =>
        Effect.gen(function*() {
          yield* pool.spawn(sh(trees.ignoresTerm), { session: "s" })
          const status = Effect.map(pool.lifeline, Option.getOrThrow)
          /** Polls the lifeline's status until `predicate` holds. */
          const awaitStatus = (what: string, predicate: (s: Lifeline.Status) => boolean) =>
            Effect.gen(function*() {
              const deadline = Date.now() + 60_000 // a hang guard
              while (!predicate(yield* status)) {
                if (Date.now() > deadline) {
                  return yield* Effect.die(new Error(`timed out waiting for ${what}: ${JSON.stringify(yield* status)}`))
                }
                yield* Effect.sleep(10)
              }
            })
          assert.strictEqual(sentinels(pool.poolId).length, 1)

          for (let i = 1; i <= 5; i++) {
            const [previous] = sentinels(pool.poolId)
            sigkill(previous!)
            yield* awaitStatus(`restart ${i}`, (s) => s.restarts === i && s.alive)
            yield* eventually(`sentinel ${i + 1}`, () => sentinels(pool.poolId).some((pid) => pid !== previous))
          }
          const report = (yield* pool.doctor).lifeline!
          assert.isTrue(report.alive)
          assert.strictEqual(report.restarts, 5)
          assert.strictEqual(report.watching, 1)
          assert.include(report.lastError, "SIGKILL")

          // A sixth death within the window: no new sentinel, and the status says why.
          sigkill(sentinels(pool.poolId)[0]!)
          yield* awaitStatus("giving up", (s) => s.lastError?.includes("gave up") === true)
          const last = yield* status
          assert.isFalse(last.alive)
          assert.strictEqual(last.restarts, 5)
          assert.deepStrictEqual(sentinels(pool.poolId), [])
        })
    ))
})
