/**
 * Cgroup v2 containment primitives (issue 12; not wired into the pool yet) on
 * real processes: detection, the layout, race-free placement through the
 * wrapper, `cgroup.kill` against the `env -i` escape shapes, the
 * `populated 0` event, the race of post-spawn placement, and a leaf swapped
 * after creation.
 *
 * The escape shapes clear their environment, so no `SHEPHERD_ID` finds them:
 * every test child carries a marker in its command line instead (the shells'
 * `$0` is `cgtest-<n>`, the sleeps sleep `1000.<n>` seconds), and the
 * survivors are looked up in `/proc` by that marker. Every test kills and
 * removes what it created, and SIGKILLs whatever carries its marker, also
 * when it fails. Tests that need a usable cgroup v2 base are skipped, with the
 * reason in their title, where there is none.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, type Scope } from "effect"
import * as NodeChildProcess from "node:child_process"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as Cgroup from "../packages/node/src/internal/cgroup.ts"
import { eventually } from "./harness.ts"
import { type ProcInfo, processes } from "./support.ts"

const detection = Cgroup.detectUnsafe()
const usable = detection._tag === "Usable" ? detection : undefined
const needsCgroups = usable === undefined
  ? ` (skipped: cgroup v2 is not usable here: ${detection._tag === "Unusable" ? detection.reason : ""})`
  : ""

/** A test's marker: in the shells' `$0` and in the sleeps' durations. */
interface Mark {
  readonly id: string
  readonly sh: string
  readonly sleep: string
}
const newMark = (): Mark => {
  const id = `${process.pid}${crypto.randomInt(100_000_000, 999_999_999)}`
  return { id, sh: `cgtest-${id}`, sleep: `sleep 1000.${id}` }
}

/** Live (non-zombie) processes carrying the marker. */
const survivorsOf = (mark: Mark): Array<ProcInfo> =>
  processes().filter((p) => p.cmdline.includes(mark.id) && p.pid !== process.pid && p.state !== "Z" && p.state !== "X")

/** The pids in a cgroup, read directly (for polling in tests). */
const procsOf = (cgroup: Cgroup.Cgroup): Array<number> => {
  try {
    return fs.readFileSync(path.join(cgroup.path, "cgroup.procs"), "latin1").split("\n").filter((l) => l !== "")
      .map(Number)
  } catch {
    return []
  }
}

const show = (p: ProcInfo) => `pid ${p.pid} ppid ${p.ppid} pgid ${p.pgid}: ${p.cmdline}`

/** `pid` exists and is not a zombie. */
const isLive = (pid: number): boolean => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "latin1")
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3)
    return state !== "Z" && state !== "X"
  } catch {
    return false
  }
}

const sigkillAll = (mark: Mark) => {
  for (const p of survivorsOf(mark)) {
    try {
      process.kill(p.pid, "SIGKILL")
    } catch {
      // gone
    }
  }
}

/** `sh -c script <marker>` through the wrapper, in `leaf`, in a session of its own. */
const spawnWrapped = (leaf: Cgroup.Cgroup, script: string, mark: Mark) => {
  const line = Cgroup.wrap(leaf, "/bin/sh", ["-c", script, mark.sh])
  const child = NodeChildProcess.spawn(line.command, [...line.args], { stdio: "ignore", detached: true })
  child.on("error", () => {})
  return child
}

interface Fixture {
  readonly pool: Cgroup.Cgroup
  readonly sentinel: Cgroup.Cgroup
  readonly session: Cgroup.Cgroup
  readonly leaf: Cgroup.Cgroup
  readonly mark: Mark
}

/**
 * A pool, a session and a tree leaf of their own for one test; whatever happens, the pool's
 * subtree is killed and removed and every process carrying the marker is SIGKILLed.
 */
const withFixture = <A, E>(body: (f: Fixture) => Effect.Effect<A, E, Scope.Scope>) =>
  Effect.gen(function*() {
    const mark = newMark()
    const { pool, sentinel } = yield* Effect.acquireRelease(
      Cgroup.createPool(usable!, `cgtest~${mark.id}`),
      ({ pool }) =>
        Effect.gen(function*() {
          yield* Effect.ignore(Cgroup.kill(pool))
          sigkillAll(mark)
          yield* Effect.ignore(Cgroup.remove(pool, { timeout: "10 seconds" }))
        })
    )
    const session = yield* Cgroup.createSession(pool, "session one")
    const leaf = yield* Cgroup.createTree(session, 1)
    return yield* body({ pool, sentinel, session, leaf, mark })
  }).pipe(Effect.scoped)

/** The escape shapes of issue 12: what they start, and how many marked processes they keep alive. */
const shapes = (m: Mark) => ({
  "setsid env -i in the background (the leader exits)": {
    script: `setsid env -i sh -c 'trap "" TERM; exec ${m.sleep}' ${m.sh} & sleep 0.2`,
    // The leader exits after 0.2 s; the escaped sleep stays. Wait for the leader to be gone too.
    expect: (ps: Array<ProcInfo>) => ps.length === 1 && ps[0]!.cmdline === m.sleep
  },
  "double fork + setsid env -i": {
    script: `(setsid env -i sh -c 'trap "" TERM; exec ${m.sleep}' ${m.sh} &); trap "" TERM; ${m.sleep}`,
    expect: (ps: Array<ProcInfo>) => ps.filter((p) => p.cmdline === m.sleep).length === 2
  },
  "env -i setsid with a background child": {
    script: `env -i setsid sh -c '${m.sleep} & trap "" TERM; exec ${m.sleep}' ${m.sh} & exec ${m.sleep}`,
    expect: (ps: Array<ProcInfo>) => ps.filter((p) => p.cmdline === m.sleep).length === 3
  },
  "a small fork storm of setsid env -i (still forking when killed)": {
    script: `for w in 1 2 3; do (i=0; while [ $i -lt 25 ]; do i=$((i+1)); ` +
      `setsid env -i sh -c 'trap "" TERM; ${m.sleep} & exec ${m.sleep}' ${m.sh} & ` +
      `sleep 0.01; done; trap "" TERM; exec ${m.sleep}) & done; exec ${m.sleep}`,
    // Kill in the middle of the storm: cgroup.kill is atomic with respect to forks.
    expect: (ps: Array<ProcInfo>) => ps.length >= 30
  }
})

describe("cgroup detection and names", () => {
  it("parses cgroup2 mounts (hybrid layout, escaped paths) and the host's v2 cgroup", () => {
    const mounts = Cgroup.parseMountInfo([
      "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755",
      "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory",
      "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw",
      "52 23 259:3 /a\\040b /mnt/with\\040space ro,relatime shared:5 - cgroup2 none ro"
    ].join("\n"))
    assert.deepStrictEqual(mounts, [
      { mountPoint: "/sys/fs/cgroup/unified", root: "/", dev: 38n, readOnly: false },
      // 259:3 as glibc's makedev encodes it
      { mountPoint: "/mnt/with space", root: "/a b", dev: (259n << 8n) | 3n, readOnly: true }
    ])
    assert.strictEqual(Cgroup.parseOwnCgroup("4:memory:/x\n0::/user.slice/app.scope\n"), "/user.slice/app.scope")
    assert.strictEqual(Cgroup.parseOwnCgroup("0::/gone (deleted)\n"), undefined)
    assert.strictEqual(Cgroup.parseOwnCgroup("1:name=systemd:/\n"), undefined)
  })

  it("names: reversible, one plain path component, long ids cut with a hash", () => {
    for (const id of ["default", "a b", "line\nbreak", "../up", "x/y", "ünï", "_5f", "pool~1a2b3c4d"]) {
      const name = Cgroup.encodeName(id)
      assert.match(name, /^[A-Za-z0-9_-]+$/)
      assert.strictEqual(Cgroup.decodeName(name), id)
    }
    const long = Cgroup.encodeName("x".repeat(500))
    assert.isAtMost(long.length, 200)
    assert.strictEqual(Cgroup.decodeName(long), undefined)
    assert.notStrictEqual(long, Cgroup.encodeName(`${"x".repeat(499)}y`))
    assert.strictEqual(Cgroup.sessionDirName("a b"), "s-a_20b")
    assert.strictEqual(Cgroup.treeDirName(7), "t-7")
    assert.throws(() => Cgroup.treeDirName(-1))
    assert.strictEqual(Cgroup.poolDirName("pool~1"), "shepherd-pool_7e1")
  })

  it("a configured base outside cgroup2 is Unusable, with the reason", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-cgtest-"))
    try {
      const d = Cgroup.detectUnsafe({ base: dir })
      assert.strictEqual(d._tag, "Unusable")
      if (d._tag === "Unusable") assert.include(d.reason, dir)
      // A mountinfo that claims the directory is a cgroup2 mount: the device number gives it away.
      const fake = Cgroup.detectUnsafe({
        base: dir,
        mountInfo: `99 1 0:999 / ${dir} rw - cgroup2 cgroup2 rw\n`,
        procCgroup: "0::/\n"
      })
      assert.strictEqual(fake._tag, "Unusable")
      if (fake._tag === "Unusable") assert.include(fake.reason, "not in the cgroup2 file system")
      const none = Cgroup.detectUnsafe({ mountInfo: "", procCgroup: "" })
      assert.strictEqual(none._tag, "Unusable")
      if (none._tag === "Unusable") assert.include(none.reason, "no cgroup2 file system")
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it.runIf(usable !== undefined)("a configured base reached through a symlink is Unusable", () => {
    const link = path.join(os.tmpdir(), `shepherd-cgtest-link-${process.pid}`)
    fs.rmSync(link, { force: true })
    fs.symlinkSync(usable!.base, link)
    try {
      const d = Cgroup.detectUnsafe({ base: link })
      assert.strictEqual(d._tag, "Unusable")
    } finally {
      fs.rmSync(link, { force: true })
    }
  })

  // This machine kind: cgroup2 at /sys/fs/cgroup/unified (hybrid), the host in "/", root.
  const hybridRoot = fs.existsSync("/proc/self/mountinfo") &&
    Cgroup.parseMountInfo(fs.readFileSync("/proc/self/mountinfo", "latin1")).some((m) =>
      m.mountPoint === "/sys/fs/cgroup/unified" && !m.readOnly
    ) &&
    Cgroup.parseOwnCgroup(fs.readFileSync("/proc/self/cgroup", "latin1")) === "/" && process.geteuid?.() === 0
  it.runIf(hybridRoot)("detects the hybrid mount as the base (root, host in the v2 root)", () => {
    const d = Cgroup.detectUnsafe()
    assert.strictEqual(d._tag, "Usable", d._tag === "Unusable" ? d.reason : "")
    if (d._tag !== "Usable") return
    assert.strictEqual(d.base, "/sys/fs/cgroup/unified")
    assert.strictEqual(d.mount, "/sys/fs/cgroup/unified")
    assert.strictEqual(d.source, "mount")
    assert.strictEqual(d.ownCgroup, "/")
    // The configured base is taken as it is when it is usable.
    const configured = Cgroup.detectUnsafe({ base: "/sys/fs/cgroup/unified" })
    assert.strictEqual(configured._tag, "Usable")
    if (configured._tag === "Usable") assert.strictEqual(configured.source, "configured")
  })
})

describe(`cgroup containment on real processes${needsCgroups}`, () => {
  for (const name of Object.keys(shapes(newMark())) as Array<keyof ReturnType<typeof shapes>>) {
    it.live.skipIf(usable === undefined)(
      `${name}: placed by the wrapper, one cgroup.kill leaves 0 survivors`,
      () =>
        withFixture(({ leaf, mark, session }) =>
          Effect.gen(function*() {
            const { expect, script } = shapes(mark)[name]
            spawnWrapped(leaf, script, mark)
            yield* eventually(`the processes of "${name}"`, () => expect(survivorsOf(mark)))
            // Every marked process is in the leaf: it was there before the command ran.
            const seen = survivorsOf(mark)
            const members = new Set(yield* Cgroup.members(leaf))
            const outside = seen.filter((p) => !members.has(p.pid) && isLive(p.pid))
            assert.deepStrictEqual(outside.map(show), [], "marked processes outside the leaf")
            // The storm's short sleeps come and go between the two reads: only the living must be in both.
            const inSession = new Set(yield* Cgroup.members(session, { recursive: true }))
            const missing = [...members].filter((pid) => !inSession.has(pid) && isLive(pid))
            assert.deepStrictEqual(missing, [], "leaf members missing from the session's recursive members")
            assert.isTrue(yield* Cgroup.populated(leaf))
            // Only the event can end this wait (the poll is an hour away).
            const empty = yield* Effect.forkChild(Cgroup.awaitEmpty(leaf, { pollInterval: "1 hour" }))
            assert.strictEqual(yield* Cgroup.kill(leaf), "killed")
            const exit = yield* Fiber.await(empty).pipe(Effect.timeout("60 seconds"))
            assert.isTrue(Exit.isSuccess(exit), "populated 0 was reported")
            yield* eventually("no marked process left", () => survivorsOf(mark).length === 0)
            assert.isFalse(yield* Cgroup.populated(leaf))
            assert.strictEqual(yield* Cgroup.remove(leaf), "removed")
          })
        )
    )
  }

  it.live.skipIf(usable === undefined)(
    "post-spawn placement races with a child that forks at once",
    () =>
      withFixture(({ leaf, mark }) =>
        Effect.gen(function*() {
          const forks = 20
          const script = `i=0; while [ $i -lt ${forks} ]; do i=$((i+1)); ` +
            `setsid env -i sh -c 'exec ${mark.sleep}' ${mark.sh} & done; exec ${mark.sleep}`
          const child = NodeChildProcess.spawn("/bin/sh", ["-c", script, mark.sh], { stdio: "ignore", detached: true })
          child.on("error", () => {})
          yield* Cgroup.place(leaf, child.pid!)
          yield* eventually("the forks", () => survivorsOf(mark).length === forks + 1)
          const members = new Set(yield* Cgroup.members(leaf))
          assert.isTrue(members.has(child.pid!), "the leader itself was moved")
          const outside = survivorsOf(mark).filter((p) => !members.has(p.pid))
          // Documented, not asserted: how many got away depends on scheduling.
          yield* Effect.logInfo(
            `post-spawn placement: ${outside.length} of ${forks} children forked at once stayed outside the leaf`
          )
          yield* Cgroup.kill(leaf)
          sigkillAll(mark) // those outside
          yield* eventually("no marked process left", () => survivorsOf(mark).length === 0)
        })
      )
  )

  it.live.skipIf(usable === undefined)(
    "the wrapper passes words verbatim and fails with 125 when it cannot join",
    () =>
      withFixture(({ leaf, mark, session }) =>
        Effect.gen(function*() {
          const words = ["a b", "c\nd", "$HOME", "'q'", "\"dq\"", "`x`", "*", ""]
          const line = Cgroup.wrap(leaf, "/bin/sh", ["-c", "printf '%s|' \"$@\"", mark.sh, ...words])
          const out = NodeChildProcess.spawnSync(line.command, [...line.args], { encoding: "utf8" })
          assert.strictEqual(out.status, 0, out.stderr)
          assert.strictEqual(out.stdout, words.map((w) => `${w}|`).join(""))
          // A leaf that is gone: nothing runs, status 125, the reason on stderr.
          const gone = yield* Cgroup.createTree(session, 2)
          assert.strictEqual(yield* Cgroup.remove(gone), "removed")
          const flag = path.join(os.tmpdir(), `shepherd-cgtest-ran-${mark.id}`)
          const failed = Cgroup.wrap(gone, "/bin/sh", ["-c", `touch ${flag}`])
          const result = NodeChildProcess.spawnSync(failed.command, [...failed.args], { encoding: "utf8" })
          assert.strictEqual(result.status, Cgroup.placementFailedCode)
          assert.include(result.stderr, "cgroup.procs")
          assert.isFalse(fs.existsSync(flag), "the command did not run")
          assert.throws(() => Cgroup.wrap(leaf, "-n", []))
        })
      )
  )

  it.live.skipIf(usable === undefined)(
    "the wrapper through a descriptor joins exactly the checked leaf",
    () =>
      withFixture(({ leaf, mark }) =>
        Effect.gen(function*() {
          const fd = yield* Cgroup.descriptor(leaf)
          const line = Cgroup.wrapThroughFd(3, "/bin/sh", [
            "-c",
            `test -e /proc/self/fd/3 && echo fd-open || echo fd-closed; cat /proc/self/cgroup`,
            mark.sh
          ])
          const out = NodeChildProcess.spawnSync(line.command, [...line.args], {
            stdio: ["ignore", "pipe", "pipe", fd],
            encoding: "utf8"
          })
          assert.strictEqual(out.status, 0, out.stderr)
          assert.include(out.stdout, "fd-closed")
          const relative = leaf.path.slice(usable!.mount.length)
          assert.include(out.stdout, `0::${relative}\n`)
        })
      )
  )

  it.live.skipIf(usable === undefined)(
    "a leaf swapped after creation is refused by kill and members",
    () =>
      withFixture(({ leaf, mark }) =>
        Effect.gen(function*() {
          // Someone removes our (empty) leaf and creates another cgroup of the same name, with a process.
          fs.rmdirSync(leaf.path)
          fs.mkdirSync(leaf.path)
          const impostor = NodeChildProcess.spawn("/bin/sh", ["-c", `exec ${mark.sleep}`], {
            stdio: "ignore",
            detached: true
          })
          impostor.on("error", () => {})
          yield* Effect.addFinalizer(() =>
            Effect.sync(() => {
              try {
                fs.writeFileSync(path.join(leaf.path, "cgroup.kill"), "1")
              } catch {
                // gone
              }
              sigkillAll(mark)
            })
          )
          fs.writeFileSync(path.join(leaf.path, "cgroup.procs"), String(impostor.pid))
          assert.isFalse(Cgroup.isIntact(leaf))
          const killed = yield* Effect.flip(Cgroup.kill(leaf))
          assert.strictEqual(killed.reason, "Swapped")
          assert.strictEqual((yield* Effect.flip(Cgroup.members(leaf))).reason, "Swapped")
          assert.strictEqual((yield* Effect.flip(Cgroup.place(leaf, process.pid))).reason, "Swapped")
          // Not ours: untouched (and never removed by us).
          yield* Effect.sleep(50)
          assert.deepStrictEqual(survivorsOf(mark).map((p) => p.pid), [impostor.pid])
          assert.strictEqual(yield* Cgroup.remove(leaf), "gone")
          assert.isTrue(fs.existsSync(leaf.path))
          // Our recorded leaf is gone, so it is empty as far as we are concerned.
          yield* Cgroup.awaitEmpty(leaf).pipe(Effect.timeout("60 seconds"))
          fs.writeFileSync(path.join(leaf.path, "cgroup.kill"), "1")
          yield* eventually("the impostor's exit", () => survivorsOf(mark).length === 0)
          yield* eventually("the impostor's cgroup emptied", () => {
            try {
              fs.rmdirSync(leaf.path)
              return true
            } catch {
              return false
            }
          })
        })
      )
  )

  it.live.skipIf(usable === undefined)(
    "remove waits for a killed tree's last exits; a live tree stays Busy",
    () =>
      withFixture(({ leaf, mark, session }) =>
        Effect.gen(function*() {
          spawnWrapped(leaf, `${mark.sleep} & ${mark.sleep} & exec ${mark.sleep}`, mark)
          yield* eventually("three sleeps", () => survivorsOf(mark).length === 3)
          const busy = yield* Effect.flip(Cgroup.remove(session, { timeout: "50 millis" }))
          assert.strictEqual(busy.reason, "Busy")
          assert.strictEqual(survivorsOf(mark).length, 3, "remove never kills")
          yield* Cgroup.kill(leaf)
          // Right after the kill: the members may not have exited yet.
          assert.strictEqual(yield* Cgroup.remove(session, { timeout: "60 seconds" }), "removed")
          assert.isFalse(fs.existsSync(leaf.path))
          assert.isFalse(fs.existsSync(session.path))
          assert.strictEqual(yield* Cgroup.remove(session), "gone")
        })
      )
  )

  it.live.skipIf(usable === undefined)(
    "listPools finds our pool by its id, with its sentinel's liveness",
    () =>
      withFixture(({ mark, pool, sentinel }) =>
        Effect.gen(function*() {
          const entry = () => Effect.map(Cgroup.listPools(usable!), (all) => all.find((e) => e.cgroup.ino === pool.ino))
          const before = yield* entry()
          assert.strictEqual(before?.poolId, `cgtest~${mark.id}`)
          assert.isFalse(before?.sentinelAlive)
          assert.strictEqual(sentinel.path, path.join(pool.path, Cgroup.sentinelDirName))
          const line = Cgroup.wrap(sentinel, "/bin/sh", ["-c", `exec ${mark.sleep}`, mark.sh])
          NodeChildProcess.spawn(line.command, [...line.args], { stdio: "ignore", detached: true }).on(
            "error",
            () => {}
          )
          yield* eventually("the fake sentinel in its leaf", () => procsOf(sentinel).length === 1)
          const after = yield* entry()
          assert.isTrue(after?.sentinelAlive)
          assert.isTrue(after?.populated)
        })
      )
  )

  // An unprivileged user (nobody) run with setpriv, once inside a cgroup delegated to it (chowned as
  // systemd's Delegate=yes does) and once not.
  const canDropPrivileges = process.geteuid?.() === 0 && fs.existsSync("/usr/bin/setpriv")
  it.live.skipIf(usable === undefined || !canDropPrivileges)(
    `an unprivileged user: usable in a delegated subtree, not outside it${
      canDropPrivileges ? "" : " (skipped: needs root and setpriv)"
    }`,
    () =>
      withFixture(({ mark, pool }) =>
        Effect.gen(function*() {
          const nobody = 65534
          const fixture = fileURLToPath(new URL("./fixtures/cgroupDelegated.ts", import.meta.url))
          const asNobody = ["--reuid", String(nobody), "--regid", String(nobody), "--clear-groups"]
          const run = (command: string, args: ReadonlyArray<string>) => {
            const r = NodeChildProcess.spawnSync(command, [...args], { encoding: "utf8", timeout: 60_000 })
            assert.strictEqual(r.status, 0, r.stderr)
            return JSON.parse(r.stdout) as Record<string, unknown>
          }
          const node = [process.execPath, fixture, mark.sleep]
          for (const file of ["", "/cgroup.procs", "/cgroup.subtree_control", "/cgroup.threads"]) {
            fs.chownSync(`${pool.path}${file}`, nobody, nobody)
          }
          const line = Cgroup.wrap(pool, "/usr/bin/setpriv", [...asNobody, ...node])
          const delegated = run(line.command, line.args)
          assert.deepInclude(delegated, {
            uid: nobody,
            tag: "Usable",
            base: pool.path,
            source: "delegated",
            members: 2,
            emptied: true,
            removed: "removed"
          })
          const outside = run("/usr/bin/setpriv", [...asNobody, ...node])
          assert.deepInclude(outside, { uid: nobody, tag: "Unusable" })
          assert.include(String(outside.reason), "not writable")
          assert.deepStrictEqual(survivorsOf(mark).map(show), [])
        })
      )
  )

  it.live.skipIf(usable === undefined)(
    "awaitEmpty closes its watch when interrupted",
    () =>
      withFixture(({ leaf, mark }) =>
        Effect.gen(function*() {
          spawnWrapped(leaf, `exec ${mark.sleep}`, mark)
          yield* eventually("the sleep in its leaf", () => procsOf(leaf).length === 1)
          const before = inotifyWatches()
          const waiting = yield* Effect.forkChild(Cgroup.awaitEmpty(leaf))
          yield* eventually("the watch", () => inotifyWatches() === before + 1)
          yield* Fiber.interrupt(waiting)
          assert.strictEqual(inotifyWatches(), before)
          // And it completes when the tree empties (here through its poll or its event).
          const again = yield* Effect.forkChild(Cgroup.awaitEmpty(leaf, { pollInterval: "20 millis" }))
          yield* Cgroup.kill(leaf)
          assert.isTrue(Exit.isSuccess(yield* Fiber.await(again).pipe(Effect.timeout("60 seconds"))))
          // Closed from inside its own event, the watch goes when libuv ends that round of events.
          yield* eventually("the watch closed", () => inotifyWatches() === before)
        })
      )
  )
})

/** The number of inotify watches this process holds (from the fdinfo of its inotify descriptors). */
const inotifyWatches = (): number => {
  let n = 0
  for (const fd of fs.readdirSync("/proc/self/fd")) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`) !== "anon_inode:inotify") continue
      n += fs.readFileSync(`/proc/self/fdinfo/${fd}`, "latin1").split("\n").filter((l) => l.startsWith("inotify wd:"))
        .length
    } catch {
      // closed meanwhile
    }
  }
  return n
}
