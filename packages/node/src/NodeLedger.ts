/**
 * The file ledger: one JSON line per event, appended with a single
 * `write(2)` (no rewrite of the file per event), compacted atomically
 * (temporary file + rename) when it grows, owned by one host at a time
 * through a lock file that carries the owner's identity.
 *
 * Durability: an appended line is in the kernel once `write` returns, so it
 * survives the host being SIGKILLed or OOM-killed; it is not fsynced per
 * event (a machine crash kills the children too, and the ledger of the
 * previous boot is then ignored by identity).
 *
 * @since 0.1.0
 */
import { Ledger, LedgerError, LedgerLine, LedgerLocked, State } from "@shepherd/core/Ledger"
import type { Entry, LedgerRecord, OpenReport } from "@shepherd/core/Ledger"
import * as ProcessIdentity from "@shepherd/core/ProcessIdentity"
import * as Metrics from "@shepherd/core/Metrics"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { identify } from "./NodeProcessTable.ts"
import * as procfs from "./internal/procfs.ts"

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
}

const decodeLine = Schema.decodeUnknownSync(LedgerLine)

/** Parses a ledger file's text. A last line without its newline is torn (the host died mid-write). */
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

const readLock = (lockFile: string): ProcessIdentity.ProcessIdentity | undefined => {
  try {
    const owner = JSON.parse(fs.readFileSync(lockFile, "utf8")) as ProcessIdentity.ProcessIdentity
    return typeof owner.pid === "number" ? owner : undefined
  } catch {
    return undefined
  }
}

const hasProc = fs.existsSync("/proc/self/stat")

const ownerAlive = (owner: ProcessIdentity.ProcessIdentity, bootId: string): boolean => {
  if (!hasProc) {
    // No start times to compare: a live pid is taken for the owner (erring towards LedgerLocked).
    try {
      process.kill(owner.pid, 0)
      return true
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === "EPERM"
    }
  }
  if (owner.bootId !== bootId) return false
  try {
    const stat = procfs.readStat(owner.pid)
    return stat !== undefined && stat.startTime === owner.startTime && !procfs.isDead(stat)
  } catch {
    return true // cannot tell: assume the owner lives (LedgerLocked) rather than share the ledger
  }
}

const writeAtomically = (file: string, text: string) => {
  const tmp = `${file}.tmp-${process.pid}`
  const fd = fs.openSync(tmp, "w", 0o600)
  try {
    fs.writeSync(fd, text)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  fs.renameSync(tmp, file)
  try {
    const dir = fs.openSync(path.dirname(file), "r")
    fs.fsyncSync(dir)
    fs.closeSync(dir)
  } catch {
    // directory fsync is best effort (not supported everywhere)
  }
}

const encode = (record: LedgerRecord) => `${JSON.stringify(record)}\n`

/**
 * Opens (and locks) a file ledger for the lifetime of the current scope.
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
          : new LedgerError({ path: options.path, reason: String(error) })
    }),
    (handle) => Effect.sync(() => handle.close())
  ).pipe(Effect.map((handle) => handle.service))

const open = (options: Options) => {
  const file = path.resolve(options.path)
  const dir = path.dirname(file)
  const lockFile = `${file}.lock`
  const compactEvery = options.compactEvery ?? 1000
  const fail = (reason: string) => new LedgerError({ path: file, reason })
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
  } catch (error) {
    throw fail(`cannot create directory ${dir}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`)
  }
  try {
    fs.accessSync(dir, fs.constants.W_OK)
  } catch {
    throw fail(`directory ${dir} is not writable`)
  }
  const host = identify(process.pid) ?? { pid: process.pid, startTime: "0", bootId: "unknown" }
  const bootId = host.bootId

  // The lock. It appears complete or not at all (written aside, then hard-linked into place, which
  // fails if a lock exists), so nobody ever reads a half-written one. A lock whose owner is gone is
  // moved aside by exactly one taker (rename), checked to be the lock that was judged, and
  // replaced the same way; whoever loses a race gets LedgerLocked.
  let tookOverFrom: ProcessIdentity.ProcessIdentity | undefined
  const locked = (owner: ProcessIdentity.ProcessIdentity | undefined) =>
    new LedgerLocked({ path: file, ownerPid: owner?.pid ?? -1, owner: owner ?? host })
  const createLock = (): boolean => {
    const tmp = `${lockFile}.${process.pid}.tmp`
    fs.writeFileSync(tmp, JSON.stringify(host), { mode: 0o600 })
    try {
      fs.linkSync(tmp, lockFile)
      return true
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "EEXIST") return false
      throw fail(`cannot create lock ${lockFile}: ${String(error)}`)
    } finally {
      fs.rmSync(tmp, { force: true })
    }
  }
  if (!createLock()) {
    const owner = readLock(lockFile)
    if (owner === undefined) {
      // Unreadable: trust it unless it is old (left by a crash of an older version mid-write).
      let ageMs = 0
      try {
        ageMs = Date.now() - fs.statSync(lockFile).mtimeMs
      } catch {
        ageMs = Number.POSITIVE_INFINITY
      }
      if (ageMs < 10_000) throw locked(undefined)
    } else if (ownerAlive(owner, bootId)) {
      throw locked(owner)
    }
    const aside = `${lockFile}.stale-${process.pid}`
    try {
      fs.renameSync(lockFile, aside)
    } catch {
      throw locked(readLock(lockFile)) // another host took it over first
    }
    const moved = readLock(aside)
    if (owner !== undefined && (moved === undefined || !ProcessIdentity.same(moved, owner))) {
      // What we moved is not the lock we judged: someone took over meanwhile. Put it back.
      try {
        fs.linkSync(aside, lockFile)
      } catch {
        // a third host holds the lock now
      }
      fs.rmSync(aside, { force: true })
      throw locked(moved)
    }
    fs.rmSync(aside, { force: true })
    if (!createLock()) throw locked(readLock(lockFile))
    tookOverFrom = owner
  }

  // Replay.
  let text = ""
  try {
    text = fs.readFileSync(file, "utf8")
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw fail(`cannot read: ${String(error)}`)
  }
  const parsed = parse(text)
  const state = new State()
  for (const record of parsed.records) state.apply(record)
  let quarantined: string | undefined
  if (parsed.badLines > 0) {
    // Never silently dropped: the unparsable file is kept aside; what could be parsed is kept.
    quarantined = `${file}.corrupt-${new Date().toISOString().replace(/[:.]/g, "-")}`
    fs.renameSync(file, quarantined)
  }
  const opened: OpenReport = {
    path: file,
    tornLine: parsed.tornLine,
    badLines: parsed.badLines,
    quarantined,
    tookOverFrom
  }

  let fd = -1
  let lastCompaction: number | undefined
  let batch: Array<string> = []
  const flushBatch = () => {
    if (batch.length === 0 || fd < 0) return
    try {
      fs.writeSync(fd, batch.join(""))
      batch = []
    } catch {
      // kept for the next write; the next append reports the failure, and a compaction writes
      // the state, which has every record
    }
  }
  const compactions = Metric.withAttributes(Metrics.ledgerCompactions, { ledger: file })
  const compactNow = () => {
    // The batch is superseded: the compacted file is written from the state, which has every record.
    batch = []
    writeAtomically(file, state.compacted().map(encode).join(""))
    if (fd >= 0) fs.closeSync(fd)
    fd = -1 // never write into a descriptor number the OS may have handed to someone else
    fd = fs.openSync(file, "a", 0o600)
    state.events = 0
    lastCompaction = Date.now()
  }
  // Start from a clean file: drops a torn line and anything already exited.
  compactNow()

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
            fs.writeSync(fd, batch.join("") + encode(record))
            batch = []
            state.apply(record)
          } else {
            state.apply(record)
            batch.push(encode(record))
            if (batch.length === 1) setImmediate(flushBatch)
          }
          if (state.events >= compactEvery && state.events > 2 * state.live.size) {
            compactNow()
            return true
          }
          return false
        },
        catch: (error) => fail(`append failed: ${String(error)}`)
      }).pipe(Effect.flatMap((compacted) => compacted ? Metric.update(compactions, 1) : Effect.void)),
    entries: Effect.sync(() => [...state.live.values()]),
    compact: Effect.try({ try: compactNow, catch: (error) => fail(`compaction failed: ${String(error)}`) }).pipe(
      Effect.andThen(Metric.update(compactions, 1))
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
    try {
      // Remove the lock only if it is still ours.
      const current = readLock(lockFile)
      if (current !== undefined && ProcessIdentity.same(current, host)) fs.unlinkSync(lockFile)
    } catch {
      // gone or unreadable: nothing to release
    }
  }
  return { service, close }
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
 * Reads a ledger without owning it. Fails with `LedgerError` when the file
 * exists but cannot be read.
 *
 * @since 0.1.0
 * @category constructors
 */
export const snapshot = (file: string): Effect.Effect<Snapshot, LedgerError> =>
  Effect.try({
    try: () => {
      const resolved = path.resolve(file)
      const bootId = procfs.readBootId()
      let text = ""
      let exists = true
      try {
        text = fs.readFileSync(resolved, "utf8")
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error
        exists = false
      }
      const identity = readLock(`${resolved}.lock`)
      const owner: Snapshot["owner"] = identity === undefined ? undefined : { identity, alive: ownerAlive(identity, bootId) }
      const parsed = parse(text)
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
        exists,
        owner,
        entries: [...state.live.values()],
        poolIds: [...poolIds],
        tornLine: parsed.tornLine,
        badLines: parsed.badLines,
        sizeBytes: Buffer.byteLength(text),
        quarantined
      }
    },
    catch: (error) => new LedgerError({ path: file, reason: `cannot read: ${String(error)}` })
  })

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
