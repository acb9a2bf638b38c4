/**
 * The ledger lock's states (missing, corrupt, valid), the owner check (alive, same executable,
 * same user) and acquisition: fresh, held, taken over from a gone owner or from an old corrupt
 * lock, and released only by its holder.
 */
import { assert, describe, it } from "@effect/vitest"
import { LedgerError, LedgerLocked } from "@shepherd/core/Ledger"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { identify } from "../src/NodeProcessTable.ts"
import * as ledgerLock from "../src/internal/ledgerLock.ts"

const self = identify(process.pid)!
const fail = (reason: string) => new LedgerError({ path: "test", reason })

const withDir = (body: (file: string) => void) => () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-lock-"))
  try {
    body(path.join(dir, "p.ledger"))
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}
const writeLock = (file: string, content: string, ageMs = 0) => {
  fs.writeFileSync(`${file}.lock`, content, { mode: 0o600 })
  if (ageMs > 0) {
    const then = new Date(Date.now() - ageMs)
    fs.utimesSync(`${file}.lock`, then, then)
  }
}
const thrown = (body: () => unknown): unknown => {
  try {
    body()
  } catch (error) {
    return error
  }
  return undefined
}

describe("ledgerLock", () => {
  it(
    "readLock tells missing, corrupt and valid locks apart",
    withDir((file) => {
      assert.strictEqual(ledgerLock.readLock(`${file}.lock`)._tag, "Missing")
      writeLock(file, "{half")
      assert.strictEqual(ledgerLock.readLock(`${file}.lock`)._tag, "Corrupt")
      writeLock(file, JSON.stringify({ pid: "1", startTime: "1", bootId: "b" }))
      assert.strictEqual(ledgerLock.readLock(`${file}.lock`)._tag, "Corrupt")
      writeLock(file, JSON.stringify({ ...self, token: "t" }))
      const valid = ledgerLock.readLock(`${file}.lock`)
      assert.strictEqual(valid._tag, "Valid")
      if (valid._tag === "Valid") assert.deepStrictEqual(ledgerLock.identityOf(valid.owner), self)
    })
  )

  it("ownerState: this process with its executable is live; a gone, reused or other-executable owner is not", () => {
    const exe = ledgerLock.exeOf("self")
    assert.strictEqual(ledgerLock.ownerState({ ...self, exe }, self.bootId), "live")
    assert.strictEqual(ledgerLock.ownerState({ ...self, startTime: "1", exe }, self.bootId), "gone")
    assert.strictEqual(ledgerLock.ownerState({ ...self, exe }, "another-boot"), "gone")
    assert.strictEqual(
      ledgerLock.ownerState({ pid: 4_194_000, startTime: "1", bootId: self.bootId, exe }, self.bootId),
      "gone"
    )
    const other = ledgerLock.ownerState({ ...self, exe: "/usr/bin/not-the-host" }, self.bootId)
    assert.isObject(other)
    assert.include((other as { notAHost: string }).notAHost, "/usr/bin/not-the-host")
  })

  it(
    "acquire creates the lock, a second acquire is LedgerLocked, release removes it",
    withDir((file) => {
      const first = ledgerLock.acquire(file, self, fail)
      assert.isUndefined(first.takeover)
      const lock = ledgerLock.readLock(`${file}.lock`)
      assert.strictEqual(lock._tag, "Valid")
      const second = thrown(() => ledgerLock.acquire(file, self, fail))
      assert.instanceOf(second, LedgerLocked)
      assert.strictEqual((second as LedgerLocked).ownerPid, process.pid)
      first.release()
      assert.isFalse(fs.existsSync(`${file}.lock`))
    })
  )

  it(
    "a lock of a gone owner is taken over, and the takeover is reported",
    withDir((file) => {
      const gone = { pid: 4_194_000, startTime: "1", bootId: self.bootId, token: "old", exe: process.execPath }
      writeLock(file, JSON.stringify(gone))
      const taken = ledgerLock.acquire(file, self, fail)
      assert.deepStrictEqual(taken.tookOverFrom, { pid: gone.pid, startTime: gone.startTime, bootId: gone.bootId })
      assert.include(taken.takeover!, "is gone")
      const now = ledgerLock.readLock(`${file}.lock`)
      assert.isTrue(now._tag === "Valid" && now.owner.pid === process.pid)
      assert.deepStrictEqual(fs.readdirSync(path.dirname(file)), ["p.ledger.lock"], "nothing left aside")
      taken.release()
    })
  )

  it(
    "a young corrupt lock is left alone (LedgerLocked); an old one is taken over",
    withDir((file) => {
      writeLock(file, "{half")
      const young = thrown(() => ledgerLock.acquire(file, self, fail))
      assert.instanceOf(young, LedgerLocked)
      assert.include((young as LedgerLocked).reason!, "unreadable")
      writeLock(file, "{half", 60_000)
      const taken = ledgerLock.acquire(file, self, fail)
      assert.include(taken.takeover!, "unreadable")
      assert.isUndefined(taken.tookOverFrom)
      taken.release()
    })
  )

  it(
    "release leaves a lock that is no longer ours",
    withDir((file) => {
      const held = ledgerLock.acquire(file, self, fail)
      writeLock(file, JSON.stringify({ ...self, token: "someone-else" }))
      held.release()
      assert.isTrue(fs.existsSync(`${file}.lock`))
    })
  )
})
