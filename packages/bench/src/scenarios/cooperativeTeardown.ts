/**
 * 2. Cooperative tree teardown: `sh -c "sleep 1000 & sleep 1000 & wait"`
 * (3 processes, all die on SIGTERM). Time from the close call to the moment
 * `/proc` shows every member gone (a zombie counts as gone).
 *
 * Contenders: Shepherd session close; Effect's scope close and
 * `handle.kill()`; tree-kill (SIGTERM); and the floor, a raw
 * `process.kill(-pgid, "SIGTERM")` of the detached group followed by the same
 * `/proc` poll.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as ChildProcess from "effect/process/ChildProcess"
import * as Scope from "effect/Scope"
import * as NodeChildProcess from "node:child_process"
import treeKill from "tree-kill"
import { fmt, log, median, msRows, type ScenarioOutput, type Target } from "../harness.ts"
import { type Ctx, poolConfig, quiet, sh, trees, withEffectSpawner, withPool } from "../pools.ts"
import { awaitGone, groupMembers, type Identity, membersById, waitFor } from "../procs.ts"

const scenario = "2. cooperative teardown, 3-process tree"

/** Waits until the tree has forked its members; returns their identities. */
const awaitTree = (find: () => Array<Identity>): Promise<Array<Identity>> =>
  waitFor(() => find().length >= 3, 5_000).then((ok) => {
    if (!ok) throw new Error("the tree did not reach 3 members within 5 s")
    return find()
  })

/** Runs `close` and returns the ms until every member is gone. */
const timeClose = async (members: Array<Identity>, close: () => Promise<unknown>): Promise<number> => {
  const start = performance.now()
  await close()
  const gone = await awaitGone(members, 10_000)
  return gone - start
}

/** `timeClose` for an effect. */
const timeCloseEffect = (members: Array<Identity>, close: Effect.Effect<unknown>): Effect.Effect<number> =>
  Effect.gen(function*() {
    const start = performance.now()
    yield* close
    const gone = yield* Effect.promise(() => awaitGone(members, 10_000))
    return gone - start
  })

export const run = (ctx: Ctx): Effect.Effect<ScenarioOutput> =>
  withPool(
    poolConfig(ctx, "coop", { slots: 4, kill: { grace: "5 seconds" } }),
    (pool) =>
      withEffectSpawner((spawner) =>
        Effect.gen(function*() {
          const runs = ctx.quick ? 4 : 15
          const slowRuns = ctx.quick ? 1 : 5
          const samples: Record<string, Array<number>> = {
            "raw kill(-pgid, SIGTERM) + /proc poll": [],
            "Shepherd session close": [],
            "tree-kill (SIGTERM, ps discovery)": [],
            "Effect scope close": [],
            "Effect handle.kill()": []
          }
          const effectCmd = ChildProcess.make("sh", ["-c", trees.cooperative], quiet)

          const raw = Effect.promise(async () => {
            const child = NodeChildProcess.spawn("sh", ["-c", trees.cooperative], { stdio: "ignore", detached: true })
            const members = await awaitTree(() => groupMembers(child.pid!))
            return timeClose(members, async () => process.kill(-child.pid!, "SIGTERM"))
          })

          const withTreeKill = Effect.promise(async () => {
            const child = NodeChildProcess.spawn("sh", ["-c", trees.cooperative], { stdio: "ignore", detached: true })
            const members = await awaitTree(() => groupMembers(child.pid!))
            return timeClose(
              members,
              () =>
                new Promise<void>((resolve, reject) =>
                  treeKill(child.pid!, "SIGTERM", (e) => e ? reject(e) : resolve())
                )
            )
          })

          let sessionNo = 0
          const shepherd = Effect.gen(function*() {
            const id = `coop-${++sessionNo}`
            const managed = yield* Effect.orDie(pool.spawn(sh(trees.cooperative), { session: id }))
            const members = yield* Effect.promise(() => awaitTree(() => membersById(managed.shepherdId)))
            return yield* timeCloseEffect(members, pool.closeSession(id))
          }).pipe(Effect.scoped)

          const effectScope = Effect.gen(function*() {
            const scope = yield* Scope.make()
            const handle = yield* Effect.orDie(Scope.provide(scope)(spawner.spawn(effectCmd)))
            const members = yield* Effect.promise(() => awaitTree(() => groupMembers(handle.pid)))
            return yield* timeCloseEffect(members, Scope.close(scope, Exit.void))
          })

          const effectKill = Effect.gen(function*() {
            const scope = yield* Scope.make()
            const handle = yield* Effect.orDie(Scope.provide(scope)(spawner.spawn(effectCmd)))
            const members = yield* Effect.promise(() => awaitTree(() => groupMembers(handle.pid)))
            const ms = yield* timeCloseEffect(members, Effect.ignore(handle.kill()))
            yield* Scope.close(scope, Exit.void)
            return ms
          })

          const contenders: Array<[string, Effect.Effect<number>, number]> = [
            ["raw kill(-pgid, SIGTERM) + /proc poll", raw, runs],
            ["Shepherd session close", shepherd, runs],
            ["tree-kill (SIGTERM, ps discovery)", withTreeKill, runs],
            ["Effect scope close", effectScope, slowRuns],
            ["Effect handle.kill()", effectKill, slowRuns]
          ]
          // warm-up
          yield* raw
          yield* shepherd
          for (let r = 0; r < runs; r++) {
            for (const [name, measure, n] of contenders) {
              if (r < n) samples[name]!.push(yield* measure)
            }
          }
          const rows = msRows(scenario, samples)
          const shepherdMedian = median(samples["Shepherd session close"]!)
          const targets: Array<Target> = [{
            id: "2",
            goal: "Shepherd session close: median ≤ 20 ms to every member gone",
            measured: `${fmt(shepherdMedian)} ms (Effect scope close ${
              fmt(median(samples["Effect scope close"]!))
            } ms)`,
            met: shepherdMedian <= 20
          }]
          log(`2: ${Object.entries(samples).map(([n, s]) => `${n} ${fmt(median(s))} ms`).join(", ")}`)
          return {
            rows,
            targets,
            notes: [
              `2: ${runs} runs (Effect contenders ${slowRuns}, they take ~1 s each); time from the close call until /proc shows all 3 members dead or zombie (polled every 1 ms).`
            ]
          }
        })
      )
  )
