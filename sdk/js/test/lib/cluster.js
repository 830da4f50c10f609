// A real roost cluster for the tests: node and router processes of the built binary, on
// 127.0.0.1 with free ports. Every process is killed when its cluster stops, when this test
// process exits, and, through a watchdog shell, when this process dies without exiting cleanly.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createSocket } from "node:dgram";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { eventually } from "./wait.js";

const binary = process.env.ROOST_BIN || fileURLToPath(new URL("../../../../bin/roost", import.meta.url));
const live = new Set(); // pids of roost processes this test process started

process.on("exit", () => {
  for (const pid of live) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone already
    }
  }
});

// The watchdog: runs roost in the background, prints its pid, then its exit status; when this
// process's end of stdin closes (it exited or died), it kills roost.
const watchdog = 'exec 3<&0 2>/dev/null; "$@" >"$ROOST_LOG" 2>&1 </dev/null & p=$!; echo "$p"; (cat <&3 >/dev/null; kill -9 "$p" 2>/dev/null) & wait "$p"; echo "exit $?"';

async function freePort(udpToo) {
  for (let i = 0; i < 50; i++) {
    const port = await new Promise((resolve, reject) => {
      const s = createServer();
      s.once("error", reject);
      s.listen(0, "127.0.0.1", () => {
        const { port } = s.address();
        s.close(() => resolve(port));
      });
    });
    if (!udpToo) return port;
    const ok = await new Promise((resolve) => {
      const u = createSocket("udp4");
      u.once("error", () => resolve(false));
      u.bind(port, "127.0.0.1", () => u.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  throw new Error("no free port");
}

/** A roost process. */
export class Proc {
  constructor(role, id, dir) {
    Object.assign(this, { role, id, log: join(dir, `${id}.log`) });
  }

  async start(join, extra) {
    if (!existsSync(binary)) throw new Error(`no roost binary at ${binary}: run make build (or set ROOST_BIN)`);
    this.gossip = `127.0.0.1:${await freePort(true)}`;
    this.http = `127.0.0.1:${await freePort(false)}`;
    const args = [this.role, "--id", this.id, "--gossip", this.gossip, "--http", this.http, "--log-level", "warn", "--max-addr-conns", "100000"];
    if (this.role === "node") args.push("--tcp", `127.0.0.1:${await freePort(false)}`);
    if (join) args.push("--join", join);
    args.push(...extra);
    this.sh = spawn("/bin/sh", ["-c", watchdog, "sh", binary, ...args], {
      stdio: ["pipe", "pipe", "inherit"],
      env: { ...process.env, ROOST_LOG: this.log },
    });
    let out = "";
    this.exited = new Promise((resolve) => {
      this.sh.stdout.on("data", (b) => {
        out += b;
        const lines = out.split("\n");
        if (!this.pid && lines.length > 1) {
          this.pid = Number(lines[0]);
          live.add(this.pid);
        }
        const end = lines.find((l) => l.startsWith("exit "));
        if (end) {
          live.delete(this.pid);
          resolve(Number(end.slice(5)));
        }
      });
      this.sh.on("exit", () => resolve(-1));
    });
    // Up when it answers HTTP; a lost race for a port shows as an exit.
    let status = null;
    this.exited.then((s) => (status = s));
    await eventually(10_000, `${this.id} serves HTTP`, async () => status !== null || (await get(`${this.url}/healthz`)) !== null);
    if (status !== null) return readFileSync(this.log, "utf8").includes("address already in use") ? "retry" : this.fail(`exited with ${status}`);
    return "up";
  }

  get url() {
    return `http://${this.http}`;
  }

  get ws() {
    return `ws://${this.http}`;
  }

  signal(sig) {
    if (this.pid && live.has(this.pid)) process.kill(this.pid, sig);
  }

  async stop() {
    this.signal("SIGKILL");
    if (this.sh) {
      await this.exited;
      this.sh.stdin.end();
    }
  }

  logText() {
    return existsSync(this.log) ? readFileSync(this.log, "utf8") : "";
  }

  fail(why) {
    throw new Error(`roost ${this.role} ${this.id} ${why}; its log:\n${this.logText()}`);
  }
}

/** get is the JSON answer of a GET, or null. */
export async function get(url) {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(2000) });
    return r.ok ? await r.json() : null;
  } catch {
    return null;
  }
}

/**
 * startCluster starts `nodes` node processes and, with router, one router, all joined, and
 * waits until every one of them places rooms on the same ring of `nodes` nodes. extra: flags
 * for every process; nodeExtra: for the nodes only.
 */
export async function startCluster({ nodes = 3, router = true, extra = [], nodeExtra = [] } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "roost-js-"));
  const procs = [];
  const c = {
    nodes: [],
    router: null,
    procs,
    async stop() {
      await Promise.all(procs.map((p) => p.stop()));
      rmSync(dir, { recursive: true, force: true });
    },
    /** logs is every process's log, for a failed test's report. */
    logs() {
      return procs.map((p) => `--- ${p.id}\n${p.logText()}`).join("\n");
    },
  };
  try {
    const add = async (role, id) => {
      for (let attempt = 0; ; attempt++) {
        const p = new Proc(role, id, dir);
        procs.push(p);
        const seed = c.nodes[0]?.gossip ?? "";
        if ((await p.start(seed, role === "node" ? [...extra, ...nodeExtra] : extra)) === "up" || attempt === 4) return p;
      }
    };
    for (let i = 1; i <= nodes; i++) c.nodes.push(await add("node", `n${i}`));
    if (router) c.router = await add("router", "r1");
    await eventually(20_000, `the processes agree on a ring of ${nodes} nodes`, async () => {
      const views = await Promise.all([...c.nodes, ...(c.router ? [c.router] : [])].map((p) => get(`${p.url}/v1/cluster`)));
      return views.every((v) => v && Object.keys(v.rooms).length === nodes && v.ring === views[0].ring);
    });
  } catch (err) {
    await c.stop();
    throw err;
  }
  return c;
}

/** ownerOf is the id of the node that owns room, as base answers. */
export async function ownerOf(base, room) {
  return (await get(`${base}/v1/rooms/${room}`))?.node;
}
