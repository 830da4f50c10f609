// The server's frames as the client sees them, and their decoding. Field names are the wire's.

export interface Welcome {
  type: "welcome";
  room: string;
  node: string;
  client: string;
  epoch: string;
  seq: number;
  count: number;
}

/** A room message with a JSON value. `id` tells a publisher which messages were its own. */
export interface JsonMessage {
  seq: number;
  client: string;
  id: string;
  data: unknown;
}

/** A binary room message (a binary publish or a TCP stream frame). */
export interface BinaryMessage {
  seq: number;
  bytes: Uint8Array;
}

export type Message = JsonMessage | BinaryMessage;

/** A presence frame, as the server sends it (only to connections that asked with presence). */
export interface PresenceEvent {
  type: "presence";
  event: "state" | "join" | "leave" | "interval";
  /** join, leave: the member. */
  client?: string;
  /** state: the members (capped at the server's announce limit). */
  clients?: string[];
  /** interval: who joined and left since the last summary. */
  joined?: string[];
  left?: string[];
  /** The exact member count. */
  count: number;
}

/** Messages from..to (inclusive) are no longer kept and will never arrive. */
export interface GapEvent {
  from: number;
  to: number;
}

/** The room's numbering restarted (its state was lost): what was missed is unknown. */
export interface ResetEvent {
  epoch: string;
  seq: number;
}

export interface Ack {
  type: "ack";
  id: string;
  seq: number;
}

export interface ErrorFrame {
  type: "error";
  code: string;
  error: string;
  id?: string;
}

export type TextFrame =
  | Welcome
  | ({ type: "message" } & JsonMessage)
  | Ack
  | PresenceEvent
  | ({ type: "gap" } & GapEvent)
  | ({ type: "reset" } & ResetEvent)
  | ErrorFrame;

/** decodeText parses a text frame; null for one that is not a JSON object with a type. */
export function decodeText(text: string): TextFrame | null {
  try {
    const f = JSON.parse(text);
    return typeof f?.type === "string" ? (f as TextFrame) : null;
  } catch {
    return null;
  }
}

/** decodeBinary splits a binary frame into its 8-byte big-endian seq and its payload. */
export function decodeBinary(buf: ArrayBuffer): BinaryMessage | null {
  if (buf.byteLength < 8) return null;
  const view = new DataView(buf);
  return { seq: view.getUint32(0) * 2 ** 32 + view.getUint32(4), bytes: new Uint8Array(buf, 8) };
}
