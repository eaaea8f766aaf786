// Shared helpers for webtune's browser tests (node --test, playwright-core driving the system
// chromium; browsers are never downloaded). Every wait has a timeout whose message says what was
// being waited for: a wasm panic can leave promises unsettled, and a test must fail, not hang.
//
// Environment (set by `cargo xtask test`):
//   WEBTUNE_URL        the page, served with COOP/COEP/CSP (default http://127.0.0.1:8080/)
//   WEBTUNE_CLI        the native webtune binary (for parity checks)
//   CHROMIUM           chromium executable (default /usr/bin/chromium)
//   WEBTUNE_ARTIFACTS  where screenshots and JSON go (default ./test-artifacts)

import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import zlib from "node:zlib";
import assert from "node:assert/strict";

export const BASE_URL = process.env.WEBTUNE_URL ?? "http://127.0.0.1:8080/";
export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
export const ARTIFACTS = path.resolve(process.env.WEBTUNE_ARTIFACTS ?? "test-artifacts");
export const CLI = process.env.WEBTUNE_CLI ?? null;

// Headless chromium with --enable-unsafe-webgpu exposes a SwiftShader (fallback) WebGPU adapter
// when there is no GPU. Do not add --use-angle=swiftshader or --enable-unsafe-swiftshader: they
// break WebGPU.
export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--enable-unsafe-webgpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];

/** Reject with "timed out after N ms waiting for <what>" unless `promise` settles first. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([Promise.resolve(promise), timeout]).finally(() => clearTimeout(timer));
}

export async function launchBrowser() {
  return withTimeout(
    chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS }),
    60_000,
    `chromium (${CHROMIUM}) to launch`,
  );
}

/** The page URL with query parameters, e.g. `{backend: "cpu"}`. */
export function pageUrl(params = {}) {
  return pageUrlAt("", params);
}

/** A page under WEBTUNE_URL (`pathname` relative to it, e.g. "examples/") with query parameters. */
export function pageUrlAt(pathname, params = {}) {
  const url = new URL(pathname, BASE_URL);
  for (const [key, value] of Object.entries(params)) url.searchParams.set(key, String(value));
  return url.href;
}

export function artifactPath(name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  return path.join(ARTIFACTS, name);
}

export function writeArtifactJson(name, data) {
  fs.writeFileSync(artifactPath(name), JSON.stringify(data, null, 2) + "\n");
}

function slug(text) {
  return text.replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 80) || "test";
}

/**
 * Open the page in a fresh context, recording page errors, console errors (page and workers),
 * worker console output and every request (workers' requests too: they are reported on the
 * context). Returns `{context, page, log, url}`.
 */
export async function openPage(browser, params = {}, attempt = { tries: 0 }, pathname = "") {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const log = {
    pageErrors: [],
    consoleErrors: [],
    console: [],
    workerConsole: [],
    workers: [],
    requests: [],
    failedRequests: [],
    crashed: false,
  };
  context.on("request", (r) => log.requests.push({ url: r.url(), method: r.method(), type: r.resourceType() }));
  context.on("requestfailed", (r) => log.failedRequests.push({ url: r.url(), failure: r.failure()?.errorText ?? "?" }));
  const page = await context.newPage();
  page.on("pageerror", (e) => log.pageErrors.push(String(e?.stack ?? e)));
  page.on("crash", () => (log.crashed = true));
  page.on("worker", (w) => log.workers.push(w.url()));
  // Console messages from dedicated workers arrive on the page too, with `worker()` set.
  page.on("console", (m) => {
    const entry = { type: m.type(), text: m.text() };
    const worker = m.worker();
    if (worker) {
      entry.worker = worker.url();
      log.workerConsole.push(entry);
    } else {
      log.console.push(entry);
    }
    if (m.type() === "error") log.consoleErrors.push(worker ? `[worker] ${m.text()}` : m.text());
  });
  const url = pageUrlAt(pathname, params);
  // Requests still open when a load stalls say which resource held the "load" event.
  const open = new Set();
  page.on("request", (r) => open.add(r.url()));
  page.on("requestfinished", (r) => open.delete(r.url()));
  page.on("requestfailed", (r) => open.delete(r.url()));
  try {
    await withTimeout(page.goto(url, { waitUntil: "load", timeout: 60_000 }), 65_000, `the page ${url} to load`);
  } catch (e) {
    await context.close().catch(() => {});
    // Seen on a loaded 2-core machine, in spells of a few minutes (in full runs, right after the
    // MiniLM <webtune-trainer> test): the navigation never reaches "load" although the server
    // answers the same file to curl in milliseconds. Up to two more tries in fresh contexts,
    // after a pause; the stalled requests are reported so the cause can be found.
    const tries = (attempt.tries ?? (attempt.retried ? 1 : 0)) + 1;
    if (tries < 3) {
      console.log(`openPage: ${url} did not load (${e.message}); open requests: ${JSON.stringify([...open])}; try ${tries + 1} of 3 in 10 s`);
      await new Promise((r) => setTimeout(r, 10_000));
      return openPage(browser, params, { tries }, pathname);
    }
    throw e;
  }
  return { context, page, log, url };
}

/** Screenshot and JSON dump of a page, saved under WEBTUNE_ARTIFACTS as `failure-<name>.*`. */
export async function saveFailureArtifacts(name, { page, log }) {
  const base = `failure-${slug(name)}`;
  try {
    await withTimeout(page.screenshot({ path: artifactPath(`${base}.png`), fullPage: true }), 15_000, "a failure screenshot");
  } catch (e) {
    console.error(`could not save ${base}.png: ${e.message}`);
  }
  const state = await snapshot(page);
  writeArtifactJson(`${base}.json`, { log, state });
  console.error(`saved ${path.join(ARTIFACTS, base)}.{png,json}`);
}

/**
 * Run `fn({context, page, log, url})` on a freshly opened page; on failure save a screenshot and
 * the logs to WEBTUNE_ARTIFACTS; always close the context.
 */
export async function withPage(name, browser, params, fn) {
  return withPageAt(name, browser, "", params, fn);
}

/** withPage for the page at `pathname` (relative to WEBTUNE_URL, e.g. "examples/shakespeare.html"). */
export async function withPageAt(name, browser, pathname, params, fn) {
  const handle = await openPage(browser, params, { retried: false }, pathname);
  try {
    return await fn(handle);
  } catch (e) {
    await saveFailureArtifacts(name, handle);
    throw e;
  } finally {
    await withTimeout(handle.context.close(), 15_000, "the browser context to close").catch(() => {});
  }
}

// A serialisable view of window.webtune, evaluated in the page (for failure messages).
const SNAPSHOT_SOURCE = `(() => {
  const w = window.webtune;
  if (!w) return { webtune: "missing" };
  return {
    backend: w.backend,
    workerState: w.workerState,
    generation: w.generation,
    backendChoice: w.backendChoice,
    runs: w.runs.map((r) => ({ ...r, progress: r.progress.length + " messages", last: r.progress.at(-1) ?? null })),
    status: document.querySelector("[data-testid=status]")?.textContent,
    alerts: [...document.querySelectorAll("[data-testid=error]")].map((a) => a.textContent),
  };
})()`;

/** A serialisable summary of window.webtune (for failure messages). */
export async function snapshot(page) {
  try {
    return await withTimeout(page.evaluate(SNAPSHOT_SOURCE), 5_000, "a state snapshot");
  } catch (e) {
    return { unavailable: e.message };
  }
}

/**
 * Wait until `predicate(arg)` (evaluated in the page) is truthy; returns its value. On timeout
 * the error says what was awaited and includes a snapshot of window.webtune.
 */
export async function waitInPage(page, predicate, arg, ms, what) {
  try {
    const handle = await page.waitForFunction(predicate, arg, { timeout: ms, polling: 100 });
    const value = await handle.jsonValue();
    await handle.dispose();
    return value;
  } catch (e) {
    const state = await snapshot(page);
    throw new Error(`timed out after ${ms} ms waiting for ${what} (${e.message.split("\n")[0]})\npage state: ${JSON.stringify(state, null, 1).slice(0, 4000)}`);
  }
}

/** Wait for the first backend message of the page's worker (window.webtune.ready). */
export async function waitForBackend(page, ms = 90_000) {
  return withTimeout(page.evaluate(() => window.webtune.ready), ms, "the worker's backend message (window.webtune.ready)");
}

/** Wait until load number `index` (0-based, in window.webtune.loads) has ended; returns it. */
export async function waitForLoad(page, index, ms, what) {
  return waitInPage(
    page,
    (i) => {
      const record = window.webtune.loads[i];
      return record && record.status !== "loading" ? record : null;
    },
    index,
    ms,
    what,
  );
}

/** Pick `paths` (absolute file paths) with the model panel's file input; returns the load record. */
export async function pickModelFiles(page, paths, ms, what) {
  const index = await page.evaluate(() => window.webtune.loads.length);
  await page.getByTestId("model-files").setInputFiles(paths);
  return waitForLoad(page, index, ms, what);
}

/** Load the ready-made model with its button; returns the load record. */
export async function loadDefaultModel(page, ms, what) {
  await waitInPage(page, () => !document.querySelector("form.default-form")?.hidden, null, 10_000, "the ready-made model form");
  const index = await page.evaluate(() => window.webtune.loads.length);
  await page.getByTestId("load-default-model").click();
  return waitForLoad(page, index, ms, what);
}

/** Choose a bundled sample in the data step and wait for its report. */
export async function useSample(page, file, ms = 120_000) {
  await page.getByLabel("Sample dataset").selectOption(file);
  await page.getByTestId("use-sample").click();
  await waitInPage(
    page,
    (f) => document.querySelector("[data-testid=dataset-state]")?.dataset.outcome === "done" && (document.querySelector("[data-testid=report-file]")?.textContent ?? "").startsWith(f),
    file,
    ms,
    `${file}'s report`,
  );
}

/** Wait until run number `index` (0-based, in window.webtune.runs) has ended; returns it. */
export async function waitForRunEnd(page, index, ms, what) {
  return waitInPage(
    page,
    (i) => {
      const run = window.webtune.runs[i];
      return run && run.status !== "running" && run.status !== "cancelling" ? run : null;
    },
    index,
    ms,
    what,
  );
}

/** The page and worker logs must hold no errors. */
export function assertCleanLog(assert, log, what = "the page") {
  assert.deepEqual(log.pageErrors, [], `${what}: uncaught page errors`);
  assert.deepEqual(log.consoleErrors, [], `${what}: console errors (page and workers)`);
  assert.equal(log.crashed, false, `${what}: the renderer crashed`);
}

/** Run the native CLI's toy training with `config`; returns its JSON summary. */
export function nativeToy(config, timeoutMs = 300_000) {
  if (!CLI) throw new Error("WEBTUNE_CLI is not set (cargo xtask test sets it to the native webtune binary)");
  const stdout = execFileSync(CLI, ["toy", "--config", JSON.stringify(config), "--json"], {
    encoding: "utf8",
    timeout: timeoutMs,
    maxBuffer: 64 * 1024 * 1024,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const line = stdout.trim().split("\n").filter(Boolean).at(-1);
  try {
    return JSON.parse(line);
  } catch (e) {
    throw new Error(`the native CLI printed no JSON summary (${e.message}); stdout:\n${stdout.slice(0, 2000)}`);
  }
}

/** Largest |a[i] - b[i]| over the first `n` entries (default: all), with its index. */
export function maxAbsDiff(a, b, n = Math.min(a.length, b.length)) {
  let max = 0;
  let at = -1;
  for (let i = 0; i < n; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= max)) {
      max = d;
      at = i;
    }
  }
  return { max, at };
}

/**
 * A tiny Hugging Face Hub: `GET /<owner>/<name>/resolve/main/<file>` from `repos`
 * ({"owner/name": {file: Buffer}}), CORS-enabled like huggingface.co (the page is cross-origin
 * isolated), with a request log. Returns {server, log, endpoint, close()}.
 */
export async function startHubServer(repos) {
  const log = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://localhost");
    const match = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    const body = match && match[2] === "main" ? repos[decodeURIComponent(match[1])]?.[decodeURIComponent(match[3])] : undefined;
    log.push({ method: req.method, path: url.pathname, status: body ? 200 : 404 });
    const headers = { "Access-Control-Allow-Origin": "*", "Cross-Origin-Resource-Policy": "cross-origin", "Cache-Control": "no-store" };
    if (!body) {
      res.writeHead(404, { ...headers, "Content-Type": "text/plain" });
      res.end("Entry not found");
      return;
    }
    res.writeHead(200, { ...headers, "Content-Type": "application/octet-stream", "Content-Length": body.length });
    res.end(req.method === "HEAD" ? undefined : body);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const close = () => new Promise((resolve) => server.close(resolve));
  return { server, log, endpoint: `http://127.0.0.1:${server.address().port}`, close };
}

/**
 * Load model files from disk in the page through window.webtune.loadModelFiles([{name, bytes}])
 * (`paths`: absolute file paths). Resolves with the load record's {status, info, error}.
 */
export async function loadModelFilesFromDisk(page, paths, ms, what) {
  const files = paths.map((p) => ({ name: path.basename(p), b64: fs.readFileSync(p).toString("base64") }));
  return withTimeout(
    page.evaluate(async (list) => {
      const decode = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const r = await window.webtune.loadModelFiles(list.map((f) => ({ name: f.name, bytes: decode(f.b64) })));
      return { status: r.status, info: r.info, error: r.error };
    }, files),
    ms,
    what,
  );
}

/** The files of a ZIP of stored entries (what the page writes), read through its central directory. */
export function readStoredZip(buf) {
  const end = buf.length - 22;
  assert.equal(buf.readUInt32LE(end), 0x06054b50, "the end of the central directory");
  const files = {};
  let at = buf.readUInt32LE(end + 16);
  for (let i = 0; i < buf.readUInt16LE(end + 10); i++) {
    assert.equal(buf.readUInt32LE(at), 0x02014b50, "a central directory entry");
    const [method, crc, size, nameLength] = [buf.readUInt16LE(at + 10), buf.readUInt32LE(at + 16), buf.readUInt32LE(at + 24), buf.readUInt16LE(at + 28)];
    const local = buf.readUInt32LE(at + 42);
    const start = local + 30 + buf.readUInt16LE(local + 26) + buf.readUInt16LE(local + 28);
    const data = buf.subarray(start, start + size);
    const name = buf.toString("utf8", at + 46, at + 46 + nameLength);
    assert.equal(method, 0, `${name} is stored`);
    assert.equal(zlib.crc32(data), crc, `${name}'s CRC`);
    files[name] = data;
    at += 46 + nameLength + buf.readUInt16LE(at + 30) + buf.readUInt16LE(at + 32);
  }
  return files;
}
