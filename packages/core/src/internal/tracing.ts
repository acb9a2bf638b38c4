/**
 * Spans on the per-process paths only when something can see them.
 *
 * A span costs a stack capture and a few allocations (about 10 µs each here),
 * paid on every spawn and every teardown. Effect's native tracer exports
 * nothing, so with it (or with tracing disabled) those spans have no
 * observer; with any other tracer installed (OpenTelemetry, ...) they are
 * created as before.
 *
 * @since 0.2.0
 */
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as References from "effect/References"
import * as Tracer from "effect/Tracer"

/**
 * Whether the fiber's spans reach a tracing backend.
 *
 * @since 0.2.0
 * @category predicates
 */
export const observed = (fiber: Fiber.Fiber<unknown, unknown>): boolean =>
  fiber.getRef(References.TracerEnabled) && fiber.getRef(Tracer.Tracer) !== Tracer.nativeTracer

/**
 * `Effect.withSpan`, skipped when no backend would see the span.
 *
 * @since 0.2.0
 * @category combinators
 */
export const span = <A, E, R>(
  self: Effect.Effect<A, E, R>,
  name: string,
  attributes: () => Record<string, unknown>
): Effect.Effect<A, E, R> =>
  Effect.withFiber((fiber) => observed(fiber) ? Effect.withSpan(self, name, { attributes: attributes() }) : self)
