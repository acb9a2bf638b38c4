/**
 * Adversarial tests of the hand-written FIFO `Permits` (internal/slots.ts, issue 11): a release
 * resumes the first waiter inline, giving up (a closing session, a timeout) is a callback. Each
 * test races a grant against a way out in the same synchronous step, both orders, and a seeded
 * random schedule mixes them all; after every step the books must balance: permits taken ==
 * slots held, never more than `slots`, and no waiter left waiting while a permit is free.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Metric } from "effect"
import { TestClock } from "effect/testing"
import { Flag } from "../src/internal/flag.ts"
import * as Slots from "../src/internal/slots.ts"
import * as ShepherdConfig from "../src/ShepherdConfig.ts"

const request = { session: "s", command: "sleep 1" }

const make = (config: ShepherdConfig.ShepherdConfig) =>
  Effect.flatMap(ShepherdConfig.resolve(config), (resolved) => Slots.make(resolved, Metric.gauge("adv_slot_waiters")))

interface Books {
  readonly slots: Slots.Slots
  /** Releases of the slots taken and held, in taking order. */
  readonly holders: Array<Effect.Effect<void>>
}

/**
 * One spawn's slot step as spawn.ts does it: the take in an uninterruptible region whose wait
 * alone is interruptible, then `hold` at once.
 */
const request$ = (books: Books, flag: Flag) =>
  Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(
      Slots.take(books.slots, request, 0, (f) => flag.listen(f), restore),
      (acquired) =>
        Effect.sync(() => {
          if (acquired) books.holders.push(Slots.hold(books.slots))
          return acquired
        })
    )
  )

/** Lets every ready fiber run (and timers due now fire). */
const settle = TestClock.adjust(0)

const check = (books: Books, pending: ReadonlyArray<Fiber.Fiber<unknown, unknown>>, what: string) => {
  const { slots, holders } = books
  const live = pending.filter((f) => f.pollUnsafe() === undefined).length
  assert.strictEqual(slots.inUse, holders.length, `${what}: inUse counts the holders`)
  assert.isAtMost(slots.inUse, slots.total, `${what}: never more than slots`)
  assert.strictEqual(slots.semaphore.free, slots.total - slots.inUse, `${what}: permits taken == slots held`)
  assert.strictEqual(slots.waiting, live, `${what}: waiting counts the waiters`)
  if (slots.semaphore.free > 0) assert.strictEqual(live, 0, `${what}: a waiter waits while a permit is free`)
}

describe("adversarial: slot hand-off races", () => {
  for (const order of ["grant first", "interrupt first"] as const) {
    it.effect(`a waiter interrupted in the step its slot is released (${order}) holds it or leaves it free`, () =>
      Effect.gen(function*() {
        const slots = yield* make({ slots: 1 })
        const books: Books = { slots, holders: [] }
        const flag = new Flag()
        yield* request$(books, flag)
        const w1 = yield* Effect.forkChild(request$(books, flag))
        const w2 = yield* Effect.forkChild(request$(books, flag))
        yield* settle
        const release = books.holders.shift()!
        if (order === "grant first") {
          yield* release
          w1.interruptUnsafe()
        } else {
          w1.interruptUnsafe()
          yield* release
        }
        yield* settle
        check(books, [w2], order)
        // Whoever holds it now, the next release reaches w2.
        if (books.holders.length > 0) yield* books.holders.shift()!
        yield* settle
        assert.deepStrictEqual(w2.pollUnsafe(), Exit.succeed(true))
        check(books, [], `${order}, after`)
      }))

    it.effect(`a waiter whose session closes in the step its slot is released (${order}) holds it or gives up`, () =>
      Effect.gen(function*() {
        const slots = yield* make({ slots: 1 })
        const books: Books = { slots, holders: [] }
        const closing = new Flag()
        yield* request$(books, new Flag())
        const w1 = yield* Effect.forkChild(request$(books, closing))
        const w2 = yield* Effect.forkChild(request$(books, new Flag()))
        yield* settle
        const release = books.holders.shift()!
        if (order === "grant first") {
          yield* release
          closing.raise()
        } else {
          closing.raise()
          yield* release
        }
        yield* settle
        const w1Exit = w1.pollUnsafe()
        assert.deepStrictEqual(w1Exit, Exit.succeed(order === "grant first"))
        check(books, [w2], order)
        if (books.holders.length > 0) yield* books.holders.shift()!
        yield* settle
        assert.deepStrictEqual(w2.pollUnsafe(), Exit.succeed(true))
        check(books, [], `${order}, after`)
      }))

    it.effect(`a wait that times out at the instant its slot is released (${order}) holds it or leaves it free`, () =>
      Effect.gen(function*() {
        const slots = yield* make({ slots: 1, slotTimeout: 100 })
        const books: Books = { slots, holders: [] }
        yield* request$(books, new Flag())
        const releaseAt100 = Effect.andThen(Effect.sleep(100), Effect.suspend(() => books.holders.shift()!))
        // The timer registered first fires first at the same instant.
        let releaser: Fiber.Fiber<void> | undefined
        if (order === "grant first") releaser = yield* Effect.forkChild(releaseAt100)
        const w1 = yield* Effect.forkChild(Effect.result(request$(books, new Flag())))
        yield* settle
        if (order !== "grant first") releaser = yield* Effect.forkChild(releaseAt100)
        yield* settle
        const w2 = yield* Effect.forkChild(Effect.result(request$(books, new Flag())))
        yield* settle
        yield* TestClock.adjust(100)
        const exit = w1.pollUnsafe()
        assert.isDefined(exit)
        assert.isDefined(releaser!.pollUnsafe())
        // w2 started waiting later: its own timeout is 100 ms later; it holds the slot or waits for it.
        check(books, [w2], order)
        while (books.holders.length > 0) yield* books.holders.shift()!
        yield* TestClock.adjust(200)
        check(books, [], `${order}, after`)
        while (books.holders.length > 0) yield* books.holders.shift()!
        yield* settle
        check(books, [], `${order}, end`)
        assert.strictEqual(slots.semaphore.free, 1)
      }))
  }

  // A seeded random schedule of requests, releases, interruptions, session closes and clock
  // moves, some of them in the same synchronous step as a release.
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    it.effect(`a random schedule keeps the books (seed ${seed})`, () =>
      Effect.gen(function*() {
        let state = seed * 2654435761 >>> 0
        const random = (n: number) => {
          state = (state * 1664525 + 1013904223) >>> 0
          return state % n
        }
        const total = 1 + (seed % 3)
        const slots = yield* make({ slots: total, hardCap: 1000, slotTimeout: seed % 2 === 0 ? 50 : "Infinity" })
        const books: Books = { slots, holders: [] }
        let flags = [new Flag(), new Flag(), new Flag()]
        const pending: Array<Fiber.Fiber<unknown, unknown>> = []
        const waiting = () => pending.filter((f) => f.pollUnsafe() === undefined)
        for (let step = 0; step < 400; step++) {
          const op = random(7)
          const what = `seed ${seed} step ${step} op ${op}`
          if (op <= 1) {
            pending.push(yield* Effect.forkChild(Effect.result(request$(books, flags[random(3)]!))))
          } else if (op === 2 && books.holders.length > 0) {
            yield* books.holders.splice(random(books.holders.length), 1)[0]!
          } else if (op === 3) {
            // A release and, in the same step, the first (or a random) waiter interrupted.
            const ws = waiting()
            if (books.holders.length > 0) yield* books.holders.shift()!
            if (ws.length > 0) ws[random(2) === 0 ? 0 : random(ws.length)]!.interruptUnsafe()
          } else if (op === 4) {
            // A release and, in the same step, a session closing.
            const i = random(3)
            if (books.holders.length > 0 && random(2) === 0) yield* books.holders.shift()!
            flags[i]!.raise()
            flags = flags.map((f, j) => j === i ? new Flag() : f)
            if (books.holders.length > 0 && random(2) === 0) yield* books.holders.shift()!
          } else if (op === 5) {
            yield* TestClock.adjust(random(40))
          } else {
            const ws = waiting()
            if (ws.length > 0) yield* Fiber.interrupt(ws[random(ws.length)]!)
          }
          yield* settle
          check(books, pending, what)
        }
        while (books.holders.length > 0) {
          yield* books.holders.shift()!
          yield* settle
        }
        for (const f of flags) f.raise()
        yield* settle
        check(books, pending, `seed ${seed} end`)
        assert.strictEqual(slots.semaphore.free, total)
        assert.strictEqual(slots.waiting, 0)
      }))
  }
})
