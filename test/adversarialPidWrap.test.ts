/**
 * Adversarial tests of the fork witness (packages/node/src/internal/forkWitness.ts), issue 11:
 * the proof that a leader has no descendant, from the kernel's fork count (`processes` in
 * /proc/stat) and pid clock (`ns_last_pid`), without a /proc scan.
 *
 * Its second rule reads: "too few forks happened for the pids to have gone round `pid_max`, so
 * every process created since the leader has a pid in `(leader, ns_last_pid]`". That is false: a
 * fork that fails *after* the kernel allocated its pid moves the pid clock without counting a
 * fork. In copy_process, alloc_pid() runs before cgroup_can_fork(), so every clone that the
 * cgroup step refuses burns one pid and leaves `processes` alone. Any unprivileged process can do
 * it (clone3 with CLONE_INTO_CGROUP and a descriptor that is not a cgroup: EBADF after the pid is
 * taken), and so does any fork loop inside a cgroup whose `pids.max` is reached (a contained fork
 * bomb, a CI sandbox at its limit): about 10k pids per second here, a full round of pid_max 32768
 * in 3 s, with a fork count that does not move.
 *
 * After such a round, a descendant the leader forks gets a pid *below* the leader's; once the
 * clock has come back just past the leader, the witness walks `(leader, ns_last_pid]`, finds only
 * burnt pids ("gone") and declares the leader alone: no scan, and the descendant (same process
 * group, same session, the tree's SHEPHERD_ID) is left alive while the tree is reported done and
 * its slot returned.
 *
 * The spinner here only burns pids (it never creates a process); it runs unprivileged. The tests
 * wrap the machine's pid space, which could make the same bug misfire in pools of tests running
 * concurrently, so they run only when SHEPHERD_ADVERSARIAL_PID_WRAP=1:
 *
 *   SHEPHERD_ADVERSARIAL_PID_WRAP=1 pnpm exec vitest run test/adversarialPidWrap.test.ts
 *
 * Each asserts the contract (the descendant is dead once the tree's report is out). The witness's
 * pid-clock rule broke it and was removed: only the fork count proves a leader alone now.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { ChildProcess } from "effect/process"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { cleanupPools, withPool } from "./harness.ts"
import { isAlive, readEnvVar, waitUntil } from "./support.ts"

afterEach(cleanupPools)

const enabled = process.env.SHEPHERD_ADVERSARIAL_PID_WRAP === "1" ||
  process.env.SHEPHERD_ADVERSARIAL_PID_WRAP === "show"
/** `show`: run as plain tests, to see each failure's message. */
const hasGcc = (() => {
  try {
    NodeChildProcess.execFileSync("gcc", ["--version"], { stdio: "ignore" })
    return true
  } catch {
    return false
  }
})()
const pidMax = Number(fs.readFileSync("/proc/sys/kernel/pid_max", "latin1").trim())
/** The attack needs room below and above the leader; a 4M pid space takes minutes to go round. */
const runnable = enabled && hasGcc && process.platform === "linux" && pidMax <= 65_536

/**
 * Burns pids until the clock has wrapped (when asked) and reached `target`; prints where it
 * stopped. clone3 with CLONE_INTO_CGROUP and a descriptor of "/" (not a cgroup): the kernel
 * allocates the pid, then refuses the cgroup with EBADF. No process is ever created.
 */
const spinnerSource = String.raw`
#define _GNU_SOURCE
#include <linux/sched.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
static long lastpid(int fd) { char b[32]; ssize_t n = pread(fd, b, 31, 0); b[n > 0 ? n : 0] = 0; return atol(b); }
int main(int argc, char** argv) {
  if (argc < 3) return 64;
  long target = atol(argv[1]);
  int mustWrap = atoi(argv[2]);
  int notCgroup = open("/", O_RDONLY | O_DIRECTORY);
  int clock = open("/proc/sys/kernel/ns_last_pid", O_RDONLY);
  if (notCgroup < 0 || clock < 0) return 65;
  struct clone_args a;
  memset(&a, 0, sizeof a);
  a.flags = CLONE_INTO_CGROUP;
  a.exit_signal = SIGCHLD;
  a.cgroup = notCgroup;
  long prev = lastpid(clock);
  int wrapped = 0;
  for (long i = 0; i < 2000000; i++) {
    long r = syscall(SYS_clone3, &a, sizeof a);
    if (r == 0) _exit(0);
    if (r > 0) { waitpid(r, 0, 0); fprintf(stderr, "clone3 succeeded\n"); return 66; }
    long now = lastpid(clock);
    if (now < prev) wrapped = 1;
    prev = now;
    if ((wrapped || !mustWrap) && now >= target) { printf("%ld\n", now); return 0; }
  }
  return 67;
}
`

const lastPid = () => Number(fs.readFileSync("/proc/sys/kernel/ns_last_pid", "latin1").trim())
const forkCount = () => Number(/\nprocesses (\d+)/.exec(fs.readFileSync("/proc/stat", "latin1"))![1])

const kill = (pid: number | undefined) => {
  if (pid === undefined) return
  try {
    process.kill(pid, "SIGKILL")
  } catch {
    // gone
  }
}

interface Rig {
  readonly dir: string
  readonly spin: (target: number, mustWrap: boolean) => number
  readonly cleanup: () => void
}

const rig = (): Rig => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-pidwrap-"))
  fs.writeFileSync(path.join(dir, "spin.c"), spinnerSource)
  NodeChildProcess.execFileSync("gcc", ["-O2", "-o", path.join(dir, "spin"), path.join(dir, "spin.c")])
  NodeChildProcess.execFileSync("mkfifo", [path.join(dir, "fifo")])
  return {
    dir,
    spin: (target, mustWrap) =>
      Number(
        NodeChildProcess.execFileSync(path.join(dir, "spin"), [String(target), mustWrap ? "1" : "0"], {
          encoding: "latin1"
        }).trim()
      ),
    cleanup: () => fs.rmSync(dir, { recursive: true, force: true })
  }
}

/**
 * The leader: bash blocked in `read` on a FIFO it holds open itself (no fork while it waits). On
 * SIGUSR1 it starts `sleep 1000` in the background (its own group and session, its SHEPHERD_ID)
 * and writes its pid; on SIGUSR2 it exits 0, leaving the sleep behind.
 */
const leaderScript = (dir: string) =>
  [
    `exec 3<>${dir}/fifo`,
    `trap 'sleep 1000 & echo $! > ${dir}/g' USR1`,
    `trap 'exit 0' USR2`,
    `echo $$ > ${dir}/ready`,
    `while :; do read -u 3 x; done`
  ].join("\n")

const readPid = (file: string): number | undefined => {
  try {
    const text = fs.readFileSync(file, "latin1")
    return text.endsWith("\n") ? Number(text.trim()) : undefined
  } catch {
    return undefined
  }
}

/** Puts the pid clock where a leader forked next has room below and above it (no process is created). */
const position = (r: Rig) => {
  const low = Math.floor(pidMax * 0.3)
  const high = Math.floor(pidMax * 0.7)
  const now = lastPid()
  if (now < low) r.spin(low, false)
  else if (now > high) r.spin(low, true)
}

/**
 * Spawns the leader, lets the pid clock go round, has the leader fork its descendant below it,
 * brings the clock back just past the leader; then `end` ends the leader (by itself or by a session
 * close). Returns the descendant's pid and what the pool reported.
 */
const attack = <A, E, R>(
  r: Rig,
  spawnLeader: Effect.Effect<{ readonly pid: number; readonly shepherdId: string }, E, R>,
  end: (leader: number) => Effect.Effect<A, E, R>
) =>
  Effect.gen(function*() {
    const forks0 = forkCount()
    const leader = yield* spawnLeader
    const ready = yield* Effect.promise(() => waitUntil(() => readPid(path.join(r.dir, "ready")) !== undefined))
    assert.isTrue(ready, "the leader started")
    const L = leader.pid
    // Round the pid space (no process created), to well below the leader.
    const low = r.spin(Math.max(400, L - Math.floor(pidMax / 8)), true)
    assert.isBelow(low, L)
    process.kill(L, "SIGUSR1")
    const forked = yield* Effect.promise(() => waitUntil(() => readPid(path.join(r.dir, "g")) !== undefined))
    assert.isTrue(forked, "the leader forked its descendant")
    const G = readPid(path.join(r.dir, "g"))!
    // The descendant: below the leader, in its group and session, with the tree's cookie.
    assert.isBelow(G, L)
    assert.isTrue(isAlive(G))
    assert.strictEqual(readEnvVar(G, "SHEPHERD_ID"), leader.shepherdId)
    assert.strictEqual(readEnvVar(G, "ADV_PIDWRAP"), "1")
    // Bring the clock back just past the leader (the leader's pid is in use: it is skipped).
    const last = r.spin(L, false)
    assert.isAtLeast(last, L)
    const forks = forkCount() - forks0
    // The witness's own guard: far fewer forks than half the pid space.
    assert.isBelow(forks, pidMax / 2)
    const result = yield* end(L)
    return { G, result, forks, last, L }
  })

const bash = (dir: string) =>
  ChildProcess.make("bash", ["-c", leaderScript(dir), "adv-pidwrap-leader"], {
    env: { ADV_PIDWRAP: "1" },
    extendEnv: true
  })

const kp = { grace: "2 seconds", forceWait: "1 second" } as const

describe.runIf(process.platform === "linux")("adversarial: the fork witness and pid wrap-around", () => {
  // A leader that exits by itself: terminate's fast path ("exited and provably alone") reports
  // Exited without a scan; the leader's same-group descendant is never signalled.
  //
  // Reproduction (this file, with SHEPHERD_ADVERSARIAL_PID_WRAP=1): the report is Exited with
  // nothing signalled, the slot is back, and `sleep 1000` (pid below the leader's, pgid = leader,
  // SHEPHERD_ID of the tree) is still alive.
  ;(runnable ? it.live : it.live.skip)(
    "a descendant forked after the pid clock went round is ended when its leader exits",
    () => {
      const r = rig()
      let G: number | undefined
      return withPool({ name: "adv-pidwrap-exit", kill: kp }, (pool) =>
        Effect.gen(function*() {
          // A reading of the pid clock right before (the witness reuses its latest one as the mark).
          const warm = yield* pool.spawn(ChildProcess.make("true"), { session: "s" })
          yield* warm.awaitTeardown
          position(r)
          let managed: { readonly awaitTeardown: Effect.Effect<{ readonly _tag: string }> } | undefined
          const out = yield* attack(
            r,
            Effect.map(pool.spawn(bash(r.dir), { session: "s" }), (m) => {
              managed = m
              return m
            }),
            (L) =>
              Effect.gen(function*() {
                process.kill(L, "SIGUSR2")
                return yield* managed!.awaitTeardown
              })
          )
          G = out.G
          const alive = isAlive(out.G)
          console.log(
            `pid wrap (exit): leader ${out.L}, descendant ${out.G}, clock ${out.last}, forks ${out.forks}; ` +
              `report ${JSON.stringify(out.result)}; descendant alive after the report: ${alive}`
          )
          assert.isFalse(alive, `the tree was reported ${out.result._tag} while its descendant ${out.G} lives`)
        })).pipe(Effect.ensuring(Effect.sync(() => {
          kill(G)
          r.cleanup()
        })))
    }
  ) // The same through a session close: the first look proves the live leader alone (no scan), the
   // leader dies of SIGTERM, the confirmation proves it alone again: Graceful, descendant alive.
  ;(runnable ? it.live : it.live.skip)(
    "a session close ends a descendant forked after the pid clock went round",
    () => {
      const r = rig()
      let G: number | undefined
      return withPool({ name: "adv-pidwrap-close", kill: kp }, (pool) =>
        Effect.gen(function*() {
          const warm = yield* pool.spawn(ChildProcess.make("true"), { session: "warm" })
          yield* warm.awaitTeardown
          position(r)
          const out = yield* attack(
            r,
            pool.spawn(bash(r.dir), { session: "s" }),
            () => pool.closeSession("s")
          )
          G = out.G
          const alive = isAlive(out.G)
          console.log(
            `pid wrap (close): leader ${out.L}, descendant ${out.G}, clock ${out.last}, forks ${out.forks}; ` +
              `reports ${JSON.stringify(out.result)}; descendant alive after the close: ${alive}`
          )
          assert.isFalse(alive, `the session close reported ${out.result[0]?._tag} while ${out.G} lives`)
        })).pipe(Effect.ensuring(Effect.sync(() => {
          kill(G)
          r.cleanup()
        })))
    }
  )
})
