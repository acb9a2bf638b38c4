/**
 * The fork helper gets a spawn's environment as the changes to the one it got
 * whole last (a pool's spawns usually differ in their `SHEPHERD_ID` only). On
 * real processes, step by step, a tree forked by the helper must start with
 * exactly the environment a tree forked by the host gets for the same spawn:
 * variables added, changed and removed between spawns, more changes than are
 * sent as changes, an explicit environment that inherits nothing, and a
 * variable named `__proto__`.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { ChildProcess } from "effect/process"
import * as fs from "node:fs"
import { cleanupPools, eventually, withPool } from "./harness.ts"

afterEach(cleanupPools)

const kill = { grace: "300 millis", forceWait: "500 millis" } as const

/** A process's starting environment, `SHEPHERD_ID` left out, as sorted `name=value` lines. */
const environOf = (pid: number): Array<string> =>
  fs.readFileSync(`/proc/${pid}/environ`, "latin1").split("\0").filter((e) =>
    e !== "" &&
    !e.startsWith("SHEPHERD_ID=")
  ).sort()

const runsSleeper = (pid: number): boolean => {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "latin1").startsWith("sh\0-c\0sleep 1000.83 & wait")
  } catch {
    return false
  }
}

/** A long sleep whose leader stays `sh`, so its environ is stable once the spawn returns. */
const sleeper = (options?: ChildProcess.CommandOptions) =>
  ChildProcess.make("sh", ["-c", "sleep 1000.83 & wait"], { stdin: "ignore", stdout: "ignore", ...options })

/** `__proto__` as a variable (an own property, not the prototype), and `HOME` deleted. */
const oddEnv = (): Record<string, string | undefined> => {
  const env: Record<string, string | undefined> = Object.create(null)
  env["__proto__"] = "p"
  env.HOME = undefined
  return env
}

const many = Array.from({ length: 20 }, (_, i) => `FH_ENV_MANY_${i}`)

/** Each step changes the host's environment (or the command), then both pools spawn. */
const steps: ReadonlyArray<
  { readonly name: string; readonly before: () => void; readonly options?: ChildProcess.CommandOptions }
> = [
  { name: "first spawn (sent whole)", before: () => {} },
  { name: "a variable added", before: () => void (process.env.FH_ENV_A = "1") },
  { name: "a variable changed", before: () => void (process.env.FH_ENV_A = "2 with spaces=and equals") },
  { name: "a variable removed", before: () => void delete process.env.FH_ENV_A },
  {
    name: "20 variables added (sent whole again)",
    before: () => many.forEach((n, i) => void (process.env[n] = `${i}`))
  },
  { name: "20 variables removed", before: () => many.forEach((n) => void delete process.env[n]) },
  { name: "an explicit environment, nothing inherited", before: () => {}, options: { env: { ONLY: "this" } } },
  { name: "inherited again", before: () => {} },
  {
    name: "a variable named __proto__, and one set to undefined",
    before: () => {},
    options: { env: oddEnv(), extendEnv: true }
  }
]

describe("fork helper: environments sent as changes", () => {
  it.live("every tree starts with the environment the host launcher would give it", () =>
    withPool(
      { name: "t-fh-env-helper", forkFrom: "helper", slots: 16, kill },
      (helperPool) =>
        withPool({ name: "t-fh-env-host", forkFrom: "host", slots: 16, kill }, (hostPool) =>
          Effect.gen(function*() {
            for (const step of steps) {
              step.before()
              const viaHelper = yield* helperPool.spawn(sleeper(step.options), { session: "s" })
              const viaHost = yield* hostPool.spawn(sleeper(step.options), { session: "s" })
              // Right after the spawn the leader may still be the cgroup placement wrapper, or inside
              // execve() with its environ not set up yet: read it once it runs the command.
              yield* eventually(
                "both leaders to run the command",
                () => [viaHelper.pid, viaHost.pid].every((pid) => runsSleeper(pid) && environOf(pid).length > 0)
              )
              const helperEnv = environOf(viaHelper.pid)
              const hostEnv = environOf(viaHost.pid)
              assert.deepStrictEqual(
                helperEnv,
                hostEnv,
                `${step.name}: only through the helper [${
                  helperEnv.filter((e) => !hostEnv.includes(e))
                }], only from the host [${hostEnv.filter((e) => !helperEnv.includes(e))}]`
              )
            }
            yield* helperPool.closeSession("s")
            yield* hostPool.closeSession("s")
          }))
    ).pipe(Effect.ensuring(Effect.sync(() => {
      delete process.env.FH_ENV_A
      for (const n of many) {
        delete process.env[n]
      }
    }))))
})
