/**
 * Node throws from `spawn()`, instead of emitting "error", for every errno but EACCES, EAGAIN,
 * EMFILE, ENFILE and ENOENT: a cwd that is a file (ENOTDIR), an argument list too long (E2BIG).
 * Such a spawn is a typed SpawnError, not a defect, and gives its slot back.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import { ChildProcess } from "effect/process"
import { cleanupPools, withPool } from "./harness.ts"

afterEach(cleanupPools)

describe("spawn: failures Node throws synchronously", () => {
  it.live(
    "are SpawnErrors and give their slot back",
    () =>
      withPool({ name: "spawn-sync-failure", slots: 1 }, (pool) =>
        Effect.gen(function*() {
          const fileAsCwd = yield* Effect.exit(pool.spawn(ChildProcess.make("/bin/true", [], { cwd: "/etc/hostname" })))
          const tooLong = yield* Effect.exit(pool.spawn(ChildProcess.make("/bin/true", ["x".repeat(4 * 1024 * 1024)])))
          for (const exit of [fileAsCwd, tooLong]) {
            assert.isTrue(Exit.isFailure(exit))
            if (Exit.isFailure(exit)) {
              const error = exit.cause.reasons.find((r) => r._tag === "Fail")
              assert.isDefined(error, "a typed failure, not a defect")
              assert.strictEqual((error as { error: { _tag: string } }).error._tag, "SpawnError")
            }
          }
          // The pool has one slot: this spawn gets it only if both failures gave theirs back.
          const next = yield* pool.spawn(ChildProcess.make("/bin/true", [])).pipe(Effect.timeout("60 seconds"))
          const exit = yield* next.awaitExit
          assert.strictEqual(exit.code, 0)
        })),
    120_000
  )
})
