import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import type { KillPolicy } from "../KillPolicy.ts"
import type { ExitStatus } from "../ProcessLauncher.ts"
import type { ProcessIdentity } from "../ProcessIdentity.ts"
import type { Container, ProcessTable } from "../ProcessTable.ts"
import type { Signal } from "../Signal.ts"

/** The raw outcome of a teardown, before it becomes a `Teardown` report. */
export type Outcome =
  | { readonly _tag: "Exited"; readonly status: ExitStatus }
  /** An orphan container had no live member: nothing to do. */
  | { readonly _tag: "Gone" }
  | { readonly _tag: "Graceful" }
  | { readonly _tag: "Forced" }
  | { readonly _tag: "Escaped"; readonly escaped: ReadonlyArray<number> }
  | { readonly _tag: "Unverified"; readonly reason: string }

export interface Result {
  readonly outcome: Outcome
  readonly signalled: ReadonlyArray<number>
  readonly forced: ReadonlyArray<number>
  readonly durationMs: number
}

export interface Input {
  readonly table: ProcessTable["Service"]
  readonly container: Container
  readonly policy: KillPolicy
  /**
   * The leader, when it is our child: its status if it has exited already
   * (sync), and an effect that resolves when it exits. Absent for orphans
   * (recovery, reaper), whose leader is only known through the table.
   */
  readonly leader?: {
    readonly exitStatus: () => ExitStatus | undefined
    readonly exit: Effect.Effect<ExitStatus>
    /** Signals the unreaped child directly (see `Launched.signal`). */
    readonly signal?: ((signal: Signal) => boolean) | undefined
  } | undefined
  /** Completed when the host demands an immediate kill (a second signal): the grace ends at once. */
  readonly hurry: Deferred.Deferred<void>
  /**
   * When the teardown was asked for (Clock millis). Trees closed together share it, so their grace
   * periods end at the same instant and their scans coalesce. Default: now.
   */
  readonly since?: number | undefined
  /** Completed when a stronger kill of this one tree is asked for while its teardown runs. */
  readonly escalate?: Deferred.Deferred<void> | undefined
}

// Liveness is polled from the process table; start fast (a cooperative tree is
// usually gone within a few ms) and back off so that hundreds of concurrent
// teardowns stay cheap.
const maxPollMs = 20
const nextPoll = (ms: number) => Math.min(maxPollMs, ms * 2)

/**
 * Snapshot the container's members, signal them, wait until none is alive or
 * the grace ends, SIGKILL what is left and what a fresh scan finds forked
 * meanwhile, and wait up to `forceWaitMs` more. "Alive" comes from the process
 * table, where a zombie is dead; "none alive" is always confirmed by a scan.
 */
export const terminate = (input: Input): Effect.Effect<Result> =>
  Effect.gen(function*() {
    const { container, policy, table } = input
    const start = input.since ?? (yield* Clock.currentTimeMillis)
    const signalled = new Set<number>()
    const forced = new Set<number>()
    const elapsed = Effect.map(Clock.currentTimeMillis, (now) => now - start)
    const helpers: Array<Fiber.Fiber<unknown>> = []
    const stopHelpers = Effect.suspend(() => Effect.forEach(helpers, Fiber.interrupt, { discard: true }))
    const result = (outcome: Outcome) =>
      Effect.andThen(
        stopHelpers,
        Effect.map(elapsed, (durationMs): Result => ({
          outcome,
          signalled: [...signalled],
          forced: [...forced],
          durationMs
        }))
      )

    const leader = input.leader
    const exitedBefore = leader?.exitStatus()
    const leaderAlive = () => leader !== undefined && leader.exitStatus() === undefined
    // Our unreaped child is provably ours (its pid cannot be reused before we see its exit), so it
    // is signalled even when the table cannot be read or does not list it yet.
    const withLeader = (list: ReadonlyArray<ProcessIdentity>) =>
      leaderAlive() && !list.some((m) => m.pid === container.leader.pid) ? [container.leader, ...list] : list
    let unverified: string | undefined
    const scanned = yield* Effect.result(table.members(container))
    if (scanned._tag === "Failure") unverified = scanned.failure.reason
    let members = withLeader(scanned._tag === "Success" ? scanned.success : [])
    /** A fresh scan; on failure the caller's fallback (what is known to be alive) stands. */
    const rescan = (fallback: ReadonlyArray<ProcessIdentity>) =>
      Effect.map(Effect.result(table.members(container)), (r) => {
        if (r._tag === "Success") {
          unverified = undefined // a complete view again
          return withLeader(r.success)
        }
        unverified = r.failure.reason
        return fallback
      })

    const sendAll = (targets: ReadonlyArray<ProcessIdentity>, signal: Signal, into: Set<number>) =>
      Effect.forEach(targets, (identity) => {
        if (isLeader(identity) && leaderAlive() && leader?.signal !== undefined) {
          return Effect.sync(() => {
            if (leader.signal!(signal)) into.add(identity.pid)
          })
        }
        return Effect.map(table.signal(identity, signal), (r) => {
          if (r === "sent") into.add(identity.pid)
        })
      }, { discard: true })

    const hurriedNow = () =>
      Deferred.isDoneUnsafe(input.hurry) || (input.escalate !== undefined && Deferred.isDoneUnsafe(input.escalate))
    const hurried = hurriedNow()
    const isLeader = (m: ProcessIdentity) =>
      leader !== undefined && m.pid === container.leader.pid && m.startTime === container.leader.startTime
    // Our own child needs no table lookup: until we have seen its exit, its pid cannot be reused.
    const isAlive = (m: ProcessIdentity): Effect.Effect<boolean> =>
      isLeader(m) ? Effect.succeed(leaderAlive()) : table.isAlive(m)

    // One fiber per teardown turns "the leader exited" and "hurry" into deferreds the polls can
    // race against (racing each source on every poll would fork several fibers per poll).
    // (Interrupted when the teardown ends: `terminate` may run on a long-lived caller fiber.)
    const leaderGone = Deferred.makeUnsafe<void>()
    const hurryAny = input.escalate === undefined ? input.hurry : Deferred.makeUnsafe<void>()
    if (leader !== undefined && leaderAlive()) {
      helpers.push(yield* Effect.forkChild(Effect.andThen(leader.exit, Deferred.succeed(leaderGone, undefined))))
    }
    if (input.escalate !== undefined) {
      helpers.push(
        yield* Effect.forkChild(Effect.andThen(
          Effect.raceFirst(Deferred.await(input.hurry), Deferred.await(input.escalate)),
          Deferred.succeed(hurryAny, undefined)
        ))
      )
    }

    /** Waits until no member is alive (confirmed by a fresh scan) or `untilMs` passes. Returns the survivors. */
    const awaitGone = (signal: Signal, untilMs: number, wakeOnHurry: boolean) =>
      Effect.gen(function*() {
        let pollMs = 1
        while (true) {
          const alive: Array<ProcessIdentity> = []
          for (const m of members) {
            if (yield* isAlive(m)) alive.push(m)
          }
          if (alive.length === 0) {
            // Members may have forked during the wait: confirm with a fresh scan.
            const fresh = yield* rescan([])
            if (fresh.length === 0) return []
            yield* sendAll(fresh, signal, signal === "SIGKILL" ? forced : signalled)
            members = fresh
            if ((yield* elapsed) >= untilMs) return fresh
            continue
          }
          members = alive
          const now = yield* elapsed
          if (now >= untilMs || (wakeOnHurry && hurriedNow())) return alive
          // When our own child is all that is left, its exit event says when it is gone: no
          // polling (hundreds of trees polling at once keep the host busy for nothing).
          const onlyLeader = leaderAlive() && alive.every(isLeader)
          const sleep = Effect.sleep(Math.max(0, onlyLeader ? untilMs - now : Math.min(pollMs, untilMs - now)))
          const wakers: Array<Effect.Effect<unknown>> = [sleep]
          if (leaderAlive()) wakers.push(Deferred.await(leaderGone))
          if (wakeOnHurry) wakers.push(Deferred.await(hurryAny))
          yield* (wakers.length === 1 ? sleep : Effect.raceAll(wakers))
          pollMs = nextPoll(pollMs)
        }
      })

    if (members.length === 0) {
      if (unverified !== undefined) return yield* result({ _tag: "Unverified", reason: unverified })
      if (leader === undefined) return yield* result({ _tag: "Gone" })
      // Nothing alive and the leader has exited: it left nothing behind.
      return yield* result({ _tag: "Exited", status: exitedBefore ?? leader.exitStatus()! })
    }

    let survivors: ReadonlyArray<ProcessIdentity> = members
    if (policy.signal !== "SIGKILL" && !hurried) {
      yield* sendAll(members, policy.signal, signalled)
      // The grace counts from the signal (not from the request, which may have waited for a scan).
      // Trees closed together round their deadline up to a 20 ms step, so that the hundreds of
      // them signalled one after the other still time out, and scan, together.
      const sentAt = yield* elapsed
      const step = input.since === undefined ? 1 : 20
      survivors = yield* awaitGone(policy.signal, Math.ceil((sentAt + policy.graceMs) / step) * step, true)
    }
    if (survivors.length > 0) {
      // SIGKILL what is known to be alive at once, then look for members forked during the grace
      // (one scan, after the kills so it delays none of them) and SIGKILL those too.
      yield* sendAll(survivors, "SIGKILL", forced)
      const graceEnd = yield* elapsed
      const known = new Set(survivors.map((m) => m.pid))
      const extra = (yield* rescan(survivors)).filter((m) => !known.has(m.pid))
      yield* sendAll(extra, "SIGKILL", forced)
      members = [...survivors, ...extra]
      survivors = yield* awaitGone("SIGKILL", graceEnd + policy.forceWaitMs, false)
    }
    for (const pid of forced) signalled.add(pid)
    if (survivors.length > 0) {
      // The leader counted as alive until we saw its exit; ask the table before calling it escaped.
      const confirmed: Array<ProcessIdentity> = []
      for (const m of survivors) if (yield* table.isAlive(m)) confirmed.push(m)
      survivors = confirmed
    }
    if (survivors.length > 0) {
      return yield* result({ _tag: "Escaped", escaped: survivors.map((m) => m.pid) })
    }
    if (unverified !== undefined) return yield* result({ _tag: "Unverified", reason: unverified })
    if (exitedBefore !== undefined) {
      return yield* result({ _tag: "Exited", status: exitedBefore })
    }
    if (signalled.size === 0) {
      // Nothing was there to signal: the leader ended without our ever seeing its exit status.
      return yield* result({ _tag: "Exited", status: leader?.exitStatus() ?? { code: null, signal: null } })
    }
    return yield* result(forced.size > 0 ? { _tag: "Forced" } : { _tag: "Graceful" })
  })
