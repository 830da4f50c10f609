// One WebSocket connection to a room, from dial to close. A Room makes a new Link for every
// (re)connect; a Link reports the welcome, every frame, and then its end, exactly once.

import { decodeBinary, decodeText, type BinaryMessage, type TextFrame, type Welcome } from "./frames.js";

/** Anything constructed like the browser's WebSocket: the global one, or `ws`'s in Node. */
export type WebSocketConstructor = new (url: string) => object;

// The part of the WebSocket interface the client uses, shared by browsers and `ws`.
interface Socket {
  binaryType: string;
  readyState: number;
  send(data: string | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: { message?: string }) => void) | null;
}

const OPEN = 1;

/** How a Link ended. code 0: no close frame (the dial failed or timed out). */
export interface LinkEnd {
  code: number;
  reason: string;
  welcomed: boolean;
}

export interface LinkHandlers {
  welcome(w: Welcome): void;
  frame(f: TextFrame): void;
  binary(m: BinaryMessage): void;
  end(e: LinkEnd): void;
}

export class Link {
  #ws: Socket | null = null;
  #welcomed = false;
  #ended = false;
  #timer: ReturnType<typeof setTimeout>;

  readonly #h: LinkHandlers;

  constructor(WS: WebSocketConstructor, url: string, handshakeTimeout: number, h: LinkHandlers) {
    this.#h = h;
    this.#timer = setTimeout(() => this.#finish(0, `no welcome within ${handshakeTimeout} ms`), handshakeTimeout);
    try {
      this.#ws = new WS(url) as Socket;
    } catch (err) {
      setTimeout(() => this.#finish(0, String(err)), 0);
      return;
    }
    const ws = this.#ws;
    ws.binaryType = "arraybuffer";
    ws.onmessage = (ev) => this.#receive(ev.data);
    ws.onclose = (ev) => this.#finish(ev.code === 1006 || ev.code === 1005 ? 0 : ev.code, ev.reason || "");
    ws.onerror = () => {}; // a close event follows every error
  }

  /** send writes one frame if the link is open (welcomed, not ended), and reports whether it did. */
  send(data: string | ArrayBufferView): boolean {
    const ok = this.#welcomed && !this.#ended && this.#ws?.readyState === OPEN;
    if (ok) this.#ws!.send(data);
    return ok;
  }

  /** close ends the link without reporting its end: the caller has decided. */
  close(): void {
    if (this.#stop()) this.#ws?.close(1000);
  }

  #receive(data: unknown): void {
    if (this.#ended) return;
    if (typeof data === "string") {
      const f = decodeText(data);
      if (!f) return;
      if (f.type === "welcome" && !this.#welcomed) {
        this.#welcomed = true;
        clearTimeout(this.#timer);
        this.#h.welcome(f);
      } else if (this.#welcomed) {
        this.#h.frame(f);
      }
      return;
    }
    if (data instanceof ArrayBuffer) {
      const m = decodeBinary(data);
      if (m && this.#welcomed) this.#h.binary(m);
    }
  }

  #finish(code: number, reason: string): void {
    if (!this.#stop()) return;
    if (code === 0) this.#ws?.close(1000); // a dial that failed or timed out: abandon it
    this.#h.end({ code, reason, welcomed: this.#welcomed });
  }

  // stop ends the link once: it reports false when it had already ended.
  #stop(): boolean {
    if (this.#ended) return false;
    this.#ended = true;
    clearTimeout(this.#timer);
    if (this.#ws) this.#ws.onmessage = this.#ws.onclose = null;
    return true;
  }
}
