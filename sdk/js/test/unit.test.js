// The pieces that need no server: backoff bounds, publish encoding, addresses, the presence
// helper, the ordering of asynchronous events, and giving up on an address nobody serves.
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { test } from "node:test";
import WebSocket from "ws";
import { backoff } from "../dist/backoff.js";
import { Emitter } from "../dist/emitter.js";
import { encodePublish } from "../dist/encode.js";
import { connect } from "../dist/index.js";
import { trackPresence } from "../dist/presence.js";
import { httpBase, withQuery } from "../dist/url.js";

test("backoff doubles from min, is jittered within [half, all] and capped at max", () => {
  for (let n = 0; n < 40; n++) {
    const ceiling = Math.min(5000, 100 * 2 ** n);
    for (let i = 0; i < 50; i++) {
      const d = backoff(n);
      assert.ok(d >= ceiling / 2 && d <= ceiling, `retry ${n}: ${d} ms outside [${ceiling / 2}, ${ceiling}]`);
    }
  }
  assert.ok(backoff(3, { min: 10, max: 50 }) <= 50);
});

test("publishes encode as the wire's publish frame, with an id, within the frame limit", () => {
  const { id, frame } = encodePublish({ text: "hé" }, undefined, 1 << 20);
  assert.match(id, /^[0-9a-f]{32}$/);
  assert.deepEqual(JSON.parse(frame), { type: "publish", id, data: { text: "hé" } });
  assert.equal(encodePublish(null, "mine", 100).id, "mine");
  const bytes = new Uint8Array([1, 2, 3, 4]);
  const bin = encodePublish(bytes.subarray(1, 3), undefined, 10);
  assert.deepEqual([...bin.frame], [2, 3]);
  assert.equal(bin.id, "");
  bytes[1] = 9;
  assert.deepEqual([...bin.frame], [2, 3], "the bytes are copied");
  assert.throws(() => encodePublish(undefined, "", 100), { code: "bad_request" });
  assert.throws(() => encodePublish(10n, "", 100), { code: "bad_request" });
  assert.throws(() => encodePublish("x".repeat(100), "", 100), { code: "too_large" });
  assert.throws(() => encodePublish({}, "i".repeat(257), 1000), { code: "bad_request" });
  assert.throws(() => encodePublish(bytes, "id", 100), { code: "bad_request" });
});

test("addresses are read in their http form", () => {
  assert.equal(httpBase("ws://127.0.0.1:8080"), "http://127.0.0.1:8080");
  assert.equal(httpBase("wss://roost.example.com/edge/"), "https://roost.example.com/edge");
  assert.equal(httpBase("127.0.0.1:9000"), "http://127.0.0.1:9000");
  for (const bad of ["ftp://x", "ws://h:1/v1/rooms/a/ws", "ws://h:1/?since=1"]) assert.throws(() => httpBase(bad), TypeError, bad);
  assert.equal(withQuery("ws://h/v1/rooms/a/ws", { client: "c 1", since: "0", epoch: "", token: undefined }), "ws://h/v1/rooms/a/ws?client=c+1&since=0");
});

test("the presence helper applies state, join, leave and interval frames", () => {
  const e = new Emitter();
  e.release();
  let changes = 0;
  const m = trackPresence({ on: (t, fn) => e.on(t, fn) }, () => changes++);
  const deliver = (p) => new Promise((r) => (e.emit("presence", p), setTimeout(r, 0)));
  return (async () => {
    await deliver({ type: "presence", event: "state", clients: ["a", "b"], count: 2 });
    await deliver({ type: "presence", event: "join", client: "c", count: 3 });
    await deliver({ type: "presence", event: "leave", client: "a", count: 2 });
    await deliver({ type: "presence", event: "interval", joined: ["d"], left: ["b"], count: 2 });
    assert.deepEqual([...m.members].sort(), ["c", "d"]);
    assert.equal(m.count, 2);
    assert.equal(changes, 4);
    await deliver({ type: "presence", event: "state", clients: ["z"], count: 1 });
    assert.deepEqual([...m.members], ["z"], "a state frame replaces the set");
    m.stop();
  })();
});

test("events are held until released, then delivered in order and never synchronously", async () => {
  const e = new Emitter();
  const got = [];
  e.emit("x", 1);
  e.emit("x", 2);
  e.on("x", (v) => got.push(v));
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(got, [], "held");
  e.release();
  e.emit("x", 3);
  assert.deepEqual(got, [], "not from inside the call");
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(got, [1, 2, 3]);
});

test("connect to an address nobody serves rejects with timeout, after retrying", async () => {
  const port = await new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
  let dials = 0;
  class Counting extends WebSocket {
    constructor(...args) {
      super(...args);
      dials++;
    }
  }
  const started = Date.now();
  await assert.rejects(connect(`ws://127.0.0.1:${port}`, "r", { WebSocket: Counting, timeout: 300, backoff: { min: 10, max: 40 } }), { name: "RoostError", code: "timeout" });
  assert.ok(Date.now() - started < 5000, "it gave up after its timeout");
  assert.ok(dials > 1, `it retried (${dials} dials)`);
});
