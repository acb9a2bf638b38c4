/**
 * File safety: what is refused (symlinks, FIFOs, files writable by others, shared directories),
 * exclusive creation, atomic replacement, and the removal of dead hosts' temporaries only.
 */
import { assert, describe, it } from "@effect/vitest"
import * as NodeChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as safeFiles from "../src/internal/safeFiles.ts"

const posix = process.platform !== "win32"

const withDir = (body: (dir: string) => void) => () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shepherd-safe-"))
  try {
    body(dir)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}
const refusal = (body: () => unknown): string | undefined => {
  try {
    body()
  } catch (error) {
    if (error instanceof safeFiles.Refused) return error.message
    throw error
  }
  return undefined
}

describe("safeFiles", () => {
  it(
    "openOwned opens a file of ours, and reads an absent one as undefined",
    withDir((dir) => {
      const file = path.join(dir, "f")
      assert.isUndefined(safeFiles.openOwned(file, safeFiles.O_RDONLY))
      fs.writeFileSync(file, "x", { mode: 0o600 })
      const fd = safeFiles.openOwned(file, safeFiles.O_RDONLY)!
      assert.strictEqual(fs.readFileSync(fd, "utf8"), "x")
      fs.closeSync(fd)
    })
  )

  it.runIf(posix)(
    "openOwned refuses a symlink, a FIFO (without blocking) and a file others can write",
    withDir((dir) => {
      const file = path.join(dir, "f")
      fs.writeFileSync(file, "x", { mode: 0o600 })
      fs.symlinkSync(file, path.join(dir, "link"))
      assert.include(refusal(() => safeFiles.openOwned(path.join(dir, "link"), safeFiles.O_RDONLY)), "symlink")
      NodeChildProcess.execFileSync("mkfifo", [path.join(dir, "fifo")])
      assert.include(refusal(() => safeFiles.openOwned(path.join(dir, "fifo"), safeFiles.O_RDONLY)), "FIFO")
      fs.chmodSync(file, 0o666)
      assert.include(refusal(() => safeFiles.openOwned(file, safeFiles.O_RDONLY)), "writable by other users")
      // "any" owner: a regular file is enough (a read-only look).
      const fd = safeFiles.openOwned(file, safeFiles.O_RDONLY, "any")!
      fs.closeSync(fd)
    })
  )

  it(
    "createExclusive never replaces a file; writeAtomically does, leaving no temporary",
    withDir((dir) => {
      const file = path.join(dir, "f")
      safeFiles.createExclusive(file, Buffer.from("one"))
      assert.throws(() => safeFiles.createExclusive(file, Buffer.from("two")))
      assert.strictEqual(fs.readFileSync(file, "utf8"), "one")
      safeFiles.writeAtomically(file, "three")
      assert.strictEqual(fs.readFileSync(file, "utf8"), "three")
      assert.deepStrictEqual(fs.readdirSync(dir), ["f"])
    })
  )

  it.runIf(posix)(
    "prepareDirectory creates a private directory and refuses one others can write",
    withDir((dir) => {
      const ledgers = path.join(dir, "a", "b")
      safeFiles.prepareDirectory(ledgers)
      assert.strictEqual(fs.statSync(ledgers).mode & 0o777, 0o700)
      fs.chmodSync(ledgers, 0o777)
      assert.include(refusal(() => safeFiles.prepareDirectory(ledgers)), "writable by other users")
    })
  )

  it(
    "removeStrayTemporaries removes dead hosts' temporaries only",
    withDir((dir) => {
      const file = path.join(dir, "p.ledger")
      const dead = 4_194_000
      const names = [
        `p.ledger.tmp-${dead}-0123456789abcdef`,
        `p.ledger.lock.${dead}-0123456789abcdef.tmp`,
        `p.ledger.lock.stale-${dead}-0123456789abcdef`,
        `p.ledger.tmp-${process.ppid}-0123456789abcdef`,
        "p.ledger.unrelated"
      ]
      for (const name of names) fs.writeFileSync(path.join(dir, name), "", { mode: 0o600 })
      const removed = safeFiles.removeStrayTemporaries(file).map((f) => path.basename(f)).sort()
      assert.deepStrictEqual(removed, names.slice(0, 3).sort())
      assert.deepStrictEqual(fs.readdirSync(dir).sort(), names.slice(3).sort())
    })
  )
})
