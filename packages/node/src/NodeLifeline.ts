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
 * Cost: one extra process per pool (not per child), one short pipe write per
 * spawn, and one per event-loop turn for the exits.
 *
 * @since 0.1.0
 */
import { Lifeline } from "@shepherd/core/Lifeline"
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

interface Sentinel {
  readonly pid: number | undefined
  readonly stdin: Writable | undefined
  exited: boolean
  /** Resolves with why the sentinel ended: its exit, or the error that kept it from starting. */
  readonly ended: Promise<string>
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
      ended: Promise.resolve(`could not start: ${String(error)}`)
    }
  }
  const sentinel: Sentinel = { pid: child.pid, stdin: child.stdin ?? undefined, exited: false, ended }
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
 * applies).
 */
const writeTo = (stdin: Writable, text: string): void => {
  const fd = (stdin as unknown as { _handle?: { fd?: unknown } })._handle?.fd
  if (stdin.writableLength === 0 && typeof fd === "number" && fd >= 0) {
    const data = Buffer.from(text)
    let written = 0
    try {
      written = fs.writeSync(fd, data)
    } catch {
      // EAGAIN (a full pipe), EPIPE (a dead sentinel): the stream deals with it
    }
    if (written < data.length) stdin.write(data.subarray(written))
    return
  }
  stdin.write(text)
}

// Uninterruptible: the sentinel it starts must have its release registered (the supervisor fiber
// it forks is interruptible, as every forked fiber is).
const attach = (
  poolId: string,
  policy: KillPolicy,
  options?: { readonly cgroup?: { readonly pool: CgroupRef; readonly sentinel: CgroupRef } | undefined }
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

    let current = startSentinel(poolId, cgroup?.sentinel)
    let released = false
    let restarts = 0
    let lastError: string | undefined
    let gaveUp = false

    // Goodbye lines are sent in one write per event-loop turn: closing hundreds of trees at once
    // would otherwise queue hundreds of pipe writes.
    let buffered = ""
    const flush = () => {
      const text = buffered
      buffered = ""
      if (text !== "" && !current.exited && current.stdin?.writable === true) writeTo(current.stdin, text)
    }
    const write = (line: string) => {
      if (buffered === "") setImmediate(flush)
      buffered += `${line}\n`
    }
    // What the sentinel needs to act on is sent at once: the pool (its cookie prefix) and every
    // new container (its group, for members that lost the cookie). Only goodbyes wait a turn.
    const writeNow = (line: string) => {
      buffered += `${line}\n`
      flush()
    }
    const greet = () => {
      buffered = ""
      writeNow([poolLine, ...[...registered.values()].map(containerLine)].join("\n"))
    }
    greet()

    const supervise = Effect.gen(function*() {
      const deaths: Array<number> = []
      while (true) {
        const reason = yield* Effect.promise(() => current.ended)
        if (released) return
        const now = yield* Clock.currentTimeMillis
        while (deaths.length > 0 && now - deaths[0]! > restartWindowMs) deaths.shift()
        deaths.push(now)
        lastError = `sentinel ${current.pid ?? "(none)"} ${reason}`
        if (deaths.length > maxRestarts) {
          gaveUp = true
          lastError = `gave up after ${deaths.length} deaths within ${restartWindowMs} ms; last: ${lastError}`
          yield* Metric.update(Metric.withAttributes(restartsMetric, { outcome: "failed" }), 1)
          return yield* Effect.logError(
            `lifeline of pool ${poolId}: ${lastError}. Trees are NOT protected against a hard host death.`
          )
        }
        current = startSentinel(poolId, cgroup?.sentinel)
        greet()
        restarts++
        yield* Metric.update(Metric.withAttributes(restartsMetric, { outcome: "restarted" }), 1)
        yield* Effect.logWarning(
          `lifeline of pool ${poolId}: ${lastError}; restarted as pid ${
            current.pid ?? "(none)"
          } with ${registered.size} container(s)`
        )
      }
    })
    yield* Effect.forkScoped(supervise)

    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        released = true
        write("BYE")
        flush()
        current.stdin?.end()
      })
    )

    const attached: Attached = {
      register: (c: Container) =>
        Effect.sync(() => {
          registered.set(c.shepherdId, c)
          writeNow(containerLine(c))
        }),
      unregister: (shepherdId: string) =>
        Effect.sync(() => {
          registered.delete(shepherdId)
          write(`- ${shepherdId}`)
        }),
      status: Effect.sync(() => ({
        kind: "sentinel",
        pid: current.pid,
        alive: !gaveUp && !current.exited && current.pid !== undefined,
        watching: registered.size,
        restarts,
        ...(lastError === undefined ? {} : { lastError })
      }))
    }
    return attached
  }))

/**
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Lifeline> = Layer.succeed(Lifeline, Lifeline.of({ attach }))
