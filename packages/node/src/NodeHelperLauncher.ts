/**
 * The launcher of `forkFrom: "helper"` (the default): every tree is forked by the fork
 * helper (`internal/forkHelper.ts`), a small Node process started with the
 * pool, instead of by the host. fork(2) copies the page tables of the process
 * that forks, so a host holding GiBs of `Buffer` memory blocks its event loop
 * for tens of milliseconds per spawn; through the helper a spawn costs the
 * host one IPC message, whatever its size.
 *
 * The guarantees stay the host launcher's:
 * - the leader's identity is read by the helper before it could have reaped
 *   the child; the host signals the leader first (as the host launcher does)
 *   only while the leader's `/proc/<pid>/stat`, opened when the answer came
 *   and its identity checked, shows it running (the descriptor names the
 *   process, not the pid: once reaped it reads ESRCH);
 * - the helper hands the parent ends of the stdio pipes to the host without
 *   reading a byte;
 * - the fork witness compares the machine's fork count with the helper's own
 *   forks since the helper's mark before the spawn, so a tree whose leader
 *   forked nothing is still proven alone without a scan;
 * - a helper is dead once its channel has closed, every message of it read;
 *   its trees are left to the host: their leaders are watched in `/proc` and
 *   signalled after an identity check; the next spawn starts a new helper
 *   (after 5 deaths within a minute, or one that never loaded, the host
 *   forks itself);
 * - a helper silent for `answerWithinMs` (an unanswered spawn or ping) while
 *   not busy forking is stopped, its unanswered children are killed with
 *   their groups, and it is killed;
 * - a spawn whose answer is lost fails only once whatever carries the tree's
 *   cookie has been killed.
 *
 * @since 0.4.0
 */
import { ProcessLauncher } from "@shepherd/core/ProcessLauncher"
import type { ExitStatus, Launched, LauncherStatus } from "@shepherd/core/ProcessLauncher"
import type { Signal } from "@shepherd/core/Signal"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as PlatformError from "effect/PlatformError"
import type * as ChildProcess from "effect/process/ChildProcess"
import type * as Scope from "effect/Scope"
import * as CommandLine from "effect/process/CommandLine"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type * as net from "node:net"
import { fileURLToPath } from "node:url"
import * as NodeProcessLauncher from "./NodeProcessLauncher.ts"
import * as NodeProcessTable from "./NodeProcessTable.ts"
import type { KillRequest, Mark, Reply, SpawnRequest } from "./internal/forkHelper.ts"
import * as launchIo from "./internal/launchIo.ts"
import * as forkWitness from "./internal/forkWitness.ts"
import { helperPids } from "./internal/helperPids.ts"
import * as procfs from "./internal/procfs.ts"

// Next to this module: `.ts` when run from the sources, `.js` once built (see NodeLifeline).
const helperPath = fileURLToPath(
  new URL(`./internal/forkHelper${import.meta.url.endsWith(".ts") ? ".ts" : ".js"}`, import.meta.url)
)

const defaultAnswerWithinMs = 10_000
/** How long a helper may take to load before it is taken for stuck (it forks nothing until then). */
const startWithinMs = 10_000

/** The `--conditions` (`-C`) options among `args`, each with its value. */
const conditionsIn = (args: ReadonlyArray<string>): Array<string> => {
  const kept: Array<string> = []
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!
    if (/^(--conditions|-C)=?\S/.test(arg) && arg !== "--conditions" && arg !== "-C") kept.push(arg)
    else if ((arg === "--conditions" || arg === "-C") && i + 1 < args.length) kept.push(arg, args[++i]!)
  }
  return kept
}

/**
 * The host's environment, with only the export conditions of its NODE_OPTIONS and its command line
 * in NODE_OPTIONS: the helper resolves its imports as the host does, and takes none of its other
 * flags (an inspector port, a heap size).
 */
const helperEnv = (): NodeJS.ProcessEnv => {
  const env = { ...process.env }
  const kept = [...conditionsIn((env.NODE_OPTIONS ?? "").split(/\s+/)), ...conditionsIn(process.execArgv)]
  if (kept.length > 0) env.NODE_OPTIONS = kept.join(" ")
  else delete env.NODE_OPTIONS
  return env
}

/** More changes than this to the last environment sent whole: the whole is sent again. */
const maxEnvChanges = 16
const maxDeaths = 5
const deathWindowMs = 60_000
const watchPollMs = 20
/** How long a helper that was blocked in a spawn has to answer once the fork is over. */
const forkEndedWithinMs = 5_000
/** How long after its SIGKILL a leader's exit is awaited from the helper before /proc is asked. */
const stuckAfterMs = 200

interface Entry {
  readonly id: number
  readonly watch: launchIo.ExitWatch
  readonly pipes: { stdin: net.Socket | null; stdout: net.Socket | null; stderr: net.Socket | null }
  pid: number | undefined
  startTime: string
  /**
   * The leader's `/proc/<pid>/stat`, opened when the helper answered and the identity checked: it
   * names that process, not its pid (once the process is reaped it reads ESRCH, whoever has the pid
   * since), so a signal needs no stat by path, and a pid handed out again, even within the leader's
   * clock tick, cannot pass for it. Closed once its exit is recorded.
   */
  statFd: number | undefined
  /** Resumes the launch waiting for the helper's answer (cleared once answered). */
  answer: ((reply: Extract<Reply, { t: "spawned" | "failed" }> | string) => void) | undefined
}

interface Helper {
  readonly child: NodeChildProcess.ChildProcess
  readonly entries: Map<number, Entry>
  /** The helper's forks, as of its latest message. */
  forksSeen: number
  dead: boolean
  /** It said it is loaded: a helper that dies before has forked nothing. */
  ready: boolean
  readonly startedAt: number
  /** When the host last read a message of it (Date.now() millis). */
  lastHeard: number
  /** When the unanswered ping was sent. */
  pingAt: number | undefined
  heartbeat: ReturnType<typeof setInterval> | undefined
  /** False once a write failed: nothing more is sent to it. */
  writable: boolean
  /** When it was last seen blocked in a spawn (see `forking`). */
  forkingSeen: number | undefined
  /** The environment last sent to it whole (see `envFor`). */
  envBase: { readonly id: number; readonly env: Readonly<Record<string, string>> } | undefined
}

/** The answer to a spawn sent to a helper that died before it was loaded: nothing was forked. */
const notStarted = "not started"

/**
 * A launcher that forks through a fork helper, falling back to the host's own
 * launcher for a spawn the helper cannot take. The helper is released with
 * the scope.
 *
 * @since 0.4.0
 * @category constructors
 */
export const make = (options?: {
  /** Longest wait for the helper's answer to a spawn (default 10 s). */
  readonly answerWithinMs?: number | undefined
}): Effect.Effect<ProcessLauncher["Service"], never, Scope.Scope> =>
  Effect.gen(function*() {
    const answerWithinMs = options?.answerWithinMs ?? defaultAnswerWithinMs
    const host = NodeProcessLauncher.make()
    const bootId = procfs.readBootId()
    let helper: Helper | undefined
    let released = false
    /** The helper could not be started: the host forks. */
    let broken = false
    let nextId = 0
    let nextEnvId = 0
    /** When helpers died, within the last `deathWindowMs`. */
    const deaths: Array<number> = []
    let deathCount = 0
    let lastDeath: string | undefined
    const recentDeaths = (): number => {
      const now = Date.now()
      while (deaths.length > 0 && now - deaths[0]! > deathWindowMs) deaths.shift()
      return deaths.length
    }
    /**
     * Leaders whose exit the host must see in /proc, not from the helper: the helper died (they are
     * orphans), or the host SIGKILLed them (the helper may be stuck, and its word never come).
     */
    const watched = new Map<Entry, number>()
    let watchTimer: ReturnType<typeof setInterval> | undefined

    /** Watches from `after` (Date.now() millis) on: a live helper's word usually comes first, for free. */
    const watchExit = (entry: Entry, after: number) => {
      if (released || entry.watch.status !== undefined) return
      watched.set(entry, after)
      if (watchTimer !== undefined) return
      watchTimer = setInterval(() => {
        const now = Date.now()
        for (const [entry, after] of watched) {
          if (entry.watch.status === undefined && now < after) continue
          const status = entry.watch.status === undefined ? exitSeen(entry) : entry.watch.status
          if (status === undefined) continue
          watched.delete(entry)
          exited(entry, status)
        }
        if (watched.size === 0) {
          clearInterval(watchTimer)
          watchTimer = undefined
        }
      }, watchPollMs)
      watchTimer.unref()
    }

    /**
     * Whether the entry's leader is alive (not a zombie) under its recorded identity, and a child of
     * `parent` when given; `undefined`: cannot tell.
     */
    const identified = (entry: Entry, parent?: number): boolean | undefined => {
      if (entry.pid === undefined) return false
      try {
        const stat = procfs.readStat(entry.pid)
        return stat !== undefined && stat.startTime === entry.startTime && !procfs.isDead(stat) &&
          (parent === undefined || stat.ppid === parent)
      } catch {
        // /proc unreadable (out of file descriptors): neither signalled nor given up
        return undefined
      }
    }

    /** Whether the process a kept stat descriptor names runs (not reaped, not dead); `undefined`: cannot tell. */
    const runs = (fd: number, pid: number): boolean | undefined => {
      try {
        const state = procfs.readOpenState(fd)
        return state !== undefined && !procfs.isDeadState(pid, state)
      } catch {
        return undefined
      }
    }

    /** Whether the leader is reaped (its kept stat descriptor reads ESRCH), before the helper says it exited. */
    const reaped = (entry: Entry): boolean => {
      if (entry.statFd === undefined) return false
      try {
        return procfs.readOpenState(entry.statFd) === undefined
      } catch {
        return false
      }
    }

    /**
     * Opens the just-answered leader's stat and checks its identity (start time, and parent while the
     * helper lives): the descriptor then names that process for good. `undefined` without one.
     */
    const openIdentity = (h: Helper, entry: Entry): number | undefined => {
      if (entry.pid === undefined || entry.startTime === "0") return undefined
      const fd = procfs.openStat(entry.pid)
      if (fd === undefined) return undefined
      let stat: procfs.Stat | undefined
      try {
        stat = procfs.readOpenStat(fd, entry.pid)
      } catch {
        stat = undefined
      }
      if (stat !== undefined && stat.startTime === entry.startTime && (h.dead || stat.ppid === h.child.pid)) return fd
      fs.closeSync(fd)
      return undefined
    }

    const closeIdentity = (entry: Entry) => {
      if (entry.statFd === undefined) return
      // At once, not in libuv's thread pool (which would save the host 5-10 µs per reaped leader): an
      // application that blocks the pool (slow DNS, a FIFO with no writer) would pile them up.
      fs.closeSync(entry.statFd)
      entry.statFd = undefined
    }

    /** Records the leader's exit (once), and lets go of its stat descriptor. */
    const exited = (entry: Entry, status: ExitStatus) => {
      launchIo.recordExit(entry.watch, status)
      closeIdentity(entry)
    }

    const table = NodeProcessTable.make()
    /**
     * SIGKILLs (identity-checked) every process carrying `cookie` until two looks in a row find none
     * (one may be inside its exec, its environment not readable yet).
     */
    const sweep = (cookie: string) =>
      Effect.gen(function*() {
        let quiet = 0
        for (let round = 0; quiet < 2 && round < 100; round++) {
          const found = yield* Effect.result(table.carriers(cookie))
          const ours = found._tag === "Success" ? found.success.filter((c) => c.shepherdId === cookie) : undefined
          if (ours?.length === 0) quiet++
          else quiet = 0
          for (const c of ours ?? []) yield* table.signal(c.identity, "SIGKILL")
          yield* Effect.sleep(20)
        }
      })

    /**
     * The leader's exit as /proc shows it, `undefined` while it runs (or cannot be told): a zombie's
     * status is its `exit_code` (field 52 of its stat); a process gone or replaced exited unseen.
     */
    const exitSeen = (entry: Entry): ExitStatus | undefined => {
      let text: string | undefined
      try {
        text = entry.statFd !== undefined
          ? procfs.readOpenStatText(entry.statFd)
          : fs.readFileSync(`/proc/${entry.pid}/stat`, "latin1")
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code
        return code === "ENOENT" || code === "ESRCH" ? { code: null, signal: null } : undefined
      }
      // Reaped: its descriptor reads ESRCH, whoever has its pid now.
      if (text === undefined) return { code: null, signal: null }
      const stat = procfs.parseStat(entry.pid!, text)
      if (stat === undefined) return undefined
      // Without its start time (unreadable at the spawn) the pid alone proves nothing: wait for it to go.
      if (entry.startTime === "0") return undefined
      if (stat.startTime !== entry.startTime) return { code: null, signal: null }
      // A zombie whose threads cannot be counted (out of descriptors) may have live threads: not yet.
      if (stat.state === "Z" && procfs.threadCount(entry.pid!) === undefined) return undefined
      if (!procfs.isDead(stat)) return undefined
      const wait = Number(text.slice(text.lastIndexOf(")") + 2).trimEnd().split(" ")[49])
      if (!Number.isInteger(wait)) return { code: null, signal: null }
      const termsig = wait & 0x7f
      if (termsig === 0) return { code: (wait >> 8) & 0xff, signal: null }
      const name = Object.entries(os.constants.signals).find(([, n]) => n === termsig)?.[0]
      return { code: null, signal: name ?? null }
    }

    /** The process `pid` runs (not gone, not a zombie); `true` when that cannot be told. */
    const alive = (pid: number): boolean => {
      try {
        const stat = procfs.readStat(pid)
        return stat !== undefined && !procfs.isDead(stat)
      } catch {
        return true
      }
    }

    const forget = (h: Helper, entry: Entry) => {
      h.entries.delete(entry.id)
      // The channel keeps the host alive only while a tree of the helper lives, as a child would.
      if (h.entries.size === 0) h.child.channel?.unref()
    }

    const send = (h: Helper, message: SpawnRequest | KillRequest | { readonly t: "ping" }): boolean => {
      if (h.dead || !h.writable || !h.child.connected) return false
      try {
        h.child.send(message)
        return true
      } catch {
        return false
      }
    }

    const onReply = (h: Helper, reply: Reply, handle: unknown) => {
      h.lastHeard = Date.now()
      if (reply.t !== "pipe") h.forksSeen = reply.forks
      if (reply.t === "ready") {
        h.ready = true
        return
      }
      if (reply.t === "pong") {
        h.pingAt = undefined
        return
      }
      if (reply.t === "exits") {
        for (const exit of reply.exits) {
          const entry = h.entries.get(exit.id)
          if (entry === undefined) continue
          forget(h, entry)
          exited(entry, { code: exit.code, signal: exit.signal })
        }
        return
      }
      const entry = h.entries.get(reply.id)
      if (entry === undefined) {
        ;(handle as net.Socket | undefined)?.destroy()
        return
      }
      switch (reply.t) {
        case "pipe": {
          // Without a handle (a pipe the helper no longer had) the stream is absent, never undefined.
          const socket = (handle as net.Socket | undefined) ?? null
          if (reply.fd === 0) entry.pipes.stdin = socket
          else if (reply.fd === 1) entry.pipes.stdout = socket
          else entry.pipes.stderr = socket
          return
        }
        case "spawned": {
          entry.pid = reply.pid
          entry.startTime = reply.startTime
          entry.statFd = openIdentity(h, entry)
          entry.answer?.(reply)
          return
        }
        case "failed": {
          forget(h, entry)
          entry.answer?.(reply)
        }
      }
    }

    /** SIGKILLs the children of the stopped helper `h` that are not trees it answered for. */
    const killUnanswered = (h: Helper) => {
      const helperPid = h.child.pid!
      // SIGSTOP takes effect when the helper next runs: its children's pids are held only once it
      // shows stopped (T), and only while it stays so (a child of it may SIGCONT it).
      const stopped = () => {
        try {
          return procfs.readStat(helperPid)?.state === "T"
        } catch {
          return false
        }
      }
      const pause = new Int32Array(new SharedArrayBuffer(4))
      for (let i = 0; i < 100 && !stopped(); i++) Atomics.wait(pause, 0, 0, 1)
      if (!stopped()) return // the cookie sweep of each lost spawn still runs
      const answered = new Set([...h.entries.values()].map((e) => e.pid))
      const targets: Array<number> = []
      for (const pid of procfs.listPids()) {
        let stat: procfs.Stat | undefined
        try {
          stat = procfs.readStat(pid)
        } catch {
          continue
        }
        if (stat === undefined || stat.ppid !== helperPid || answered.has(pid)) continue
        targets.push(...(stat.pgid === pid ? [-pid, pid] : [pid]))
      }
      if (!stopped()) return
      for (const target of targets) {
        try {
          process.kill(target, "SIGKILL")
        } catch {
          // gone
        }
      }
    }

    /**
     * Whether `h` has been silent for `answerWithinMs` since `since`, looked at once the event loop
     * has read what came meanwhile (after a pause of the host's own, the timer fires before the
     * messages that did arrive are read). A helper seen forking within `forkEndedWithinMs` is not
     * silent yet: its child has just exec'd, and the answer is on its way once the helper runs again
     * (on a loaded machine that can take a while).
     */
    const silent = (h: Helper, since: number, then: (silent: boolean) => void) =>
      setImmediate(() => {
        if (h.dead || quietFor(h, since) > 0) return then(false)
        if (forking(h)) {
          h.forkingSeen = Date.now()
          return then(false)
        }
        then(h.forkingSeen === undefined || Date.now() - h.forkingSeen > forkEndedWithinMs)
      })
    /**
     * Whether `h` is busy, not stuck: blocked in a spawn whose child has not exec'd yet (still its
     * copy, searching a slow PATH). A host forking itself would wait the same.
     */
    const forking = (h: Helper): boolean => {
      const pid = h.child.pid!
      let own: string
      try {
        own = fs.readFileSync(`/proc/${pid}/cmdline`, "latin1")
      } catch {
        return false // gone
      }
      for (const child of procfs.listPids()) {
        let stat: procfs.Stat | undefined
        try {
          stat = procfs.readStat(child)
        } catch {
          continue // not a child of ours that can be told
        }
        if (stat?.ppid !== pid || procfs.isDead(stat)) continue
        try {
          // Its copy of the helper, or nothing to read yet (an image being set up).
          const line = fs.readFileSync(`/proc/${child}/cmdline`, "latin1")
          if (line === own || line === "") return true
        } catch (error) {
          // A child of the helper whose command line cannot be read (inside an execve): it may be
          // the fork still under way, so the helper is not taken for stuck on that account.
          const code = (error as NodeJS.ErrnoException).code
          if (code !== "ENOENT" && code !== "ESRCH") return true
        }
      }
      return false
    }
    /** How long until `h` counts as silent since `since` (≤ 0: it does). */
    const quietFor = (h: Helper, since: number): number =>
      h.ready
        ? answerWithinMs - (Date.now() - Math.max(h.lastHeard, since))
        // A helper still loading (slow on a loaded machine) has forked nothing: it gets the start budget.
        : Math.max(answerWithinMs, startWithinMs) - (Date.now() - h.startedAt)

    const onDeath = (h: Helper, why: string, killed = false) => {
      if (h.dead) return
      h.dead = true
      if (helper === h) helper = undefined
      if (h.heartbeat !== undefined) clearInterval(h.heartbeat)
      if (h.child.pid !== undefined) helperPids.delete(h.child.pid)
      // A helper that could not even load (a bundle without its file, a broken install) never will:
      // the host forks itself from now on, and what was sent to it is forked by the host.
      if (!h.ready && !killed) broken = true
      // A helper still running (stuck, or its channel broken) is stopped first: its children keep
      // their pids while it cannot reap them, so the forks it never answered for (a child still
      // searching PATH, a leader that dropped its environment) are killed by pid and group. Then it
      // is killed (our unreaped child).
      if (h.child.pid !== undefined && h.child.exitCode === null && h.child.signalCode === null) {
        try {
          process.kill(h.child.pid, "SIGSTOP")
          killUnanswered(h)
        } catch {
          // it is gone already
        }
      }
      h.child.kill("SIGKILL")
      deaths.push(Date.now())
      deathCount++
      lastDeath = `fork helper ${h.child.pid ?? "(no pid)"} ${killed ? why : "exited"}`
      for (const entry of h.entries.values()) {
        if (!h.ready && !killed) {
          // It left without a word, every message of it read: it never loaded, and forked nothing.
          entry.answer?.(notStarted)
        } else if (entry.pid === undefined) {
          // Pipes handed over before the death belong to a tree nobody will own: they must not keep
          // the host alive.
          for (const pipe of Object.values(entry.pipes)) pipe?.destroy()
          entry.answer?.(`the fork helper ${why}`)
        } else {
          watchExit(entry, 0)
        }
      }
      h.entries.clear()
    }

    const start = (): Helper | undefined => {
      let child: NodeChildProcess.ChildProcess
      try {
        child = NodeChildProcess.fork(helperPath, [], {
          stdio: ["inherit", "inherit", "inherit", "ipc"],
          // Its own session: a terminal's signals to the host's group do not reach it.
          detached: true,
          // The host's own flags (an inspector port, a heap size) are not the helper's, neither from
          // its command line nor from NODE_OPTIONS (only export conditions, to resolve as the host).
          execArgv: [],
          env: helperEnv(),
          serialization: "json"
        })
      } catch {
        return undefined
      }
      if (child.pid === undefined) return undefined
      const h: Helper = {
        child,
        entries: new Map(),
        forksSeen: 0,
        dead: false,
        ready: false,
        startedAt: Date.now(),
        lastHeard: Date.now(),
        pingAt: undefined,
        heartbeat: undefined,
        writable: true,
        forkingSeen: undefined,
        envBase: undefined
      }
      helperPids.add(child.pid)
      // While it has trees, a helper that stops answering pings (stopped, wedged) is killed: its
      // leaders' exits are then read from /proc, and the slots they hold given back.
      h.heartbeat = setInterval(() => {
        if (!h.ready || h.entries.size === 0 || h.dead) return
        if (h.pingAt === undefined) {
          h.pingAt = Date.now()
          send(h, { t: "ping" })
        } else {
          silent(h, h.pingAt, (quiet) => {
            if (quiet) onDeath(h, `did not answer a ping within ${answerWithinMs} ms (killed)`, true)
          })
        }
      }, Math.max(50, Math.min(1_000, answerWithinMs / 2)))
      h.heartbeat.unref()
      child.on("message", (reply: Reply, handle: unknown) => onReply(h, reply, handle))
      // "disconnect" comes once every message has been read; "exit" may come before.
      child.on("disconnect", () => onDeath(h, "exited before it answered"))
      // A failed write (EPIPE: it just died) decides nothing: messages it sent before may still wait
      // in the channel. Nothing more is sent; "disconnect", after the last of them is read, decides.
      child.on("error", () => {
        h.writable = false
      })
      child.unref()
      child.channel?.unref()
      return h
    }

    const current = (): Helper | undefined => {
      if (released || broken) return undefined
      if (helper !== undefined && !helper.dead) return helper
      if (recentDeaths() >= maxDeaths) return undefined
      helper = start()
      return helper
    }

    /**
     * The fork witness of a helper's tree (see `forkWitness.alone`): the machine forked nothing since
     * the helper's mark but the helper's own forks. Every fork the host knows of happened before it
     * reads the machine's count now, and after the mark: a fork not reported yet, the host's own or
     * anyone else's makes the counts differ ("not proven"), never the other way round.
     */
    const alone = (h: Helper, mark: Mark | null) => (): boolean => {
      if (mark === null) return false
      const now = forkWitness.machineForks()
      return now !== undefined && now - mark.forks === h.forksSeen - mark.own
    }

    /**
     * The environment of a spawn request: the changes to the one last sent whole when they are few
     * (a pool's spawns usually differ in their `SHEPHERD_ID` only), else the whole, which becomes the
     * base. Serializing and parsing a hundred variables per spawn was a fifth of the host's CPU.
     */
    const envFor = (h: Helper, env: Readonly<Record<string, string>>): SpawnRequest["env"] => {
      const last = h.envBase
      if (last !== undefined) {
        const set: Record<string, string> = Object.create(null)
        const unset: Array<string> = []
        let changes = 0
        for (const name of Object.keys(env)) {
          if (!Object.hasOwn(last.env, name) || last.env[name] !== env[name]) {
            set[name] = env[name]!
            changes++
          }
        }
        for (const name of Object.keys(last.env)) {
          if (!Object.hasOwn(env, name)) {
            unset.push(name)
            changes++
          }
        }
        if (changes <= maxEnvChanges) return { base: last.id, set, unset }
      }
      h.envBase = { id: nextEnvId++, env }
      return { whole: env, id: h.envBase.id }
    }

    const signal = (h: Helper, entry: Entry) => (sig: Signal): boolean => {
      if (entry.watch.status !== undefined || entry.pid === undefined) return false
      // Without a start time (unreadable at the spawn) only the helper's unreaped handle names it.
      if (entry.startTime === "0") return send(h, { t: "kill", id: entry.id, signal: sig })
      // Directly, in the pool's order (a leader before its members): a round trip through the helper
      // would let the members hear first. The helper reaps the leader before the host hears of its
      // exit: its kept stat descriptor tells whether it still runs (see `Entry.statFd`). Without one
      // (out of descriptors), pid and start time (10 ms ticks) are not enough: while the helper lives,
      // the process must also be its child.
      let ok = entry.statFd !== undefined
        ? runs(entry.statFd, entry.pid)
        : identified(entry, h.dead ? undefined : h.child.pid)
      // Not the helper's child any more: the helper may have died just now (its death not read
      // yet), and its orphan is then checked by identity alone.
      if (ok === false && entry.statFd === undefined && !h.dead && !alive(h.child.pid!)) ok = identified(entry)
      if (ok !== true) return false
      try {
        process.kill(entry.pid, sig)
      } catch {
        return false
      }
      forkWitness.signalled()
      if (sig === "SIGKILL") watchExit(entry, Date.now() + stuckAfterMs)
      return true
    }

    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        released = true
        if (watchTimer !== undefined) clearInterval(watchTimer)
        for (const entry of [...watched.keys(), ...(helper?.entries.values() ?? [])]) closeIdentity(entry)
        if (helper !== undefined && helper.child.connected) helper.child.disconnect()
      })
    )

    const launch = Effect.fnUntraced(function*(
      command: ChildProcess.StandardCommand,
      env: Readonly<Record<string, string>>
    ) {
      const stdio = launchIo.stdioOf(command.options)
      const h = stdio.every((s) => s === "pipe" || s === "ignore" || s === "inherit") ? current() : undefined
      if (h === undefined) return yield* host.launch(command, env)
      const display = CommandLine.display([command.command, ...command.args])
      const checked = yield* launchIo.checkCommand(command)
      // The host's directory, absolute: the helper's own is the host's at the helper's start (a
      // relative command or cwd would resolve against a directory the host has left). A host whose
      // directory was removed forks itself, as Node can.
      let cwd: string
      try {
        cwd = checked === undefined ? process.cwd() : path.resolve(checked)
      } catch {
        return yield* host.launch(command, env)
      }
      const entry: Entry = {
        id: nextId++,
        watch: launchIo.makeExitWatch(),
        pipes: { stdin: null, stdout: null, stderr: null },
        pid: undefined,
        startTime: "0",
        statFd: undefined,
        answer: undefined
      }
      h.entries.set(entry.id, entry)
      if (h.entries.size === 1) h.child.channel?.ref()
      const sent = send(h, {
        t: "spawn",
        id: entry.id,
        file: command.command,
        args: command.args.map(NodeProcessLauncher.unwrap),
        env: envFor(h, env),
        cwd,
        stdio,
        shell: command.options.shell
      })
      if (!sent) {
        h.envBase = undefined // not received: the next request sends its environment whole
        forget(h, entry)
        return yield* host.launch(command, env)
      }
      // Not interruptible, as a fork in the host is not: the answer is waited for, at most
      // `answerWithinMs`; a helper that does not answer by then is killed (it is stuck, and must not
      // fork this tree later).
      const sentAt = Date.now()
      const reply = yield* Effect.callback<Extract<Reply, { t: "spawned" | "failed" }> | string>((resume) => {
        let timer: ReturnType<typeof setTimeout> | undefined
        const check = (wait: number) => {
          timer = setTimeout(() =>
            silent(h, sentAt, (quiet) => {
              if (entry.answer === undefined) return
              if (quiet) onDeath(h, `did not answer within ${answerWithinMs} ms (killed)`, true)
              // Heard from meanwhile (a pipe of this spawn, another answer): it is alive, wait on.
              else check(Math.max(100, quietFor(h, sentAt)))
            }), wait)
        }
        check(answerWithinMs)
        entry.answer = (r) => {
          clearTimeout(timer)
          entry.answer = undefined
          resume(Effect.succeed(r))
        }
      })
      if (reply === notStarted) {
        forget(h, entry)
        return yield* host.launch(command, env)
      }
      if (typeof reply === "string") {
        forget(h, entry)
        // The helper may have forked the tree before it died: whatever carries its cookie is killed
        // before the spawn fails (and its slot is given back).
        if (env.SHEPHERD_ID !== undefined) yield* sweep(env.SHEPHERD_ID)
        return yield* Effect.fail(PlatformError.systemError({
          _tag: "Unknown",
          module: "ChildProcess",
          method: "spawn",
          pathOrDescriptor: command.command,
          description: `${display}: ${reply}`
        }))
      }
      if (reply.t === "failed") {
        return yield* Effect.fail(launchIo.spawnError(command, reply, `${display}: ${reply.code ?? reply.message}`))
      }
      const pid = reply.pid
      const launched: Launched = {
        pid,
        pgid: pid,
        identity: { pid, startTime: reply.startTime, bootId },
        exit: Deferred.await(entry.watch.exited),
        exitStatus: (): ExitStatus | undefined => entry.watch.status,
        onExit: launchIo.onExit(entry.watch),
        alone: alone(h, reply.mark),
        reaped: () => reaped(entry),
        signal: signal(h, entry),
        io: yield* launchIo.io(command, entry.pipes)
      }
      return launched
    }, Effect.uninterruptible)

    const status = Effect.sync((): LauncherStatus => {
      const h = helper !== undefined && !helper.dead ? helper : undefined
      const fallback = broken
        ? "the fork helper could not load: the host forks"
        : h === undefined && recentDeaths() >= maxDeaths
        ? `${maxDeaths} fork helpers died within ${deathWindowMs / 1000} s: the host forks for now`
        : undefined
      return {
        forkFrom: "helper",
        ...(h?.child.pid === undefined ? {} : { pid: h.child.pid }),
        alive: h?.ready === true,
        deaths: deathCount,
        ...(lastDeath === undefined ? {} : { lastError: lastDeath }),
        ...(fallback === undefined ? {} : { fallback })
      }
    })

    return ProcessLauncher.of({ inheritedEnv: host.inheritedEnv, launch, status })
  })

/**
 * @since 0.4.0
 * @category layers
 */
export const layer: Layer.Layer<ProcessLauncher> = Layer.effect(ProcessLauncher, make())
