/**
 * Run as `node --expose-gc memory.ts <variant> <n> <tmpDir>`: starts `n`
 * long-lived `sleep` processes with one contender, keeps their handles, and
 * reports the JS heap growth per live process (after full GCs), then tears
 * everything down and checks that nothing is left.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as ChildProcess from "effect/process/ChildProcess"
import * as References from "effect/References"
import * as Scope from "effect/Scope"
import { execa } from "execa"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import { promisePool, sleep } from "../harness.ts"
import { type Ctx, poolConfig, quiet, withEffectSpawner, withPool } from "../pools.ts"
import { awaitGone, type Identity, identify } from "../procs.ts"
import { report } from "./protocol.ts"

const [variant = "raw", nArg = "300", tmpDir = "/tmp"] = process.argv.slice(2)
const n = Number(nArg)
const ctx: Ctx = { quick: false, runId: process.env.SHEPHERD_BENCH_RUN ?? "", tmpDir }
const gc = (globalThis as { gc?: () => void }).gc
if (gc === undefined) throw new Error("run with --expose-gc")

const heap = async (): Promise<number> => {
  // let pending callbacks settle, then collect twice (weak/finalization passes)
  await sleep(100)
  gc()
  gc()
  return process.memoryUsage().heapUsed
}

const sleepCmd = ChildProcess.make("sleep", ["1000"], quiet)
const concurrency = 8

const measure = async (spawnAll: () => Promise<Array<number>>) => {
  const before = await heap()
  const pids = await spawnAll()
  const after = await heap()
  return { before, after, pids, perProcess: (after - before) / n }
}

/** The fork helper of this process's pool (started by the warm-up), if any. */
const forkHelperPid = (): number | undefined => {
  let children: Array<string>
  try {
    children = fs.readFileSync(`/proc/${process.pid}/task/${process.pid}/children`, "latin1").trim().split(" ")
  } catch {
    return undefined // no CONFIG_PROC_CHILDREN: the helper's growth is not reported
  }
  return children.map(Number).find((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, "latin1").includes("forkHelper")
    } catch {
      return false
    }
  })
}

/** A process's resident memory in bytes (`VmRSS`), `undefined` once it is gone. */
const rssOf = (pid: number): number | undefined => {
  try {
    const line = fs.readFileSync(`/proc/${pid}/status`, "latin1").split("\n").find((l) => l.startsWith("VmRSS:"))
    return line === undefined ? undefined : Number(line.replace(/\D+/g, "")) * 1024
  } catch {
    return undefined
  }
}

const ids = (pids: ReadonlyArray<number>): Array<Identity> =>
  pids.map((pid) => identify(pid)).filter((id): id is Identity => id !== undefined)

const main = async () => {
  // warm-up of every contender's code path happens in its own branch (5 short-lived processes)
  switch (variant) {
    case "raw": {
      const children: Array<NodeChildProcess.ChildProcess> = []
      const spawnOne = () =>
        new Promise<NodeChildProcess.ChildProcess>((resolve, reject) => {
          const c = NodeChildProcess.spawn("sleep", ["1000"], { stdio: "ignore" })
          c.on("error", reject)
          c.on("spawn", () => resolve(c))
        })
      for (let i = 0; i < 5; i++) {
        const c = await spawnOne()
        c.kill("SIGKILL")
      }
      const m = await measure(async () => {
        await promisePool(n, concurrency, async () => children.push(await spawnOne()))
        return children.map((c) => c.pid!)
      })
      const live = ids(m.pids)
      for (const c of children) c.kill("SIGKILL")
      await awaitGone(live, 10_000)
      return m
    }
    case "execa": {
      const options = { stdio: "ignore" } as const
      type Sub = ReturnType<typeof execa<typeof options>>
      const subs: Array<Sub> = []
      // returns a wrapper: the subprocess itself is a thenable and would be awaited
      const spawnOne = async (): Promise<{ readonly sub: Sub }> => {
        const sub = execa("sleep", ["1000"], options)
        sub.catch(() => {})
        await new Promise<void>((resolve) => sub.nodeChildProcess.once("spawn", () => resolve()))
        return { sub }
      }
      for (let i = 0; i < 5; i++) (await spawnOne()).sub.kill("SIGKILL")
      const m = await measure(async () => {
        await promisePool(n, concurrency, async () => subs.push((await spawnOne()).sub))
        return subs.map((s) => s.pid!)
      })
      const live = ids(m.pids)
      for (const s of subs) s.kill("SIGKILL")
      await awaitGone(live, 10_000)
      return m
    }
    case "effect":
      return Effect.runPromise(withEffectSpawner((spawner) =>
        Effect.gen(function*() {
          const warm = yield* Scope.make()
          for (let i = 0; i < 5; i++) yield* Effect.orDie(Scope.provide(warm)(spawner.spawn(sleepCmd)))
          yield* Scope.close(warm, Exit.void)
          const scope = yield* Scope.make("parallel")
          const before = yield* Effect.promise(heap)
          const pids = yield* Effect.forEach(
            Array.from({ length: n }),
            () => Effect.map(Effect.orDie(Scope.provide(scope)(spawner.spawn(sleepCmd))), (h) => h.pid as number),
            { concurrency }
          )
          const after = yield* Effect.promise(heap)
          const m = { before, after, pids, perProcess: (after - before) / n }
          const live = ids(m.pids)
          yield* Scope.close(scope, Exit.void)
          yield* Effect.promise(() => awaitGone(live, 10_000))
          return m
        })
      ))
    case "shepherd":
    case "shepherd-helper":
      return Effect.runPromise(
        withPool(
          poolConfig(ctx, "mem", {
            slots: n + 10,
            hardCap: 2 * n + 20,
            kill: { grace: "1 second" },
            forkFrom: variant === "shepherd" ? "host" : "helper"
          }),
          (pool) =>
            Effect.gen(function*() {
              for (let i = 0; i < 5; i++) {
                const warm = yield* Effect.orDie(pool.spawn(sleepCmd, { session: "warm" }))
                yield* warm.terminate()
              }
              yield* pool.closeSession("warm")
              const before = yield* Effect.promise(heap)
              const helper = variant === "shepherd-helper" ? forkHelperPid() : undefined
              const helperBefore = helper === undefined ? undefined : rssOf(helper)
              // bound to the pool's scope and to the session "mem": alive until the pool closes
              const pids = yield* Effect.forEach(
                Array.from({ length: n }),
                () => Effect.map(Effect.orDie(pool.spawn(sleepCmd, { session: "mem" })), (p) => p.pid),
                { concurrency }
              )
              const after = yield* Effect.promise(heap)
              const helperAfter = helper === undefined ? undefined : rssOf(helper)
              return {
                before,
                after,
                pids,
                perProcess: (after - before) / n,
                ...(helperBefore !== undefined && helperAfter !== undefined
                  ? { helperRssPerProcess: (helperAfter - helperBefore) / n }
                  : {})
              }
            })
        ).pipe(Effect.provideService(References.MinimumLogLevel, "Warn"))
      )
    default:
      throw new Error(`unknown variant ${variant}`)
  }
}

main().then(
  (m) =>
    report({
      variant,
      n,
      before: m.before,
      after: m.after,
      perProcess: m.perProcess,
      helperRssPerProcess: "helperRssPerProcess" in m ? m.helperRssPerProcess : undefined,
      spawned: m.pids.length
    }),
  (error) => {
    process.stderr.write(`${String(error)}\n`)
    process.exit(1)
  }
)
