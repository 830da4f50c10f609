// Random publish ids. crypto.getRandomValues exists in every browser context (randomUUID needs a
// secure one) and in Node 20.

export function newID(): string {
  const b = new Uint8Array(16);
  globalThis.crypto.getRandomValues(b);
  let s = "";
  for (const x of b) s += x.toString(16).padStart(2, "0");
  return s;
}
