// Addresses: the bases a room is reached through, the room's WebSocket URL, and finding a room's
// owner (GET /v1/rooms/{room}) when the client talks to nodes directly.

/** A room name the server accepts: 1-128 bytes of A-Z a-z 0-9 . _ : - */
export const roomName = /^[A-Za-z0-9._:-]{1,128}$/;

/** httpBase reads a base address (ws, wss, http, https or a bare host:port) in its http(s) form. */
export function httpBase(base: string): string {
  const u = new URL(base.includes("://") ? base : "http://" + base);
  if (!/^(http|ws)s?:$/.test(u.protocol) || u.search || u.hash || u.pathname.includes("/v1/")) {
    throw new TypeError(`roost: address ${base}: want a router's or node's ws(s):// or http(s)://host:port`);
  }
  return u.origin.replace(/^ws/, "http") + u.pathname.replace(/\/+$/, "");
}

/** wsForm turns an http(s) URL into its ws(s) twin. */
export function wsForm(url: string): string {
  return url.replace(/^http/, "ws");
}

/** roomPath is a base's URL of the room's endpoint, with suffix ("" or "/ws"). */
export function roomPath(base: string, room: string, suffix = ""): string {
  return `${base}/v1/rooms/${encodeURIComponent(room)}${suffix}`;
}

/** withQuery appends the parameters that are not empty to a URL that has no query. */
export function withQuery(url: string, query: Record<string, string | undefined>): string {
  const q = new URLSearchParams(Object.entries(query).filter((kv): kv is [string, string] => !!kv[1])).toString();
  return q ? `${url}?${q}` : url;
}

type Fetch = typeof globalThis.fetch;

// getJSON is the JSON answer of a GET (redirects followed), or null for any failure. fetch is
// called as a plain function: the global one must not be called as a method of another object.
async function getJSON<T>(fetch: Fetch, url: string): Promise<T | null> {
  try {
    const r = await fetch(url, { headers: { Accept: "application/json" }, signal: AbortSignal.timeout(5000) });
    return r.ok ? ((await r.json()) as T) : null;
  } catch {
    return null;
  }
}

/**
 * ownerURL asks each base in turn which node owns room (the answer follows the 307 redirects to
 * the owner) and returns the owner's WebSocket URL, or null when none answered.
 */
export async function ownerURL(fetch: Fetch, bases: string[], room: string): Promise<string | null> {
  for (const base of bases) {
    const owner = await getJSON<{ ws_url?: string }>(fetch, roomPath(base, room));
    if (owner?.ws_url) return owner.ws_url;
  }
  return null;
}

/**
 * isNode reports whether base is a room-owner node (not a router), from its GET /v1/cluster;
 * null when it cannot tell. A router hides moves from its clients, and the nodes behind it may
 * not be reachable from here, so only a client that talks to nodes looks owners up itself.
 */
export async function isNode(fetch: Fetch, base: string): Promise<boolean | null> {
  const c = await getJSON<{ self?: string; members?: Array<{ id: string; role: string }> }>(fetch, `${base}/v1/cluster`);
  const self = c?.members?.find((m) => m.id === c.self);
  return self ? self.role === "node" : null;
}
