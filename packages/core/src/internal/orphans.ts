import * as Clock from "effect/Clock"
import type * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import type { KillPolicy } from "../KillPolicy.ts"
import * as Ledger from "../Ledger.ts"
import type { ProcessIdentity } from "../ProcessIdentity.ts"
import type { ProcessTable } from "../ProcessTable.ts"
import type * as Reaper from "../Reaper.ts"
import { isFinal, type Outcome } from "../Teardown.ts"
import * as Journal from "./journal.ts"
import { terminate, terminateMany } from "./terminate.ts"

export interface Context {
  readonly table: ProcessTable["Service"]
  readonly policy: KillPolicy
  readonly hurry: Deferred.Deferred<void>
  readonly bootId: string
}

/**
 * Terminates a tree the pool does not own a handle to (a ledger entry of an
 * earlier host, an untracked cookie carrier). Its members are found by cookie
 * and, when the ledger knows it, by process group; every signal is
 * identity-checked by the table.
 */
export const cleanup = (
  ctx: Context,
  shepherdId: string,
  pgid: number | undefined,
  leader: ProcessIdentity | undefined
): Effect.Effect<Reaper.Action> =>
  Effect.gen(function*() {
    if (leader !== undefined && leader.bootId !== ctx.bootId) {
      // Every process of an earlier boot died with it; a pid of that boot names nothing of ours.
      return { shepherdId, outcome: "OtherBoot", signalled: [], durationMs: 0 }
    }
    const r = yield* terminate({
      table: ctx.table,
      container: Ledger.containerOf({ shepherdId, pgid, identity: leader }, ctx.bootId),
      policy: ctx.policy,
      hurry: ctx.hurry
    })
    return { shepherdId, outcome: r.outcome._tag, signalled: r.signalled, durationMs: r.durationMs }
  })

/**
 * Recovery: terminate every live entry an earlier host left in the ledger, all
 * in one `terminateMany` (one driver, one coalesced scan per phase, however
 * many entries there are), then close the entries found gone.
 */
export const recover = (
  ctx: Context,
  ledger: Ledger.Ledger["Service"],
  /** Closes the ledger entry of a tree found gone (default: straight to `ledger`, failures logged). */
  exited: (shepherdId: string, outcome: Outcome, detail: string, at: number) => Effect.Effect<void> = (...args) =>
    Journal.exited(Journal.make(ledger), ...args)
): Effect.Effect<Reaper.RecoveryReport> =>
  Effect.gen(function*() {
    const at = yield* Clock.currentTimeMillis
    const entries = yield* ledger.entries
    // Every process of an earlier boot died with it; a pid of that boot names nothing of ours.
    const thisBoot = entries.filter((e) => e.identity === undefined || e.identity.bootId === ctx.bootId)
    const results = yield* terminateMany(thisBoot.map((e) => ({
      table: ctx.table,
      container: Ledger.containerOf(e, ctx.bootId),
      policy: ctx.policy,
      hurry: ctx.hurry
    })))
    const outcomes = new Map(thisBoot.map((e, i) => [e.shepherdId, results[i]!]))
    const detail = `recovered by host ${ledger.host.pid}`
    const actions: Array<Reaper.RecoveryReport["entries"][number]> = []
    for (const entry of entries) {
      const r = outcomes.get(entry.shepherdId)
      const action: Reaper.Action = r === undefined
        ? { shepherdId: entry.shepherdId, outcome: "OtherBoot", signalled: [], durationMs: 0 }
        : { shepherdId: entry.shepherdId, outcome: r.outcome._tag, signalled: r.signalled, durationMs: r.durationMs }
      // Escaped or Unverified entries stay live in the ledger: the reaper tries them again.
      if (isFinal(action.outcome)) {
        yield* exited(entry.shepherdId, action.outcome, detail, yield* Clock.currentTimeMillis)
      }
      actions.push({
        ...action,
        poolId: entry.poolId,
        session: entry.session,
        command: entry.command,
        ...(entry.identity === undefined ? {} : { pid: entry.identity.pid })
      })
    }
    return { at, durationMs: (yield* Clock.currentTimeMillis) - at, entries: actions }
  })
