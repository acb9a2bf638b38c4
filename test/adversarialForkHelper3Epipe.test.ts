/**
 * Adversarial (third round): a helper taken for "not loaded" after it forked.
 *
 * `onDeath` decides "the helper forked nothing" from `h.ready`, i.e. from
 * whether the *host has read* the helper's "ready" message, not from whether
 * the helper sent it. The "disconnect" path reads every message first, but the
 * "error" path does not: a spawn written to a helper that has just died fails
 * synchronously (EPIPE, emitted as "error" on the next tick), before the host's
 * event loop reads "ready", the pipes and "spawned" still waiting in the
 * channel. The launcher then marks itself broken and answers every spawn in
 * flight "not started": the host forks them again, and the helper's own fork
 * of the first spawn lives on, untracked (an orphan nobody owns, outside the
 * pool's trees).
 *
 * Staged: the first spawn's tree kills its parent (the helper: an OOM kill or
 * an operator would do the same) and execs a long sleep; the host's loop is
 * held (Atomics.wait, a GC pause, a sync call) while this happens; right after,
 * in the same tick, a second spawn is written to the dead helper.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import * as NodeHelperLauncher from "@shepherd/node/NodeHelperLauncher"
import { Effect, Exit, Fiber, Scope } from "effect"
import { cleanupPools, sh, show } from "./harness.ts"
import { processes } from "./support.ts"
import { signal } from "./forkHelperSupport.ts"

afterEach(cleanupPools)

const prefix = `adv3-fh-epipe-${process.pid}-${Date.now()}`

/** Kills the parent only if it is a fork helper (a host fork of the same command must not kill the host). */
const killHelper = `case "$(tr '\\0' ' ' < /proc/$PPID/cmdline)" in *forkHelper*) kill -9 $PPID;; esac; `

const carriers = (cookie: string) =>
  processes().filter((p) => p.shepherdId === cookie && p.state !== "Z" && p.state !== "X")

describe("adversarial fork helper, round 3: a spawn written to a helper that died after it forked", () => {
  it.live("the helper's fork of the first spawn is the tree, or is killed: never left running beside a host fork", () => {
    const first = `${prefix}:1`
    const second = `${prefix}:2`
    return Effect.scoped(Effect.gen(function*() {
      const launcher = yield* NodeHelperLauncher.make()
      const scope = yield* Effect.scope
      const run = <A, E>(effect: Effect.Effect<A, E, Scope.Scope>) =>
        Effect.runFork(Effect.provideService(effect, Scope.Scope, scope))
      const env = (cookie: string): Record<string, string> => ({
        ...(process.env as Record<string, string>),
        SHEPHERD_ID: cookie
      })
      // The first spawn starts the helper and is written to it; its tree kills the helper once forked.
      const one = run(launcher.launch(
        sh(killHelper + "exec sleep 1000.931"),
        env(first)
      ))
      // The host's loop is held while the helper loads, says "ready", forks the tree and is killed.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 4_000)
      // Same tick: the next spawn is written to the dead helper (EPIPE).
      const two = run(launcher.launch(sh("exec sleep 1000.932"), env(second)))
      const r1 = yield* Fiber.await(one)
      const r2 = yield* Fiber.await(two)
      // Whatever the launches answered, every process of the first spawn's cookie must be the one tree
      // the launcher handed back (none if the launch failed).
      const handed = Exit.isSuccess(r1) ? [r1.value.pid] : []
      const stray = carriers(first).filter((p) => !handed.includes(p.pid))
      for (const r of [r1, r2]) if (Exit.isSuccess(r)) signal(r.value.pid, "SIGKILL")
      assert.deepStrictEqual(stray.map(show), [], "a fork of the first spawn runs outside the tree handed back")
    })).pipe(Effect.ensuring(Effect.sync(() => {
      for (const p of processes()) if (p.shepherdId?.startsWith(prefix)) signal(p.pid, "SIGKILL")
    })))
  })
})
