/**
 * The doctor over HTTP: `GET /doctor` serves the pool's doctor report as
 * JSON, `GET /metrics` the metrics in the Prometheus text format. Binds to
 * 127.0.0.1 by default; the report holds environment variable *names* only,
 * never values.
 *
 * @since 0.1.0
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { DoctorReport } from "@shepherd/core/Doctor"
import { ProcessPool } from "@shepherd/core/ProcessPool"
import * as Effect from "effect/Effect"
import * as HttpRouter from "effect/http/HttpRouter"
import type * as HttpServer from "effect/http/HttpServer"
import type * as HttpServerError from "effect/http/HttpServerError"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Schema from "effect/Schema"
import { createServer } from "node:http"

const metricName = (id: string) => id.replace(/[^a-zA-Z0-9_:]/g, "_")
const labels = (attributes: Readonly<Record<string, string>> | undefined, extra: Record<string, string> = {}) => {
  const all = { ...attributes, ...extra }
  const keys = Object.keys(all)
  return keys.length === 0 ? "" : `{${keys.map((k) => `${k}="${String(all[k]).replace(/["\\\n]/g, "_")}"`).join(",")}}`
}

/**
 * Renders metric snapshots in the Prometheus text exposition format.
 *
 * @since 0.1.0
 * @category formatting
 */
export const prometheus = (snapshots: ReadonlyArray<Metric.Metric.Snapshot>): string => {
  const lines: Array<string> = []
  const typed = new Set<string>()
  for (const s of snapshots) {
    const name = metricName(s.id)
    const head = (type: string) => {
      if (typed.has(name)) return
      typed.add(name)
      if (s.description !== undefined) lines.push(`# HELP ${name} ${s.description}`)
      lines.push(`# TYPE ${name} ${type}`)
    }
    switch (s.type) {
      case "Counter":
        head("counter")
        lines.push(`${name}${labels(s.attributes)} ${s.state.count}`)
        break
      case "Gauge":
        head("gauge")
        lines.push(`${name}${labels(s.attributes)} ${s.state.value}`)
        break
      case "Histogram":
        head("histogram")
        for (const [boundary, count] of s.state.buckets) {
          lines.push(
            `${name}_bucket${
              labels(s.attributes, { le: Number.isFinite(boundary) ? String(boundary) : "+Inf" })
            } ${count}`
          )
        }
        lines.push(`${name}_sum${labels(s.attributes)} ${s.state.sum}`)
        lines.push(`${name}_count${labels(s.attributes)} ${s.state.count}`)
        break
      case "Frequency":
        head("counter")
        for (const [key, count] of s.state.occurrences) lines.push(`${name}${labels(s.attributes, { key })} ${count}`)
        break
      case "Summary":
        head("summary")
        for (const [q, v] of s.state.quantiles) {
          lines.push(`${name}${labels(s.attributes, { quantile: String(q) })} ${v ?? "NaN"}`)
        }
        lines.push(`${name}_sum${labels(s.attributes)} ${s.state.sum}`)
        lines.push(`${name}_count${labels(s.attributes)} ${s.state.count}`)
        break
    }
  }
  return `${lines.join("\n")}\n`
}

const encodeReport = Schema.encodeEffect(Schema.toCodecJson(DoctorReport))

/**
 * The routes, for composing into an existing `HttpRouter`.
 *
 * @since 0.1.0
 * @category layers
 */
export const routes = Layer.mergeAll(
  HttpRouter.add(
    "GET",
    "/doctor",
    Effect.gen(function*() {
      const pool = yield* ProcessPool
      const report = yield* encodeReport(yield* pool.doctor)
      return yield* HttpServerResponse.json(report)
    }).pipe(Effect.orDie)
  ),
  HttpRouter.add(
    "GET",
    "/metrics",
    Effect.map(
      Metric.snapshot,
      (snapshots) => HttpServerResponse.text(prometheus(snapshots), { contentType: "text/plain; version=0.0.4" })
    )
  )
)

/** At most this many connections are open at once; more are closed as they arrive. */
const maxConnections = 64

/**
 * Serves `/doctor` and `/metrics` for the `ProcessPool` in context, on
 * `host` (default 127.0.0.1) and `port` (default 0: any free port; the
 * `HttpServer` service in the output tells which).
 *
 * At most 64 connections are served at once (more are closed as they
 * arrive), and a connection that has not sent its request's headers within
 * 10 s is dropped: local clients cannot take the host's file descriptors.
 *
 * When the layer closes, the server stops accepting and drops every
 * connection at once, idle keep-alive ones and requests in flight: clients
 * never hold a host's shutdown up.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: { readonly port?: number | undefined; readonly host?: string | undefined } = {}
): Layer.Layer<
  HttpServer.HttpServer,
  HttpServerError.ServeError,
  ProcessPool
> =>
  Layer.unwrap(Effect.sync(() => {
    // Any local user can connect to loopback: each connection is a descriptor of the host, which
    // also needs descriptors to spawn, compact its ledger and read /proc. Connections beyond
    // `maxConnections` are closed at once, and one that sends no complete request in time is dropped.
    const server = createServer({ headersTimeout: 10_000, requestTimeout: 30_000, connectionsCheckingInterval: 2_000 })
    server.maxConnections = maxConnections
    // Built after the router, so closed before it: the router's own close would wait up to 20 s
    // for open connections (a keep-alive client, a slow request) before the pool's shutdown.
    const dropConnections = Layer.effectDiscard(Effect.addFinalizer(() =>
      Effect.sync(() => {
        if (server.listening) server.close()
        server.closeAllConnections()
      })
    ))
    return dropConnections.pipe(
      Layer.provideMerge(HttpRouter.serve(routes, { disableLogger: true, disableListenLog: true })),
      Layer.provideMerge(
        NodeHttpServer.layer(() => server, { port: options.port ?? 0, host: options.host ?? "127.0.0.1" })
      )
    )
  }))
