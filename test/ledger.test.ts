/**
 * The file ledger and restart recovery on real files and processes: planted
 * entries that must never be signalled (wrong start time, another boot),
 * torn and unparsable ledgers, the lock, an unwritable directory,
 * compaction, and the reaper finding an untracked cookie carrier.
 */
import { afterAll, assert, describe, it } from "@effect/vitest"
import { ProcessPool } from "@shepherd/core/ProcessPool"
import type { LedgerRecord } from "@shepherd/core/Ledger"
import * as NodeLedger from "@shepherd/node/NodeLedger"
import * as NodeProcessTable from "@shepherd/node/NodeProcessTable"
import * as NodeShepherd from "@shepherd/node/NodeShepherd"
import * as Effect from "effect/Effect"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { isAlive, waitUntil } from "./support.ts"

const made: Array<string> = []
const tempDir = () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-ledger-"))
  made.push(dir)
  return dir
}
afterAll(() => {
  for (const dir of made.splice(0)) fs.rmSync(dir, { recursive: true, force: true })
})
const bootId = fs.readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim()
const deadHost = { pid: 4_194_000, startTime: "1", bootId }
const line = (r: LedgerRecord) => `${JSON.stringify(r)}\n`

/** A plain `sleep` in its own group, not ours in any way: it must survive whatever the pool does. */
const bystander = () => {
  const child = NodeChildProcess.spawn("sleep", ["1000"], { detached: true, stdio: "ignore" })
  child.unref()
  return child.pid!
}

const plant = (file: string, entry: { pid: number; startTime: string; bootId: string }) =>
  fs.writeFileSync(
    file,
    line({ _tag: "HostStarted", poolId: "t-old~00000000", host: deadHost, at: 1 }) +
      line({
        _tag: "Intent",
        poolId: "t-old~00000000",
        shepherdId: "t-old~00000000:1",
        session: "s",
        command: "sleep 1000",
        at: 2
      }) +
      line({ _tag: "Registered", shepherdId: "t-old~00000000:1", pgid: entry.pid, identity: entry, at: 3 })
  )

const openPool = <A, E>(ledger: string, f: (pool: ProcessPool["Service"]) => Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const pool = yield* ProcessPool
    return yield* f(pool)
  }).pipe(Effect.provide(NodeShepherd.layer({ name: "t-ledger", ledger, lifeline: false })))

describe("restart recovery", () => {
  it.live("never signals a live process whose start time differs from the entry", () =>
    Effect.gen(function*() {
      const pid = bystander()
      try {
        const file = path.join(tempDir(), "a.ledger")
        plant(file, { pid, startTime: "1", bootId })
        const recovery = yield* openPool(file, (pool) => Effect.succeed(pool.recovery!))
        assert.strictEqual(recovery.entries.length, 1)
        assert.strictEqual(recovery.entries[0]!.outcome, "Gone")
        assert.deepStrictEqual(recovery.entries[0]!.signalled, [])
        assert.isTrue(isAlive(pid), "the bystander survives")
      } finally {
        process.kill(pid, "SIGKILL")
      }
    }))

  it.live("never signals an entry from another boot", () =>
    Effect.gen(function*() {
      const pid = bystander()
      try {
        const identity = NodeProcessTable.identify(pid)!
        const file = path.join(tempDir(), "b.ledger")
        plant(file, { ...identity, bootId: "00000000-0000-0000-0000-000000000000" })
        const recovery = yield* openPool(file, (pool) => Effect.succeed(pool.recovery!))
        assert.strictEqual(recovery.entries[0]!.outcome, "OtherBoot")
        assert.isTrue(isAlive(pid))
      } finally {
        process.kill(pid, "SIGKILL")
      }
    }))
})

describe("file ledger", () => {
  it.live("reports a torn last line, keeps it aside, and rewrites the ledger without it", () =>
    Effect.gen(function*() {
      const file = path.join(tempDir(), "torn.ledger")
      const torn = `{"_tag":"Registered","shepherdId":"p~1:1","pg`
      fs.writeFileSync(
        file,
        line({ _tag: "Intent", poolId: "p~1", shepherdId: "p~1:1", session: "s", command: "x", at: 1 }) + torn
      )
      const ledger = yield* NodeLedger.make({ path: file })
      assert.isTrue(ledger.opened.tornLine)
      assert.strictEqual(ledger.opened.badLines, 0)
      assert.match(path.basename(ledger.opened.quarantined!), /^torn\.ledger\.corrupt-/)
      assert.isTrue(fs.readFileSync(ledger.opened.quarantined!, "utf8").endsWith(torn), "the torn bytes are kept aside")
      const entries = yield* ledger.entries
      assert.deepStrictEqual(entries.map((e) => e.shepherdId), ["p~1:1"])
      assert.isTrue(fs.readFileSync(file, "utf8").endsWith("\n"), "rewritten without the torn line")
    }).pipe(Effect.scoped))

  it.live("quarantines an unparsable ledger, reports it, keeps what parsed, and starts fresh", () =>
    Effect.gen(function*() {
      const dir = tempDir()
      const file = path.join(dir, "bad.ledger")
      fs.writeFileSync(
        file,
        "this is not json\n" +
          line({ _tag: "Intent", poolId: "p~1", shepherdId: "p~1:7", session: "s", command: "x", at: 1 }) +
          "{\"_tag\":\"Nope\"}\n"
      )
      const ledger = yield* NodeLedger.make({ path: file })
      assert.strictEqual(ledger.opened.badLines, 2)
      const quarantined = ledger.opened.quarantined!
      assert.match(path.basename(quarantined), /^bad\.ledger\.corrupt-/)
      assert.include(fs.readFileSync(quarantined, "utf8"), "this is not json", "the original is kept aside")
      assert.deepStrictEqual((yield* ledger.entries).map((e) => e.shepherdId), ["p~1:7"])
      yield* ledger.append({ _tag: "Exited", shepherdId: "p~1:7", outcome: "Gone", detail: "", at: 2 })
      assert.deepStrictEqual(yield* ledger.entries, [])
    }).pipe(Effect.scoped))

  it.live("is owned by one host: a second opener fails with LedgerLocked naming the owner; a dead owner's lock is taken over", () =>
    Effect.gen(function*() {
      const dir = tempDir()
      const file = path.join(dir, "locked.ledger")
      yield* Effect.scoped(Effect.gen(function*() {
        yield* NodeLedger.make({ path: file })
        const second = yield* Effect.flip(NodeLedger.make({ path: file }))
        assert.strictEqual(second._tag, "LedgerLocked")
        assert.strictEqual(second._tag === "LedgerLocked" ? second.ownerPid : -1, process.pid)
      }))
      assert.isFalse(fs.existsSync(`${file}.lock`), "the lock is released with the scope")
      fs.writeFileSync(`${file}.lock`, JSON.stringify(deadHost))
      const ledger = yield* NodeLedger.make({ path: file })
      assert.deepStrictEqual(ledger.opened.tookOverFrom, deadHost)
    }).pipe(Effect.scoped))

  it.live("fails with a clear LedgerError when the directory cannot be created", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(NodeLedger.make({ path: "/dev/null/shepherd/x.ledger" }))
      assert.strictEqual(error._tag, "LedgerError")
      assert.include(error.message, "/dev/null/shepherd")
      const layerError = yield* Effect.flip(
        Effect.provide(Effect.void, NodeShepherd.layer({ name: "t-ledger", ledger: "/dev/null/shepherd/x.ledger" }))
      )
      assert.strictEqual(layerError._tag, "LedgerError")
    }).pipe(Effect.scoped))

  it.live("creates its directory 0700 and file 0600, and compacts atomically when it grows", () =>
    Effect.gen(function*() {
      const dir = path.join(tempDir(), "state", "shepherd")
      const file = path.join(dir, "c.ledger")
      const ledger = yield* NodeLedger.make({ path: file, compactEvery: 100 })
      assert.strictEqual(fs.statSync(dir).mode & 0o777, 0o700)
      assert.strictEqual(fs.statSync(file).mode & 0o777, 0o600)
      for (let i = 0; i < 1000; i++) {
        const shepherdId = `p~1:${i}`
        yield* ledger.append({ _tag: "Intent", poolId: "p~1", shepherdId, session: "s", command: "x", at: i })
        if (i % 10 !== 0) yield* ledger.append({ _tag: "Exited", shepherdId, outcome: "Graceful", detail: "", at: i })
      }
      // Registered/Exited lines are written in one batch at the end of the event-loop turn.
      yield* Effect.promise(() => new Promise((resolve) => setImmediate(resolve)))
      const lines = fs.readFileSync(file, "utf8").trim().split("\n")
      assert.isBelow(lines.length, 300, `compacted: ${lines.length} lines for 1900 events`)
      assert.isNotNull(yield* ledger.lastCompaction)
      // The file replays to the same live set.
      const replayed = NodeLedger.parse(fs.readFileSync(file, "utf8"))
      const live = new Set<string>()
      for (const r of replayed.records) {
        if (r._tag === "Intent") live.add(r.shepherdId)
        if (r._tag === "Exited") live.delete(r.shepherdId)
      }
      assert.strictEqual(live.size, 100)
      assert.strictEqual((yield* ledger.entries).length, 100)
    }).pipe(Effect.scoped))
})

describe("reaper", () => {
  it.live("terminates a process that carries the pool's SHEPHERD_ID but is tracked nowhere", () =>
    Effect.gen(function*() {
      const pool = yield* ProcessPool
      const shepherdId = `${pool.poolId}:999`
      const child = NodeChildProcess.spawn("sh", ["-c", "trap '' TERM; sleep 1000"], {
        detached: true,
        stdio: "ignore",
        env: { ...process.env, SHEPHERD_ID: shepherdId }
      })
      child.unref()
      const pid = child.pid!
      // Whatever happens, nothing of it outlives the test (it leads its own group).
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          try {
            process.kill(-pid, "SIGKILL")
          } catch {
            // gone
          }
        })
      )
      assert.isTrue(yield* Effect.promise(() => waitUntil(() => isAlive(pid))), "the untracked process runs")
      const tick = yield* pool.reapNow
      assert.deepStrictEqual(tick.untracked.map((a) => a.shepherdId), [shepherdId])
      assert.include(["Forced", "Graceful"], tick.untracked[0]!.outcome)
      assert.isFalse(isAlive(pid))
      const lastTick = yield* pool.lastTick
      assert.strictEqual(lastTick._tag === "Some" ? lastTick.value.tick : -1, tick.tick)
    }).pipe(
      Effect.provide(NodeShepherd.layer({
        name: "t-reaper",
        ledger: false,
        lifeline: false,
        kill: { grace: "100 millis", forceWait: "500 millis" }
      }))
    ))
})
