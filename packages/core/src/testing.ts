/**
 * Test utilities for code built on Shepherd, kept out of the main entry
 * point (as Effect keeps `TestClock` in `effect/testing`):
 *
 * ```ts
 * import { TestOs } from "@shepherd/core/testing"
 * ```
 *
 * @since 0.1.0
 */

/**
 * A deterministic, in-memory operating system (a `ProcessTable` and a
 * `ProcessLauncher` over simulated processes) driven by `TestClock`.
 *
 * @since 0.1.0
 */
export * as TestOs from "./testing/TestOs.ts"
