/**
 * Slot accounting (`internal/slots.ts`) on its own: the hard cap, first come
 * first served, the bounded wait, giving up, and a release that counts once.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Metric } from "effect"
import { TestClock } from "effect/testing"
import { Flag } from "../src/internal/flag.ts"
import * as Slots from "../src/internal/slots.ts"
import * as ShepherdConfig from "../src/ShepherdConfig.ts"
import { poll } from "./utils.ts"

const request = { session: "s", command: "sleep 1" }
const never = () => () => {}
const restore = <A, E, R>(effect: Effect.Effect<A, E, R>) => effect

const make = (config: ShepherdConfig.ShepherdConfig) =>
  Effect.flatMap(ShepherdConfig.resolve(config), (resolved) => Slots.make(resolved, Metric.gauge("test_slot_waiters")))

/** Takes a slot and counts it as held; returns its release. */
const takeAndHold = (slots: Slots.Slots, gaveUp: (f: () => void) => () => void = never) =>
  Effect.flatMap(
    Slots.take(slots, request, 0, gaveUp, restore),
    (acquired) => acquired ? Effect.succeed(Slots.hold(slots)) : Effect.die(new Error("gave up"))
  )

describe("slots", () => {
  it.effect("a free slot is taken at once; the next request waits and gets it when the first is released", () =>
    Effect.gen(function*() {
      const slots = yield* make({ slots: 1 })
      const release = yield* takeAndHold(slots)
      assert.deepStrictEqual(Slots.stats(slots, 0), { total: 1, inUse: 1, free: 0, waiting: 0, longestWaitMs: 0 })
      const waiter = yield* Effect.forkChild(takeAndHold(slots))
      assert.isUndefined(yield* poll(waiter))
      assert.strictEqual(slots.waiting, 1)
      yield* release
      yield* release // a second release gives nothing back
      const exit = yield* poll(waiter)
      assert.isTrue(exit !== undefined && Exit.isSuccess(exit))
      assert.deepStrictEqual(Slots.stats(slots, 0), { total: 1, inUse: 1, free: 0, waiting: 0, longestWaitMs: 0 })
      assert.isFalse(slots.semaphore.takeNow())
    }))

  it.effect("requests beyond the hard cap (held + waiting) are refused at once", () =>
    Effect.gen(function*() {
      const slots = yield* make({ slots: 1, hardCap: 2 })
      yield* takeAndHold(slots)
      const waiter = yield* Effect.forkChild(takeAndHold(slots))
      yield* poll(waiter)
      const refused = yield* Effect.flip(Slots.take(slots, request, 0, never, restore))
      assert.strictEqual(refused._tag, "HardCapExceeded")
      if (refused._tag === "HardCapExceeded") {
        assert.strictEqual(refused.tracked, 1)
        assert.strictEqual(refused.waiting, 1)
      }
      yield* Fiber.interrupt(waiter)
      assert.strictEqual(slots.waiting, 0)
    }))

  it.effect("a wait longer than slotTimeout fails with SlotTimeout and is no longer counted", () =>
    Effect.gen(function*() {
      const slots = yield* make({ slots: 1, slotTimeout: 100 })
      yield* takeAndHold(slots)
      const waiter = yield* Effect.forkChild(Slots.take(slots, request, 0, never, restore))
      yield* poll(waiter)
      yield* TestClock.adjust(50)
      assert.strictEqual(Slots.stats(slots, 50).longestWaitMs, 50)
      yield* TestClock.adjust(50)
      const exit = yield* poll(waiter)
      assert.isTrue(exit !== undefined && Exit.isFailure(exit))
      assert.strictEqual(slots.waiting, 0)
      assert.strictEqual(slots.waitingSince.size, 0)
    }))

  it.effect("a waiter gives up (false) when its session or pool begins closing", () =>
    Effect.gen(function*() {
      const slots = yield* make({ slots: 1 })
      yield* takeAndHold(slots)
      const closing = new Flag()
      const waiter = yield* Effect.forkChild(Slots.take(slots, request, 0, (f) => closing.listen(f), restore))
      yield* poll(waiter)
      closing.raise()
      const exit = yield* poll(waiter)
      assert.deepStrictEqual(exit, Exit.succeed(false))
      assert.strictEqual(slots.inUse, 1)
      assert.strictEqual(slots.waiting, 0)
    }))
})
