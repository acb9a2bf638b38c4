/**
 * The `ProcessLauncher` of `TestOs`: a launch waits out its delay, fails as
 * its behaviour says or starts a leader with its members (children,
 * unkillable and escaped ones), and the leader exits by itself if told to.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as PlatformError from "effect/PlatformError"
import type * as ChildProcess from "effect/process/ChildProcess"
import * as Redacted from "effect/Redacted"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import { type ExitStatus, type Launched, ProcessLauncher } from "../ProcessLauncher.ts"
import * as Membership from "../Membership.ts"
import type { Behaviour, Role } from "../testing/TestOs.ts"
import * as SimWorld from "./simWorld.ts"

const unwrap = (word: string | Redacted.Redacted<string>): string =>
  Redacted.isRedacted(word) ? Redacted.value(word) : word

interface Launch {
  readonly command: string
  readonly line: string
  readonly env: Readonly<Record<string, string>>
  readonly behaviour: Behaviour
  readonly now: number
}

// Adds one process of the tree to the world: a leader (no parent) or a member of `parent`.
const start = (
  world: SimWorld.SimWorld,
  launch: Launch,
  role: Role,
  parent: SimWorld.SimProcess | undefined,
  exited?: Deferred.Deferred<ExitStatus>
): SimWorld.SimProcess => {
  const { behaviour } = launch
  const pid = world.nextPid++
  const pgid = parent === undefined || role === "escaped" ? pid : parent.pgid
  const startTime = String(++world.sequence)
  const vouched = Membership.vouch(
    { pid, pgid, startTime, start: BigInt(startTime) },
    (group) => {
      const leader = world.observe(group)
      return leader === undefined || leader === "unreadable" ? undefined : leader.startTime
    },
    parent === undefined ? undefined : SimWorld.candidate(parent)
  )
  const leaderTerm = behaviour.onTerm ?? "exit"
  const p: SimWorld.SimProcess = {
    pid,
    ppid: parent === undefined ? world.host.pid : role === "escaped" ? 1 : parent.pid,
    pgid,
    identity: { pid, startTime, bootId: SimWorld.bootId },
    role,
    command: launch.command,
    line: launch.line,
    shepherdId: launch.env.SHEPHERD_ID,
    env: launch.env,
    startedAt: launch.now,
    exitedAt: undefined,
    status: undefined,
    rssKiB: behaviour.rssKiB ?? 1024,
    onTerm: role === "leader" ? leaderTerm : behaviour.childrenOnTerm ?? leaderTerm,
    exitCode: behaviour.exitCode ?? 0,
    exited,
    vouched,
    terminating: false
  }
  world.all.push(p)
  world.byPid.set(pid, p)
  return p
}

/**
 * @since 0.1.0
 * @category constructors
 */
export const make = (world: SimWorld.SimWorld, timers: SimWorld.Timers): ProcessLauncher["Service"] => {
  const launch = Effect.fnUntraced(function*(
    command: ChildProcess.StandardCommand,
    env: Readonly<Record<string, string>>
  ) {
    const line = [command.command, ...command.args.map(unwrap)].join(" ")
    const behaviour = world.behaviours.get(command.command) ?? world.defaultBehaviour
    const delayMs = behaviour.launchDelayMs ?? world.defaultDelayMs
    world.order.push(line)
    world.inFlight++
    SimWorld.measure(world)
    yield* Effect.sleep(delayMs).pipe(Effect.ensuring(Effect.sync(() => world.inFlight--)))
    if (behaviour.failSpawn !== undefined) {
      return yield* Effect.fail(PlatformError.systemError({
        _tag: behaviour.failSpawn,
        module: "ChildProcess",
        method: "spawn",
        syscall: `spawn ${command.command}`,
        pathOrDescriptor: command.command,
        description: `${line}: simulated ${behaviour.failSpawn}`
      }))
    }
    const tree: Launch = { command: command.command, line, env, behaviour, now: yield* Clock.currentTimeMillis }
    const exited = Deferred.makeUnsafe<ExitStatus>()
    const leader = start(world, tree, "leader", undefined, exited)
    for (let i = 0; i < (behaviour.children ?? 0); i++) start(world, tree, "child", leader)
    for (let i = 0; i < (behaviour.unkillable ?? 0); i++) start(world, tree, "unkillable", leader)
    for (let i = 0; i < (behaviour.escapedChildren ?? 0); i++) start(world, tree, "escaped", leader)
    SimWorld.measure(world)
    if (behaviour.exitAfterMs !== undefined) {
      const natural = SimWorld.die(leader, { code: behaviour.exitCode ?? 0, signal: null })
      yield* SimWorld.after(
        timers,
        behaviour.exitAfterMs,
        Effect.andThen(natural, Effect.sync(() => SimWorld.measure(world)))
      )
    }
    const launched: Launched = {
      pid: leader.pid,
      pgid: leader.pgid,
      identity: leader.identity,
      exit: Deferred.await(exited),
      exitStatus: () => leader.status,
      io: {
        stdin: Sink.drain,
        stdout: Stream.empty,
        stderr: Stream.empty,
        all: Stream.empty,
        getInputFd: () => Sink.drain,
        getOutputFd: () => Stream.empty
      }
    }
    return launched
  })
  return ProcessLauncher.of({ inheritedEnv: () => ({ ...world.hostEnv }), launch })
}
