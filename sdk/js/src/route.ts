// Where the next connection goes. A client normally dials its base address (a router, or a node
// that owns the room). When it talks to nodes directly, it follows the room itself: a non-owner
// node answers the upgrade with a redirect that browsers and `ws` do not follow, and a draining
// owner closes with 4001; then the owner is looked up with GET /v1/rooms/{room} and dialed.

import { httpBase, isNode, ownerURL, roomPath, wsForm } from "./url.js";

type Fetch = typeof globalThis.fetch;

export class Route {
  #at = 0; // the base dialed while there is no direct owner
  #direct: string | null = null; // the owner's ws URL, when talking to nodes
  #nodes = new Map<string, boolean>(); // base → whether it is a node, once known

  readonly #bases: string[];
  readonly #room: string;
  readonly #fetch: Fetch;

  constructor(bases: string[], room: string, fetch: Fetch) {
    this.#bases = bases;
    this.#room = room;
    this.#fetch = fetch;
  }

  /** url is the WebSocket URL of the next dial, without its query. */
  url(): string {
    return this.#direct ?? roomPath(wsForm(this.#bases[this.#at]), this.#room, "/ws");
  }

  /** isDirect reports whether the client dials a node it looked up itself. */
  get isDirect(): boolean {
    return this.#direct !== null;
  }

  /**
   * relocate looks the owner up again (the room moved, or its node is going away). It asks the
   * node the client was on first, as a draining node still answers with the new owner, then the
   * bases. It reports whether there is a new URL worth dialing at once.
   */
  async relocate(): Promise<boolean> {
    const was = this.url();
    const ask = this.#direct ? [httpBase(this.#direct.replace(/\/v1\/rooms\/.*$/, ""))] : [];
    this.#direct = await ownerURL(this.#fetch, [...new Set([...ask, ...this.#bases])], this.#room);
    if (!this.#direct) this.#next();
    return this.url() !== was;
  }

  /**
   * failed says a dial of url() ended before its welcome. A failed owner is looked up again; a
   * base that turns out to be a non-owner node is asked for the owner. A router's failure is
   * only waited out (the nodes behind it may be unreachable from here). It reports whether there
   * is a new URL worth dialing at once.
   */
  async failed(): Promise<boolean> {
    if (this.#direct) return this.relocate();
    const base = this.#bases[this.#at];
    const node = this.#nodes.get(base) ?? (await isNode(this.#fetch, base));
    if (node !== null) this.#nodes.set(base, node);
    if (node) return this.relocate();
    this.#next();
    return false;
  }

  #next(): void {
    this.#at = (this.#at + 1) % this.#bases.length;
  }
}
