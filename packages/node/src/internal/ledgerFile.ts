/**
 * The ledger's file format: one JSON record per line, parsed leniently (bad
 * lines counted, a torn last line told apart), and read through the file
 * safety checks.
 */
import { LedgerRecord } from "@shepherd/core/Ledger"
import * as Schema from "effect/Schema"
import * as fs from "node:fs"
import { O_RDONLY, openOwned } from "./safeFiles.ts"

// `JSON.parse` and then the record schema: three times faster than decoding `LedgerLine` (the
// same check) on a 100,000-line ledger.
const decodeRecord = Schema.decodeUnknownSync(LedgerRecord)
const decodeLine = (line: string): LedgerRecord => decodeRecord(JSON.parse(line))

/**
 * Parses a ledger file's text. A last line without its newline that is not a
 * record is torn (the host died mid-write).
 */
export const parse = (text: string): { records: Array<LedgerRecord>; badLines: number; tornLine: boolean } => {
  const records: Array<LedgerRecord> = []
  let badLines = 0
  let tornLine = false
  const lines = text.split("\n")
  const last = lines.pop() ?? ""
  for (const line of lines) {
    if (line.trim() === "") continue
    try {
      records.push(decodeLine(line))
    } catch {
      badLines++
    }
  }
  if (last.trim() !== "") {
    try {
      records.push(decodeLine(last))
    } catch {
      tornLine = true
    }
  }
  return { records, badLines, tornLine }
}

/** One ledger line. */
export const encode = (record: LedgerRecord) => `${JSON.stringify(record)}\n`

/** The ledger file as found: its text and how to tell later whether it changed. */
export interface Found {
  readonly text: string
  readonly exists: boolean
  readonly version: string
  /** The file's owner, when it exists. */
  readonly uid?: number | undefined
}

/** Reads the ledger file (see `openOwned` for `owner`); an absent file reads as empty. */
export const readLedgerFile = (file: string, owner: "ours" | "any" = "ours"): Found => {
  const fd = openOwned(file, O_RDONLY, owner)
  if (fd === undefined) return { text: "", exists: false, version: "none" }
  try {
    const stat = fs.fstatSync(fd)
    return {
      text: fs.readFileSync(fd, "utf8"),
      exists: true,
      version: `${stat.ino}:${stat.size}:${stat.mtimeMs}`,
      uid: stat.uid
    }
  } finally {
    fs.closeSync(fd)
  }
}

/**
 * A file with content but not one ledger record is not ours to rewrite: it is refused untouched.
 * The message describes the file without quoting it: a ledger path pointed at the wrong file (a
 * `.env`, a key) must not copy its first bytes into logs and terminals.
 */
export const notALedger = (file: string, text: string, parsed: ReturnType<typeof parse>) =>
  parsed.records.length === 0 && text.trim() !== ""
    ? `${file} is not a Shepherd ledger (none of its ${parsed.badLines + (parsed.tornLine ? 1 : 0)} line(s), ${
      Buffer.byteLength(text)
    } bytes, is a ledger record): it is left untouched; check the path`
    : undefined
