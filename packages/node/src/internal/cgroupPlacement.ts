/**
 * Putting a child into its leaf cgroup.
 *
 * **Race-free (the wrapper).** Node's `spawn` has no pre-exec hook, so the
 * command is run through `/bin/sh`, which writes its own pid into the leaf's
 * `cgroup.procs` and then `exec`s the command: the command (same pid) starts
 * inside the leaf, and so does everything it forks. The leaf's path and the
 * command's words are positional parameters of the script, never part of it,
 * so no quoting is involved (and our leaf names hold neither spaces nor
 * newlines anyway). If the move fails the shell exits with status 125
 * (`placementFailedCode`) before running anything, and says why on stderr.
 * The variant `wrapThroughFd` writes through a descriptor of the leaf handed to
 * the child (a directory fd the host opened and checked), so that even a leaf
 * swapped between the check and the spawn cannot receive the child.
 *
 * Costs (measured on a 2-core machine, see the issue): the wrapper adds one
 * `exec` of `/bin/sh` to every spawn, a few milliseconds; the event loop is
 * not blocked longer than by a plain spawn.
 *
 * **Post-spawn (faster, racy).** `place` writes the child's pid after
 * `spawn()` returned: whatever the child forked before that stays outside
 * (a child that forks at once leaves about half its children out). Use it
 * only when the cost of the wrapper matters more than descendants forked in
 * the first milliseconds; process group and cookie still cover those.
 *
 * @since 0.1.0
 */
import { type Cgroup, CgroupFailure } from "./cgroupFs.ts"
import { placeUnsafe } from "./cgroupMembers.ts"

/**
 * The shell the wrapper runs (absolute: the child's `PATH` may be anything).
 *
 * @since 0.1.0
 * @category placement
 */
export const shell = "/bin/sh"

/**
 * The exit status of a wrapper that could not move itself into its leaf (nothing was run).
 *
 * @since 0.1.0
 * @category placement
 */
export const placementFailedCode = 125

/** `$0` of the wrapper: the name its error messages start with. */
const arg0 = "shepherd-cgroup"

// `$1` is the leaf; `shift` leaves the command and its arguments in "$@". dash's `exec` takes no `--`:
// a command word starting with `-` is refused by `wrap` instead.
const pathScript = `echo $$ >"$1/cgroup.procs" || exit ${placementFailedCode}; shift; exec "$@"`

const fdScript = (fd: number) =>
  `echo $$ >/proc/self/fd/${fd}/cgroup.procs || exit ${placementFailedCode}; exec ${fd}<&- "$@"`

/**
 * A command line: what `spawn(command, args)` gets.
 *
 * @since 0.1.0
 * @category models
 */
export interface CommandLine {
  readonly command: string
  readonly args: ReadonlyArray<string>
}

const checkCommand = (command: string) => {
  if (command === "" || command.startsWith("-")) {
    throw new CgroupFailure("BadName", command, `a command cannot be wrapped when it starts with "-": ${command}`)
  }
}

/**
 * The wrapper command line that runs `command args...` inside `leaf` (by its path).
 *
 * @since 0.1.0
 * @category placement
 */
export const wrap = (leaf: Cgroup, command: string, args: ReadonlyArray<string>): CommandLine => {
  checkCommand(command)
  return { command: shell, args: ["-c", pathScript, arg0, leaf.path, command, ...args] }
}

/**
 * The wrapper command line for a child that gets a directory descriptor of its leaf as file
 * descriptor `fd` (3 to 9: `stdio[fd]` of `spawn`); the descriptor is closed before the command runs.
 *
 * @since 0.1.0
 * @category placement
 */
export const wrapThroughFd = (fd: number, command: string, args: ReadonlyArray<string>): CommandLine => {
  if (!Number.isInteger(fd) || fd < 3 || fd > 9) throw new CgroupFailure("BadName", String(fd), `bad fd ${fd}`)
  checkCommand(command)
  return { command: shell, args: ["-c", fdScript(fd), arg0, command, ...args] }
}

// What dash (Debian's and Ubuntu's /bin/sh) does to the environment it passes on: it adds PWD, and
// resets IFS, OPTIND and PPID (refusing to start on a non-numeric OPTIND); it drops variables whose
// names are not shell names. The exact wrapper hands those three to the shell as arguments (never
// in the script) and puts them back, and sets or unsets PWD as the command's environment has it.
const restored = ["IFS", "OPTIND", "PPID"] as const
const shellName = /^[A-Za-z_][A-Za-z0-9_]*$/

/**
 * A wrapper command line together with the environment to spawn it with.
 *
 * @since 0.2.0
 * @category models
 */
export interface ExactCommandLine extends CommandLine {
  readonly env: Record<string, string>
}

/**
 * The wrapper command line that runs `command args...` inside `leaf` with exactly `env` (see above
 * for what the shell would otherwise change), or why it cannot: a variable name the shell drops,
 * a non-numeric `OPTIND`, a command starting with `-`.
 *
 * @since 0.2.0
 * @category placement
 */
export const wrapExact = (
  leaf: Cgroup,
  command: string,
  args: ReadonlyArray<string>,
  env: Readonly<Record<string, string>>
): ExactCommandLine | { readonly unwrappable: string } => {
  if (command === "" || command.startsWith("-")) return { unwrappable: `the command starts with "-": ${command}` }
  // No prototype: a variable named `__proto__` is one like any other.
  const shellEnv: Record<string, string> = Object.create(null)
  for (const [name, value] of Object.entries(env)) {
    if (!shellName.test(name)) return { unwrappable: `the variable name ${JSON.stringify(name)} is not a shell name` }
    shellEnv[name] = value
  }
  let script = `echo $$ >"$1/cgroup.procs" || exit ${placementFailedCode}; shift;`
  const values: Array<string> = []
  for (const name of [...restored, "PWD"]) {
    const value = shellEnv[name]
    delete shellEnv[name]
    if (value === undefined) {
      if (name === "PWD") script += " unset PWD;"
      continue
    }
    if (name === "OPTIND" && !/^\d+$/.test(value)) {
      return { unwrappable: `OPTIND=${JSON.stringify(value)} is not a number` }
    }
    script += ` ${name}=$1; export ${name}; shift;`
    values.push(value)
  }
  script += ` exec "$@"`
  return { command: shell, args: ["-c", script, arg0, leaf.path, ...values, command, ...args], env: shellEnv }
}

/**
 * Post-spawn placement: moves `pid` into `leaf` (checked to be the recorded leaf).
 *
 * @since 0.1.0
 * @category placement
 */
export const placeAfterSpawnUnsafe = (leaf: Cgroup, pid: number): void => placeUnsafe(leaf, pid)
