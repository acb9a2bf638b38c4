/**
 * The read-only view of a ledger file (see `NodeLedger.snapshot`): no lock is
 * taken and nothing is rewritten.
 */
import { LedgerError, State } from "@shepherd/core/Ledger"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as path from "node:path"
import type { Snapshot } from "../NodeLedger.ts"
import { notALedger, parse, readLedgerFile } from "./ledgerFile.ts"
import { identityOf, ownerState, readLock } from "./ledgerLock.ts"
import * as procfs from "./procfs.ts"
import { euid, Refused } from "./safeFiles.ts"

export const snapshot = (file: string): Effect.Effect<Snapshot, LedgerError> =>
  Effect.try({
    try: () => {
      const resolved = path.resolve(file)
      const bootId = procfs.readBootId()
      // Read-only, and by anyone: the file must be a regular file (never a FIFO to block on) but
      // need not be ours.
      const found = readLedgerFile(resolved, "any")
      const parsed = parse(found.text)
      const refusal = notALedger(resolved, found.text, parsed)
      if (refusal !== undefined) throw new Refused(refusal)
      const lock = readLock(`${resolved}.lock`, "any")
      const owner: Snapshot["owner"] = lock._tag !== "Valid"
        ? undefined
        : { identity: identityOf(lock.owner), alive: ownerState(lock.owner, bootId, found.uid ?? euid) === "live" }
      const state = new State()
      const poolIds = new Set<string>()
      for (const record of parsed.records) {
        state.apply(record)
        if (record._tag === "HostStarted" || record._tag === "Intent") poolIds.add(record.poolId)
      }
      let quarantined: Array<string> = []
      try {
        const base = path.basename(resolved)
        quarantined = fs.readdirSync(path.dirname(resolved))
          .filter((name) => name.startsWith(`${base}.corrupt-`))
          .map((name) => path.join(path.dirname(resolved), name))
      } catch {
        quarantined = []
      }
      return {
        path: resolved,
        exists: found.exists,
        owner,
        entries: [...state.live.values()],
        poolIds: [...poolIds],
        tornLine: parsed.tornLine,
        badLines: parsed.badLines,
        sizeBytes: Buffer.byteLength(found.text),
        quarantined
      }
    },
    catch: (error) =>
      new LedgerError({
        path: path.resolve(file),
        reason: error instanceof Refused ? error.message : `cannot read: ${String(error)}`
      })
  })
