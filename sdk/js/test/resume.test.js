// A dropped socket (no close frame, as when a network fails): the client reconnects by itself,
// resumes after the last seq it had, and re-sends the publishes it had no ack for under their
// ids, so nothing is missed, repeated or reordered.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import WebSocket from "ws";
import { connect } from "../dist/index.js";
import { startCluster } from "./lib/cluster.js";
import { startProxy } from "./lib/proxy.js";
import { Recorder } from "./lib/record.js";

let cluster, proxy;
const rooms = [];
before(async () => {
  cluster = await startCluster({ nodes: 2 });
  proxy = await startProxy(cluster.router.http);
});
after(async () => {
  for (const r of rooms) r.close();
  await proxy?.close();
  await cluster?.stop();
});

function join(base, room, opts = {}) {
  return connect(base, room, { WebSocket, backoff: { min: 20, max: 200 }, ...opts }).then((r) => (rooms.push(r), r));
}

test("a subscriber whose socket drops resumes where it was", async () => {
  const room = "resume-sub";
  const sub = new Recorder(await join(proxy.ws, room));
  const pub = await join(cluster.router.ws, room);
  for (let i = 0; i < 20; i++) await pub.publish({ i });
  await sub.until(10_000, "the first 20 messages", (r) => r.messages.length >= 20);
  proxy.cut();
  const acks = [];
  for (let i = 20; i < 60; i++) acks.push(await pub.publish({ i })); // published while it reconnects
  await sub.until(10_000, "all 60 messages", (r) => r.messages.length >= 60);
  const end = await pub.publish({ end: true });
  await sub.untilMessage(10_000, "the end marker", (d) => d.end);
  sub.assertContiguous("the resumed subscriber");
  assert.deepEqual(sub.messages.map((m) => m.data.i ?? "end"), [...Array.from({ length: 60 }, (_, i) => i), "end"]);
  assert.equal(sub.room.seq, end.seq);
  assert.deepEqual(sub.of("state"), ["open", "connecting", "open"], "it noticed the drop and came back");
  assert.equal(sub.of("gap").length + sub.of("reset").length, 0);
});

test("publishes whose acks were lost are sent again under their ids and delivered once", async () => {
  const room = "resume-pub";
  const sub = new Recorder(await join(cluster.router.ws, room));
  const pub = await join(proxy.ws, room);
  const mine = new Recorder(pub);
  await pub.publish({ warmup: true });
  // The server's answers stop reaching the publisher: its publishes are sequenced, their acks lost.
  proxy.hold();
  const n = 30;
  const pending = Array.from({ length: n }, (_, i) => pub.publish({ i }, i % 2 ? { id: `given-${i}` } : {}));
  let settled = 0;
  for (const p of pending) p.then(() => settled++, () => settled++);
  await sub.until(10_000, `the room sequenced all ${n} publishes`, (r) => r.messages.length >= n + 1);
  assert.equal(settled, 0, "no publish resolved while its ack was held back");
  proxy.cut(); // the publisher reconnects and re-sends all 30 under the same ids
  const acks = await Promise.all(pending);
  const end = await pub.publish({ end: true });
  await sub.untilMessage(10_000, "the end marker", (d) => d.end);
  await mine.untilMessage(10_000, "the publisher's end marker", (d) => d.end);
  sub.assertContiguous("subscriber");
  mine.assertContiguous("publisher");
  assert.equal(sub.messages.length, n + 2, "each publish delivered once");
  assert.deepEqual(acks.map((a) => a.seq), sub.messages.slice(1, n + 1).map((m) => m.seq), "each publish resolved once, with its first seq");
  assert.deepEqual(sub.messages.slice(1, n + 1).map((m) => m.data.i), Array.from({ length: n }, (_, i) => i));
  assert.equal(sub.messages[2].id, "given-1");
  assert.equal(end.seq, sub.messages.at(-1).seq);
});

test("a room resumed with a lost epoch gets a reset, never a repeat", async () => {
  const room = "resume-epoch";
  const pub = await join(cluster.router.ws, room);
  const a = await pub.publish({ i: 0 });
  const rec = new Recorder(await join(cluster.router.ws, room, { since: a.seq, epoch: "no-such-epoch" }));
  await rec.until(10_000, "a reset", (r) => r.of("reset").length === 1);
  await rec.until(10_000, "the new epoch's history", (r) => r.messages.length >= 1);
  assert.equal(rec.of("reset")[0].epoch, pub.epoch);
  assert.equal(rec.room.epoch, pub.epoch, "room.epoch follows the reset");
  assert.deepEqual(rec.messages.map((m) => m.seq), [a.seq]);
});
