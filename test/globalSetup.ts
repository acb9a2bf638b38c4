/**
 * The suite's last word: no process carrying a test pool's `SHEPHERD_ID`
 * may survive the run. Test pools are named `t-...`, the demo `demo...`;
 * survivors are reported, killed, and fail the run.
 */
import { killSurvivors, survivors } from "./support.ts"

export const teardown = async () => {
  await new Promise((r) => setTimeout(r, 200))
  const left = survivors("")
    .filter((p) => !process.env.SHEPHERD_ID || !p.shepherdId?.startsWith(process.env.SHEPHERD_ID.split(":")[0]!))
  if (left.length > 0) {
    killSurvivors("")
    throw new Error(
      `${left.length} supervised process(es) survived the test suite:\n` +
        left.map((p) => `  pid ${p.pid} ${p.shepherdId}: ${p.cmdline}`).join("\n")
    )
  }
}
