/**
 * Slot accounting on real processes: the limit holds under a burst, waiters
 * are served in order, waits are bounded, failures and exits return slots.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { ProcessLauncher } from "@shepherd/core/ProcessLauncher"
import { ProcessPool } from "@shepherd/core/ProcessPool"
import * as NodeProcessLauncher from "@shepherd/node/NodeProcessLauncher"
import * as NodeProcessTable from "@shepherd/node/NodeProcessTable"
import { Effect, Fiber, Layer } from "effect"
import { ChildProcess } from "effect/process"
import { assertNoSurvivors, awaitStats, cleanupPools, sh, usePool, withPool } from "./harness.ts"
import { isAlive, survivors, trees } from "./support.ts"

afterEach(cleanupPools)

const kill = { grace: "300 millis", forceWait: "500 millis" } as const

/** The Node launcher, but every launch first sleeps a few random milliseconds (an await between slot and spawn). */
const delayedLauncher = Layer.sync(ProcessLauncher, () => {
  const node = NodeProcessLauncher.make()
  return ProcessLauncher.of({
    inheritedEnv: node.inheritedEnv,
    launch: (command, env) =>
      Effect.suspend(() => Effect.andThen(Effect.sleep(Math.floor(Math.random() * 8)), node.launch(command, env)))
  })
})

describe("slots", () => {
  it.live("50 concurrent requests never run more than 3 trees at once (slots=3)", () => {
    const config = { name: "t-slots-burst", slots: 3, hardCap: 64, kill } as const
    const layer = ProcessPool.layer(config).pipe(Layer.provide([NodeProcessTable.layer, delayedLauncher]))
    return usePool(layer, (pool, prefix) =>
      Effect.gen(function*() {
        let maxAlive = 0
        let maxInUse = 0
        let samples = 0
        let sampling = true
        // Sample /proc every few ms: distinct SHEPHERD_IDs with a live process.
        const sampler = yield* Effect.forkChild(Effect.gen(function*() {
          while (sampling) {
            const ids = new Set(survivors(prefix).map((p) => p.shepherdId))
            maxAlive = Math.max(maxAlive, ids.size)
            maxInUse = Math.max(maxInUse, (yield* pool.stats).inUse)
            samples++
            yield* Effect.sleep(2)
          }
        }))

        const reports = yield* Effect.forEach(
          Array.from({ length: 50 }, (_, i) => i),
          (i) =>
            Effect.scoped(
              Effect.flatMap(
                pool.spawn(sh(`sleep 0.${10 + (i * 7) % 10}`), { session: `s${i % 5}` }),
                (m) => m.awaitTeardown
              )
            ),
          { concurrency: "unbounded" }
        )
        sampling = false
        yield* Fiber.join(sampler)

        assert.strictEqual(reports.length, 50)
        for (const r of reports) assert.strictEqual(r._tag, "Exited", `${r.shepherdId}: ${r._tag}`)
        assert.isAtMost(maxAlive, 3, `max distinct trees alive at once (samples: ${samples})`)
        assert.isAtMost(maxInUse, 3)
        assert.isAtLeast(maxAlive, 2, `the sampler saw the pool working (samples: ${samples})`)
        const stats = yield* pool.stats
        assert.strictEqual(stats.inUse, 0)
        assert.strictEqual(stats.waiting, 0)
        assertNoSurvivors(prefix)
      }))
  }, 30_000)

  it.live("equal waiters are served first come, first served (slots=1)", () =>
    withPool({ name: "t-fifo", slots: 1, kill }, (pool, prefix) =>
      Effect.gen(function*() {
        const blocker = yield* pool.spawn(sh(trees.cooperative))
        const waiters: Array<Fiber.Fiber<{ readonly index: number; readonly id: number }, unknown>> = []
        for (let index = 0; index < 6; index++) {
          waiters.push(
            yield* Effect.forkChild(
              Effect.scoped(
                pool.spawn(sh("exit 0")).pipe(
                  Effect.tap((m) => m.awaitTeardown),
                  Effect.map((m) => ({ index, id: m.id }))
                )
              )
            )
          )
          yield* awaitStats(pool, `${index + 1} waiters`, (s) => s.waiting === index + 1)
        }
        yield* blocker.terminate()
        const served = yield* Fiber.joinAll(waiters)
        // pool ids are handed out when a request gets its slot: ascending ids = FIFO service
        const ids = served.map((s) => s.id)
        assert.deepStrictEqual(ids, [...ids].sort((a, b) => a - b))
        assert.deepStrictEqual(ids, [2, 3, 4, 5, 6, 7])
        assertNoSurvivors(prefix)
      })))

  it.live("a request that waits longer than slotTimeout fails with SlotTimeout", () =>
    withPool(
      { name: "t-slot-timeout", slots: 1, slotTimeout: "200 millis", kill },
      (pool, prefix) =>
        Effect.gen(function*() {
          yield* pool.spawn(sh(trees.cooperative), { session: "s" })
          // Fails while the only slot is still held (the exact 200 ms are proved on TestClock in
          // packages/core/test/ProcessPool.test.ts, "fails with SlotTimeout after `slotTimeout`, and not before").
          const error = yield* Effect.flip(pool.spawn(sh(trees.cooperative), { session: "s" }))
          assert.strictEqual(error._tag, "SlotTimeout")
          if (error._tag !== "SlotTimeout") return
          assert.strictEqual(error.waitedMs, 200)
          assert.strictEqual(error.slots, 1)
          const stats = yield* pool.stats
          assert.strictEqual(stats.inUse, 1)
          assert.strictEqual(stats.waiting, 0)
          yield* pool.closeSession("s")
          assertNoSurvivors(prefix)
        })
    ))

  it.live("a failed spawn (missing executable) fails with SpawnError and releases its slot", () =>
    withPool(
      { name: "t-spawn-error", slots: 1, slotTimeout: "1 second", kill },
      (pool, prefix) =>
        Effect.gen(function*() {
          const error = yield* Effect.flip(pool.spawn(ChildProcess.make("/nonexistent/shepherd-test-binary", ["x"])))
          assert.strictEqual(error._tag, "SpawnError")
          assert.include(error.message, "/nonexistent/shepherd-test-binary")
          assert.strictEqual((yield* pool.stats).inUse, 0)

          // slots=1: a leaked slot would make this wait out slotTimeout and fail with SlotTimeout
          yield* pool.spawn(sh(trees.cooperative), { session: "s" })
          assert.strictEqual((yield* pool.stats).inUse, 1)

          yield* pool.closeSession("s")
          // a bad working directory is a SpawnError too, and also gives the slot back
          const cwd = yield* Effect.flip(pool.spawn(sh("true", { cwd: "/nonexistent/dir" })))
          assert.strictEqual(cwd._tag, "SpawnError")
          assert.strictEqual((yield* pool.stats).inUse, 0)
          const again = yield* pool.spawn(sh("exit 0"))
          yield* again.awaitTeardown
          assertNoSurvivors(prefix)
        })
    ))

  it.live("a request beyond the hard cap fails at once with HardCapExceeded", () =>
    withPool({ name: "t-hard-cap", slots: 1, hardCap: 2, kill }, (pool, prefix) =>
      Effect.gen(function*() {
        yield* pool.spawn(sh(trees.cooperative), { session: "s" })
        const waiter = yield* Effect.forkChild(Effect.flip(pool.spawn(sh(trees.cooperative), { session: "s" })))
        yield* awaitStats(pool, "one waiter", (s) => s.waiting === 1)

        const error = yield* Effect.flip(pool.spawn(sh(trees.cooperative), { session: "s" }))
        // at once: it did not queue behind the waiter, which still waits
        assert.deepStrictEqual(yield* pool.stats.pipe(Effect.map((s) => [s.inUse, s.waiting])), [1, 1])
        assert.isUndefined(waiter.pollUnsafe())
        assert.strictEqual(error._tag, "HardCapExceeded")
        if (error._tag !== "HardCapExceeded") return
        assert.strictEqual(error.hardCap, 2)
        assert.strictEqual(error.tracked, 1)
        assert.strictEqual(error.waiting, 1)

        // closing the session makes the waiter give up
        yield* pool.closeSession("s")
        assert.strictEqual((yield* Fiber.join(waiter))._tag, "PoolClosed")
        assert.strictEqual((yield* pool.stats).inUse, 0)
        assertNoSurvivors(prefix)
      })))

  it.live("an exit frees the slot promptly, without any session close (slots=1)", () =>
    withPool({ name: "t-exit-frees", slots: 1, kill }, (pool, prefix) =>
      Effect.gen(function*() {
        const first = yield* pool.spawn(sh("sleep 0.2"), { session: "s" })
        const second = yield* pool.spawn(sh(trees.cooperative), { session: "s" })
        // the second got the slot only once the first was gone, and its session was never closed
        assert.isFalse(isAlive(first.pid))
        assert.isAbove(second.slotWaitMs, 0)
        const report = yield* first.awaitTeardown
        assert.strictEqual(report._tag, "Exited")
        assert.strictEqual((yield* pool.stats).inUse, 1)
        yield* pool.closeSession("s")
        assertNoSurvivors(prefix)
      })))

  it.live("after awaitTeardown returns, the slot is already free", () =>
    withPool({ name: "t-slot-order", slots: 1, kill }, (pool, prefix) =>
      Effect.gen(function*() {
        const m = yield* pool.spawn(sh("exit 0"))
        yield* m.awaitTeardown
        assert.strictEqual((yield* pool.stats).inUse, 0)
        assertNoSurvivors(prefix)
      })))
})
