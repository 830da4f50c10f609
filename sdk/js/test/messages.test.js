// Publish and receive through a router and directly: order, acks once, dedupe of a repeated id,
// binary frames, and the frames that arrive before the caller attaches its handlers.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import WebSocket from "ws";
import { connect } from "../dist/index.js";
import { startCluster } from "./lib/cluster.js";
import { Recorder } from "./lib/record.js";

let cluster;
const rooms = [];
before(async () => {
  cluster = await startCluster({ nodes: 3 });
});
after(async () => {
  for (const r of rooms) r.close();
  await cluster?.stop();
});

function join(base, room, opts = {}) {
  return connect(base, room, { WebSocket, ...opts }).then((r) => (rooms.push(r), r));
}

test("messages arrive in publish order, once, with the seq each publish resolved with", async () => {
  const room = "order";
  const sub = new Recorder(await join(cluster.router.ws, room));
  const pub = await join(cluster.nodes[0].ws, room); // a node that may not own it: the client finds the owner
  const mine = new Recorder(pub);
  const n = 200;
  const acks = await Promise.all(Array.from({ length: n }, (_, i) => pub.publish({ i })));
  await sub.until(10_000, `${n} messages`, (r) => r.messages.length >= n);
  await mine.until(10_000, `the publisher's own ${n} messages`, (r) => r.messages.length >= n);
  sub.assertContiguous("subscriber");
  assert.deepEqual(sub.messages.map((m) => m.data.i), Array.from({ length: n }, (_, i) => i), "delivered in publish order");
  assert.deepEqual(acks.map((a) => a.seq), sub.messages.map((m) => m.seq), "each publish resolved with its message's seq");
  assert.deepEqual(mine.messages.map((m) => m.seq), sub.messages.map((m) => m.seq), "the publisher sees its own messages too");
  assert.equal(pub.seq, acks.at(-1).seq);
  assert.equal(sub.room.seq, acks.at(-1).seq);
  assert.ok(sub.room.epoch, "an epoch after the welcome");
});

test("a repeated id is acked with its first seq and delivered once", async () => {
  const room = "dedupe";
  const sub = new Recorder(await join(cluster.router.ws, room));
  const pub = await join(cluster.router.ws, room);
  const first = await pub.publish({ n: 1 }, { id: "only-once" });
  const again = await pub.publish({ n: 2 }, { id: "only-once" });
  const [c1, c2] = await Promise.all([pub.publish({ n: 3 }, { id: "twin" }), pub.publish({ n: 4 }, { id: "twin" })]);
  const end = await pub.publish({ end: true });
  assert.equal(again.seq, first.seq, "the retry is acked with the original seq");
  assert.equal(c2.seq, c1.seq, "two publishes in flight under one id are one publish");
  await sub.untilMessage(10_000, "the end marker", (d) => d.end);
  assert.deepEqual(sub.messages.map((m) => m.id), ["only-once", "twin", sub.messages[2].id]);
  assert.deepEqual(sub.messages.map((m) => m.seq), [first.seq, c1.seq, end.seq]);
  assert.deepEqual(sub.messages[0].data, { n: 1 }, "the first publish under an id is the one delivered");
});

test("binary publishes arrive as bytes with their seq", async () => {
  const room = "binary";
  const sub = new Recorder(await join(cluster.router.ws, room));
  const pub = await join(cluster.router.ws, room);
  const payloads = [new Uint8Array([0, 1, 2, 255]), new Uint8Array(70_000).map((_, i) => i % 251), new Uint8Array([7]).buffer];
  const acks = await Promise.all(payloads.map((p) => pub.publish(p)));
  const json = await pub.publish({ after: "binary" });
  await sub.until(10_000, "3 binary messages and a JSON one", (r) => r.messages.length >= 4);
  assert.deepEqual(acks.map((a) => a.seq), sub.messages.slice(0, 3).map((m) => m.seq), "binary publishes resolve in order");
  for (const [i, p] of payloads.entries()) {
    const m = sub.messages[i];
    assert.ok(m.bytes instanceof Uint8Array, `message ${i} is binary`);
    assert.deepEqual([...m.bytes], [...new Uint8Array(p)], `payload ${i} intact`);
  }
  assert.equal(sub.messages[3].seq, json.seq);
  sub.assertContiguous("binary and JSON share one sequence");
  await assert.rejects(pub.publish(new Uint8Array(2 << 20)), { code: "too_large" }, "over --max-frame: refused before sending");
});

test("the replay of a resume is delivered to handlers attached after connect resolves", async () => {
  const room = "replay";
  const pub = await join(cluster.router.ws, room);
  const acks = [];
  for (let i = 0; i < 5; i++) acks.push(await pub.publish({ i }));
  // since=0: the whole history; nothing may be emitted before `await` hands the room back.
  const late = await join(cluster.router.ws, room, { since: 0 });
  const rec = new Recorder(late);
  await rec.until(10_000, "the 5 replayed messages", (r) => r.messages.length >= 5);
  assert.deepEqual(rec.messages.map((m) => m.seq), acks.map((a) => a.seq));
  assert.deepEqual(rec.of("state"), ["open"]);

  // A later connect resumes exactly after what the first one was handed.
  const { seq, epoch } = late;
  late.close();
  const more = [await pub.publish({ i: 5 }), await pub.publish({ i: 6 })];
  const resumed = new Recorder(await join(cluster.nodes[1].ws, room, { since: seq, epoch }));
  await resumed.until(10_000, "the 2 messages published while away", (r) => r.messages.length >= 2);
  assert.deepEqual(resumed.messages.map((m) => m.seq), more.map((a) => a.seq));
  assert.equal(resumed.of("reset").length + resumed.of("gap").length, 0, "no reset or gap for a resume in the same epoch");
});

test("close rejects what is still waiting and ends the room", async () => {
  const r = await join(cluster.router.ws, "closing");
  const rec = new Recorder(r);
  r.close();
  await assert.rejects(r.publish({ late: true }), { name: "RoostError", code: "closed" });
  await rec.until(5_000, "the closed state", (x) => x.of("state").includes("closed"));
  assert.equal(r.state, "closed");
  await assert.rejects(connect(cluster.router.ws, "bad room!", { WebSocket }), { code: "bad_room" });
});

test("publishes over the server's rate are retried until acked, each delivered once", async () => {
  // A node takes a burst of 200 publishes per connection, then 100/s: 300 at once makes it
  // refuse some as rate_limited, which the client sends again after a backoff.
  const room = "rate";
  const sub = new Recorder(await join(cluster.router.ws, room));
  const pub = await join(cluster.router.ws, room);
  const n = 300;
  const acks = await Promise.all(Array.from({ length: n }, (_, i) => pub.publish({ i })));
  await sub.until(20_000, `${n} messages`, (r) => r.messages.length >= n);
  sub.assertContiguous("subscriber");
  assert.deepEqual(new Set(sub.messages.map((m) => m.data.i)).size, n, "each publish delivered once");
  const seqOf = new Map(sub.messages.map((m) => [m.data.i, m.seq]));
  assert.deepEqual(acks.map((a) => a.seq), acks.map((_, i) => seqOf.get(i)), "each publish resolved with its message's seq");
  const metrics = await Promise.all(cluster.nodes.map((n) => fetch(`${n.url}/metrics`).then((r) => r.text())));
  const limited = metrics.join("\n").match(/^roost_refused_total\{reason="rate_limited"\} (\d+)/m);
  assert.ok(Number(limited?.[1]) > 0, "the server did refuse some as rate_limited");
});
