// The owner of a room is drained (SIGTERM to its process) while messages are being published.
// Clients connected to nodes directly get a 4001 and follow the room to its new owner; a client
// behind the router keeps its socket. Every one of them sees every message once, in order, with
// no hole and no reset, and every publish resolves once.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import WebSocket from "ws";
import { connect } from "../dist/index.js";
import { ownerOf, startCluster } from "./lib/cluster.js";
import { Recorder } from "./lib/record.js";
import { within } from "./lib/wait.js";

let cluster;
const rooms = [];
before(async () => {
  // Publishing as fast as acks come back is over a node's default rate for one connection (100/s
  // after a burst of 200); this test is about the drain, not the rate limit.
  cluster = await startCluster({ nodes: 3, nodeExtra: ["--publish-rate", "100000", "--publish-burst", "100000"] });
});
after(async () => {
  for (const r of rooms) r.close();
  await cluster?.stop();
});

function join(base, room) {
  return connect(base, room, { WebSocket, backoff: { min: 20, max: 500 } }).then((r) => (rooms.push(r), r));
}

test("draining the owner mid-stream loses, repeats and resets nothing", async () => {
  // A room on n2 or n3, so the direct clients come in through n1, a node that does not own it
  // and stays up: they look the owner up, and look again when it drains.
  let room, owner;
  for (let i = 0; !owner || owner === "n1"; i++) [room, owner] = [`drain-${i}`, await ownerOf(cluster.nodes[0].url, `drain-${i}`)];
  const victim = cluster.nodes.find((n) => n.id === owner);
  const entry = cluster.nodes[0].ws;

  const direct = new Recorder(await join(entry, room));
  const routed = new Recorder(await join(cluster.router.ws, room));
  const pub = await join(entry, room);
  const mine = new Recorder(pub);
  assert.equal(direct.room.node, owner, "the direct client found the owner");

  const n = 400;
  const acks = [];
  let drained = null;
  // Publish with up to 8 in flight; SIGTERM the owner once 100 are acked.
  await within(60_000, `${n} publishes through the drain`, (async () => {
    const inflight = new Set();
    for (let i = 0; i < n; i++) {
      const p = pub.publish({ i }).then((a) => {
        acks[i] = a.seq;
        inflight.delete(p);
      });
      inflight.add(p);
      if (i === 100) {
        await Promise.all(inflight);
        victim.signal("SIGTERM");
        drained = victim.exited;
      }
      if (inflight.size >= 8) await Promise.race(inflight);
    }
    await Promise.all(inflight);
  })());
  assert.ok(await within(40_000, "the drained owner exits", drained) === 0, "the owner drained and exited cleanly");

  const end = await pub.publish({ end: true });
  for (const [name, r] of [["direct", direct], ["routed", routed], ["publisher", mine]]) {
    await r.untilMessage(20_000, `${name}: the end marker`, (d) => d.end);
    r.assertContiguous(name);
    assert.deepEqual(r.messages.map((m) => m.data.i ?? "end"), [...Array.from({ length: n }, (_, i) => i), "end"], `${name}: every message once, in order`);
    assert.equal(r.of("reset").length, 0, `${name}: no reset`);
    assert.equal(r.of("gap").length, 0, `${name}: no gap`);
    assert.equal(r.room.seq, end.seq);
  }
  assert.deepEqual(acks, direct.messages.slice(0, n).map((m) => m.seq), "each publish resolved once, with its message's seq");
  assert.notEqual(direct.room.node, owner, "the direct client moved to the new owner");
  assert.notEqual(pub.node, owner, "so did the publisher");
  assert.deepEqual(routed.of("state"), ["open"], "behind the router the socket stayed open");
});
