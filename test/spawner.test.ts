/**
 * Shepherd as Effect's `ChildProcessSpawner`: code written against
 * `effect/process` runs supervised once `NodeShepherd.spawner` is provided.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { ProcessPool } from "@shepherd/core/ProcessPool"
import * as NodeShepherd from "@shepherd/node/NodeShepherd"
import { Effect, Stream } from "effect"
import { ChildProcess, ChildProcessSpawner } from "effect/process"
import { assertNoSurvivors, awaitMembers, awaitStats, cleanupPools, membersOf, show, usePool } from "./harness.ts"
import { environOf, isAlive, trees } from "./support.ts"

afterEach(cleanupPools)

const config = { name: "t-spawner", kill: { grace: "300 millis", forceWait: "500 millis" } } as const

/** Plain Effect code: knows nothing about Shepherd. */
const userCode = Effect.gen(function*() {
  const spawner = yield* ChildProcessSpawner.ChildProcessSpawner
  const hi = yield* spawner.string(ChildProcess.make("sh", ["-c", "echo hi"]))
  const id = yield* spawner.string(ChildProcess.make("sh", ["-c", "printf %s \"$SHEPHERD_ID\""]))
  const lines = yield* spawner.lines(ChildProcess.make("sh", ["-c", "echo a; echo b"]))
  const code = yield* spawner.exitCode(ChildProcess.make("sh", ["-c", "exit 7"]))
  return { hi, id, lines, code }
})

describe("NodeShepherd.spawner", () => {
  it.live("string / lines / exitCode work and run supervised", () =>
    usePool(NodeShepherd.spawner(config), (pool, prefix) =>
      Effect.gen(function*() {
        const { code, hi, id, lines } = yield* userCode
        assert.strictEqual(hi, "hi\n")
        assert.isTrue(id.startsWith(prefix), id)
        assert.deepStrictEqual(lines, ["a", "b"])
        assert.strictEqual(code, 7)
        // every slot comes back
        yield* awaitStats(pool, "slots released", (s) => s.inUse === 0)
        assertNoSurvivors(prefix)
      })))

  it.live("yield* ChildProcess.make(...) spawns a supervised tree bound to the scope", () =>
    usePool(NodeShepherd.spawner(config), (pool, prefix) =>
      Effect.gen(function*() {
        const members = yield* Effect.scoped(Effect.gen(function*() {
          const handle = yield* ChildProcess.make("sh", ["-c", trees.setsidGrandchild])
          const tree = yield* awaitMembers(
            environOf(handle.pid).SHEPHERD_ID ?? "missing",
            3
          )
          assert.include(tree.map((p) => p.pid), handle.pid)
          assert.isTrue(tree.every((p) => p.shepherdId?.startsWith(prefix) === true), tree.map(show).join("\n"))
          assert.isTrue(yield* handle.isRunning)
          const listed = yield* pool.processes
          assert.deepStrictEqual(listed.map((m) => m.pid), [handle.pid])
          return tree
        }))
        // the scope closed: the whole tree is gone, the setsid grandchild included
        for (const p of members) assert.isFalse(isAlive(p.pid), show(p))
        assertNoSurvivors(prefix)
      })))

  it.live("output streams of a supervised handle can be read", () =>
    usePool(NodeShepherd.spawner(config), (_pool, prefix) =>
      Effect.gen(function*() {
        const out = yield* Effect.scoped(Effect.gen(function*() {
          const handle = yield* ChildProcess.make("sh", ["-c", "echo one; echo two >&2; echo three"])
          const text = yield* handle.stdout.pipe(Stream.decodeText(), Stream.mkString)
          const code = yield* handle.exitCode
          return { text, code }
        }))
        assert.strictEqual(out.text, "one\nthree\n")
        assert.strictEqual(out.code, 0)
        assertNoSurvivors(prefix)
      })))

  it.live("withSession puts ChildProcess spawns into the named session", () =>
    usePool(NodeShepherd.spawner(config), (pool, prefix) =>
      Effect.gen(function*() {
        const pids = yield* pool.withSession(
          "job-1",
          Effect.gen(function*() {
            const handle = yield* ChildProcess.make("sh", ["-c", trees.ignoresTerm])
            const [managed] = yield* pool.processes
            assert.strictEqual(managed?.session, "job-1")
            assert.strictEqual(managed?.pid, handle.pid)
            return (yield* awaitMembers(managed!.shepherdId, 3)).map((p) => p.pid)
          })
        )
        for (const pid of pids) assert.isFalse(isAlive(pid))
        assert.deepStrictEqual(membersOf(`${prefix}1`), [])
        assertNoSurvivors(prefix)
      })))

  it.live("a missing executable fails as a PlatformError", () =>
    usePool(NodeShepherd.spawner(config), (pool, prefix) =>
      Effect.gen(function*() {
        const spawner = yield* ChildProcessSpawner.ChildProcessSpawner
        const error = yield* Effect.flip(spawner.string(ChildProcess.make("/nonexistent/shepherd-binary")))
        assert.strictEqual(error._tag, "PlatformError")
        assert.strictEqual((yield* ProcessPool).poolId, pool.poolId)
        assert.strictEqual((yield* pool.stats).inUse, 0)
        assertNoSurvivors(prefix)
      })))
})
