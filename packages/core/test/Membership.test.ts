/**
 * The membership rules, over plain records: group states, the group and cookie rules, vouching,
 * deadness and the identity check before a signal.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Membership from "../src/Membership.ts"
import type { Container } from "../src/ProcessTable.ts"

const host: Membership.Host = { pid: 50, bootId: "boot-a" }
const container: Container = {
  pgid: 100,
  shepherdId: "pool:1",
  leader: { pid: 100, startTime: "1000", bootId: "boot-a" }
}

/** A table of observations by pid; a pid not listed is gone. */
const table = (entries: Record<number, Membership.Observation>): Membership.Observe => (pid) => entries[pid]
const running = (startTime: string, state = "S", threads?: number): Membership.Observed => ({
  startTime,
  state,
  threads
})

const candidate = (over: Partial<Membership.Candidate>): Membership.Candidate => ({
  pgid: 100,
  start: 1500n,
  cookie: undefined,
  vouched: undefined,
  ...over
})

describe("Membership", () => {
  describe("groupState", () => {
    it("is led while the leader is the recorded process (a zombie leader still holds the id)", () => {
      assert.strictEqual(Membership.groupState(container, host, table({ 100: running("1000") })), "led")
      assert.strictEqual(Membership.groupState(container, host, table({ 100: running("1000", "Z") })), "led")
    })

    it("is foreign once the leader has exited and a live process holds its pid, even with its start time", () => {
      const exited: Container = { ...container, leaderExited: true }
      // Same pid and start time (the same 10 ms clock tick): not ours, our leader is gone.
      assert.strictEqual(Membership.groupState(exited, host, table({ 100: running("1000") })), "foreign")
      assert.strictEqual(Membership.groupState(exited, host, table({ 100: running("1000", "R") })), "foreign")
      // A zombie main thread whose other threads still run is alive: not ours either.
      assert.strictEqual(Membership.groupState(exited, host, table({ 100: running("1000", "Z", 3) })), "foreign")
      // Our leader's zombie still holds the id: its group is still ours.
      assert.strictEqual(Membership.groupState(exited, host, table({ 100: running("1000", "Z") })), "led")
      assert.strictEqual(Membership.groupState(exited, host, table({})), "leaderless")
      // Not known to have exited: the start time decides, as before.
      assert.strictEqual(Membership.groupState(container, host, table({ 100: running("1000") })), "led")
    })

    it("is leaderless once the leader is gone", () => {
      assert.strictEqual(Membership.groupState(container, host, table({})), "leaderless")
    })

    it("is foreign when the pid was reused, cannot be read, or is from another boot", () => {
      assert.strictEqual(Membership.groupState(container, host, table({ 100: running("2000") })), "foreign")
      assert.strictEqual(Membership.groupState(container, host, table({ 100: "unreadable" })), "foreign")
      const otherBoot = { ...container, leader: { ...container.leader, bootId: "boot-b" } }
      assert.strictEqual(Membership.groupState(otherBoot, host, table({ 100: running("1000") })), "foreign")
    })

    it("is foreign when the leader does not lead the recorded group, or the group is init's", () => {
      const notLeader = { ...container, leader: { ...container.leader, pid: 101 } }
      assert.strictEqual(Membership.groupState(notLeader, host, table({ 100: running("1000") })), "foreign")
      const init = { ...container, pgid: 1 }
      assert.strictEqual(Membership.groupState(init, host, table({ 1: running("1000") })), "foreign")
    })

    it("does not look at the leader when the container is from another boot", () => {
      let looked = 0
      const otherBoot = { ...container, leader: { ...container.leader, bootId: "boot-b" } }
      Membership.groupState(otherBoot, host, () => {
        looked++
        return undefined
      })
      assert.strictEqual(looked, 0)
    })
  })

  describe("isMember", () => {
    const led = Membership.judge(container, host, table({ 100: running("1000") }))
    const leaderless = Membership.judge(container, host, table({}))
    const foreign = Membership.judge(container, host, table({ 100: running("2000") }))

    it("a led group's members no older than the leader belong, whatever their cookie", () => {
      assert.isTrue(Membership.isMember(led, candidate({})))
      assert.isTrue(Membership.isMember(led, candidate({ start: 1000n })))
      assert.isTrue(Membership.isMember(led, candidate({ cookie: "nested:7" })))
      assert.isFalse(Membership.isMember(led, candidate({ start: 999n })))
      assert.isFalse(Membership.isMember(led, candidate({ pgid: 101 })))
    })

    it("a leaderless group's members belong only if vouched for by that very leader", () => {
      assert.isFalse(Membership.isMember(leaderless, candidate({})))
      assert.isFalse(Membership.isMember(leaderless, candidate({ vouched: "999" })))
      assert.isTrue(Membership.isMember(leaderless, candidate({ vouched: "1000" })))
    })

    it("a foreign group proves nothing", () => {
      assert.isFalse(Membership.isMember(foreign, candidate({ vouched: "1000" })))
      assert.isFalse(Membership.isMember(foreign, candidate({ start: 3000n })))
    })

    it("the cookie makes a member anywhere, at any state", () => {
      for (const judged of [led, leaderless, foreign]) {
        assert.isTrue(Membership.isMember(judged, candidate({ pgid: 4242, cookie: "pool:1" })))
        assert.isFalse(Membership.isMember(judged, candidate({ pgid: 4242, cookie: "pool:2" })))
      }
    })

    it("carriesPrefix matches a pool's trees", () => {
      assert.strictEqual(Membership.poolPrefix("pool"), "pool:")
      assert.isTrue(Membership.carriesPrefix("pool:1", Membership.poolPrefix("pool")))
      assert.isFalse(Membership.carriesPrefix("pool2:1", Membership.poolPrefix("pool")))
      assert.isFalse(Membership.carriesPrefix(undefined, ""))
    })
  })

  describe("vouch", () => {
    const noLeader = () => undefined
    it("a group leader vouches for itself", () => {
      assert.strictEqual(Membership.vouch({ pid: 7, pgid: 7, startTime: "70", start: 70n }, noLeader, undefined), "70")
    })

    it("the group's leader, when it exists, vouches", () => {
      const leader = (pgid: number) => (pgid === 7 ? "70" : undefined)
      assert.strictEqual(Membership.vouch({ pid: 8, pgid: 7, startTime: "80", start: 80n }, leader, undefined), "70")
    })

    it("without a leader, an older parent vouched in the same group passes its voucher on", () => {
      const child = { pid: 9, pgid: 7, startTime: "90", start: 90n }
      assert.strictEqual(Membership.vouch(child, noLeader, { pgid: 7, start: 80n, vouched: "70" }), "70")
      assert.isUndefined(Membership.vouch(child, noLeader, { pgid: 6, start: 80n, vouched: "70" }))
      assert.isUndefined(Membership.vouch(child, noLeader, { pgid: 7, start: 95n, vouched: "70" }))
      assert.isUndefined(Membership.vouch(child, noLeader, undefined))
    })
  })

  describe("deadness and signals", () => {
    it("zombies and dead tasks are dead, a zombie leader with running threads is not", () => {
      assert.isFalse(Membership.isDead("S"))
      assert.isFalse(Membership.isDead("D"))
      assert.isTrue(Membership.isDead("X"))
      assert.isTrue(Membership.isDead("x"))
      assert.isTrue(Membership.isDead("Z"))
      assert.isTrue(Membership.isDead("Z", 1))
      assert.isFalse(Membership.isDead("Z", 3))
    })

    const leader = container.leader
    it("liveness checks boot, existence, start time and deadness", () => {
      assert.strictEqual(Membership.liveness(leader, host, table({ 100: running("1000") })), "alive")
      assert.strictEqual(Membership.liveness(leader, host, table({ 100: running("1000", "Z", 2) })), "alive")
      assert.strictEqual(Membership.liveness(leader, host, table({ 100: running("1000", "Z") })), "dead")
      assert.strictEqual(Membership.liveness(leader, host, table({ 100: running("1001") })), "dead")
      assert.strictEqual(Membership.liveness(leader, host, table({})), "dead")
      assert.strictEqual(Membership.liveness(leader, host, table({ 100: "unreadable" })), "unknown")
      assert.strictEqual(
        Membership.liveness({ ...leader, bootId: "boot-b" }, host, table({ 100: running("1000") })),
        "dead"
      )
    })

    it("a signal goes only to the recorded, live process, never to the host or init", () => {
      assert.strictEqual(Membership.signalVerdict(leader, host, table({ 100: running("1000") })), "send")
      assert.strictEqual(Membership.signalVerdict(leader, host, table({ 100: running("1001") })), "gone")
      assert.strictEqual(Membership.signalVerdict(leader, host, table({ 100: "unreadable" })), "not-ours")
      const self = { ...leader, pid: host.pid }
      assert.strictEqual(Membership.signalVerdict(self, host, table({ 50: running("1000") })), "not-ours")
      for (const pid of [1, 0, -5]) {
        assert.strictEqual(
          Membership.signalVerdict({ ...leader, pid }, host, table({ [pid]: running("1000") })),
          "not-ours"
        )
      }
    })
  })
})
