/**
 * `shepherd doctor`: what a ledger (of a running or a dead host) says, next
 * to what the OS shows — a tree per ledger: session → process → descendants,
 * with each process's state and memory, plus the processes that carry one of
 * the ledger's pool ids but that the ledger does not list. Read-only: no lock
 * is taken and no signal is sent.
 *
 * This command cannot know the values of a tree's `Redacted` arguments or
 * environment variables, so it shows the members of a tree that the ledger
 * marks `redacted` (and of untracked trees, whose command is unknown) by
 * their executable's name only: `<name> <arguments hidden>`.
 *
 * @since 0.1.0
 */
import { Member } from "@shepherd/core/Doctor"
import * as Ledger from "@shepherd/core/Ledger"
import type { ProcessInfo } from "@shepherd/core/ProcessTable"
import * as NodeLedger from "@shepherd/node/NodeLedger"
import * as NodeProcessTable from "@shepherd/node/NodeProcessTable"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as fs from "node:fs"

/**
 * @since 0.1.0
 * @category schemas
 */
export const LedgerInspection = Schema.Struct({
  path: Schema.String,
  exists: Schema.Boolean,
  owner: Schema.optionalKey(Schema.Struct({ pid: Schema.Int, alive: Schema.Boolean })),
  tornLine: Schema.Boolean,
  badLines: Schema.Int,
  sizeBytes: Schema.Int,
  quarantined: Schema.Array(Schema.String),
  /** The pools the ledger names (their hosts' ids). */
  poolIds: Schema.Array(Schema.String),
  entries: Schema.Array(Schema.Struct({
    shepherdId: Schema.String,
    session: Schema.String,
    command: Schema.String,
    pid: Schema.optionalKey(Schema.Int),
    ageMs: Schema.Number,
    members: Schema.Array(Member)
  })),
  untracked: Schema.Array(Schema.Struct({ shepherdId: Schema.String, members: Schema.Array(Member) }))
})

/**
 * @since 0.1.0
 * @category models
 */
export interface LedgerInspection extends Schema.Schema.Type<typeof LedgerInspection> {}

// The kernel's name of the executable (not argv[0], which a process may set to anything).
const hideArguments = (info: ProcessInfo): ProcessInfo => {
  let name = "?"
  try {
    name = fs.readFileSync(`/proc/${info.pid}/comm`, "utf8").trim() || "?"
  } catch {
    // gone, or no /proc
  }
  return { ...info, command: `${name} <arguments hidden>` }
}

/**
 * Inspects one ledger.
 *
 * @since 0.1.0
 * @category constructors
 */
export const inspect = (file: string) =>
  Effect.gen(function*() {
    const table = NodeProcessTable.make()
    const snapshot = yield* NodeLedger.snapshot(file)
    const bootId = NodeProcessTable.identify(process.pid)?.bootId ?? "unknown"
    const describe = (identities: ReadonlyArray<{ pid: number; startTime: string; bootId: string }>, hidden: boolean) =>
      Effect.map(Effect.forEach(identities, (i) => table.inspect(i)), (xs) =>
        xs.filter((x): x is ProcessInfo => x !== undefined).map((x) => hidden ? hideArguments(x) : x))
    const now = yield* Clock.currentTimeMillis
    const entries = yield* Effect.forEach(snapshot.entries, (e) =>
      Effect.gen(function*() {
        const identities = yield* Effect.orElseSucceed(table.members(Ledger.containerOf(e, bootId)), () => [])
        // `<redacted>` in the display: a ledger written before the pool recorded `redacted`.
        const members = yield* describe(identities, e.redacted === true || e.command.includes("<redacted>"))
        return {
          shepherdId: e.shepherdId,
          session: e.session,
          command: e.command,
          ...(e.identity === undefined ? {} : { pid: e.identity.pid }),
          ageMs: now - e.intentAt,
          members
        }
      }), { concurrency: "unbounded" })
    const listed = new Set(snapshot.entries.map((e) =>
      e.shepherdId
    ))
    const untracked = new Map<string, Array<{ pid: number; startTime: string; bootId: string }>>()
    for (const poolId of snapshot.poolIds) {
      for (const c of yield* Effect.orElseSucceed(table.carriers(`${poolId}:`), () => [])) {
        if (listed.has(c.shepherdId)) continue
        untracked.set(c.shepherdId, [...(untracked.get(c.shepherdId) ?? []), c.identity])
      }
    }
    const inspection: LedgerInspection = {
      path: snapshot.path,
      exists: snapshot.exists,
      ...(snapshot.owner === undefined
        ? {}
        : { owner: { pid: snapshot.owner.identity.pid, alive: snapshot.owner.alive } }),
      tornLine: snapshot.tornLine,
      badLines: snapshot.badLines,
      sizeBytes: snapshot.sizeBytes,
      quarantined: snapshot.quarantined,
      poolIds: [...snapshot.poolIds],
      entries,
      untracked: yield* Effect.forEach([...untracked], ([shepherdId, ids]) =>
        Effect.map(describe(ids, true), (members) => ({ shepherdId, members })))
    }
    return inspection
  })

const useColor = () => process.stdout.isTTY === true && process.env.NO_COLOR === undefined
const paint = (code: string, text: string) => useColor() ? `\x1b[${code}m${text}\x1b[0m` : text
const mib = (kib: number) => `${(kib / 1024).toFixed(1)} MiB`
/**
 * `text` with every control character (C0, DEL, C1) and every bidirectional
 * override shown as an escape (`\x1b`, `\u202e`): command lines, ids and
 * session names are chosen by others (a tree runs any command; any process of
 * the user may carry a `SHEPHERD_ID`), and raw they would drive the
 * operator's terminal (clear it, overwrite lines, set the title or the
 * clipboard) or reorder what it shows.
 *
 * @since 0.1.0
 * @category formatting
 */
export const printable = (text: string): string =>
  text.replace(
    // oxlint-disable-next-line no-control-regex -- matching control characters is the point
    /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g,
    (c) => {
      const code = c.charCodeAt(0)
      return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`
    }
  )
const clip = (raw: string, max = 60) => {
  const text = printable(raw)
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`
}
const age = (ms: number) =>
  ms < 60_000
    ? `${Math.round(ms / 1000)}s`
    : ms < 3_600_000
    ? `${Math.round(ms / 60_000)}m`
    : `${Math.round(ms / 3_600_000)}h`

/**
 * Renders an inspection as a tree.
 *
 * @since 0.1.0
 * @category formatting
 */
export const render = (x: LedgerInspection): string => {
  const lines: Array<string> = []
  const owner = x.owner === undefined
    ? paint("2", "no owner")
    : x.owner.alive
    ? paint("32", `owner pid ${x.owner.pid} (alive)`)
    : paint("33", `owner pid ${x.owner.pid} (gone)`)
  lines.push(
    `${paint("1", "ledger")} ${printable(x.path)}  ${owner}  ${x.entries.length} live entr${
      x.entries.length === 1 ? "y" : "ies"
    }, ${x.sizeBytes} bytes`
  )
  if (!x.exists) lines.push(`  ${paint("2", "(no such file)")}`)
  if (x.tornLine) lines.push(`  ${paint("33", "torn last line (a host died mid-write); it is skipped")}`)
  if (x.badLines > 0) {
    lines.push(`  ${paint("31", `${x.badLines} unparsable line(s): the next host quarantines this file`)}`)
  }
  for (const q of x.quarantined) lines.push(`  ${paint("33", `quarantined: ${printable(q)}`)}`)
  const alive = (n: number) => n > 0 ? paint(x.owner?.alive === true ? "32" : "31", `${n} alive`) : paint("2", "gone")
  const bySession = new Map<string, Array<LedgerInspection["entries"][number]>>()
  for (const e of x.entries) bySession.set(e.session, [...(bySession.get(e.session) ?? []), e])
  const memberLines = (members: ReadonlyArray<typeof Member.Type>, indent: string) =>
    members.forEach((m, i) => {
      const branch = i === members.length - 1 ? "└─" : "├─"
      lines.push(`${indent}${branch} ${m.pid} ${m.state} ${mib(m.rssKiB).padStart(9)}  ${clip(m.command, 50)}`)
    })
  for (const [session, entries] of bySession) {
    lines.push(`  session ${paint("1", printable(session))}`)
    for (const e of entries) {
      lines.push(
        `    ${printable(e.shepherdId)}  pid ${e.pid ?? "?"}  age ${age(e.ageMs)}  ${alive(e.members.length)}  ${
          clip(e.command)
        }`
      )
      memberLines(e.members, "      ")
    }
  }
  if (x.untracked.length > 0) {
    lines.push(`  ${paint("31", "untracked: carry a pool id of this ledger, but the ledger does not list them")}`)
    for (const u of x.untracked) {
      lines.push(`    ${printable(u.shepherdId)}  ${u.members.length} alive`)
      memberLines(u.members, "      ")
    }
  }
  if (x.entries.length > 0 && x.owner?.alive !== true) {
    const n = x.entries.reduce((acc, e) => acc + e.members.length, 0)
    if (n > 0) {
      lines.push(
        `  ${
          paint(
            "33",
            `its host is gone: \`shepherd reap --ledger ${printable(x.path)}\` terminates ${n} orphan process(es)`
          )
        }`
      )
    }
  }
  return lines.join("\n")
}
