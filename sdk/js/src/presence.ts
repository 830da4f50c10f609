// The presence helper: the live member set of a room, kept from its presence frames. A room
// connected with { presence: true } gets a "state" frame on every (re)connect, which replaces
// the set, then joins and leaves (or, in a large room, interval summaries).

import type { PresenceEvent } from "./frames.js";

/** The part of a Room the tracker needs. */
interface PresenceSource {
  on(type: "presence", fn: (p: PresenceEvent) => void): () => void;
}

export interface Members {
  /** The members the server has named (in a room over its announce limit, not all of them). */
  readonly members: ReadonlySet<string>;
  /** The exact member count. */
  readonly count: number;
  /** stop detaches the tracker from the room. */
  stop(): void;
}

/**
 * trackPresence keeps the member set of a room connected with { presence: true }. onChange runs
 * after each presence frame has been applied.
 */
export function trackPresence(room: PresenceSource, onChange?: (m: Members) => void): Members {
  const members = new Set<string>();
  const tracker = { members, count: 0, stop: () => {} };
  tracker.stop = room.on("presence", (p) => {
    apply(members, p);
    tracker.count = p.count;
    onChange?.(tracker);
  });
  return tracker;
}

function apply(members: Set<string>, p: PresenceEvent): void {
  switch (p.event) {
    case "state":
      members.clear();
      for (const c of p.clients ?? []) members.add(c);
      break;
    case "join":
      if (p.client) members.add(p.client);
      break;
    case "leave":
      if (p.client) members.delete(p.client);
      break;
    case "interval":
      for (const c of p.joined ?? []) members.add(c);
      for (const c of p.left ?? []) members.delete(c);
      break;
  }
}
