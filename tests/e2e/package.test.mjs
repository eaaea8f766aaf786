// The npm package (www/package.json) ships every module its entry points import: a file left out
// of "files" loads in this repository but fails for whoever installs the package. And the page
// is a client of the package's API: it reaches the worker only through FineTuner.

import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const WWW = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../www");

/** A module's source without its comments (JSDoc's import("../protocol") types are not loaded at run time). */
function code(file) {
  return fs
    .readFileSync(path.join(WWW, file), "utf8")
    .replace(/\/\*[\s\S]*?\*\//g, "")
    .replace(/^\s*\/\/.*$/gm, "");
}

/** Relative imports (static and dynamic) of one module, resolved against it. */
function importsOf(file) {
  const text = code(file);
  const specs = [...text.matchAll(/(?:from\s+|import\s*\(\s*)["'](\.{1,2}\/[^"']+)["']/g)].map((m) => m[1]);
  return specs.map((s) => path.posix.normalize(path.posix.join(path.posix.dirname(file), s)));
}

test("the npm package lists every module its entry points reach", () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(WWW, "package.json"), "utf8"));
  const files = new Set(pkg.files);
  const entries = [pkg.main, ...Object.values(pkg.exports).flatMap((e) => (typeof e === "string" ? [e] : Object.values(e)))]
    .filter((e) => e.endsWith(".js"))
    .map((e) => path.posix.normalize(e));
  const seen = new Set();
  const queue = [...entries];
  while (queue.length) {
    const file = queue.pop();
    if (seen.has(file)) continue;
    seen.add(file);
    // Built files (pkg/, vendor/) may not exist yet: they must be listed all the same.
    if (fs.existsSync(path.join(WWW, file))) queue.push(...importsOf(file));
  }
  const missing = [...seen].filter((f) => !files.has(f) && f !== "package.json");
  assert.deepEqual(missing, [], `reached from ${entries.join(", ")} but not in package.json "files"`);
  // The walk saw the component and its panels, so it followed imports at all.
  assert.ok(seen.has("components/webtune-trainer.js") && seen.has("lib/format.js"), [...seen].join(", "));
});

test("the page reaches the worker only through FineTuner", () => {
  // Every module the page loads, except what it reaches through webtune.js (the API).
  const seen = new Set();
  const queue = ["app.js"];
  while (queue.length) {
    const file = queue.pop();
    if (seen.has(file) || file === "webtune.js") continue;
    seen.add(file);
    queue.push(...importsOf(file));
  }
  assert.ok(importsOf("app.js").includes("webtune.js"), "app.js imports webtune.js");
  assert.ok(seen.has("components/finetune-panel.js") && seen.has("lib/hub.js"), [...seen].join(", "));
  assert.ok(!seen.has("lib/worker-client.js"), "the page imports the worker client itself");
  const talking = [...seen].filter((f) => /new\s+(Shared)?Worker\s*\(|\.postMessage\s*\(/.test(code(f)));
  assert.deepEqual(talking, [], "page modules that start a worker or post to one themselves");
});
