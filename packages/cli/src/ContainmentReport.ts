/**
 * What `shepherd doctor` says about containment (which one a pool would get
 * here, and why; the pools' cgroups under the base, live or left by dead
 * hosts) and what `shepherd reap` says it did to the cgroups of dead hosts.
 *
 * @since 0.2.0
 */
import type * as NodeContainment from "@shepherd/node/NodeContainment"
import * as Inspect from "./Inspect.ts"

const limitControllers = ["memory", "pids", "cpu"] as const

/**
 * Renders the containment section of `shepherd doctor`.
 *
 * @since 0.2.0
 * @category formatting
 */
export const render = (x: NodeContainment.Inspection): string => {
  const lines: Array<string> = []
  if (x.kind === "process-group") {
    lines.push(`containment: process group + cookie (requested ${x.requested}): ${Inspect.printable(x.reason)}`)
    lines.push("  descendants that clear their environment and leave the group (setsid env -i) cannot be followed")
    return lines.join("\n")
  }
  const missing = limitControllers.filter((c) => !(x.controllers ?? []).includes(c))
  lines.push(`containment: ${Inspect.printable(x.reason)} (requested ${x.requested})`)
  lines.push(
    `  placement: ${
      x.placementIssue === undefined
        ? "wrapper (race-free)"
        : `after spawn, because ${Inspect.printable(x.placementIssue)}`
    }`
  )
  lines.push(
    `  controllers: ${(x.controllers ?? []).join(" ") || "none"}${
      missing.length === 0 ? "" : `; limits on ${missing.join(", ")} are refused (LimitUnavailable)`
    }`
  )
  for (const p of x.pools) {
    const host = p.host === undefined ? "host unknown" : `host pid ${p.host.pid} ${p.host.alive ? "(alive)" : "(gone)"}`
    lines.push(
      `  ${Inspect.printable(p.cgroup)}  ${host}  ${p.processes} process(es)${
        p.dead ? "  dead: `shepherd reap` ends and removes it" : p.sentinelAlive ? "  lifeline alive" : ""
      }`
    )
  }
  return lines.join("\n")
}

/**
 * Renders what `shepherd reap` did (or would do) to the cgroups of dead hosts.
 *
 * @since 0.2.0
 * @category formatting
 */
export const renderReap = (
  reaped: ReadonlyArray<NodeContainment.PoolCgroup & { readonly removed: boolean }>,
  dryRun: boolean
): string => {
  const lines = [`${dryRun ? "would reap" : "reaped"} ${reaped.length} cgroup(s) of dead hosts`]
  for (const r of reaped) {
    lines.push(
      `  ${Inspect.printable(r.cgroup)}  ${r.processes} process(es)${
        dryRun ? "" : r.removed ? "  removed" : "  NOT removed (a process survived SIGKILL)"
      }`
    )
  }
  return lines.join("\n")
}
