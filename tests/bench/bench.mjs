// Browser half of `cargo xtask bench` (not a test file): opens the page in headless chromium, a
// fresh page per case and backend (CPU-wasm on every core, CPU-wasm on one thread, WebGPU),
// drives `window.webtune` through the case and prints one JSON object on stdout (progress goes to
// stderr). Reuses tests/e2e/harness.mjs.
//
// Environment (set by `cargo xtask bench`):
//   WEBTUNE_URL   the page, served with COOP/COEP/CSP
//   CHROMIUM      chromium executable
//   BENCH_SPEC    JSON: {backends: ["cpu", "cpu-1t", "webgpu"], timeout_ms, fallback_timeout_ms
//                 (limit per case on a software WebGPU adapter), cases: [{name, kind, ...}]}
//     kind "finetune": {model: {default: id} | {dir, files: [name]}, dataset: sample file name |
//                       {path}, config: job configuration, tokens_per_step}
//     kind "generate": {model, ids, max_new_tokens, use_cache}
//     kind "toy":      {config: trainToy configuration}
//     kind "data":     {model, url: a dataset served with the page, config}: read, validate and
//                       tokenize it (window.webtune.inspectDataset), MB/s

import fs from "node:fs";
import path from "node:path";
import { launchBrowser, openPage, waitForBackend, withTimeout } from "../e2e/harness.mjs";

const spec = JSON.parse(process.env.BENCH_SPEC ?? "{}");
const backends = spec.backends ?? ["cpu", "cpu-1t", "webgpu"];
/** Page parameters per bench backend: "cpu-1t" is the single-threaded CPU module. */
const PAGE_PARAMS = { cpu: { backend: "cpu" }, "cpu-1t": { backend: "cpu", threads: 1 }, webgpu: { backend: "webgpu" } };
const timeoutMs = spec.timeout_ms ?? 600_000;
const say = (text) => process.stderr.write(`bench.mjs: ${text}\n`);

/** Median, spread and count of per-step milliseconds (after warm-up). */
function stats(values) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  const q = (p) => {
    const k = (s.length - 1) * p;
    const lo = Math.floor(k);
    const hi = Math.min(lo + 1, s.length - 1);
    return s[lo] + (s[hi] - s[lo]) * (k - lo);
  };
  return { n: s.length, median: q(0.5), min: s[0], max: s.at(-1), p10: q(0.1), p90: q(0.9) };
}

/** Per-step durations from cumulative `elapsed_s`, dropping steps that also ran an evaluation. */
function stepDurations(steps) {
  const out = [];
  let prev = 0;
  for (const s of steps) {
    const ms = (s.elapsed_s - prev) * 1e3;
    prev = s.elapsed_s;
    out.push({ step: s.step, ms, eval: !!s.eval });
  }
  return out;
}

function trainFigures(durations, tokensPerStep) {
  const first = durations[0]?.ms ?? null;
  const later = durations.slice(1).filter((d) => !d.eval).map((d) => d.ms);
  const st = stats(later);
  return {
    first_step_ms: first,
    step_ms: durations.map((d) => d.ms),
    median_step_ms: st?.median ?? null,
    spread_ms: st,
    tokens_per_step: tokensPerStep,
    tokens_per_s: st && tokensPerStep ? tokensPerStep / (st.median / 1e3) : null,
  };
}

const loaded = new WeakMap(); // page -> description of the loaded model

async function ensureModel(page, model) {
  const key = JSON.stringify(model);
  if (loaded.get(page) === key) return { already: true };
  let result;
  if (model.default) {
    result = await page.evaluate(async (id) => {
      const t0 = performance.now();
      const r = await window.webtune.loadDefaultModel(id);
      return { status: r.status, error: r.error ?? null, timing: r.timing ?? null, t0, t1: performance.now() };
    }, model.default);
  } else {
    const files = model.files.map((name) => ({ name, b64: fs.readFileSync(path.join(model.dir, name)).toString("base64") }));
    result = await page.evaluate(async (files) => {
      const entries = files.map(({ name, b64 }) => {
        const bin = atob(b64);
        const bytes = new Uint8Array(bin.length);
        for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
        return { name, bytes };
      });
      const t0 = performance.now();
      const r = await window.webtune.loadModelFiles(entries);
      return { status: r.status, error: r.error ?? null, timing: r.timing ?? null, t0, t1: performance.now() };
    }, files);
  }
  if (result.status !== "done") throw new Error(`loading the model failed: ${JSON.stringify(result.error)}`);
  loaded.set(page, key);
  return { load_ms: result.t1 - result.t0, loaded_at_ms: result.t1, timing: result.timing };
}

async function runFinetune(page, c) {
  const model = await ensureModel(page, c.model);
  let dataset = c.dataset;
  if (typeof dataset === "object" && dataset.path) {
    dataset = { name: path.basename(dataset.path), bytes: fs.readFileSync(dataset.path, "utf8") };
  }
  const r = await page.evaluate(
    async ({ dataset, config }) => {
      const w = window.webtune;
      const n = w.finetunes.length;
      const t0 = performance.now();
      let firstStepAt = null;
      const timer = setInterval(() => {
        const rec = w.finetunes[n];
        if (firstStepAt === null && rec?.events.some((e) => e.type === "step")) firstStepAt = performance.now();
      }, 5);
      const rec = await w.finetune(dataset, config);
      clearInterval(timer);
      if (firstStepAt === null && rec.events.some((e) => e.type === "step")) firstStepAt = performance.now();
      const s = rec.result?.summary;
      return {
        status: rec.status,
        error: rec.error,
        t0,
        first_step_at: firstStepAt,
        t1: performance.now(),
        steps: rec.events.filter((e) => e.type === "step").map((e) => ({ step: e.step, elapsed_s: e.elapsed_s, eval: !!e.eval, memory_bytes: e.memory_bytes })),
        summary: s ? { backend: s.backend, steps: s.steps, first_step_ms: s.first_step_ms, median_step_ms: s.median_step_ms, tokens_per_s: s.tokens_per_s, trainable_params: s.trainable_params, losses: s.losses } : null,
        train_batches: rec.result?.train_batches ?? null,
      };
    },
    { dataset, config: c.config },
  );
  if (r.status !== "done") throw new Error(`finetune ended with ${r.status}: ${JSON.stringify(r.error)}`);
  const memory = r.steps.map((s) => s.memory_bytes).filter((m) => typeof m === "number");
  return {
    ...trainFigures(stepDurations(r.steps), c.tokens_per_step),
    model_load_ms: model.load_ms ?? null,
    // From the call to finetune() (model already in memory) to the end of the first step:
    // data preparation, the base model's evaluation and the first step.
    model_in_memory_to_first_step_ms: r.first_step_at !== null ? r.first_step_at - r.t0 : null,
    // From navigation start (performance.timeOrigin) to the end of the first step; only
    // meaningful for the first case run on a fresh page (`fresh_page`).
    page_load_to_first_step_ms: r.first_step_at,
    peak_memory_bytes: memory.length ? Math.max(...memory) : null,
    summary: r.summary,
    train_batches: r.train_batches,
  };
}

/** Switches base ↔ adapter timed in the adapter case. */
const SWITCHES = 20;

/**
 * Keep the case's PEFT adapter in the page's library (attached at once: `attach_ms`), switch
 * between the base and it SWITCHES times (the worker's `switch_ms` each), and leave it in use.
 * Resolves to the adapter's name and the timings.
 */
async function useBenchAdapter(page, adapter) {
  const files = adapter.files.map((name) => ({ name, b64: fs.readFileSync(path.join(adapter.dir, name)).toString("base64") }));
  const r = await page.evaluate(
    async ({ files, switches }) => {
      const w = window.webtune;
      const name = "bench-adapter";
      // A library left over from an earlier run (OPFS outlives the page).
      if ((await w.adapters()).result?.some((m) => m.name === name)) await w.deleteAdapter(name);
      const entries = files.map(({ name, b64 }) => ({ name, bytes: Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0)) }));
      const loaded = await w.loadAdapterFiles(entries, { name });
      if (loaded.error) return { error: loaded.error };
      const switchMs = [];
      for (let i = 0; i < switches; i++) {
        const s = await w.useAdapter(i % 2 === 0 ? null : name);
        if (s.error) return { error: s.error };
        switchMs.push(s.result.switch_ms);
      }
      const last = await w.useAdapter(name);
      if (last.error) return { error: last.error };
      return { name, attach_ms: loaded.result.attach_ms, switch_ms: switchMs };
    },
    { files, switches: SWITCHES },
  );
  if (r.error) throw new Error(`the adapter could not be used: ${JSON.stringify(r.error)}`);
  return r;
}

async function runGenerate(page, c) {
  await ensureModel(page, c.model);
  const adapter = c.adapter ? await useBenchAdapter(page, c.adapter) : null;
  const r = await page.evaluate(
    async ({ ids, options }) => {
      const rec = await window.webtune.generate({ ids }, options);
      return { status: rec.status, error: rec.error, result: rec.result };
    },
    { ids: c.ids, options: { max_new_tokens: c.max_new_tokens, greedy: true, ignore_eos: true, use_cache: c.use_cache, ...(adapter ? { model: `adapter:${adapter.name}` } : {}) } },
  );
  if (adapter) await page.evaluate((name) => window.webtune.deleteAdapter(name), adapter.name);
  if (r.status !== "done") throw new Error(`generate ended with ${r.status}: ${JSON.stringify(r.error)}`);
  return {
    tokens: r.result.generated_ids.length,
    seconds: r.result.seconds,
    tokens_per_s: r.result.tokens_per_s,
    use_cache: c.use_cache,
    ...(adapter ? { attach_ms: adapter.attach_ms, switch_ms: stats(adapter.switch_ms) } : {}),
  };
}

async function runToy(page, c) {
  const r = await page.evaluate(async (config) => {
    const t0 = performance.now();
    const run = await window.webtune.train(config);
    return { status: run.status, error: run.error, summary: run.summary, progress: run.progress.map((p) => ({ step: p.step, elapsed_s: p.elapsed_s, memory_bytes: p.memory_bytes })), t0, t1: performance.now() };
  }, c.config);
  if (r.status !== "done") throw new Error(`toy run ended with ${r.status}: ${JSON.stringify(r.error)}`);
  const tokensPerStep = c.config.batch_size * c.config.seq_len;
  const memory = r.progress.map((s) => s.memory_bytes).filter((m) => typeof m === "number");
  return {
    ...trainFigures(stepDurations(r.progress), tokensPerStep),
    peak_memory_bytes: memory.length ? Math.max(...memory) : null,
    summary: { first_step_ms: r.summary?.first_step_ms, median_step_ms: r.summary?.median_step_ms, tokens_per_s: r.summary?.tokens_per_s, initial_loss: r.summary?.initial_loss, final_loss: r.summary?.final_loss },
  };
}

/** Dataset throughput: the bytes are fetched first (not timed), then copied to the worker, parsed, validated and tokenized. */
async function runData(page, c) {
  await ensureModel(page, c.model);
  const r = await page.evaluate(
    async ({ url, config }) => {
      const bytes = await (await fetch(url)).arrayBuffer();
      const name = url.split("/").pop();
      const t0 = performance.now();
      const rec = await window.webtune.inspectDataset({ name, bytes }, config);
      const t1 = performance.now();
      return { status: rec.status, error: rec.error, seconds: (t1 - t0) / 1e3, bytes: bytes.byteLength, examples: rec.result?.report?.examples ?? null };
    },
    { url: c.url, config: c.config },
  );
  if (r.status !== "done") throw new Error(`inspectDataset ended with ${r.status}: ${JSON.stringify(r.error)}`);
  return { mb_per_s: r.bytes / 1e6 / r.seconds, seconds: r.seconds, bytes: r.bytes, examples: r.examples };
}

const RUNNERS = { finetune: runFinetune, generate: runGenerate, toy: runToy, data: runData };

/** Every case on a fresh page (so a case that hangs cannot spoil the next one, and page-load
 * figures are comparable); the backend description comes from the first page. */
async function benchBackend(backend) {
  const out = { backend, cases: {} };
  let browser = await launchBrowser();
  out.chromium = browser.version();
  try {
    for (const c of spec.cases ?? []) {
      if (c.backends && !c.backends.includes(backend)) continue;
      let handle = null;
      let timedOut = false;
      try {
        const params = PAGE_PARAMS[backend] ?? { backend };
        handle = await openPage(browser, { ...params, watchdog: Math.ceil(timeoutMs / 1000) + 60 });
        const { page } = handle;
        const message = await waitForBackend(page, 120_000);
        if (out.used === undefined) {
          out.ready_ms = await page.evaluate(() => performance.now());
          out.used = message.backend;
          out.adapter = message.adapter ?? null;
          out.reason = message.reason ?? null;
          out.version = message.version ?? null;
          out.cpu_threads = message.cpu_threads ?? null;
        }
        if (message.backend !== params.backend) {
          out.skipped = `asked for ${backend}, the page chose ${message.backend}: ${message.reason}`;
          return out;
        }
        say(`${backend}: ${c.name} …`);
        const started = Date.now();
        // A software WebGPU adapter (SwiftShader) is orders of magnitude slower: a shorter limit
        // keeps the default bench to minutes; the case then reports the timeout.
        const limit = message.adapter?.is_fallback && spec.fallback_timeout_ms ? spec.fallback_timeout_ms : timeoutMs;
        const result = await withTimeout(RUNNERS[c.kind](page, c), limit, `${c.name} on ${backend}`);
        result.fresh_page = true;
        result.load_avg = loadAverage();
        // Memory of the page and its workers after the case (not a peak); Chromium answers
        // only in cross-origin isolated pages, and only after a garbage collection. With the
        // threaded CPU backend it answered in none of the cases of three runs within 60 s (the
        // pool's workers sit blocked on shared memory), and waiting cost a minute per case.
        if (message.cpu_threads > 1) {
          result.ua_memory_bytes = null;
          result.ua_memory_skipped = "not measured with the thread pool (Chromium does not answer)";
        } else {
          result.ua_memory_bytes = await withTimeout(
            page.evaluate(async () =>
              typeof performance.measureUserAgentSpecificMemory === "function" ? (await performance.measureUserAgentSpecificMemory()).bytes : null,
            ),
            60_000,
            "performance.measureUserAgentSpecificMemory()",
          ).catch(() => null);
        }
        out.cases[c.name] = result;
        say(`${backend}: ${c.name} done in ${((Date.now() - started) / 1e3).toFixed(1)} s`);
      } catch (e) {
        const text = String(e?.message ?? e);
        out.cases[c.name] = { error: text.slice(0, 2000) };
        say(`${backend}: ${c.name} failed: ${text.slice(0, 300)}`);
        timedOut = /timed out/.test(text);
      } finally {
        if (handle) {
          const errors = [...handle.log.pageErrors, ...handle.log.consoleErrors];
          if (errors.length && out.cases[c.name]) out.cases[c.name].page_errors = errors.slice(0, 5);
          await withTimeout(handle.context.close(), 15_000, "the browser context to close").catch(() => {});
        }
      }
      if (timedOut) {
        // The GPU process may still be busy with the abandoned work: start a new browser.
        await withTimeout(browser.close(), 15_000, "chromium to close").catch(() => {});
        browser = await launchBrowser();
      }
    }
  } finally {
    await withTimeout(browser.close(), 15_000, "chromium to close").catch(() => {});
  }
  return out;
}

/** The 1-minute load average (other work on the machine skews every figure). */
function loadAverage() {
  try {
    return Number(fs.readFileSync("/proc/loadavg", "utf8").split(" ")[0]);
  } catch {
    return null;
  }
}

const results = { backends: {} };
for (const backend of backends) {
  try {
    results.backends[backend] = await benchBackend(backend);
  } catch (e) {
    results.backends[backend] = { backend, error: String(e?.message ?? e).slice(0, 2000) };
    say(`${backend}: ${e?.message ?? e}`);
  }
}
results.chromium = Object.values(results.backends).find((b) => b.chromium)?.chromium ?? null;
process.stdout.write(JSON.stringify(results) + "\n");
