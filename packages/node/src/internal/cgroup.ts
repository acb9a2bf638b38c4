/**
 * Cgroup v2 containment, the Effect side (issue 12): detection, the layout
 * `<base>/shepherd-<pool id>[.<host pid>.<host start>]/{sentinel, s-<session>/t-<tree>}`,
 * race-free placement, members, "tree empty" as an event, `cgroup.kill`,
 * removal. The pool uses them through `NodeContainment` (`cgroupPool.ts`,
 * `cgroupLauncher.ts`, `cgroupTable.ts`).
 *
 * The synchronous primitives live in `cgroupMounts.ts`, `cgroupDetect.ts`,
 * `cgroupNames.ts`, `cgroupFs.ts`, `cgroupMembers.ts` and `cgroupPlacement.ts`
 * (free of Effect, for the lifeline sentinel); this module re-exports what a
 * caller needs and wraps the fallible steps as Effects that fail with
 * `CgroupError`.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as fs from "node:fs"
import { baseOf, type Detection, detect as detectUnsafe, type DetectOptions, type Usable } from "./cgroupDetect.ts"
import { attempt, CgroupError, toError } from "./cgroupError.ts"
import * as CgroupFs from "./cgroupFs.ts"
import * as CgroupMembers from "./cgroupMembers.ts"
import * as CgroupNames from "./cgroupNames.ts"

export {
  baseOf,
  type Detection,
  detect as detectUnsafe,
  type DetectOptions,
  type Unusable,
  type Usable
} from "./cgroupDetect.ts"
export { CgroupError } from "./cgroupError.ts"
export { type Cgroup, childrenUnsafe, isIntact, removeOnceUnsafe } from "./cgroupFs.ts"
export {
  killUnsafe,
  listPoolsUnsafe,
  parsePopulated,
  type PoolEntry,
  populatedUnsafe,
  procsUnsafe
} from "./cgroupMembers.ts"
export { type Mount, parseMountInfo, parseOwnCgroup } from "./cgroupMounts.ts"
export {
  decodeName,
  encodeName,
  type HostMark,
  hostPoolDirName,
  parsePoolDirName,
  poolDirName,
  sentinelDirName,
  sessionDirName,
  treeDirName
} from "./cgroupNames.ts"
export {
  type CommandLine,
  type ExactCommandLine,
  placementFailedCode,
  shell,
  wrap,
  wrapExact,
  wrapThroughFd
} from "./cgroupPlacement.ts"

/**
 * Detects whether cgroup v2 containment is usable, and where (see `cgroupDetect.ts`).
 *
 * @since 0.1.0
 * @category detection
 */
export const detect = (options?: DetectOptions): Effect.Effect<Detection> => Effect.sync(() => detectUnsafe(options))

/**
 * A pool's cgroup and its sentinel's leaf.
 *
 * @since 0.1.0
 * @category models
 */
export interface PoolCgroups {
  readonly pool: CgroupFs.Cgroup
  readonly sentinel: CgroupFs.Cgroup
}

/**
 * Creates `<base>/shepherd-<poolId>` (with `host`: `shepherd-<poolId>.<pid>.<start time>`) and its
 * `sentinel` leaf. Fails with `AlreadyExists` when a cgroup of that name is there (a dead host's:
 * reap it first; nothing is reused).
 *
 * @since 0.1.0
 * @category layout
 */
export const createPool = Effect.fn("Cgroup.createPool")(function*(
  usable: Usable,
  poolId: string,
  host?: CgroupNames.HostMark | undefined
) {
  const name = yield* attempt(
    "createPool",
    usable.base,
    () => host === undefined ? CgroupNames.poolDirName(poolId) : CgroupNames.hostPoolDirName(poolId, host)
  )
  const base = yield* attempt("createPool", usable.base, () => baseOf(usable))
  if (base.dev !== usable.dev) {
    return yield* new CgroupError({
      operation: "createPool",
      path: usable.base,
      reason: "NotCgroup",
      detail: `${usable.base} is no longer in the cgroup2 file system mounted at ${usable.mount}`
    })
  }
  const pool = yield* attempt("createPool", `${usable.base}/${name}`, () => CgroupFs.createUnsafe(base, name))
  const sentinel = yield* attempt(
    "createPool",
    `${pool.path}/${CgroupNames.sentinelDirName}`,
    () => CgroupFs.createUnsafe(pool, CgroupNames.sentinelDirName)
  ).pipe(Effect.tapError(() => Effect.ignore(attempt("createPool", pool.path, () => CgroupFs.removeOnceUnsafe(pool)))))
  return { pool, sentinel } satisfies PoolCgroups
})

/**
 * Creates the cgroup of session `sessionId` in a pool's cgroup (`s-<sanitized id>`).
 *
 * @since 0.1.0
 * @category layout
 */
export const createSession = Effect.fn("Cgroup.createSession")(function*(pool: CgroupFs.Cgroup, sessionId: string) {
  const name = CgroupNames.sessionDirName(sessionId)
  return yield* attempt("createSession", `${pool.path}/${name}`, () => CgroupFs.createUnsafe(pool, name))
})

/**
 * Creates the leaf of tree number `seq` in its session's cgroup (`t-<seq>`).
 *
 * @since 0.1.0
 * @category layout
 */
export const createTree = Effect.fn("Cgroup.createTree")(function*(session: CgroupFs.Cgroup, seq: number) {
  const name = yield* attempt("createTree", session.path, () => CgroupNames.treeDirName(seq))
  return yield* attempt("createTree", `${session.path}/${name}`, () => CgroupFs.createUnsafe(session, name))
})

/** Child cgroups first; `"busy"` as soon as one of them still holds a live process. */
const removeOnce = (cgroup: CgroupFs.Cgroup): "removed" | "gone" | "busy" => {
  if (!CgroupFs.isIntact(cgroup)) return "gone"
  let children: Array<CgroupFs.Cgroup>
  try {
    children = CgroupFs.childrenUnsafe(cgroup)
  } catch (error) {
    if (error instanceof CgroupFs.CgroupFailure && (error.reason === "NotFound" || error.reason === "Swapped")) {
      return "gone"
    }
    throw error
  }
  for (const child of children) if (removeOnce(child) === "busy") return "busy"
  return CgroupFs.removeOnceUnsafe(cgroup)
}

/**
 * Removes `cgroup` and every cgroup below it, retrying while one still holds a live process (the
 * last members of a killed tree take a moment to exit) until `timeout` (default 1 second), then
 * `Busy`. `"gone"` when it was not there (or the path holds another cgroup, which is left alone).
 *
 * @since 0.1.0
 * @category layout
 */
export const remove = Effect.fn("Cgroup.remove")(
  function*(cgroup: CgroupFs.Cgroup, options?: { readonly timeout?: Duration.Input | undefined }) {
    const timeoutMs = Duration.toMillis(Duration.fromInputUnsafe(options?.timeout ?? "1 second"))
    const deadline = (yield* Clock.currentTimeMillis) + timeoutMs
    let waitMs = 1
    while (true) {
      const result = yield* attempt("remove", cgroup.path, () => removeOnce(cgroup))
      if (result !== "busy") return result
      if ((yield* Clock.currentTimeMillis) >= deadline) {
        return yield* new CgroupError({
          operation: "remove",
          path: cgroup.path,
          reason: "Busy",
          detail: `${cgroup.path} still holds live processes after ${timeoutMs} ms`
        })
      }
      yield* Effect.sleep(waitMs)
      waitMs = Math.min(50, waitMs * 2)
    }
  }
)

/**
 * The pools' cgroups under the base (alive and dead hosts'), for recovery and `shepherd reap`.
 *
 * @since 0.1.0
 * @category layout
 */
export const listPools = Effect.fn("Cgroup.listPools")(function*(usable: Usable) {
  const base = yield* attempt("listPools", usable.base, () => baseOf(usable))
  return yield* attempt("listPools", usable.base, () => CgroupMembers.listPoolsUnsafe(base))
})

/**
 * The pids in `cgroup` (with `recursive`, also below it: a session's). Zombies are not listed.
 *
 * @since 0.1.0
 * @category members
 */
export const members = (
  cgroup: CgroupFs.Cgroup,
  options?: { readonly recursive?: boolean | undefined }
): Effect.Effect<ReadonlyArray<number>, CgroupError> =>
  attempt("members", cgroup.path, () => CgroupMembers.procsUnsafe(cgroup, options?.recursive === true))

/**
 * Whether a live process is in `cgroup` or below it (`populated` of `cgroup.events`).
 *
 * @since 0.1.0
 * @category members
 */
export const populated = (cgroup: CgroupFs.Cgroup): Effect.Effect<boolean, CgroupError> =>
  attempt("populated", cgroup.path, () => CgroupMembers.populatedUnsafe(cgroup))

/** Our cgroup no longer exists: it was empty when it went (a populated cgroup cannot be removed). */
const isGone = (error: unknown) =>
  error instanceof CgroupFs.CgroupFailure && (error.reason === "NotFound" || error.reason === "Swapped")

/**
 * Completes when no live process is left in `cgroup` or below it ("done = tree empty": zombies do
 * not count), or when the cgroup is gone. Event-driven: `fs.watch` on `cgroup.events` (the kernel
 * notifies when `populated` changes), with a poll every `pollInterval` (default 100 ms) in case an
 * event is missed; both stop when the effect completes or is interrupted.
 *
 * @since 0.1.0
 * @category members
 */
export const awaitEmpty = (
  cgroup: CgroupFs.Cgroup,
  options?: { readonly pollInterval?: Duration.Input | undefined }
): Effect.Effect<void, CgroupError> =>
  Effect.callback<void, CgroupError>((resume) => {
    const pollMs = Math.max(1, Duration.toMillis(Duration.fromInputUnsafe(options?.pollInterval ?? "100 millis")))
    let finished = false
    let watcher: fs.FSWatcher | undefined
    let timer: ReturnType<typeof setInterval> | undefined
    const stop = () => {
      finished = true
      watcher?.close()
      if (timer !== undefined) clearInterval(timer)
    }
    const check = () => {
      if (finished) return
      let empty: boolean
      try {
        empty = !CgroupMembers.populatedUnsafe(cgroup)
      } catch (error) {
        if (!isGone(error)) {
          stop()
          resume(Effect.fail(toError("awaitEmpty", cgroup.path)(error)))
          return
        }
        empty = true
      }
      if (empty) {
        stop()
        resume(Effect.void)
      }
    }
    try {
      // Watched through the checked descriptor: the watch stays on the inode after it is closed.
      watcher = CgroupFs.withVerified(
        cgroup,
        (dir) => fs.watch(`${dir}/cgroup.events`, { persistent: false }, () => check())
      )
      watcher.on("error", () => {}) // the poll carries on
    } catch {
      // gone already, or no inotify: the first check (or the poll) decides
    }
    timer = setInterval(check, pollMs)
    check()
    return Effect.sync(stop)
  })

/**
 * SIGKILLs everything in `cgroup` and below it in one step (`cgroup.kill`: atomic with respect to
 * forks). `"gone"` when the cgroup no longer exists; fails with `Swapped` (and kills nothing) when
 * its path holds another cgroup than the one we created.
 *
 * @since 0.1.0
 * @category teardown
 */
export const kill = (cgroup: CgroupFs.Cgroup): Effect.Effect<"killed" | "gone", CgroupError> =>
  Effect.try({
    try: () => {
      try {
        CgroupMembers.killUnsafe(cgroup)
        return "killed" as const
      } catch (error) {
        if (error instanceof CgroupFs.CgroupFailure && error.reason === "NotFound") return "gone" as const
        throw error
      }
    },
    catch: toError("kill", cgroup.path)
  })

/**
 * Post-spawn placement: moves `pid` into `leaf` (see `cgroupPlacement.ts` for the race this leaves).
 *
 * @since 0.1.0
 * @category placement
 */
export const place = (leaf: CgroupFs.Cgroup, pid: number): Effect.Effect<void, CgroupError> =>
  attempt("place", leaf.path, () => CgroupMembers.placeUnsafe(leaf, pid))

/**
 * A directory descriptor of `leaf` (checked to be the recorded leaf) for `wrapThroughFd`, closed when
 * the scope closes (close it right after `spawn()` returns: the child has its own copy).
 *
 * @since 0.1.0
 * @category placement
 */
export const descriptor = (leaf: CgroupFs.Cgroup): Effect.Effect<number, CgroupError, Scope.Scope> =>
  Effect.acquireRelease(
    attempt("descriptor", leaf.path, () => CgroupFs.openUnsafe(leaf)),
    (fd) => Effect.sync(() => fs.closeSync(fd))
  )
