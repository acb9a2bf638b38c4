/**
 * Adversarial (fifth round): the host closed a reaped leader's kept
 * /proc/<pid>/stat descriptor with `fs.close` (libuv's thread pool) instead of
 * `fs.closeSync` for a while, to save its event loop 5-10 µs per leader; this
 * test broke it (160 of 160 descriptors still open), and it was dropped.
 *
 * libuv's thread pool is the application's, not Shepherd's: four slow jobs of the
 * host (an `fs.open` of a FIFO nobody writes yet, a DNS lookup against a dead
 * resolver, a long `crypto.pbkdf2`, zlib) hold every thread, and a queued close
 * waits behind them. Here four opens of FIFOs occupy the pool (the application's
 * own business), and sessions of trees are opened and closed meanwhile: every
 * closed leader's stat descriptor must be let go once its tree is gone, as it
 * was with `closeSync`, whatever the application does with the thread pool.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { cleanupPools, eventually, sh, withPool } from "./harness.ts"
import { statFdsHeld } from "./support.ts"

afterEach(cleanupPools)

const threads = Math.max(1, Number(process.env.UV_THREADPOOL_SIZE ?? 4) || 4)

describe("adversarial round 5: stat descriptors with a busy libuv thread pool", () => {
  it.live("a closed session's leaders' stat descriptors are let go while the thread pool is busy", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "adv5-statfd-"))
    const fifos = Array.from({ length: threads }, (_, i) => path.join(dir, `fifo${i}`))
    /** Releases the blocked opens (a writer arrives), and closes what they opened. */
    const release = () => {
      for (const f of fifos) {
        try {
          fs.closeSync(fs.openSync(f, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK))
        } catch {
          // no reader waiting (already released)
        }
      }
    }
    const opened: Array<Promise<void>> = []
    return withPool(
      { name: "adv5-statfd", forkFrom: "helper", slots: 64, kill: { grace: "1 second" } },
      (pool) =>
        Effect.gen(function*() {
          // The application's own slow jobs: every thread of the pool waits in open(2) for a writer.
          for (const f of fifos) {
            const { execFileSync } = yield* Effect.promise(() => import("node:child_process"))
            execFileSync("mkfifo", [f])
            opened.push(
              new Promise((resolve) =>
                fs.open(f, "r", (err, fd) => {
                  if (err === null) fs.closeSync(fd)
                  resolve()
                })
              )
            )
          }
          const before = new Set(statFdsHeld())
          const closedLeaders = new Set<number>()
          for (let round = 0; round < 4; round++) {
            const session = `s${round}`
            const ms = yield* Effect.forEach(
              Array.from({ length: 40 }),
              () => pool.spawn(sh("exec sleep 1000"), { session }),
              { concurrency: 8 }
            )
            for (const m of ms) closedLeaders.add(m.pid)
            const reports = yield* pool.closeSession(session)
            assert.strictEqual(reports.length, 40)
          }
          // Every tree is gone and reported: none of their leaders' descriptors is needed any more.
          yield* eventually(
            "the closed leaders' stat descriptors to be let go",
            () => statFdsHeld().filter((pid) => closedLeaders.has(pid) && !before.has(pid)).length === 0,
            15_000
          ).pipe(Effect.catchDefect((defect) =>
            Effect.sync(() => {
              const held = statFdsHeld().filter((pid) => closedLeaders.has(pid)).length
              throw new Error(
                `${String(defect)}; still open: ${held} of ${closedLeaders.size} closed leaders' stat descriptors`
              )
            })
          ))
        })
    ).pipe(Effect.ensuring(Effect.promise(async () => {
      release()
      await Promise.all(opened)
      fs.rmSync(dir, { recursive: true, force: true })
    })))
  }, 120_000)
})
