/**
 * Run as `node watchdog.ts <benchPid> <benchStartTime> <runId>`, detached
 * (a session of its own, so a Ctrl-C or a signal to the bench's process group
 * does not reach it), with a pipe on stdin: the lifeline of a bench run that
 * is killed without a chance to clean up (SIGKILL, a crash, a lost terminal).
 *
 * It waits until the bench is gone (the pipe reaches end of file, or the
 * bench's identity, pid and start time of `/proc/<pid>/stat`, is no longer a
 * live process), then kills every process carrying `SHEPHERD_BENCH_RUN=<runId>`
 * in its `/proc/<pid>/environ`, each identified by its pid and start time read
 * together (see sweep.ts), whatever its process group or session. It never
 * matches command lines. Passes repeat every 50 ms until three in a row find
 * nothing and at least 500 ms have passed (a shell killed mid-`fork` may start
 * a child after a pass; a child between `fork` and `exec` still shows its
 * parent's environment), then it exits.
 *
 * On a normal end (and after its own sweep on SIGTERM or SIGINT) the bench
 * writes "done" and closes the pipe: the passes then find nothing, and the
 * watchdog exits silently once the bench has exited.
 */
import { readStat } from "../procs.ts"
import { classify, killOurs, type Ownership } from "../sweep.ts"

const [pidArg = "", benchStart = "", runId = ""] = process.argv.slice(2)
const benchPid = Number(pidArg)
if (!(benchPid > 1) || benchStart === "" || runId === "") {
  process.stderr.write(`bench watchdog: usage: watchdog.ts <benchPid> <benchStartTime> <runId>\n`)
  process.exit(2)
}
// The marker alone: after the bench's death nothing is its descendant any more, and pools' members
// carry the marker (they inherit the bench's environment).
const own: Ownership = { runId, poolIds: new Set(), descendants: false }

const benchGone = (): boolean => {
  const s = readStat(benchPid)
  return s === undefined || s.startTime !== benchStart || s.state === "Z" || s.state === "X" || s.state === "x"
}

const pause = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** The bench writes "done" once its own sweep is over; the kernel closes the pipe without it when the bench dies. */
let input = ""
let sweeping = false

const sweepAndExit = async (): Promise<void> => {
  const start = performance.now()
  const killed = new Set<string>()
  let empty = 0
  // bounded: 30 s of passes at most, whatever happens
  while (performance.now() - start < 30_000) {
    const { ours } = classify(own)
    if (ours.length === 0) {
      if (++empty >= 3 && performance.now() - start >= 500) break
    } else {
      empty = 0
      for (const c of ours) killed.add(`${c.pid}/${c.startTime} ${c.cmdline}`)
      killOurs(ours)
    }
    await pause(50)
  }
  if (killed.size > 0) {
    process.stderr.write(
      `bench watchdog: the bench (pid ${benchPid}) is gone${
        input.includes("done") ? "" : " without its own cleanup"
      }; killed ${killed.size} process(es) of run ${runId}: ${[...killed].slice(0, 10).join("; ")}${
        killed.size > 10 ? "; …" : ""
      }\n`
    )
  }
  process.exit(0)
}

const check = (): void => {
  if (sweeping || !benchGone()) return
  sweeping = true
  clearInterval(poll)
  void sweepAndExit()
}

// The pipe's end is the fast path (the kernel closes it when the bench dies, the bench closes it when it
// is done); the poll covers a pipe held open by anything else.
const poll = setInterval(check, 100)
process.stdin.setEncoding("utf8")
process.stdin.on("data", (chunk: string) => {
  input = (input + chunk).slice(-64)
})
process.stdin.on("end", check)
process.stdin.on("error", check)
check()
