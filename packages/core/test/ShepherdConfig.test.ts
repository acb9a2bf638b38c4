/**
 * Configuration validation: every invalid field is reported by name, the
 * pool layer refuses to build with it, and `fromEnv` reads `SHEPHERD_*`.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Layer } from "effect"
import * as EnvPolicy from "../src/EnvPolicy.ts"
import * as KillPolicy from "../src/KillPolicy.ts"
import { ProcessPool } from "../src/ProcessPool.ts"
import * as ShepherdConfig from "../src/ShepherdConfig.ts"
import { TestOs } from "../src/testing.ts"

const withEnv = (env: Record<string, string>) => Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env })))

const invalid: ReadonlyArray<readonly [string, unknown, string]> = [
  ["slots below 1", { slots: 0 }, "slots"],
  ["fractional slots", { slots: 1.5 }, "slots"],
  ["slots as a string", { slots: "4" }, "slots"],
  ["hardCap below slots", { slots: 4, hardCap: 3 }, "hardCap"],
  ["hardCap below the default slots", { hardCap: 2 }, "hardCap"],
  ["negative grace", { kill: { grace: -1 } }, "kill.grace"],
  ["negative grace string", { kill: { grace: "-5 seconds" } }, "kill.grace"],
  ["unparsable grace", { kill: { grace: "soon" } }, "kill.grace"],
  ["infinite grace", { kill: { grace: "Infinity" } }, "kill.grace"],
  ["negative forceWait", { kill: { forceWait: -3 } }, "kill.forceWait"],
  ["unknown signal", { kill: { signal: "SIGFOO" } }, "kill.signal"],
  ["SIGSTOP as the graceful signal", { kill: { signal: "SIGSTOP" } }, "kill.signal"],
  ["name with a space", { name: "bad name" }, "name"],
  ["empty name", { name: "" }, "name"],
  ["name with a colon (would break SHEPHERD_ID)", { name: "a:b" }, "name"],
  ["name longer than 64", { name: "x".repeat(65) }, "name"],
  ["negative slotTimeout", { slotTimeout: -1 }, "slotTimeout"],
  ["unknown env preset", { env: "none" }, "env"],
  ["unknown containment", { containment: "cgroups" }, "containment"],
  ["relative cgroup base", { cgroup: { base: "sys/fs/cgroup" } }, "cgroup.base"],
  ["unknown cgroup placement", { cgroup: { placement: "later" } }, "cgroup.placement"],
  ["a zero lifeline wait", { lifelineWait: 0 }, "lifelineWait"],
  ["unknown forkFrom", { forkFrom: "child" }, "forkFrom"]
]

describe("ShepherdConfig.resolve", () => {
  it.effect("applies the documented defaults", () =>
    Effect.gen(function*() {
      const config = yield* ShepherdConfig.resolve({})
      assert.strictEqual(config.name, "shepherd")
      assert.strictEqual(config.slots, 4)
      assert.strictEqual(config.hardCap, 32)
      assert.strictEqual(config.slotTimeoutMs, 30_000)
      assert.deepStrictEqual(config.kill, KillPolicy.defaults)
      assert.deepStrictEqual(config.env, EnvPolicy.inherit)
      assert.strictEqual(config.lifelineWaitMs, 10_000)
      assert.isUndefined(config.forkFrom) // the platform layer's default: SHEPHERD_FORK_FROM, else "helper"
    }))

  it.effect("resolves durations, Infinity and presets", () =>
    Effect.gen(function*() {
      const config = yield* ShepherdConfig.resolve({
        name: "ci.build-1",
        slots: 2,
        slotTimeout: "Infinity",
        kill: { signal: "SIGINT", grace: "1500 millis", forceWait: 250 },
        env: "agent-host",
        lifelineWait: "2 seconds"
      })
      assert.strictEqual(config.name, "ci.build-1")
      assert.strictEqual(config.lifelineWaitMs, 2000)
      assert.strictEqual(config.hardCap, 16, "hardCap defaults to slots × 8")
      assert.strictEqual(config.slotTimeoutMs, Number.POSITIVE_INFINITY)
      assert.deepStrictEqual(config.kill, { signal: "SIGINT", graceMs: 1500, forceWaitMs: 250 })
      assert.deepStrictEqual(config.env, EnvPolicy.agentHost)
    }))

  for (const [label, input, field] of invalid) {
    it.effect(`rejects ${label} with InvalidConfig naming "${field}"`, () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(ShepherdConfig.resolve(input))
        assert.strictEqual(error._tag, "InvalidConfig")
        assert.strictEqual(error.field, field)
        assert.isTrue(error.reason.length > 0)
        assert.include(error.message, field)
      }))
  }

  it.effect("rejects a NaN grace with InvalidConfig naming \"kill.grace\"", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(ShepherdConfig.resolve({ kill: { grace: Number.NaN } }))
      assert.strictEqual(error.field, "kill.grace")
    }))

  it.effect("the pool layer fails to build with the InvalidConfig", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      const error = yield* Effect.flip(
        Effect.asVoid(ProcessPool).pipe(
          Effect.provide(ProcessPool.layer({ slots: 2, hardCap: 1 }).pipe(Layer.provide(os.layer)))
        )
      )
      assert.strictEqual(error._tag, "InvalidConfig")
      assert.strictEqual(error.field, "hardCap")
      const signal = yield* Effect.flip(
        Effect.asVoid(ProcessPool).pipe(
          Effect.provide(ProcessPool.layer({ kill: { signal: "SIGFOO" as never } }).pipe(Layer.provide(os.layer)))
        )
      )
      assert.strictEqual(signal.field, "kill.signal")
      assert.deepStrictEqual(os.spawnOrder(), [])
    }))
})

describe("containment config", () => {
  it.effect("fromEnv reads SHEPHERD_CONTAINMENT and the cgroup variables; the platform default is the variable, else auto", () =>
    Effect.gen(function*() {
      const config = yield* ShepherdConfig.fromEnv().pipe(withEnv({
        SHEPHERD_CONTAINMENT: "cgroup",
        SHEPHERD_CGROUP_BASE: "/sys/fs/cgroup/my.slice",
        SHEPHERD_CGROUP_PLACEMENT: "post-spawn"
      }))
      assert.strictEqual(config.containment, "cgroup")
      assert.deepStrictEqual(config.cgroup, { base: "/sys/fs/cgroup/my.slice", placement: "post-spawn" })
      const plain = yield* ShepherdConfig.resolve({})
      assert.isUndefined(plain.containment)
      assert.deepStrictEqual(plain.cgroup, { base: undefined, placement: "wrapper" })
      assert.strictEqual(yield* ShepherdConfig.containment(plain, undefined), "auto")
      assert.strictEqual(yield* ShepherdConfig.containment(plain, "process-group"), "process-group")
      assert.strictEqual(
        yield* ShepherdConfig.containment(yield* ShepherdConfig.resolve({ containment: "cgroup" }), "process-group"),
        "cgroup"
      )
      const bad = yield* Effect.flip(ShepherdConfig.containment(plain, "cgroups"))
      assert.strictEqual(bad.field, "containment")
      assert.include(bad.reason, "SHEPHERD_CONTAINMENT")
    }))
})

describe("forkFrom config", () => {
  it.effect("fromEnv reads SHEPHERD_FORK_FROM over the config; a wrong value names the field", () =>
    Effect.gen(function*() {
      const config = yield* ShepherdConfig.fromEnv({ forkFrom: "host" }).pipe(withEnv({ SHEPHERD_FORK_FROM: "helper" }))
      assert.strictEqual(config.forkFrom, "helper")
      const bad = yield* Effect.flip(ShepherdConfig.fromEnv().pipe(withEnv({ SHEPHERD_FORK_FROM: "parent" })))
      assert.strictEqual(bad.field, "forkFrom")
    }))

  it.effect("a config without forkFrom takes SHEPHERD_FORK_FROM, else the helper; a bad variable names the field", () =>
    Effect.gen(function*() {
      const unset = yield* ShepherdConfig.resolve({})
      assert.strictEqual(yield* ShepherdConfig.forkFrom(unset, undefined), "helper")
      assert.strictEqual(yield* ShepherdConfig.forkFrom(unset, "host"), "host")
      const set = yield* ShepherdConfig.resolve({ forkFrom: "helper" })
      assert.strictEqual(yield* ShepherdConfig.forkFrom(set, "host"), "helper")
      const bad = yield* Effect.flip(ShepherdConfig.forkFrom(unset, "child"))
      assert.strictEqual(bad.field, "forkFrom")
      assert.include(bad.message, "SHEPHERD_FORK_FROM")
    }))
})

describe("ShepherdConfig.fromEnv", () => {
  it.effect("reads every SHEPHERD_* variable", () =>
    Effect.gen(function*() {
      const config = yield* ShepherdConfig.fromEnv().pipe(withEnv({
        SHEPHERD_NAME: "ci",
        SHEPHERD_SLOTS: "7",
        SHEPHERD_HARD_CAP: "20",
        SHEPHERD_SLOT_TIMEOUT: "Infinity",
        SHEPHERD_KILL_SIGNAL: "SIGINT",
        SHEPHERD_GRACE: "250",
        SHEPHERD_FORCE_WAIT: "2 seconds",
        SHEPHERD_ENV_POLICY: "agent-host"
      }))
      assert.strictEqual(config.name, "ci")
      assert.strictEqual(config.slots, 7)
      assert.strictEqual(config.hardCap, 20)
      assert.strictEqual(config.slotTimeoutMs, Number.POSITIVE_INFINITY)
      assert.deepStrictEqual(config.kill, { signal: "SIGINT", graceMs: 250, forceWaitMs: 2000 })
      assert.deepStrictEqual(config.env, EnvPolicy.agentHost)
    }))

  it.effect("accepts the short duration forms people type, and names the forms when one is wrong", () =>
    Effect.gen(function*() {
      const config = yield* ShepherdConfig.fromEnv().pipe(withEnv({
        SHEPHERD_GRACE: "200ms",
        SHEPHERD_FORCE_WAIT: "2s",
        SHEPHERD_SLOT_TIMEOUT: "1m",
        SHEPHERD_REAP_INTERVAL: "1h"
      }))
      assert.deepStrictEqual(config.kill, { signal: "SIGTERM", graceMs: 200, forceWaitMs: 2000 })
      assert.strictEqual(config.slotTimeoutMs, 60_000)
      assert.strictEqual(config.reapIntervalMs, 3_600_000)
      const error = yield* Effect.flip(ShepherdConfig.fromEnv().pipe(withEnv({ SHEPHERD_GRACE: "200 msec" })))
      assert.strictEqual(error.field, "kill.grace")
      assert.include(error.message, "\"200ms\"")
      assert.include(error.message, "\"5 seconds\"")
    }))

  it.effect("overrides the base config field by field", () =>
    Effect.gen(function*() {
      const config = yield* ShepherdConfig.fromEnv({ slots: 2, name: "base", kill: { grace: 100, signal: "SIGHUP" } })
        .pipe(
          withEnv({ SHEPHERD_SLOTS: "3", SHEPHERD_FORCE_WAIT: "10" })
        )
      assert.strictEqual(config.slots, 3)
      assert.strictEqual(config.name, "base")
      assert.deepStrictEqual(config.kill, { signal: "SIGHUP", graceMs: 100, forceWaitMs: 10 })
    }))

  it.effect("without variables it is the base config", () =>
    Effect.gen(function*() {
      const config = yield* ShepherdConfig.fromEnv({ slots: 5 }).pipe(withEnv({ UNRELATED: "1" }))
      assert.deepStrictEqual(config, yield* ShepherdConfig.resolve({ slots: 5 }))
    }))

  it.effect("reports a bad variable as InvalidConfig naming the field", () =>
    Effect.gen(function*() {
      const slots = yield* Effect.flip(ShepherdConfig.fromEnv().pipe(withEnv({ SHEPHERD_SLOTS: "zero" })))
      assert.strictEqual(slots.field, "slots")
      const negative = yield* Effect.flip(ShepherdConfig.fromEnv().pipe(withEnv({ SHEPHERD_SLOTS: "-2" })))
      assert.strictEqual(negative.field, "slots")
      const signal = yield* Effect.flip(ShepherdConfig.fromEnv().pipe(withEnv({ SHEPHERD_KILL_SIGNAL: "SIGFOO" })))
      assert.strictEqual(signal.field, "kill.signal")
      const grace = yield* Effect.flip(ShepherdConfig.fromEnv().pipe(withEnv({ SHEPHERD_GRACE: "-1" })))
      assert.strictEqual(grace.field, "kill.grace")
      const cap = yield* Effect.flip(
        ShepherdConfig.fromEnv().pipe(withEnv({ SHEPHERD_SLOTS: "8", SHEPHERD_HARD_CAP: "4" }))
      )
      assert.strictEqual(cap.field, "hardCap")
    }))

  it.effect("ProcessPool.layerConfig builds the pool from the environment", () =>
    Effect.gen(function*() {
      const os = TestOs.make()
      const pool = yield* Effect.map(ProcessPool, (pool) => pool.config).pipe(
        Effect.provide(ProcessPool.layerConfig({ slots: 1 }).pipe(Layer.provide(os.layer))),
        withEnv({ SHEPHERD_SLOTS: "6", SHEPHERD_NAME: "from-env" })
      )
      assert.strictEqual(pool.slots, 6)
      assert.strictEqual(pool.name, "from-env")
      const error = yield* Effect.flip(
        Effect.asVoid(ProcessPool).pipe(
          Effect.provide(ProcessPool.layerConfig().pipe(Layer.provide(os.layer))),
          withEnv({ SHEPHERD_SLOTS: "0" })
        )
      )
      assert.strictEqual(error.field, "slots")
    }))
})
