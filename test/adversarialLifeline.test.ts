/**
 * Adversarial tests of the lifeline's writes (NodeLifeline `writeTo`, issue 11: one plain write(2)
 * on the pipe's descriptor when nothing is queued on the stream, the stream otherwise), on real
 * processes: a host (test/fixtures/advLifelineHost.ts) registers trees whose members carry no
 * SHEPHERD_ID (`env -i`), so that only the sentinel's registration of their group can end them,
 * while its sentinel is stalled (SIGSTOP) and its pipe is full. The pipe is shrunk to one page
 * The "pipe" is a Unix stream socket (libuv's stdio pipes); in the first test the host's SO_SNDBUF is
 * shrunk to its minimum (through pidfd_getfd(2)) so that a few registrations fill it; the second
 * keeps the default (~170 registrations fill it).
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
  readonly exited: Promise<void>
  /** The next JSON line the host prints. */
  readonly next: () => Promise<any>
  output: () => string
}

const startHost = (marker: string): Host => {
  const child = NodeChildProcess.spawn(process.execPath, [fixture, marker], { stdio: ["pipe", "pipe", "pipe"] })
  let output = ""
  const json: Array<any> = []
  const waiters: Array<(v: any) => void> = []
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()))
  const collect = (chunk: Buffer) => {
    output += chunk.toString("utf8")
    const lines = output.split("\n")
    const complete = lines.slice(0, -1).filter((l) => l.startsWith("{"))
    while (complete.length > json.length + consumed) {
      const v = JSON.parse(complete[json.length + consumed]!)
      const w = waiters.shift()
      if (w !== undefined) {
        consumed++
        w(v)
      } else json.push(v)
    }
  }
  let consumed = 0
  child.stdout!.on("data", collect)
  child.stderr!.on("data", (c: Buffer) => {
    output += c.toString("utf8")
  })
  return {
    child,
    exited,
    next: () => {
      if (json.length > 0) {
        consumed++
        return Promise.resolve(json.shift())
      }
      return Promise.race([
        new Promise((resolve) => waiters.push(resolve)),
        exited.then(() => Promise.reject(new Error(`host exited:\n${output}`)))
      ])
    },
    output: () => output
  }
}

/**
 * Starts a host, stalls its sentinel with a one-page pipe, runs `commands` (each answered with the
 * leaders it started), then `beforeKill`, SIGKILLs the host, lets the sentinel go and waits for its
 * sweep; returns the live members of the registered trees.
 */
const scenario = async (
  commands: ReadonlyArray<string>,
  beforeKill: (sentinel: number, host: number) => Promise<void>,
  shrink = true
) => {
  const marker = `adv-lifeline-${process.pid}-${Date.now()}`
  const host = startHost(marker)
  const leaders = new Set<number>()
  let sentinel: number | undefined
  try {
    const hello = await host.next()
    track(`${hello.poolId}:`)
    sentinel = hello.sentinel as number
    // The sentinel has read the pool line: the pipe is empty, it can be shrunk.
    assert.isTrue(await waitUntil(() => pending(sentinel!, host.child.pid!) === 0), "the sentinel reads")
    if (shrink) assert.isAtMost(shrinkPipe(sentinel, host.child.pid!), 16384)
    sig(sentinel, "SIGSTOP")
    for (const command of commands) {
      host.child.stdin!.write(`${command}\n`)
      const { leaders: started } = await host.next()
      for (const pid of started as Array<number>) leaders.add(pid)
    }
    // Every tree is up (sh and its sleep) before the host dies.
    assert.isTrue(
      await waitUntil(() => inGroups(leaders).length >= 2 * leaders.size),
      `trees up: ${inGroups(leaders).length} of ${2 * leaders.size}`
    )
    await beforeKill(sentinel, host.child.pid!)
    host.child.kill("SIGKILL")
    await host.exited
    sig(sentinel, "SIGCONT")
    assert.isTrue(await waitUntil(() => !isAlive(sentinel!)), "the sentinel finished its sweep")
    return { left: inGroups(leaders), leaders }
  } finally {
    host.child.kill("SIGKILL")
    if (sentinel !== undefined) {
      sig(sentinel, "SIGCONT")
      sig(sentinel, "SIGKILL")
    }
    for (const p of inGroups(leaders)) sig(p.pid, "SIGKILL")
  }
}

describe.runIf(process.platform === "linux")("adversarial: lifeline registrations through a full pipe", () => {
  // Held: with the pipe full, registrations and goodbyes (trees that exit at once) interleave in the
  // stream's queue after the plain writes; once the sentinel has drained them, a host SIGKILL ends
  // every registered tree: nothing reordered or lost across the write(2)/stream hand-over.
  it("registrations queued behind a full pipe reach a slow sentinel in order", async () => {
    const { left, leaders } = await scenario(["spawn 100", "short 60", "spawn 100", "short 60", "spawn 100"], async (
      sentinel,
      hostPid
    ) => {
      sig(sentinel, "SIGCONT")
      // Drained: the pipe stays empty for a while (the host's queue has gone through it).
      let empty = 0
      await waitUntil(() => {
        empty = pending(sentinel, hostPid) === 0 ? empty + 1 : 0
        return empty >= 20
      })
    })
    assert.strictEqual(leaders.size, 300)
    assert.deepStrictEqual(left.map((p) => `${p.pid} pgid ${p.pgid}: ${p.cmdline}`), [])
  })

  // BROKEN (not by writeTo: the stream did the same before issue 11). `register` returns once the
  // line is handed to the pipe's stream; with the pipe full (a stalled sentinel: CPU starvation,
  // a slow start) the rest waits in the host's memory,
  // and a SIGKILLed host loses it. The sentinel then knows only the trees whose lines reached the
  // pipe: the members of the others that carry no cookie (env -i, a program that clears its
  // environment) survive the host, although the pool had registered them.
  // How much is "full": the sentinel's stdin is a Unix stream socket, whose sender is limited by
  // its SO_SNDBUF (212992) counted in socket buffers, ~1.2 KiB each whatever the line's length;
  // every registration is one write, so about 170 registrations fill it, not 212992 / 55 bytes.
  // Reproduction: this test (default buffers): typically ~170 of 600 trees are ended, the other
  // ~430 (sh + sleep each, no SHEPHERD_ID, in the tree's process group) live on.
  // A fix needs the pipe to hold what was registered (a blocking write when it is full, a larger
  // pipe with F_SETPIPE_SZ and a bound on queued bytes, or spawns that wait for room).
  it.fails("a tree registered while the sentinel's pipe is full is ended when the host is SIGKILLed", async () => {
    const { left, leaders } = await scenario(["spawn 600"], async () => {}, false)
    assert.strictEqual(leaders.size, 600)
    const trees = new Set(left.map((p) => p.pgid))
    console.log(`lifeline, full pipe: ${trees.size} of ${leaders.size} registered trees survived the host`)
    assert.deepStrictEqual(left.map((p) => `${p.pid} pgid ${p.pgid}: ${p.cmdline}`), [])
  })
})
