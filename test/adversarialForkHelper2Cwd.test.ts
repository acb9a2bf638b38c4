/**
 * Adversarial (second round): the helper's working directory is the host's of
 * the moment the helper was started.
 *
 * A spawn without `cwd` runs in the host's current directory, and a relative
 * command or `cwd` resolves against it: so it does when the host forks. The
 * launcher checks a relative `cwd` against the host's directory, then sends
 * the request as is; the helper resolves it against its own directory, the
 * host's when the helper started. After a `process.chdir()` in the host, a
 * helper-forked tree runs elsewhere, or runs *another program* of the same
 * relative name.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import * as ChildProcess from "effect/process/ChildProcess"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { cleanupPools, sh, withPool } from "./harness.ts"

afterEach(cleanupPools)

const kill = { grace: "300 millis", forceWait: "500 millis" } as const

describe("adversarial fork helper, round 2: relative paths", () => {
  it.live("after process.chdir(), a relative command and a relative cwd resolve against the host's directory", () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "adv2-fh-cwd-"))
    for (const name of ["a", "b"]) {
      fs.mkdirSync(path.join(root, name, "sub"), { recursive: true })
      fs.writeFileSync(path.join(root, name, "who.sh"), `#!/bin/sh\necho ${name}\n`, { mode: 0o755 })
    }
    const before = process.cwd()
    return withPool(
      { name: "adv2-fh-cwd", forkFrom: "helper", kill, containment: "process-group" },
      (pool) =>
        Effect.gen(function*() {
          const run = (command: ChildProcess.StandardCommand) =>
            Effect.scoped(Effect.flatMap(
              pool.spawn(command),
              (m) => Stream.mkString(Stream.decodeText(m.handle.stdout))
            ))
          process.chdir(path.join(root, "a"))
          // The helper starts here, in a/.
          assert.strictEqual(yield* run(ChildProcess.make("./who.sh", [])), "a\n")
          process.chdir(path.join(root, "b"))
          const program = yield* Effect.result(run(ChildProcess.make("./who.sh", [])))
          const dir = yield* Effect.result(run(sh("pwd -P", { cwd: "sub" })))
          assert.deepStrictEqual(
            {
              program: program._tag === "Success" ? program.success : program.failure.message,
              dir: dir._tag === "Success" ? dir.success : dir.failure.message
            },
            { program: "b\n", dir: `${fs.realpathSync(path.join(root, "b", "sub"))}\n` }
          )
        })
    ).pipe(Effect.ensuring(Effect.sync(() => {
      process.chdir(before)
      fs.rmSync(root, { recursive: true, force: true })
    })))
  })
})
