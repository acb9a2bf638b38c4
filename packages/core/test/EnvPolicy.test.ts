/**
 * Environment policies: the agent-host preset, explicit variables, the
 * names-only explain, and the policy as the pool applies it at spawn.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import { ChildProcess } from "effect/process"
import * as EnvPolicy from "../src/EnvPolicy.ts"
import { TestOs } from "../src/testing.ts"
import { cmd, withPool } from "./utils.ts"

const host: Record<string, string> = {
  PATH: "/usr/bin",
  HOME: "/home/agent",
  CLAUDECODE: "1",
  CLAUDECODE_X: "x-value",
  CLAUDE_CODE_SESSION: "session-secret",
  CLAUDE_CODE_ENTRYPOINT: "cli",
  CLAUDE_CODE_FOO: "foo",
  MCP_SESSION_ID: "mcp-123",
  CLAUDE_CODE_OAUTH_TOKEN: "oauth-secret",
  CLAUDE_CODE_USE_BEDROCK: "1",
  AWS_REGION: "eu-west-1",
  AWS_SECRET_ACCESS_KEY: "aws-secret",
  GOOGLE_APPLICATION_CREDENTIALS: "/etc/gcp.json",
  HTTPS_PROXY: "http://proxy:3128"
}

const stripped = [
  "CLAUDECODE",
  "CLAUDECODE_X",
  "CLAUDE_CODE_SESSION",
  "CLAUDE_CODE_ENTRYPOINT",
  "MCP_SESSION_ID",
  "CLAUDE_CODE_FOO"
]
const kept = [
  "PATH",
  "HOME",
  "CLAUDE_CODE_OAUTH_TOKEN",
  "CLAUDE_CODE_USE_BEDROCK",
  "AWS_REGION",
  "AWS_SECRET_ACCESS_KEY",
  "GOOGLE_APPLICATION_CREDENTIALS",
  "HTTPS_PROXY"
]

describe("EnvPolicy", () => {
  it("agentHost strips the host's agent-session variables and keeps credentials and proxies", () => {
    const { env, explain } = EnvPolicy.apply(EnvPolicy.agentHost, host, {})
    assert.sameMembers(Object.keys(env), kept)
    for (const name of kept) assert.strictEqual(env[name], host[name])
    for (const name of stripped) assert.notProperty(env, name)
    assert.sameMembers([...explain.stripped], stripped)
    assert.sameMembers([...explain.inherited], kept)
    assert.sameMembers([...explain.preserved], ["CLAUDE_CODE_OAUTH_TOKEN", "CLAUDE_CODE_USE_BEDROCK"])
    assert.deepStrictEqual(explain.explicit, [])
  })

  it("strips answers per name, preserve winning over a strip prefix", () => {
    for (const name of stripped) assert.isTrue(EnvPolicy.strips(EnvPolicy.agentHost, name), name)
    for (const name of kept) assert.isFalse(EnvPolicy.strips(EnvPolicy.agentHost, name), name)
    assert.isFalse(EnvPolicy.strips(EnvPolicy.agentHost, "CLAUDE"), "a prefix needs its underscore")
    assert.isFalse(EnvPolicy.strips(EnvPolicy.inherit, "CLAUDECODE"))
  })

  it("explicit command variables always win, and undefined deletes", () => {
    const { env, explain } = EnvPolicy.apply(EnvPolicy.agentHost, host, {
      CLAUDECODE: "explicit",
      CLAUDE_CODE_FOO: "mine",
      HOME: undefined,
      NEW_VAR: "new"
    })
    assert.strictEqual(env.CLAUDECODE, "explicit")
    assert.strictEqual(env.CLAUDE_CODE_FOO, "mine")
    assert.strictEqual(env.NEW_VAR, "new")
    assert.notProperty(env, "HOME")
    assert.notProperty(env, "MCP_SESSION_ID")
    assert.sameMembers([...explain.explicit], ["CLAUDECODE", "CLAUDE_CODE_FOO", "HOME", "NEW_VAR"])
  })

  it("explain lists names only, never values", () => {
    const { explain } = EnvPolicy.apply(EnvPolicy.agentHost, host, { API_KEY: "explicit-secret" })
    const text = JSON.stringify(explain)
    for (const value of [...Object.values(host), "explicit-secret"]) {
      if (value.length > 1) assert.notInclude(text, value)
    }
    const names = [...explain.inherited, ...explain.stripped, ...explain.preserved, ...explain.explicit]
    assert.isTrue(names.every((name) => name in host || name === "API_KEY"))
  })

  it("inherit keeps everything; undefined inherited values are skipped", () => {
    const { env, explain } = EnvPolicy.apply(EnvPolicy.inherit, { ...host, GONE: undefined }, {})
    assert.deepStrictEqual(env, host)
    assert.deepStrictEqual(explain.stripped, [])
    assert.notInclude(explain.inherited, "GONE")
  })

  it("a custom policy: strip prefixes with preserve prefixes", () => {
    const policy: EnvPolicy.EnvPolicy = {
      strip: ["A"],
      stripPrefixes: ["X_"],
      preserve: [],
      preservePrefixes: ["X_KEEP"]
    }
    const { env } = EnvPolicy.apply(policy, { A: "1", AB: "2", X_1: "3", X_KEEP_ME: "4" }, {})
    assert.deepStrictEqual(env, { AB: "2", X_KEEP_ME: "4" })
  })
})

describe("EnvPolicy in the pool", () => {
  it.effect("the agent-host policy shapes the launched environment and ManagedProcess.env", () =>
    Effect.gen(function*() {
      const os = TestOs.make({ env: host })
      yield* withPool(os, { env: "agent-host" }, (pool) =>
        Effect.gen(function*() {
          const p = yield* pool.spawn(cmd("agent"))
          const launched = os.process(p.pid)!.env
          assert.sameMembers(Object.keys(launched), [...kept, "SHEPHERD_ID"])
          assert.strictEqual(launched.SHEPHERD_ID, p.shepherdId)
          assert.strictEqual(launched.AWS_SECRET_ACCESS_KEY, "aws-secret")
          assert.sameMembers([...p.env.stripped], stripped)
          assert.notInclude(JSON.stringify(p.env), "aws-secret")
        }))
    }))

  it.effect("explicit env without extendEnv inherits nothing; with extendEnv it is laid over the filtered host", () =>
    Effect.gen(function*() {
      const os = TestOs.make({ env: host })
      yield* withPool(os, { env: "agent-host" }, (pool) =>
        Effect.gen(function*() {
          const only = yield* pool.spawn(
            ChildProcess.make("tool", [], { env: { MODE: "test", TOKEN: Redacted.make("t0k") } })
          )
          assert.deepStrictEqual(os.process(only.pid)!.env, {
            MODE: "test",
            TOKEN: "t0k",
            SHEPHERD_ID: only.shepherdId
          })
          assert.deepStrictEqual(only.env.inherited, [])
          const extended = yield* pool.spawn(
            ChildProcess.make("tool", [], { env: { CLAUDECODE: "forced-on", MODE: "x" }, extendEnv: true })
          )
          const env = os.process(extended.pid)!.env
          assert.strictEqual(env.CLAUDECODE, "forced-on", "explicit wins over the policy")
          assert.strictEqual(env.MODE, "x")
          assert.strictEqual(env.PATH, "/usr/bin")
          assert.notProperty(env, "MCP_SESSION_ID")
        }))
    }))

  it.effect("a command cannot override SHEPHERD_ID", () =>
    Effect.gen(function*() {
      const os = TestOs.make({ env: { SHEPHERD_ID: "outer:1" } })
      yield* withPool(os, {}, (pool) =>
        Effect.gen(function*() {
          const p = yield* pool.spawn(ChildProcess.make("tool", [], { env: { SHEPHERD_ID: "fake" }, extendEnv: true }))
          assert.strictEqual(os.process(p.pid)!.env.SHEPHERD_ID, p.shepherdId)
        }))
    }))

  it.effect("inheritedEnv changes are seen by later spawns", () =>
    Effect.gen(function*() {
      const os = TestOs.make({ env: { A: "1" } })
      yield* withPool(os, {}, (pool) =>
        Effect.gen(function*() {
          const first = yield* pool.spawn(cmd("tool"))
          os.setEnv({ B: "2" })
          const second = yield* pool.spawn(cmd("tool"))
          assert.deepStrictEqual(os.process(first.pid)!.env, { A: "1", SHEPHERD_ID: first.shepherdId })
          assert.deepStrictEqual(os.process(second.pid)!.env, { B: "2", SHEPHERD_ID: second.shepherdId })
        }))
    }))
})
