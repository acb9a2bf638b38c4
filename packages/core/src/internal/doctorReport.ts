/**
 * The doctor's assembly: the pool, its sessions and their trees (with their
 * members as the process table sees them), the ledger, the reaper, the
 * lifeline, and the comparison of what the pool, the ledger and the OS know.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Containment from "../Containment.ts"
import type * as Doctor from "../Doctor.ts"
import * as Ledger from "../Ledger.ts"
import type { ProcessLauncher } from "../ProcessLauncher.ts"
import type { ProcessTable } from "../ProcessTable.ts"
import type * as Reaper from "../Reaper.ts"
import type * as ShepherdConfig from "../ShepherdConfig.ts"
import * as Teardown from "../Teardown.ts"
import type * as Journal from "./journal.ts"
import type * as Sessions from "./sessions.ts"
import * as Slots from "./slots.ts"
import type * as Tree from "./tree.ts"

/**
 * What the doctor reads.
 *
 * @since 0.1.0
 * @category models
 */
export interface Sources {
  readonly poolId: string
  readonly config: ShepherdConfig.Resolved
  readonly startedAt: number
  readonly bootId: string
  readonly table: ProcessTable["Service"]
  readonly journal: Journal.Journal
  readonly registry: Sessions.Registry
  readonly trees: Tree.Trees
  readonly slots: Slots.Slots
  readonly recovery: Reaper.RecoveryReport | undefined
  readonly reaper: Reaper.Reaper
  readonly containment: Containment.Attached
  readonly launcher: ProcessLauncher["Service"]
}

type Member = Doctor.DoctorReport["sessions"][number]["processes"][number]["members"][number]

/**
 * Builds the doctor report.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (sources: Sources): Effect.Effect<Doctor.DoctorReport> =>
  Effect.gen(function*() {
    const { config, journal, poolId, registry, table, trees } = sources
    const { ledger, lifeline } = journal
    const now = yield* Clock.currentTimeMillis
    const states = [...registry.sessions.values()].flatMap((s) => [...s.processes])
    // One coalesced scan serves every tree's member list.
    const membersOf = yield* Effect.forEach(states, (p) => Effect.orElseSucceed(table.members(p.container), () => []), {
      concurrency: "unbounded"
    })
    const described = new Map<string, ReadonlyArray<Member>>()
    for (const [i, p] of states.entries()) {
      const infos = yield* Effect.forEach(membersOf[i]!, (identity) => table.inspect(identity))
      described.set(
        p.managed.shepherdId,
        infos.filter((x) => x !== undefined).map((info) =>
          p.secrets.length === 0 ? info : { ...info, command: hideArguments(info.command, p.secrets) }
        )
      )
    }
    const entries = ledger === undefined ? [] : yield* ledger.entries
    const inLedger = new Set(entries.map((e) => e.shepherdId))
    const carriers = yield* Effect.orElseSucceed(
      table.carriers(`${poolId}:`, { notBefore: ledger?.host.startTime }),
      () => []
    )
    const untracked = new Map<string, Array<number>>()
    for (const c of carriers) {
      if (trees.tracked.has(c.shepherdId) || inLedger.has(c.shepherdId)) continue
      untracked.set(c.shepherdId, [...(untracked.get(c.shepherdId) ?? []), c.identity.pid])
    }
    const stale = yield* Effect.forEach(entries.filter((e) => !trees.tracked.has(e.shepherdId)), (e) =>
      Effect.map(
        Effect.orElseSucceed(table.members(Ledger.containerOf(e, sources.bootId)), () => []),
        (alive) => ({
          shepherdId: e.shepherdId,
          session: e.session,
          command: e.command,
          ...(e.identity === undefined ? {} : { pid: e.identity.pid }),
          alive: alive.map((m) => m.pid)
        })
      ))
    const lifelineStatus = lifeline === undefined ? undefined : yield* lifeline.status
    const launcherStatus = sources.launcher.status === undefined ? undefined : yield* sources.launcher.status
    const lastCompaction = ledger === undefined ? undefined : yield* ledger.lastCompaction
    const lastTick = Option.getOrUndefined(yield* sources.reaper.lastTick)
    const sessions = [...registry.sessions.values()]
    const usage = yield* Effect.forEach(sessions, (s) => sources.containment.usage(s.id))
    return {
      at: now,
      pool: {
        poolId,
        name: config.name,
        uptimeMs: now - sources.startedAt,
        slots: config.slots,
        hardCap: config.hardCap,
        slotTimeoutMs: config.slotTimeoutMs,
        kill: config.kill,
        reapIntervalMs: config.reapIntervalMs,
        closing: registry.closing
      },
      ...(ledger === undefined ? {} : { host: ledger.host }),
      slots: Slots.stats(sources.slots, now),
      sessions: sessions.map((s, i) => ({
        id: s.id,
        closing: s.closed !== undefined,
        ...(s.limits === undefined ? {} : { limits: s.limits }),
        ...(usage[i] === undefined ? {} : { usage: usage[i] }),
        processes: [...s.processes].map((p) => ({
          shepherdId: p.managed.shepherdId,
          pid: p.managed.pid,
          pgid: p.managed.pgid,
          identity: p.managed.identity,
          command: p.managed.command,
          ageMs: now - p.managed.startedAt,
          slotWaitMs: p.managed.slotWaitMs,
          state: p.exitStatus() === undefined ? "running" as const : "exited" as const,
          members: described.get(p.managed.shepherdId) ?? [],
          ...(p.container.cgroup === undefined ? {} : { cgroup: p.container.cgroup.path }),
          env: {
            inherited: p.managed.env.inherited.length,
            stripped: p.managed.env.stripped,
            preserved: p.managed.env.preserved,
            explicit: p.managed.env.explicit
          }
        }))
      })),
      recent: trees.recent.map(({ at, report }) => ({
        shepherdId: report.shepherdId,
        session: report.session,
        pid: report.pid,
        command: report.command,
        outcome: report._tag,
        description: Teardown.describe(report),
        durationMs: report.durationMs,
        at
      })),
      ...(ledger === undefined ? {} : {
        ledger: {
          path: ledger.path,
          live: entries.length,
          ...(lastCompaction === undefined ? {} : { lastCompaction }),
          tornLine: ledger.opened.tornLine,
          badLines: ledger.opened.badLines,
          ...(ledger.opened.quarantined === undefined ? {} : { quarantined: ledger.opened.quarantined }),
          ...(ledger.opened.tookOverFrom === undefined ? {} : { tookOverFrom: ledger.opened.tookOverFrom })
        }
      }),
      ...(sources.recovery === undefined ? {} : { recovery: sources.recovery }),
      reaper: { intervalMs: config.reapIntervalMs, ...(lastTick === undefined ? {} : { lastTick }) },
      ...(lifelineStatus === undefined ? {} : {
        lifeline: {
          kind: lifelineStatus.kind,
          ...(lifelineStatus.pid === undefined ? {} : { pid: lifelineStatus.pid }),
          alive: lifelineStatus.alive,
          watching: lifelineStatus.watching,
          restarts: lifelineStatus.restarts,
          ...(lifelineStatus.lastError === undefined ? {} : { lastError: lifelineStatus.lastError }),
          ...(lifelineStatus.waiting === undefined || lifelineStatus.waiting === 0
            ? {}
            : { waiting: lifelineStatus.waiting })
        }
      }),
      ...(launcherStatus === undefined ? {} : {
        launcher: {
          forkFrom: launcherStatus.forkFrom,
          ...(launcherStatus.pid === undefined ? {} : { pid: launcherStatus.pid }),
          alive: launcherStatus.alive,
          deaths: launcherStatus.deaths,
          ...(launcherStatus.lastError === undefined ? {} : { lastError: launcherStatus.lastError }),
          ...(launcherStatus.fallback === undefined ? {} : { fallback: launcherStatus.fallback })
        }
      }),
      envPolicy: config.env,
      containment: sources.containment.status,
      comparison: {
        untracked: [...untracked].map(([shepherdId, pids]) => ({ shepherdId, pids })),
        stale,
        vanished: states.filter((_, i) => membersOf[i]!.length === 0).map((p) => ({
          shepherdId: p.managed.shepherdId,
          pid: p.managed.pid
        })),
        unrecorded: ledger === undefined
          ? []
          : states.map((p) => p.managed.shepherdId).filter((id) => !inLedger.has(id))
      }
    }
  }).pipe(Effect.withSpan("ProcessPool.doctor", { attributes: { poolId: sources.poolId } }))

/**
 * A member's command line as the doctor shows it for a tree spawned with
 * `Redacted` values: the executable's name only. A member may carry a secret
 * anywhere in its arguments (a child can re-exec with it in another position),
 * so arguments are never shown; occurrences in the name itself are masked.
 */
const hideArguments = (commandLine: string, secrets: ReadonlyArray<string>): string => {
  const masked = secrets.reduce((text, secret) => text.split(secret).join("<redacted>"), commandLine)
  const program = masked.split(" ")[0] ?? ""
  const name = program.slice(program.lastIndexOf("/") + 1)
  return `${name.length === 0 ? "?" : name} <arguments hidden>`
}
