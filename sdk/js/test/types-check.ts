// Compiled (not run) by `npm run typecheck`: the README's usage type-checks against the
// published declarations, with `ws` as the WebSocket in Node.
import WebSocket from "ws";
import { connect, trackPresence, type Message, RoostError } from "roost-client";

const room = await connect("ws://127.0.0.1:8080", "lobby", { presence: true, WebSocket, token: async () => "t", client: "ann", since: 0, epoch: "" });
room.on("message", (m: Message) => ("bytes" in m ? m.bytes.byteLength : m.data));
room.on("presence", (p) => p.count);
room.on("reset", (r) => r.epoch);
room.on("gap", (g) => g.to - g.from);
room.on("state", (s) => s === "open");
room.on("error", (e) => e instanceof RoostError && e.code === 4401);
const { seq }: { seq: number } = await room.publish({ text: "hi" }, { id: "optional-id" });
await room.publish(new Uint8Array([1]));
const members = trackPresence(room, (m) => m.members.has("ann"));
console.log(seq, room.seq, room.epoch, room.state, room.client, room.node, members.count);
room.close();
