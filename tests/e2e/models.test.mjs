// Model browser tests: loading a Hugging Face model from local files (file input, folder input,
// drop) and from a Hub-layout server (download progress, Cache API: no request after a reload,
// the worker's own CSP: the page's origin plus only a Hub the user asked for), logits and greedy
// generation matching transformers' reference outputs on CPU and WebGPU, and typed errors
// (missing repo, truncated weights) that keep the previous model usable.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";

import {
  CLI,
  artifactPath,
  launchBrowser,
  maxAbsDiff,
  pickModelFiles,
  waitForBackend,
  waitForLoad,
  waitInPage,
  withPage,
  withTimeout,
  writeArtifactJson,
} from "./harness.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const MODEL_DIR = path.join(ROOT, "tests/fixtures/tiny_random/gpt2");
const MODEL_FILES = ["config.json", "generation_config.json", "model.safetensors"];
const REFERENCE = JSON.parse(fs.readFileSync(path.join(ROOT, "tests/fixtures/reference/tiny_gpt2.json"), "utf8"));
const REPO = "webtune-test/tiny-gpt2";
const SHARDED_REPO = "webtune-test/tiny-gpt2-sharded";

// |browser − transformers| logit bounds. The reference is float32 PyTorch on CPU, rounded to 7
// significant digits. CPU wasm runs the same f32 math as native webtune (which the native tests
// hold to 1e-4 against this file); measured max |Δ| 2.0e-7 over the four cases. WebGPU runs other
// kernels (reduction order, tiling); measured on headless chromium's SwiftShader adapter: max |Δ|
// 2.0e-7 too (the model is tiny: 32-wide dot products). The 1e-3 bound leaves room for hardware
// GPUs, whose reductions differ more, while a real bug (a wrong mask, a transposed weight) moves
// logits by > 1e-2. Per-case numbers are printed and saved to models-logits.json.
const TOLERANCE = { cpu: 1e-4, webgpu: 1e-3 };
// SwiftShader compiles shaders for every new kernel shape: the first logits take tens of seconds.
const OP_TIMEOUT_MS = { cpu: 60_000, webgpu: 300_000 };

let browser;
let hub;
before(async () => {
  browser = await launchBrowser();
  hub = await startHubServer();
});
after(async () => {
  await browser?.close();
  await new Promise((resolve) => (hub ? hub.server.close(resolve) : resolve()));
});

// ---------------------------------------------------------------------------------------------
// A tiny Hub: `/<owner>/<name>/resolve/<revision>/<file>`, CORS-enabled like huggingface.co (the
// page is cross-origin isolated, so another origin's files need CORS), with a request log.

/** Split a safetensors file into `n` shards plus a model.safetensors.index.json (Hub layout). */
function shardSafetensors(bytes, n) {
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString("utf8"));
  const data = bytes.subarray(8 + headerLength);
  const names = Object.keys(header).filter((k) => k !== "__metadata__").sort();
  const per = Math.ceil(names.length / n);
  const files = {};
  const weightMap = {};
  let totalSize = 0;
  for (let i = 0; i < n; i++) {
    const fileName = `model-${String(i + 1).padStart(5, "0")}-of-${String(n).padStart(5, "0")}.safetensors`;
    const group = names.slice(i * per, (i + 1) * per);
    const shardHeader = { __metadata__: { format: "pt" } };
    const parts = [];
    let offset = 0;
    for (const name of group) {
      const [start, end] = header[name].data_offsets;
      parts.push(data.subarray(start, end));
      shardHeader[name] = { ...header[name], data_offsets: [offset, offset + (end - start)] };
      offset += end - start;
      weightMap[name] = fileName;
    }
    totalSize += offset;
    let json = JSON.stringify(shardHeader);
    json += " ".repeat((8 - (json.length % 8)) % 8);
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(json.length));
    files[fileName] = Buffer.concat([length, Buffer.from(json, "utf8"), ...parts]);
  }
  files["model.safetensors.index.json"] = Buffer.from(JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2));
  return files;
}

function repoFiles() {
  const single = Object.fromEntries(MODEL_FILES.map((f) => [f, fs.readFileSync(path.join(MODEL_DIR, f))]));
  const sharded = { "config.json": single["config.json"], "generation_config.json": single["generation_config.json"], ...shardSafetensors(single["model.safetensors"], 2) };
  return { [REPO]: single, [SHARDED_REPO]: sharded };
}

async function startHubServer() {
  const repos = repoFiles();
  const log = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://localhost");
    const match = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    const body = match && match[2] === "main" ? repos[decodeURIComponent(match[1])]?.[decodeURIComponent(match[3])] : undefined;
    const status = body ? 200 : 404;
    log.push({ method: req.method, path: url.pathname, status });
    const headers = {
      "Access-Control-Allow-Origin": "*",
      "Cross-Origin-Resource-Policy": "cross-origin",
      "Cache-Control": "no-store",
    };
    if (!body) {
      res.writeHead(404, { ...headers, "Content-Type": "text/plain" });
      res.end("Entry not found");
      return;
    }
    res.writeHead(200, { ...headers, "Content-Type": "application/octet-stream", "Content-Length": body.length });
    res.end(req.method === "HEAD" ? undefined : body);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, log, endpoint: `http://127.0.0.1:${server.address().port}`, repos };
}

// ---------------------------------------------------------------------------------------------

function nativeInfo() {
  if (!CLI) return null;
  const stdout = execFileSync(CLI, ["info", MODEL_DIR, "--json"], { encoding: "utf8", timeout: 120_000 });
  return JSON.parse(stdout.trim().split("\n").filter(Boolean).at(-1));
}

/** No page errors, and no console errors except the browser's note about each 404 response. */
function assertCleanLog(log, what = "the page") {
  assert.deepEqual(log.pageErrors, [], `${what}: uncaught page errors`);
  const unexpected = log.consoleErrors.filter((e) => !/Failed to load resource: the server responded with a status of 404/.test(e));
  assert.deepEqual(unexpected, [], `${what}: console errors (page and workers)`);
  assert.equal(log.crashed, false, `${what}: the renderer crashed`);
}

async function loadsCount(page) {
  return page.evaluate(() => window.webtune.loads.length);
}

/** Load the fixture through the file input; returns the load record. */
async function loadWithFileInput(page, ms = 60_000) {
  const paths = MODEL_FILES.map((f) => path.join(MODEL_DIR, f));
  const record = await pickModelFiles(page, paths, ms, "the model picked with the file input to load");
  assert.equal(record.error, null, `loading failed: ${JSON.stringify(record.error)}`);
  return record;
}

async function logitsOf(page, ids, ms, what) {
  return withTimeout(
    page.evaluate(async (input) => {
      const out = await window.webtune.logits(input);
      return { shape: out.shape, data: out.data ? Array.from(out.data) : null, error: out.error };
    }, ids),
    ms,
    what,
  );
}

async function generateIds(page, input, options, ms, what) {
  return withTimeout(page.evaluate(({ input, options }) => window.webtune.generate(input, options), { input, options }), ms, what);
}

const greedyOptions = (n) => ({ greedy: true, max_new_tokens: n, ignore_eos: true });

/**
 * Fetch `urls` from inside the page's worker whose script URL satisfies `which` (Playwright
 * evaluates in the worker itself, so the worker's own Content-Security-Policy applies). Returns
 * [{url, status, error, refused}]: `refused` is the CSP directive that blocked the request.
 */
async function fetchInWorker(page, which, urls) {
  let worker;
  await withTimeout(
    (async () => {
      while (!(worker = page.workers().find((w) => which(w.url())))) await new Promise((resolve) => setTimeout(resolve, 100));
    })(),
    30_000,
    "the worker to probe",
  );
  const probe = async (urls) => {
    const refused = new Map();
    const waiting = new Map();
    addEventListener("securitypolicyviolation", (e) => {
      refused.set(e.blockedURI, e.effectiveDirective);
      waiting.get(e.blockedURI)?.();
    });
    const out = [];
    for (const url of urls) {
      let status = null;
      let error = null;
      try {
        status = (await fetch(url, { mode: "cors", credentials: "omit" })).status;
      } catch (e) {
        error = String(e);
      }
      // The violation event may be dispatched after the fetch has rejected.
      if (error !== null && !refused.has(url)) await new Promise((resolve) => waiting.set(url, resolve));
      out.push({ url, status, error, refused: refused.get(url) ?? null });
    }
    return out;
  };
  return withTimeout(worker.evaluate(probe, urls), 30_000, "fetches inside the worker (a failed one waits for its CSP violation event)");
}

// ---------------------------------------------------------------------------------------------

test("a. loading local files (file input, folder input, drop) shows the model's info, as the native CLI reports it", { timeout: 180_000 }, async () => {
  await withPage("models-a-files", browser, { backend: "cpu" }, async ({ page, log }) => {
    await waitForBackend(page);
    assert.equal(await page.evaluate(() => window.webtune.model), null, "no model at first");
    assert.ok(!(await page.getByTestId("generate").isEnabled()), "Generate is disabled without a model");

    const record = await loadWithFileInput(page);
    const info = await page.evaluate(() => window.webtune.model);
    assert.deepEqual(info, record.info);
    console.log(`file input: loaded in ${(record.timing.load_ms).toFixed(1)} ms; info ${JSON.stringify(info)}`);
    assert.equal(info.architecture, "gpt2");
    assert.equal(info.has_tokenizer, false);
    assert.equal(info.has_chat_template, false);
    assert.ok(await page.getByTestId("chat-fields").isHidden(), "no chat mode for a model without a chat template");
    assert.deepEqual(info.dtype, ["F32"]);
    const native = nativeInfo();
    if (native) {
      assert.equal(info.parameters, native.parameters, "parameters match `webtune info --json`");
      assert.deepEqual(info, native, "the whole info matches `webtune info --json`");
    }
    assert.deepEqual([...record.source.files].sort(), [...MODEL_FILES].sort());

    // The info table.
    const text = async (id) => (await page.getByTestId(id).textContent()).trim();
    assert.equal(await text("model-architecture"), "gpt2");
    assert.match(await text("model-parameters"), new RegExp(`^${info.parameters.toLocaleString("en")}\\b`));
    assert.equal(await text("model-layers"), String(info.layers));
    assert.equal(await text("model-hidden-size"), String(info.hidden_size));
    assert.equal(await text("model-heads"), String(info.heads));
    assert.equal(await text("model-vocab"), String(info.vocab_size));
    assert.equal(await text("model-context"), String(info.max_positions));
    assert.equal(await text("model-dtype"), "F32");
    assert.match(await text("model-tokenizer"), /^no\b/);
    assert.ok(await page.getByTestId("generate").isEnabled(), "Generate is enabled once a model is loaded");
    for (const label of ["Model files", "Model folder", "Hub repo id or URL", "Hub endpoint", "Prompt", "Max new tokens", "Greedy", "Temperature", "Top-k", "Top-p", "Repetition penalty"]) {
      assert.equal(await page.getByLabel(label, { exact: true }).count(), 1, `one control labelled ${label}`);
    }

    // A folder (webkitdirectory input): the same model.
    const before = await loadsCount(page);
    await page.getByTestId("model-folder").setInputFiles(MODEL_DIR);
    const folder = await waitForLoad(page, before, 60_000, "the model folder to load");
    assert.equal(folder.error, null, `loading the folder failed: ${JSON.stringify(folder.error)}`);
    assert.deepEqual(folder.info, info);

    // Dropped files (a synthetic drop: DataTransfer items of File objects).
    const payload = Object.fromEntries(MODEL_FILES.map((f) => [f, fs.readFileSync(path.join(MODEL_DIR, f)).toString("base64")]));
    const dropIndex = await loadsCount(page);
    await page.evaluate((files) => {
      const transfer = new DataTransfer();
      for (const [name, b64] of Object.entries(files)) {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        transfer.items.add(new File([bytes], name));
      }
      const zone = document.querySelector("[data-testid=model-drop]");
      zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: transfer, bubbles: true, cancelable: true }));
      zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
    }, payload);
    const dropped = await waitForLoad(page, dropIndex, 60_000, "the dropped model files to load");
    assert.equal(dropped.error, null, `loading dropped files failed: ${JSON.stringify(dropped.error)}`);
    assert.deepEqual(dropped.info, info);

    await withTimeout(page.screenshot({ path: artifactPath("models-loaded.png"), fullPage: true }), 15_000, "a screenshot");
    assertCleanLog(log);
  });
});

const referenceRecord = { tolerance: TOLERANCE, backends: {} };

for (const backend of ["cpu", "webgpu"]) {
  test(`b+c. ${backend}: logits match transformers within ${TOLERANCE[backend]} and greedy generation matches it exactly`, { timeout: OP_TIMEOUT_MS[backend] * 3 }, async () => {
    await withPage(`models-bc-${backend}`, browser, { backend }, async ({ page, log }) => {
      const message = await waitForBackend(page);
      assert.equal(message.backend, backend, `the worker should run on ${backend}: ${message.reason}`);
      const record = await loadWithFileInput(page, OP_TIMEOUT_MS[backend]);
      const out = { load_ms: record.timing.load_ms, cases: {}, generation: null };
      referenceRecord.backends[backend] = out;

      for (const c of REFERENCE.cases) {
        const got = await logitsOf(page, c.input_ids, OP_TIMEOUT_MS[backend], `logits of case ${c.name} on ${backend}`);
        assert.equal(got.error, null, `logits of ${c.name} failed: ${JSON.stringify(got.error)}`);
        const expected = c.logits.flat();
        assert.deepEqual(got.shape, [c.input_ids.length, REFERENCE.config.vocab_size], `shape of case ${c.name}`);
        const diff = maxAbsDiff(got.data, expected);
        out.cases[c.name] = { tokens: c.input_ids.length, max_abs_diff: diff.max };
        console.log(`${backend} logits ${c.name} (${c.input_ids.length} tokens): max |Δ| ${diff.max.toExponential(2)}`);
        assert.ok(diff.max <= TOLERANCE[backend], `${backend} logits of ${c.name}: max |Δ| ${diff.max} at ${diff.at} exceeds ${TOLERANCE[backend]}`);
        const vocab = REFERENCE.config.vocab_size;
        const argmax = c.input_ids.map((_, t) => {
          const row = got.data.slice(t * vocab, (t + 1) * vocab);
          return row.indexOf(Math.max(...row));
        });
        assert.deepEqual(argmax, c.argmax, `argmax of ${c.name}`);
      }

      // Greedy generation, through the API and through the panel.
      for (const g of [REFERENCE.generation, ...REFERENCE.generation_more]) {
        const gen = await generateIds(page, { ids: g.prompt_ids }, greedyOptions(g.generated_ids.length), OP_TIMEOUT_MS[backend], `greedy generation on ${backend}`);
        assert.equal(gen.error, null, `generation failed: ${JSON.stringify(gen.error)}`);
        assert.deepEqual(gen.result.prompt_ids, g.prompt_ids);
        assert.deepEqual(gen.result.generated_ids, g.generated_ids, `greedy ids from ${JSON.stringify(g.prompt_ids)}`);
        assert.deepEqual(gen.tokens, g.generated_ids, "streamed tokens are the generated ids");
        assert.equal(gen.result.text, null, "no text without a tokenizer");
        assert.equal(gen.result.cancelled, false);
        out.generation ??= { tokens: gen.result.generated_ids.length, seconds: gen.result.seconds, tokens_per_s: gen.result.tokens_per_s };
      }

      const g = REFERENCE.generation;
      const requestsBefore = log.requests.length;
      await page.getByLabel("Prompt").fill(`ids: ${g.prompt_ids.join(", ")}`);
      await page.getByLabel("Max new tokens").fill(String(g.generated_ids.length));
      await page.getByLabel("Greedy").check();
      await page.getByTestId("generate").click();
      await waitInPage(page, () => ["done", "error", "cancelled"].includes(document.querySelector("[data-testid=gen-stats]")?.dataset.outcome), null, OP_TIMEOUT_MS[backend], "the panel's generation to end");
      assert.equal(await page.getByTestId("gen-stats").getAttribute("data-outcome"), "done", await page.getByTestId("gen-stats").textContent());
      // ignore_eos is not needed here: the model's EOS (50256) is outside its 100-token vocabulary.
      assert.equal((await page.getByTestId("gen-ids").textContent()).trim(), `Generated ids: ${g.generated_ids.join(", ")}`);
      const stats = await page.getByTestId("gen-stats").textContent();
      assert.match(stats, /tokens\/s/);
      console.log(`${backend}: ${stats}; API generation ${JSON.stringify(out.generation)}`);
      assert.equal(log.requests.length, requestsBefore, "generating makes no network request");
      writeArtifactJson("models-logits.json", referenceRecord);
      assertCleanLog(log);
    });
  });
}

test("d. a Hub repo downloads with progress, is cached (no request after a reload), and a missing repo is a clear error", { timeout: 240_000 }, async () => {
  await withPage("models-d-hub", browser, { backend: "cpu", hub: hub.endpoint }, async ({ page, log }) => {
    await waitForBackend(page);
    await page.evaluate(() => window.webtune.clearModelCache()); // a fresh context has none; be sure
    assert.equal(await page.getByTestId("hub-endpoint").inputValue(), hub.endpoint, "?hub= sets the endpoint field");
    hub.log.length = 0;

    // The worker's script carries its own CSP: it starts able to reach only the page's origin.
    const own = new URL("worker.js", page.url()).href;
    const probe = `${hub.endpoint}/${REPO}/resolve/main/config.json`;
    const unasked = probe.replace("127.0.0.1", "localhost"); // the same server, at an origin nobody asked for
    const initial = await fetchInWorker(page, (url) => !url.includes("connect="), [own, probe]);
    assert.equal(initial[0].status, 200, JSON.stringify(initial));
    assert.equal(initial[1].refused, "connect-src", `the Hub is out of reach before the user asks for it: ${JSON.stringify(initial)}`);
    assert.deepEqual(hub.log, [], "the refused request never reached the hub");

    await page.getByLabel("Hub repo id or URL").fill(REPO);
    await page.getByTestId("load-model").click();
    const first = await waitForLoad(page, 0, 60_000, "the Hub model to download and load");
    assert.equal(first.error, null, `the Hub load failed: ${JSON.stringify(first.error)}`);
    assert.equal(first.source.kind, "hub");
    assert.equal(first.source.repo, REPO);
    assert.equal(first.source.cached, false);
    console.log(`hub: ${hub.log.length} requests; download ${first.timing.download_ms.toFixed(1)} ms, load ${first.timing.load_ms.toFixed(1)} ms`);

    // Progress: a final message per file; the weights in full, from the network.
    const finals = Object.fromEntries(first.downloads.filter((d) => d.done).map((d) => [d.file, d]));
    const weights = finals["model.safetensors"];
    const size = fs.statSync(path.join(MODEL_DIR, "model.safetensors")).size;
    assert.ok(weights, "a final download message for model.safetensors");
    assert.equal(weights.loaded, size);
    assert.equal(weights.total, size);
    assert.equal(weights.cached, false);
    assert.ok(first.downloads.some((d) => d.file === "model.safetensors" && !d.done), "progress before the end of the weights");
    assert.equal(finals["tokenizer.json"]?.missing, true, "the optional tokenizer.json is reported missing");
    assert.equal(finals["generation_config.json"]?.loaded, fs.statSync(path.join(MODEL_DIR, "generation_config.json")).size);
    const row = page.locator('[data-testid=download][data-file="model.safetensors"]');
    await waitInPage(page, () => document.querySelector('[data-testid=download][data-file="model.safetensors"]')?.dataset.state === "done", null, 10_000, "the weights' row to say done");
    assert.match(await row.textContent(), /downloaded/);
    assert.equal(await page.locator('[data-testid=download][data-file="tokenizer.json"]').getAttribute("data-state"), "missing");
    const requested = hub.log.map((r) => r.path.split("/").pop());
    for (const f of ["config.json", "model.safetensors", "tokenizer.json", "generation_config.json"]) assert.ok(requested.includes(f), `${f} was requested`);
    assert.ok(hub.log.every((r) => r.method === "GET"), "plain GETs (no preflight)");
    assert.equal((await page.getByTestId("model-parameters").textContent()).split(" ")[0], first.info.parameters.toLocaleString("en"));

    // It generates, and nothing more goes over the network.
    const countBefore = hub.log.length;
    const gen = await generateIds(page, { ids: REFERENCE.generation.prompt_ids }, greedyOptions(REFERENCE.generation.generated_ids.length), 60_000, "generation after the Hub load");
    assert.deepEqual(gen.result?.generated_ids, REFERENCE.generation.generated_ids);
    assert.equal(hub.log.length, countBefore, "no request after the model was loaded");

    // The load ran in a worker whose URL allows this Hub, and that worker replaced the first: it
    // reaches the page's origin and the Hub, and is refused anywhere else.
    hub.log.length = 0;
    const allowed = await fetchInWorker(page, (url) => url.includes(`connect=${encodeURIComponent(hub.endpoint)}`), [own, probe, unasked]);
    assert.deepEqual(allowed.map((r) => r.status), [200, 200, null], JSON.stringify(allowed));
    assert.equal(allowed[2].refused, "connect-src", JSON.stringify(allowed));
    assert.deepEqual(hub.log.map((r) => r.path), [`/${REPO}/resolve/main/config.json`], "only the allowed request reached the hub");

    // Reload: the same repo again comes from the Cache API without a single request.
    hub.log.length = 0;
    await withTimeout(page.reload({ waitUntil: "load" }), 30_000, "the page to reload");
    await waitForBackend(page);
    assert.equal(await page.evaluate(() => window.webtune.model), null, "no model after the reload");
    const again = await withTimeout(page.evaluate((repo) => window.webtune.loadModelFromHub(repo), REPO), 60_000, "the cached Hub model to load");
    assert.equal(again.error, null, `the cached load failed: ${JSON.stringify(again.error)}`);
    assert.deepEqual(hub.log, [], "no request to the server for a cached repo");
    assert.deepEqual(again.info, first.info, "the same info from the cache");
    assert.equal(again.source.cached, true);
    assert.ok(again.downloads.filter((d) => d.done).every((d) => d.cached), "every file came from the cache");
    console.log(`hub (cached): download ${again.timing.download_ms.toFixed(1)} ms, load ${again.timing.load_ms.toFixed(1)} ms`);

    // A sharded repo (index + 2 shards) loads to the same model.
    const sharded = await withTimeout(page.evaluate((repo) => window.webtune.loadModelFromHub(repo), SHARDED_REPO), 60_000, "the sharded repo to load");
    assert.equal(sharded.error, null, `the sharded load failed: ${JSON.stringify(sharded.error)}`);
    // The same model; only the bytes stored differ (two shards, each with its own header).
    assert.deepEqual({ ...sharded.info, stored_bytes: null }, { ...first.info, stored_bytes: null });
    assert.ok(sharded.info.stored_bytes > first.info.stored_bytes, JSON.stringify([sharded.info.stored_bytes, first.info.stored_bytes]));
    const shardFiles = sharded.source.files.filter((f) => !f.missing).map((f) => f.file).sort();
    assert.deepEqual(shardFiles, ["config.json", "generation_config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"]);
    const shardedGen = await generateIds(page, { ids: REFERENCE.generation.prompt_ids }, greedyOptions(REFERENCE.generation.generated_ids.length), 60_000, "generation with the sharded model");
    assert.deepEqual(shardedGen.result?.generated_ids, REFERENCE.generation.generated_ids);

    // A missing repo: a coded error naming the URL and status; the page stays usable.
    const missingIndex = await loadsCount(page);
    await page.getByLabel("Hub repo id or URL").fill("webtune-test/does-not-exist");
    await page.getByTestId("load-model").click();
    const missing = await waitForLoad(page, missingIndex, 60_000, "the missing repo to fail");
    assert.equal(missing.status, "error");
    assert.equal(missing.error.code, "model.download_failed");
    assert.equal(missing.error.details.status, 404);
    assert.match(missing.error.message, new RegExp(`${hub.endpoint}/webtune-test/does-not-exist/resolve/main/config.json`.replace(/[.]/g, "\\.")));
    assert.match(missing.error.message, /HTTP 404/);
    const alert = page.locator('[role=alert][data-code="model.download_failed"]');
    assert.equal(await alert.count(), 1, "one alert for the missing repo");
    assert.match(await page.getByTestId("model-status").textContent(), /still in use/);
    assert.deepEqual(await page.evaluate(() => window.webtune.model), sharded.info, "the previous model (the sharded one) stays loaded");
    // A URL on an origin the worker may not reach loads in a new worker; when that fails, the
    // worker holding the model stays.
    const elsewhere = await withTimeout(
      page.evaluate((url) => window.webtune.loadModelFromHub(url), new URL("/webtune-test/does-not-exist", unasked).href),
      60_000,
      "the missing repo at another origin to fail",
    );
    assert.equal(elsewhere.error?.code, "model.download_failed", JSON.stringify(elsewhere.error));
    assert.equal(elsewhere.error.details.status, 404, "the new worker reached the origin it was asked for");
    assert.deepEqual(await page.evaluate(() => window.webtune.model), sharded.info, "the previous model (the sharded one) stays loaded");
    const still = await generateIds(page, { ids: REFERENCE.generation.prompt_ids }, greedyOptions(REFERENCE.generation.generated_ids.length), 60_000, "generation after the failed load");
    assert.deepEqual(still.result?.generated_ids, REFERENCE.generation.generated_ids);

    // A malformed repo id is refused before any request.
    hub.log.length = 0;
    const bad = await page.evaluate(() => window.webtune.loadModelFromHub("not a repo"));
    assert.equal(bad.error?.code, "config.invalid");
    assert.deepEqual(hub.log, []);

    await withTimeout(page.screenshot({ path: artifactPath("models-hub.png"), fullPage: true }), 15_000, "a screenshot");
    assertCleanLog(log);
  });
});

test("e. truncated weights show weights.truncated and the previous model keeps generating", { timeout: 180_000 }, async () => {
  await withPage("models-e-truncated", browser, { backend: "cpu" }, async ({ page, log }) => {
    await waitForBackend(page);
    const good = await loadWithFileInput(page);

    const weights = fs.readFileSync(path.join(MODEL_DIR, "model.safetensors"));
    const index = await loadsCount(page);
    await page.getByTestId("model-files").setInputFiles([
      { name: "config.json", mimeType: "application/json", buffer: fs.readFileSync(path.join(MODEL_DIR, "config.json")) },
      { name: "model.safetensors", mimeType: "application/octet-stream", buffer: weights.subarray(0, weights.length - 4096) },
    ]);
    const bad = await waitForLoad(page, index, 60_000, "the truncated model to fail");
    assert.equal(bad.status, "error");
    assert.equal(bad.error.code, "weights.truncated", JSON.stringify(bad.error));
    const alert = page.locator('[role=alert][data-code="weights.truncated"]');
    await waitInPage(page, () => document.querySelectorAll('[role=alert][data-code="weights.truncated"]').length === 1, null, 10_000, "the weights.truncated alert");
    assert.match(await alert.textContent(), /weights\.truncated/);
    console.log(`truncated: ${bad.error.message}`);
    assert.deepEqual(await page.evaluate(() => window.webtune.model), good.info, "the previous model stays loaded");
    assert.equal((await page.getByTestId("model-architecture").textContent()).trim(), "gpt2", "the info table still shows it");

    await alert.getByTestId("error-dismiss").click();

    // A half-downloaded GGUF (the tiny Llama cut off inside its tensor data): the same code, the
    // file named, and the previous model still loaded.
    const gguf = fs.readFileSync(path.join(ROOT, "tests/fixtures/tiny_gguf/tiny_llama_f32.gguf"));
    const ggufIndex = await loadsCount(page);
    await page.getByTestId("model-files").setInputFiles([
      { name: "tiny_llama_f32.gguf", mimeType: "application/octet-stream", buffer: gguf.subarray(0, Math.floor(gguf.length * 0.7)) },
    ]);
    const badGguf = await waitForLoad(page, ggufIndex, 60_000, "the truncated GGUF to fail");
    assert.equal(badGguf.status, "error");
    assert.equal(badGguf.error.code, "weights.truncated", JSON.stringify(badGguf.error));
    assert.match(badGguf.error.message, /tiny_llama_f32\.gguf/);
    await waitInPage(page, () => document.querySelectorAll('[role=alert][data-code="weights.truncated"]').length === 1, null, 10_000, "the GGUF's weights.truncated alert");
    console.log(`truncated GGUF: ${badGguf.error.message}`);
    assert.deepEqual(await page.evaluate(() => window.webtune.model), good.info, "the previous model stays loaded after the GGUF too");
    await page.locator('[role=alert][data-code="weights.truncated"]').getByTestId("error-dismiss").click();

    // The previous model generates through the panel.
    const g = REFERENCE.generation;
    await page.getByLabel("Prompt").fill(g.prompt_ids.join(" "));
    await page.getByLabel("Max new tokens").fill(String(g.generated_ids.length));
    await page.getByLabel("Greedy").check();
    await page.getByTestId("generate").click();
    await waitInPage(page, () => ["done", "error", "cancelled"].includes(document.querySelector("[data-testid=gen-stats]")?.dataset.outcome), null, 60_000, "the generation to end");
    assert.equal((await page.getByTestId("gen-ids").textContent()).trim(), `Generated ids: ${g.generated_ids.join(", ")}`);

    // A text prompt on a model without a tokenizer is refused with a clear error.
    await page.getByLabel("Prompt").fill("hello");
    await page.getByTestId("generate").click();
    await waitInPage(page, () => document.querySelector('[role=alert][data-code="config.invalid"]') !== null, null, 10_000, "the config.invalid alert");
    assert.equal(await page.getByTestId("error").count(), 1, "only that alert");
    assertCleanLog(log);
  });
});

test("f. Stop ends a generation early (also on the CPU, whose generation never yields) and the worker stays usable", { timeout: 120_000 }, async () => {
  await withPage("models-f-stop", browser, { backend: "cpu" }, async ({ page, log }) => {
    await waitForBackend(page);
    await loadWithFileInput(page);
    const generation = await page.evaluate(() => window.webtune.generation);
    // Stop right after starting: the worker sees the request at the first token, even though a
    // CPU generation runs to its end without reading messages (the page's interrupt flag).
    const stopped = await withTimeout(
      page.evaluate(() => {
        const pending = window.webtune.generate({ ids: [1, 2, 3] }, { greedy: true, max_new_tokens: 50, ignore_eos: true });
        window.webtune.cancel();
        return pending;
      }),
      60_000,
      "the stopped generation to end",
    );
    assert.equal(stopped.error, null, JSON.stringify(stopped.error));
    assert.equal(stopped.status, "cancelled");
    assert.equal(stopped.result.cancelled, true);
    assert.equal(stopped.result.generated_ids.length, 1, "stopped after the first token");
    await waitInPage(page, () => document.querySelector("[data-testid=gen-stats]")?.dataset.outcome === "cancelled", null, 10_000, "the panel to say stopped");
    assert.match(await page.getByTestId("gen-stats").textContent(), /^Stopped after 1 token/);

    // A second request while one runs is refused, not queued.
    const [first, second] = await withTimeout(
      page.evaluate(() => Promise.all([window.webtune.generate({ ids: [1, 2, 3] }, { greedy: true, max_new_tokens: 5 }), window.webtune.logits([1, 2, 3])])),
      60_000,
      "two overlapping requests to settle",
    );
    assert.equal(first.error, null);
    assert.equal(first.result.generated_ids.length, 5);
    assert.equal(second.error?.code, "worker.busy");

    // Then everything works again in the same worker.
    const full = await generateIds(page, { ids: REFERENCE.generation.prompt_ids }, greedyOptions(REFERENCE.generation.generated_ids.length), 60_000, "a full generation after the stop");
    assert.deepEqual(full.result.generated_ids, REFERENCE.generation.generated_ids);
    assert.equal(await page.evaluate(() => window.webtune.generation), generation, "still the same worker");
    const unexpected = log.consoleErrors;
    assert.deepEqual(unexpected, [], "no console errors");
    assert.deepEqual(log.pageErrors, []);
  });
});
