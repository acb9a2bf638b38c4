/**
 * Configuration validation, and the environment policy as the real child
 * sees it in /proc/<pid>/environ.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import type { ShepherdConfig } from "@shepherd/core/ShepherdConfig"
import * as NodeShepherd from "@shepherd/node/NodeShepherd"
import { Effect, Layer } from "effect"
import { assertNoSurvivors, awaitMembers, cleanupPools, sh, withPool } from "./harness.ts"
import { environOf, survivors, trees } from "./support.ts"

afterEach(cleanupPools)

const invalid = (config: unknown) =>
  Layer.build(NodeShepherd.layer(config as ShepherdConfig)).pipe(Effect.scoped, Effect.flip)

describe("config validation", () => {
  const cases: ReadonlyArray<readonly [string, unknown, string]> = [
    ["slots: 0", { name: "t-invalid", slots: 0 }, "slots"],
    ["slots: 1.5", { name: "t-invalid", slots: 1.5 }, "slots"],
    ["hardCap < slots", { name: "t-invalid", slots: 4, hardCap: 2 }, "hardCap"],
    ["negative grace", { name: "t-invalid", kill: { grace: -1 } }, "kill.grace"],
    ["unparsable grace", { name: "t-invalid", kill: { grace: "soon" } }, "kill.grace"],
    ["negative forceWait", { name: "t-invalid", kill: { forceWait: "-5 seconds" } }, "kill.forceWait"],
    ["unknown signal", { name: "t-invalid", kill: { signal: "SIGFOO" } }, "kill.signal"],
    ["bad name", { name: "t invalid/name" }, "name"]
  ]
  for (const [title, config, field] of cases) {
    it.live(`${title} fails with InvalidConfig naming "${field}"`, () =>
      Effect.gen(function*() {
        const error = yield* invalid(config)
        assert.strictEqual(error._tag, "InvalidConfig", error.message)
        if (error._tag !== "InvalidConfig") return
        assert.strictEqual(error.field, field, error.message)
        assert.include(error.message, field)
        // no pool came up, so nothing was spawned
        assert.deepStrictEqual(survivors("t-invalid"), [])
      }))
  }

  const valid = {
    name: "t-valid",
    slots: 2,
    hardCap: 2,
    slotTimeout: "Infinity",
    kill: { signal: "SIGINT", grace: 100 }
  } as const
  it.live("a valid config builds", () =>
    withPool(valid, (pool, prefix) =>
      Effect.gen(function*() {
        assert.strictEqual(pool.config.slots, 2)
        assert.strictEqual(pool.config.hardCap, 2)
        assert.strictEqual(pool.config.slotTimeoutMs, Number.POSITIVE_INFINITY)
        assert.deepStrictEqual(pool.config.kill, { signal: "SIGINT", graceMs: 100, forceWaitMs: 1_000 })
        assert.isTrue(pool.poolId.startsWith("t-valid~"))
        assertNoSurvivors(prefix)
      })))
})

describe("environment policy", () => {
  const host = {
    CLAUDECODE: "1",
    CLAUDE_CODE_SESSION: "host-session",
    CLAUDE_CODE_ENTRYPOINT: "cli",
    MCP_SESSION_ID: "mcp-123",
    CLAUDE_CODE_OAUTH_TOKEN: "oauth-token",
    AWS_REGION: "eu-west-3",
    SHEPHERD_TEST_PLAIN: "plain"
  } as const

  /** Sets `host` on process.env for the duration of `effect`, restoring the previous values. */
  const withHostEnv = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
    Effect.acquireUseRelease(
      Effect.sync(() => {
        const saved: Record<string, string | undefined> = {}
        for (const [k, v] of Object.entries(host)) {
          saved[k] = process.env[k]
          process.env[k] = v
        }
        return saved
      }),
      () => effect,
      (saved) =>
        Effect.sync(() => {
          for (const [k, v] of Object.entries(saved)) {
            if (v === undefined) delete process.env[k]
            else process.env[k] = v
          }
        })
    )

  it.live("agent-host strips the agent session but keeps credentials and cloud settings", () =>
    withHostEnv(
      withPool({ name: "t-env-agent", env: "agent-host", kill: { grace: 300 } }, (pool, prefix) =>
        Effect.gen(function*() {
          const m = yield* pool.spawn(sh(trees.cooperative))
          const members = yield* awaitMembers(m.shepherdId, 3)
          // the leader and its children all see the filtered environment
          for (const p of members) {
            const env = environOf(p.pid)
            assert.isUndefined(env.CLAUDECODE)
            assert.isUndefined(env.CLAUDE_CODE_SESSION)
            assert.isUndefined(env.CLAUDE_CODE_ENTRYPOINT)
            assert.isUndefined(env.MCP_SESSION_ID)
            assert.strictEqual(env.CLAUDE_CODE_OAUTH_TOKEN, "oauth-token")
            assert.strictEqual(env.AWS_REGION, "eu-west-3")
            assert.strictEqual(env.SHEPHERD_TEST_PLAIN, "plain")
            assert.strictEqual(env.SHEPHERD_ID, m.shepherdId)
            assert.strictEqual(env.PATH, process.env.PATH)
          }
          assert.includeMembers([...m.env.stripped], ["CLAUDECODE", "CLAUDE_CODE_SESSION", "MCP_SESSION_ID"])
          assert.includeMembers([...m.env.preserved], ["CLAUDE_CODE_OAUTH_TOKEN"])
          // process.env itself is untouched
          assert.strictEqual(process.env.CLAUDECODE, "1")

          // a variable the command sets explicitly always reaches the child
          const explicit = yield* pool.spawn(
            sh(trees.cooperative, { env: { CLAUDECODE: "explicit" }, extendEnv: true })
          )
          yield* awaitMembers(explicit.shepherdId, 1)
          const env = environOf(explicit.pid)
          assert.strictEqual(env.CLAUDECODE, "explicit")
          assert.isUndefined(env.MCP_SESSION_ID)
          assert.strictEqual(env.SHEPHERD_ID, explicit.shepherdId)
          yield* pool.closeSession("default")
          assertNoSurvivors(prefix)
        }))
    ))

  it.live("the default policy (inherit) passes everything, plus SHEPHERD_ID", () =>
    withHostEnv(withPool({ name: "t-env-inherit", kill: { grace: 300 } }, (pool, prefix) =>
      Effect.gen(function*() {
        const m = yield* pool.spawn(sh(trees.cooperative))
        yield* awaitMembers(m.shepherdId, 1)
        const env = environOf(m.pid)
        for (const [k, v] of Object.entries(host)) assert.strictEqual(env[k], v, k)
        assert.strictEqual(env.SHEPHERD_ID, m.shepherdId)
        assert.isTrue(m.shepherdId.startsWith(prefix))

        // an explicit env without extendEnv replaces the inherited one, but the cookie stays
        const bare = yield* pool.spawn(sh(trees.cooperative, { env: { ONLY: "this" } }))
        yield* awaitMembers(bare.shepherdId, 1)
        const bareEnv = environOf(bare.pid)
        assert.strictEqual(bareEnv.ONLY, "this")
        assert.isUndefined(bareEnv.CLAUDE_CODE_OAUTH_TOKEN)
        assert.strictEqual(bareEnv.SHEPHERD_ID, bare.shepherdId)
        yield* pool.closeSession("default")
        assertNoSurvivors(prefix)
      }))))
})
