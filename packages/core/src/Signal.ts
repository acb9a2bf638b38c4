/**
 * POSIX signal names accepted by Shepherd.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/**
 * The signals a KillPolicy may send first. `SIGKILL` is always the last resort
 * and `SIGSTOP` cannot end a process, so neither is a valid graceful signal.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Signal = Schema.Literals([
  "SIGTERM",
  "SIGINT",
  "SIGHUP",
  "SIGQUIT",
  "SIGUSR1",
  "SIGUSR2",
  "SIGKILL"
])

/**
 * @since 0.1.0
 * @category models
 */
export type Signal = typeof Signal.Type
