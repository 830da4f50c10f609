// A TCP proxy in front of a roost member, so a test can break a client's connection the way a
// network does: cut() destroys every connection through it (the client sees no close frame),
// hold() stops passing the server's bytes to the client first (so acks are lost in flight).
import { connect, createServer } from "node:net";

export async function startProxy(target) {
  const [host, port] = target.split(":");
  const pairs = new Set();
  const server = createServer((client) => {
    const upstream = connect(Number(port), host);
    const pair = { client, upstream };
    pairs.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const addr = `127.0.0.1:${server.address().port}`;
  return {
    ws: `ws://${addr}`,
    /** count is the number of connections through the proxy now. */
    get count() {
      return pairs.size;
    },
    hold() {
      for (const { upstream } of pairs) {
        upstream.unpipe();
        upstream.pause();
      }
    },
    cut() {
      for (const { client, upstream } of [...pairs]) {
        client.destroy();
        upstream.destroy();
      }
      pairs.clear();
    },
    close() {
      this.cut();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
