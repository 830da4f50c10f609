// Publish frames: a JSON publish under its id, or binary bytes, checked against the server's
// limits before anything is sent.

import { RoostError } from "./errors.js";
import { newID } from "./id.js";

const maxIDLen = 256; // the server's limit on publish ids

/**
 * encodePublish turns data into what goes on the wire: bytes (a Uint8Array or ArrayBuffer, copied
 * so the caller may reuse its buffer) as a binary frame with no id, anything else as a JSON
 * publish under id (a random one when empty). It throws a RoostError for what the server would
 * refuse.
 */
export function encodePublish(data: unknown, id: string | undefined, maxFrame: number): { id: string; frame: string | Uint8Array } {
  if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) {
    if (id) throw new RoostError("bad_request", "binary publishes take no id");
    const bytes = ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : new Uint8Array(data);
    return { id: "", frame: fit(bytes, maxFrame).slice() };
  }
  id ||= newID();
  if (id.length > maxIDLen) throw new RoostError("bad_request", `publish id over ${maxIDLen} characters`);
  let json: string | undefined;
  try {
    json = JSON.stringify(data);
  } catch {
    // a cycle or a BigInt: reported below
  }
  if (json === undefined) throw new RoostError("bad_request", "publish data is not a JSON value");
  const frame = `{"type":"publish","id":${JSON.stringify(id)},"data":${json}}`;
  fit(new TextEncoder().encode(frame), maxFrame);
  return { id, frame };
}

function fit(b: Uint8Array, max: number): Uint8Array {
  if (b.byteLength > max) throw new RoostError("too_large", `a publish of ${b.byteLength} bytes is over maxFrame (${max})`);
  return b;
}
