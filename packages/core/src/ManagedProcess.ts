/**
 * A supervised process, as `ProcessPool.spawn` returns it.
 *
 * @since 0.1.0
 */
import type * as Effect from "effect/Effect"
import type * as Option from "effect/Option"
import type { ChildProcessHandle } from "effect/process/ChildProcessSpawner"
import type { EnvExplain } from "./EnvPolicy.ts"
import type { KillPolicy, KillPolicyInput } from "./KillPolicy.ts"
import type { ExitStatus } from "./ProcessLauncher.ts"
import type { ProcessIdentity } from "./ProcessIdentity.ts"
import type { Teardown } from "./Teardown.ts"

/**
 * A supervised process tree. Its lifetime is bound to the Scope it was
 * spawned in and to its session: whichever closes first tears the whole tree
 * down with its KillPolicy. When the leader exits by itself, what it left
 * behind is terminated and its slot is returned at once.
 *
 * @since 0.1.0
 * @category models
 */
export interface ManagedProcess {
  /** Sequence number of the process within its pool. */
  readonly id: number
  /** The `SHEPHERD_ID` value every member of the tree carries: `<pool id>:<id>`. */
  readonly shepherdId: string
  readonly session: string
  readonly pid: number
  readonly pgid: number
  readonly identity: ProcessIdentity
  /** The command line for display, with `Redacted` arguments hidden. */
  readonly command: string
  /** Epoch milliseconds when the OS process started. */
  readonly startedAt: number
  /** How long the request waited for a pool slot. */
  readonly slotWaitMs: number
  readonly policy: KillPolicy
  /** Which environment variable names were inherited, stripped, preserved (never values). */
  readonly env: EnvExplain
  /** An Effect `ChildProcessHandle` view (streams, `exitCode`, `kill`). */
  readonly handle: ChildProcessHandle
  /** Waits for the leader to exit (by itself or killed); never fails. */
  readonly awaitExit: Effect.Effect<ExitStatus>
  /** Tears the tree down now (idempotent) and returns the report. */
  readonly terminate: (policy?: KillPolicyInput) => Effect.Effect<Teardown>
  /** Waits until the tree is gone and returns the report. */
  readonly awaitTeardown: Effect.Effect<Teardown>
  /** The report, if the tree is gone already. */
  readonly teardown: Effect.Effect<Option.Option<Teardown>>
}
