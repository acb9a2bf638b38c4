/**
 * DoctorHttp on loopback: the JSON report and the metrics of a real pool.
 */
import { assert, describe, it } from "@effect/vitest"
import { ProcessPool } from "@shepherd/core/ProcessPool"
import * as DoctorHttp from "@shepherd/node/DoctorHttp"
import * as NodeShepherd from "@shepherd/node/NodeShepherd"
import * as Effect from "effect/Effect"
import * as HttpServer from "effect/http/HttpServer"
import * as Layer from "effect/Layer"
import * as ChildProcess from "effect/process/ChildProcess"
import * as http from "node:http"
import * as net from "node:net"
import { survivors, waitUntil } from "./support.ts"

describe("DoctorHttp", () => {
  it.live("serves the doctor report and the metrics on 127.0.0.1, with env names but never values", () => {
    const secret = `s3cr3t-${Date.now()}`
    process.env.SHEPHERD_TEST_SECRET = secret
    return Effect.gen(function*() {
      const pool = yield* ProcessPool
      const server = yield* HttpServer.HttpServer
      const address = server.address
      assert.strictEqual(address._tag, "InetAddressV4")
      if (address._tag !== "InetAddressV4") return
      assert.strictEqual(HttpServer.formatAddress(address), `http://127.0.0.1:${address.port}`, "bound to loopback")
      const base = `http://127.0.0.1:${address.port}`
      const managed = yield* pool.spawn(ChildProcess.make("sh", ["-c", "sleep 1000 & wait"]), { session: "web" })
      assert.isTrue(
        yield* Effect.promise(() => waitUntil(() => survivors(`${pool.poolId}:`).length === 2)),
        "the tree runs"
      )

      const doctor = yield* Effect.promise(() =>
        fetch(`${base}/doctor`).then(async (r) => ({ status: r.status, text: await r.text() }))
      )
      assert.strictEqual(doctor.status, 200)
      assert.notInclude(doctor.text, secret)
      const report = JSON.parse(doctor.text)
      assert.strictEqual(report.pool.poolId, pool.poolId)
      const session = report.sessions.find((s: { id: string }) => s.id === "web")
      assert.strictEqual(session.processes[0].pid, managed.pid)
      assert.strictEqual(session.processes[0].members.length, 2)
      assert.isAbove(session.processes[0].env.inherited, 0)
      assert.deepStrictEqual(report.comparison.untracked, [])

      const metrics = yield* Effect.promise(() => fetch(`${base}/metrics`).then((r) => r.text()))
      assert.match(
        metrics,
        new RegExp(`shepherd_processes_spawned\\{pool="${pool.poolId.replace(/[.~]/g, "\\$&")}"\\} 1`)
      )
      assert.match(
        metrics,
        new RegExp(`shepherd_processes_running\\{pool="${pool.poolId.replace(/[.~]/g, "\\$&")}"\\} 1`)
      )
      assert.include(metrics, "# TYPE shepherd_slot_wait_ms histogram")

      yield* pool.closeSession("web")
      assert.deepStrictEqual(survivors(`${pool.poolId}:`), [])
    }).pipe(
      Effect.provide(
        DoctorHttp.layer().pipe(
          Layer.provideMerge(NodeShepherd.layer({ name: "t-http", ledger: false, kill: { grace: "200 millis" } }))
        )
      ),
      Effect.ensuring(Effect.sync(() => delete process.env.SHEPHERD_TEST_SECRET))
    )
  })

  it.live("closing the layer drops idle and half-sent connections at once, so the pool's teardown does not wait for them", () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    const slow = new net.Socket()
    let serverClosedSlow = false
    let slowReceived = ""
    let prefix = ""
    return Effect.gen(function*() {
      yield* Effect.scoped(Effect.gen(function*() {
        const pool = yield* ProcessPool
        prefix = `${pool.poolId}:`
        const address = (yield* HttpServer.HttpServer).address
        if (address._tag !== "InetAddressV4") return assert.fail("not an inet address")
        yield* pool.spawn(ChildProcess.make("sh", ["-c", "trap '' TERM; sleep 1000 & wait"]), { session: "web" })
        // An idle keep-alive connection, and one whose request is still being sent.
        yield* Effect.promise(() =>
          new Promise<void>((resolve, reject) => {
            http.get({ host: "127.0.0.1", port: address.port, path: "/metrics", agent }, (res) => {
              res.resume()
              res.on("end", () => resolve())
            }).on("error", reject)
          })
        )
        slow.on("error", () => {})
        slow.on("data", (chunk: Buffer) => {
          slowReceived += chunk.toString("latin1")
        })
        slow.on("close", () => {
          serverClosedSlow = true
        })
        yield* Effect.promise(() => new Promise<void>((resolve) => slow.connect(address.port, "127.0.0.1", resolve)))
        slow.write("GET /doctor HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert.isTrue(yield* Effect.promise(() => waitUntil(() => survivors(prefix).length === 2)), "the tree runs")
      })).pipe(
        Effect.provide(
          DoctorHttp.layer().pipe(
            Layer.provideMerge(
              NodeShepherd.layer({ name: "t-http-close", ledger: false, kill: { grace: "300 millis" } })
            )
          ),
          { local: true }
        )
      )
      // The layers are closed: server first, then the pool. Had the server waited for its clients (its
      // graceful-shutdown timeout is 20 s), its headersTimeout (10 s) would have answered the half-sent
      // request with a 408 first: the order proves the connections were dropped, with no figure.
      assert.isTrue(
        yield* Effect.promise(() => waitUntil(() => serverClosedSlow)),
        "the server closed the half-sent request's connection"
      )
      assert.strictEqual(slowReceived, "", "the half-sent request was cut, not timed out by the server")
      assert.deepStrictEqual(survivors(prefix), [])
    }).pipe(Effect.ensuring(Effect.sync(() => {
      agent.destroy()
      slow.destroy()
    })))
  })
})
