/**
 * `shepherd reap`: terminates, identity-checked, what a ledger whose host is
 * gone still lists, and what carries one of its pool ids without being
 * listed; prints what it did (or, with `--dry-run`, what it would do).
 * It refuses a file that is not a ledger (untouched), and only ever appends
 * `Exited` records to one that is.
 *
 * @since 0.1.0
 */
import * as KillPolicy from "@shepherd/core/KillPolicy"
import * as Reaper from "@shepherd/core/Reaper"
import * as Teardown from "@shepherd/core/Teardown"
import * as NodeLedger from "@shepherd/node/NodeLedger"
import * as NodeProcessTable from "@shepherd/node/NodeProcessTable"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Inspect from "./Inspect.ts"

/**
 * The ledger's host is alive: its own reaper owns the ledger.
 *
 * @since 0.1.0
 * @category errors
 */
export class HostAlive extends Schema.TaggedError<HostAlive>()("HostAlive", {
  path: Schema.String,
  pid: Schema.Int
}) {
  override get message(): string {
    return `ledger ${this.path} belongs to the live host pid ${this.pid}; it reaps its own orphans (use \`shepherd doctor\` to look)`
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export interface ReapResult {
  readonly path: string
  readonly dryRun: boolean
  readonly actions: ReadonlyArray<
    { readonly shepherdId: string; readonly outcome: string; readonly pids: ReadonlyArray<number> }
  >
  /** What the ledger's state asks of the operator: unparsable lines left in place, copies kept aside. */
  readonly notes: ReadonlyArray<string>
  /** The pool ids the ledger names (their cgroups are reaped next, when their hosts are dead). */
  readonly poolIds: ReadonlyArray<string>
}

/**
 * Reaps one ledger.
 *
 * @since 0.1.0
 * @category constructors
 */
export const reap = (file: string, options: { readonly dryRun: boolean; readonly policy?: KillPolicy.KillPolicy }) =>
  Effect.gen(function*() {
    const inspection = yield* Inspect.inspect(file)
    if (inspection.owner?.alive === true) {
      return yield* new HostAlive({ path: inspection.path, pid: inspection.owner.pid })
    }
    const targets = [
      ...inspection.entries.map((e) => ({ shepherdId: e.shepherdId, pids: e.members.map((m) => m.pid) })),
      ...inspection.untracked.map((u) => ({ shepherdId: u.shepherdId, pids: u.members.map((m) => m.pid) }))
    ]
    // Reap only records exits: the file is never rewritten (no compaction, no quarantine), so the
    // lines it cannot parse stay where they are for the next host to keep aside and report.
    const notes = [
      ...(inspection.badLines > 0
        ? [
          `${inspection.badLines} unparsable line(s) left in place; the next host keeps the file aside as ${inspection.path}.corrupt-<time>`
        ]
        : []),
      ...(inspection.tornLine ? ["torn last line left in place; the next host keeps it aside"] : []),
      ...inspection.quarantined.map((q) => `quarantined earlier: ${q}`)
    ]
    if (options.dryRun) {
      return {
        path: inspection.path,
        dryRun: true,
        actions: targets.map((t) => ({
          shepherdId: t.shepherdId,
          outcome: t.pids.length > 0 ? "would terminate" : "gone",
          pids: t.pids
        })),
        notes,
        poolIds: inspection.poolIds
      } satisfies ReapResult
    }
    // Owning the ledger (its lock) while reaping keeps a host from starting on it meanwhile.
    const ledger = yield* NodeLedger.make({ path: inspection.path, rewrite: false })
    const table = NodeProcessTable.make()
    const policy = options.policy ?? KillPolicy.defaults
    const entries = new Map((yield* ledger.entries).map((e) => [e.shepherdId, e]))
    const actions = yield* Effect.forEach(targets, (t) =>
      Effect.gen(function*() {
        const entry = entries.get(t.shepherdId)
        const action = yield* Reaper.cleanup({
          table,
          policy,
          bootId: ledger.host.bootId,
          shepherdId: t.shepherdId,
          pgid: entry?.pgid,
          leader: entry?.identity
        })
        // Escaped or Unverified entries stay in the ledger for the next attempt.
        if (entry !== undefined && Teardown.isFinal(action.outcome)) {
          yield* ledger.append({
            _tag: "Exited",
            shepherdId: t.shepherdId,
            outcome: action.outcome,
            detail: "reaped by shepherd reap",
            at: yield* Clock.currentTimeMillis
          })
        }
        return { shepherdId: t.shepherdId, outcome: action.outcome, pids: action.signalled }
      }), { concurrency: "unbounded" })
    return { path: inspection.path, dryRun: false, actions, notes, poolIds: inspection.poolIds } satisfies ReapResult
  }).pipe(Effect.scoped)

/**
 * @since 0.1.0
 * @category formatting
 */
export const render = (r: ReapResult): string => {
  const lines = [
    `${r.dryRun ? "would reap" : "reaped"} ${Inspect.printable(r.path)}: ${r.actions.length} entr${
      r.actions.length === 1 ? "y" : "ies"
    }`
  ]
  for (const a of r.actions) {
    lines.push(
      `  ${Inspect.printable(a.shepherdId)}  ${a.outcome}${a.pids.length > 0 ? `  pids ${a.pids.join(", ")}` : ""}`
    )
  }
  if (r.actions.length === 0) lines.push("  nothing to do")
  for (const note of r.notes) lines.push(`  note: ${Inspect.printable(note)}`)
  return lines.join("\n")
}
