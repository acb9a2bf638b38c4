/**
 * What the fork helper's tests share (forkFrom: "helper").
 */
import { ProcessLauncher } from "@shepherd/core/ProcessLauncher"
import { ProcessPool } from "@shepherd/core/ProcessPool"
import * as ShepherdConfig from "@shepherd/core/ShepherdConfig"
import * as NodeContainment from "@shepherd/node/NodeContainment"
import * as NodeHelperLauncher from "@shepherd/node/NodeHelperLauncher"
import * as NodeProcessTable from "@shepherd/node/NodeProcessTable"
import { Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { processes } from "./support.ts"

/** Sends `sig` to `pid` if it still exists. */
export const signal = (pid: number, sig: NodeJS.Signals): void => {
  try {
    process.kill(pid, sig)
  } catch {
    // gone
  }
}

/** This process's fork helpers. */
export const helpers = () => processes().filter((p) => p.ppid === process.pid && p.cmdline.includes("forkHelper"))

/**
 * A pool built as `NodeShepherd.layer` builds it (containment around the launcher), with a fork
 * helper that answers within `answerWithinMs` (the layer's default is 10 s), and no ledger or lifeline.
 */
export const helperPool = (config: ShepherdConfig.ShepherdConfig, answerWithinMs: number) =>
  Layer.unwrap(
    Effect.map(
      ShepherdConfig.resolve(config),
      (resolved) =>
        ProcessPool.layerResolved(resolved).pipe(Layer.provide(Layer.mergeAll(
          NodeProcessTable.layer,
          NodeContainment.layer(resolved).pipe(
            Layer.provide(Layer.effect(ProcessLauncher, NodeHelperLauncher.make({ answerWithinMs })))
          )
        )))
    )
  )

/**
 * A PATH of `entries` copies of one slow directory built in `dir`: each entry costs a failed
 * execve() of a few ms (39 symlinks of 1900 `./` each, then nothing), then `/usr/bin:/bin`. A child
 * searching it stays before its exec, showing its parent's environment, for `entries` × a few ms.
 */
export const makeSlowPath = (dir: string, entries: number): string => {
  fs.mkdirSync(path.join(dir, "c"))
  const dots = "./".repeat(1900)
  for (let i = 0; i < 39; i++) {
    fs.symlinkSync(dots + (i === 38 ? "none" : `l${i + 1}`), path.join(dir, "c", `l${i}`))
  }
  fs.symlinkSync(path.join(dir, "c", "l0"), path.join(dir, "q"))
  return Array(entries).fill(path.join(dir, "q")).join(":") + ":/usr/bin:/bin"
}
