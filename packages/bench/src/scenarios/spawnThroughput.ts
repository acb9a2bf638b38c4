/**
 * 1. Spawn-to-exit throughput of `/bin/true`, sequential and 8 in flight:
 * Shepherd (`pool.spawn` with ledger, slots and lifeline on) vs raw
 * `child_process.spawn`, execa and Effect's own `ChildProcess` spawner.
 *
 * Every contender runs `/bin/true` with all three stdio streams ignored and
 * waits for its exit; Shepherd and Effect also close the process's scope (so
 * their teardown/cleanup is included, as it is in real use).
 */
import type { ProcessPool } from "@shepherd/core/ProcessPool"
import * as Effect from "effect/Effect"
import * as ChildProcess from "effect/process/ChildProcess"
import { execa } from "execa"
import * as NodeChildProcess from "node:child_process"
import { fmt, log, median, promisePool, type Row, type ScenarioOutput, since, type Target } from "../harness.ts"
import { cgroupUnavailable, type Ctx, poolConfig, quiet, scopedPool, withEffectSpawner, withPool } from "../pools.ts"

export const trueCmd = ChildProcess.make("/bin/true", [], quiet)
// Effect's default on Linux is `detached: true` (the fair match for Shepherd, which always detaches);
// `detached: false` skips the new process group and is measured too.
const trueCmdAttached = ChildProcess.make("/bin/true", [], { ...quiet, detached: false })

/** Runs `count` spawn→exit of `/bin/true`, `concurrency` in flight. */
export type Runner = (count: number, concurrency: number) => Effect.Effect<void>

const rawOne = () =>
  new Promise<void>((resolve, reject) => {
    const child = NodeChildProcess.spawn("/bin/true", [], { stdio: "ignore" })
    child.on("error", reject)
    child.on("exit", () => resolve())
  })

/** The baseline: raw `child_process.spawn`, waiting for the `exit` event. */
export const rawRunner: Runner = (count, concurrency) => Effect.promise(() => promisePool(count, concurrency, rawOne))

/** Shepherd: `pool.spawn` then `awaitExit`, the process's scope closed (its teardown included). */
export const shepherdRunner = (pool: ProcessPool["Service"]): Runner => (count, concurrency) =>
  Effect.forEach(
    Array.from({ length: count }),
    () => Effect.scoped(Effect.flatMap(pool.spawn(trueCmd), (m) => m.awaitExit)),
    { concurrency, discard: true }
  ).pipe(Effect.orDie)

/** The pool scenario 1 measures (and scenario 9 again): ledger, lifeline, 8 slots. */
export const spawnPoolConfig = (ctx: Ctx) => poolConfig(ctx, "spawn", { slots: 8 })

const execaOne = async () => {
  await execa("/bin/true", { stdio: "ignore" })
}

/** The names of the cgroup rows (informational: no target). */
const cgroupWrapper = "Shepherd (cgroup, wrapper) pool.spawn"
const cgroupPostSpawn = "Shepherd (cgroup, post-spawn) pool.spawn"
/** The same pool forking through its fork helper (`forkFrom: "helper"`). */
const forkHelper = "Shepherd (fork helper, the default) pool.spawn"

export const run = (ctx: Ctx): Effect.Effect<ScenarioOutput> =>
  withPool(spawnPoolConfig(ctx), (pool) =>
    withEffectSpawner((spawner) =>
      Effect.gen(function*() {
        // The same pool under cgroup containment, where it is usable: informational rows.
        const unavailable = yield* cgroupUnavailable()
        const cgroupRunners: Record<string, Runner> = unavailable !== undefined ? {} : {
          [cgroupWrapper]: shepherdRunner(
            yield* scopedPool(poolConfig(ctx, "spawn-cg", { slots: 8, containment: "cgroup" }))
          ),
          [cgroupPostSpawn]: shepherdRunner(
            yield* scopedPool(
              poolConfig(ctx, "spawn-cgp", { slots: 8, containment: "cgroup", cgroup: { placement: "post-spawn" } })
            )
          )
        }
        const runners: Record<string, Runner> = {
          "raw child_process.spawn": rawRunner,
          "execa 10": (count, concurrency) => Effect.promise(() => promisePool(count, concurrency, execaOne)),
          "Effect ChildProcess (NodeServices, detached: true, its default)": (count, concurrency) =>
            Effect.forEach(
              Array.from({ length: count }),
              () => Effect.scoped(Effect.flatMap(spawner.spawn(trueCmd), (h) => h.exitCode)),
              { concurrency, discard: true }
            ).pipe(Effect.orDie),
          "Effect ChildProcess (NodeServices, detached: false)": (count, concurrency) =>
            Effect.forEach(
              Array.from({ length: count }),
              () => Effect.scoped(Effect.flatMap(spawner.spawn(trueCmdAttached), (h) => h.exitCode)),
              { concurrency, discard: true }
            ).pipe(Effect.orDie),
          "Shepherd pool.spawn (ledger+slots+lifeline)": shepherdRunner(pool),
          [forkHelper]: shepherdRunner(
            yield* scopedPool(poolConfig(ctx, "spawn-fh", { slots: 8, forkFrom: "helper" }))
          ),
          ...cgroupRunners
        }
        const names = Object.keys(runners)
        const count = ctx.quick ? 25 : 100
        const runs = ctx.quick ? 2 : 5
        const rows: Array<Row> = []
        const targets: Array<Target> = []
        for (const concurrency of [1, 8]) {
          const mode = concurrency === 1 ? "sequential" : "8 in flight"
          const scenario = `1. spawn→exit /bin/true, ${mode}`
          const samples = new Map<string, Array<number>>(names.map((n) => [n, []]))
          // warm-up: JIT, the pool's first reaper tick, execa's lazy imports
          for (const name of names) yield* runners[name]!(10, concurrency)
          for (let r = 0; r < runs; r++) {
            // rotate the order so that no contender always runs first
            for (let k = 0; k < names.length; k++) {
              const name = names[(k + r) % names.length]!
              const start = performance.now()
              yield* runners[name]!(count, concurrency)
              samples.get(name)!.push(count / (since(start) / 1000))
            }
          }
          for (const name of names) {
            rows.push({
              scenario,
              variant: name,
              unit: "spawns/s",
              better: "higher",
              samples: samples.get(name)!,
              baseline: name.startsWith("raw")
            })
          }
          const m = (prefix: string) => median(samples.get(names.find((n) => n.startsWith(prefix))!)!)
          const raw = m("raw")
          const ex = m("execa")
          const effDetached = m("Effect ChildProcess (NodeServices, detached: true")
          const effAttached = m("Effect ChildProcess (NodeServices, detached: false")
          for (const [which, shepherd] of [["", m("Shepherd pool.spawn")], [", fork helper", m(forkHelper)]] as const) {
            targets.push({
              id: `1 (${mode}${which})`,
              goal: "Shepherd ≥ 0.90× raw and ahead of execa and of Effect, detached and not, in the same run",
              measured: `${fmt(shepherd / raw)}× raw; ${fmt(shepherd / ex)}× execa; ${
                fmt(shepherd / effDetached)
              }× Effect detached; ${fmt(shepherd / effAttached)}× Effect not detached`,
              met: shepherd >= 0.9 * raw && shepherd > ex && shepherd > effDetached && shepherd > effAttached
            })
          }
          log(`1 ${mode}: ${names.map((n) => `${n} ${fmt(median(samples.get(n)!))}/s`).join(", ")}`)
        }
        return {
          rows,
          targets,
          notes: [
            `1: ${count} spawns per run, ${runs} runs, order rotated per run; stdio "ignore" for every contender; ` +
            "Effect runs both with its default `detached: true` (a new process group, as Shepherd always does) and with `detached: false`; " +
            "Shepherd and Effect include closing the process's scope (Shepherd's teardown scan of /proc, ledger records, lifeline messages, slot release). " +
            "The Shepherd rows use process-group containment (the target's) unless their name says cgroup; the rows without \"fork helper\" in their name fork from the host (`forkFrom: \"host\"`); " +
            `"${forkHelper}" is the same pool with \`forkFrom: "helper"\` (its fork helper forks the trees); ` +
            (unavailable === undefined
              ? `"${cgroupWrapper}" and "${cgroupPostSpawn}" are the same pool under cgroup v2 containment (a leaf per tree, made and removed per spawn; the wrapper runs each command through /bin/sh, which joins the leaf and execs it), informational.`
              : `cgroup rows not measured: ${unavailable}.`)
          ]
        }
      })
    ))
