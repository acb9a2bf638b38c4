/**
 * The `env -i` escape shapes of issue 12: descendants that clear their
 * environment (no `SHEPHERD_ID`) and leave the process group (`setsid`), out
 * of reach of the process group + cookie. Every process they start carries a
 * marker in its command line instead (the shells' `$0` is `cgtest-<id>`, the
 * sleeps sleep `1000.<id>` seconds), so tests find survivors in `/proc` by it.
 */
import * as crypto from "node:crypto"
import { type ProcInfo, processes } from "./support.ts"

/** A test's marker: in the shells' `$0` and in the sleeps' durations. */
export interface Mark {
  readonly id: string
  readonly sh: string
  readonly sleep: string
}

export const newMark = (): Mark => {
  const id = `${process.pid}${crypto.randomInt(100_000_000, 999_999_999)}`
  return { id, sh: `cgtest-${id}`, sleep: `sleep 1000.${id}` }
}

/** Live (non-zombie) processes carrying the marker. */
export const marked = (mark: Mark): Array<ProcInfo> =>
  processes().filter((p) =>
    (p.cmdline.includes(mark.sh) || p.cmdline.includes(mark.sleep)) && p.pid !== process.pid &&
    p.state !== "Z" && p.state !== "X"
  )

/** The marked sleeps alive. */
export const markedSleeps = (mark: Mark): number => marked(mark).filter((p) => p.cmdline === mark.sleep).length

/** SIGKILLs every marked process (cleanup, whatever happened). */
export const sigkillMarked = (mark: Mark): void => {
  for (const p of marked(mark)) {
    try {
      process.kill(p.pid, "SIGKILL")
    } catch {
      // gone
    }
  }
}

export interface Shape {
  /** The tree's script, run as `sh -c <script> <mark.sh>`. */
  readonly script: string
  /** Marked sleeps alive once the shape is up (at least). */
  readonly sleeps: number
  /** The leader keeps running (it does not exit by itself). */
  readonly staysUp: boolean
}

export const escapeShapes = (m: Mark): Record<string, Shape> => ({
  "setsid env -i in the background (the leader stays)": {
    script: `setsid env -i sh -c 'trap "" TERM; exec ${m.sleep}' ${m.sh} & exec ${m.sleep}`,
    sleeps: 2,
    staysUp: true
  },
  "setsid env -i in the background (the leader exits)": {
    script: `setsid env -i sh -c 'trap "" TERM; exec ${m.sleep}' ${m.sh} & sleep 0.5`,
    sleeps: 1,
    staysUp: false
  },
  "double fork + setsid env -i": {
    script: `(setsid env -i sh -c 'trap "" TERM; exec ${m.sleep}' ${m.sh} &); trap "" TERM; exec ${m.sleep}`,
    sleeps: 2,
    staysUp: true
  },
  "env -i setsid with a background child": {
    script: `env -i setsid sh -c '${m.sleep} & trap "" TERM; exec ${m.sleep}' ${m.sh} & exec ${m.sleep}`,
    sleeps: 3,
    staysUp: true
  },
  "a fork storm of setsid env -i (still forking when the teardown starts)": {
    script: `for w in 1 2 3; do (i=0; while [ $i -lt 25 ]; do i=$((i+1)); ` +
      `setsid env -i sh -c 'trap "" TERM; ${m.sleep} & exec ${m.sleep}' ${m.sh} & ` +
      `sleep 0.01; done; trap "" TERM; exec ${m.sleep}) & done; exec ${m.sleep}`,
    sleeps: 20,
    staysUp: true
  }
})
