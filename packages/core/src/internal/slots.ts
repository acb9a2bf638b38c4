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
import type * as ShepherdConfig from "../ShepherdConfig.ts"
import { HardCapExceeded, SlotTimeout } from "../ShepherdError.ts"

interface Waiter {
  resume: ((effect: Effect.Effect<void>) => void) | undefined
  /** Set when the waiter gives up (its session or pool closing, its timeout). */
  outcome: "gaveUp" | "timedOut" | undefined
}

/**
 * One-permit requests served first come, first served, as Effect's
 * `Semaphore` serves them, with the wait's ways out built in. Two turns of the
 * event loop are saved per hand-off, which a loaded machine stretches: a
 * release resumes the first waiter inline (its own fiber then takes the
 * permit, so an interrupted waiter never holds one), where the stock
 * semaphore wakes it on the next turn; and giving up (a closing session, a
 * timeout) is a callback, not a race of fibers to be interrupted.
 *
 * @since 0.2.0
 * @category models
 */
export class Permits {
  private readonly waiters = new Set<Waiter>()
  private taken = 0
  readonly permits: number
  constructor(permits: number) {
    this.permits = permits
  }

  get free(): number {
    return this.permits - this.taken
  }

  /** The waiter whose turn it is, when a permit is free. */
  private first(): Waiter | undefined {
    if (this.free < 1) return undefined
    for (const waiter of this.waiters) return waiter
    return undefined
  }

  private wake(waiter: Waiter | undefined): void {
    const resume = waiter?.resume
    if (waiter !== undefined) waiter.resume = undefined
    resume?.(Effect.void)
  }

  private leave(waiter: Waiter): void {
    // Leaving the queue may make it someone else's turn.
    if (this.waiters.delete(waiter)) this.wake(this.first())
  }

  /** A permit now, if one is free (whether or not others wait: the caller checks that). */
  takeNow(): boolean {
    if (this.free < 1) return false
    this.taken++
    return true
  }

  /**
   * Waits for a permit in turn, or until `abandon` calls back ("gaveUp") or
   * `timeout` completes ("timedOut").
   */
  acquire(
    abandon: (f: () => void) => () => void,
    timeout: Effect.Effect<void> | undefined
  ): Effect.Effect<"acquired" | "gaveUp" | "timedOut"> {
    return Effect.withFiber((fiber) => {
      if (this.free >= 1 && this.waiters.size === 0) {
        this.taken++
        return Effect.succeed("acquired" as const)
      }
      const waiter: Waiter = { resume: undefined, outcome: undefined }
      this.waiters.add(waiter)
      const stop = (outcome: "gaveUp" | "timedOut") => {
        if (waiter.outcome !== undefined) return
        waiter.outcome = outcome
        this.wake(waiter)
      }
      const unlisten = abandon(() => stop("gaveUp"))
      // The timeout's sleep runs in a fiber of its own (so that a TestClock drives it); it is
      // interrupted, not awaited, once the wait is over.
      const timer = timeout === undefined
        ? undefined
        : Effect.runForkWith(fiber.context)(Effect.andThen(timeout, Effect.sync(() => stop("timedOut"))))
      const done = () => {
        unlisten()
        timer?.interruptUnsafe()
      }
      const wait = Effect.callback<void>((resume) => {
        if (waiter.outcome !== undefined || this.first() === waiter) resume(Effect.void)
        else waiter.resume = resume
      })
      const loop: Effect.Effect<"acquired" | "gaveUp" | "timedOut"> = Effect.flatMap(wait, () => {
        if (waiter.outcome !== undefined) {
          this.leave(waiter)
          done()
          return Effect.succeed(waiter.outcome)
        }
        if (this.first() !== waiter) return loop
        this.taken++
        this.waiters.delete(waiter)
        done()
        return Effect.succeed("acquired" as const)
      })
      return Effect.onInterrupt(loop, () =>
        Effect.sync(() => {
          this.leave(waiter)
          done()
        }))
    })
  }

  /** Gives one permit back; the next waiter (if any) takes it before this returns. */
  readonly release: Effect.Effect<void> = Effect.sync(() => {
    this.taken--
    this.wake(this.first())
  })
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Slots {
  readonly semaphore: Permits
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
  Effect.sync(() => ({
    semaphore: new Permits(config.slots),
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
 * is held (count it with `hold`), `false` when `abandon` called back first
 * (its session or the pool began closing). Fails at once with `HardCapExceeded`
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
  abandon: (f: () => void) => () => void,
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
  // Fast path: nobody waits and a slot is free, so taking it at once cannot overtake anyone
  // (FIFO holds); no waiter is built and the waiters gauge never moves.
  if (slots.waiting === 0 && slots.semaphore.takeNow()) return Effect.succeed(true)
  slots.waiting++
  const token = ++slots.tokens
  slots.waitingSince.set(token, waitStart)
  const timeout = Number.isFinite(slots.timeoutMs) ? Effect.sleep(slots.timeoutMs) : undefined
  return Effect.flatMap(Metric.update(slots.waiters, slots.waiting), () =>
    Effect.flatMap(
      restore(slots.semaphore.acquire(abandon, timeout)),
      (outcome) =>
        outcome === "timedOut"
          ? Effect.fail(
            new SlotTimeout({
              session: request.session,
              command: request.command,
              waitedMs: slots.timeoutMs,
              slots: slots.total
            })
          )
          : Effect.succeed(outcome === "acquired")
    ).pipe(
      Effect.ensuring(Effect.suspend(() => {
        slots.waiting--
        slots.waitingSince.delete(token)
        return Metric.update(slots.waiters, slots.waiting)
      }))
    ))
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
    return slots.semaphore.release
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
