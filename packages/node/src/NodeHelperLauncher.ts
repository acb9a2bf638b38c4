/**
 * The launcher of `forkFrom: "helper"`: every tree is forked by the fork
 * helper (`internal/forkHelper.ts`), a small Node process started with the
 * pool, instead of by the host. fork(2) copies the page tables of the process
 * that forks, so a host holding GiBs of `Buffer` memory blocks its event loop
 * for tens of milliseconds per spawn; through the helper a spawn costs the
 * host one IPC message, whatever its size.
 *
 * The guarantees stay the host launcher's:
 * - the leader's identity is read by the helper before it could have reaped
 *   the child; the host signals the leader after checking that identity
 *   (pid and start time), as it does every other member, and in the same
 *   order as in the host (the leader first);
 * - the helper hands the parent ends of the stdio pipes to the host without
 *   reading a byte;
 * - the fork witness compares the machine's fork count with the helper's own
 *   forks since the helper's mark before the spawn, so a tree whose leader
 *   forked nothing is still proven alone without a scan;
 * - a helper that dies leaves its trees to the host: their leaders are watched
 *   in `/proc` (exit status unknown) and signalled after an identity check;
 *   the next spawn starts a new helper (after 5 deaths within a minute, the
 *   host forks itself);
 * - a helper that does not answer a spawn within 10 s fails it; a tree it
 *   starts later is killed at once.
 *
 * @since 0.4.0
 */
import { ProcessLauncher } from "@shepherd/core/ProcessLauncher"
import type { ExitStatus, Launched } from "@shepherd/core/ProcessLauncher"
import type { Signal } from "@shepherd/core/Signal"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as PlatformError from "effect/PlatformError"
import type * as ChildProcess from "effect/process/ChildProcess"
import type * as Scope from "effect/Scope"
import * as CommandLine from "effect/process/CommandLine"
import * as NodeChildProcess from "node:child_process"
import type * as net from "node:net"
import { fileURLToPath } from "node:url"
import * as NodeProcessLauncher from "./NodeProcessLauncher.ts"
import type { KillRequest, Mark, Reply, SpawnRequest } from "./internal/forkHelper.ts"
import * as launchIo from "./internal/launchIo.ts"
import * as procfs from "./internal/procfs.ts"

// Next to this module: `.ts` when run from the sources, `.js` once built (see NodeLifeline).
const helperPath = fileURLToPath(
  new URL(`./internal/forkHelper${import.meta.url.endsWith(".ts") ? ".ts" : ".js"}`, import.meta.url)
)

const defaultAnswerWithinMs = 10_000
const maxDeaths = 5
const deathWindowMs = 60_000
const orphanPollMs = 20

/**
 * Trees started by the helper after their spawn was given up (and killed at
 * once): a count for tests and diagnostics.
 *
 * @since 0.4.0
 * @category diagnostics
 */
export const lateTrees = { killed: 0 }

interface Entry {
  readonly id: number
  readonly watch: launchIo.ExitWatch
  readonly pipes: { stdin: net.Socket | null; stdout: net.Socket | null; stderr: net.Socket | null }
  pid: number | undefined
  startTime: string
  /** Resumes the launch waiting for the helper's answer (cleared once answered). */
  answer: ((reply: Extract<Reply, { t: "spawned" | "failed" }> | string) => void) | undefined
  /** The launch gave up waiting: a tree the helper starts now is killed at once. */
  abandoned: boolean
}

interface Helper {
  readonly child: NodeChildProcess.ChildProcess
  readonly entries: Map<number, Entry>
  /** The helper's forks, as of its latest message. */
  forksSeen: number
  dead: boolean
}

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
    let nextId = 0
    const deaths: Array<number> = []
    const orphans = new Set<Entry>()
    let orphanTimer: ReturnType<typeof setInterval> | undefined

    const watchOrphans = () => {
      if (orphanTimer !== undefined) return
      orphanTimer = setInterval(() => {
        for (const entry of orphans) {
          if (identified(entry) !== false) continue
          orphans.delete(entry)
          // Reaped by whoever inherited it: the status is not ours to read.
          launchIo.recordExit(entry.watch, { code: null, signal: null })
        }
        if (orphans.size === 0) {
          clearInterval(orphanTimer)
          orphanTimer = undefined
        }
      }, orphanPollMs)
      orphanTimer.unref()
    }

    /** Whether the entry's leader is alive (not a zombie) under its recorded identity; `undefined`: cannot tell. */
    const identified = (entry: Entry): boolean | undefined => {
      if (entry.pid === undefined) return false
      try {
        const stat = procfs.readStat(entry.pid)
        return stat !== undefined && stat.startTime === entry.startTime && !procfs.isDead(stat)
      } catch {
        // /proc unreadable (out of file descriptors): neither signalled nor given up
        return undefined
      }
    }

    const forget = (h: Helper, entry: Entry) => {
      h.entries.delete(entry.id)
      // The channel keeps the host alive only while a tree of the helper lives, as a child would.
      if (h.entries.size === 0) h.child.channel?.unref()
    }

    const send = (h: Helper, message: SpawnRequest | KillRequest): boolean => {
      if (h.dead || !h.child.connected) return false
      try {
        h.child.send(message)
        return true
      } catch {
        return false
      }
    }

    const onReply = (h: Helper, reply: Reply, handle: unknown) => {
      if (reply.t !== "pipe") h.forksSeen = reply.forks
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
          if (entry.abandoned) {
            // Its leader is the helper's unreaped child: its group is provably this tree.
            send(h, { t: "kill", id: entry.id, signal: "SIGKILL", group: true })
            lateTrees.killed++
            for (const pipe of Object.values(entry.pipes)) pipe?.destroy()
          }
          entry.answer?.(reply)
          return
        }
        case "failed": {
          forget(h, entry)
          entry.answer?.(reply)
          return
        }
        case "exit": {
          forget(h, entry)
          launchIo.recordExit(entry.watch, { code: reply.code, signal: reply.signal })
        }
      }
    }

    const onDeath = (h: Helper, why: string) => {
      if (h.dead) return
      h.dead = true
      if (helper === h) helper = undefined
      // A helper whose channel broke may still run: it must not linger (our unreaped child).
      h.child.kill("SIGKILL")
      deaths.push(Date.now())
      for (const entry of h.entries.values()) {
        if (entry.pid === undefined) {
          entry.answer?.(`the fork helper died before it answered (it ${why})`)
        } else if (entry.watch.status === undefined) {
          orphans.add(entry)
        }
      }
      h.entries.clear()
      if (orphans.size > 0) watchOrphans()
    }

    const start = (): Helper | undefined => {
      let child: NodeChildProcess.ChildProcess
      try {
        child = NodeChildProcess.fork(helperPath, [], {
          stdio: ["inherit", "inherit", "inherit", "ipc"],
          // Its own session: a terminal's signals to the host's group do not reach it.
          detached: true,
          // The host's own flags (an inspector port, a heap size) are not the helper's.
          execArgv: [],
          serialization: "json"
        })
      } catch {
        return undefined
      }
      if (child.pid === undefined) return undefined
      const h: Helper = { child, entries: new Map(), forksSeen: 0, dead: false }
      child.on("message", (reply: Reply, handle: unknown) => onReply(h, reply, handle))
      // "disconnect" comes once every message has been read; "exit" may come before.
      child.on("disconnect", () => onDeath(h, "exited"))
      child.on("error", () => onDeath(h, "could not be written to"))
      child.unref()
      child.channel?.unref()
      return h
    }

    const current = (): Helper | undefined => {
      if (released) return undefined
      if (helper !== undefined && !helper.dead) return helper
      const now = Date.now()
      while (deaths.length > 0 && now - deaths[0]! > deathWindowMs) deaths.shift()
      if (deaths.length >= maxDeaths) return undefined
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
      const now = procfs.readForks()
      return now !== undefined && now - mark.forks === h.forksSeen - mark.own
    }

    const signal = (h: Helper, entry: Entry) => (sig: Signal): boolean => {
      if (entry.watch.status !== undefined || entry.pid === undefined) return false
      // Without a start time (unreadable at the spawn) only the helper's unreaped handle names it.
      if (entry.startTime === "0") return send(h, { t: "kill", id: entry.id, signal: sig, group: false })
      if (identified(entry) !== true) return false
      // Directly, after the identity check, in the pool's order (a leader before its members): a
      // round trip through the helper would let the members hear first.
      try {
        process.kill(entry.pid, sig)
        return true
      } catch {
        return false
      }
    }

    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        released = true
        if (orphanTimer !== undefined) clearInterval(orphanTimer)
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
      const cwd = yield* launchIo.checkCommand(command)
      const entry: Entry = {
        id: nextId++,
        watch: launchIo.makeExitWatch(),
        pipes: { stdin: null, stdout: null, stderr: null },
        pid: undefined,
        startTime: "0",
        answer: undefined,
        abandoned: false
      }
      h.entries.set(entry.id, entry)
      if (h.entries.size === 1) h.child.channel?.ref()
      const sent = send(h, {
        t: "spawn",
        id: entry.id,
        file: command.command,
        args: command.args.map(NodeProcessLauncher.unwrap),
        env,
        cwd,
        stdio,
        shell: command.options.shell
      })
      if (!sent) {
        forget(h, entry)
        return yield* host.launch(command, env)
      }
      // Not interruptible, as a fork in the host is not: the answer is waited for (at most
      // `answerWithinMs`), so that no tree can start after its spawn was given up unseen.
      const reply = yield* Effect.callback<Extract<Reply, { t: "spawned" | "failed" }> | string>((resume) => {
        const timer = setTimeout(() => {
          entry.abandoned = true
          entry.answer = undefined
          resume(Effect.succeed(`the fork helper did not answer within ${answerWithinMs} ms`))
        }, answerWithinMs)
        entry.answer = (r) => {
          clearTimeout(timer)
          entry.answer = undefined
          resume(Effect.succeed(r))
        }
      })
      if (typeof reply === "string") {
        // An abandoned spawn stays known: a tree the helper starts after all is killed at once.
        if (!entry.abandoned) forget(h, entry)
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
        signal: signal(h, entry),
        io: yield* launchIo.io(command, entry.pipes)
      }
      return launched
    }, Effect.uninterruptible)

    return ProcessLauncher.of({ inheritedEnv: host.inheritedEnv, launch })
  })

/**
 * @since 0.4.0
 * @category layers
 */
export const layer: Layer.Layer<ProcessLauncher> = Layer.effect(ProcessLauncher, make())
