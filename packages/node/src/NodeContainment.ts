/**
 * Containment on Node: a cgroup v2 leaf per tree where the OS allows it, the
 * process group + `SHEPHERD_ID` cookie everywhere (and as the fallback).
 *
 * The choice is made when the layer is built, from `containment` in the
 * config (else `SHEPHERD_CONTAINMENT`, else `"auto"`):
 * - `"auto"` detects a usable cgroup v2 base (the configured `cgroup.base`, a
 *   writable delegated subtree, a writable cgroup2 mount; probed) and uses it;
 *   where there is none it keeps the process group + cookie and logs why;
 * - `"cgroup"` fails the layer with `ContainmentUnavailable` where there is none;
 * - `"process-group"` never uses cgroups.
 *
 * Under cgroup containment each pool gets
 * `<base>/shepherd-<pool id>.<host pid>.<host start time>/` with a leaf for
 * its lifeline sentinel, a cgroup per session (while the session has trees)
 * and a leaf per tree. A tree's members are its leaf's processes as well as
 * its process group and cookie; its teardown is done when the leaf holds no
 * live process (the `cgroup.events` watch wakes it), and its force phase
 * writes `cgroup.kill`. When the pool starts, cgroups left by dead hosts are
 * terminated and removed; when it closes, its own are.
 *
 * Costs measured on a 2-core machine: the placement wrapper about 1 ms per
 * spawn (one more `exec`, of `/bin/sh`), a leaf's mkdir + rmdir well under
 * 0.1 ms, `cgroup.kill` 25 µs.
 *
 * @since 0.2.0
 */
import * as Containment from "@shepherd/core/Containment"
import type { KillPolicy } from "@shepherd/core/KillPolicy"
import { ProcessLauncher } from "@shepherd/core/ProcessLauncher"
import * as ShepherdConfig from "@shepherd/core/ShepherdConfig"
import { ContainmentUnavailable, type InvalidConfig } from "@shepherd/core/ShepherdError"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Cgroup from "./internal/cgroup.ts"
import * as CgroupLauncher from "./internal/cgroupLauncher.ts"
import * as CgroupPool from "./internal/cgroupPool.ts"
import * as cgroupTable from "./internal/cgroupTable.ts"
import * as procfs from "./internal/procfs.ts"

let wrapperChecked: string | undefined | null = null

/**
 * Why the placement wrapper would not hand a command exactly its environment
 * with this machine's `/bin/sh` (`undefined`: it does). Checked once per
 * process, by running the wrapper on a test environment; a shell other than
 * dash (bash as `sh` sets `_` and `SHLVL`) makes the pool place after spawn.
 *
 * @since 0.2.0
 * @category detection
 */
export const wrapperIssue = (): string | undefined => {
  if (wrapperChecked !== null) return wrapperChecked
  const envProgram = ["/usr/bin/env", "/bin/env"].find((f) => fs.existsSync(f))
  if (envProgram === undefined) return wrapperChecked = undefined // nothing to check with: trust the shell
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-wrapper-"))
  try {
    fs.writeFileSync(path.join(dir, "cgroup.procs"), "")
    const env = { SHEPHERD_WRAPPER_PROBE: "a b", IFS: ":", OPTIND: "3", PPID: "1", PATH: "/usr/bin:/bin" }
    const fake: Cgroup.Cgroup = { path: dir, dev: 0n, ino: 0n }
    const line = Cgroup.wrapExact(fake, envProgram, [], env)
    if ("unwrappable" in line) return wrapperChecked = line.unwrappable
    const out = NodeChildProcess.spawnSync(line.command, [...line.args], {
      env: line.env,
      encoding: "latin1",
      timeout: 10_000
    })
    if (out.status !== 0) return wrapperChecked = `${Cgroup.shell} could not run the wrapper: ${out.stderr}`
    const got = out.stdout.split("\n").filter((l) => l !== "").sort()
    const want = Object.entries(env).map(([k, v]) => `${k}=${v}`).sort()
    return wrapperChecked = got.join("\n") === want.join("\n")
      ? undefined
      : `${Cgroup.shell} changes the environment it passes on (${
        got.filter((l) => !want.includes(l)).join(", ") || "drops variables"
      })`
  } catch (error) {
    return wrapperChecked = `the wrapper could not be checked: ${String(error)}`
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

const processGroupOnly = (
  base: ProcessLauncher["Service"],
  mode: Containment.Mode,
  reason: string
): Context.Context<Containment.Containment | ProcessLauncher> =>
  Context.make(
    Containment.Containment,
    Containment.Containment.of({ attach: () => Effect.succeed(Containment.processGroup(mode, reason)) })
  ).pipe(Context.add(ProcessLauncher, base))

/**
 * The containment for `config`, and the launcher that uses it (the given
 * `ProcessLauncher`, decorated under cgroup containment). Fails with
 * `InvalidConfig` when `SHEPHERD_CONTAINMENT` is not a containment, and with
 * `ContainmentUnavailable` when `"cgroup"` is required and not usable here.
 *
 * @since 0.2.0
 * @category layers
 */
export const layer = (
  config: ShepherdConfig.Resolved
): Layer.Layer<
  Containment.Containment | ProcessLauncher,
  ContainmentUnavailable | InvalidConfig,
  ProcessLauncher
> =>
  Layer.effectContext(Effect.gen(function*() {
    const base = yield* ProcessLauncher
    const mode = yield* ShepherdConfig.containment(config, process.env.SHEPHERD_CONTAINMENT)
    if (mode === "process-group") return processGroupOnly(base, mode, `configured: containment "process-group"`)
    const detection = Cgroup.detectUnsafe({ base: config.cgroup.base })
    if (detection._tag === "Unusable") {
      if (mode === "cgroup") {
        return yield* new ContainmentUnavailable({ requested: "cgroup", reason: detection.reason })
      }
      const reason = `cgroup v2 is not usable here: ${detection.reason}`
      yield* Effect.logInfo(`containment: process group + cookie (${reason})`)
      return processGroupOnly(base, mode, reason)
    }
    const usable = detection
    let placement = config.cgroup.placement
    let placementNote = ""
    const issue = placement === "wrapper" ? wrapperIssue() : undefined
    if (issue !== undefined) {
      placement = "post-spawn"
      placementNote = `; placement after spawn, because ${issue}`
      yield* Effect.logWarning(`containment: cgroup v2, but ${issue}: children are moved after spawn (racy)`)
    }
    const pools = new Map<string, CgroupPool.CgroupPool>()
    const reason = `cgroup v2 at ${usable.base} (${
      usable.source === "configured"
        ? "configured"
        : usable.source === "delegated"
        ? "delegated subtree"
        : "writable mount"
    })${mode === "auto" ? ", detected by auto" : ""}${placementNote}`

    const attach = (
      poolId: string,
      options: { readonly policy: KillPolicy; readonly recover?: ReadonlyArray<string> | undefined }
    ) =>
      Effect.gen(function*() {
        const recovered = yield* CgroupPool.recoverDead(usable, options.policy, options.recover ?? [])
        const killed = recovered.reduce((n, r) => n + r.processes, 0)
        if (killed > 0) {
          yield* Effect.logWarning(
            `containment: removed ${recovered.length} cgroup(s) of dead hosts (${killed} process(es) still in them were terminated)`
          )
        }
        const start = procfs.readStat(process.pid)?.startTime
        const created = yield* Effect.result(
          Cgroup.createPool(usable, poolId, start === undefined ? undefined : { pid: process.pid, startTime: start })
        )
        if (created._tag === "Failure") {
          if (mode === "cgroup") {
            return yield* Effect.die(new ContainmentUnavailable({ requested: mode, reason: created.failure.message }))
          }
          const why = `the pool's cgroup could not be created: ${created.failure.message}`
          yield* Effect.logWarning(`containment: process group + cookie (${why})`)
          return Containment.processGroup(mode, why)
        }
        const { pool, sentinel } = created.success
        const p: CgroupPool.CgroupPool = {
          poolId,
          usable,
          placement,
          base: Cgroup.baseOf(usable),
          pool,
          sentinel,
          sessions: new Map(),
          enabled: new Map()
        }
        pools.set(poolId, p)
        yield* Effect.addFinalizer(() => Effect.andThen(CgroupPool.close(p), Effect.sync(() => pools.delete(poolId))))
        yield* Effect.logDebug(`containment: ${reason}; pool cgroup ${pool.path}`)
        const attached: Containment.Attached = {
          status: {
            kind: "cgroup",
            requested: mode,
            reason,
            cgroup: {
              base: usable.base,
              source: usable.source,
              placement,
              pool: pool.path,
              controllers: usable.controllers
            },
            ...(recovered.length === 0 ? {} : { recovered })
          },
          checkLimits: (limits) => CgroupPool.checkLimits(p, limits),
          usage: (session) => Effect.sync(() => CgroupPool.usage(p, session)),
          lifeline: { pool: cgroupTable.toRef(pool), sentinel: cgroupTable.toRef(sentinel) }
        }
        return attached
      })

    return Context.make(Containment.Containment, Containment.Containment.of({ attach })).pipe(
      Context.add(ProcessLauncher, CgroupLauncher.make(base, pools))
    )
  }))

/**
 * One pool's cgroup under the base, as `shepherd doctor` and `shepherd reap` see it.
 *
 * @since 0.2.0
 * @category models
 */
export interface PoolCgroup {
  readonly cgroup: string
  readonly poolId: string | undefined
  /** The host its name records, and whether it is still that process. */
  readonly host: { readonly pid: number; readonly alive: boolean } | undefined
  readonly sentinelAlive: boolean
  /** Live processes in it (the sentinel's included). */
  readonly processes: number
  /** Its host is gone and its sentinel too: `shepherd reap` (or its ledger's next host) ends and removes it. */
  readonly dead: boolean
}

/**
 * Which containment a pool would get here, and why, with the pools' cgroups found under the base.
 *
 * @since 0.2.0
 * @category models
 */
export interface Inspection {
  readonly requested: Containment.Mode
  readonly kind: "cgroup" | "process-group"
  readonly reason: string
  readonly base?: string | undefined
  readonly controllers?: ReadonlyArray<string> | undefined
  /** Why the placement wrapper would not be used (post-spawn placement instead), if so. */
  readonly placementIssue?: string | undefined
  readonly pools: ReadonlyArray<PoolCgroup>
}

const poolCgroups = (usable: Cgroup.Usable): Effect.Effect<Array<PoolCgroup>> =>
  Effect.map(Effect.orElseSucceed(Cgroup.listPools(usable), () => []), (entries) =>
    entries.map((entry) => {
      let processes = 0
      try {
        processes = cgroupTable.membersOf(cgroupTable.toRef(entry.cgroup), "", true).length
      } catch {
        // removed meanwhile
      }
      return {
        cgroup: entry.cgroup.path,
        poolId: entry.poolId,
        host: entry.host === undefined ? undefined : { pid: entry.host.pid, alive: CgroupPool.hostAlive(entry.host) },
        sentinelAlive: entry.sentinelAlive,
        processes,
        dead: CgroupPool.isDead(entry)
      }
    }))

/**
 * What containment a pool built here with `containment` (else `SHEPHERD_CONTAINMENT`, else
 * `"auto"`) and `base` would get, and the pools' cgroups under that base. Read-only.
 *
 * @since 0.2.0
 * @category diagnostics
 */
export const inspect = (
  options: { readonly containment?: Containment.Mode | undefined; readonly base?: string | undefined } = {}
): Effect.Effect<Inspection> =>
  Effect.gen(function*() {
    const requested = options.containment ??
      (Containment.Mode.literals as ReadonlyArray<string>).find((m) => m === process.env.SHEPHERD_CONTAINMENT) as
        | Containment.Mode
        | undefined ??
      "auto"
    const detection = Cgroup.detectUnsafe({ base: options.base })
    if (requested === "process-group") {
      return { requested, kind: "process-group", reason: `configured: containment "process-group"`, pools: [] }
    }
    if (detection._tag === "Unusable") {
      return {
        requested,
        kind: "process-group",
        reason: requested === "cgroup"
          ? `containment "cgroup" is required but not usable here (a pool would fail to start): ${detection.reason}`
          : `cgroup v2 is not usable here: ${detection.reason}`,
        pools: []
      }
    }
    const placementIssue = wrapperIssue()
    return {
      requested,
      kind: "cgroup",
      reason: `cgroup v2 at ${detection.base} (${detection.source})`,
      base: detection.base,
      controllers: detection.controllers,
      ...(placementIssue === undefined ? {} : { placementIssue }),
      pools: yield* poolCgroups(detection)
    }
  })

/**
 * Ends and removes the cgroups of dead hosts under the base (their host gone, their sentinel too):
 * only those of `poolIds` when given (the pools of one ledger), else all. With `dryRun`, only
 * says which. Processes in them get `policy` (signal, grace, `cgroup.kill`).
 *
 * @since 0.2.0
 * @category recovery
 */
export const reapDead = (options: {
  readonly policy: KillPolicy
  readonly dryRun: boolean
  readonly poolIds?: ReadonlyArray<string> | undefined
  readonly base?: string | undefined
}): Effect.Effect<ReadonlyArray<PoolCgroup & { readonly removed: boolean }>> =>
  Effect.gen(function*() {
    const detection = Cgroup.detectUnsafe({ base: options.base })
    if (detection._tag === "Unusable") return []
    const only = options.poolIds === undefined ? undefined : new Set(options.poolIds)
    const entries = (yield* Effect.orElseSucceed(Cgroup.listPools(detection), () => [])).filter((e) =>
      CgroupPool.isDead(e) && (only === undefined || (e.poolId !== undefined && only.has(e.poolId)))
    )
    const described = new Map((yield* poolCgroups(detection)).map((p) => [p.cgroup, p]))
    return yield* Effect.forEach(entries, (entry) => {
      const info = described.get(entry.cgroup.path) ?? {
        cgroup: entry.cgroup.path,
        poolId: entry.poolId,
        host: undefined,
        sentinelAlive: false,
        processes: 0,
        dead: true
      }
      return options.dryRun
        ? Effect.succeed({ ...info, removed: false })
        : Effect.map(CgroupPool.terminateAndRemove(entry.cgroup, options.policy), (r) => ({
          ...info,
          processes: r.processes,
          removed: r.removed
        }))
    }, { concurrency: "unbounded" })
  })
