/**
 * The journal: every write a pool makes to its ledger and its lifeline goes
 * through here, so that each is made in one style (counted, and — except
 * the intent, whose failure refuses the spawn — logged and survived when the
 * ledger fails).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import type { Ledger, LedgerError, LedgerRecord } from "../Ledger.ts"
import type * as Lifeline from "../Lifeline.ts"
import type { ProcessIdentity } from "../ProcessIdentity.ts"
import type { Container } from "../ProcessTable.ts"
import type { Outcome } from "../Teardown.ts"

/**
 * The journal of one pool: its ledger and its lifeline, each optional.
 *
 * @since 0.1.0
 * @category models
 */
export interface Journal {
  readonly ledger: Ledger["Service"] | undefined
  /** Set once the lifeline is attached (after recovery and the host's start record). */
  lifeline: Lifeline.Attached | undefined
  /** Counts one appended record (`Metrics.ledgerEvents`), built once. */
  readonly counted: Effect.Effect<void>
}

/**
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  ledger: Ledger["Service"] | undefined,
  events?: Metric.Metric<number, unknown> | undefined
): Journal => ({
  ledger,
  lifeline: undefined,
  counted: events === undefined ? Effect.void : Metric.update(events, 1)
})

const warn = (error: LedgerError) => Effect.logWarning(`ledger: ${error.message}`)

/**
 * Appends `record`; a failure is logged and the pool goes on.
 *
 * @since 0.1.0
 * @category writes
 */
export const record = (journal: Journal, record: LedgerRecord): Effect.Effect<void> =>
  journal.ledger === undefined
    ? Effect.void
    : journal.ledger.append(record).pipe(Effect.andThen(journal.counted), Effect.catch(warn))

/**
 * The intent, written before the OS spawn. Its failure is the caller's:
 * without it a crash could leave the tree unknown to the next host.
 *
 * @since 0.1.0
 * @category writes
 */
export const intent = (
  journal: Journal,
  intent: {
    readonly poolId: string
    readonly shepherdId: string
    readonly session: string
    readonly command: string
    readonly redacted: boolean
    readonly at: number
  }
): Effect.Effect<void, LedgerError> =>
  journal.ledger === undefined ? Effect.void : journal.ledger.append({
    _tag: "Intent",
    poolId: intent.poolId,
    shepherdId: intent.shepherdId,
    session: intent.session,
    command: intent.command,
    ...(intent.redacted ? { redacted: true } : {}),
    at: intent.at
  }).pipe(Effect.andThen(journal.counted))

/**
 * Right after the OS spawn: the tree's identity goes to the ledger, then its
 * container to the lifeline. The lifeline's failure is the caller's: a tree
 * it could not take is not protected against a hard death of the host.
 *
 * @since 0.1.0
 * @category writes
 */
export const registered = (
  journal: Journal,
  container: Container,
  at: number
): Effect.Effect<void, Lifeline.LifelineUnavailable> => {
  const registration = record(journal, {
    _tag: "Registered",
    shepherdId: container.shepherdId,
    pgid: container.pgid,
    identity: container.leader,
    ...(container.cgroup === undefined ? {} : { cgroup: container.cgroup }),
    at
  })
  const lifeline = journal.lifeline
  return lifeline === undefined ? registration : Effect.andThen(registration, lifeline.register(container))
}

/**
 * The tree's ledger entry is closed: it is gone (or was never started).
 *
 * @since 0.1.0
 * @category writes
 */
export const exited = (
  journal: Journal,
  shepherdId: string,
  outcome: Outcome,
  detail: string,
  at: number
): Effect.Effect<void> => record(journal, { _tag: "Exited", shepherdId, outcome, detail, at })

/**
 * A registered tree is gone: its ledger entry is closed and the lifeline
 * stops watching it.
 *
 * @since 0.1.0
 * @category writes
 */
export const released = (
  journal: Journal,
  shepherdId: string,
  outcome: Outcome,
  detail: string,
  at: number
): Effect.Effect<void> => {
  const closed = exited(journal, shepherdId, outcome, detail, at)
  const lifeline = journal.lifeline
  return lifeline === undefined ? closed : Effect.andThen(closed, lifeline.unregister(shepherdId))
}

/**
 * A host started a pool on the ledger.
 *
 * @since 0.1.0
 * @category writes
 */
export const hostStarted = (journal: Journal, poolId: string, host: ProcessIdentity, at: number): Effect.Effect<void> =>
  record(journal, { _tag: "HostStarted", poolId, host, at })

/**
 * A host closed its pool cleanly.
 *
 * @since 0.1.0
 * @category writes
 */
export const hostStopped = (journal: Journal, poolId: string, at: number): Effect.Effect<void> =>
  record(journal, { _tag: "HostStopped", poolId, at })
