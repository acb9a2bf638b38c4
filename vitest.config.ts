import { defineConfig } from "vitest/config"

// Inside the workspace the packages run from their TypeScript sources: the `@shepherd/source` export
// condition points at `src/` (published packages point at `dist/`). Host processes that tests start
// with `process.execPath` inherit the condition through NODE_OPTIONS.
const sourceCondition = "--conditions=@shepherd/source"
if (!(process.env.NODE_OPTIONS ?? "").includes(sourceCondition)) {
  process.env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ""} ${sourceCondition}`.trim()
}
const conditions = ["@shepherd/source", "module", "node", "development|production"]

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions, externalConditions: ["@shepherd/source"] } },
  test: {
    include: ["packages/*/test/**/*.test.ts", "test/**/*.test.ts"],
    globalSetup: ["./test/globalSetup.ts"],
    setupFiles: ["./test/setupFile.ts"],
    // Guards against a hang only: the polling helpers give up after 60 s (with what they waited for),
    // so a test's own limit is longer. No test asserts how long something took (that is `pnpm bench`).
    testTimeout: 120_000,
    // Most files wait on real processes (grace periods, spawns) rather than compute: three workers keep
    // a 2-core machine busy (vitest's default there is one).
    maxWorkers: 3,
    hookTimeout: 120_000
  }
})
