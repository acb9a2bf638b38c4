/**
 * Adversarial tests of the lifeline's writes (NodeLifeline `writeTo`, issue 11: one plain write(2)
 * on the pipe's descriptor when nothing is queued on the stream, the stream otherwise), on real
 * processes: a host (test/fixtures/advLifelineHost.ts) registers trees whose members carry no
 * SHEPHERD_ID (`env -i`), so that only the sentinel's registration of their group can end them,
 * while its sentinel is stalled (SIGSTOP) and its pipe is full. The "pipe" is a Unix stream socket
 * (libuv's stdio pipes); in the first test the host's SO_SNDBUF is shrunk to its minimum (through
 * pidfd_getfd(2)) so that a few registrations fill it; the others keep the default (~170
 * registrations fill it). A spawn returns only once its registration is in that socket: with the
 * pipe full, spawns wait (and fail after the pool's `lifelineWait`).
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import * as NodeChildProcess from "node:child_process"
import { fileURLToPath } from "node:url"
import { cleanupPools, track } from "./harness.ts"
import { isAlive, processes, waitUntil } from "./support.ts"

afterEach(cleanupPools)

const fixture = fileURLToPath(new URL("./fixtures/advLifelineHost.ts", import.meta.url))

const python = (script: string, ...args: Array<string>) =>
  NodeChildProcess.execFileSync("python3", ["-c", script, ...args], { encoding: "latin1" }).trim()

/**
 * The sentinel's stdin is a Unix stream socket (libuv's stdio "pipe"); a sender's writes wait on
 * its own SO_SNDBUF. The helper finds the host's end (the peer of the sentinel's fd 0, through
 * `ss -x`) and takes a copy of either end with pidfd_getfd(2).
 */
const socketHelper = String.raw`
import os, sys, re, socket, ctypes, subprocess, fcntl, struct, termios
libc = ctypes.CDLL(None, use_errno=True)
def inode(pid, fd):
    return re.search(r'socket:\[(\d+)\]', os.readlink('/proc/%d/fd/%d' % (pid, fd))).group(1)
def getfd(pid, fd):
    pidfd = os.pidfd_open(pid)
    new = libc.syscall(438, pidfd, fd, 0)
    os.close(pidfd)
    if new < 0: raise OSError(ctypes.get_errno(), 'pidfd_getfd')
    return new
def peer_fd(sentinel, host):
    mine = inode(sentinel, 0)
    for line in subprocess.check_output(['ss', '-xanH']).decode().splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[5] == mine:
            peer = parts[7]
            for fd in os.listdir('/proc/%d/fd' % host):
                try:
                    if os.readlink('/proc/%d/fd/%s' % (host, fd)) == 'socket:[%s]' % peer: return int(fd)
                except OSError: pass
    raise SystemExit('host end not found')
op, sentinel, host = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if op == 'shrink':
    fd = getfd(host, peer_fd(sentinel, host))
    s = socket.socket(fileno=fd)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    print(s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
    s.detach(); os.close(fd)
else:
    fd = getfd(sentinel, 0)
    print(struct.unpack('i', fcntl.ioctl(fd, termios.FIONREAD, b'\0' * 4))[0])
    os.close(fd)
`

/** Shrinks the host's send buffer towards its sentinel (the kernel doubles the value asked for). */
const shrinkPipe = (sentinel: number, host: number) =>
  Number(python(socketHelper, "shrink", String(sentinel), String(host)))

/** Bytes waiting in the sentinel's stdin. */
const pending = (sentinel: number, host: number) =>
  Number(python(socketHelper, "pending", String(sentinel), String(host)))

/** Live processes in the groups led by `leaders` (the trees' members: none carries a cookie). */
const inGroups = (leaders: ReadonlySet<number>) =>
  processes().filter((p) => leaders.has(p.pgid) && p.state !== "Z" && p.state !== "X")

const sig = (pid: number, signal: NodeJS.Signals) => {
  try {
    process.kill(pid, signal)
  } catch {
    // gone
  }
}

interface Host {
  readonly child: NodeChildProcess.ChildProcess
  /** Every JSON line the host printed, in order. */
  readonly lines: Array<any>
  readonly output: () => string
  readonly send: (line: string) => void
}

const startHost = (marker: string, lifelineWait?: string): Host => {
  const child = NodeChildProcess.spawn(
    process.execPath,
    lifelineWait === undefined ? [fixture, marker] : [fixture, marker, lifelineWait],
    { stdio: ["pipe", "pipe", "pipe"] }
  )
  let output = ""
  let partial = ""
  const lines: Array<any> = []
  child.stdout!.on("data", (chunk: Buffer) => {
    const text = chunk.toString("utf8")
    output += text
    const parts = (partial + text).split("\n")
    partial = parts.pop()!
    for (const line of parts) if (line.startsWith("{")) lines.push(JSON.parse(line))
  })
  child.stderr!.on("data", (c: Buffer) => {
    output += c.toString("utf8")
  })
  return { child, lines, output: () => output, send: (line) => void child.stdin!.write(`${line}\n`) }
}

const alive = (host: Host) => host.child.exitCode === null && host.child.signalCode === null

/** The host's lines carrying `key`. */
const linesWith = (host: Host, key: string) => host.lines.filter((l) => key in l)

/** Waits for the host's `n`th line carrying `key` (from 1); fails with the host's output. */
const nth = async (host: Host, key: string, n: number): Promise<any> => {
  await waitUntil(() => linesWith(host, key).length >= n || !alive(host))
  const found = linesWith(host, key)
  if (found.length < n) throw new Error(`no line ${n} with "${key}" from the host:\n${host.output()}`)
  return found[n - 1]
}

/** The host's lifeline status, asked now. */
const statusOf = async (host: Host) => {
  const n = linesWith(host, "status").length + 1
  host.send("status")
  return (await nth(host, "status", n)).status
}

/** Until some spawn of the host waits for its stalled sentinel (the pipe is full: nothing drains it). */
const untilWaiting = async (host: Host) => {
  for (let i = 0; i < 3000; i++) {
    if (((await statusOf(host)).waiting ?? 0) >= 1) return
    await new Promise((r) => setTimeout(r, 20))
  }
  throw new Error(`no spawn waits for the sentinel:\n${host.output()}`)
}

/** The leaders the host reported (spawns that returned). */
const reported = (host: Host) => new Set(linesWith(host, "leader").map((l) => l.leader as number))

/** Live tree leaders started by the host (their `sh` carries the marker), reported or not. */
const startedLeaders = (marker: string) =>
  new Set(
    processes().filter((p) => p.cmdline.includes(`${marker}-`) && p.pid === p.pgid && p.state !== "Z")
      .map((p) => p.pid)
  )

/**
 * Starts a host, waits for its sentinel to read the pool line, optionally shrinks its pipe, stalls
 * the sentinel (SIGSTOP), and runs `body`; whatever happens, the host, the sentinel and every tree
 * the host started (found by the marker, reported or not) are killed at the end.
 */
const withStalledHost = async <A>(
  options: { readonly shrink: boolean; readonly lifelineWait?: string },
  body: (host: Host, sentinel: number, marker: string) => Promise<A>
): Promise<A> => {
  const marker = `adv-lifeline-${process.pid}-${Date.now()}`
  const host = startHost(marker, options.lifelineWait)
  let sentinel: number | undefined
  try {
    const hello = await nth(host, "poolId", 1)
    track(`${hello.poolId}:`)
    sentinel = hello.sentinel as number
    // The sentinel has read the pool line: the pipe is empty, it can be shrunk.
    assert.isTrue(await waitUntil(() => pending(sentinel!, host.child.pid!) === 0), "the sentinel reads")
    if (options.shrink) assert.isAtMost(shrinkPipe(sentinel, host.child.pid!), 16384)
    sig(sentinel, "SIGSTOP")
    return await body(host, sentinel, marker)
  } finally {
    host.child.kill("SIGKILL")
    if (sentinel !== undefined) {
      sig(sentinel, "SIGCONT")
      sig(sentinel, "SIGKILL")
    }
    // Every tree the host started (its leader carries the marker), and every one it reported.
    const groups = new Set([...startedLeaders(marker), ...reported(host)])
    for (const p of inGroups(groups)) sig(p.pid, "SIGKILL")
  }
}

/** SIGKILLs the host, lets the sentinel go and waits for its sweep. */
const killHost = async (host: Host, sentinel: number) => {
  const exited = new Promise<void>((resolve) => {
    if (!alive(host)) resolve()
    else host.child.on("exit", () => resolve())
  })
  host.child.kill("SIGKILL")
  await exited
  sig(sentinel, "SIGCONT")
  assert.isTrue(await waitUntil(() => !isAlive(sentinel)), "the sentinel finished its sweep")
}

/** Every reported tree is up (sh and its sleep). */
const treesUp = async (leaders: ReadonlySet<number>) =>
  assert.isTrue(
    await waitUntil(() => inGroups(leaders).length >= 2 * leaders.size),
    `trees up: ${inGroups(leaders).length} of ${2 * leaders.size}`
  )

const show = (left: ReadonlyArray<{ pid: number; pgid: number; cmdline: string }>) =>
  left.map((p) => `${p.pid} pgid ${p.pgid}: ${p.cmdline}`)

describe.runIf(process.platform === "linux")("adversarial: lifeline registrations through a full pipe", () => {
  // With the pipe full, registrations and goodbyes (trees that exit at once) interleave in the
  // stream's queue after the plain writes, and the spawns wait; once the sentinel has drained them
  // every spawn has returned, and a host SIGKILL ends every tree: nothing reordered or lost across
  // the write(2)/stream hand-over.
  it("registrations queued behind a full pipe reach a slow sentinel in order", () =>
    withStalledHost({ shrink: true, lifelineWait: "10 minutes" }, async (host, sentinel) => {
      const commands = ["spawn 100", "short 60", "spawn 100", "short 60", "spawn 100"]
      for (const command of commands) host.send(command)
      await untilWaiting(host)
      sig(sentinel, "SIGCONT")
      await nth(host, "done", commands.length)
      assert.deepStrictEqual(linesWith(host, "failed"), [])
      const leaders = reported(host)
      assert.strictEqual(leaders.size, 300)
      await treesUp(leaders)
      // Drained: the pipe stays empty for a while (the host's queue has gone through it).
      let empty = 0
      await waitUntil(() => {
        empty = pending(sentinel, host.child.pid!) === 0 ? empty + 1 : 0
        return empty >= 20
      })
      await killHost(host, sentinel)
      assert.deepStrictEqual(show(inGroups(leaders)), [])
    }))

  // Was BROKEN (issue: `register` returned once the line was handed to the pipe's stream; with the
  // pipe full the rest waited in the host's memory and a SIGKILLed host lost it: ~430 of 600 trees
  // lived on). How much is "full": the sentinel's stdin is a Unix stream socket, whose sender is
  // limited by its SO_SNDBUF (212992) counted in socket buffers, ~1.2 KiB each whatever the line's
  // length; every registration is one write, so about 170 registrations fill it. Now a spawn
  // returns only once its registration is in the socket, and the spawns after it do not fork while
  // it waits: the host is SIGKILLed while spawns wait, and every tree whose spawn returned is ended.
  it("a tree registered while the sentinel's pipe is full is ended when the host is SIGKILLed", () =>
    withStalledHost({ shrink: false, lifelineWait: "10 minutes" }, async (host, sentinel, marker) => {
      host.send("spawn 600")
      await untilWaiting(host)
      const leaders = reported(host)
      assert.isAbove(leaders.size, 0)
      assert.isBelow(leaders.size, 600, "the spawns wait for the stalled sentinel")
      await treesUp(leaders)
      // Started and not returned: at most the spawns under way (16), whose registration waits.
      const waiting = [...startedLeaders(marker)].filter((pid) => !leaders.has(pid))
      assert.isAtLeast(waiting.length, 1)
      assert.isAtMost(waiting.length, 16)
      assert.deepStrictEqual(linesWith(host, "failed"), [])
      await killHost(host, sentinel)
      const left = inGroups(leaders)
      console.log(`lifeline, full pipe: ${leaders.size} trees returned, ${waiting.length} waiting at the kill`)
      assert.deepStrictEqual(show(left), [])
    }))

  // The stalled sentinel dies while spawns wait for it: its successor is greeted with every
  // registered container, the waiting ones included, and they go on.
  it("spawns waiting for a sentinel that dies go on once its successor is greeted", () =>
    withStalledHost({ shrink: false, lifelineWait: "10 minutes" }, async (host, sentinel) => {
      host.send("spawn 200")
      await untilWaiting(host)
      sig(sentinel, "SIGKILL")
      const done = await nth(host, "done", 1)
      assert.deepStrictEqual(linesWith(host, "failed"), [])
      assert.strictEqual(done.leaders.length, 200)
      const status = await statusOf(host)
      assert.strictEqual(status.restarts, 1)
      assert.strictEqual(status.waiting, 0)
      assert.notStrictEqual(status.pid, sentinel)
      const leaders = reported(host)
      await treesUp(leaders)
      try {
        await killHost(host, status.pid)
      } finally {
        sig(status.pid, "SIGKILL")
      }
      assert.deepStrictEqual(show(inGroups(leaders)), [])
    }))

  // A sentinel that stays stalled: spawns fail with a typed error after `lifelineWait` (a started
  // tree is torn down first), nothing is left of them, and the lifeline works again once the
  // sentinel reads.
  it("a spawn that waits for a stalled sentinel fails typed after lifelineWait, leaving nothing", () =>
    withStalledHost({ shrink: false, lifelineWait: "300 millis" }, async (host, sentinel, marker) => {
      host.send("spawn 200")
      const done = await nth(host, "done", 1)
      const failed = linesWith(host, "failed")
      const leaders = reported(host)
      assert.strictEqual(leaders.size, done.leaders.length)
      assert.strictEqual(leaders.size + failed.length, 200)
      assert.isAbove(failed.length, 0, "some spawns found the pipe full")
      assert.deepStrictEqual(
        [...new Set(failed.map((f) => `${f.tag} ${f.kind}`))],
        ["SpawnError Lifeline"],
        JSON.stringify(failed[0])
      )
      assert.match(failed[0].failed, /lifeline: .* could not be registered within 300 ms/)
      // The failed spawns' trees, started or not, are gone.
      assert.deepStrictEqual([...startedLeaders(marker)].filter((pid) => !leaders.has(pid)), [])
      await treesUp(leaders)
      // The sentinel reads again: the lifeline takes new trees at once.
      sig(sentinel, "SIGCONT")
      host.send("spawn 5")
      const again = await nth(host, "done", 2)
      assert.strictEqual(again.leaders.length, 5)
      assert.strictEqual(linesWith(host, "failed").length, failed.length)
      const all = reported(host)
      await treesUp(all)
      await killHost(host, sentinel)
      assert.deepStrictEqual(show(inGroups(all)), [])
    }))
})
