/**
 * `shepherd demo`: an agent host on real processes. A pool with few slots
 * serves three sessions at once; each session asks for four workers of every
 * kind (cooperative, TERM-ignoring, one whose grandchild escapes with
 * `setsid`, one that exits by itself with code 3), more than there are slots.
 * Two sessions are ended from outside, the host tears down the last one, and
 * a final `/proc` check proves that nothing carrying this run's
 * `SHEPHERD_ID` survived.
 *
 * @since 0.1.0
 */
import type { ManagedProcess } from "@shepherd/core/ManagedProcess"
import { ProcessPool } from "@shepherd/core/ProcessPool"
import * as Teardown from "@shepherd/core/Teardown"
import * as NodeProcessTable from "@shepherd/node/NodeProcessTable"
import * as NodeShepherd from "@shepherd/node/NodeShepherd"
import * as Console from "effect/Console"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as References from "effect/References"
import * as ChildProcess from "effect/process/ChildProcess"
import * as Scope from "effect/Scope"

const workers = [
  { kind: "cooperative", script: "sleep 1000 & sleep 1000 & wait" },
  { kind: "ignores-TERM", script: "trap '' TERM; sleep 1000 & wait" },
  { kind: "setsid-escape", script: "setsid sh -c \"trap '' TERM; sleep 1000\" & sleep 1000 & wait" },
  { kind: "exits-3", script: "sleep 0.1; exit 3" }
] as const

type Kind = (typeof workers)[number]["kind"]

interface Row {
  readonly kind: Kind
  readonly requestedAt: number
  readonly managed?: ManagedProcess
  readonly tree?: ReadonlyArray<NodeProcessTable.CarrierInfo>
  readonly failure?: string
  readonly report?: Teardown.Teardown
}

const color = process.stdout.isTTY === true && process.env.NO_COLOR === undefined
const paint = (code: string, text: string) => color ? `\x1b[${code}m${text}\x1b[0m` : text
const outcomeColor = (report: Teardown.Teardown) =>
  report._tag === "Escaped" || report._tag === "Unverified" ? "31" : report._tag === "Forced" ? "33" : "32"

const shorten = (text: string, max = 58) => text.length <= max ? text : `${text.slice(0, max - 1)}…`

/**
 * The demo program. Returns the number of surviving processes (0 on success).
 *
 * @since 0.1.0
 * @category running
 */
export const run = Effect.gen(function*() {
  const started = Date.now()
  const since = () => `${String(Date.now() - started).padStart(5)} ms`
  const log = (line: string) => Console.log(`${paint("2", since())}  ${line}`)
  const config = {
    name: "demo-agent-host",
    slots: 5,
    slotTimeout: "20 seconds",
    env: "agent-host",
    kill: { signal: "SIGTERM", grace: "1 second", forceWait: "1 second" }
  } as const

  const hostScope = yield* Scope.make()
  const context = yield* Layer.buildWithScope(NodeShepherd.layer(config), hostScope)
  const pool = Context.get(context, ProcessPool)
  yield* Console.log(paint("1", `Shepherd demo: pool ${pool.poolId}, ${config.slots} slots, grace 1 s, forceWait 1 s`))
  yield* Console.log(`every child carries SHEPHERD_ID=${pool.poolId}:<n>\n`)

  const sessions = ["alice", "bob", "carol"] as const
  const rows = new Map<string, Array<Row>>(sessions.map((s) => [s, []]))

  // Each session asks for its four workers at once: 12 requests for 5 slots.
  const request = (session: string, kind: Kind, script: string) =>
    Effect.gen(function*() {
      const requestedAt = Date.now()
      const managed = yield* pool.spawn(ChildProcess.make("sh", ["-c", script]), { session }).pipe(
        Scope.provide(hostScope),
        Effect.result
      )
      if (managed._tag === "Failure") {
        rows.get(session)!.push({ kind, requestedAt, failure: managed.failure.message })
        yield* log(`${session}: ${kind} request refused: ${managed.failure._tag}`)
        return
      }
      const m = managed.success
      rows.get(session)!.push({ kind, requestedAt, managed: m })
      yield* log(
        `${session}: ${kind} started as pid ${m.pid}` + (m.slotWaitMs > 20 ? paint("36", ` after waiting ${m.slotWaitMs} ms for a slot`) : "")
      )
    })
  const requests = yield* Effect.forkChild(
    Effect.forEach(
      sessions.flatMap((s) => workers.map((w) => [s, w] as const)),
      ([s, w]) => request(s, w.kind, w.script),
      { concurrency: "unbounded", discard: true }
    )
  )

  const snapshotTrees = (session: string) =>
    Effect.sync(() => {
      const all = NodeProcessTable.carriers(`${pool.poolId}:`)
      const list = rows.get(session)!
      list.forEach((row, i) => {
        if (row.managed !== undefined) list[i] = { ...row, tree: all.filter((p) => p.shepherdId === row.managed!.shepherdId) }
      })
    })
  const closeFromOutside = (session: string) =>
    Effect.gen(function*() {
      yield* snapshotTrees(session)
      yield* log(paint("1", `${session}: session closed from outside (e.g. an HTTP handler)`))
      const reports = yield* pool.closeSession(session)
      yield* log(`${session}: closed, ${reports.length} tree(s) torn down concurrently`)
    })

  yield* Effect.sleep("1200 millis")
  yield* closeFromOutside("alice")
  yield* Effect.sleep("300 millis")
  yield* closeFromOutside("bob")
  yield* Fiber.join(requests)
  yield* Effect.sleep("300 millis")
  yield* snapshotTrees("carol")
  yield* log(paint("1", "host: shutting down (what SIGTERM does under NodeShepherd.runMain)"))
  yield* pool.shutdown
  yield* Scope.close(hostScope, Exit.void)
  yield* log("host: pool closed\n")

  // Reports: every managed process has one by now.
  for (const session of sessions) {
    yield* Console.log(paint("1", `session ${session}`))
    for (const row of rows.get(session)!) {
      if (row.managed === undefined) {
        yield* Console.log(`  ${row.kind.padEnd(14)} never started: ${row.failure}`)
        continue
      }
      const m = row.managed
      const report = (yield* m.teardown)
      const outcome = report._tag === "Some" ? paint(outcomeColor(report.value), Teardown.describe(report.value)) : "?"
      yield* Console.log(
        `  ${row.kind.padEnd(14)} pid ${String(m.pid).padEnd(7)} waited ${String(m.slotWaitMs).padStart(4)} ms for a slot  → ${outcome}`
      )
      const tree = row.tree ?? []
      const members = tree.filter((p) => p.pid !== m.pid)
      const leader = tree.find((p) => p.pid === m.pid)
      yield* Console.log(`    ${paint("2", `${m.pid}`)} ${shorten(leader?.cmdline ?? m.command)}`)
      for (const [i, p] of members.entries()) {
        const branch = i === members.length - 1 ? "└─" : "├─"
        const escaped = p.sid !== m.pid ? paint("35", ` (left the group: setsid, session ${p.sid})`) : ""
        yield* Console.log(`    ${branch} ${paint("2", String(p.pid))} ${shorten(p.cmdline, 40)}${escaped}`)
      }
    }
  }

  const survivors = NodeProcessTable.carriers(`${pool.poolId}:`)
  yield* Console.log("")
  if (survivors.length === 0) {
    yield* Console.log(paint("32;1", `✔ /proc check: 0 processes carrying SHEPHERD_ID=${pool.poolId}:* survive (${since().trim()} total)`))
  } else {
    yield* Console.log(paint("31;1", `✘ /proc check: ${survivors.length} process(es) carrying SHEPHERD_ID=${pool.poolId}:* survive:`))
    for (const p of survivors) yield* Console.log(`  pid ${p.pid} ${p.shepherdId} ${p.cmdline}`)
  }
  return survivors.length
}).pipe(
  // The demo prints its own report; keep per-teardown log lines out of it.
  Effect.provideService(References.MinimumLogLevel, "Warn")
)
