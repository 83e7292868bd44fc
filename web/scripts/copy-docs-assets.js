// Copy Swagger UI's browser assets from the swagger-ui-dist package into dist/swagger-ui/,
// after `vite build` (which empties dist/). `podflow serve` serves them there, so its API
// docs at /docs load nothing from the network: air-gapped clusters get a working page.
// Usage (from web/): node scripts/copy-docs-assets.js [outDir]   (default: dist)
import { copyFileSync, existsSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const FILES = [
  "swagger-ui-bundle.js",
  "swagger-ui.css",
  "favicon-32x32.png",
  "LICENSE",
  "NOTICE",
];

const here = dirname(fileURLToPath(import.meta.url));
const outDir = resolve(here, "..", process.argv[2] ?? "dist", "swagger-ui");
const require = createRequire(import.meta.url);
const pkgDir = dirname(require.resolve("swagger-ui-dist/package.json"));
const { version } = require("swagger-ui-dist/package.json");

mkdirSync(outDir, { recursive: true });
for (const name of FILES) {
  const from = join(pkgDir, name);
  if (!existsSync(from)) {
    console.error(`copy-docs-assets: ${from} is missing (reinstall with: npm ci)`);
    process.exit(1);
  }
  copyFileSync(from, join(outDir, name));
}
console.log(`copy-docs-assets: swagger-ui-dist ${version} -> ${outDir}`);
