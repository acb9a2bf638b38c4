/**
 * 6. Reaper tick and tree discovery with 0, 100 and 500 unrelated processes
 * on the machine (`sleep 1000` without `SHEPHERD_ID`, started after the host,
 * so the reaper has to read their environment). They are started by a shell
 * that exits at once (`sh -c 'sleep 1000 & …'`), so they are not the host's
 * children: they are reparented to the init, as unrelated processes are.
 *
 * The pool tracks one live 3-process tree. Contenders: `pool.reapNow`, a full
 * tick (ledger entries + cookie scan of /proc), measured
 * - cold: as the reaper runs it at its default interval. The process table
 *   keeps a cache of what it read and reads `/proc` again in full only once
 *   its full-scan interval has passed; before each cold tick the clock the
 *   cache reads (`Date.now`) is moved on by the default reap interval, so the
 *   tick finds the cache exactly as it would 30 s after the previous tick
 *   (every stat read again, environments read only for processes it has not
 *   seen). This is the figure of the target.
 * - warm: right after another tick (the cache reused), for comparison;
 * and, also for comparison, the scan of a fresh table (empty cache: every
 * process's stat and environment read, as in a pool's first tick); Shepherd's
 * discovery of that tree (`ProcessTable.members`, the scan every teardown
 * does); pidtree's and tree-kill's discovery of a same-shaped tree (tree-kill
 * with signal 0, which signals nothing).
 */
import * as NodeProcessTable from "@shepherd/node/NodeProcessTable"
import * as ShepherdConfig from "@shepherd/core/ShepherdConfig"
import * as Effect from "effect/Effect"
import * as NodeChildProcess from "node:child_process"
import pidtree from "pidtree"
import treeKill from "tree-kill"
import { fmt, log, median, type Row, type ScenarioOutput, since, type Target } from "../harness.ts"
import { type Ctx, poolConfig, sh, trees, withPool } from "../pools.ts"
import { awaitGone, carriers, groupMembers, killAll, listPids, membersById, readStat, waitFor } from "../procs.ts"

/** Carried by the unrelated processes of this scenario (with the run's marker), to find and remove them. */
const unrelatedVar = "SHEPHERD_BENCH_UNRELATED"

/** Starts `count` `sleep 1000` from a shell that exits at once, so that they are reparented to the init. */
const startUnrelated = (count: number, tag: string): Promise<void> =>
  new Promise<void>((resolve, reject) => {
    const child = NodeChildProcess.spawn(
      "sh",
      ["-c", "i=0; while [ \"$i\" -lt \"$1\" ]; do sleep 1000 & i=$((i+1)); done", "sh", String(count)],
      { stdio: "ignore", env: { ...process.env, [unrelatedVar]: tag } }
    )
    child.on("error", reject)
    child.on("exit", (code) => code === 0 ? resolve() : reject(new Error(`sh exited with ${code}`)))
  })

const names = {
  pidtree: "pidtree (ps -A)",
  treeKill: "tree-kill discovery (ps --ppid per level, signal 0)",
  members: "Shepherd ProcessTable.members (teardown scan)",
  fresh: "Shepherd table.carriers, empty cache (a pool's first tick)",
  warm: "Shepherd pool.reapNow, warm (right after a tick)",
  cold: "Shepherd pool.reapNow, cold (cache as at the default interval)"
} as const

export const run = (ctx: Ctx): Effect.Effect<ScenarioOutput> =>
  withPool(
    poolConfig(ctx, "reap", { slots: 2, kill: { grace: "1 second" }, reapInterval: "1 hour" }),
    (pool) =>
      Effect.gen(function*() {
        const baseCount = listPids().length
        const runs = ctx.quick ? 3 : 15
        const extras = [0, 100, 500]
        const defaults = yield* Effect.orDie(ShepherdConfig.resolve({}))
        const interval = defaults.reapIntervalMs
        const table = NodeProcessTable.make()
        const hostStart = readStat(process.pid)!.startTime
        const managed = yield* Effect.orDie(pool.spawn(sh(trees.cooperative)))
        yield* Effect.promise(() => waitFor(() => membersById(managed.shepherdId).length >= 3, 5_000))
        const container = { pgid: managed.pgid, shepherdId: managed.shepherdId, leader: managed.identity }
        // the same tree, unsupervised, for pidtree and tree-kill
        const other = NodeChildProcess.spawn("sh", ["-c", trees.cooperative], { stdio: "ignore", detached: true })
        yield* Effect.addFinalizer(() =>
          Effect.promise(async () => {
            const members = groupMembers(other.pid!)
            process.kill(-other.pid!, "SIGKILL")
            await awaitGone(members, 5_000)
          })
        )
        yield* Effect.promise(() => waitFor(() => groupMembers(other.pid!).length >= 3, 5_000))

        const tag = `${ctx.runId}:6`
        const unrelated = () => carriers(unrelatedVar, (v) => v === tag)
        yield* Effect.addFinalizer(() =>
          Effect.promise(async () => {
            const left = unrelated()
            killAll(left)
            await awaitGone(left, 10_000)
          })
        )

        // The clock the table's cache reads, moved on by `interval` before each cold tick (see above).
        const realNow = Date.now
        let skew = 0
        Date.now = () => realNow.call(Date) + skew
        yield* Effect.addFinalizer(() => Effect.sync(() => Date.now = realNow))

        const rows: Array<Row> = []
        const targets: Array<Target> = []
        for (const extra of extras) {
          // top up the unrelated processes to `extra`
          const missing = extra - unrelated().length
          if (missing > 0) {
            yield* Effect.promise(() => startUnrelated(missing, tag))
            const ok = yield* Effect.promise(() => waitFor(() => unrelated().length >= extra, 10_000, 20))
            if (!ok) return yield* Effect.die(new Error(`only ${unrelated().length} of ${extra} unrelated processes`))
          }
          const children = unrelated().filter((c) => readStat(c.pid)?.ppid === process.pid).length
          log(`6: ${extra} unrelated processes running (${children} of them children of the host)`)
          const scenario = `6. reaper tick / tree discovery, +${extra} unrelated processes`
          const samples: Record<string, Array<number>> = Object.fromEntries(Object.values(names).map((n) => [n, []]))
          const checkTick = (
            tick: {
              readonly error?: string | undefined
              readonly untracked: ReadonlyArray<unknown>
              readonly stale: ReadonlyArray<unknown>
            }
          ) =>
            tick.error !== undefined || tick.untracked.length + tick.stale.length > 0
              ? Effect.die(new Error(`unexpected tick: ${JSON.stringify(tick)}`))
              : Effect.void
          // one tick so that the next cold one finds the cache as a previous tick left it
          yield* pool.reapNow
          for (let r = 0; r < runs; r++) {
            skew += interval
            let t = performance.now()
            const cold = yield* pool.reapNow
            samples[names.cold]!.push(since(t))
            yield* checkTick(cold)
            t = performance.now()
            const warm = yield* pool.reapNow
            samples[names.warm]!.push(since(t))
            yield* checkTick(warm)
            t = performance.now()
            yield* Effect.orDie(NodeProcessTable.make().carriers(`${pool.poolId}:`, { notBefore: hostStart }))
            samples[names.fresh]!.push(since(t))
            t = performance.now()
            const members = yield* Effect.orDie(table.members(container))
            samples[names.members]!.push(since(t))
            if (members.length < 3) return yield* Effect.die(new Error(`members found ${members.length} processes`))
            t = performance.now()
            const found = yield* Effect.promise(() => pidtree(other.pid!, { root: true }))
            samples[names.pidtree]!.push(since(t))
            if (found.length < 3) return yield* Effect.die(new Error(`pidtree found ${found.length} processes`))
            t = performance.now()
            yield* Effect.promise(() =>
              new Promise<void>((resolve, reject) => treeKill(other.pid!, 0, (e) => e ? reject(e) : resolve()))
            )
            samples[names.treeKill]!.push(since(t))
          }
          for (const variant of Object.values(names)) {
            rows.push({
              scenario,
              variant,
              unit: "ms",
              better: "lower",
              samples: samples[variant]!,
              baseline: variant === names.pidtree
            })
          }
          log(`6 +${extra}: ${Object.entries(samples).map(([n, s]) => `${n} ${fmt(median(s))} ms`).join(", ")}`)
          if (extra === 500) {
            const cold = median(samples[names.cold]!)
            targets.push({
              id: "6",
              goal: "reaper tick ≤ 15 ms at +500 processes, cold (cache as at the default interval)",
              measured: `${fmt(cold)} ms cold (warm ${fmt(median(samples[names.warm]!))} ms, empty cache ${
                fmt(median(samples[names.fresh]!))
              } ms)`,
              met: cold <= 15
            })
          }
        }
        return {
          rows,
          targets,
          notes: [
            `6: ${runs} runs per level; the machine had ${baseCount} processes (incl. kernel threads) before the extras; the unrelated sleeps are younger than the host (so a scan reads their /proc/<pid>/environ once) and not its children (started by a shell that exits, reparented to the init). Cold ticks: the cache's clock is moved on by the default reap interval (${
              interval / 1000
            } s) before each, so the table re-reads /proc in full as it would at that interval.`
          ]
        }
      }).pipe(Effect.scoped)
  )
