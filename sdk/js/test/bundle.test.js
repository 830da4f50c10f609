// The demo page's copy of the client (router/web/roost-client.js, committed because Go's embed
// cannot reach sdk/js) must be what `npm run bundle` makes from the source now, and small.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { gzipSync } from "node:zlib";
import { bundlePath, makeBundle } from "../scripts/bundle.js";

test("the committed demo bundle is built from the current source", async () => {
  const fresh = await makeBundle();
  const committed = readFileSync(bundlePath);
  assert.ok(committed.equals(fresh), "router/web/roost-client.js is out of date: run `npm run bundle` in sdk/js and commit it");
});

test("the minified bundle is at most 10 KB", async () => {
  const b = await makeBundle();
  const gz = gzipSync(b, { level: 9 }).length;
  assert.ok(b.length <= 10 * 1024, `the bundle is ${b.length} bytes minified (${gz} gzipped), over 10 KB`);
});
