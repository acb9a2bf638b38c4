/**
 * 2. Cooperative tree teardown: `sh -c "sleep 1000 & sleep 1000 & wait"`
 * (3 processes, all die on SIGTERM). Time from the close call to the moment
 * `/proc` shows every member gone (a zombie counts as gone).
 *
 * Contenders: Shepherd session close; Effect's scope close and
 * `handle.kill()`; tree-kill (SIGTERM); and the floor, a raw
 * `process.kill(-pgid, "SIGTERM")` of the detached group followed by the same
 * `/proc` poll.
 *
 * Run twice: in the bench process, under this machine's init, and in a child
 * started as `tini -s -- node …` (a subreaper: orphaned members are reaped at
 * once, as under `docker run --init`). Effect's finalizer waits while orphaned
 * zombies exist, so under an init that reaps late (PID 1 of this VM reaps every
 * 1–2 s) its figure is the init's, not Effect's. Without `tini` on the PATH the
 * second variant is reported as skipped.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as ChildProcess from "effect/process/ChildProcess"
import * as Scope from "effect/Scope"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import treeKill from "tree-kill"
import { runChild } from "../child/protocol.ts"
import { fmt, log, median, msRows, type ScenarioOutput, type Target } from "../harness.ts"
import { type Ctx, poolConfig, quiet, scopedPool, sh, trees, withEffectSpawner, withPool } from "../pools.ts"
import { measureLoad } from "../runner.ts"
import type { ProcessPool } from "@shepherd/core/ProcessPool"
import { awaitGone, groupMembers, type Identity, membersById, waitFor } from "../procs.ts"

const scenario = "2. cooperative teardown, 3-process tree"

const names = {
  raw: "raw kill(-pgid, SIGTERM) + /proc poll",
  shepherd: "Shepherd session close",
  helper: "Shepherd (fork helper, the default) session close",
  treeKill: "tree-kill (SIGTERM, ps discovery)",
  effectScope: "Effect scope close",
  effectKill: "Effect handle.kill()"
} as const

/** Samples per contender (ms), as measured by `measure`. */
export type Samples = Record<string, Array<number>>

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

/**
 * Measures every contender in this process: `runs` runs each, the Effect contenders `slowRuns`
 * (they take ~1 s each under an init that reaps late).
 */
export const measure = (ctx: Ctx, runs: number, slowRuns: number): Effect.Effect<Samples> =>
  withPool(
    poolConfig(ctx, "coop", { slots: 4, kill: { grace: "5 seconds" } }),
    (pool) =>
      withEffectSpawner((spawner) =>
        Effect.gen(function*() {
          const samples: Samples = Object.fromEntries(Object.values(names).map((n) => [n, []]))
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
          const shepherdWith = (pool: ProcessPool["Service"]) =>
            Effect.gen(function*() {
              const id = `coop-${++sessionNo}`
              const managed = yield* Effect.orDie(pool.spawn(sh(trees.cooperative), { session: id }))
              const members = yield* Effect.promise(() => awaitTree(() => membersById(managed.shepherdId)))
              return yield* timeCloseEffect(members, pool.closeSession(id))
            }).pipe(Effect.scoped)
          const shepherd = shepherdWith(pool)
          // The same pool forking through its fork helper.
          const helper = shepherdWith(
            yield* scopedPool(
              poolConfig(ctx, "coop-fh", { slots: 4, kill: { grace: "5 seconds" }, forkFrom: "helper" })
            )
          )

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
            [names.raw, raw, runs],
            [names.shepherd, shepherd, runs],
            [names.helper, helper, runs],
            [names.treeKill, withTreeKill, runs],
            [names.effectScope, effectScope, slowRuns],
            [names.effectKill, effectKill, slowRuns]
          ]
          // warm-up of every contender
          yield* raw
          yield* shepherd
          yield* helper
          yield* withTreeKill
          if (slowRuns === runs) {
            yield* effectScope
            yield* effectKill
          }
          for (let r = 0; r < runs; r++) {
            // rotate the order so that no contender always runs first
            for (let k = 0; k < contenders.length; k++) {
              const [name, measure, n] = contenders[(k + r) % contenders.length]!
              if (r < n) samples[name]!.push(yield* measure)
            }
          }
          return samples
        })
      )
  )

const childScript = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "child", "teardown.ts")

/** Whether `command` is on the PATH. */
const onPath = (command: string): boolean =>
  (process.env.PATH ?? "").split(path.delimiter).some((dir) => {
    try {
      fs.accessSync(path.join(dir, command), fs.constants.X_OK)
      return true
    } catch {
      return false
    }
  })

export const run = (ctx: Ctx): Effect.Effect<ScenarioOutput> =>
  Effect.gen(function*() {
    const runs = ctx.quick ? 4 : 15
    const slowRuns = ctx.quick ? 1 : 5
    const here = yield* measure(ctx, runs, slowRuns)
    const hereScenario = `${scenario}, this machine's init (PID 1 reaps orphans late)`
    const rows = msRows(hereScenario, here)
    const notes = [
      `2: time from the close call until /proc shows all 3 members dead or zombie (polled every 1 ms). Under this machine's init: ${runs} runs (Effect contenders ${slowRuns}, they wait for PID 1 to reap the orphaned members).`
    ]
    const shepherdHere = median(here[names.shepherd]!)
    const effectHere = Math.min(median(here[names.effectScope]!), median(here[names.effectKill]!))
    let reaping: Samples | undefined
    if (onPath("tini")) {
      // the child's own limit, stretched by the load like the scenario's (interrupting the scenario kills it too)
      const limitMs = (ctx.quick ? 20_000 : 60_000) * measureLoad().factor
      reaping = yield* Effect.promise((signal) =>
        runChild<Samples>(childScript, [String(ctx.quick), ctx.tmpDir, String(runs)], [], limitMs, [
          "tini",
          "-s",
          "--"
        ], signal)
      )
      rows.push(...msRows(`${scenario}, reaping init (tini -s)`, reaping))
      notes.push(
        `2: under a reaping init: the same contenders in a child process started as \`tini -s -- node …\` (a subreaper, so orphaned members are reaped at once, as with \`docker run --init\`), ${runs} runs each.`
      )
    } else {
      notes.push("2: reaping-init variant skipped: `tini` is not on the PATH (Debian: `apt-get install tini`).")
    }
    const targets: Array<Target> = []
    if (reaping !== undefined) {
      const shepherd = median(reaping[names.shepherd]!)
      const effectScope = median(reaping[names.effectScope]!)
      const effectKill = median(reaping[names.effectKill]!)
      targets.push({
        id: "2 (reaping init)",
        goal: "Shepherd session close ≤ Effect (scope close and handle.kill()) under a reaping init",
        measured: `Shepherd ${fmt(shepherd)} ms; Effect scope close ${fmt(effectScope)} ms, handle.kill() ${
          fmt(effectKill)
        } ms`,
        met: shepherd <= Math.min(effectScope, effectKill)
      })
    } else {
      targets.push({
        id: "2 (reaping init)",
        goal: "Shepherd session close ≤ Effect under a reaping init",
        measured: "skipped: tini not installed",
        met: false,
        note: "not measured"
      })
    }
    const everywhere = [shepherdHere, ...(reaping === undefined ? [] : [median(reaping[names.shepherd]!)])]
    targets.push({
      id: "2",
      goal: "Shepherd session close: median ≤ 20 ms to every member gone, under either init",
      measured: `${fmt(shepherdHere)} ms under this machine's init (Effect ${fmt(effectHere)} ms)${
        reaping === undefined ? "" : `; ${fmt(median(reaping[names.shepherd]!))} ms under tini -s`
      }`,
      met: everywhere.every((m) => m <= 20)
    })
    log(`2: ${Object.entries(here).map(([n, s]) => `${n} ${fmt(median(s))} ms`).join(", ")}`)
    if (reaping !== undefined) {
      log(`2 (tini -s): ${Object.entries(reaping).map(([n, s]) => `${n} ${fmt(median(s))} ms`).join(", ")}`)
    }
    return { rows, targets, notes }
  })
