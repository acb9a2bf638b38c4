import * as PlatformError from "effect/PlatformError"
import * as Stream from "effect/Stream"
import * as NodeStream from "@effect/platform-node/NodeStream"
import type { Readable } from "node:stream"

/** Bytes of unread output kept per stream until a consumer attaches. */
export const retainBytes = 1024 * 1024

/**
 * Keeps a child's output pipe flowing while nobody reads it, so a chatty child
 * never blocks on a full pipe. Until a consumer attaches, the last
 * `retainBytes` are retained (older output is dropped); the first consumer gets
 * the retained bytes, then the live stream with normal backpressure.
 */
export const tap = (readable: Readable, name: string): Stream.Stream<Uint8Array, PlatformError.PlatformError> => {
  let chunks: Array<Buffer> = []
  let size = 0
  let attached = false
  const onData = (chunk: Buffer) => {
    chunks.push(chunk)
    size += chunk.length
    while (size > retainBytes && chunks.length > 1) size -= chunks.shift()!.length
  }
  readable.on("data", onData)
  // Without a listener an EPIPE/EBADF on the pipe would crash the host.
  readable.on("error", () => {})
  const onError = (error: unknown) =>
    PlatformError.systemError({
      _tag: "Unknown",
      module: "ChildProcess",
      method: `fromReadable(${name})`,
      description: String(error)
    })
  return Stream.suspend(() => {
    if (attached) {
      return Stream.fail(
        PlatformError.badArgument({
          module: "Shepherd",
          method: name,
          description: `${name} of a supervised process can be consumed once`
        })
      )
    }
    attached = true
    readable.off("data", onData)
    readable.pause()
    const retained = chunks
    chunks = []
    size = 0
    const live = NodeStream.fromReadable<Uint8Array, PlatformError.PlatformError>({ evaluate: () => readable, onError })
    return retained.length === 0 ? live : Stream.concat(Stream.fromIterable(retained as Array<Uint8Array>), live)
  })
}
