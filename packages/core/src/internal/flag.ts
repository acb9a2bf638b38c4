/**
 * A one-shot flag whose listeners are called synchronously when it is
 * raised: what a waiter needs to give up at once without a fiber of its own
 * waiting on a `Deferred` (a queue of hundreds of spawn requests would
 * otherwise hold hundreds of such fibers).
 *
 * @since 0.2.0
 */

/**
 * @since 0.2.0
 * @category models
 */
export class Flag {
  raised = false
  private readonly listeners = new Set<() => void>()

  /** Raises the flag (idempotent) and calls every listener once. */
  raise(): void {
    if (this.raised) return
    this.raised = true
    const listeners = [...this.listeners]
    this.listeners.clear()
    for (const f of listeners) f()
  }

  /** Calls `f` when the flag is raised (at once if it is already); returns the way to stop listening. */
  listen(f: () => void): () => void {
    if (this.raised) {
      f()
      return () => {}
    }
    this.listeners.add(f)
    return () => {
      this.listeners.delete(f)
    }
  }
}
