/**
 * How a measurement child process reports back: one line `RESULT <json>` on
 * stdout. The parent runs it with `runChild`.
 */
import * as Effect from "effect/Effect"
import * as NodeChildProcess from "node:child_process"
import { fileURLToPath } from "node:url"
import type { ScenarioOutput } from "../harness.ts"
import type { Ctx } from "../pools.ts"

const prefix = "RESULT "

export const report = (value: unknown): void => {
  process.stdout.write(`${prefix}${JSON.stringify(value)}\n`)
}

/**
 * Runs `node [flags] script args`, bounded by `timeoutMs`; resolves to the reported value.
 * `wrapper` (e.g. `["tini", "-s", "--"]`) is a command that runs node as its child; `signal`
 * aborts the run (the child is killed with `killSignal`, as at the timeout).
 */
export const runChild = <A>(
  script: string,
  args: ReadonlyArray<string>,
  flags: ReadonlyArray<string>,
  timeoutMs: number,
  wrapper: ReadonlyArray<string> = [],
  signal?: AbortSignal,
  killSignal: NodeJS.Signals = "SIGKILL"
): Promise<A> =>
  new Promise<A>((resolve, reject) => {
    // The parent's export conditions (`--conditions=@shepherd/source` on its command line): a child
    // loads Shepherd from where the parent did, as the run's header says.
    const conditions = process.execArgv.filter((arg) => /^(--conditions|-C)=/.test(arg))
    const argv = [...wrapper, process.execPath, ...conditions, ...flags, script, ...args]
    NodeChildProcess.execFile(
      argv[0]!,
      argv.slice(1),
      {
        timeout: Math.ceil(timeoutMs), // Node wants an integer; a load-scaled limit is not one
        killSignal,
        maxBuffer: 16 * 1024 * 1024,
        ...(signal === undefined ? {} : { signal })
      },
      (error, stdout, stderr) => {
        const line = stdout.split("\n").find((l) => l.startsWith(prefix))
        if (error !== null || line === undefined) {
          reject(
            new Error(`${script} ${args.join(" ")} failed: ${error?.message ?? "no result"}\n${stderr.slice(-2000)}`)
          )
          return
        }
        resolve(JSON.parse(line.slice(prefix.length)) as A)
      }
    )
  })

const freshScript = fileURLToPath(new URL("./fresh.ts", import.meta.url))

/**
 * Runs a scenario's `measure` in a fresh Node process (src/child/fresh.ts), so that it measures
 * the scenario, not what the bench process did before it. Interrupted (its time limit), the child
 * gets SIGTERM: it interrupts its scenario, which stops what it started, and exits.
 */
export const inFreshProcess = (scenario: "ledger" | "underLoad", ctx: Ctx): Effect.Effect<ScenarioOutput> =>
  Effect.callback<ScenarioOutput>((resume) => {
    const abort = new AbortController()
    runChild<ScenarioOutput>(
      freshScript,
      [scenario, ctx.quick ? "quick" : "full", ctx.tmpDir],
      [],
      600_000,
      [],
      abort.signal,
      "SIGTERM"
    ).then(
      (output) => resume(Effect.succeed(output)),
      (error) => resume(Effect.die(error))
    )
    return Effect.sync(() => abort.abort())
  })
