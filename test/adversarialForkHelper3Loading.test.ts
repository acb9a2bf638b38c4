/**
 * Adversarial (third round): a helper killed "while loading" after it forked.
 *
 * A helper the host has not heard "ready" from within the start budget (10 s)
 * is killed, and every spawn sent to it is forked again by the host ("not
 * started"), on the claim that a helper not ready has forked nothing. But
 * "ready" is what the *host has read*: the start budget is judged in a
 * setImmediate, and whatever runs in that check phase before it (another
 * callback's sync work, a GC) lets the helper load, say "ready" and fork the
 * spawn without the host reading a byte. `killUnanswered` then kills that fork
 * (it is the stopped helper's unanswered child), after it ran, and the host
 * runs the same command a second time: one spawn, two executions.
 *
 * Staged: the helper is stopped as soon as it is started (a machine thrashing
 * for 10 s would do the same), and continued from a setImmediate queued just
 * before the launcher's judge, which then holds the loop for 3 s.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import * as NodeHelperLauncher from "@shepherd/node/NodeHelperLauncher"
import { Effect, Exit, Fiber, Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { cleanupPools, sh } from "./harness.ts"
import { processes } from "./support.ts"
import { helpers, signal } from "./forkHelperSupport.ts"

afterEach(cleanupPools)

const prefix = `adv3-fh-loading-${process.pid}-${Date.now()}`

describe("adversarial fork helper, round 3: a helper taken for loading after it forked", () => {
  it.live("one spawn runs its command once", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "adv3-fh-loading-"))
    const marker = path.join(dir, "runs")
    const original = globalThis.setTimeout
    let helper: number | undefined
    return Effect.scoped(Effect.gen(function*() {
      const launcher = yield* NodeHelperLauncher.make()
      const scope = yield* Effect.scope
      globalThis.setTimeout = ((f: (...a: Array<unknown>) => void, delay?: number, ...rest: Array<unknown>) => {
        if (delay !== 10_000) return original(f, delay, ...rest)
        globalThis.setTimeout = original
        return original(() => {
          setImmediate(() => {
            if (helper !== undefined) signal(helper, "SIGCONT")
            Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 3_000)
          })
          f(...rest)
        }, delay)
      }) as typeof setTimeout
      const one = Effect.runFork(Effect.provideService(
        launcher.launch(
          sh(`echo run >> ${marker}; exec sleep 1000.941`),
          { ...(process.env as Record<string, string>), SHEPHERD_ID: `${prefix}:1` }
        ),
        Scope.Scope,
        scope
      ))
      helper = helpers()[0]?.pid
      assert.isDefined(helper)
      signal(helper!, "SIGSTOP")
      const r = yield* Fiber.await(one)
      if (Exit.isSuccess(r)) signal(r.value.pid, "SIGKILL")
      const runs = fs.existsSync(marker)
        ? fs.readFileSync(marker, "utf8").split("\n").filter((l) => l !== "").length
        : 0
      assert.strictEqual(runs, 1, "the command of one spawn ran this many times")
    })).pipe(Effect.ensuring(Effect.sync(() => {
      globalThis.setTimeout = original
      if (helper !== undefined) signal(helper, "SIGKILL")
      for (const p of processes()) if (p.shepherdId?.startsWith(prefix)) signal(p.pid, "SIGKILL")
      fs.rmSync(dir, { recursive: true, force: true })
    })))
  }, 60_000)
})
