/**
 * The lifeline on Linux: one sentinel process per pool (a small Node
 * script, `internal/sentinel.ts`, sharing the `/proc` reader and the
 * `Membership` rules with the process table) holding a pipe from the host. The host
 * writes each container it supervises into the pipe; when the pipe closes
 * without a goodbye — the host died without running finalizers — the
 * sentinel terminates every registered container and every process carrying
 * the pool's `SHEPHERD_ID`, identity-checked, with the pool's KillPolicy.
 *
 * A sentinel that dies on its own (SIGKILL, OOM kill) is restarted at once
 * and handed the pool and every container still registered; the restart is
 * logged as a warning and counted (`status.restarts`,
 * `shepherd_lifeline_restarts`). If it dies more than `maxRestarts` times
 * within `restartWindowMs`, the lifeline gives up: logged as an error, and
 * `status` reports `alive: false` with the reason.
 *
 * Under cgroup containment the sentinel runs in the pool's `sentinel` leaf
 * and, when the host dies, also terminates every process in the pool's
 * session cgroups (whatever it did to its group and environment), ending
 * with `cgroup.kill` on each.
 *
 * A spawn returns only once its tree's registration is in the kernel's
 * socket buffer towards the sentinel: a host SIGKILLed at any later moment
 * cannot lose it. The common case is one plain write(2), nothing more. When
 * the sentinel does not read (stopped, starved of CPU) and its socket is
 * full, what could not be written waits in the stream and the spawn waits
 * with it, up to `registerWaitMs` (the pool's `lifelineWait`, 10 s by
 * default): then the spawn fails (`LifelineUnavailable`, which the pool turns
 * into a `SpawnError` of kind `"Lifeline"` after tearing the tree down). A
 * sentinel that dies meanwhile is restarted and greeted with every registered
 * container: the waiting spawns go on once that greeting is written. Spawns
 * do not wait under cgroup containment (the sentinel ends the pool's cgroups,
 * whatever it was told) nor once the lifeline gave up (logged as an error).
 *
 * Cost: one extra process per pool (not per child), one short pipe write per
 * spawn, and one per event-loop turn for the exits.
 *
 * @since 0.1.0
 */
import { Lifeline, LifelineUnavailable } from "@shepherd/core/Lifeline"
import type { Attached } from "@shepherd/core/Lifeline"
import type { KillPolicy } from "@shepherd/core/KillPolicy"
import * as Metrics from "@shepherd/core/Metrics"
import type { Container } from "@shepherd/core/ProcessTable"
import type { CgroupRef } from "@shepherd/core/Containment"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import type { Writable } from "node:stream"
import { fileURLToPath } from "node:url"
import { placeUnsafe } from "./internal/cgroupMembers.ts"
import { fromRef } from "./internal/cgroupTable.ts"

// Next to this module: `.ts` when run from the sources (Node strips the types), `.js` once built
// (Node does not strip types under node_modules).
const sentinelPath = fileURLToPath(
  new URL(`./internal/sentinel${import.meta.url.endsWith(".ts") ? ".ts" : ".js"}`, import.meta.url)
)

/** More deaths than this within `restartWindowMs` and the lifeline gives up. */
const maxRestarts = 5
const restartWindowMs = 60_000
/** The default longest wait of a registration for a sentinel that does not read. */
const defaultRegisterWaitMs = 10_000

interface Sentinel {
  readonly pid: number | undefined
  readonly stdin: Writable | undefined
  exited: boolean
  /** Resolves with why the sentinel ended: its exit, or the error that kept it from starting. */
  readonly ended: Promise<string>
  /** Writes handed to the stream (what write(2) could not take at once), in order. */
  queued: number
  /** How many of them the stream reported written (in the kernel), in order. */
  written: number
}

/** A registration that waits for the stream write carrying it (`target` on `sentinel`). */
interface Waiter {
  sentinel: Sentinel
  /** `sentinel.written` at which the registration is in the kernel (Infinity: only a greeting). */
  target: number
  readonly settle: (failure?: string) => void
}

const startSentinel = (poolId: string, leaf: CgroupRef | undefined): Sentinel => {
  let settle!: (reason: string) => void
  const ended = new Promise<string>((resolve) => {
    settle = resolve
  })
  let child: NodeChildProcess.ChildProcess
  try {
    child = NodeChildProcess.spawn(process.execPath, [sentinelPath], {
      stdio: ["pipe", "ignore", "ignore"],
      // Its own session: terminal signals to the host's group do not reach it.
      detached: true,
      env: { ...process.env, SHEPHERD_SENTINEL: poolId }
    })
  } catch (error) {
    return {
      pid: undefined,
      stdin: undefined,
      exited: true,
      ended: Promise.resolve(`could not start: ${String(error)}`),
      queued: 0,
      written: 0
    }
  }
  const sentinel: Sentinel = {
    pid: child.pid,
    stdin: child.stdin ?? undefined,
    exited: false,
    ended,
    queued: 0,
    written: 0
  }
  if (leaf !== undefined && child.pid !== undefined) {
    try {
      // In its leaf of the pool's cgroup, where a later host sees that it still works (it forks nothing:
      // moving it after the spawn is not racy).
      placeUnsafe(fromRef(leaf), child.pid)
    } catch {
      // It still works outside; only that sign of life is missing.
    }
  }
  child.on("error", (error) => {
    sentinel.exited = true
    settle(`could not start: ${error.message}`)
  })
  child.on("exit", (code, signal) => {
    sentinel.exited = true
    settle(signal === null ? `exited with code ${code}` : `was killed by ${signal}`)
  })
  child.unref()
  const stdin = sentinel.stdin
  stdin?.on("error", () => {}) // Neither the process nor its pipe may keep the host's event loop alive.
  ;(stdin as unknown as { unref?: () => void } | undefined)?.unref?.()
  return sentinel
}

/**
 * Writes `text` to the sentinel's pipe: one plain write(2) when nothing is queued on the stream (so
 * the order holds), which costs a fraction of a stream write (every spawn registers its tree); the
 * stream takes whatever that write could not (a full pipe, an error: its own error handler
 * applies), and calls `written` once that part is in the kernel (or failed). True when the whole
 * text is in the kernel on return.
 */
const writeTo = (stdin: Writable, text: string, written: (error?: Error | null) => void): boolean => {
  const fd = (stdin as unknown as { _handle?: { fd?: unknown } })._handle?.fd
  if (stdin.writableLength === 0 && typeof fd === "number" && fd >= 0) {
    const data = Buffer.from(text)
    let done = 0
    try {
      done = fs.writeSync(fd, data)
    } catch {
      // EAGAIN (a full pipe), EPIPE (a dead sentinel): the stream deals with it
    }
    if (done === data.length) return true
    stdin.write(data.subarray(done), written)
    return false
  }
  stdin.write(text, written)
  return false
}

// Uninterruptible: the sentinel it starts must have its release registered (the supervisor fiber
// it forks is interruptible, as every forked fiber is).
const attach = (
  poolId: string,
  policy: KillPolicy,
  options?: {
    readonly cgroup?: { readonly pool: CgroupRef; readonly sentinel: CgroupRef } | undefined
    readonly registerWaitMs?: number | undefined
  }
) =>
  Effect.uninterruptible(Effect.gen(function*() {
    // Everything a new sentinel must be told: kept here so that a restarted one starts where the
    // dead one stopped.
    const registered = new Map<string, Container>()
    const cgroup = options?.cgroup
    const refText = (ref: CgroupRef) => `${encodeURIComponent(ref.path)} ${ref.dev} ${ref.ino}`
    const poolLine = `P ${poolId} ${policy.signal} ${policy.graceMs} ${policy.forceWaitMs}` +
      (cgroup === undefined ? "" : `\nC ${refText(cgroup.pool)} ${refText(cgroup.sentinel)}`)
    const containerLine = (c: Container) => `+ ${c.shepherdId} ${c.pgid} ${c.leader.pid} ${c.leader.startTime}`
    const restartsMetric = Metric.withAttributes(Metrics.lifelineRestarts, { pool: poolId })

    const registerWaitMs = options?.registerWaitMs ?? defaultRegisterWaitMs

    // Registrations whose line waits in a stream (a full pipe) or for a restarted sentinel.
    const waiters = new Set<Waiter>()
    const settleWritten = (sentinel: Sentinel) => {
      for (const waiter of waiters) {
        if (waiter.sentinel === sentinel && waiter.target <= sentinel.written) waiter.settle()
      }
    }
    // One callback per sentinel for the writes its stream takes over (they complete in order). A
    // failed one (a dead sentinel) settles nothing: the restarted sentinel's greeting does.
    const withWrites = (sentinel: Sentinel) => ({
      sentinel,
      written: (error?: Error | null) => {
        if (error !== null && error !== undefined) return
        sentinel.written++
        settleWritten(sentinel)
      }
    })

    let current = withWrites(startSentinel(poolId, cgroup?.sentinel))
    let released = false
    let restarts = 0
    let lastError: string | undefined
    let gaveUp = false

    // Goodbye lines are sent in one write per event-loop turn: closing hundreds of trees at once
    // would otherwise queue hundreds of pipe writes.
    let buffered = ""
    /**
     * Sends what is buffered: 0 when it is in the kernel on return, else the count of the current
     * sentinel's stream writes after which it is (Infinity when it could not be sent at all: the
     * sentinel is dead, its successor's greeting carries the registrations).
     */
    const flush = (): number => {
      const text = buffered
      buffered = ""
      const { sentinel, written } = current
      if (text === "") return 0
      if (sentinel.exited || sentinel.stdin?.writable !== true) return Number.POSITIVE_INFINITY
      if (writeTo(sentinel.stdin, text, written)) return 0
      return ++sentinel.queued
    }
    const write = (line: string) => {
      if (buffered === "") setImmediate(flush)
      buffered += `${line}\n`
    }
    // What the sentinel needs to act on is sent at once: the pool (its cookie prefix) and every
    // new container (its group, for members that lost the cookie). Only goodbyes wait a turn.
    const writeNow = (line: string) => {
      buffered += `${line}\n`
      return flush()
    }
    const greet = () => {
      buffered = ""
      const target = writeNow([poolLine, ...[...registered.values()].map(containerLine)].join("\n"))
      // Every registration still waiting is in this greeting.
      for (const waiter of waiters) {
        waiter.sentinel = current.sentinel
        waiter.target = target
      }
      settleWritten(current.sentinel)
    }
    greet()

    /** Waits until the stream write `target` of `sentinel` is in the kernel, at most `registerWaitMs`. */
    const awaitWritten = (shepherdId: string, sentinel: Sentinel, target: number) =>
      Effect.callback<void, LifelineUnavailable>((resume) => {
        const waiter: Waiter = {
          sentinel,
          target,
          settle: (failure) => {
            waiters.delete(waiter)
            clearTimeout(timer)
            resume(
              failure === undefined
                ? Effect.void
                : Effect.fail(new LifelineUnavailable({ shepherdId, waitedMs: registerWaitMs, reason: failure }))
            )
          }
        }
        const timer = setTimeout(() => {
          const now = current.sentinel
          waiter.settle(
            now.exited
              ? `sentinel ${now.pid ?? "(none)"} is not running`
              : `sentinel ${now.pid ?? "(none)"} does not read its pipe (stopped, or starved of CPU)`
          )
        }, registerWaitMs)
        waiters.add(waiter)
        if (sentinel.written >= target) waiter.settle()
        return Effect.sync(() => {
          waiters.delete(waiter)
          clearTimeout(timer)
        })
      })

    const supervise = Effect.gen(function*() {
      const deaths: Array<number> = []
      while (true) {
        const reason = yield* Effect.promise(() => current.sentinel.ended)
        if (released) return
        const now = yield* Clock.currentTimeMillis
        while (deaths.length > 0 && now - deaths[0]! > restartWindowMs) deaths.shift()
        deaths.push(now)
        lastError = `sentinel ${current.sentinel.pid ?? "(none)"} ${reason}`
        if (deaths.length > maxRestarts) {
          gaveUp = true
          lastError = `gave up after ${deaths.length} deaths within ${restartWindowMs} ms; last: ${lastError}`
          // As every later spawn: unprotected, which the error below says.
          for (const waiter of waiters) waiter.settle()
          yield* Metric.update(Metric.withAttributes(restartsMetric, { outcome: "failed" }), 1)
          return yield* Effect.logError(
            `lifeline of pool ${poolId}: ${lastError}. Trees are NOT protected against a hard host death.`
          )
        }
        current = withWrites(startSentinel(poolId, cgroup?.sentinel))
        greet()
        restarts++
        yield* Metric.update(Metric.withAttributes(restartsMetric, { outcome: "restarted" }), 1)
        yield* Effect.logWarning(
          `lifeline of pool ${poolId}: ${lastError}; restarted as pid ${
            current.sentinel.pid ?? "(none)"
          } with ${registered.size} container(s)`
        )
      }
    })
    yield* Effect.forkScoped(supervise)

    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        released = true
        for (const waiter of waiters) waiter.settle("the pool is closing")
        write("BYE")
        flush()
        current.sentinel.stdin?.end()
      })
    )

    const attached: Attached = {
      ready: (shepherdId: string) =>
        Effect.suspend(() => {
          const { sentinel } = current
          // Nothing in the stream (the common case), or nothing to wait for (as in `register`).
          if ((!sentinel.exited && sentinel.written === sentinel.queued) || cgroup !== undefined || gaveUp) {
            return Effect.void
          }
          return awaitWritten(shepherdId, sentinel, sentinel.exited ? Number.POSITIVE_INFINITY : sentinel.queued)
        }),
      register: (c: Container) =>
        Effect.suspend(() => {
          registered.set(c.shepherdId, c)
          const target = writeNow(containerLine(c))
          // In the kernel (the common case), or nothing to wait for: the pool's cgroups are ended
          // whatever the sentinel was told; a lifeline that gave up protects nothing.
          if (target === 0 || cgroup !== undefined || gaveUp) return Effect.void
          return awaitWritten(c.shepherdId, current.sentinel, target)
        }),
      unregister: (shepherdId: string) =>
        Effect.sync(() => {
          registered.delete(shepherdId)
          write(`- ${shepherdId}`)
        }),
      status: Effect.sync(() => ({
        kind: "sentinel",
        pid: current.sentinel.pid,
        alive: !gaveUp && !current.sentinel.exited && current.sentinel.pid !== undefined,
        watching: registered.size,
        restarts,
        ...(lastError === undefined ? {} : { lastError }),
        waiting: waiters.size
      }))
    }
    return attached
  }))

/**
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Lifeline> = Layer.succeed(Lifeline, Lifeline.of({ attach }))
