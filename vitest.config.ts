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
    testTimeout: 60_000,
    hookTimeout: 60_000
  }
})
