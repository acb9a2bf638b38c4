/**
 * The file ledger: one JSON line per event, appended whole (no rewrite of
 * the file per event; a write that does not complete is cut back to the last
 * whole line and fails), compacted atomically (temporary file + rename) when
 * it grows, owned by one host at a time through a lock file that carries the
 * owner's identity and executable.
 *
 * Trust: the ledger is used only in a directory of the host's user that no
 * other user can write, only as a regular file of that user that holds ledger
 * records (or is empty or absent); anything else is refused with a
 * `LedgerError` and left untouched. Nothing is opened through a symlink or
 * waited on as a FIFO; temporary and lock files are created exclusively under
 * unpredictable names.
 *
 * Durability: an appended line is in the kernel once `write` returns, so it
 * survives the host being SIGKILLed or OOM-killed; it is not fsynced per
 * event (a machine crash kills the children too, and the ledger of the
 * previous boot is then ignored by identity).
 *
 * @since 0.1.0
 */
import { Ledger, LedgerError, LedgerLocked, type LedgerRecord, State } from "@shepherd/core/Ledger"
import type { Entry, OpenReport } from "@shepherd/core/Ledger"
import type * as ProcessIdentity from "@shepherd/core/ProcessIdentity"
import * as Metrics from "@shepherd/core/Metrics"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Layer from "effect/Layer"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { identify } from "./NodeProcessTable.ts"
import * as ledgerFile from "./internal/ledgerFile.ts"
import * as ledgerLock from "./internal/ledgerLock.ts"
import * as ledgerSnapshot from "./internal/ledgerSnapshot.ts"
import {
  createExclusive,
  O_APPEND,
  O_WRONLY,
  openOwned,
  prepareDirectory,
  Refused,
  removeStrayTemporaries,
  writeAll,
  writeAtomically
} from "./internal/safeFiles.ts"

/**
 * The default ledger path for a pool name:
 * `$XDG_STATE_HOME/shepherd/<name>.ledger`, else `~/.local/state/shepherd/<name>.ledger`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const defaultPath = (name: string): string => {
  const state = process.env.XDG_STATE_HOME !== undefined && process.env.XDG_STATE_HOME !== ""
    ? process.env.XDG_STATE_HOME
    : path.join(os.homedir(), ".local", "state")
  return path.join(state, "shepherd", `${name}.ledger`)
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly path: string
  /** Compact when this many events were appended since the last compaction (default 1000). */
  readonly compactEvery?: number | undefined
  /**
   * `false`: never rewrite the file (no compaction, no quarantine; records are
   * only appended), for tools that record exits in a ledger they do not own
   * for long (`shepherd reap`). Default `true`.
   */
  readonly rewrite?: boolean | undefined
}

/**
 * Parses a ledger file's text. A last line without its newline that is not a
 * record is torn (the host died mid-write).
 *
 * @since 0.1.0
 * @category parsing
 */
export const parse: (text: string) => { records: Array<LedgerRecord>; badLines: number; tornLine: boolean } =
  ledgerFile.parse

/**
 * Opens (and locks) a file ledger for the lifetime of the current scope.
 *
 * **Details**
 *
 * The ledger's directory must be a real directory owned by this process's
 * user and writable by nobody else, and the ledger a regular file of that
 * user holding ledger records (or empty, or absent: it is created 0600).
 * Anything else fails with a `LedgerError` saying why and how to fix it, and
 * is left untouched. A ledger with unparsable lines (a torn last line
 * included) is kept aside as `<ledger>.corrupt-<time>` (reported in
 * `opened.quarantined` and logged) before the pool rewrites it.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options) =>
  Effect.acquireRelease(
    Effect.try({
      try: () => open(options),
      catch: (error) =>
        error instanceof LedgerLocked || error instanceof LedgerError
          ? error
          : new LedgerError({
            path: path.resolve(options.path),
            reason: error instanceof Refused ? error.message : String(error)
          })
    }),
    (handle) => Effect.sync(() => handle.close())
  ).pipe(
    Effect.tap((handle) => {
      const { quarantined, removed, takeover } = handle
      const where = `ledger ${handle.service.path}`
      return Effect.all([
        quarantined === undefined
          ? Effect.void
          : Effect.logWarning(`${where}: unparsable lines; the ledger as found is kept at ${quarantined}`),
        takeover === undefined ? Effect.void : Effect.logInfo(`${where}: lock taken over: ${takeover}`),
        removed.length === 0
          ? Effect.void
          : Effect.logInfo(`${where}: removed temporary files of dead hosts: ${removed.join(", ")}`)
      ], { discard: true })
    }),
    Effect.map((handle) => handle.service)
  )

const open = (options: Options) => {
  const file = path.resolve(options.path)
  const dir = path.dirname(file)
  const compactEvery = options.compactEvery ?? 1000
  const rewrite = options.rewrite ?? true
  const fail = (reason: string) => new LedgerError({ path: file, reason })
  prepareDirectory(dir)
  const host = identify(process.pid) ?? { pid: process.pid, startTime: "0", bootId: "unknown" }

  // Proven a ledger before anything is created next to it.
  let found = ledgerFile.readLedgerFile(file)
  let parsed = parse(found.text)
  const refusal = ledgerFile.notALedger(file, found.text, parsed)
  if (refusal !== undefined) throw fail(refusal)

  // The lock, taken once the file is proven a ledger (see `ledgerLock.acquire`).
  const { tookOverFrom, takeover, release: releaseLock } = ledgerLock.acquire(file, host, fail)

  let fd = -1
  let removed: Array<string> = []
  let quarantined: string | undefined
  let size = 0
  try {
    removed = removeStrayTemporaries(file)
    // Replay what is there now (a previous owner may have written since the first read).
    const now = ledgerFile.readLedgerFile(file)
    if (now.version !== found.version) {
      found = now
      parsed = parse(found.text)
      const changed = ledgerFile.notALedger(file, found.text, parsed)
      if (changed !== undefined) throw fail(changed)
    }
    if (rewrite && (parsed.badLines > 0 || parsed.tornLine)) {
      // Never dropped: the ledger as found is kept aside (a hard link, so it is never missing) before
      // it is rewritten from what could be parsed.
      quarantined = `${file}.corrupt-${new Date().toISOString().replace(/[:.]/g, "-")}-${
        crypto.randomBytes(2).toString("hex")
      }`
      fs.linkSync(file, quarantined)
    }
  } catch (error) {
    releaseLock()
    throw error
  }
  const state = new State()
  for (const record of parsed.records) state.apply(record)
  const opened: OpenReport = {
    path: file,
    tornLine: parsed.tornLine,
    badLines: parsed.badLines,
    quarantined,
    tookOverFrom
  }

  let lastCompaction: number | undefined
  let batch: Array<string> = []
  /**
   * Appends whole lines or nothing: a write that fails part-way (a full disk) is cut back to
   * the last whole line, so no later line is glued to a fragment.
   */
  let needsNewline = false
  const appendText = (text: string) => {
    const data = Buffer.from(needsNewline ? `\n${text}` : text)
    try {
      writeAll(fd, data)
    } catch (error) {
      try {
        fs.ftruncateSync(fd, size)
      } catch {
        // The fragment stays: the next line starts on a line of its own, and the length of what
        // is whole is read again after it.
        needsNewline = true
      }
      throw error
    }
    size = needsNewline ? fs.fstatSync(fd).size : size + data.length
    needsNewline = false
  }
  const flushBatch = () => {
    if (batch.length === 0 || fd < 0) return
    try {
      appendText(batch.join(""))
      batch = []
    } catch {
      // kept for the next write; the next append reports the failure, and a compaction writes
      // the state, which has every record
    }
  }
  const compactions = Metric.withAttributes(Metrics.ledgerCompactions, { ledger: file })
  const reopen = () => {
    if (fd >= 0) fs.closeSync(fd)
    fd = -1 // never write into a descriptor number the OS may have handed to someone else
    const opened = openOwned(file, O_WRONLY | O_APPEND)
    if (opened === undefined) throw new Error(`${file} disappeared`)
    fd = opened
    size = fs.fstatSync(fd).size
  }
  const compactNow = () => {
    if (!rewrite) return
    const text = state.compacted().map(ledgerFile.encode).join("")
    writeAtomically(file, text)
    // The batch is superseded: the compacted file was written from the state, which has every record.
    batch = []
    reopen()
    state.events = 0
    lastCompaction = Date.now()
  }
  try {
    if (rewrite) {
      // Start from a clean file: drops what was kept aside and anything already exited.
      compactNow()
    } else {
      // Records are appended to the file as found; a torn last line is ended first.
      if (!found.exists) createExclusive(file, Buffer.alloc(0))
      reopen()
      needsNewline = found.text.length > 0 && !found.text.endsWith("\n")
    }
  } catch (error) {
    if (fd >= 0) fs.closeSync(fd)
    releaseLock()
    throw error
  }

  const service = Ledger.of({
    path: file,
    host,
    opened,
    append: (record) =>
      Effect.try({
        try: () => {
          // An intent must be on disk before the spawn it announces (and is applied only once it
          // is); the other records only refine what recovery would find anyway, so they are
          // written in one batch per event-loop turn (always before the next intent).
          if (record._tag === "Intent" || record._tag === "HostStarted" || record._tag === "HostStopped") {
            appendText(batch.join("") + ledgerFile.encode(record))
            batch = []
            state.apply(record)
          } else {
            state.apply(record)
            batch.push(ledgerFile.encode(record))
            if (batch.length === 1) setImmediate(flushBatch)
          }
          if (rewrite && state.events >= compactEvery && state.events > 2 * state.live.size) {
            compactNow()
            return true
          }
          return false
        },
        catch: (error) => fail(`append failed: ${String(error)}`)
      }).pipe(Effect.flatMap((compacted) => compacted ? Metric.update(compactions, 1) : Effect.void)),
    entries: Effect.sync(() => [...state.live.values()]),
    compact: Effect.try({ try: compactNow, catch: (error) => fail(`compaction failed: ${String(error)}`) }).pipe(
      Effect.andThen(rewrite ? Metric.update(compactions, 1) : Effect.void)
    ),
    lastCompaction: Effect.sync(() => lastCompaction)
  })

  const close = () => {
    flushBatch()
    try {
      if (fd >= 0) fs.closeSync(fd)
    } catch {
      // already closed
    }
    fd = -1
    releaseLock()
  }
  return { service, close, quarantined, removed, takeover }
}

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<Ledger, LedgerError | LedgerLocked> =>
  Layer.effect(Ledger, make(options))

/**
 * A read-only look at a ledger file (of a running or a dead host): no lock is
 * taken and nothing is rewritten.
 *
 * @since 0.1.0
 * @category models
 */
export interface Snapshot {
  readonly path: string
  readonly exists: boolean
  /** The lock's owner, and whether that exact process is still alive. */
  readonly owner?: { readonly identity: ProcessIdentity.ProcessIdentity; readonly alive: boolean } | undefined
  readonly entries: ReadonlyArray<Entry>
  /** Every pool id the ledger mentions. */
  readonly poolIds: ReadonlyArray<string>
  readonly tornLine: boolean
  readonly badLines: number
  readonly sizeBytes: number
  /** Quarantined copies next to the ledger (`<ledger>.corrupt-*`). */
  readonly quarantined: ReadonlyArray<string>
}

/**
 * Reads a ledger without owning it, and without changing anything. Fails with
 * `LedgerError` when the file exists but cannot be read, is not a regular
 * file (a FIFO is never waited on), or holds no ledger record.
 *
 * @since 0.1.0
 * @category constructors
 */
export const snapshot: (file: string) => Effect.Effect<Snapshot, LedgerError> = ledgerSnapshot.snapshot

/**
 * Every ledger in a directory (default: the state directory of `defaultPath`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const list = (dir: string = path.dirname(defaultPath("x"))): ReadonlyArray<string> => {
  try {
    return fs.readdirSync(dir).filter((name) => name.endsWith(".ledger")).map((name) => path.join(dir, name))
  } catch {
    return []
  }
}
