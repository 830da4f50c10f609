// The roost demo page. It uses only the public API: GET /v1/cluster, GET /v1/rooms/{room} and
// the room WebSocket, through whichever router served this page.
"use strict";

const $ = (id) => document.getElementById(id);
const wsBase = (location.protocol === "https:" ? "wss://" : "ws://") + location.host;
const params = new URLSearchParams(location.search);

function newID() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  return Array.from({ length: 4 }, () => Math.floor(Math.random() * 2 ** 32).toString(16)).join("");
}

// RoomConn is one room membership that survives disconnects: it reconnects by itself, resuming
// after the last seq it saw in the room's epoch, and re-sends publishes not yet acked under the
// same id (the room acks a repeated id once and never delivers it twice).
class RoomConn {
  // history: start with what the room still keeps (since=0) rather than live.
  constructor(room, client, on, history = false) {
    Object.assign(this, { room, client, on, lastSeq: history ? 0 : null, epoch: "", closed: false, delay: 100 });
    this.pending = new Map(); // id → data, until acked
    this.open();
  }

  open() {
    const q = new URLSearchParams({ client: this.client, presence: "1" });
    if (this.lastSeq !== null) {
      q.set("since", String(this.lastSeq));
      q.set("epoch", this.epoch);
    }
    const ws = new WebSocket(`${wsBase}/v1/rooms/${encodeURIComponent(this.room)}/ws?${q}`);
    ws.binaryType = "arraybuffer";
    ws.onmessage = (ev) => this.frame(ev.data);
    ws.onclose = (ev) => {
      if (this.closed || ws !== this.ws) return;
      this.on.status(`disconnected (${ev.code}${ev.reason ? " " + ev.reason : ""}); reconnecting…`, false);
      setTimeout(() => { if (!this.closed) this.open(); }, this.delay);
      this.delay = Math.min(this.delay * 2, 2000);
    };
    this.ws = ws;
  }

  frame(data) {
    if (typeof data !== "string") {
      const view = new DataView(data);
      const seq = Number(view.getBigUint64(0));
      if (this.lastSeq !== null && seq <= this.lastSeq) return; // already seen before a reconnect
      this.lastSeq = seq;
      this.on.binary?.(seq, new DataView(data, 8));
      return;
    }
    const f = JSON.parse(data);
    switch (f.type) {
      case "welcome":
        this.delay = 100;
        this.epoch = f.epoch;
        if (this.lastSeq === null) this.lastSeq = f.seq;
        this.on.welcome?.(f);
        for (const [id, d] of this.pending) this.send(id, d);
        break;
      case "message":
        if (this.lastSeq !== null && f.seq <= this.lastSeq) return;
        this.lastSeq = f.seq;
        this.on.message?.(f);
        break;
      case "ack":
        this.pending.delete(f.id);
        this.on.ack?.(f);
        break;
      case "presence":
        this.on.presence?.(f);
        break;
      case "gap":
        this.on.note?.(`messages ${f.from}–${f.to} are no longer kept and will not arrive`);
        break;
      case "reset":
        this.epoch = f.epoch;
        this.lastSeq = 0; // the room's numbering restarted; what it still holds follows
        this.on.note?.("the room restarted (its owner was lost): earlier messages may be missing");
        break;
      case "error":
        if (f.code === "rate_limited" && this.pending.has(f.id)) {
          setTimeout(() => this.pending.has(f.id) && this.send(f.id, this.pending.get(f.id)), 500);
          break;
        }
        this.on.note?.(`refused: ${f.error}`);
        break;
    }
  }

  publish(data) {
    const id = newID();
    this.pending.set(id, data);
    this.send(id, data);
    return id;
  }

  send(id, data) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: "publish", id, data }));
  }

  close() {
    this.closed = true;
    this.ws.close(1000);
  }
}

// The chat room.
let chat = null;
const members = new Map(); // client → count of its connections we know of

function addLine(html, cls, id) {
  const li = document.createElement("li");
  if (cls) li.className = cls;
  if (id) li.dataset.id = id;
  li.innerHTML = html;
  const box = $("messages");
  const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
  box.append(li);
  if (atBottom) box.scrollTop = box.scrollHeight;
}

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function renderPresence(count) {
  $("presence").innerHTML = [...members.keys()].sort().map((c) => `<li>${esc(c)}</li>`).join("");
  $("count").textContent = `(${count ?? members.size})`;
}

function join(room, name) {
  chat?.close();
  $("messages").innerHTML = "";
  members.clear();
  renderPresence(0);
  $("status").textContent = `joining ${room}…`;
  chat = new RoomConn(room, name, {
    status: (text) => { $("status").textContent = text; },
    welcome: (w) => {
      $("status").textContent = `in ${w.room} on node ${w.node} · epoch ${w.epoch} · seq ${w.seq}`;
      $("status").dataset.node = w.node;
      $("text").disabled = $("send").disabled = false;
      watchOwner(room);
    },
    message: (m) => {
      const mine = document.querySelector(`#messages li[data-id="${CSS.escape(m.id || "")}"]`);
      mine?.remove();
      const text = typeof m.data === "object" && m.data !== null ? m.data.text ?? JSON.stringify(m.data) : JSON.stringify(m.data);
      addLine(`<span class="seq">${m.seq}</span><span class="who">${esc(m.client)}</span>${esc(text)}`, "msg", null);
    },
    presence: (p) => {
      if (p.event === "state") { members.clear(); (p.clients || []).forEach((c) => members.set(c, 1)); }
      if (p.event === "join") members.set(p.client, 1);
      if (p.event === "leave") members.delete(p.client);
      if (p.event === "interval") { (p.joined || []).forEach((c) => members.set(c, 1)); (p.left || []).forEach((c) => members.delete(c)); }
      renderPresence(p.count);
    },
    note: (text) => addLine(esc(text), "note"),
  }, true);
}

$("name").value = params.get("name") || localStorage.getItem("roost-name") || `guest-${Math.floor(Math.random() * 1000)}`;
$("room").value = params.get("room") || "lobby";
$("join").addEventListener("submit", (e) => {
  e.preventDefault();
  localStorage.setItem("roost-name", $("name").value);
  join($("room").value, $("name").value);
});
$("say").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  if (!text || !chat) return;
  const id = chat.publish({ text });
  addLine(`<span class="seq">…</span><span class="who">${esc(chat.client)}</span>${esc(text)}`, "pending", id);
  $("text").value = "";
});

// The live stream: binary frames "RPX1", width, height (uint16), frame number (uint32), then
// one grey byte per pixel, as roost dev's demo source sends them.
const streamRoom = params.get("stream") || "demo-stream";
$("stream-room").textContent = streamRoom;
let frames = 0, firstFrameAt = 0;
new RoomConn(streamRoom, `viewer-${newID().slice(0, 8)}`, {
  status: (text) => { $("stream-status").textContent = text; },
  binary: (seq, view) => {
    if (view.byteLength < 12 || String.fromCharCode(...new Uint8Array(view.buffer, view.byteOffset, 4)) !== "RPX1") return;
    const w = view.getUint16(4), h = view.getUint16(6), n = view.getUint32(8);
    if (view.byteLength < 12 + w * h) return;
    const canvas = $("picture");
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(w, h);
    const grey = new Uint8Array(view.buffer, view.byteOffset + 12, w * h);
    for (let i = 0; i < grey.length; i++) {
      img.data[4 * i] = grey[i]; img.data[4 * i + 1] = grey[i] * 0.8; img.data[4 * i + 2] = 255 - grey[i]; img.data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    frames++;
    if (!firstFrameAt) firstFrameAt = performance.now();
    const fps = frames / Math.max((performance.now() - firstFrameAt) / 1000, 1);
    $("stream-status").textContent = `frame ${n} · seq ${seq} · ${fps.toFixed(1)} fps`;
    $("stream-status").dataset.frames = String(frames);
  },
});

// The cluster view, refreshed every second.
const watched = new Set([streamRoom]);
function watchOwner(room) { watched.add(room); refreshCluster(); }

async function owner(room) {
  // The router redirects to the owner, which answers with its coordinates.
  const r = await fetch(`/v1/rooms/${encodeURIComponent(room)}`, { cache: "no-store" });
  return r.ok ? (await r.json()).node : `(${r.status})`;
}

async function refreshCluster() {
  try {
    const c = await (await fetch("/v1/cluster", { cache: "no-store" })).json();
    $("ring").textContent = `ring ${c.ring} · ${c.partitions} partitions · served by ${c.self}`;
    $("members").innerHTML = c.members.map((m) =>
      `<tr class="${esc(m.state)}"><td>${esc(m.id)}</td><td>${esc(m.role)}</td><td>${esc(m.state)}</td>` +
      `<td>${m.role === "node" ? (c.rooms?.[m.id] ?? 0) : "–"}</td><td>${m.conns ?? 0}</td></tr>`).join("");
    const rows = await Promise.all([...watched].map(async (room) => [room, await owner(room).catch(() => "?")]));
    // Through a router a connection survives its room's move without a new welcome: show the
    // owner placement names now.
    const mine = chat && rows.find(([room]) => room === chat.room);
    if (mine && $("status").dataset.node && mine[1] !== $("status").dataset.node && !mine[1].startsWith("(")) {
      $("status").dataset.node = mine[1];
      $("status").textContent = $("status").textContent.replace(/on node \S+/, `on node ${mine[1]}`);
    }
    $("owners").innerHTML = rows.map(([room, node]) => `<tr><td>${esc(room)}</td><td>${esc(node)}</td></tr>`).join("");
  } catch (e) {
    $("ring").textContent = `cluster unreachable: ${e.message}`;
  }
}
setInterval(refreshCluster, 1000);
refreshCluster();
if (params.get("room")) join($("room").value, $("name").value);
