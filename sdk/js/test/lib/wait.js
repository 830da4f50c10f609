// Waiting on conditions, never on sleeps: a condition is polled (or re-checked on each event)
// until it holds or a deadline passes, and the failure says what was awaited.

/** eventually resolves once cond() (sync or async) is true, polling every 20 ms, or throws after ms. */
export async function eventually(ms, what, cond) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** within rejects if p does not settle within ms. */
export function within(ms, what, p) {
  let t;
  const timeout = new Promise((_, reject) => (t = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}
