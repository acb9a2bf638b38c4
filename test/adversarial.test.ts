/**
 * Adversarial tests of the trust rules (see DESIGN.md "Trust rules"), on real
 * processes and real files. Each test is an attack that once worked or is
 * still open (then `it.skip`, with the reason).
 */
import { assert, describe, it } from "@effect/vitest"
import * as DoctorHttp from "@shepherd/node/DoctorHttp"
import * as NodeProcessTable from "@shepherd/node/NodeProcessTable"
import * as NodeShepherd from "@shepherd/node/NodeShepherd"
import * as HttpServer from "effect/http/HttpServer"
import { Effect } from "effect"
import * as Layer from "effect/Layer"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { LedgerRecord } from "@shepherd/core/Ledger"
import * as NodeLedger from "@shepherd/node/NodeLedger"
import * as procfs from "../packages/node/src/internal/procfs.ts"
import { isAlive, waitUntil } from "./support.ts"

const line = (r: LedgerRecord) => `${JSON.stringify(r)}\n`

const killAll = (pids: Array<number>) => {
  for (const pid of pids.splice(0)) {
    try {
      process.kill(pid, "SIGKILL")
    } catch {
      // gone
    }
  }
}

const asRoot = process.geteuid?.() === 0
const nobody = 65534

describe.runIf(asRoot)("adversarial: the ledger's path", () => {
  // A directory that is ours and private proves nothing if another user can rename it away: in a
  // parent they can write (without the sticky bit), they swap our directory for a symlink to
  // another directory of ours, and every later compaction (which resolves the path again) writes
  // there — replacing another pool's live ledger, whose host keeps appending to an unlinked file.
  it.live("a private directory below one other users can rename entries in is refused", () =>
    Effect.gen(function*() {
      const root = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-adv-"))
      try {
        fs.chmodSync(root, 0o755)
        const shared = path.join(root, "shared")
        fs.mkdirSync(shared)
        fs.chmodSync(shared, 0o777) // world-writable, no sticky bit
        const mine = path.join(shared, "mine")
        fs.mkdirSync(mine, { mode: 0o700 })
        const victimDir = path.join(root, "victim")
        fs.mkdirSync(victimDir, { mode: 0o700 })
        const victim = path.join(victimDir, "pool.ledger")
        const victimText = line({
          _tag: "Intent",
          poolId: "v~1",
          shepherdId: "v~1:1",
          session: "s",
          command: "x",
          at: 1
        })
        fs.writeFileSync(victim, victimText, { mode: 0o600 })
        const opened = yield* Effect.result(Effect.scoped(Effect.gen(function*() {
          const ledger = yield* NodeLedger.make({ path: path.join(mine, "pool.ledger") })
          // The other user swaps the directory for a symlink to the victim's directory.
          NodeChildProcess.execFileSync("setpriv", [
            `--reuid=${nobody}`,
            `--regid=${nobody}`,
            "--clear-groups",
            "sh",
            "-c",
            `mv ${mine} ${mine}.old && ln -s ${victimDir} ${mine}`
          ])
          yield* ledger.compact
        })))
        // Either the open is refused, or nothing outside our directory is touched.
        assert.strictEqual(fs.readFileSync(victim, "utf8"), victimText, "another ledger was replaced")
        assert.strictEqual(opened._tag, "Failure", "a path other users can redirect is refused at open")
      } finally {
        fs.rmSync(root, { recursive: true, force: true })
      }
    }))
})

describe.runIf(asRoot)("adversarial: symlinks on the way to the ledger", () => {
  // In /tmp (sticky) nobody may rename our entries, but a symlink another user owns there is theirs
  // to replace: the path through it is theirs to point at any directory of ours.
  it.live("a path through another user's symlink is refused", () =>
    Effect.gen(function*() {
      const root = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-adv-"))
      fs.chmodSync(root, 0o1777)
      const link = path.join(root, "link")
      try {
        const mine = path.join(root, "mine")
        fs.mkdirSync(mine, { mode: 0o700 })
        fs.symlinkSync(mine, link)
        fs.lchownSync(link, nobody, nobody)
        const opened = yield* Effect.result(
          Effect.scoped(NodeLedger.make({ path: path.join(link, "sub", "pool.ledger") }))
        )
        assert.strictEqual(opened._tag, "Failure")
        if (opened._tag === "Failure") assert.include(String(opened.failure), "symlink owned by uid 65534")
        assert.isFalse(fs.existsSync(path.join(mine, "sub")), "nothing is created through it")
      } finally {
        fs.rmSync(root, { recursive: true, force: true })
      }
    }))
})

describe("adversarial: the doctor's HTTP server", () => {
  // Any local user can connect to 127.0.0.1. Connections that never send a request are held for
  // the headers timeout (60 s by default), each one a descriptor of the host: enough of them and the
  // host cannot open a pipe to spawn, a temporary file to compact, or /proc to scan.
  it.live("a local flood of idle connections does not take the host's descriptors", () => {
    const flood = 600
    let client: NodeChildProcess.ChildProcess | undefined
    return Effect.gen(function*() {
      const address = (yield* HttpServer.HttpServer).address
      if (address._tag !== "InetAddressV4") return assert.fail("not an inet address")
      const fds = () => fs.readdirSync("/proc/self/fd").length
      const before = fds()
      // The flood comes from another process, so that only the server's ends are counted here.
      const script = `
        const net = require("node:net")
        let closed = 0
        const sockets = []
        for (let i = 0; i < ${flood}; i++) {
          const s = net.connect(${address.port}, "127.0.0.1")
          s.on("error", () => {})
          s.on("close", () => { closed++; process.stdout.write(closed + "\\n") })
          sockets.push(s)
        }
        process.stdin.on("end", () => process.exit(0))
        process.stdin.resume()`
      client = NodeChildProcess.spawn(process.execPath, ["-e", script], {
        stdio: ["pipe", "pipe", "ignore"],
        env: { ...process.env, SHEPHERD_TEST_RUN_DIR: process.env.SHEPHERD_TEST_RUN_DIR ?? "/nonexistent" }
      })
      let closedByServer = 0
      client.stdout!.on("data", (chunk: Buffer) => {
        const last = chunk.toString().trim().split("\n").pop()
        if (last !== undefined && last !== "") closedByServer = Number(last)
      })
      // Until the server holds (nearly) all of them, or has dropped those beyond what it keeps.
      yield* Effect.promise(() => waitUntil(() => fds() - before >= flood - 20 || closedByServer >= flood / 2, 60_000))
      const held = fds() - before
      assert.isBelow(held, flood / 2, `the host holds ${held} descriptors for ${flood} idle connections`)
    }).pipe(
      Effect.provide(
        DoctorHttp.layer().pipe(
          Layer.provideMerge(NodeShepherd.layer({ name: "t-adv-http", ledger: false }))
        )
      ),
      Effect.ensuring(Effect.sync(() => {
        client?.stdin?.end()
        client?.kill("SIGKILL")
      }))
    )
  }, 30_000)
})

describe("adversarial: three hosts and a stale lock", () => {
  // OPEN (design): taking a stale lock over is rename-aside, check, replace; a taker that finds it
  // moved a *fresh* lock (another taker won meanwhile) puts it back with a hard link. Between its
  // rename and its put-back there is no lock file at all, and a third host starting then simply
  // creates one: two hosts own the ledger, and each one's compactions drop the other's records.
  // Below, host B's two steps are done by hand at the moment B's code does them (B judged the
  // dead owner's lock stale just before A replaced it). A fix needs a lock that is never absent
  // while held (flock/fcntl on the lock file), not a shorter window.
  it.live.skip("a taker that moved a fresh lock aside does not let a third host in", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-adv-"))
      const file = path.join(dir, "pool.ledger")
      const lockFile = `${file}.lock`
      try {
        const dead = {
          pid: 4_194_000,
          startTime: "1",
          bootId: procfs.readBootId(),
          token: "dead",
          exe: process.execPath
        }
        fs.writeFileSync(lockFile, JSON.stringify(dead), { mode: 0o600 })
        yield* Effect.scoped(Effect.gen(function*() {
          yield* NodeLedger.make({ path: file }) // host A takes the dead owner's lock over
          // Host B, which judged the dead owner's lock stale a moment ago, moves "it" aside.
          const aside = `${lockFile}.stale-${process.pid}-0123456789abcdef`
          fs.renameSync(lockFile, aside)
          // Host C starts now.
          const third = yield* Effect.result(Effect.scoped(NodeLedger.make({ path: file })))
          // B sees it moved A's lock, puts it back (too late) and gives up.
          try {
            fs.linkSync(aside, lockFile)
          } catch {
            // C holds the name now
          }
          fs.rmSync(aside, { force: true })
          assert.strictEqual(third._tag, "Failure", "a third host opened a ledger that host A owns")
        }))
      } finally {
        fs.rmSync(dir, { recursive: true, force: true })
      }
    }))
})

describe("adversarial: what the CLI prints", () => {
  // The doctor and reap print strings that others choose: a member's command line (a tree may run
  // any command), a SHEPHERD_ID any process of the user may carry, a ledger's session names. Raw
  // control characters there drive the operator's terminal: clear the screen, overwrite lines to
  // hide orphans, set the title, write the clipboard (OSC 52).
  it("`shepherd doctor` and `reap --dry-run` print no control characters they did not write", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-adv-"))
    const file = path.join(dir, "pool.ledger")
    const esc = "\u001b"
    let sleeper: NodeChildProcess.ChildProcess | undefined
    try {
      const bootId = procfs.readBootId()
      const records: Array<LedgerRecord> = [
        { _tag: "HostStarted", poolId: "p~1", host: { pid: 4_194_000, startTime: "1", bootId }, at: 1 },
        {
          _tag: "Intent",
          poolId: "p~1",
          shepherdId: "p~1:1",
          session: `s${esc}]0;owned${"\u0007"}`,
          command: `cmd ${esc}[2J`,
          at: 2
        }
      ]
      fs.writeFileSync(file, records.map(line).join(""), { mode: 0o600 })
      // A process carrying one of the ledger's pool ids with a hostile id, and a hostile argument.
      sleeper = NodeChildProcess.spawn("sleep", ["1000"], {
        argv0: `${esc}[2K${esc}[1Asleep`,
        stdio: "ignore",
        env: {
          PATH: process.env.PATH,
          SHEPHERD_ID: `p~1:${esc}[2Jx`,
          SHEPHERD_TEST_RUN_DIR: process.env.SHEPHERD_TEST_RUN_DIR ?? "/nonexistent"
        }
      })
      const pid = sleeper.pid!
      assert.isTrue(
        await waitUntil(() => {
          try {
            return fs.readFileSync(`/proc/${pid}/cmdline`, "latin1").endsWith("sleep\u00001000\u0000")
          } catch {
            return false
          }
        }, 60_000),
        "the process has exec'd"
      )
      const bin = path.join(path.dirname(new URL(import.meta.url).pathname), "..", "packages", "cli", "src", "bin.ts")
      const run = (args: ReadonlyArray<string>) =>
        NodeChildProcess.spawnSync(process.execPath, [bin, ...args], {
          encoding: "utf8",
          timeout: 30_000,
          env: { ...process.env, NO_COLOR: "1" }
        })
      const doctor = run(["doctor", "--ledger", file])
      assert.include(doctor.stdout, "untracked", JSON.stringify([doctor.stdout, doctor.stderr]))
      assert.include(doctor.stdout, String(pid))
      const reap = run(["reap", "--dry-run", "--ledger", file])
      // oxlint-disable-next-line no-control-regex -- looking for control characters is the point
      const raw = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/
      for (const [name, out] of [["doctor", doctor.stdout], ["reap", reap.stdout]] as const) {
        assert.notMatch(out, raw, `${name} printed a raw control character: ${JSON.stringify(out)}`)
      }
    } finally {
      sleeper?.kill("SIGKILL")
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }, 60_000)
})

describe("adversarial: a ledger path pointed at the wrong file", () => {
  // A careless `ledger: ".env"` (or `shepherd doctor --ledger ~/.aws/credentials`): the file is
  // refused untouched, and its content must not be copied into the error, the logs or the terminal.
  it.live("the refusal names the file without quoting it", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-adv-"))
      const file = path.join(dir, "app.env")
      const secret = "hunter2-s3cr3t"
      try {
        fs.writeFileSync(file, `API_TOKEN=${secret}\nOTHER=1\n`, { mode: 0o600 })
        const opened = yield* Effect.flip(Effect.scoped(NodeLedger.make({ path: file })))
        assert.include(opened.message, "is not a Shepherd ledger")
        assert.notInclude(opened.message, secret)
        const looked = yield* Effect.flip(NodeLedger.snapshot(file))
        assert.include(looked.message, "is not a Shepherd ledger")
        assert.notInclude(looked.message, secret)
        assert.strictEqual(fs.readFileSync(file, "utf8"), `API_TOKEN=${secret}\nOTHER=1\n`)
      } finally {
        fs.rmSync(dir, { recursive: true, force: true })
      }
    }))
})

describe.runIf(asRoot)("adversarial: `shepherd reap` on a full disk", () => {
  // The disk fills up (as it does on a machine in trouble) while reap is terminating orphans: the
  // exit of the first tree cannot be recorded. That must not abandon the other trees half-way
  // (one that ignores SIGTERM would never get its SIGKILL).
  it("an exit that cannot be recorded does not stop the other trees' termination", async () => {
    const mount = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-adv-full-"))
    const started: Array<number> = []
    let mounted = false
    try {
      NodeChildProcess.execFileSync("mount", ["-t", "tmpfs", "-o", "size=16k,mode=700", "tmpfs", mount])
      mounted = true
      const dir = path.join(mount, "state")
      fs.mkdirSync(dir, { mode: 0o700 })
      const env = { PATH: process.env.PATH, SHEPHERD_TEST_RUN_DIR: process.env.SHEPHERD_TEST_RUN_DIR ?? "/nonexistent" }
      const quick = NodeChildProcess.spawn("sleep", ["1000"], { detached: true, stdio: "ignore", env })
      const stubborn = NodeChildProcess.spawn("sh", ["-c", "trap '' TERM; exec sleep 1000"], {
        detached: true,
        stdio: "ignore",
        env
      })
      started.push(quick.pid!, stubborn.pid!)
      assert.isTrue(
        await waitUntil(() => {
          try {
            return fs.readFileSync(`/proc/${stubborn.pid}/cmdline`, "latin1").startsWith("sleep\u0000")
          } catch {
            return false
          }
        }, 60_000)
      )
      const bootId = procfs.readBootId()
      const records: Array<LedgerRecord> = [{
        _tag: "HostStarted",
        poolId: "p~1",
        host: { pid: 4_194_000, startTime: "1", bootId },
        at: 1
      }]
      for (const [i, child] of [quick, stubborn].entries()) {
        const identity = NodeProcessTable.identify(child.pid!)!
        records.push(
          { _tag: "Intent", poolId: "p~1", shepherdId: `p~1:${i}`, session: "s", command: "sleep 1000", at: 2 },
          { _tag: "Registered", shepherdId: `p~1:${i}`, pgid: child.pid!, identity, at: 3 }
        )
      }
      // The ledger fills its page exactly (blank lines are skipped), a filler takes all but one
      // page: the lock fits, and nothing appended after it does.
      const text = records.map(line).join("")
      const file = path.join(dir, "pool.ledger")
      fs.writeFileSync(file, text + "\n".repeat(4096 - Buffer.byteLength(text)), { mode: 0o600 })
      fs.writeFileSync(path.join(mount, "filler"), Buffer.alloc(8192))
      const bin = path.join(path.dirname(new URL(import.meta.url).pathname), "..", "packages", "cli", "src", "bin.ts")
      const reap = NodeChildProcess.spawnSync(process.execPath, [bin, "reap", "--ledger", file], {
        encoding: "utf8",
        timeout: 30_000,
        env: { ...process.env, NO_COLOR: "1", SHEPHERD_GRACE: "1 second", SHEPHERD_FORCE_WAIT: "1 second" }
      })
      const survivors = started.filter((pid) => isAlive(pid) && NodeProcessTable.identify(pid) !== undefined)
      assert.deepStrictEqual(survivors, [], `reap left trees behind: ${reap.stdout} ${reap.stderr}`)
    } finally {
      killAll(started)
      if (mounted) NodeChildProcess.execFileSync("umount", [mount])
      fs.rmSync(mount, { recursive: true, force: true })
    }
  }, 60_000)
})

describe.runIf(asRoot)("adversarial: hosts in two pid namespaces", () => {
  // OPEN (design): two containers that share a state volume (same uid, same pool name, so the same
  // ledger) see each other's pids as other processes or none. The lock's owner pid names another
  // process here, so a live host's lock is judged "gone" and taken over: both hosts own the ledger,
  // and the second one's recovery judges the first one's live trees by pids of the wrong namespace
  // (found "Gone", recorded as exited: untracked if the first host then dies hard). A fix needs the
  // pid namespace in the lock and in every identity, and a rule for a lock of a namespace that
  // cannot be seen from here (live, or a container that is gone?).
  it.skip("a live host in another pid namespace keeps its lock", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-adv-"))
    const file = path.join(dir, "pool.ledger")
    const fixture = path.join(path.dirname(new URL(import.meta.url).pathname), "fixtures", "ledgerHost.ts")
    const host = NodeChildProcess.spawn(
      "unshare",
      ["--pid", "--fork", "--kill-child", "--mount-proc", process.execPath, fixture, file],
      { stdio: ["ignore", "pipe", "ignore"] }
    )
    try {
      let out = ""
      host.stdout!.on("data", (chunk: Buffer) => {
        out += chunk.toString()
      })
      assert.isTrue(await waitUntil(() => out.includes("\n"), 60_000), "the namespaced host opened its ledger")
      assert.include(out, "\"opened\":true")
      const second = await Effect.runPromise(Effect.result(Effect.scoped(NodeLedger.make({ path: file }))))
      assert.strictEqual(second._tag, "Failure", "a second host took over the lock of a live host")
    } finally {
      host.kill("SIGKILL")
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe.runIf(asRoot)("adversarial: root looks at another user's ledger", () => {
  // `shepherd doctor --ledger ~alice/...` as root: the lock's owner is alice's live host. Judged
  // as if it had to be root's own host, it was shown as gone, with the advice to reap its trees.
  it("a live host of another user is shown alive", async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-adv-"))
    fs.chmodSync(root, 0o755)
    const dir = path.join(root, "state")
    fs.mkdirSync(dir, { mode: 0o700 })
    fs.chownSync(dir, nobody, nobody)
    const file = path.join(dir, "pool.ledger")
    const fixture = path.join(path.dirname(new URL(import.meta.url).pathname), "fixtures", "ledgerHost.ts")
    const host = NodeChildProcess.spawn(
      "setpriv",
      [`--reuid=${nobody}`, `--regid=${nobody}`, "--clear-groups", process.execPath, fixture, file],
      { stdio: ["ignore", "pipe", "ignore"] }
    )
    try {
      let out = ""
      host.stdout!.on("data", (chunk: Buffer) => {
        out += chunk.toString()
      })
      assert.isTrue(await waitUntil(() => out.includes("\n"), 60_000), "the host opened its ledger")
      assert.include(out, "\"opened\":true")
      const snapshot = await Effect.runPromise(NodeLedger.snapshot(file))
      assert.strictEqual(snapshot.owner?.identity.pid, host.pid)
      assert.isTrue(snapshot.owner?.alive, "the live host of another user is alive")
    } finally {
      host.kill("SIGKILL")
      fs.rmSync(root, { recursive: true, force: true })
    }
  })
})

describe.runIf(asRoot)("adversarial: group-writable parents", () => {
  // Where each user has a private group and a umask of 002 (Fedora, RHEL), ~/.local/state is
  // often group-writable: by the user's own group, which is nobody else. A parent writable by a
  // group with other members is refused.
  it.live("a parent writable only by its owner's private group is accepted; by a shared group, refused", () =>
    Effect.gen(function*() {
      const root = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-adv-"))
      try {
        const parent = path.join(root, "state")
        fs.mkdirSync(parent)
        // gid 0 is root's own group here (no other user has it, nobody is listed in it).
        fs.chmodSync(parent, 0o770)
        yield* Effect.scoped(NodeLedger.make({ path: path.join(parent, "shepherd", "a.ledger") }))
        // `users` (gid 100) is not root's own group.
        fs.chownSync(parent, 0, 100)
        const refused = yield* Effect.flip(
          Effect.scoped(NodeLedger.make({ path: path.join(parent, "shepherd", "b.ledger") }))
        )
        assert.include(refused.message, "writable by other users without the sticky bit")
      } finally {
        fs.rmSync(root, { recursive: true, force: true })
      }
    }))
})
