/**
 * Run as `node --max-old-space-size=4096 spawnCost.ts <kind> <MiB> <count> <tmpDir>`:
 * grows this process's memory by `MiB`, every page written (so every page is
 * touched and mapped), either
 * - `heap`: the JS heap (arrays of doubles), or
 * - `buffers`: `Buffer` memory outside the JS heap (`Buffer.allocUnsafe` in
 *   256 MiB pieces, then filled),
 * then measures
 * - raw: the time the event loop is blocked inside `child_process.spawn`
 *   (the synchronous call: libuv's fork + exec handshake), per spawn of `/bin/true`;
 * - Shepherd: the time blocked inside the same `child_process.spawn` when the
 *   pool's launcher calls it (the builtin is wrapped, see `blockedInSpawn`), and
 *   the time from `pool.spawn` to the returned process (the synchronous spawn
 *   plus the pool's bookkeeping);
 * - Shepherd with `forkFrom: "helper"`: the time from `pool.spawn` to the
 *   returned process, the fork made by the pool's fork helper.
 *
 * Why the two kinds differ: V8 maps its heap pages with MADV_DONTFORK (`dc` in
 * the VmFlags of /proc/<pid>/smaps), so `fork` does not copy their page
 * tables; Buffer/ArrayBuffer memory is ordinary anonymous memory, and `fork`
 * copies (and write-protects) a page-table entry per touched page.
 */
import * as Effect from "effect/Effect"
import * as ChildProcess from "effect/process/ChildProcess"
import * as References from "effect/References"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import { createRequire, syncBuiltinESMExports } from "node:module"
import { median } from "../harness.ts"
import { type Ctx, poolConfig, quiet, withPool } from "../pools.ts"
import { report } from "./protocol.ts"

const [kindArg = "heap", sizeArg = "50", countArg = "20", tmpDir = "/tmp"] = process.argv.slice(2)
const kind = kindArg === "buffers" ? "buffers" : "heap"
const sizeMiB = Number(sizeArg)
const count = Number(countArg)
const ctx: Ctx = { quick: false, runId: process.env.SHEPHERD_BENCH_RUN ?? "", tmpDir }

const ballast: Array<Array<number>> = []
const buffers: Array<Buffer> = []
const allocStart = performance.now()
if (kind === "heap") {
  // 8-byte doubles in arrays of 64 Ki elements (512 KiB; larger `new Array(n)` would be sparse).
  let left = sizeMiB * 1024 * 1024 / 8
  while (left > 0) {
    const len = Math.min(left, 64 * 1024)
    // oxlint-disable-next-line no-new-array -- a preallocated array of doubles is the ballast
    const a = new Array<number>(len)
    for (let i = 0; i < len; i++) a[i] = i + 0.5
    ballast.push(a)
    left -= len
  }
} else {
  // allocUnsafe leaves the pages untouched (a zero-filled alloc may not even map them): fill writes every page.
  let left = sizeMiB * 1024 * 1024
  while (left > 0) {
    const len = Math.min(left, 256 * 1024 * 1024)
    const b = Buffer.allocUnsafe(len)
    b.fill(0x5a)
    buffers.push(b)
    left -= len
  }
}
const allocMs = performance.now() - allocStart
// Wrap the builtin so that every caller (Shepherd's launcher included) is timed.
const blockedInSpawn: Array<number> = []
const cjs = createRequire(import.meta.url)("node:child_process") as typeof NodeChildProcess
const original = cjs.spawn
cjs.spawn = function(this: unknown, ...args: Array<unknown>) {
  const start = performance.now()
  const child = (original as (...a: Array<unknown>) => NodeChildProcess.ChildProcess).apply(this, args)
  blockedInSpawn.push(performance.now() - start)
  return child
} as typeof original
syncBuiltinESMExports()

const trueCmd = ChildProcess.make("/bin/true", [], quiet)

const rawOnce = () =>
  new Promise<number>((resolve, reject) => {
    const start = performance.now()
    const child = NodeChildProcess.spawn("/bin/true", [], { stdio: "ignore" })
    const blocked = performance.now() - start
    child.on("error", reject)
    child.on("exit", () => resolve(blocked))
  })

const main = async () => {
  const raw: Array<number> = []
  for (let i = 0; i < 3; i++) await rawOnce()
  for (let i = 0; i < count; i++) raw.push(await rawOnce())
  const viaPool = (forkFrom: "host" | "helper") =>
    Effect.runPromise(
      withPool(poolConfig(ctx, `heap-${forkFrom}`, { slots: 2, forkFrom }), (pool) =>
        Effect.gen(function*() {
          const out: Array<number> = []
          const blocked: Array<number> = []
          for (let i = 0; i < count + 3; i++) {
            blockedInSpawn.length = 0
            const ms = yield* Effect.scoped(Effect.gen(function*() {
              const start = performance.now()
              const p = yield* Effect.orDie(pool.spawn(trueCmd))
              const ms = performance.now() - start
              yield* p.awaitTeardown
              return ms
            }))
            if (i >= 3) {
              out.push(ms)
              blocked.push(...blockedInSpawn)
            }
          }
          return { latency: out, blocked }
        })).pipe(Effect.provideService(References.MinimumLogLevel, "Warn"))
    )
  const shepherd = await viaPool("host")
  // The fork helper forks in its own (small) process: the host never calls child_process.spawn.
  const helper = await viaPool("helper")
  const mem = process.memoryUsage()
  return {
    kind,
    sizeMiB,
    allocMs,
    heapUsed: mem.heapUsed,
    arrayBuffers: mem.arrayBuffers,
    rss: mem.rss,
    dontForkMiB: dontForkMiB(),
    raw,
    shepherd: shepherd.latency,
    shepherdBlocked: shepherd.blocked,
    helper: helper.latency,
    rawMedian: median(raw),
    shepherdMedian: median(shepherd.latency),
    pieces: ballast.length + buffers.length
  }
}

/** Resident MiB in mappings that `fork` does not copy (VmFlags `dc`: MADV_DONTFORK), as evidence of the above. */
const dontForkMiB = (): number => {
  let kib = 0
  let rss = 0
  try {
    for (const line of fs.readFileSync("/proc/self/smaps", "latin1").split("\n")) {
      if (line.startsWith("Rss:")) rss = Number(line.split(/\s+/)[1])
      else if (line.startsWith("VmFlags:") && line.split(" ").includes("dc")) kib += rss
    }
  } catch {
    return Number.NaN
  }
  return kib / 1024
}

main().then(report, (error) => {
  process.stderr.write(`${String(error)}\n`)
  process.exit(1)
})
