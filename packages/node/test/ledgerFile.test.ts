/**
 * The ledger's file format: lenient parsing (bad lines counted, a torn last line told apart),
 * encoding, and the refusal of a file that holds no ledger record.
 */
import { assert, describe, it } from "@effect/vitest"
import type { LedgerRecord } from "@shepherd/core/Ledger"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as ledgerFile from "../src/internal/ledgerFile.ts"

const host = { pid: 4242, startTime: "100", bootId: "boot" }
const started: LedgerRecord = { _tag: "HostStarted", poolId: "p~1", host, at: 1 }
const intent: LedgerRecord = {
  _tag: "Intent",
  poolId: "p~1",
  shepherdId: "p~1:1",
  session: "s",
  command: "sleep 1",
  at: 2
}

describe("ledgerFile", () => {
  it("encode writes one line per record, and parse reads it back", () => {
    const text = ledgerFile.encode(started) + ledgerFile.encode(intent)
    assert.strictEqual(text.split("\n").length, 3)
    const parsed = ledgerFile.parse(text)
    assert.deepStrictEqual(parsed.records, [started, intent])
    assert.strictEqual(parsed.badLines, 0)
    assert.isFalse(parsed.tornLine)
  })

  it("counts bad lines and skips blank ones", () => {
    const text = `${ledgerFile.encode(started)}\nnot json\n{"_tag":"Unknown"}\n${ledgerFile.encode(intent)}`
    const parsed = ledgerFile.parse(text)
    assert.strictEqual(parsed.records.length, 2)
    assert.strictEqual(parsed.badLines, 2)
    assert.isFalse(parsed.tornLine)
  })

  it("a last line without its newline is torn only if it is not a record", () => {
    const whole = ledgerFile.encode(started)
    const torn = ledgerFile.parse(whole + ledgerFile.encode(intent).slice(0, 20))
    assert.isTrue(torn.tornLine)
    assert.strictEqual(torn.badLines, 0)
    assert.strictEqual(torn.records.length, 1)
    const unterminated = ledgerFile.parse(whole + ledgerFile.encode(intent).trimEnd())
    assert.isFalse(unterminated.tornLine)
    assert.strictEqual(unterminated.records.length, 2)
  })

  it("a record with a non-decimal start time is a bad line, not an identity", () => {
    const bad = JSON.stringify({ ...started, host: { ...host, startTime: "12x" } })
    assert.strictEqual(ledgerFile.parse(`${bad}\n`).badLines, 1)
  })

  it("notALedger refuses content without one record, without quoting it", () => {
    const secret = "API_KEY=hunter2\n"
    const why = ledgerFile.notALedger("/x/.env", secret, ledgerFile.parse(secret))
    assert.isDefined(why)
    assert.notInclude(why!, "hunter2")
    assert.isUndefined(ledgerFile.notALedger("/x/l", "", ledgerFile.parse("")))
    const mixed = `${ledgerFile.encode(started)}garbage\n`
    assert.isUndefined(ledgerFile.notALedger("/x/l", mixed, ledgerFile.parse(mixed)))
  })

  it("readLedgerFile reads an absent file as empty and a present one with its version", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-ledgerfile-"))
    try {
      const file = path.join(dir, "p.ledger")
      const absent = ledgerFile.readLedgerFile(file)
      assert.deepStrictEqual([absent.exists, absent.text], [false, ""])
      fs.writeFileSync(file, ledgerFile.encode(started), { mode: 0o600 })
      const present = ledgerFile.readLedgerFile(file)
      assert.isTrue(present.exists)
      assert.strictEqual(present.text, ledgerFile.encode(started))
      fs.appendFileSync(file, ledgerFile.encode(intent))
      assert.notStrictEqual(ledgerFile.readLedgerFile(file).version, present.version)
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })
})
