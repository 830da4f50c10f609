// The roost demo page, built on the JavaScript client (roost-client from sdk/js; its minified
// bundle is roost-client.js beside this file). It uses only the public API, through whichever
// router served it: the room WebSocket (through the client), GET /v1/cluster and
// GET /v1/rooms/{room}.
import { connect, trackPresence } from "./roost-client.js";

const $ = (id) => document.getElementById(id);
const wsBase = (location.protocol === "https:" ? "wss://" : "ws://") + location.host;
const params = new URLSearchParams(location.search);

function newID() {
  const b = crypto.getRandomValues(new Uint8Array(8)); // randomUUID needs a secure context
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// addLine adds a line of parts: [class, text] pairs, each a span (a class of "" is plain text).
// Everything goes in as text, never as HTML: what a message, a client id or a seq says is shown,
// not run.
function addLine(parts, cls, id) {
  const li = document.createElement("li");
  if (cls) li.className = cls;
  if (id) li.dataset.id = id;
  for (const [partClass, text] of parts) {
    if (!partClass) {
      li.append(document.createTextNode(String(text)));
      continue;
    }
    const span = document.createElement("span");
    span.className = partClass;
    span.textContent = String(text);
    li.append(span);
  }
  const box = $("messages");
  const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
  box.append(li);
  if (atBottom) box.scrollTop = box.scrollHeight;
}
const note = (text) => addLine([["", text]], "note");

// The chat room: the whole history the room keeps (since=0), then live, with presence. The
// client reconnects, resumes and re-sends by itself; the page only draws what it is handed.
let chat = null;
let joins = 0; // the latest join; an older one that finishes later is dropped

function renderPresence(members) {
  $("presence").innerHTML = [...members.members].sort().map((c) => `<li>${esc(c)}</li>`).join("");
  $("count").textContent = `(${members.count})`;
}

// showStatus says where the chat is. The node is the one that welcomed the connection, or the
// owner the cluster view found since: through a router a connection survives its room's move
// without a new welcome.
function showStatus(room, node = room.node) {
  const s = $("status");
  if (room.state === "open") {
    s.textContent = `in ${room.name} on node ${node} · epoch ${room.epoch} · seq ${room.seq}`;
    s.dataset.node = node;
  } else if (room.state === "connecting") {
    s.textContent = `disconnected from ${room.name}; reconnecting…`;
  }
  $("text").disabled = $("send").disabled = room.state !== "open";
}

async function join(room, name) {
  const mine = ++joins;
  chat?.close();
  chat = null;
  $("text").disabled = $("send").disabled = true;
  $("messages").innerHTML = $("presence").innerHTML = $("count").textContent = "";
  $("status").textContent = `joining ${room}…`;
  let r;
  try {
    r = await connect(wsBase, room, { presence: true, client: name, since: 0 });
  } catch (err) {
    if (mine === joins) $("status").textContent = `could not join ${room}: ${err.message}`;
    return;
  }
  if (mine !== joins) return r.close();
  chat = r;
  r.on("state", () => showStatus(r));
  r.on("message", (m) => {
    document.querySelector(`#messages li[data-id="${CSS.escape(m.id || "")}"]`)?.remove(); // our own, now sequenced
    const text = m.bytes ? `(${m.bytes.length} bytes)` : typeof m.data === "object" && m.data !== null ? m.data.text ?? JSON.stringify(m.data) : JSON.stringify(m.data);
    addLine([["seq", m.seq], ["who", m.client ?? ""], ["", text]], "msg");
    showStatus(r, $("status").dataset.node);
  });
  trackPresence(r, renderPresence);
  r.on("gap", (g) => note(`messages ${g.from}–${g.to} are no longer kept and will not arrive`));
  r.on("reset", () => note("the room restarted (its owner was lost): earlier messages may be missing"));
  r.on("error", (e) => note(e.code === 4401 || e.code === 4403 ? `refused: ${e.message}` : e.message));
  showStatus(r);
  watchOwner(room);
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
  const id = newID(); // to find our line again when the message comes back sequenced
  addLine([["seq", "…"], ["who", chat.client], ["", text]], "pending", id);
  chat.publish({ text }, { id }).catch((err) => {
    document.querySelector(`#messages li[data-id="${id}"]`)?.remove();
    note(`not sent: ${err.message}`);
  });
  $("text").value = "";
});

// The live stream: binary frames "RPX1", width, height (uint16), frame number (uint32), then
// one grey byte per pixel, as roost dev's demo source sends them.
const streamRoom = params.get("stream") || "demo-stream";
$("stream-room").textContent = streamRoom;
let frames = 0, firstFrameAt = 0;

function draw(seq, view) {
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
}

async function watchStream() {
  for (;;) {
    try {
      const r = await connect(wsBase, streamRoom, { client: `viewer-${newID()}` });
      r.on("message", (m) => m.bytes && draw(m.seq, new DataView(m.bytes.buffer, m.bytes.byteOffset, m.bytes.byteLength)));
      r.on("state", (s) => s === "connecting" && ($("stream-status").textContent = "reconnecting…"));
      return;
    } catch (err) {
      $("stream-status").textContent = `no stream yet (${err.message}); trying again…`;
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
}
watchStream();

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
      `<td>${esc(m.role === "node" ? (c.rooms?.[m.id] ?? 0) : "–")}</td><td>${esc(m.conns ?? 0)}</td></tr>`).join("");
    const rows = await Promise.all([...watched].map(async (room) => [room, await owner(room).catch(() => "?")]));
    const mine = chat && rows.find(([room]) => room === chat.name);
    if (mine && chat.state === "open" && mine[1] !== $("status").dataset.node && !/^[(?]/.test(mine[1])) showStatus(chat, mine[1]);
    $("owners").innerHTML = rows.map(([room, node]) => `<tr><td>${esc(room)}</td><td>${esc(node)}</td></tr>`).join("");
  } catch (e) {
    $("ring").textContent = `cluster unreachable: ${e.message}`;
  }
}
setInterval(refreshCluster, 1000);
refreshCluster();
if (params.get("room")) join($("room").value, $("name").value);
