/**
 * `Redacted` values never reach the doctor: not `pool.doctor`, not
 * `GET /doctor`, not `shepherd doctor` (which reads the ledger and /proc of
 * another process and cannot know the values) — even when a child re-execs
 * with the secret in another argument position.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { DoctorReport } from "@shepherd/core/Doctor"
import { ProcessPool } from "@shepherd/core/ProcessPool"
import * as DoctorHttp from "@shepherd/node/DoctorHttp"
import * as NodeShepherd from "@shepherd/node/NodeShepherd"
import { Effect, Layer, Redacted, References, Schema } from "effect"
import * as HttpServer from "effect/http/HttpServer"
import { ChildProcess } from "effect/process"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { cleanupPools, eventually, membersOf, track } from "./harness.ts"
import { killSurvivors } from "./support.ts"

afterEach(cleanupPools)

const bin = fileURLToPath(new URL("../packages/cli/src/bin.ts", import.meta.url))

const shepherd = (args: ReadonlyArray<string>) =>
  Effect.promise(() =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      NodeChildProcess.execFile(
        process.execPath,
        [bin, ...args],
        { env: { ...process.env, NO_COLOR: "1" } },
        (error, stdout, stderr) => {
          resolve({ code: error === null ? 0 : Number((error as { code?: number }).code ?? 1), stdout, stderr })
        }
      )
    })
  )

const encode = Schema.encodeEffect(Schema.toCodecJson(DoctorReport))

describe("Redacted values and the doctor", () => {
  it.live("appear in none of pool.doctor, GET /doctor and shepherd doctor, even after a re-exec", () => {
    const tag = Math.random().toString(36).slice(2, 10)
    const argSecret = `argsecret${tag}`
    const envSecret = `envsecret${tag}`
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-redaction-"))
    const ledger = path.join(dir, "pool.ledger")
    // The leader gets the secret as $1 and starts a child that carries it, reshaped, in another position.
    const fromArg = `sh -c 'sleep 1000; : "$2"' inner "x-$1-y" & wait`
    const fromEnv = `sh -c 'sleep 1000; : "$2"' inner "--token=$TOKEN" & wait`
    let prefix = ""
    return Effect.gen(function*() {
      const pool = yield* ProcessPool
      prefix = `${pool.poolId}:`
      track(prefix)
      const address = (yield* HttpServer.HttpServer).address
      if (address._tag !== "InetAddressV4") return assert.fail("not an inet address")
      const a = yield* pool.spawn(ChildProcess.make("sh", ["-c", fromArg, "sh", Redacted.make(argSecret)]), {
        session: "s"
      })
      const b = yield* pool.spawn(
        ChildProcess.make("sh", ["-c", fromEnv], { env: { TOKEN: Redacted.make(envSecret) }, extendEnv: true }),
        { session: "s" }
      )
      // The OS shows the secrets: each tree has a member whose command line carries one.
      yield* eventually(
        "the re-exec'd members",
        () =>
          membersOf(a.shepherdId).some((p) => p.cmdline.includes(argSecret)) &&
          membersOf(b.shepherdId).some((p) => p.cmdline.includes(envSecret)) &&
          membersOf(a.shepherdId).length === 3 && membersOf(b.shepherdId).length === 3
      )

      const report = yield* pool.doctor
      const json = JSON.stringify(yield* encode(report))
      assert.notInclude(json, argSecret)
      assert.notInclude(json, envSecret)
      const members = report.sessions.find((s) => s.id === "s")!.processes.flatMap((p) => p.members)
      assert.strictEqual(members.length, 6, "every member is listed")
      for (const m of members) assert.match(m.command, /^(sh|sleep) <arguments hidden>$/)

      const body = yield* Effect.promise(() => fetch(`http://127.0.0.1:${address.port}/doctor`).then((r) => r.text()))
      assert.include(body, "<arguments hidden>")
      assert.notInclude(body, argSecret)
      assert.notInclude(body, envSecret)

      for (const args of [["doctor", "--ledger", ledger, "--json"], ["doctor", "--ledger", ledger]]) {
        const out = yield* shepherd(args)
        assert.strictEqual(out.code, 0, out.stderr)
        assert.include(out.stdout, "<arguments hidden>")
        assert.notInclude(out.stdout + out.stderr, argSecret, args.join(" "))
        assert.notInclude(out.stdout + out.stderr, envSecret, args.join(" "))
      }
    }).pipe(
      Effect.scoped,
      Effect.provide(
        DoctorHttp.layer().pipe(
          Layer.provideMerge(NodeShepherd.layer({ name: "t-redaction", ledger, kill: { grace: "200 millis" } }))
        ),
        { local: true }
      ),
      Effect.provideService(References.MinimumLogLevel, "Warn"),
      Effect.ensuring(Effect.sync(() => {
        if (prefix !== "") killSurvivors(prefix)
        fs.rmSync(dir, { recursive: true, force: true })
      }))
    )
  }, 60_000)
})
