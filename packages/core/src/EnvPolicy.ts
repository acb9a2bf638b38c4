/**
 * Which inherited environment variables reach a supervised process.
 *
 * The policy applies to *inherited* variables only: variables the command sets
 * explicitly (`ChildProcess.make(..., { env })`) always reach the child.
 * A variable is stripped when its name is in `strip` or starts with one of
 * `stripPrefixes`, unless it is in `preserve` or starts with one of
 * `preservePrefixes` (preserve wins). `process.env` is never mutated.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/**
 * @since 0.1.0
 * @category schemas
 */
export const EnvPolicy = Schema.Struct({
  strip: Schema.Array(Schema.String),
  stripPrefixes: Schema.Array(Schema.String),
  preserve: Schema.Array(Schema.String),
  preservePrefixes: Schema.Array(Schema.String)
})

/**
 * @since 0.1.0
 * @category models
 */
export interface EnvPolicy extends Schema.Schema.Type<typeof EnvPolicy> {}

/**
 * Inherit everything.
 *
 * @since 0.1.0
 * @category constructors
 */
export const inherit: EnvPolicy = { strip: [], stripPrefixes: [], preserve: [], preservePrefixes: [] }

/**
 * The agent-host preset: children of an AI agent host must not believe they
 * run inside the host's own agent session (`CLAUDECODE`, `CLAUDE_CODE_*`,
 * `MCP_SESSION_ID`), but keep their credentials, cloud-provider switches and
 * proxy settings.
 *
 * @since 0.1.0
 * @category constructors
 */
export const agentHost: EnvPolicy = {
  strip: ["CLAUDECODE", "CLAUDE_CODE_SESSION", "CLAUDE_CODE_ENTRYPOINT", "MCP_SESSION_ID"],
  stripPrefixes: ["CLAUDECODE_", "CLAUDE_CODE_"],
  preserve: [
    "CLAUDE_CODE_OAUTH_TOKEN",
    "CLAUDE_CODE_USE_BEDROCK",
    "CLAUDE_CODE_USE_VERTEX",
    "CLAUDE_CODE_USE_FOUNDRY",
    "CLAUDE_CODE_SKIP_BEDROCK_AUTH",
    "CLAUDE_CODE_SKIP_VERTEX_AUTH",
    "CLAUDE_CODE_SKIP_FOUNDRY_AUTH",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy"
  ],
  preservePrefixes: ["AWS_"]
}

/**
 * What the policy did to one environment (names only, never values).
 *
 * @since 0.1.0
 * @category models
 */
export interface EnvExplain {
  readonly inherited: ReadonlyArray<string>
  readonly stripped: ReadonlyArray<string>
  readonly preserved: ReadonlyArray<string>
  readonly explicit: ReadonlyArray<string>
}

/**
 * `true` when the policy removes `name` from an inherited environment.
 *
 * @since 0.1.0
 * @category predicates
 */
export const strips = (policy: EnvPolicy, name: string): boolean => {
  if (policy.preserve.includes(name) || policy.preservePrefixes.some((p) => name.startsWith(p))) return false
  return policy.strip.includes(name) || policy.stripPrefixes.some((p) => name.startsWith(p))
}

const matchesStrip = (policy: EnvPolicy, name: string): boolean =>
  policy.strip.includes(name) || policy.stripPrefixes.some((p) => name.startsWith(p))

/** What a policy does to one inherited name: 0 keep, 1 strip, 2 keep although a strip rule matches (preserved). */
type Decision = 0 | 1 | 2

// A policy is immutable data: its decision per name is computed once (a host's environment has a few
// dozen names, and every spawn would otherwise test each against every rule).
const decisions = new WeakMap<EnvPolicy, Map<string, Decision>>()

const decide = (policy: EnvPolicy, name: string): Decision => {
  let cache = decisions.get(policy)
  if (cache === undefined) {
    cache = new Map()
    decisions.set(policy, cache)
  }
  let decision = cache.get(name)
  if (decision === undefined) {
    decision = strips(policy, name) ? 1 : matchesStrip(policy, name) ? 2 : 0
    // Bounded: a host that invents variable names without end keeps at most this many decisions.
    if (cache.size < 4096) cache.set(name, decision)
  }
  return decision
}

/**
 * Builds a child's environment: `inherited` (the host's environment, when the
 * command inherits) filtered by the policy, then `explicit` on top, where an
 * `undefined` value deletes the variable.
 *
 * @since 0.1.0
 * @category combinators
 */
export const apply = (
  policy: EnvPolicy,
  inherited: Readonly<Record<string, string | undefined>>,
  explicit: Readonly<Record<string, string | undefined>>
): { readonly env: Record<string, string>; readonly explain: EnvExplain } => {
  // No prototype: a variable named `__proto__` is a variable like any other.
  const env: Record<string, string> = Object.create(null)
  let kept: Array<string> = []
  let stripped: Array<string> = []
  let preserved: Array<string> = []
  for (const name of Object.keys(inherited)) {
    const value = inherited[name]
    if (value === undefined) continue
    const decision = decide(policy, name)
    if (decision === 1) {
      stripped.push(name)
      continue
    }
    if (decision === 2) preserved.push(name)
    kept.push(name)
    env[name] = value
  }
  const explicitNames: Array<string> = []
  for (const name of Object.keys(explicit)) {
    const value = explicit[name]
    explicitNames.push(name)
    if (value === undefined) delete env[name]
    else env[name] = value
  }
  // Every live process keeps its explanation: while the host's environment does not change, all
  // of them share one copy of these lists.
  const last = lastExplained.get(policy)
  if (last !== undefined) {
    if (sameNames(last.inherited, kept)) kept = last.inherited as Array<string>
    if (sameNames(last.stripped, stripped)) stripped = last.stripped as Array<string>
    if (sameNames(last.preserved, preserved)) preserved = last.preserved as Array<string>
  }
  const explain = { inherited: kept, stripped, preserved, explicit: explicitNames }
  lastExplained.set(policy, explain)
  return { env, explain }
}

const lastExplained = new WeakMap<EnvPolicy, EnvExplain>()

const sameNames = (a: ReadonlyArray<string>, b: ReadonlyArray<string>): boolean => {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}
