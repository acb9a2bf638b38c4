/**
 * `shepherd run -- CMD ARGS...`: runs one command tree under supervision in
 * the foreground. SIGINT, SIGTERM and SIGHUP are forwarded to every member of
 * the tree (the child runs in its own session, so the terminal's Ctrl-C
 * reaches it only through Shepherd); after the grace period what is left is
 * SIGKILLed. When the command exits — or `shepherd run` is killed, through
 * the lifeline — the whole tree, escaped descendants included, is gone.
 * The exit code is the leader's (128 + signal number if a signal ended it).
 *
 * The command runs in its own session, without a controlling terminal: it
 * cannot open `/dev/tty` (password prompts), and job control (Ctrl-Z) and
 * window-size changes do not reach it.
 *
 * @since 0.1.0
 */
import type { ExitStatus } from "@shepherd/core/ProcessLauncher"
import { ProcessPool } from "@shepherd/core/ProcessPool"
import type { Signal } from "@shepherd/core/Signal"
import type * as Teardown from "@shepherd/core/Teardown"
import * as NodeShepherd from "@shepherd/node/NodeShepherd"
import * as Effect from "effect/Effect"
import * as ChildProcess from "effect/process/ChildProcess"
import * as os from "node:os"

const forwarded: ReadonlyArray<Signal> = ["SIGINT", "SIGTERM", "SIGHUP"]

const signalNumber = (name: string | null | undefined): number =>
  name === null || name === undefined ? 1 : (os.constants.signals as Record<string, number>)[name] ?? 1

/**
 * The exit code `shepherd run` reports: the leader's code, or 128 + the
 * signal that ended it.
 *
 * @since 0.1.0
 * @category running
 */
export const exitCode = (status: ExitStatus, report: Teardown.Teardown, signal: Signal | undefined): number => {
  if (status.code !== null) return status.code
  if (status.signal !== null) return 128 + signalNumber(status.signal)
  if (report._tag === "Exited") return 1 // it ended, but how is unknown
  return 128 + signalNumber(signal ?? "SIGTERM")
}

/**
 * Runs `command args` and returns its exit code once the whole tree is gone.
 *
 * @since 0.1.0
 * @category running
 */
export const run = (
  command: string,
  args: ReadonlyArray<string>,
  kill: { readonly grace: string; readonly forceWait: string }
) =>
  Effect.gen(function*() {
    const pool = yield* ProcessPool
    const managed = yield* pool.spawn(
      ChildProcess.make(command, args, { stdin: "inherit", stdout: "inherit", stderr: "inherit" }),
      { session: "run" }
    )
    let received: Signal | undefined
    const handlers = forwarded.map((signal) => {
      const handler = () => {
        received ??= signal
        Effect.runFork(managed.terminate({ signal }))
      }
      // Before NodeShepherd.runMain's own listener, so the tree sees the signal the user sent.
      process.prependListener(signal, handler)
      return [signal, handler] as const
    })
    const report = yield* managed.awaitTeardown
    for (const [signal, handler] of handlers) process.off(signal, handler)
    // The leader's own status: a command that traps SIGINT and exits 0 exits 0. A leader that
    // escaped even SIGKILL (uninterruptible sleep) may never report one: do not wait for it.
    const leaderEscaped = report._tag === "Escaped" && report.escaped.includes(managed.pid)
    const status = leaderEscaped ? { code: null, signal: "SIGKILL" } : yield* managed.awaitExit
    return exitCode(status, report, received)
  }).pipe(
    Effect.scoped,
    Effect.provide(NodeShepherd.layer({
      name: "shepherd-run",
      slots: 1,
      slotTimeout: "Infinity",
      ledger: false,
      // One command, one fork: a fork helper (a Node process of its own) would cost more than it saves.
      forkFrom: "host",
      kill: { grace: kill.grace, forceWait: kill.forceWait }
    })),
    // Signals are forwarded above; the run ends when the tree is gone, not when the host is interrupted.
    Effect.uninterruptible
  )
