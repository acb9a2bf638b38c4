/**
 * Slot accounting: a Semaphore of `slots` permits handed out first come,
 * first served, a hard cap on running plus waiting requests, a bounded wait,
 * and the counters the pool's stats and doctor show. One state record and
 * small functions, as in `effect/Pool`.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Semaphore from "effect/Semaphore"
import type * as ShepherdConfig from "../ShepherdConfig.ts"
import { HardCapExceeded, SlotTimeout } from "../ShepherdError.ts"

/**
 * @since 0.1.0
 * @category models
 */
export interface Slots {
  readonly semaphore: Semaphore.Semaphore
  readonly total: number
  readonly hardCap: number
  readonly timeoutMs: number
  /** Slots held by running (or terminating) processes. */
  inUse: number
  /** Requests waiting for a slot. */
  waiting: number
  /** Start times of waiting requests, by request token, for the doctor's "longest wait". */
  readonly waitingSince: Map<number, number>
  tokens: number
  /** The `slotWaiters` gauge of this pool. */
  readonly waiters: Metric.Metric<number, unknown>
}

/**
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  config: ShepherdConfig.Resolved,
  waiters: Metric.Metric<number, unknown>
): Effect.Effect<Slots> =>
  Effect.map(Semaphore.make(config.slots), (semaphore) => ({
    semaphore,
    total: config.slots,
    hardCap: config.hardCap,
    timeoutMs: config.slotTimeoutMs,
    inUse: 0,
    waiting: 0,
    waitingSince: new Map(),
    tokens: 0,
    waiters
  }))

/**
 * Takes one slot for `request`, first come, first served: `true` once it
 * is held (count it with `hold`), `false` when `gaveUp` completed first (its
 * session or the pool began closing). Fails at once with `HardCapExceeded`
 * when `hardCap` requests run or wait already, and with `SlotTimeout` after
 * `slotTimeout`. Only the wait is interruptible (through `restore`).
 *
 * @since 0.1.0
 * @category combinators
 */
export const take = (
  slots: Slots,
  request: { readonly session: string; readonly command: string },
  waitStart: number,
  gaveUp: () => Effect.Effect<void>,
  restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
): Effect.Effect<boolean, HardCapExceeded | SlotTimeout> => {
  // Check and count in one synchronous step: concurrent requests cannot both pass the cap.
  if (slots.inUse + slots.waiting >= slots.hardCap) {
    return Effect.fail(
      new HardCapExceeded({
        session: request.session,
        command: request.command,
        hardCap: slots.hardCap,
        tracked: slots.inUse,
        waiting: slots.waiting
      })
    )
  }
  slots.waiting++
  const token = ++slots.tokens
  slots.waitingSince.set(token, waitStart)
  return Effect.flatMap(Metric.update(slots.waiters, slots.waiting), () =>
    // Fast path: nobody else waits and a slot is free, so taking it at once cannot overtake
    // anyone (FIFO holds) and the racing and timing machinery is not built.
    (slots.waiting === 1 ? slots.semaphore.takeIfAvailable(1) : Effect.succeed(false)).pipe(
      Effect.flatMap((fast) => fast ? Effect.succeed(true) : restore(wait(slots, request, gaveUp()))),
      Effect.ensuring(Effect.suspend(() => {
        slots.waiting--
        slots.waitingSince.delete(token)
        return Metric.update(slots.waiters, slots.waiting)
      }))
    ))
}

const wait = (
  slots: Slots,
  request: { readonly session: string; readonly command: string },
  gaveUp: Effect.Effect<void>
): Effect.Effect<boolean, SlotTimeout> => {
  const raced = Effect.raceFirst(Effect.as(slots.semaphore.take(1), true), Effect.as(gaveUp, false))
  return Number.isFinite(slots.timeoutMs)
    ? Effect.timeoutOrElse(raced, {
      duration: slots.timeoutMs,
      orElse: () =>
        Effect.fail(
          new SlotTimeout({
            session: request.session,
            command: request.command,
            waitedMs: slots.timeoutMs,
            slots: slots.total
          })
        )
    })
    : raced
}

/**
 * Counts a slot that `take` handed out as in use, and returns its release:
 * every path must run it; it gives the permit back exactly once.
 *
 * @since 0.1.0
 * @category combinators
 */
export const hold = (slots: Slots): Effect.Effect<void> => {
  slots.inUse++
  let held = true
  return Effect.suspend(() => {
    if (!held) return Effect.void
    held = false
    slots.inUse--
    return slots.semaphore.release(1)
  })
}

/**
 * The doctor's view of the slots at `now`.
 *
 * @since 0.1.0
 * @category getters
 */
export const stats = (slots: Slots, now: number) => ({
  total: slots.total,
  inUse: slots.inUse,
  free: slots.total - slots.inUse,
  waiting: slots.waiting,
  longestWaitMs: slots.waitingSince.size === 0 ? 0 : now - Math.min(...slots.waitingSince.values())
})
