// Builds what the package ships: dist/esm (ES modules) and dist/cjs (CommonJS, marked so by a
// package.json of its own, since this package's "type" is "module"), each with its .d.ts.
// Run by `npm run build:package`, and so by `prepare` (a git or path checkout, `npm pack`).
import { execFileSync } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";

const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
for (const [config, dir] of [
  ["tsconfig.esm.json", "dist/esm"],
  ["tsconfig.cjs.json", "dist/cjs"],
]) {
  rmSync(dir, { recursive: true, force: true }); // no module of a deleted source lingers
  execFileSync(process.execPath, [tsc, "-p", config], { stdio: "inherit" });
}
writeFileSync("dist/cjs/package.json", JSON.stringify({ type: "commonjs" }) + "\n");
