/**
 * The process table for platforms without `/proc` (macOS, the BSDs, Windows):
 * see `NodeProcessTable.makePortable`.
 */
import { ProcessTable } from "@shepherd/core/ProcessTable"
import type { SignalResult } from "@shepherd/core/ProcessTable"
import type { ProcessIdentity } from "@shepherd/core/ProcessIdentity"
import * as Effect from "effect/Effect"

export const make = (): ProcessTable["Service"] => {
  const groupAlive = (pgid: number): boolean => {
    try {
      process.kill(-pgid, 0)
      return true
    } catch {
      return false
    }
  }
  const alive = (identity: ProcessIdentity): boolean => {
    if (identity.pid < 0) return groupAlive(-identity.pid)
    try {
      process.kill(identity.pid, 0)
      return true
    } catch {
      return false
    }
  }
  // Windows has no process groups: there the leader alone is the container.
  const groups = process.platform !== "win32"
  return ProcessTable.of({
    members: (container) =>
      Effect.sync(() => {
        if (!groups) return container.leader.pid > 0 && alive(container.leader) ? [container.leader] : []
        return container.pgid > 1 && groupAlive(container.pgid)
          ? [{ pid: -container.pgid, startTime: container.leader.startTime, bootId: container.leader.bootId }]
          : []
      }),
    carriers: () => Effect.succeed([]),
    inspect: () => Effect.succeed(undefined),
    isAlive: (identity) => Effect.sync(() => alive(identity)),
    signal: (identity, signal) =>
      Effect.sync((): SignalResult => {
        if (
          identity.pid === process.pid || identity.pid === -process.pid || Math.abs(identity.pid) <= 1
        ) return "not-ours"
        try {
          process.kill(identity.pid, signal)
          return "sent"
        } catch (error) {
          return (error as NodeJS.ErrnoException).code === "EPERM" ? "not-ours" : "gone"
        }
      })
  })
}
