/**
 * The suite's last word: no process started by *this* run may survive it,
 * and no cgroup it created may hold one. Survivors are reported, killed, and
 * fail the run; the empty cgroups of its dead hosts are removed.
 *
 * Several runs (and demos) may share the machine, so "this run" is precise:
 * `setup` creates a run directory and exports its path as
 * `SHEPHERD_TEST_RUN_DIR`; workers inherit it, and so does every supervised
 * child that inherits its environment. Each test pool also appends its
 * `SHEPHERD_ID` prefix to `<run dir>/prefixes` (see `track` in harness.ts), which
 * covers children spawned with an explicit environment.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Cgroup from "../packages/node/src/internal/cgroup.ts"
import { type ProcInfo, readEnvVar, survivors, waitUntil } from "./support.ts"

export const runDirVariable = "SHEPHERD_TEST_RUN_DIR"

let runDir: string | undefined

// Cgroup containment: the pools' cgroups that were there before the run are not this run's.
const detection = Cgroup.detectUnsafe()
const usable = detection._tag === "Usable" ? detection : undefined
let poolsBefore = new Set<string>()
// (The `@shepherd/*` packages resolve from their sources only in the workers: read /proc directly.)
const hostAlive = (host: Cgroup.HostMark): boolean => {
  try {
    const stat = fs.readFileSync(`/proc/${host.pid}/stat`, "latin1")
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return rest[0] !== "Z" && rest[0] !== "X" && rest[19] === host.startTime
  } catch {
    return false
  }
}
const poolCgroups = () => usable === undefined ? [] : Cgroup.listPoolsUnsafe(Cgroup.baseOf(usable))

export const setup = () => {
  runDir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-test-run-"))
  process.env[runDirVariable] = runDir
  poolsBefore = new Set(poolCgroups().map((p) => p.cgroup.path))
}

/**
 * The pools' cgroups this run created whose host is gone: a sentinel may still be sweeping (wait
 * for it); then each must be empty (a process in one is a leak: killed, and the run fails) and is
 * removed (a SIGKILLed host's pool cgroup is otherwise left for the next host to remove). A pool
 * cgroup is this run's when a test tracked its pool or a process in it carries this run's marker:
 * another suite running at the same time (a second checkout) creates pool cgroups too, and those
 * are reported, never killed.
 */
const checkCgroups = async (dir: string, prefixes: ReadonlyArray<string>): Promise<Array<string>> => {
  const created = () =>
    poolCgroups().filter((p) => !poolsBefore.has(p.cgroup.path) && p.host !== undefined && !hostAlive(p.host))
  await waitUntil(() => created().every((p) => !p.sentinelAlive), 60_000)
  const ours = (p: ReturnType<typeof poolCgroups>[number]) =>
    prefixes.includes(`${p.poolId}:`) ||
    Cgroup.procsUnsafe(p.cgroup, true).some((pid) => readEnvVar(pid, runDirVariable) === dir)
  const leaks: Array<string> = []
  for (const p of created()) {
    if (!ours(p)) {
      if (p.populated) console.warn(`globalSetup: ${p.cgroup.path} is not this run's pool; left alone`)
      continue
    }
    if (p.populated) {
      leaks.push(`${p.cgroup.path}: ${Cgroup.procsUnsafe(p.cgroup, true).join(", ")}`)
      Cgroup.killUnsafe(p.cgroup)
      await waitUntil(() => !Cgroup.populatedUnsafe(p.cgroup), 60_000)
    }
    removeTree(p.cgroup)
  }
  return leaks
}

const removeTree = (cgroup: Cgroup.Cgroup): void => {
  try {
    for (const child of Cgroup.childrenUnsafe(cgroup)) removeTree(child)
    Cgroup.removeOnceUnsafe(cgroup)
  } catch {
    // gone
  }
}

const ofThisRun = (dir: string, prefixes: ReadonlyArray<string>) => (p: ProcInfo) =>
  prefixes.some((prefix) => p.shepherdId?.startsWith(prefix) === true) || readEnvVar(p.pid, runDirVariable) === dir

export const teardown = async () => {
  const dir = runDir
  if (dir === undefined) return
  let prefixes: Array<string> = []
  try {
    prefixes = fs.readFileSync(path.join(dir, "prefixes"), "utf8").split("\n").filter((l) => l.length > 0)
  } catch {
    // no pool was built
  }
  // A sentinel may still be sweeping after the last test (a loaded machine can take seconds): wait
  // until nothing of this run is left, up to a hang guard, instead of a fixed pause.
  const ofRun = ofThisRun(dir, prefixes)
  await waitUntil(() => survivors("").filter(ofRun).length === 0, 60_000)
  const left = survivors("").filter(ofRun)
  fs.rmSync(dir, { recursive: true, force: true })
  for (const p of left) {
    try {
      process.kill(p.pid, "SIGKILL")
    } catch {
      // gone
    }
  }
  const leakedCgroups = await checkCgroups(dir, prefixes)
  const errors = [
    ...(left.length === 0 ? [] : [
      `${left.length} supervised process(es) survived the test suite:\n` +
      left.map((p) => `  pid ${p.pid} ${p.shepherdId}: ${p.cmdline}`).join("\n")
    ]),
    ...(leakedCgroups.length === 0 ? [] : [
      `${leakedCgroups.length} cgroup(s) of this run still held processes:\n` +
      leakedCgroups.map((l) => `  ${l}`).join("\n")
    ])
  ]
  if (errors.length > 0) throw new Error(errors.join("\n"))
}
