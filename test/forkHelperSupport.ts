/**
 * What the fork helper's tests share (forkFrom: "helper").
 */
import { processes } from "./support.ts"

/** Sends `sig` to `pid` if it still exists. */
export const signal = (pid: number, sig: NodeJS.Signals): void => {
  try {
    process.kill(pid, sig)
  } catch {
    // gone
  }
}

/** This process's fork helpers. */
export const helpers = () => processes().filter((p) => p.ppid === process.pid && p.cmdline.includes("forkHelper"))
