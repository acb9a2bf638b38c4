/**
 * The lifeline on Linux: one sentinel process per pool (a few-dozen-line
 * Node script, `internal/sentinel.js`) holding a pipe from the host. The host
 * writes each container it supervises into the pipe; when the pipe closes
 * without a goodbye — the host died without running finalizers — the
 * sentinel terminates every registered container and every process carrying
 * the pool's `SHEPHERD_ID`, identity-checked, with the pool's KillPolicy.
 *
 * Cost: one extra process per pool (not per child), one short pipe write per
 * spawn, and one per event-loop turn for the exits.
 *
 * @since 0.1.0
 */
import { Lifeline } from "@shepherd/core/Lifeline"
import type { Attached } from "@shepherd/core/Lifeline"
import type { KillPolicy } from "@shepherd/core/KillPolicy"
import type { Container } from "@shepherd/core/ProcessTable"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as NodeChildProcess from "node:child_process"
import { fileURLToPath } from "node:url"

const sentinelPath = fileURLToPath(new URL("./internal/sentinel.js", import.meta.url))

const attach = (poolId: string, policy: KillPolicy) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const env: Record<string, string | undefined> = { ...process.env, SHEPHERD_SENTINEL: poolId }
      const child = NodeChildProcess.spawn(process.execPath, [sentinelPath], {
        stdio: ["pipe", "ignore", "ignore"],
        // Its own session: terminal signals to the host's group do not reach it.
        detached: true,
        env
      })
      child.on("error", () => {})
      child.unref()
      const stdin = child.stdin!
      stdin.on("error", () => {})
      // Neither the process nor its pipe may keep the host's event loop alive.
      ;(stdin as unknown as { unref?: () => void }).unref?.()
      let exited = false
      child.on("exit", () => {
        exited = true
      })
      let watching = 0
      // Goodbye lines are sent in one write per event-loop turn: closing hundreds of trees at once
      // would otherwise queue hundreds of pipe writes.
      let buffered = ""
      const flush = () => {
        const text = buffered
        buffered = ""
        if (text !== "" && !exited && stdin.writable) stdin.write(text)
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
      writeNow(`P ${poolId} ${policy.signal} ${policy.graceMs} ${policy.forceWaitMs}`)
      const attached: Attached = {
        register: (c: Container) =>
          Effect.sync(() => {
            watching++
            writeNow(`+ ${c.shepherdId} ${c.pgid} ${c.leader.pid} ${c.leader.startTime}`)
          }),
        unregister: (shepherdId: string) =>
          Effect.sync(() => {
            watching--
            write(`- ${shepherdId}`)
          }),
        status: Effect.sync(() => ({
          kind: "sentinel",
          pid: child.pid,
          alive: !exited && child.pid !== undefined,
          watching
        }))
      }
      return {
        attached,
        release: () => {
          write("BYE")
          flush()
          stdin.end()
        }
      }
    }),
    ({ release }) => Effect.sync(release)
  ).pipe(Effect.map(({ attached }) => attached))

/**
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Lifeline> = Layer.succeed(Lifeline, Lifeline.of({ attach }))
