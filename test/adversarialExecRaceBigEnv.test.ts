/**
 * Review of 1fa783d. `environmentPending` took `env_start == env_end != 0` for "no environment for
 * good" (env -i). But create_elf_tables() (fs/binfmt_elf.c) sets `mm->env_end = mm->env_start = p`
 * before its envp loop and the final `mm->env_end` after it: for the whole loop a process inside
 * execve() shows an empty environ with equal, non-zero bounds, and was judged cookie-less with no
 * look-again (remembered by processCache.cookieOf for its life). Also `PF_EXITING` was taken for
 * "no environment to come", but the exiting leader of a thread group in de_thread() is replaced,
 * same pid and start time, by the thread that execs.
 *
 * Shape: a tree whose leader exits while a descendant (own session, so only the cookie makes it a
 * member; process-group containment, so no cgroup leaf vouches for it) re-execs itself forever,
 * with a large environment (wide window). Before the fix: 2-3 misses in 192 trees here; 34db7d3
 * and the fix: none. A soak, opt-in (SHEPHERD_EXEC_RACE_SOAK=1): a miss is found by chance, and
 * 192 trees with 20,000 variables each take minutes on a loaded machine. The fast guard of the
 * same rule is packages/node/test/procfsExecWindow.test.ts.
 */
import { afterEach, describe, it } from "@effect/vitest"
import { descendantRace } from "./descendantRace.ts"
import { cleanupPools, sh } from "./harness.ts"

afterEach(cleanupPools)

const trees = Number(process.env.SHEPHERD_EXEC_RACE_TREES ?? 192)
const big: Record<string, string> = {}
for (let i = 0; i < Number(process.env.SHEPHERD_EXEC_RACE_VARS ?? 20000); i++) big[`ADV_V${i}`] = "1"
// A shell that execs itself, forever (the same pid, a new image each time).
const reexec = `sh -c 'exec sh -c "$0" "$0"' 'exec sh -c "$0" "$0"'`

describe.runIf(process.platform === "linux" && process.env.SHEPHERD_EXEC_RACE_SOAK === "1")(
  "adversarial: a descendant that execs again and again",
  () => {
    it.live("no tree is reported done while its re-exec'ing descendant lives", () =>
      descendantRace({
        label: "re-exec race",
        pool: {
          name: "adv-reexec",
          slots: 8,
          containment: "process-group",
          kill: { grace: "300 millis", forceWait: "500 millis" }
        },
        trees,
        command: (pidFile) => sh(`setsid ${reexec} & echo $! > ${pidFile}; exit 0`, { env: big, extendEnv: true })
      }), 600_000)
  }
)
