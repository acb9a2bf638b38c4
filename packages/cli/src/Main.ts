/**
 * The `shepherd` command: `demo`, `doctor`, `reap`, `run` (started by `bin.ts`).
 *
 * Exit codes: 0 success; 1 failure (or survivors in the demo); 2 bad
 * arguments (usage is printed); `run` exits with its command's code.
 *
 * @since 0.1.0
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as KillPolicy from "@shepherd/core/KillPolicy"
import * as ShepherdConfig from "@shepherd/core/ShepherdConfig"
import * as NodeContainment from "@shepherd/node/NodeContainment"
import * as NodeLedger from "@shepherd/node/NodeLedger"
import * as NodeShepherd from "@shepherd/node/NodeShepherd"
import * as CliError from "effect/cli/CliError"
import * as Command from "effect/cli/Command"
import * as Argument from "effect/cli/Argument"
import * as Flag from "effect/cli/Flag"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as ContainmentReport from "./ContainmentReport.ts"
import * as Demo from "./Demo.ts"
import * as Inspect from "./Inspect.ts"
import * as Reap from "./Reap.ts"
import * as Run from "./Run.ts"

const ledgerFlag = Flag.String("ledger").pipe(
  Flag.withDescription("Ledger file (default: every *.ledger in $XDG_STATE_HOME/shepherd or ~/.local/state/shepherd)"),
  Flag.optional
)

// A bad duration is a bad argument: effect/cli prints the error with usage, and the command exits 2.
const durationFlag = (name: string, description: string, fallback: string) =>
  Flag.String(name).pipe(
    Flag.withDescription(description),
    Flag.filter(
      (input) => KillPolicy.durationMillis(input) !== undefined,
      (input) =>
        `--${name} ${JSON.stringify(input)}: expected a finite, non-negative duration: ${KillPolicy.durationForms}`
    ),
    Flag.withDefault(fallback)
  )

const ledgers = (flag: Option.Option<string>) => Option.isSome(flag) ? [flag.value] : [...NodeLedger.list()]

/** A one-line error for the operator, exit code 1. */
const fail = (message: string) =>
  Effect.andThen(Console.error(`shepherd: ${message}`), Effect.sync(() => process.exit(1)))

const demo = Command.make(
  "demo",
  {},
  () => Effect.flatMap(Demo.run, (survivors) => survivors === 0 ? Effect.void : Effect.sync(() => process.exit(1)))
).pipe(
  Command.withDescription("Run an agent host on real processes and prove that none is left behind")
)

const doctor = Command.make(
  "doctor",
  {
    ledger: ledgerFlag,
    json: Flag.Boolean("json").pipe(Flag.withDescription("Print the report as JSON"), Flag.withDefault(false))
  },
  ({ json, ledger }) =>
    Effect.gen(function*() {
      const files = ledgers(ledger)
      if (Option.isSome(ledger) && !(yield* NodeLedger.snapshot(ledger.value)).exists) {
        return yield* fail(`no ledger at ${ledger.value}`)
      }
      const reports = yield* Effect.forEach(files, Inspect.inspect)
      const containment = yield* NodeContainment.inspect()
      if (json) {
        yield* Console.log(JSON.stringify({ containment, ledgers: reports }, null, 2))
      } else {
        yield* Console.log(ContainmentReport.render(containment))
        if (reports.length === 0) yield* Console.log("no ledgers found")
        for (const r of reports) yield* Console.log(Inspect.render(r))
      }
    }).pipe(Effect.catchTag("LedgerError", (error) => fail(error.message)))
).pipe(Command.withDescription("Show what ledgers record and what the OS runs: sessions, processes, orphans"))

const reap = Command.make(
  "reap",
  {
    ledger: ledgerFlag,
    dryRun: Flag.Boolean("dry-run").pipe(
      Flag.withDescription("Only print what would be terminated"),
      Flag.withDefault(false)
    )
  },
  ({ dryRun, ledger }) =>
    Effect.gen(function*() {
      if (Option.isSome(ledger) && !(yield* NodeLedger.snapshot(ledger.value)).exists) {
        return yield* fail(`no ledger at ${ledger.value}`)
      }
      // The kill policy comes from SHEPHERD_KILL_SIGNAL / SHEPHERD_GRACE / SHEPHERD_FORCE_WAIT, as for a pool.
      const { kill } = yield* ShepherdConfig.fromEnv()
      const poolIds: Array<string> = []
      for (const file of ledgers(ledger)) {
        const result = yield* Reap.reap(file, { dryRun, policy: kill })
        poolIds.push(...result.poolIds)
        yield* Console.log(Reap.render(result))
      }
      // Then what the dead hosts' cgroups still hold (descendants that left group and environment):
      // with --ledger only that ledger's pools, else every dead host's.
      const reaped = yield* NodeContainment.reapDead({
        policy: kill,
        dryRun,
        ...(Option.isSome(ledger) ? { poolIds } : {})
      })
      if (reaped.length > 0) yield* Console.log(ContainmentReport.renderReap(reaped, dryRun))
    }).pipe(
      Effect.catchTags({
        LedgerError: (error) => fail(error.message),
        LedgerLocked: (error) => fail(error.message),
        HostAlive: (error) => fail(error.message),
        InvalidConfig: (error) => fail(error.message)
      })
    )
).pipe(Command.withDescription(
  "Terminate the orphans recorded in ledgers whose host is gone, and end and remove the cgroups of dead hosts"
))

const run = Command.make(
  "run",
  {
    grace: durationFlag("grace", "Grace period after the first signal (e.g. 200ms, 5s, \"5 seconds\")", "5 seconds"),
    forceWait: durationFlag("force-wait", "How long to wait for SIGKILL to be confirmed (e.g. 500ms, 1s)", "1 second"),
    command: Argument.String("command").pipe(Argument.withDescription("The command to run")),
    args: Argument.String("args").pipe(Argument.withDescription("Its arguments"), Argument.variadic())
  },
  ({ args, command, forceWait, grace }) =>
    Run.run(command, args, { grace, forceWait }).pipe(
      Effect.flatMap((code) => Effect.sync(() => process.exit(code))),
      Effect.catchTags({
        InvalidConfig: (error) => fail(error.message),
        SpawnError: (error) =>
          Effect.andThen(Console.error(`shepherd: ${error.message}`), Effect.sync(() => process.exit(127)))
      }),
      Effect.catch((error) => fail(error.message))
    )
).pipe(
  Command.withDescription("Run one command tree in the foreground; when it ends or is killed, the whole tree is gone")
)

const shepherd = Command.make("shepherd").pipe(
  Command.withDescription("Supervise OS processes so that none is ever left behind"),
  Command.withSubcommands([demo, doctor, reap, run])
)

shepherd.pipe(
  Command.run({ version: "0.1.0" }),
  // Bad arguments: effect/cli has printed the error and usage; exit 2.
  Effect.catchIf(CliError.isCliError, () => Effect.sync(() => process.exit(2))),
  Effect.provide(NodeServices.layer),
  NodeShepherd.runMain
)
