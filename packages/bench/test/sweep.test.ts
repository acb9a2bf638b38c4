/**
 * The leak sweep signals only what is provably this run's, and a scenario
 * stopped at its time limit leaves nothing of the run behind.
 *
 * Every process here is started by the test with a recorded identity (pid and
 * start time) and killed in `afterEach` if still alive, whatever the outcome.
 * Nothing asserts a duration.
 */
import * as Effect from "effect/Effect"
import * as NodeChildProcess from "node:child_process"
import * as crypto from "node:crypto"
import { afterEach, describe, expect, it } from "vitest"
import { carriers, type Identity, identify, isAlive, markerName } from "../src/procs.ts"
import { runWithLimit } from "../src/runner.ts"
import { classify, killOurs, type Ownership, sweep } from "../src/sweep.ts"

const started: Array<Identity> = []
const runs: Array<Ownership> = []

afterEach(() => {
  killOurs(started.splice(0).map((id) => ({ ...id, value: "", cmdline: "" })))
  // Whatever a failed assertion left: processes carrying one of this file's run markers.
  for (const own of runs.splice(0)) killOurs(classify({ ...own, descendants: false }).ours)
})

/** The environment of the test process without any bench run marker. */
const baseEnv = (): Record<string, string> => {
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && k !== markerName) env[k] = v
  return env
}

/** Starts `sleep 1000` orphaned (its shell exits), so it is no descendant of this process; returns its identity. */
const orphanSleep = (env: Record<string, string>): Identity => {
  const out = NodeChildProcess.execFileSync("sh", ["-c", "sleep 1000 >/dev/null 2>&1 & echo $!"], {
    env,
    encoding: "utf8"
  })
  const id = identify(Number(out.trim()))
  if (id === undefined) throw new Error(`the orphaned sleep ${out.trim()} is not alive`)
  started.push(id)
  return id
}

const newRun = (): Ownership => {
  const own = {
    runId: `test-${process.pid}-${crypto.randomUUID().slice(0, 8)}`,
    poolIds: new Set<string>(),
    descendants: false
  }
  runs.push(own)
  return own
}

describe("leak sweep", () => {
  it("kills a b-* carrier with this run's marker, leaves a foreign one alone and reports it", async () => {
    const own = newRun()
    const tag = crypto.randomUUID().slice(0, 8)
    const foreign = orphanSleep({ ...baseEnv(), SHEPHERD_ID: `b-foreign-${tag}~x:1` })
    const foreignSentinel = orphanSleep({ ...baseEnv(), SHEPHERD_SENTINEL: `b-foreign-${tag}~x` })
    const otherRun = orphanSleep({ ...baseEnv(), SHEPHERD_ID: `b-other-${tag}~x:1`, [markerName]: `${own.runId}-not` })
    const marked = orphanSleep({ ...baseEnv(), SHEPHERD_ID: `b-ours-${tag}~x:1`, [markerName]: own.runId })

    const result = await sweep(own, "test", 0)

    expect(isAlive(marked)).toBe(false)
    expect(result.killed.some((l) => l.includes(`pid ${marked.pid} `))).toBe(true)
    for (const f of [foreign, foreignSentinel, otherRun]) {
      expect(isAlive(f)).toBe(true)
      expect(result.killed.some((l) => l.includes(`pid ${f.pid} `))).toBe(false)
      expect(result.foreign.some((l) => l.includes(`pid ${f.pid} `) && l.endsWith("not ours: left alone"))).toBe(
        true
      )
    }
  })

  it("counts members and the sentinel of this run's pools as ours, and descendants only when asked", () => {
    const tag = crypto.randomUUID().slice(0, 8)
    const poolId = `b-pool-${tag}~abcd1234`
    const own: Ownership = { ...newRun(), poolIds: new Set([poolId]) }
    const member = orphanSleep({ ...baseEnv(), SHEPHERD_ID: `${poolId}:7` })
    const sentinel = orphanSleep({ ...baseEnv(), SHEPHERD_SENTINEL: poolId })
    const lookalike = orphanSleep({ ...baseEnv(), SHEPHERD_ID: `${poolId}0:7` })
    const child = NodeChildProcess.spawn("sleep", ["1000"], { env: baseEnv(), stdio: "ignore" })
    const childId = identify(child.pid!)!
    started.push(childId)

    const ours = (o: Ownership) => new Set(classify(o).ours.map((c) => c.pid))
    const without = ours(own)
    expect(without.has(member.pid)).toBe(true)
    expect(without.has(sentinel.pid)).toBe(true)
    expect(without.has(lookalike.pid)).toBe(false)
    expect(without.has(childId.pid)).toBe(false)
    expect(ours({ ...own, descendants: true }).has(childId.pid)).toBe(true)
  })

  it("a scenario stopped at its time limit leaves no process carrying the run marker", async () => {
    const own = newRun()
    const env = { ...baseEnv(), [markerName]: own.runId }
    // A scenario that never ends and never cleans up: detached trees, one after another.
    const endless = Effect.gen(function*() {
      while (true) {
        yield* Effect.sync(() => {
          const child = NodeChildProcess.spawn("sh", ["-c", "sleep 1000 & sleep 1000 & wait"], {
            env,
            stdio: "ignore",
            detached: true
          })
          child.unref()
          const id = child.pid === undefined ? undefined : identify(child.pid)
          if (id !== undefined) started.push(id)
        })
        yield* Effect.sleep("20 millis")
      }
    })

    const result = await Effect.runPromise(runWithLimit(endless, 300, own, "test limit", 2_000))

    expect(result.exit).toBeUndefined()
    expect(result.sweep.killed.length).toBeGreaterThan(0)
    expect(carriers(markerName, (v) => v === own.runId)).toEqual([])
  })
})
