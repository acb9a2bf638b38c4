/**
 * 4. Slot hand-off: one slot, held by a running `sleep`; a second spawn waits
 * for it. The holder is SIGKILLed; measured: from that kill to the moment the
 * queued spawn starts launching (the pool's launcher is wrapped to record when
 * `launch` is called, i.e. after the slot was taken and the ledger intent
 * written, before the OS spawn).
 *
 * Contenders: Shepherd (`slots: 1`); a raw FIFO queue over
 * `child_process.spawn` that starts the next command from the `exit` event
 * (the floor); Effect's ChildProcess behind a one-permit `Semaphore`.
 */
import { ProcessLauncher } from "@shepherd/core/ProcessLauncher"
import { ProcessPool } from "@shepherd/core/ProcessPool"
import * as ShepherdConfig from "@shepherd/core/ShepherdConfig"
import * as NodeHelperLauncher from "@shepherd/node/NodeHelperLauncher"
import * as NodeLedger from "@shepherd/node/NodeLedger"
import * as NodeLifeline from "@shepherd/node/NodeLifeline"
import * as NodeProcessLauncher from "@shepherd/node/NodeProcessLauncher"
import * as NodeProcessTable from "@shepherd/node/NodeProcessTable"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as ChildProcess from "effect/process/ChildProcess"
import * as Semaphore from "effect/Semaphore"
import * as NodeChildProcess from "node:child_process"
import { fmt, log, median, msRows, type ScenarioOutput, sleep, type Target } from "../harness.ts"
import { type Ctx, poolConfig, quiet, usePool, withEffectSpawner } from "../pools.ts"

const shepherdName = "Shepherd slots: 1"
const helperName = "Shepherd (fork helper, the default) slots: 1"
const effectName = "Effect ChildProcess + Semaphore(1)"
const rawName = "raw FIFO queue, next spawn from the exit event"

const scenario = "4. slot hand-off (holder killed → queued spawn starts)"
const sleepCmd = ChildProcess.make("sleep", ["1000"], quiet)

/** The Node launcher (the host's, or the fork helper's), recording when each launch starts. */
const recordingLauncher = (marks: Array<number>, forkFrom: "host" | "helper"): Layer.Layer<ProcessLauncher> =>
  Layer.effect(
    ProcessLauncher,
    Effect.map(
      forkFrom === "helper" ? NodeHelperLauncher.make() : Effect.sync(NodeProcessLauncher.make),
      (base) =>
        ProcessLauncher.of({
          inheritedEnv: base.inheritedEnv,
          launch: (command, env) =>
            Effect.suspend(() => {
              marks.push(performance.now())
              return base.launch(command, env)
            })
        })
    )
  )

/** A `slots: 1` pool whose launcher records in `marks` when each launch starts (named `b-<name>`). */
export const handoffPool = (
  ctx: Ctx,
  marks: Array<number>,
  name = "handoff",
  forkFrom: "host" | "helper" = "host"
): Layer.Layer<ProcessPool> => {
  const config = poolConfig(ctx, name, { slots: 1, kill: { grace: "1 second" }, forkFrom })
  return Layer.unwrap(
    Effect.map(ShepherdConfig.resolve(config), (resolved) =>
      ProcessPool.layerResolved(resolved).pipe(
        Layer.provide(Layer.mergeAll(
          NodeProcessTable.layer,
          recordingLauncher(marks, forkFrom),
          NodeLedger.layer({ path: resolved.ledger as string }),
          NodeLifeline.layer
        ))
      ))
  ).pipe(Layer.orDie)
}

/**
 * One Shepherd hand-off on a pool from `handoffPool` (with the same `marks`): ms from the SIGKILL of
 * the slot's holder to the start of the queued spawn's launch.
 */
export const shepherdHandoff = (pool: ProcessPool["Service"], marks: Array<number>): Effect.Effect<number> =>
  Effect.gen(function*() {
    const holder = yield* Effect.orDie(pool.spawn(sleepCmd))
    const queued = yield* Effect.forkChild(Effect.orDie(pool.spawn(sleepCmd)))
    // wait until the second request is queued on the slot
    while ((yield* pool.stats).waiting < 1) yield* Effect.sleep(1)
    const before = marks.length
    const killedAt = performance.now()
    process.kill(holder.pid, "SIGKILL")
    const next = yield* Fiber.join(queued)
    const ms = marks[before]! - killedAt
    yield* Effect.orDie(next.terminate({ signal: "SIGKILL" }))
    return ms
  }).pipe(Effect.scoped)

/** One raw hand-off (the floor): a one-slot FIFO queue whose next command starts from the holder's `exit` event. */
export const rawHandoff: Effect.Effect<number> = Effect.promise(() =>
  new Promise<number>((resolve) => {
    const holder = NodeChildProcess.spawn("sleep", ["1000"], { stdio: "ignore", detached: true })
    let killedAt = 0
    holder.on("spawn", () => {
      killedAt = performance.now()
      process.kill(holder.pid!, "SIGKILL")
    })
    holder.on("exit", () => {
      const startedAt = performance.now()
      const next = NodeChildProcess.spawn("sleep", ["1000"], { stdio: "ignore", detached: true })
      next.on("spawn", () => next.kill("SIGKILL"))
      next.on("exit", () => resolve(startedAt - killedAt))
    })
  })
)

export const run = (ctx: Ctx): Effect.Effect<ScenarioOutput> => {
  const runs = ctx.quick ? 10 : 30
  const marks: Array<number> = []
  const helperMarks: Array<number> = []
  return usePool(
    handoffPool(ctx, marks),
    (pool) =>
      usePool(
        handoffPool(ctx, helperMarks, "handoff-fh", "helper"),
        (helperPool) =>
          withEffectSpawner((spawner) =>
            Effect.gen(function*() {
              const shepherdOnce = shepherdHandoff(pool, marks)
              const rawOnce = rawHandoff

              const effectOnce = Effect.gen(function*() {
                const sem = yield* Semaphore.make(1)
                const holding = yield* Deferred.make<number>()
                const holder = yield* Effect.forkChild(
                  sem.withPermit(Effect.scoped(Effect.gen(function*() {
                    const h = yield* spawner.spawn(sleepCmd)
                    yield* Deferred.succeed(holding, h.pid)
                    yield* Effect.ignore(h.exitCode)
                  })))
                )
                const pid = yield* Deferred.await(holding)
                let startedAt = 0
                const queued = yield* Effect.forkChild(
                  sem.withPermit(Effect.scoped(Effect.gen(function*() {
                    startedAt = performance.now()
                    const h = yield* spawner.spawn(sleepCmd)
                    yield* Effect.ignore(h.kill({ killSignal: "SIGKILL" }))
                  })))
                )
                yield* Effect.promise(() => sleep(2))
                const killedAt = performance.now()
                process.kill(pid, "SIGKILL")
                yield* Fiber.join(holder)
                yield* Fiber.join(queued)
                return startedAt - killedAt
              }).pipe(Effect.orDie)

              const contenders: Record<string, Effect.Effect<number>> = {
                [rawName]: rawOnce,
                [shepherdName]: shepherdOnce,
                [helperName]: shepherdHandoff(helperPool, helperMarks),
                [effectName]: effectOnce
              }
              const names = Object.keys(contenders)
              const samples: Record<string, Array<number>> = Object.fromEntries(names.map((n) => [n, []]))
              // warm-up of every contender (not recorded), then the order rotates per run: none always goes first
              for (const name of names) yield* contenders[name]!
              for (let r = 0; r < runs; r++) {
                for (let k = 0; k < names.length; k++) {
                  const name = names[(k + r) % names.length]!
                  samples[name]!.push(yield* contenders[name]!)
                }
              }
              const rows = msRows(scenario, samples)
              const effect = median(samples[effectName]!)
              const targets: Array<Target> = [[shepherdName, ""], [helperName, ", fork helper"]].map(
                ([name, which]) => {
                  const m = median(samples[name!]!)
                  return {
                    id: `4${which === "" ? "" : ` (${which.slice(2)})`}`,
                    goal: "hand-off median ≤ Effect ChildProcess + Semaphore(1) in the same run",
                    measured: `${fmt(m)} ms vs Effect ${fmt(effect)} ms (raw floor ${
                      fmt(median(samples[rawName]!))
                    } ms)`,
                    met: m <= effect
                  }
                }
              )
              log(`4: ${Object.entries(samples).map(([n, s]) => `${n} ${fmt(median(s))} ms`).join(", ")}`)
              return {
                rows,
                targets,
                notes: [
                  `4: ${runs} runs, one warm-up of each contender, order rotated per run; the clock starts at the SIGKILL of the holder, so Node's own exit detection (SIGCHLD → libuv → exit event) is included for every contender; it stops when the queued spawn starts its launch (Shepherd: the launcher is called, the slot taken and the ledger intent written; the fork itself, and for the fork helper its request to the helper, come after), as Effect's stops when its queued fiber holds the permit.`
                ]
              }
            })
          )
      )
  )
}
