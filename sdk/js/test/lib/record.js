// A Recorder keeps everything a Room emits, and lets a test wait until what it kept satisfies a
// condition (re-checked on every event, with a deadline).
import assert from "node:assert/strict";

export class Recorder {
  constructor(room) {
    this.room = room;
    this.messages = [];
    this.events = []; // [type, value] of every event, in order
    this.waiters = new Set();
    for (const type of ["message", "presence", "reset", "gap", "state", "error"]) {
      room.on(type, (v) => {
        if (type === "message") this.messages.push(v);
        this.events.push([type, v]);
        for (const w of this.waiters) w();
      });
    }
  }

  /** until resolves once cond(this) holds; it rejects after ms, saying what it waited for. */
  until(ms, what, cond) {
    if (cond(this)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!cond(this)) return;
        done();
        resolve();
      };
      const t = setTimeout(() => {
        done();
        reject(new Error(`timed out after ${ms} ms waiting for: ${what} (last events: ${JSON.stringify(this.events.slice(-5).map(([t, v]) => [t, v?.seq ?? v?.event ?? v]))})`));
      }, ms);
      const done = () => {
        clearTimeout(t);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
    });
  }

  /** untilMessage waits for a JSON message whose data satisfies pred, and returns it. */
  async untilMessage(ms, what, pred) {
    await this.until(ms, what, (r) => r.messages.some((m) => "data" in m && pred(m.data)));
    return this.messages.find((m) => "data" in m && pred(m.data));
  }

  of(type) {
    return this.events.filter(([t]) => t === type).map(([, v]) => v);
  }

  /** assertContiguous checks the messages have strictly increasing seqs, each one more than the last. */
  assertContiguous(what) {
    const seqs = this.messages.map((m) => m.seq);
    for (let i = 1; i < seqs.length; i++) {
      assert.equal(seqs[i], seqs[i - 1] + 1, `${what}: seq ${seqs[i]} follows ${seqs[i - 1]} (a hole, a repeat or a reorder) in ${seqs.join(",")}`);
    }
  }
}
