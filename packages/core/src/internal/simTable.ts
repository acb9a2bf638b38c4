/**
 * The `ProcessTable` of `TestOs`: membership, liveness, inspection, carriers
 * and signal delivery over the simulated world, with each process answering
 * a graceful signal as its behaviour says.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Membership from "../Membership.ts"
import {
  type Carrier,
  type Container,
  type ProcessInfo,
  ProcessTable,
  ProcessTableError,
  type SignalResult
} from "../ProcessTable.ts"
import type { Signal } from "../Signal.ts"
import * as SimWorld from "./simWorld.ts"

const broken = (reason: string) => Effect.fail(new ProcessTableError({ reason }))

// `SIGKILL` kills (except `unkillable` members); a graceful signal gets the process's `onTerm` answer.
const deliver = (timers: SimWorld.Timers, p: SimWorld.SimProcess, signal: Signal): Effect.Effect<void> => {
  if (p.role === "unkillable") return Effect.void
  if (signal === "SIGKILL") return SimWorld.die(p, { code: null, signal })
  const answer = p.onTerm
  if (answer === "ignore") return Effect.void
  if (answer === "exit") return SimWorld.die(p, { code: null, signal })
  if (p.terminating) return Effect.void
  p.terminating = true
  return SimWorld.after(timers, answer.exitAfterMs, SimWorld.die(p, { code: answer.code ?? p.exitCode, signal: null }))
}

/**
 * @since 0.1.0
 * @category constructors
 */
export const make = (world: SimWorld.SimWorld, timers: SimWorld.Timers): ProcessTable["Service"] =>
  ProcessTable.of({
    members: (container: Container) =>
      Effect.suspend(() =>
        world.tableBroken !== undefined
          ? broken(world.tableBroken)
          : Effect.sync(() => {
            const judged = Membership.judge(container, world.host, world.observe)
            return world.all
              .filter((p) => SimWorld.isLive(p) && Membership.isMember(judged, SimWorld.candidate(p)))
              .map((p) => p.identity)
          })
      ),
    isAlive: (identity) => Effect.sync(() => SimWorld.lookup(world, identity) !== undefined),
    inspect: (identity) =>
      Effect.sync((): ProcessInfo | undefined => {
        const p = SimWorld.lookup(world, identity)
        return p === undefined
          ? undefined
          : { pid: p.pid, ppid: p.ppid, pgid: p.pgid, state: SimWorld.state(p), rssKiB: p.rssKiB, command: p.line }
      }),
    carriers: (prefix, carrierOptions) =>
      Effect.suspend(() => {
        if (world.tableBroken !== undefined) return broken(world.tableBroken)
        const notBefore = carrierOptions?.notBefore === undefined ? undefined : Number(carrierOptions.notBefore)
        const found: Array<Carrier> = []
        for (const p of world.all) {
          if (!SimWorld.isLive(p) || p.shepherdId === undefined || !p.shepherdId.startsWith(prefix)) continue
          if (notBefore !== undefined && Number(p.identity.startTime) < notBefore) continue
          found.push({ identity: p.identity, shepherdId: p.shepherdId, pgid: p.pgid })
        }
        return Effect.succeed(found)
      }),
    signal: (identity, signal) =>
      Effect.suspend((): Effect.Effect<SignalResult> => {
        const verdict = Membership.signalVerdict(identity, world.host, world.observe)
        const p = world.byPid.get(identity.pid)
        if (verdict !== "send" || p === undefined) return Effect.succeed(verdict === "not-ours" ? verdict : "gone")
        return Effect.flatMap(Clock.currentTimeMillis, (at) => {
          world.signals.push({ pid: p.pid, role: p.role, command: p.command, signal, at })
          return Effect.as(
            Effect.andThen(deliver(timers, p, signal), Effect.sync(() => SimWorld.measure(world))),
            "sent" as const
          )
        })
      })
  })
