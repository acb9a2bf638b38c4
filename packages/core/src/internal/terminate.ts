import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
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
    /** Whether the leader provably has no descendant (see `Launched.alone`): no scan is needed. */
    readonly alone?: (() => boolean) | undefined
    /** Whether the leader's pid is provably free before its exit is reported (see `Launched.reaped`). */
    readonly reaped?: (() => boolean) | undefined
    /** Calls back once the leader has exited (see `Launched.onExit`); without it a fiber waits on `exit`. */
    readonly onExit?: ((f: () => void) => void) | undefined
  } | undefined
  /** Completed when the host demands an immediate kill (a second signal): the grace ends at once. */
  readonly hurry: Deferred.Deferred<void>
  /**
   * When the teardown was asked for (Clock millis): the start of the report's `durationMs`. Trees
   * closed together share it. (A tree's grace counts from its own signal.) Default: now.
   */
  readonly since?: number | undefined
  /** Fired when a stronger kill of this one tree is asked for while its teardown runs. */
  readonly escalate?: Escalation | undefined
}

/**
 * A request to cut one tree's grace short. A callback, not a `Deferred`: a
 * session closing hundreds of trees would otherwise keep a fiber per tree
 * waiting on it.
 */
export class Escalation {
  fired = false
  private listener: (() => void) | undefined
  /** Idempotent. */
  fire(): void {
    if (this.fired) return
    this.fired = true
    this.listener?.()
  }
  /** The one driver of this tree's teardown listens (called at once if fired already). */
  listen(f: () => void): void {
    this.listener = f
    if (this.fired) f()
  }
}

// Liveness is polled from the process table; start fast (a cooperative tree is
// usually gone within a few ms) and back off so that hundreds of concurrent
// teardowns stay cheap.
const maxPollMs = 20
const nextPoll = (ms: number) => Math.min(maxPollMs, ms * 2)

interface Tree {
  readonly index: number
  readonly input: Input
  readonly start: number
  readonly signalled: Set<number>
  readonly forced: Set<number>
  readonly exitedBefore: ExitStatus | undefined
  members: ReadonlyArray<ProcessIdentity>
  unverified: string | undefined
  phase: "grace" | "force" | "done"
  /** Clock millis when the current phase ends. */
  deadline: number
  result: Result | undefined
}

/**
 * Snapshot each container's members, signal them, wait until none is alive or
 * the grace ends, SIGKILL what is left and what a fresh scan finds forked
 * meanwhile, and wait up to `forceWaitMs` more. "Alive" comes from the process
 * table, where a zombie is dead; "none alive" is always confirmed by a scan, or
 * by the launcher's proof that the leader has no descendant (`Launched.alone`).
 */
export const terminate = (input: Input): Effect.Effect<Result> =>
  Effect.suspend(() => {
    // The common end of a tree: its leader exited and provably left nobody behind.
    const status = input.leader?.exitStatus()
    if (status !== undefined && input.leader?.alone?.() === true) {
      return Effect.map(Clock.currentTimeMillis, (end) => ({
        outcome: { _tag: "Exited", status },
        signalled: [],
        forced: [],
        durationMs: input.since === undefined ? 0 : end - input.since
      }))
    }
    return Effect.map(terminateMany([input]), (rs) => rs[0]!)
  })

/**
 * `terminate` for many trees at once (a session or a pool closing): one fiber
 * drives them all, so their signals go out in one sweep, their scans coalesce
 * into one per phase, and nothing polls while the only live members are
 * leaders whose exit the host will hear about. Each tree keeps its own
 * policy, deadlines and report.
 */
export const terminateMany = (
  inputs: ReadonlyArray<Input>,
  /** Run (forked) as soon as each tree is done, so that an early tree does not wait for the last. */
  onDone?: (index: number, result: Result) => Effect.Effect<void>
): Effect.Effect<ReadonlyArray<Result>> =>
  Effect.gen(function*() {
    if (inputs.length === 0) return []
    const now = Clock.currentTimeMillis
    const t0 = yield* now
    const trees: Array<Tree> = inputs.map((input, index) => ({
      index,
      input,
      start: input.since ?? t0,
      signalled: new Set(),
      forced: new Set(),
      exitedBefore: input.leader?.exitStatus(),
      members: [],
      unverified: undefined,
      phase: "grace",
      deadline: 0,
      result: undefined
    }))

    const leaderAlive = (t: Tree) => t.input.leader !== undefined && t.input.leader.exitStatus() === undefined
    const isLeader = (t: Tree, m: ProcessIdentity) =>
      t.input.leader !== undefined && m.pid === t.input.container.leader.pid &&
      m.startTime === t.input.container.leader.startTime
    // Our unreaped child is provably ours (its pid cannot be reused before we see its exit): it is
    // signalled even when the table cannot be read or does not list it yet, and needs no lookup.
    const withLeader = (t: Tree, list: ReadonlyArray<ProcessIdentity>) =>
      leaderAlive(t) && !list.some((m) => m.pid === t.input.container.leader.pid)
        ? [t.input.container.leader, ...list]
        : list
    const hurried = (t: Tree) => Deferred.isDoneUnsafe(t.input.hurry) || t.input.escalate?.fired === true
    /**
     * Whether the table confirms a member alive (before calling it escaped). Not the leader once it
     * has exited: a process that took its pid within its clock tick would pass for it.
     */
    const confirmedAlive = (t: Tree, m: ProcessIdentity): Effect.Effect<boolean> =>
      isLeader(t, m) && leaderExited(t) ? Effect.succeed(false) : t.input.table.isAlive(m)
    /** The leader has exited (reported, or its pid provably free): its pid names no one of ours now. */
    const leaderExited = (t: Tree) => {
      const leader = t.input.leader
      return leader !== undefined && (leader.exitStatus() !== undefined || leader.reaped?.() === true)
    }

    /** Fresh scans of `some` trees (coalesced by the table); on failure what is known stands. */
    const rescan = (
      some: ReadonlyArray<Tree>,
      fallback: (t: Tree) => ReadonlyArray<ProcessIdentity>
    ): Effect.Effect<ReadonlyArray<ReadonlyArray<ProcessIdentity>>> => {
      const found: Array<ReadonlyArray<ProcessIdentity>> = []
      const scanned: Array<number> = []
      for (const [i, t] of some.entries()) {
        // A leader proven alone is the whole tree: nothing to scan for.
        if (t.input.leader?.alone?.() === true) {
          t.unverified = undefined
          found[i] = withLeader(t, [])
        } else {
          scanned.push(i)
        }
      }
      if (scanned.length === 0) return Effect.succeed(found)
      // Known before the pass: the exit was reported (reading `reaped` costs a stat, and the look
      // after the pass catches it).
      const exitKnown = scanned.map((i) => some[i]!.input.leader?.exitStatus() !== undefined)
      // Concurrently, so that the table answers them all from one pass.
      const scans = Effect.forEach(scanned, (i, k) => {
        const t = some[i]!
        const container = exitKnown[k] ? { ...t.input.container, leaderExited: true } : t.input.container
        return Effect.map(Effect.result(t.input.table.members(container)), (r) => {
          if (r._tag === "Success") {
            t.unverified = undefined // a complete view again
            found[i] = withLeader(t, r.success)
          } else {
            t.unverified = r.failure.reason
            found[i] = fallback(t)
          }
        })
      }, { concurrency: "unbounded", discard: true })
      return Effect.flatMap(scans, () => {
        // A leader that exited before or during the pass, unreported: a process that took its pid
        // meanwhile may have been judged a member of its group (judged while it seemed to be the
        // leader's). Those trees look again, if anything but the leader was found (its own identity
        // is never signalled through the table, see `sendAll`).
        const again = scanned.filter((i, k) =>
          !exitKnown[k] && found[i]!.some((m) => !isLeader(some[i]!, m)) && leaderExited(some[i]!)
        )
        if (again.length === 0) return Effect.succeed(found)
        return Effect.map(rescan(again.map((i) => some[i]!), fallback), (fresh) => {
          for (const [k, i] of again.entries()) found[i] = fresh[k]!
          return found
        })
      })
    }

    const sendAll = (t: Tree, targets: ReadonlyArray<ProcessIdentity>, signal: Signal): Effect.Effect<void> => {
      const into = signal === "SIGKILL" ? t.forced : t.signalled
      const leader = t.input.leader
      // The leader through the host's own handle, at once (a sweep over hundreds of trees must
      // not cost an effect per signal); the others after an identity check in the table.
      const others: Array<ProcessIdentity> = []
      for (const identity of targets) {
        if (isLeader(t, identity)) {
          // Once its exit is reported the leader's pid names no one of ours (a process that took it
          // within the leader's clock tick would pass the table's pid + start time): not signalled.
          if (!leaderAlive(t)) continue
          if (leader?.signal !== undefined) {
            if (leader.signal(signal)) into.add(identity.pid)
            continue
          }
        }
        others.push(identity)
      }
      return others.length === 0 ?
        Effect.void :
        Effect.forEach(others, (identity) =>
          Effect.map(t.input.table.signal(identity, signal), (r) => {
            if (r === "sent") into.add(identity.pid)
          }), { discard: true })
    }

    // Cgroup containment: the force phase also kills the tree's cgroup in one write (with whatever
    // it forked since the last scan), and the cgroup's "empty" event wakes the round early.
    const killContainer = (t: Tree): Effect.Effect<void> => {
      const kill = t.input.table.killContainer
      return kill === undefined || t.input.container.cgroup === undefined
        ? Effect.void
        : Effect.asVoid(kill(t.input.container))
    }
    const unwatch: Array<() => void> = []
    const watching = new Set<Tree>()
    /** Only for trees with members besides a live leader (whose exit wakes the round anyway). */
    const watchEmpty = (t: Tree) => {
      const watch = t.input.table.watchEmpty
      if (watch === undefined || t.input.container.cgroup === undefined || watching.has(t)) return
      watching.add(t)
      unwatch.push(watch(t.input.container, () => wakeUp(t)))
    }

    const reporters: Array<Fiber.Fiber<void>> = []
    /** Counts phase changes (grace → force → done), so a round can tell whether any happened. */
    let phaseChanges = 0
    /** Trees finished since their reports were last handed to `onDone`. */
    let finished: Array<Tree> = []
    const finish = (t: Tree, outcome: Outcome) =>
      Effect.map(now, (end) => {
        for (const pid of t.forced) t.signalled.add(pid)
        t.phase = "done"
        phaseChanges++
        t.result = { outcome, signalled: [...t.signalled], forced: [...t.forced], durationMs: end - t.start }
        finished.push(t)
      })
    /** One reporter fiber per batch of finished trees (not one per tree), started at once. */
    const report = Effect.suspend(() => {
      if (onDone === undefined || finished.length === 0) return Effect.void
      const batch = finished
      finished = []
      return Effect.map(
        Effect.forkChild(Effect.forEach(batch, (t) => onDone(t.index, t.result!), { discard: true })),
        (fiber) => {
          reporters.push(fiber)
        }
      )
    })

    /** The outcome of a tree that a scan has just confirmed empty. */
    const emptied = (t: Tree): Outcome => {
      if (t.unverified !== undefined) return { _tag: "Unverified", reason: t.unverified }
      if (t.exitedBefore !== undefined) return { _tag: "Exited", status: t.exitedBefore }
      if (t.signalled.size === 0 && t.forced.size === 0) {
        // Nothing was there to signal: an orphan already gone, or a leader that ended unseen.
        return t.input.leader === undefined
          ? { _tag: "Gone" }
          : { _tag: "Exited", status: t.input.leader.exitStatus() ?? { code: null, signal: null } }
      }
      return t.forced.size > 0 ? { _tag: "Forced" } : { _tag: "Graceful" }
    }

    const enterForce = (t: Tree, alive: ReadonlyArray<ProcessIdentity>, at: number) =>
      Effect.map(Effect.andThen(sendAll(t, alive, "SIGKILL"), killContainer(t)), () => {
        t.phase = "force"
        phaseChanges++
        t.deadline = at + t.input.policy.forceWaitMs
      })

    // Wake-ups: a leader's exit, the host's hurry, a tree's escalation. They complete the deferred
    // of the current round; `notified` tells a round that something happened while it worked.
    let notified = 0
    let wake = Deferred.makeUnsafe<void>()
    /** Trees whose leader exited or whose kill was escalated since the round began looking. */
    const woken = new Set<Tree>()
    /** Set when a launcher's exit callback woke the round: more exits of the same burst may follow. */
    let exitCallback = false
    const wakeUp = (t?: Tree) => {
      notified++
      if (t !== undefined) woken.add(t)
      Deferred.doneUnsafe(wake, Exit.void)
    }
    const notify = (t?: Tree) => Effect.sync(() => wakeUp(t))
    const helpers: Array<Fiber.Fiber<unknown>> = []
    for (const t of trees) {
      const leader = t.input.leader
      if (leaderAlive(t)) {
        if (leader!.onExit !== undefined) {
          leader!.onExit(() => {
            exitCallback = true
            wakeUp(t)
          })
        } else helpers.push(yield* Effect.forkChild(Effect.andThen(leader!.exit, notify(t))))
      }
      t.input.escalate?.listen(() => wakeUp(t))
    }
    for (const hurry of new Set(inputs.map((i) => i.hurry))) {
      helpers.push(yield* Effect.forkChild(Effect.andThen(Deferred.await(hurry), notify())))
    }
    const killedFirst: Array<Tree> = []
    // First look and first signal.
    const first = yield* rescan(trees, (t) => withLeader(t, []))
    for (const [i, t] of trees.entries()) {
      t.members = first[i]!
      if (t.members.length === 0) {
        yield* finish(t, emptied(t))
      } else if (t.input.policy.signal === "SIGKILL" || hurried(t)) {
        yield* enterForce(t, t.members, yield* now)
        killedFirst.push(t) // scanned again right away for forks, like any tree entering SIGKILL
      } else {
        yield* sendAll(t, t.members, t.input.policy.signal)
        // The grace counts from the tree's own signal (not from the request, which may have waited
        // for a scan), as the tree sees it: a sweep of hundreds of trees takes milliseconds, and its
        // last tree's grace would otherwise delay the first's SIGKILL. The trees whose deadlines have
        // passed are looked at together.
        t.deadline = (yield* now) + t.input.policy.graceMs
      }
    }
    let pollMs = 1
    while (true) {
      yield* report
      const seen = notified
      wake = Deferred.makeUnsafe<void>()
      const confirm: Array<Tree> = []
      const forkScan: Array<Tree> = killedFirst.splice(0)
      const scanning = new Set(forkScan)
      const phasesBefore = phaseChanges
      let polling = false
      const roundAt = yield* now
      for (const t of trees) {
        if (t.phase === "done" || scanning.has(t)) continue
        // Only trees something happened to are looked at: a tree whose only member is its live
        // leader waits for its exit (which wakes it), its deadline or a hurry. A session of
        // hundreds of trees is not walked once per exit.
        const watched = t.members.some((m) => !isLeader(t, m) || !leaderAlive(t))
        if (!watched && !woken.has(t) && roundAt < t.deadline && !hurried(t)) continue
        woken.delete(t)
        const alive: Array<ProcessIdentity> = []
        for (const m of t.members) {
          if (isLeader(t, m) ? leaderAlive(t) : yield* t.input.table.isAlive(m)) alive.push(m)
        }
        if (alive.length === 0) {
          // Members may have forked meanwhile: "gone" is only believed after a fresh scan.
          confirm.push(t)
          continue
        }
        t.members = alive
        const at = roundAt
        if (t.phase === "grace" && (at >= t.deadline || hurried(t))) {
          yield* enterForce(t, alive, at)
          forkScan.push(t)
        } else if (t.phase === "force" && at >= t.deadline) {
          // The leader counted as alive until its exit was seen; ask the table before calling it escaped.
          const escaped: Array<ProcessIdentity> = []
          for (const m of alive) if (yield* confirmedAlive(t, m)) escaped.push(m)
          // forceWait is over: no more scans; what the table does not confirm alive is gone.
          yield* finish(t, escaped.length > 0 ? { _tag: "Escaped", escaped: escaped.map((m) => m.pid) } : emptied(t))
          continue
        }
        if (!alive.every((m) => isLeader(t, m))) {
          polling = true
          watchEmpty(t)
        }
      }
      if (confirm.length + forkScan.length > 0) {
        // On a failed scan: a tree believed empty stays empty (reported Unverified), a tree being
        // SIGKILLed keeps the members it is known to have.
        const fresh = yield* rescan([...confirm, ...forkScan], (t) => confirm.includes(t) ? [] : t.members)
        for (const [i, t] of [...confirm, ...forkScan].entries()) {
          const found = fresh[i]!
          if (i < confirm.length) {
            if (found.length === 0) {
              yield* finish(t, emptied(t))
              continue
            }
            // New members: give them the signal of the phase the tree is in, and keep the deadline
            // (a chain of members that keep replacing themselves must not outlast it).
            yield* sendAll(t, found, t.phase === "force" ? "SIGKILL" : t.input.policy.signal)
            t.members = found
            const at = yield* now
            if (at >= t.deadline) {
              if (t.phase === "grace") {
                yield* enterForce(t, found, at)
              } else {
                const escaped: Array<ProcessIdentity> = []
                for (const m of found) if (yield* confirmedAlive(t, m)) escaped.push(m)
                yield* finish(
                  t,
                  escaped.length > 0 ? { _tag: "Escaped", escaped: escaped.map((m) => m.pid) } : emptied(t)
                )
              }
            }
          } else {
            // Forks made during the grace, not yet SIGKILLed.
            const known = new Set(t.members.map((m) => m.pid))
            const extra = found.filter((m) => !known.has(m.pid))
            yield* sendAll(t, extra, "SIGKILL")
            t.members = [...t.members, ...extra]
          }
        }
        // Fresh members are watched from the table, fast at first. Right after a kill (or a tree
        // finishing, or a phase change) look again at once; members that merely showed up again
        // are looked at after a short sleep, so a chain of replacements cannot spin the loop.
        polling = true
        pollMs = 1
        if (forkScan.length > 0 || phaseChanges !== phasesBefore) continue
      }
      const active = trees.filter((t) => t.phase !== "done")
      if (active.length === 0) break
      if (notified !== seen) continue
      const at = yield* now
      const nearest = Math.min(...active.map((t) => t.deadline))
      // Leaders' exits wake us; other members are polled from the table, fast at first.
      const sleepMs = Math.max(0, polling ? Math.min(pollMs, nearest - at) : nearest - at)
      yield* Effect.raceFirst(Effect.sleep(sleepMs), Deferred.await(wake))
      if (exitCallback) {
        // Exits come in bursts (a SIGKILL sweep ends hundreds of leaders at once, each exit its
        // own callback): one turn of the event loop lets the burst arrive, so that one round
        // handles it instead of a round per exit.
        exitCallback = false
        yield* Effect.yieldNow
      }
      if (polling) pollMs = nextPoll(pollMs)
    }
    yield* report
    for (const stop of unwatch) stop()
    yield* Effect.forEach(helpers, Fiber.interrupt, { discard: true })
    yield* Fiber.joinAll(reporters)
    return trees.map((t) => t.result!)
  })
