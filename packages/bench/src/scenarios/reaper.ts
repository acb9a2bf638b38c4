/**
 * 6. Reaper tick and tree discovery with 0, 100 and 500 unrelated processes
 * on the machine (`sleep 1000` without `SHEPHERD_ID`, started after the host,
 * so the reaper has to read their environment).
 *
 * The pool tracks one live 3-process tree. Contenders: `pool.reapNow` (a full
 * tick: ledger entries + cookie scan of /proc); Shepherd's discovery of that
 * tree (`ProcessTable.members`, the scan every teardown does); pidtree's and
 * tree-kill's discovery of a same-shaped tree (tree-kill with signal 0, which
 * signals nothing).
 */
import * as NodeProcessTable from "@shepherd/node/NodeProcessTable"
import * as Effect from "effect/Effect"
import * as NodeChildProcess from "node:child_process"
import pidtree from "pidtree"
import treeKill from "tree-kill"
import { fmt, log, median, promisePool, type Row, type ScenarioOutput, since, type Target } from "../harness.ts"
import { type Ctx, poolConfig, sh, trees, withPool } from "../pools.ts"
import { awaitGone, groupMembers, type Identity, identify, listPids, membersById, waitFor } from "../procs.ts"

export const run = (ctx: Ctx): Effect.Effect<ScenarioOutput> =>
  withPool(
    poolConfig(ctx, "reap", { slots: 2, kill: { grace: "1 second" }, reapInterval: "1 hour" }),
    (pool) =>
      Effect.gen(function*() {
        const baseCount = listPids().length
        const runs = ctx.quick ? 3 : 15
        const extras = [0, 100, 500]
        const table = NodeProcessTable.make()
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

        const unrelated: Array<NodeChildProcess.ChildProcess> = []
        const unrelatedIds: Array<Identity> = []
        yield* Effect.addFinalizer(() =>
          Effect.promise(async () => {
            for (const c of unrelated) c.kill("SIGKILL")
            await awaitGone(unrelatedIds, 10_000)
          })
        )
        const rows: Array<Row> = []
        const targets: Array<Target> = []
        for (const extra of extras) {
          // top up the unrelated processes to `extra`
          const missing = extra - unrelated.length
          yield* Effect.promise(() =>
            promisePool(missing, 8, () =>
              new Promise<void>((resolve, reject) => {
                const c = NodeChildProcess.spawn("sleep", ["1000"], { stdio: "ignore" })
                c.on("error", reject)
                c.on("spawn", () => {
                  unrelated.push(c)
                  const id = identify(c.pid!)
                  if (id !== undefined) unrelatedIds.push(id)
                  resolve()
                })
              }))
          )
          log(`6: ${unrelated.length} unrelated processes running`)
          const scenario = `6. reaper tick / tree discovery, +${extra} unrelated processes`
          const samples: Record<string, Array<number>> = {
            "pidtree (ps -A)": [],
            "tree-kill discovery (ps --ppid per level, signal 0)": [],
            "Shepherd ProcessTable.members (teardown scan)": [],
            "Shepherd pool.reapNow (tick)": []
          }
          for (let r = 0; r < runs; r++) {
            let t = performance.now()
            const found = yield* Effect.promise(() => pidtree(other.pid!, { root: true }))
            samples["pidtree (ps -A)"]!.push(since(t))
            if (found.length < 3) return yield* Effect.die(new Error(`pidtree found ${found.length} processes`))
            t = performance.now()
            yield* Effect.promise(() =>
              new Promise<void>((resolve, reject) => treeKill(other.pid!, 0, (e) => e ? reject(e) : resolve()))
            )
            samples["tree-kill discovery (ps --ppid per level, signal 0)"]!.push(since(t))
            t = performance.now()
            const members = yield* Effect.orDie(table.members(container))
            samples["Shepherd ProcessTable.members (teardown scan)"]!.push(since(t))
            if (members.length < 3) return yield* Effect.die(new Error(`members found ${members.length} processes`))
            t = performance.now()
            const tick = yield* pool.reapNow
            samples["Shepherd pool.reapNow (tick)"]!.push(since(t))
            if (tick.error !== undefined || tick.untracked.length + tick.stale.length > 0) {
              return yield* Effect.die(new Error(`unexpected tick: ${JSON.stringify(tick)}`))
            }
          }
          for (const [variant, s] of Object.entries(samples)) {
            rows.push({
              scenario,
              variant,
              unit: "ms",
              better: "lower",
              samples: s,
              baseline: variant.startsWith("pidtree")
            })
          }
          log(`6 +${extra}: ${Object.entries(samples).map(([n, s]) => `${n} ${fmt(median(s))} ms`).join(", ")}`)
          if (extra === 500) {
            const tick = median(samples["Shepherd pool.reapNow (tick)"]!)
            targets.push({
              id: "6",
              goal: "reaper tick ≤ 15 ms at +500 processes",
              measured: `${fmt(tick)} ms`,
              met: tick <= 15
            })
          }
        }
        return {
          rows,
          targets,
          notes: [
            `6: ${runs} runs per level; the machine had ${baseCount} processes (incl. kernel threads) before the extras; the unrelated sleeps are younger than the host, so the tick reads their /proc/<pid>/environ.`
          ]
        }
      }).pipe(Effect.scoped)
  )
