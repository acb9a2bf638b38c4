/**
 * Adversarial (fifth round): the fork helper now sends a burst of exits in chunks
 * of up to 16 (the first at once, a chunk each time 16 are pending, the rest at
 * setImmediate; any other message first flushes what is pending).
 *
 * A burst of N (17, 33, 49: one past each chunk boundary) leaders ends while the
 * helper is SIGSTOPped, so the helper reaps all N in one pass when it is SIGCONTed
 * and sends them as ceil(N/16)+ messages. In the same synchronous run of the host
 * (it reads none of those messages), strangers (this test's own detached `sleep`,
 * each its own group) are forked into the pids of the leaders at the chunk
 * boundaries (index 0, 15, 16, 31, 32, N-1) with `ns_last_pid`, and the next pids
 * are pointed at the other reaped leaders' for the N spawns queued behind the
 * burst (every slot is taken), which the helper forks while later chunks are still
 * on their way. Every status must be exact, every slot come back, no stranger be
 * signalled, nothing of the pool survive.
 *
 * Then the same with the helper SIGKILLed as soon as it has reaped a first leader
 * (mid-burst): exits it never sent are read from /proc ({ code: null, signal:
 * null }); none may be another tree's, every slot must come back.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { ProcessPool } from "@shepherd/core/ProcessPool"
import { Effect, Fiber, References } from "effect"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { helperPool, helpers, signal } from "./forkHelperSupport.ts"
import { assertNoSurvivors, awaitStats, cleanupPools, sh, track } from "./harness.ts"
import { canChoosePid, isAlive, killMatching, statOf } from "./support.ts"

const strangerMark = "1000.57"
const cleanup = () => killMatching((c) => c === `sleep ${strangerMark}`)
afterEach(cleanupPools)
afterEach(cleanup)

const quiet = { stdin: "ignore", stdout: "ignore", stderr: "ignore" } as const
const expected = (i: number) => i % 7 === 6 ? { code: null, signal: "SIGKILL" } : { code: i, signal: null }
const stateOf = (pid: number): string | undefined => {
  try {
    const text = fs.readFileSync(`/proc/${pid}/stat`, "latin1")
    return text.slice(text.lastIndexOf(")") + 2, text.lastIndexOf(")") + 3)
  } catch {
    return undefined
  }
}
const spinUntil = (predicate: () => boolean, ms: number): boolean => {
  const end = performance.now() + ms
  while (!predicate()) if (performance.now() > end) return false
  return true
}

const burst = (n: number, mode: "stopped" | "paused" | "killed", pauseAfterMs = 0) =>
  Effect.gen(function*() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "adv5-chunk-"))
    const go = path.join(dir, "go")
    let helperPid: number | undefined
    const strangers: Array<{ pid: number; startTime: string }> = []
    const notes: Array<string> = []
    const queuedPids: Array<number> = []
    yield* Effect.gen(function*() {
      const pool = yield* ProcessPool
      const prefix = `${pool.poolId}:`
      track(prefix)
      const first = yield* Effect.forEach(Array.from({ length: n }, (_, i) => i), (i) =>
        pool.spawn(
          // Polling every 50 ms, not 5: 64 trees polling every 5 ms fork 12,800 times a second, which
          // wraps the pid space every few seconds for every other test on the machine.
          sh(`while [ ! -e ${go} ]; do sleep 0.05; done; ${i % 7 === 6 ? "kill -9 $$" : `exit ${i}`}`, quiet)
        ), { concurrency: 8 })
      yield* awaitStats(pool, "every slot taken", (s) => s.inUse === n)
      const queued = yield* Effect.forEach(
        Array.from({ length: n }, (_, i) => i),
        (i) =>
          Effect.forkChild(Effect.flatMap(pool.spawn(sh(`exit ${100 + i}`, quiet)), (m) => {
            queuedPids.push(m.pid)
            return m.awaitExit
          }))
      )
      yield* awaitStats(pool, "the queue", (s) => s.waiting === n)
      const helper = helpers()[0]!.pid
      helperPid = helper
      const pids = first.map((m) => m.pid)
      // The burst ends while the helper cannot reap it.
      signal(helper, "SIGSTOP")
      assert.isTrue(spinUntil(() => stateOf(helper) === "T", 5_000), "helper stopped")
      fs.writeFileSync(go, "")
      const zombies = () => pids.every((p) => stateOf(p) === "Z")
      // Not synchronous: the sh loops need to run; the host's loop reads nothing from a stopped helper.
      const deadline = Date.now() + 30_000
      while (!zombies() && Date.now() < deadline) yield* Effect.sleep(5)
      assert.isTrue(zombies(), "every leader of the burst a zombie")
      // From here on, one synchronous run of the host.
      signal(helper, "SIGCONT")
      if (mode === "killed") {
        // Mid-burst: as soon as it has reaped one.
        spinUntil(() => pids.some((p) => stateOf(p) === undefined), 5_000)
        signal(helper, "SIGKILL")
        notes.push(`reaped before the kill: ${pids.filter((p) => stateOf(p) === undefined).length}`)
      } else if (mode === "paused") {
        // Mid-burst: stopped again as soon as it has reaped one, for a while of the host's loop (it
        // reads what was sent, returns slots, and sends queued spawns to the stopped helper).
        spinUntil(() => pids.some((p) => stateOf(p) === undefined), 5_000)
        spinUntil(() => false, pauseAfterMs)
        signal(helper, "SIGSTOP")
        spinUntil(() => stateOf(helper) === "T", 5_000)
        notes.push(`reaped before the pause: ${pids.filter((p) => stateOf(p) === undefined).length}`)
        yield* Effect.sleep(300)
        const stats = yield* pool.stats
        notes.push(`during the pause: ${JSON.stringify(stats)}`)
        signal(helper, "SIGCONT")
      } else if (canChoosePid) {
        const boundary = [...new Set([0, 15, 16, 31, 32, n - 1].filter((i) => i < n))]
        for (const i of boundary) {
          const pid = pids[i]!
          if (!spinUntil(() => stateOf(pid) === undefined, 2_000)) continue
          fs.writeFileSync("/proc/sys/kernel/ns_last_pid", `${pid - 1}`)
          const child = NodeChildProcess.spawn("sleep", [strangerMark], { detached: true, stdio: "ignore" })
          child.unref()
          const st = child.pid === undefined ? undefined : statOf(child.pid)
          if (child.pid !== undefined && st !== undefined) strangers.push({ pid: child.pid, startTime: st.startTime })
          notes.push(child.pid === pid ? `stranger in leader ${i}'s pid` : `stranger missed leader ${i}`)
        }
        // The queued spawns: forked by the helper into the other leaders' pids, lowest first.
        const rest = pids.filter((p) => !strangers.some((s) => s.pid === p)).sort((a, b) => a - b)
        spinUntil(() => stateOf(rest[0]!) === undefined, 2_000)
        fs.writeFileSync("/proc/sys/kernel/ns_last_pid", `${rest[0]! - 1}`)
      }
      const statuses = yield* Effect.forEach(first, (m) => m.awaitExit)
      const queuedExits = yield* Effect.forEach(queued, (f) => Fiber.await(f))
      notes.push(`queued trees in a burst leader's pid: ${queuedPids.filter((p) => pids.includes(p)).length}/${n}`)
      if (mode !== "killed") {
        assert.deepStrictEqual(statuses, first.map((_, i) => expected(i)))
        assert.deepStrictEqual(
          queuedExits.map((e) => e._tag === "Success" ? e.value : String(e)),
          queued.map((_, i) => ({ code: 100 + i, signal: null }))
        )
      } else {
        // Exact, or unseen (read from /proc once the helper was gone): never another tree's.
        for (const [i, s] of statuses.entries()) {
          if (s.code === null && s.signal === null) continue
          assert.deepStrictEqual(s, expected(i), `burst tree ${i}`)
        }
        for (const [i, e] of queuedExits.entries()) {
          if (e._tag !== "Success") continue // a spawn sent to the dying helper may fail
          if (e.value.code === null && e.value.signal === null) continue
          assert.deepStrictEqual(e.value, { code: 100 + i, signal: null }, `queued tree ${i}`)
        }
      }
      yield* awaitStats(pool, "every slot back", (s) => s.inUse === 0 && s.waiting === 0)
      // The pool's next tree still starts (no slot lost).
      const last = yield* pool.spawn(sh("exit 9", quiet))
      assert.deepStrictEqual(yield* last.awaitExit, { code: 9, signal: null })
      for (const s of strangers) {
        assert.isTrue(isAlive(s.pid) && statOf(s.pid)?.startTime === s.startTime, `stranger ${s.pid} signalled`)
      }
      yield* pool.closeSession("default").pipe(Effect.ignore)
      assertNoSurvivors(prefix)
    }).pipe(
      Effect.scoped,
      Effect.provide(
        helperPool({ name: `adv5-chunk-${n}`, slots: n, hardCap: n * 4, kill: { grace: "1 second" } }, 10_000),
        { local: true }
      ),
      Effect.provideService(References.MinimumLogLevel, "Error"),
      Effect.ensuring(Effect.sync(() => {
        if (helperPid !== undefined) {
          signal(helperPid, "SIGCONT")
        }
        cleanup()
        fs.rmSync(dir, { recursive: true, force: true })
      }))
    )
    return notes
  })

describe("adversarial round 5: exits in chunks of 16", () => {
  for (const n of [17, 33, 49]) {
    it.live(
      `a burst of ${n} reaped in one pass, strangers and queued spawns in its pids`,
      () =>
        Effect.map(burst(n, "stopped"), (notes) => {
          console.log(`n=${n}: ${notes.join("; ")}`)
        }),
      120_000
    )
  }
  for (const n of [33, 64]) {
    it.live(
      `a burst of ${n}, the helper SIGSTOPped again mid-burst`,
      () =>
        Effect.forEach([0, 0.5, 1, 2, 4], (after) =>
          Effect.map(burst(n, "paused", after), (notes) => {
            console.log(`paused n=${n} after ${after} ms: ${notes.join("; ")}`)
          }), { discard: true }),
      120_000
    )
  }
  it.live("a burst of 48, the helper SIGKILLed mid-burst", () =>
    Effect.map(burst(48, "killed"), (notes) => {
      console.log(`killed: ${notes.join("; ")}`)
    }), 120_000)
})
