// npm runs `prepare` here on `npm ci` in this folder and when another project installs it with
// `npm install path/to/sdk/js`: it builds dist/ and types/ (which git does not keep). Such an
// install links this folder without its dev dependencies, so the compiler is installed first
// when it is missing.
import { execSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL("..", import.meta.url));
if (!existsSync(`${here}/node_modules/typescript/package.json`)) {
  execSync("npm ci --ignore-scripts --no-audit --no-fund", { cwd: here, stdio: "inherit" });
}
execSync("npm run build", { cwd: here, stdio: "inherit" });
