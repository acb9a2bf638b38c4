/**
 * Adversarial (fourth round): a spawn's environment is now built when `spawn` is
 * called, before it waits for a slot (`Tree.environment`), and taken out of the
 * request at its launch. Spawns queued behind a full pool (forked by the helper):
 * each child gets the policy's view of the host's environment as of its spawn
 * call (stripped names absent, preserved and plain ones present, explicit ones
 * on top, an explicit `undefined` deleting), its own `SHEPHERD_ID`, and nothing
 * of another queued spawn's environment.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { ChildProcess } from "effect/process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { awaitStats, cleanupPools, sh, withPool } from "./harness.ts"

afterEach(cleanupPools)

const names = ["ADV4_SECRET", "ADV4_S_FOO", "ADV4_S_KEEP", "ADV4_PLAIN", "ADV4_LATE"]
const readEnv = (file: string): Record<string, string> => {
  const env: Record<string, string> = {}
  for (const line of fs.readFileSync(file, "latin1").split("\0")) {
    const eq = line.indexOf("=")
    if (eq > 0) env[line.slice(0, eq)] = line.slice(eq + 1)
  }
  return env
}
const pick = (env: Record<string, string>) =>
  Object.fromEntries(Object.entries(env).filter(([k]) => k.startsWith("ADV4_") || k === "SHEPHERD_ID").sort())

describe("adversarial round 4: environments of queued spawns", () => {
  it.live("each queued spawn gets the policy's environment of its spawn call, and its own SHEPHERD_ID", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "adv4-env-"))
    const go = path.join(dir, "go")
    const policy = {
      strip: ["ADV4_SECRET"],
      stripPrefixes: ["ADV4_S_"],
      preserve: ["ADV4_S_KEEP"],
      preservePrefixes: []
    }
    return withPool(
      { name: "adv4-env", forkFrom: "helper", slots: 1, env: policy, kill: { grace: "1 second" } },
      (pool) =>
        Effect.gen(function*() {
          const quiet = { stdin: "ignore", stdout: "ignore", stderr: "ignore" } as const
          // The one slot, held until `go`.
          yield* pool.spawn(sh(`while [ ! -e ${go} ]; do sleep 0.01; done`, quiet))
          const dump = (i: number, options: ChildProcess.CommandOptions = {}) =>
            Effect.flatMap(
              pool.spawn(
                ChildProcess.make("sh", ["-c", `cat /proc/$$/environ > ${dir}/env${i}`], { ...quiet, ...options })
              ),
              (m) => Effect.map(m.awaitExit, (status) => ({ shepherdId: m.shepherdId, status, env: m.env }))
            )
          process.env.ADV4_SECRET = "s1"
          process.env.ADV4_S_FOO = "f1"
          process.env.ADV4_S_KEEP = "k1"
          process.env.ADV4_PLAIN = "p1"
          const f0 = yield* Effect.forkChild(dump(0))
          yield* awaitStats(pool, "spawn 0 queued", (s) => s.waiting === 1)
          process.env.ADV4_PLAIN = "p2"
          process.env.ADV4_LATE = "l2"
          const f1 = yield* Effect.forkChild(
            dump(1, { env: { ADV4_SECRET: "explicit", ADV4_PLAIN: undefined }, extendEnv: true })
          )
          yield* awaitStats(pool, "spawn 1 queued", (s) => s.waiting === 2)
          const f2 = yield* Effect.forkChild(dump(2, { env: { ADV4_ONLY: "o" } }))
          yield* awaitStats(pool, "spawn 2 queued", (s) => s.waiting === 3)
          // Changed after every spawn call: no child sees these.
          process.env.ADV4_PLAIN = "p3"
          process.env.ADV4_S_KEEP = "k3"
          delete process.env.ADV4_LATE
          fs.writeFileSync(go, "")
          const [r0, r1, r2] = yield* Effect.forEach([f0, f1, f2], Fiber.join)
          for (const r of [r0!, r1!, r2!]) assert.deepStrictEqual(r.status, { code: 0, signal: null })
          assert.deepStrictEqual(pick(readEnv(`${dir}/env0`)), {
            ADV4_PLAIN: "p1",
            ADV4_S_KEEP: "k1",
            SHEPHERD_ID: r0!.shepherdId
          })
          assert.deepStrictEqual(pick(readEnv(`${dir}/env1`)), {
            ADV4_LATE: "l2",
            ADV4_SECRET: "explicit",
            ADV4_S_KEEP: "k1",
            SHEPHERD_ID: r1!.shepherdId
          })
          assert.deepStrictEqual(pick(readEnv(`${dir}/env2`)), { ADV4_ONLY: "o", SHEPHERD_ID: r2!.shepherdId })
          assert.deepStrictEqual([...r0!.env.stripped].filter((n) => n.startsWith("ADV4_")).sort(), [
            "ADV4_SECRET",
            "ADV4_S_FOO"
          ])
        })
    ).pipe(Effect.ensuring(Effect.sync(() => {
      for (const name of names) delete process.env[name]
      fs.rmSync(dir, { recursive: true, force: true })
    })))
  }, 120_000)
})
