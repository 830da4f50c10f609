// Auth on (--auth-hmac-secret): tokens minted here with HS256. Refusals reach the caller as a
// RoostError carrying the close code (4401, 4403) or the error frame's code (forbidden), the
// client does not retry a refused token in a loop, and a token supplier is asked again on
// every reconnect.
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { after, before, test } from "node:test";
import WebSocket from "ws";
import { connect } from "../dist/index.js";
import { startCluster } from "./lib/cluster.js";
import { startProxy } from "./lib/proxy.js";
import { Recorder } from "./lib/record.js";
import { within } from "./lib/wait.js";

const secret = "test-secret-that-is-long-enough-for-hs256";
let cluster, proxy;
const rooms = [];
before(async () => {
  cluster = await startCluster({ nodes: 1, extra: ["--auth-hmac-secret", secret, "--cluster-secret", "sdk-auth-test-cluster-secret"] });
  proxy = await startProxy(cluster.router.http);
});
after(async () => {
  for (const r of rooms) r.close();
  await proxy?.close();
  await cluster?.stop();
});

const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
function mint(claims, key = secret) {
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ exp: Math.floor(Date.now() / 1000) + 600, ...claims })}`;
  return `${body}.${createHmac("sha256", key).update(body).digest("base64url")}`;
}

// Dials counts the WebSockets a client opens, to show a refusal is not retried.
function counting() {
  const c = { dials: 0 };
  c.WebSocket = class extends WebSocket {
    constructor(...args) {
      super(...args);
      c.dials++;
    }
  };
  return c;
}

async function refused(base, room, token, code) {
  const c = counting();
  const err = await within(10_000, `connect refused with ${code}`, connect(base, room, { WebSocket: c.WebSocket, token }).then(
    () => assert.fail(`connect with a bad token to ${room} resolved`),
    (e) => e,
  ));
  assert.equal(err.name, "RoostError");
  assert.equal(err.code, code, `close code of ${err.message}`);
  assert.equal(c.dials, 1, "a refused token is not retried");
}

test("a missing, expired or wrongly signed token is refused with 4401", async () => {
  for (const base of [cluster.router.ws, cluster.nodes[0].ws]) {
    await refused(base, "auth-room", undefined, 4401);
    await refused(base, "auth-room", mint({ sub: "ann", rooms: ["auth-room"], exp: Math.floor(Date.now() / 1000) - 60 }), 4401);
    await refused(base, "auth-room", mint({ sub: "ann", rooms: ["auth-room"] }, "another-secret-another-secret-x"), 4401);
  }
});

test("a token for other rooms is refused with 4403", async () => {
  await refused(cluster.router.ws, "auth-room", mint({ sub: "ann", rooms: ["other", "team-*"] }), 4403);
  await refused(cluster.nodes[0].ws, "auth-room", mint({ sub: "ann", rooms: ["other"] }), 4403);
});

test("a read-only token reads, and its publish is refused with forbidden", async () => {
  const room = "team-read";
  const writer = await connect(cluster.router.ws, room, { WebSocket, token: mint({ sub: "w", rooms: ["team-*"], pub: true }) });
  const reader = await connect(cluster.router.ws, room, { WebSocket, token: mint({ sub: "r", rooms: [room] }) });
  rooms.push(writer, reader);
  const rec = new Recorder(reader);
  await assert.rejects(reader.publish({ no: true }), (e) => e.name === "RoostError" && e.code === "forbidden");
  const { seq } = await writer.publish({ yes: true });
  await rec.until(10_000, "the writer's message", (r) => r.messages.some((m) => m.seq === seq));
  assert.equal(rec.messages.length, 1, "the refused publish was not delivered");
  assert.equal(reader.state, "open", "the connection stays open");
  assert.equal(reader.client, "r", "the token's sub is the client's identity");
});

test("the token supplier is asked on every reconnect; a refused refresh ends the room with 4401", async () => {
  const room = "team-refresh";
  const c = counting();
  const tokens = [mint({ sub: "ann", rooms: [room], pub: true }), mint({ sub: "ann", rooms: [room], pub: true }), mint({ sub: "ann", rooms: [room], exp: 1 })];
  let asked = 0;
  const ann = await connect(proxy.ws, room, { WebSocket: c.WebSocket, token: async () => tokens[asked++], backoff: { min: 20, max: 100 } });
  rooms.push(ann);
  const rec = new Recorder(ann);
  proxy.cut();
  await rec.until(10_000, "back after the drop", (r) => r.of("state").join() === "open,connecting,open");
  assert.equal(asked, 2, "a fresh token for the reconnect");
  await ann.publish({ after: "refresh" });
  proxy.cut(); // the next token has expired
  await rec.until(10_000, "the room ends with the refusal", (r) => r.of("state").includes("closed"));
  const [err] = rec.of("error");
  assert.equal(err?.code, 4401, "the refusal is emitted as an error with its close code");
  assert.equal(asked, 3);
  assert.equal(c.dials, 3, "no reconnect after the refusal");
  await assert.rejects(ann.publish({ too: "late" }), { code: 4401 });
});
