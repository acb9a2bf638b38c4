/**
 * `shepherd demo`: an agent host on real processes. A pool with few slots
 * serves three sessions at once; each session asks for four workers of every
 * kind (cooperative, TERM-ignoring, one whose grandchild escapes with
 * `setsid`, one that exits by itself with code 3), more than there are slots.
 * Two sessions are ended from outside, the host tears down the last one, and
 * then two hosts die hard (SIGKILL): one is cleaned up by its lifeline, the
 * other's orphans by the next host's ledger recovery. A final `/proc` check
 * proves that nothing carrying this run's `SHEPHERD_ID`s survived.
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
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

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

/** Cuts a long command line at a word boundary. */
const shorten = (text: string, max = 58) => {
  if (text.length <= max) return text
  const cut = text.lastIndexOf(" ", max - 2)
  return `${text.slice(0, cut > max / 2 ? cut : max - 1)} …`
}

// Next to this module: `.ts` when run from the sources, `.js` once built.
const demoHost = fileURLToPath(new URL(`./DemoHost${import.meta.url.endsWith(".ts") ? ".ts" : ".js"}`, import.meta.url))

/** Starts the crash-test host and reads its ready line. */
const startCrashHost = (ledger: string, lifeline: boolean) =>
  Effect.acquireRelease(
    Effect.callback<{ child: NodeChildProcess.ChildProcess; poolId: string; pids: Array<number> }, Error>((resume) => {
      const child = NodeChildProcess.spawn(process.execPath, [demoHost, ledger, lifeline ? "lifeline" : "none"], {
        stdio: ["ignore", "pipe", "inherit"]
      })
      let buffer = ""
      child.stdout!.on("data", (chunk: Buffer) => {
        buffer += chunk.toString()
        let nl: number
        while ((nl = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, nl)
          buffer = buffer.slice(nl + 1)
          // Log lines (the new host reports what it recovered) are not the ready line.
          if (line.startsWith("{\"poolId\"")) resume(Effect.succeed({ child, ...JSON.parse(line) }))
        }
      })
      child.on("exit", () => resume(Effect.fail(new Error("the demo host exited before it was ready"))))
    }),
    // Should the demo fail half-way, the host it started must not outlive it.
    ({ child }) => Effect.sync(() => child.exitCode === null && child.signalCode === null && child.kill("SIGTERM"))
  )

const sigkill = (child: NodeChildProcess.ChildProcess) =>
  Effect.callback<void>((resume) => {
    child.on("exit", () => resume(Effect.void))
    child.kill("SIGKILL")
  })

const countAlive = (prefix: string) => NodeProcessTable.carriers(prefix).length

/**
 * Act 2: hosts that die hard. A host with a lifeline is SIGKILLed and its
 * sentinel ends its trees; a host without one is SIGKILLed, its orphans are
 * shown alive, and a new host on the same ledger recovers them. Returns the
 * `SHEPHERD_ID` prefixes it created, for the final check.
 */
const crashActs = (dir: string, log: (line: string) => Effect.Effect<void>) =>
  Effect.gen(function*() {
    const ledger = path.join(dir, "crashed-host.ledger")
    yield* Console.log(paint("1", "\nAct 2: hosts that die hard (SIGKILL: no finalizer runs)"))

    const withLifeline = yield* startCrashHost(ledger, true)
    const prefixA = `${withLifeline.poolId}:`
    yield* log(
      `host pid ${withLifeline.child.pid} with a lifeline runs ${
        countAlive(prefixA)
      } processes in 3 TERM-ignoring trees`
    )
    const killedA = Date.now()
    yield* sigkill(withLifeline.child)
    yield* log(paint("31", `host pid ${withLifeline.child.pid} SIGKILLed`))
    while (countAlive(prefixA) > 0 && Date.now() - killedA < 5_000) yield* Effect.sleep("10 millis")
    yield* log(
      `its lifeline sentinel ended them: ${countAlive(prefixA)} left after ${
        Date.now() - killedA
      } ms (grace 500 ms + forceWait 500 ms)`
    )

    const without = yield* startCrashHost(ledger, false)
    const prefixB = `${without.poolId}:`
    yield* sigkill(without.child)
    yield* Effect.sleep("200 millis")
    yield* log(
      paint(
        "31",
        `host pid ${without.child.pid} without a lifeline SIGKILLed: ${countAlive(prefixB)} orphans still alive`
      )
    )
    yield* log(`a new host opens the same ledger (${ledger})`)
    const recovery = yield* Effect.scoped(Effect.gen(function*() {
      const scope = yield* Scope.Scope
      const context = yield* Layer.buildWithScope(
        NodeShepherd.layer({
          name: "demo-crashed-host",
          ledger,
          lifeline: false,
          kill: { grace: "500 millis", forceWait: "500 millis" }
        }),
        scope
      )
      return Context.get(context, ProcessPool).recovery!
    }))
    for (const entry of recovery.entries) {
      yield* log(
        `  recovered ${entry.shepherdId} (pid ${entry.pid ?? "?"}, ${shorten(entry.command, 44)}): ` +
          paint(
            entry.outcome === "Escaped" ? "31" : "33",
            `${entry.outcome}, ${entry.signalled.length} pid(s) signalled`
          )
      )
    }
    yield* log(`recovery took ${recovery.durationMs} ms; ${countAlive(prefixB)} orphans left`)
    return [prefixA, prefixB]
  }).pipe(Effect.scoped)

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
  // A private state directory: two demos at once never share a ledger, and nothing is left behind.
  const dir = yield* Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-demo-"))),
    (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
  )
  const config = {
    name: "demo-agent-host",
    ledger: path.join(dir, "agent-host.ledger"),
    slots: 5,
    slotTimeout: "20 seconds",
    env: "agent-host",
    kill: { signal: "SIGTERM", grace: "1 second", forceWait: "1 second" }
  } as const

  // Closed with the demo whatever happens, so a failing demo still tears its host down.
  const hostScope = yield* Effect.acquireRelease(Scope.make(), (scope) => Scope.close(scope, Exit.void))
  const context = yield* Layer.buildWithScope(NodeShepherd.layer(config), hostScope)
  const pool = Context.get(context, ProcessPool)
  yield* Console.log(paint("1", `Shepherd demo: pool ${pool.poolId}, ${config.slots} slots, grace 1 s, forceWait 1 s`))
  yield* Console.log(`every child carries SHEPHERD_ID=${pool.poolId}:<n>; ledger in ${dir}\n`)
  yield* Console.log(paint("1", "Act 1: three sessions ask for 12 workers at once; 5 slots"))
  yield* Console.log(paint("2", "(left: milliseconds since the demo started)"))

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
        `${session}: ${kind} started as pid ${m.pid}` +
          (m.slotWaitMs > 20 ? paint("36", ` after waiting ${m.slotWaitMs} ms for a slot`) : "")
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
        if (row.managed !== undefined) {
          list[i] = {
            ...row,
            tree: all.filter((p) => p.shepherdId === row.managed!.shepherdId)
          }
        }
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
  yield* Console.log(
    paint(
      "2",
      "kind, leader pid, time it waited for a slot → how its teardown ended; below it, the tree as /proc showed it"
    )
  )
  for (const session of sessions) {
    yield* Console.log(paint("1", `session ${session}`))
    for (const row of rows.get(session)!) {
      if (row.managed === undefined) {
        yield* Console.log(`  ${row.kind.padEnd(14)} never started: ${row.failure}`)
        continue
      }
      const m = row.managed
      const report = yield* m.teardown
      const outcome = report._tag === "Some" ? paint(outcomeColor(report.value), Teardown.describe(report.value)) : "?"
      yield* Console.log(
        `  ${row.kind.padEnd(14)} pid ${String(m.pid).padEnd(7)} waited ${
          String(m.slotWaitMs).padStart(4)
        } ms for a slot  → ${outcome}`
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

  const crashed = yield* crashActs(dir, log)

  const survivors = [
    ...NodeProcessTable.carriers(`${pool.poolId}:`),
    ...crashed.flatMap((prefix) => NodeProcessTable.carriers(prefix))
  ]
  yield* Console.log("")
  if (survivors.length === 0) {
    yield* Console.log(
      paint(
        "32;1",
        `✔ /proc check: 0 processes carrying SHEPHERD_ID=${
          [pool.poolId, ...crashed.map((p) => p.slice(0, -1))].join(":*, ")
        }:* survive (${since().trim()} total)`
      )
    )
  } else {
    yield* Console.log(
      paint("31;1", `✘ /proc check: ${survivors.length} process(es) carrying this run's SHEPHERD_IDs survive:`)
    )
    for (const p of survivors) yield* Console.log(`  pid ${p.pid} ${p.shepherdId} ${p.cmdline}`)
  }
  return survivors.length
}).pipe(
  Effect.scoped,
  // The demo prints its own report; keep per-teardown log lines out of it.
  Effect.provideService(References.MinimumLogLevel, "Error")
)
