/**
 * Fault injection: a host runs a random workload (every tree shape, sessions
 * opening and closing) and is SIGKILLed at a random moment — in every third
 * round right after a ledger intent and before the OS spawn. After each
 * kill, nothing carrying that host's SHEPHERD_ID may survive its lifeline
 * sentinel's sweep, and the next host must start cleanly on the same ledger.
 * `SHEPHERD_FAULT_ROUNDS` sets the rounds per chain (3 chains run side by
 * side): `pnpm test` runs 3, `pnpm test:soak` runs 100.
 */
import { assert, describe, it } from "@effect/vitest"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as readline from "node:readline"
import { fileURLToPath } from "node:url"
import { track } from "./harness.ts"
import { killSurvivors, processes, readEnvVar, survivors, waitUntil } from "./support.ts"

const fixture = fileURLToPath(new URL("./fixtures/faultHost.ts", import.meta.url))
const rounds = Number(process.env.SHEPHERD_FAULT_ROUNDS ?? "3")
const chains = 3

/** Live lifeline sentinels of `poolId`. */
const sentinels = (poolId: string): Array<number> =>
  processes().filter((p) => p.state !== "Z" && p.state !== "X" && readEnvVar(p.pid, "SHEPHERD_SENTINEL") === poolId)
    .map((p) => p.pid)
// A host is ready when it prints its ready line; on a loaded machine that can take long, so this
// bound only catches a host that hangs.
const readyWithinMs = 120_000

interface Outcome {
  readonly poolId: string
  readonly survivors: number
  readonly recovered: number
  /** Recovery outcomes the host reported at start; `Escaped`/`Unverified` would mean it did not start cleanly. */
  readonly recoveryOutcomes: ReadonlyArray<string>
  readonly killedAt: string
  /** Diagnostics: sentinels of the pool alive when the host was killed, and survivors 5 s after the sentinel's end. */
  readonly sentinelsAtKill: number
  readonly survivorsLater: number
}

interface Ready {
  readonly ready: string
  readonly recovery: { readonly entries: ReadonlyArray<{ readonly outcome: string }> }
}

const round = async (ledger: string, seed: number, atIntent: boolean): Promise<Outcome> => {
  const child = NodeChildProcess.spawn(process.execPath, [fixture, ledger, String(seed)], {
    stdio: ["ignore", "pipe", "ignore"]
  })
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()))
  const lines = readline.createInterface({ input: child.stdout! })
  let prefix: string | undefined
  let killedAt = "random"
  // In intent mode the host dies right after its n-th intent (n = 1..3, by seed), before that spawn.
  const killAtIntent = 1 + (seed % 3)
  let intents = 0
  let sentinelsAtKill = -1
  const kill = () => {
    if (child.exitCode === null && child.signalCode === null) {
      if (prefix !== undefined) sentinelsAtKill = sentinels(prefix.slice(0, -1)).length
      child.kill("SIGKILL")
    }
  }
  try {
    const ready = await new Promise<Ready>((resolve, reject) => {
      let seen: Ready | undefined
      const timer = setTimeout(
        () => reject(new Error(`host never became ready within ${readyWithinMs} ms`)),
        readyWithinMs
      )
      lines.on("line", (text) => {
        if (seen === undefined && text.startsWith("{")) {
          seen = JSON.parse(text) as Ready
          prefix = `${seen.ready}:`
          track(prefix)
          clearTimeout(timer)
          if (!atIntent) setTimeout(kill, Math.floor(Math.random() * 600))
          resolve(seen)
        } else if (seen !== undefined && atIntent && text.startsWith("intent ") && ++intents === killAtIntent) {
          killedAt = "after intent, before spawn"
          kill()
        }
      })
      child.on("exit", () => {
        clearTimeout(timer)
        if (seen === undefined) reject(new Error("host exited before it was ready"))
      })
    })
    // In intent mode, fall back to a kill after 800 ms if the workload printed too few intents.
    if (atIntent) setTimeout(kill, 800)
    await exited
    // The sentinel exits once its sweep is done: whatever carries the prefix then is a survivor. (How
    // long the sweep takes is not asserted; the wait only guards against a hang.)
    await waitUntil(() => sentinels(ready.ready).length === 0)
    const left = survivors(prefix!).length
    return {
      poolId: ready.ready,
      survivors: left,
      recovered: ready.recovery.entries.length,
      recoveryOutcomes: ready.recovery.entries.map((e) => e.outcome),
      killedAt,
      sentinelsAtKill,
      survivorsLater: left === 0
        ? 0
        : (await waitUntil(() => survivors(prefix!).length === 0, 5_000), survivors(prefix!).length)
    }
  } finally {
    // Whatever happened (no ready line, an error), neither the host nor its tree outlives the round.
    kill()
    await exited
    if (prefix !== undefined) killSurvivors(prefix)
  }
}

describe("fault injection", () => {
  it(`survives ${rounds * chains} random SIGKILLs with 0 survivors, and every next host starts cleanly`, async () => {
    // A failing chain stops the others after their current round, and the test reports only once
    // every chain has cleaned up.
    let failed = false
    const settled = await Promise.allSettled(Array.from({ length: chains }, async (_, chain) => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-fault-"))
      const ledger = path.join(dir, "pool.ledger")
      const outcomes: Array<Outcome> = []
      try {
        for (let i = 0; i < rounds && !failed; i++) {
          outcomes.push(await round(ledger, chain * 1000 + i + 1, i % 3 === 2))
        }
        // A last host opens the ledger cleanly after all that.
        if (!failed) outcomes.push(await round(ledger, chain * 1000 + 999, false))
        return outcomes
      } catch (error) {
        failed = true
        throw error
      } finally {
        fs.rmSync(dir, { recursive: true, force: true })
      }
    }))
    const rejected = settled.find((r) => r.status === "rejected")
    if (rejected !== undefined) throw rejected.reason
    const all = settled.flatMap((r) => r.status === "fulfilled" ? r.value : [])
    const bad = all.filter((o) => o.survivors > 0)
    assert.deepStrictEqual(bad, [], "no round leaves a survivor")
    const unclean = all.filter((o) => o.recoveryOutcomes.some((x) => x === "Escaped" || x === "Unverified"))
    assert.deepStrictEqual(unclean, [], "every host starts cleanly on the ledger its predecessor left")
    assert.strictEqual(all.length, chains * (rounds + 1))
    assert.isAtLeast(all.filter((o) => o.killedAt !== "random").length, 1, "some kills hit the intent window")
  }, Math.max(120_000, rounds * 10_000))
})
