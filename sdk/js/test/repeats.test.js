// The client's own guard against repeats: whatever a server sends, the application never gets a
// seq it already has. A real cluster never repeats itself (resumes start after the last seq),
// so this one server is a stand-in that does.
import assert from "node:assert/strict";
import { test } from "node:test";
import WebSocket, { WebSocketServer } from "ws";
import { connect } from "../dist/index.js";
import { Recorder } from "./lib/record.js";

test("messages at or below the last seq are dropped, text and binary alike", async () => {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((r) => wss.once("listening", r));
  const queries = [];
  wss.on("connection", (ws, req) => {
    queries.push(new URL(req.url, "http://x").searchParams);
    const msg = (seq) => JSON.stringify({ type: "message", seq, client: "c", id: `m${seq}`, data: seq });
    const bin = (seq) => {
      const b = Buffer.alloc(9);
      b.writeBigUInt64BE(BigInt(seq));
      return b;
    };
    ws.send(JSON.stringify({ type: "welcome", room: "r", node: "fake", client: "c", epoch: "e1", seq: 0, count: 1 }));
    if (queries.length === 1) {
      for (const f of [msg(1), msg(2), msg(2), msg(1), bin(2), bin(3), msg(3), msg(4)]) ws.send(f);
      ws.terminate(); // no close frame: the client reconnects and resumes
    } else {
      for (const f of [msg(3), msg(4), bin(5), msg(5), msg(6)]) ws.send(f);
    }
  });
  const room = await connect(`ws://127.0.0.1:${wss.address().port}`, "r", { WebSocket, backoff: { min: 10, max: 20 } });
  const rec = new Recorder(room);
  try {
    await rec.until(10_000, "seq 6", (r) => r.messages.some((m) => m.seq === 6));
    assert.deepEqual(rec.messages.map((m) => m.seq), [1, 2, 3, 4, 5, 6]);
    assert.ok(rec.messages[2].bytes, "seq 3 came first as binary");
    assert.ok(rec.messages[4].bytes, "seq 5 came first as binary");
    assert.equal(queries[1].get("since"), "4", "the reconnect resumes after the last seq received");
    assert.equal(queries[1].get("epoch"), "e1");
    assert.equal(queries[1].get("client"), "c", "under the same client id");
  } finally {
    room.close();
    wss.close();
  }
});
