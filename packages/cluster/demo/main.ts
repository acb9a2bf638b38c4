/**
 * `pnpm demo:cluster`: Shepherd sessions across three runner processes.
 *
 * Starts a private PostgreSQL server, creates the tables once, starts three
 * runners (each hosting a ProcessPool) and a client, opens six sessions with
 * two process trees each, SIGKILLs the runner that holds the most sessions,
 * and shows from `/proc` that its trees are gone (its lifeline) and that its
 * sessions answer from the other runners, reporting the killed runner's trees
 * as `Lost`. Exits 0 only when no process carrying this run's `SHEPHERD_ID`s
 * or marker survives.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Console from "effect/Console"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as References from "effect/References"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { Sharding } from "effect/cluster/Sharding"
import * as SqlClient from "effect/sql/SqlClient"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as ClusterRunner from "../src/ClusterRunner.ts"
import * as SessionClient from "../src/SessionClient.ts"
import type { SessionStatus } from "../src/SessionEntity.ts"
import * as Harness from "./harness.ts"

const color = process.stdout.isTTY === true && process.env.NO_COLOR === undefined
const paint = (code: string, text: string) => color ? `\x1b[${code}m${text}\x1b[0m` : text

const runId = globalThis.crypto.randomUUID().slice(0, 8)
const marker = `SHEPHERD_CLUSTER_DEMO=${runId}`
const trees = [
  ["sh", "-c", "echo \"tree of pid $$ up\"; sleep 1000 & sleep 1000 & wait"],
  ["sh", "-c", "trap '' TERM; sleep 1000 & wait"]
] as const
const grace = 500
const forceWait = 500
const lease = 6_000

/** Processes of this run still alive: by SHEPHERD_ID prefix, and by the marker in the environment. */
const survivors = () => {
  const byId = Harness.carriers(`cluster-${runId}-`)
  const byMarker = markedPids()
  return [...new Set([...byId.map((p) => p.pid), ...byMarker])]
}
const markedPids = (): Array<number> => {
  const out: Array<number> = []
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const environ = fs.readFileSync(`/proc/${entry}/environ`, "latin1")
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "latin1")
      const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3)
      if (state !== "Z" && environ.split("\0").includes(marker)) out.push(Number(entry))
    } catch {
      // gone, or not ours to read
    }
  }
  return out
}

const program = Effect.gen(function*() {
  const started = Date.now()
  const since = () => paint("2", `${String(Date.now() - started).padStart(6)} ms`)
  const log = (line: string) => Console.log(`${since()}  ${line}`)
  yield* Console.log(paint("1", `Shepherd cluster demo (run ${runId}): 3 runners, 6 sessions, PostgreSQL storage`))
  yield* Console.log(
    paint(
      "2",
      `kill policy grace ${grace} ms + forceWait ${forceWait} ms; shard lease ${lease} ms (≥ 2 × refresh + lifeline bound)`
    )
  )

  if (!Harness.postgresAvailable()) {
    return yield* Effect.fail(new Error("PostgreSQL binaries not found: apt-get install -y postgresql"))
  }
  const pg = yield* Harness.postgres
  yield* log(`PostgreSQL started on 127.0.0.1:${pg.port} (data in ${pg.dir})`)
  const database = { host: "127.0.0.1", port: pg.port }

  // Tables first, once: three runners migrating at once is the race to avoid.
  yield* ClusterRunner.migrate.pipe(Effect.provide(ClusterRunner.database(database)))
  yield* log("tables created (cluster messages, runners, shard leases, session records)")

  const scope = yield* Scope.Scope
  const clientContext = yield* Layer.buildWithScope(
    ClusterRunner.layerClient({ database, sharding: { shardLockExpiration: lease } }),
    scope
  )
  const sql = Context.get(clientContext, SqlClient.SqlClient)
  const client = yield* SessionClient.make.pipe(Effect.provideContext(clientContext as Context.Context<Sharding>))

  const dir = yield* Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-cluster-demo-"))),
    (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
  )
  const runners = yield* Harness.startRunners(3, (i) => ({
    name: `cluster-${runId}-r${i}`,
    dbPort: pg.port,
    ledger: path.join(dir, `runner-${i}.ledger`),
    graceMs: grace,
    forceWaitMs: forceWait,
    shardLockExpirationMs: lease,
    slots: 16
  }))
  for (const r of runners) yield* log(`runner ${r.index}: pid ${r.pid}, ${r.address}, pool ${r.poolId}`)

  // Sessions go where the shards are: wait until every runner holds its share.
  yield* Harness.waitUntil(
    "the three runners to hold all shards",
    sql<{ address: string; n: string }>`SELECT address, count(*) AS n FROM cluster_locks GROUP BY address`.pipe(
      Effect.map((rows) =>
        rows.length === 3 && rows.reduce((sum, row) => sum + Number(row.n), 0) === 300 &&
        rows.every((row) => runners.some((r) => r.address === row.address))
      )
    )
  )
  yield* log("the three runners hold 100 shards each")

  const sessions = ["s1", "s2", "s3", "s4", "s5", "s6"].map((s) => `${s}-${runId}`)
  yield* Effect.forEach(
    sessions,
    (session) =>
      Effect.forEach(
        trees,
        (argv, i) =>
          client.spawn(session, { argv, env: { SHEPHERD_CLUSTER_DEMO: runId } }, { spawnId: `${session}/tree-${i}` }),
        {
          discard: true
        }
      ),
    { concurrency: "unbounded", discard: true }
  )
  // A retried Spawn (same spawnId) returns the first result and starts nothing.
  const first = yield* client.status(sessions[0]!)
  const retried = yield* client.spawn(sessions[0]!, { argv: trees[0], env: { SHEPHERD_CLUSTER_DEMO: runId } }, {
    spawnId: `${sessions[0]}/tree-0`
  })
  const again = yield* client.status(sessions[0]!)
  yield* log(
    `retried Spawn ${retried.spawnId}: pid ${retried.pid} (first: ${first.trees[0]?.pid}); ` +
      `${again.trees.length} trees recorded before and after: ${
        first.trees.length === again.trees.length ? "nothing spawned twice" : "SPAWNED TWICE"
      }`
  )
  if (retried.pid !== first.trees[0]?.pid || first.trees.length !== again.trees.length) {
    return yield* Effect.fail(new Error("a retried Spawn spawned again"))
  }

  const firstLine = yield* client.output(sessions[0]!, `${sessions[0]}/tree-0`).pipe(Stream.take(1), Stream.runCollect)
  yield* log(`Output of ${sessions[0]}/tree-0, streamed from its runner: ${JSON.stringify([...firstLine][0])}`)

  const statuses = yield* Effect.forEach(sessions, client.status, { concurrency: "unbounded" })
  const bySession = (s: SessionStatus) =>
    `${s.session.padEnd(12)} on ${s.runner} (runner pid ${s.runnerPid}): ${
      s.trees.map((t) => `${t.state} pid ${t.pid}`).join(", ")
    }`
  yield* Console.log(paint("1", "\nsix sessions, two trees each (a cooperative one and a TERM-ignoring one)"))
  for (const s of statuses) yield* log(bySession(s))
  for (const r of runners) {
    const held = statuses.filter((s) => s.runner === r.address).length
    yield* log(
      `runner ${r.index} holds ${held} session(s), ${
        Harness.carriers(`${r.poolId}:`).length
      } supervised processes (/proc)`
    )
  }

  const victim = runners.reduce((best, r) =>
    statuses.filter((s) => s.runner === r.address).length > statuses.filter((s) => s.runner === best.address).length
      ? r
      : best
  )
  const moved = statuses.filter((s) => s.runner === victim.address)
  // The victim's processes, pid and start time: polling just these is cheap, so the time is the kill's, not a scan's.
  const victimTrees = Harness.snapshot(`${victim.poolId}:`)
  const victimProcesses = victimTrees.length
  yield* Console.log(
    paint(
      "1",
      `\nSIGKILL runner ${victim.index} (pid ${victim.pid}): ${moved.length} sessions, ${victimProcesses} processes`
    )
  )
  const killedAt = Date.now()
  yield* Harness.sigkill(victim)
  yield* log(paint("31", `runner ${victim.index} is dead (no finalizer ran)`))
  // Ask its sessions at once: each answers as soon as a new runner hosts it.
  const answering = yield* Effect.forkChild(
    Effect.forEach(
      moved,
      (s) => Effect.map(client.status(s.session), (status) => ({ status, ms: Date.now() - killedAt })),
      {
        concurrency: "unbounded"
      }
    )
  )

  yield* Harness.waitUntil(
    "the dead runner's trees to be gone",
    Effect.sync(() => Harness.stillAlive(victimTrees).length === 0)
  )
  const goneMs = Date.now() - killedAt
  // And no process of its pool is left at all (a full /proc scan by SHEPHERD_ID).
  const leftOfVictim = Harness.carriers(`${victim.poolId}:`).length
  if (leftOfVictim > 0) return yield* Effect.fail(new Error(`${leftOfVictim} processes of the killed runner survive`))

  yield* log(
    paint(
      "32",
      `its ${victimProcesses} processes are gone (/proc), ${goneMs} ms after the kill: its lifeline ended them`
    )
  )

  const answered = yield* Fiber.join(answering)
  const answeringMs = Math.max(...answered.map((a) => a.ms))
  const firstAnswerMs = Math.min(...answered.map((a) => a.ms))
  for (const { ms, status } of answered) yield* log(`${bySession(status)}  (answered ${ms} ms after the kill)`)
  yield* log(
    paint("32", `its ${moved.length} sessions answer from the other runners, ${answeringMs} ms after the kill`)
  )
  const notLost = answered.flatMap((a) => a.status.trees.filter((t) => t.state !== "Lost"))
  if (notLost.length > 0 || answered.some((a) => a.status.runner === victim.address)) {
    return yield* Effect.fail(new Error("a re-homed session does not report its earlier trees as Lost"))
  }
  if (answered.length > 0) yield* log(`a Lost tree reads: ${answered[0]!.status.trees[0]!.detail}`)
  // The lease rule's point: the new host answered only after the old trees were gone (a timing
  // guarantee: see ClusterConfig; printed, not enforced, since a starved machine can stretch a lifeline).
  yield* log(
    firstAnswerMs >= goneMs
      ? paint("32", `never on two runners: the trees were gone ${firstAnswerMs - goneMs} ms before the first answer`)
      : paint("31", `the first answer came ${goneMs - firstAnswerMs} ms before the old trees were gone`)
  )

  yield* Console.log(paint("1", "\nclose all six sessions"))
  const closed = yield* Effect.forEach(sessions, client.close, { concurrency: "unbounded" })
  for (const s of closed) {
    yield* log(`${s.session.padEnd(12)} ${s.state}: ${s.trees.map((t) => `${t.outcome}`).join(", ")}`)
  }
  const left = survivors()
  yield* log(`${left.length} supervised processes left after closing`)
  return { goneMs, answeringMs }
})

const main = Effect.gen(function*() {
  const times = yield* Effect.scoped(program)
  // Everything is stopped now: runners (SIGTERM), the client, PostgreSQL.
  const left = survivors()
  yield* Console.log("")
  yield* Console.log(`kill → trees gone:          ${times.goneMs} ms`)
  yield* Console.log(`kill → sessions answering:  ${times.answeringMs} ms`)
  if (left.length > 0) {
    yield* Console.log(
      paint("31;1", `✘ /proc check: ${left.length} process(es) of run ${runId} survive: ${left.join(", ")}`)
    )
    return yield* Effect.fail(new Error("processes survived"))
  }
  yield* Console.log(
    paint("32;1", `✔ /proc check: 0 processes carrying SHEPHERD_ID=cluster-${runId}-* or ${marker} survive`)
  )
})

main.pipe(Effect.provideService(References.MinimumLogLevel, "Warn"), NodeRuntime.runMain)
