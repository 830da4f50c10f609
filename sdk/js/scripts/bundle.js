// Builds the minified ESM bundle the demo page loads (router/web/roost-client.js, committed:
// Go's embed cannot reach sdk/js). `--check` builds it in memory and fails when the committed
// file differs, so a source change without `npm run bundle` is caught (test/bundle.test.js).
import { build } from "esbuild";
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

export const bundlePath = fileURLToPath(new URL("../../../router/web/roost-client.js", import.meta.url));

/** makeBundle returns the bundle's bytes. */
export async function makeBundle() {
  const out = await build({
    entryPoints: [fileURLToPath(new URL("../src/index.ts", import.meta.url))],
    bundle: true,
    minify: true,
    format: "esm",
    target: "es2022",
    legalComments: "none",
    banner: { js: "// roost-client: built from sdk/js by npm run bundle" },
    write: false,
    logLevel: "silent",
  });
  return Buffer.from(out.outputFiles[0].contents);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const b = await makeBundle();
  if (process.argv.includes("--check")) {
    const same = readFileSync(bundlePath, { flag: "r" }).equals(b);
    console.log(same ? "router/web/roost-client.js is up to date" : "router/web/roost-client.js is out of date: run npm run bundle in sdk/js");
    process.exit(same ? 0 : 1);
  }
  writeFileSync(bundlePath, b);
  console.log(`router/web/roost-client.js: ${b.length} bytes minified, ${gzipSync(b, { level: 9 }).length} gzipped`);
}
