/**
 * The run's watchdog process (src/child/watchdog.ts): started by main.ts
 * before any scenario, it outlives a bench killed by SIGKILL (or dead of a
 * crash) and then kills every process carrying this run's marker. The bench
 * spares it in its own sweeps and tells it, at its end, that it is done.
 */
import * as NodeChildProcess from "node:child_process"
import { fileURLToPath } from "node:url"
import { type Identity, identify, readStat } from "./procs.ts"

const script = fileURLToPath(new URL("./child/watchdog.ts", import.meta.url))

export interface Watchdog {
  /** Its pid and start time: the sweep spares it. */
  readonly identity: Identity
  /** Writes "done" and closes the pipe: the watchdog exits once this process is gone (after a last pass that finds nothing). */
  readonly done: () => void
}

/** Starts the watchdog of run `runId` (it inherits the environment, the run marker included). */
export const startWatchdog = (runId: string): Watchdog => {
  const self = readStat(process.pid)
  if (self === undefined) throw new Error("cannot read /proc/self/stat")
  const child = NodeChildProcess.spawn(process.execPath, [script, String(process.pid), self.startTime, runId], {
    // stdout ignored; stderr shared, so that what it killed after a SIGKILL is seen where the run's output goes
    stdio: ["pipe", "ignore", "inherit"],
    detached: true
  })
  const identity = child.pid === undefined ? undefined : identify(child.pid)
  if (identity === undefined) throw new Error("the bench's watchdog process did not start")
  // The process does not keep this one's event loop alive; its pipe is closed by `done`.
  child.unref()
  const stdin = child.stdin!
  stdin.on("error", () => {
    // the watchdog is gone: nothing to tell it
  })
  let closed = false
  return {
    identity,
    done: () => {
      if (closed) return
      closed = true
      stdin.end("done\n")
    }
  }
}
