#!/usr/bin/env node
/**
 * The `shepherd` executable. It checks the Node.js version before it loads
 * anything else, so that an old Node says what it needs instead of failing
 * somewhere inside a dependency.
 *
 * @since 0.1.0
 */
const [major = 0, minor = 0] = process.versions.node.split(".").map(Number)
if (major < 22 || (major === 22 && minor < 19)) {
  process.stderr.write(`shepherd: needs Node.js 22.19 or newer; this is ${process.version}\n`)
  process.exit(1)
}
await import("./Main.ts")
