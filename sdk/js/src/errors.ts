// Errors the client reports: a value with a code, like the server's close codes and error frames.

/**
 * RoostError is every error the client rejects a promise with or emits as "error". `code` is the
 * WebSocket close code (a number: 4401 unauthorized, 4403 forbidden) when the server closed the
 * connection for good, or the `code` of the server's error frame (a string: "forbidden",
 * "rate_limited", ...), or one of the client's own: "closed", "timeout", "too_large",
 * "bad_request", "bad_room", "unconfirmed".
 */
export class RoostError extends Error {
  readonly code: number | string;
  /** The publish id an error frame named, if any. */
  readonly id?: string;

  constructor(code: number | string, message: string, id?: string) {
    super("roost: " + message);
    this.name = "RoostError";
    this.code = code;
    if (id) this.id = id;
  }
}

/**
 * refusal is the error for a close no reconnect can fix, or null: 4401 (the token is missing,
 * malformed, wrongly signed or expired) and 4403 (it does not cover the room).
 */
export function refusal(code: number, reason: string): RoostError | null {
  if (code !== 4401 && code !== 4403) return null;
  return new RoostError(code, `${code === 4401 ? "the token was refused" : "the token does not cover this room"} (close ${code} ${reason})`);
}
