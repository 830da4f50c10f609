// roost-client: connect to a roost room from a browser or Node 20+.
//
//   import { connect } from "roost-client";
//   const room = await connect("ws://127.0.0.1:8080", "lobby", { presence: true });
//   room.on("message", (m) => console.log(m.seq, m));
//   await room.publish({ text: "hi" });

import { RoostError } from "./errors.js";
import { Room, type ConnectOptions } from "./room.js";
import { httpBase, roomName } from "./url.js";

/**
 * connect joins room through url (a router's or node's address, or several to try in turn) and
 * resolves with the Room once the server has welcomed it. It rejects with a RoostError: code 4401
 * or 4403 when the token is refused, "timeout" when no connection worked within opts.timeout.
 */
export async function connect(url: string | string[], room: string, opts: ConnectOptions = {}): Promise<Room> {
  if (!roomName.test(room)) throw new RoostError("bad_room", `bad room name ${JSON.stringify(room)}: 1-128 of A-Z a-z 0-9 . _ : -`);
  const bases = [url].flat().map(httpBase);
  if (!bases.length) throw new TypeError("roost: no address");
  return new Room(bases, room, opts).start();
}

export { Room, RoostError };
export { trackPresence, type Members } from "./presence.js";
export type { ConnectOptions, PublishOptions, RoomEvents, State, TokenSupplier } from "./room.js";
export type { BinaryMessage, GapEvent, JsonMessage, Message, PresenceEvent, ResetEvent } from "./frames.js";
export type { WebSocketConstructor } from "./link.js";
export type { BackoffOptions } from "./backoff.js";
