// Presence: the helper keeps the live member set from the state, join and leave frames; the
// state frame that arrives with the welcome is not lost to handlers attached after connect.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import WebSocket from "ws";
import { connect, trackPresence } from "../dist/index.js";
import { startCluster } from "./lib/cluster.js";
import { Recorder } from "./lib/record.js";

let cluster;
const rooms = [];
before(async () => {
  cluster = await startCluster({ nodes: 2 });
});
after(async () => {
  for (const r of rooms) r.close();
  await cluster?.stop();
});

function join(room, client, opts = {}) {
  return connect(cluster.router.ws, room, { WebSocket, client, ...opts }).then((r) => (rooms.push(r), r));
}

test("the presence helper keeps the live member set", async () => {
  const room = "presence";
  const ann = await join(room, "ann", { presence: true });
  const members = trackPresence(ann); // before the recorder: its checks run after the helper's update
  const rec = new Recorder(ann);
  const has = (...names) => (r) => names.every((n) => members.members.has(n)) && members.members.size === names.length;
  await rec.until(10_000, "ann alone", has("ann"));
  assert.equal(rec.of("presence")[0].event, "state", "the state frame, sent with the welcome, is the first event");

  const bob = await join(room, "bob"); // no presence frames for bob, but bob is a member
  const bobs = new Recorder(bob);
  await rec.until(10_000, "ann and bob", has("ann", "bob"));
  assert.equal(members.count, 2);
  const bob2 = await join(room, "bob"); // a second connection of one client is one member
  const cat = await join(room, "cat", { presence: true });
  const cats = new Recorder(cat);
  await rec.until(10_000, "ann, bob and cat", has("ann", "bob", "cat"));
  await cats.until(10_000, "cat's first presence frame", (r) => r.of("presence").length > 0);
  const first = cats.of("presence")[0];
  assert.equal(first.event, "state");
  assert.deepEqual([...first.clients].sort(), ["ann", "bob", "cat"], "a newcomer's first state names everyone");

  bob.close();
  cat.close();
  await rec.until(10_000, "cat gone, bob still here on his second connection", has("ann", "bob"));
  bob2.close();
  await rec.until(10_000, "bob gone with his last connection", has("ann"));
  assert.equal(members.count, 1);
  assert.deepEqual(bobs.of("presence"), [], "a connection without presence gets no presence frames");
});
