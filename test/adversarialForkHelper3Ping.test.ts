/**
 * Adversarial (third round): a ping written to a helper that has just died
 * throws away the exit statuses it reported before dying.
 *
 * The ping watchdog writes to the helper from a timer. A write to a dead
 * helper fails at once (EPIPE), emitted as "error" on the next tick: `onDeath`
 * runs before the event loop has read what the helper sent before it died. A
 * tree's "exit" (code 7) is in the channel; `onDeath` clears the entries and
 * leaves the leader to /proc, where the helper's reaped child is simply gone:
 * the status becomes `{ code: null, signal: null }`. The "disconnect" path
 * reads every message first; the "error" path should too.
 *
 * Staged: the host's loop is held (Atomics.wait, a sync call, a GC) while one
 * tree exits with 7 and another kills the helper (the OOM killer would do);
 * after the hold, the overdue heartbeat fires before the poll phase.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { cleanupPools, sh, withPool } from "./harness.ts"
import { processes } from "./support.ts"

afterEach(cleanupPools)

const kill = { grace: "300 millis", forceWait: "500 millis" } as const

/** Kills the parent only if it is a fork helper. */
const killHelper = `case "$(tr '\\0' ' ' < /proc/$PPID/cmdline)" in *forkHelper*) kill -9 $PPID;; esac; `

describe("adversarial fork helper, round 3: a ping to a helper that just died", () => {
  it.live("a tree that exited before its helper died keeps its exit code", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "adv3-fh-ping-"))
    const go = path.join(dir, "go")
    return withPool(
      { name: "adv3-fh-ping", forkFrom: "helper", kill, containment: "process-group" },
      (pool) =>
        Effect.gen(function*() {
          const seven = yield* pool.spawn(sh(`while [ ! -e ${go} ]; do sleep 0.01; done; exit 7`))
          yield* pool.spawn(sh(`while [ ! -e ${go} ]; do sleep 0.01; done; sleep 0.5; ${killHelper}exec sleep 1000.98`))
          // Let the watchdog's current ping be answered: the next tick sends a new one.
          yield* Effect.sleep("1500 millis")
          setImmediate(() => {
            fs.writeFileSync(go, "")
            Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2_500)
          })
          const status = yield* seven.awaitExit
          assert.deepStrictEqual(status, { code: 7, signal: null })
        })
    ).pipe(Effect.ensuring(Effect.sync(() => {
      for (const p of processes()) if (p.cmdline === "sleep 1000.98") process.kill(p.pid, "SIGKILL")
      fs.rmSync(dir, { recursive: true, force: true })
    })))
  }, 60_000)
})
