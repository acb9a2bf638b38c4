#!/usr/bin/env node
/**
 * The `shepherd` command.
 *
 * @since 0.1.0
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as NodeShepherd from "@shepherd/node/NodeShepherd"
import * as Effect from "effect/Effect"
import * as Command from "effect/cli/Command"
import * as Demo from "./Demo.ts"

const demo = Command.make("demo", {}, () =>
  Effect.flatMap(Demo.run, (survivors) => survivors === 0 ? Effect.void : Effect.sync(() => process.exit(1)))).pipe(
  Command.withDescription("Run an agent host on real processes and prove that none is left behind")
)

const shepherd = Command.make("shepherd").pipe(
  Command.withDescription("Supervise OS processes so that none is ever left behind"),
  Command.withSubcommands([demo])
)

shepherd.pipe(
  Command.run({ version: "0.1.0" }),
  Effect.provide(NodeServices.layer),
  NodeShepherd.runMain
)
