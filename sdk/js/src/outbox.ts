// Publishes not yet acknowledged. Every JSON publish has an id (one is made up when the caller
// gives none), so one that was in flight when a connection broke is sent again on the next
// under the same id: the room acks a repeated id with its first seq and delivers it once. Each
// publish's promise settles exactly once. Publishes go out in the order they were made; one the
// server refuses as rate_limited holds back every later one until it is sent again, so only
// those already in flight with it can overtake it.
//
// Binary frames carry no id: the server acks them, in order, with an empty id, so they are
// matched oldest first. One that was written on a connection that broke before its ack cannot be
// retried safely, and is rejected as "unconfirmed" (it may or may not have been published).

import { RoostError } from "./errors.js";
import type { Ack, ErrorFrame } from "./frames.js";

import { backoff } from "./backoff.js";

type Frame = string | Uint8Array;

interface Pending {
  key: string; // the publish id, or a private key for a binary publish
  id: string; // "" for binary
  frame: Frame;
  link: number; // the link it was last written on; 0: not written since the last one broke
  settle(err: RoostError | null, seq?: number): void;
  promise: Promise<{ seq: number }>;
}

/** Sends a frame on the current link; it returns that link's number, or 0 if it could not. */
export type Send = (frame: Frame) => number;

export class Outbox {
  // In the order they were last written, which is the order the server answers binaries in.
  #pending = new Map<string, Pending>();
  #binaries = 0;
  #limited = 0; // rate_limited refusals since the last ack
  #held = false; // waiting out a rate_limited refusal
  readonly #send: Send;

  constructor(send: Send) {
    this.#send = send;
  }

  /** add queues a publish (or joins the one in flight with the same id) and sends it if it can. */
  add(id: string, frame: Frame): Promise<{ seq: number }> {
    const key = id || `\0${++this.#binaries}`;
    const known = this.#pending.get(key);
    if (known) return known.promise;
    const p = { key, id, frame, link: 0 } as Pending;
    p.promise = new Promise((resolve, reject) => {
      p.settle = (err, seq = 0) => {
        if (this.#pending.get(key) !== p) return; // settled already
        this.#pending.delete(key);
        if (err) reject(err);
        else resolve({ seq });
      };
    });
    this.#pending.set(key, p);
    if (!this.#held) p.link = this.#send(frame);
    return p.promise;
  }

  /**
   * opened sends, in order, every publish not yet written on the new link. Binary publishes
   * written on a link that broke are rejected first.
   */
  opened(link: number): void {
    for (const p of [...this.#pending.values()]) {
      if (p.id === "" && p.link !== 0 && p.link !== link) {
        p.settle(new RoostError("unconfirmed", "the connection broke before the ack: this binary publish may not be in the room"));
      }
    }
    this.#flush();
  }

  /** broke marks JSON publishes of a broken link to be sent again. */
  broke(): void {
    for (const p of this.#pending.values()) if (p.id !== "") p.link = 0;
  }

  acked(a: Ack, link: number): void {
    this.#limited = 0;
    this.#find(a.id, link)?.settle(null, a.seq);
  }

  /**
   * refused hands an error frame to the publish it names and reports whether there was one. A
   * room that is moving ("room_moved") gets the publish again on the next link; one over the
   * server's rate ("rate_limited") gets it again after a backoff; anything else rejects it.
   */
  refused(f: ErrorFrame, link: number): boolean {
    const p = this.#find(f.id, link);
    if (!p) return false;
    if (f.code === "room_moved") {
      p.link = 0; // sent again on the next link
    } else if (f.code === "rate_limited") {
      p.link = 0;
      if (!this.#held) {
        this.#held = true;
        setTimeout(() => {
          this.#held = false;
          this.#flush();
        }, backoff(++this.#limited, { min: 50, max: 1000 }));
      }
    } else {
      p.settle(new RoostError(f.code, f.error, f.id));
    }
    return true;
  }

  /** fail rejects every publish still waiting, for good. */
  fail(err: RoostError): void {
    for (const p of [...this.#pending.values()]) p.settle(err);
  }

  // flush sends, in order, every publish not written on the current link, moving each to the
  // end: the write order is the order the server answers binary publishes in.
  #flush(): void {
    for (const p of [...this.#pending.values()]) {
      if (this.#held || p.link !== 0) continue;
      const link = this.#send(p.frame);
      if (link === 0) return;
      this.#pending.delete(p.key);
      this.#pending.set(p.key, p);
      p.link = link;
    }
  }

  // find is the publish an answer names: by id, or for an id-less one the oldest binary
  // publish written on this link.
  #find(id: string | undefined, link: number): Pending | undefined {
    if (id) return this.#pending.get(id);
    for (const p of this.#pending.values()) if (p.id === "" && p.link === link) return p;
    return undefined;
  }
}
