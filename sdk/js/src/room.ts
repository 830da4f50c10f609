// A Room is one membership of one room that outlives its connections. It reconnects by itself
// (capped, jittered backoff), resumes after the last seq it received in the room's epoch, sends
// unacknowledged publishes again under their ids, and hands the application each message once,
// in seq order, asynchronously (see Emitter).

import { backoff, type BackoffOptions } from "./backoff.js";
import { Emitter } from "./emitter.js";
import { refusal, RoostError } from "./errors.js";
import type { BinaryMessage, GapEvent, Message, PresenceEvent, ResetEvent, TextFrame, Welcome } from "./frames.js";
import { encodePublish } from "./encode.js";
import { Link, type LinkEnd, type WebSocketConstructor } from "./link.js";
import { Outbox } from "./outbox.js";
import { Route } from "./route.js";
import { withQuery } from "./url.js";

export type State = "connecting" | "open" | "closed";

/** The events of a Room and what their listeners get. */
export interface RoomEvents {
  message: Message;
  presence: PresenceEvent;
  reset: ResetEvent;
  gap: GapEvent;
  state: State;
  /** A refusal nothing else reports: a final close (4401, 4403) or an error frame for no publish. */
  error: RoostError;
}

/** A token, or a function giving the current one; it is called before every (re)connect. */
export type TokenSupplier = () => string | Promise<string>;

export interface ConnectOptions {
  /** Receive presence frames (default false). */
  presence?: boolean;
  /** The JWT, when the cluster has auth on; a function is asked again on every reconnect. */
  token?: string | TokenSupplier;
  /** A stable client id, kept across reconnects (default: the server makes one up). */
  client?: string;
  /** Resume after this seq (of `epoch`): the messages after it are replayed first. */
  since?: number;
  /** The epoch `since` belongs to, as room.epoch gave it. */
  epoch?: string;
  /** The WebSocket class where there is no global one (Node: `import WebSocket from "ws"`). */
  WebSocket?: WebSocketConstructor;
  /** The fetch used to look owners up (default: the global fetch). */
  fetch?: typeof globalThis.fetch;
  /** Reconnect pacing (default 100 ms doubling to 5 s, jittered). */
  backoff?: BackoffOptions;
  /** ms the first connect may take before connect() rejects (default 15000). */
  timeout?: number;
  /** ms one connection attempt may take to its welcome (default 10000). */
  handshakeTimeout?: number;
  /** The largest frame the server takes, bytes (its --max-frame, default 1 MiB). */
  maxFrame?: number;
}

export interface PublishOptions {
  /** The publish id; the room acks a repeated id once (default: a random one). */
  id?: string;
}

export class Room {
  /** The room's name. */
  readonly name: string;
  readonly #opts: ConnectOptions;
  readonly #WS: WebSocketConstructor;
  readonly #emitter = new Emitter<RoomEvents>();
  readonly #outbox: Outbox;
  readonly #route: Route;

  // Where the stream of frames received stands, for resuming and dropping repeats; `known` is
  // false until a welcome (or `since`) gives a position.
  #rx: { seq: number; epoch: string; known: boolean };
  // Where the application stands: what it has been handed (room.seq, room.epoch).
  #app = { seq: 0, epoch: "" };
  #link: Link | null = null;
  #links = 0; // the number of the current link
  #retries = 0; // failed attempts since the last welcome
  #current: State = "connecting";
  #opened = false;
  #ended: RoostError | null = null; // why the room ended, once it has
  #wake: (() => void) | null = null;
  #clientID: string;
  #nodeID = "";
  #ready: { resolve(r: Room): void; reject(e: RoostError): void } | null = null;

  /** @internal Use connect(). */
  constructor(bases: string[], name: string, opts: ConnectOptions) {
    this.name = name;
    this.#opts = opts;
    const WS = opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) throw new TypeError("roost: no global WebSocket; pass { WebSocket } from the ws package");
    this.#WS = WS;
    this.#route = new Route(bases, name, opts.fetch ?? globalThis.fetch);
    this.#outbox = new Outbox((frame) => (this.#link?.send(frame) ? this.#links : 0));
    this.#clientID = opts.client ?? "";
    const since = opts.since;
    this.#rx = { seq: since ?? 0, epoch: (since !== undefined && opts.epoch) || "", known: since !== undefined };
  }

  /** The last seq handed to the application (where a later connect may resume, with epoch). */
  get seq(): number {
    return this.#app.seq;
  }

  /** The epoch room.seq belongs to. */
  get epoch(): string {
    return this.#app.epoch;
  }

  /** "connecting", "open" or "closed". */
  get state(): State {
    return this.#current;
  }

  /** This client's id in the room (its presence identity), once welcomed. */
  get client(): string {
    return this.#clientID;
  }

  /** The node that welcomed the current connection (through a router: the owner when it joined). */
  get node(): string {
    return this.#nodeID;
  }

  on<K extends keyof RoomEvents>(type: K, fn: (event: RoomEvents[K]) => void): () => void {
    return this.#emitter.on(type, fn);
  }

  off<K extends keyof RoomEvents>(type: K, fn: (event: RoomEvents[K]) => void): void {
    this.#emitter.off(type, fn);
  }

  /**
   * publish sends data to the room: any JSON value, or bytes (a Uint8Array or ArrayBuffer) as a
   * binary message. It resolves once, with the seq the room gave the message. A JSON publish is
   * sent again under its id after a reconnect until acknowledged, and delivered once.
   */
  async publish(data: unknown, opts: PublishOptions = {}): Promise<{ seq: number }> {
    if (this.#ended) throw this.#ended;
    const { id, frame } = encodePublish(data, opts.id, this.#opts.maxFrame ?? 1 << 20);
    return this.#outbox.add(id, frame);
  }

  /** close leaves the room for good; publishes still waiting reject with code "closed". */
  close(): void {
    this.#end(new RoostError("closed", "the room is closed"), false);
  }

  /** @internal start runs the connection loop; it resolves with the first welcome. */
  start(): Promise<Room> {
    const p = new Promise<Room>((resolve, reject) => (this.#ready = { resolve, reject }));
    void this.#run();
    return p;
  }

  async #run(): Promise<void> {
    const deadline = Date.now() + (this.#opts.timeout ?? 15000);
    let hurried = false; // the last attempt was made at once, without a backoff
    let last: LinkEnd = { code: 0, reason: "", welcomed: false };
    while (!this.#ended) {
      last = await this.#dial().catch((err) => ({ code: 0, reason: String(err), welcomed: false })); // the token supplier failed
      if (this.#ended) return;
      const refused = refusal(last.code, last.reason);
      if (refused) return this.#end(refused, true);
      if (!this.#opened && Date.now() >= deadline) {
        return this.#end(new RoostError("timeout", `could not join ${this.name} (${last.code || ""} ${last.reason || "no connection"})`), true);
      }
      if (last.welcomed) hurried = false;
      let now = false;
      // 4001: the room moved; 1001 from a node: it is going away. Either way, find the owner.
      if (last.code === 4001 || (last.code === 1001 && this.#route.isDirect)) now = await this.#route.relocate();
      else if (!last.welcomed) now = await this.#route.failed();
      if (this.#ended) return;
      if (now && !hurried) {
        hurried = true;
        continue;
      }
      hurried = false;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, backoff(this.#retries++, this.#opts.backoff));
        this.#wake = () => (clearTimeout(t), resolve());
      });
      this.#wake = null;
    }
  }

  // dial makes one connection and resolves when it ends.
  async #dial(): Promise<LinkEnd> {
    const token = typeof this.#opts.token === "function" ? await this.#opts.token() : this.#opts.token;
    if (this.#ended) return { code: 0, reason: "closed", welcomed: false };
    const url = withQuery(this.#route.url(), {
      client: this.#clientID,
      presence: this.#opts.presence ? "1" : "",
      since: this.#rx.known ? String(this.#rx.seq) : "",
      epoch: this.#rx.epoch, // "" until known
      token,
    });
    const n = ++this.#links;
    return new Promise<LinkEnd>((resolve) => {
      this.#link = new Link(this.#WS, url, this.#opts.handshakeTimeout ?? 10000, {
        welcome: (w) => this.#welcome(w, n),
        frame: (f) => this.#frame(f, n),
        binary: (m) => this.#deliver(m),
        end: (e) => {
          this.#link = null;
          if (e.welcomed) {
            this.#outbox.broke();
            if (!this.#ended) this.#setState("connecting");
          }
          resolve(e);
        },
      });
    });
  }

  #welcome(w: Welcome, link: number): void {
    this.#nodeID = w.node;
    this.#clientID = w.client;
    if (!this.#rx.known) this.#rx = { seq: w.seq, epoch: w.epoch, known: true };
    else if (!this.#rx.epoch) this.#rx.epoch = w.epoch;
    if (!this.#opened) this.#app = { seq: this.#rx.seq, epoch: this.#rx.epoch };
    this.#retries = 0;
    this.#outbox.opened(link);
    this.#setState("open");
    if (!this.#opened) {
      this.#opened = true;
      this.#ready?.resolve(this);
      this.#ready = null;
      this.#emitter.release();
    }
  }

  #frame(f: TextFrame, link: number): void {
    switch (f.type) {
      case "message":
        this.#deliver({ seq: f.seq, client: f.client, id: f.id ?? "", data: f.data });
        break;
      case "ack":
        this.#outbox.acked(f, link);
        break;
      case "presence":
        this.#emitter.emit("presence", f);
        break;
      case "gap": {
        const g = { from: f.from, to: f.to };
        this.#rx.seq = Math.max(this.#rx.seq, g.to);
        this.#emitter.emit("gap", g, () => (this.#app.seq = Math.max(this.#app.seq, g.to)));
        break;
      }
      case "reset": {
        // The server goes on with what the room holds of the new epoch, from its start.
        const r = { epoch: f.epoch, seq: f.seq };
        this.#rx = { seq: 0, epoch: r.epoch, known: true };
        this.#emitter.emit("reset", r, () => (this.#app = { seq: 0, epoch: r.epoch }));
        break;
      }
      case "error":
        if (!this.#outbox.refused(f, link)) this.#emitter.emit("error", new RoostError(f.code, f.error, f.id));
        break;
    }
  }

  // deliver hands a message on, unless it was already received (a replay after a reconnect).
  #deliver(m: Message | BinaryMessage): void {
    if (m.seq <= this.#rx.seq) return;
    this.#rx.seq = m.seq;
    const epoch = this.#rx.epoch;
    this.#emitter.emit("message", m, () => (this.#app = { seq: m.seq, epoch }));
  }

  #setState(s: State): void {
    if (s === this.#current) return;
    this.#current = s;
    this.#emitter.emit("state", s);
  }

  // end stops the room for good: by close() or a refusal no reconnect can fix (failed).
  #end(err: RoostError, failed: boolean): void {
    if (this.#ended) return;
    this.#ended = err;
    this.#wake?.();
    this.#link?.close();
    this.#link = null;
    this.#outbox.fail(err);
    if (this.#ready) {
      this.#current = "closed";
      this.#ready.reject(err);
      this.#ready = null;
      return;
    }
    if (failed) this.#emitter.emit("error", err);
    this.#setState("closed");
  }
}

