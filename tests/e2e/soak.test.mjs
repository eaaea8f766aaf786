// Soak browser test: 20 cycles in one tab on the CPU backend, each one reloading the tiny random
// GPT-2 with the real vocabulary (tests/fixtures/tiny_random/gpt2-vocab), checking the dataset,
// starting a LoRA job and cancelling it after its first step, then running the same job (same
// seed) to the end. Every completed run must equal the first bit for bit, every cancelled one
// must end as cancelled, the page must stay clean, and memory must not drift: the worker's wasm
// linear memory, the worker's JS heap and the page's JS heap (each after a forced GC, array
// buffers included) are measured after every cycle and saved to soak.json.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { assertCleanLog, launchBrowser, waitForBackend, waitInPage, withPage, withTimeout, writeArtifactJson } from "./harness.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const MODEL_DIR = path.join(ROOT, "tests/fixtures/tiny_random/gpt2-vocab");
// tokenizer.json is a symlink; readFileSync follows it.
const MODEL_FILES = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json"];

const COUNTRIES = [
  ["France", "Paris"], ["Germany", "Berlin"], ["Italy", "Rome"], ["Spain", "Madrid"], ["Portugal", "Lisbon"],
  ["Austria", "Vienna"], ["Belgium", "Brussels"], ["Greece", "Athens"], ["Poland", "Warsaw"], ["Norway", "Oslo"],
  ["Sweden", "Stockholm"], ["Finland", "Helsinki"], ["Denmark", "Copenhagen"], ["Ireland", "Dublin"], ["Hungary", "Budapest"],
  ["Egypt", "Cairo"], ["Kenya", "Nairobi"], ["Japan", "Tokyo"], ["China", "Beijing"], ["India", "Delhi"],
  ["Russia", "Moscow"], ["Canada", "Ottawa"], ["Mexico", "Mexico City"], ["Peru", "Lima"], ["Chile", "Santiago"],
  ["Cuba", "Havana"], ["Iran", "Tehran"], ["Iraq", "Baghdad"], ["Syria", "Damascus"], ["Turkey", "Ankara"],
  ["Thailand", "Bangkok"], ["Vietnam", "Hanoi"], ["Nepal", "Kathmandu"], ["Ghana", "Accra"], ["Senegal", "Dakar"],
  ["Morocco", "Rabat"], ["Algeria", "Algiers"], ["Tunisia", "Tunis"], ["Libya", "Tripoli"], ["Sudan", "Khartoum"],
];
const JSONL = COUNTRIES.map(([c, k]) => JSON.stringify({ prompt: `Q: What is the capital of ${c}?`, completion: `A: The capital of ${c} is ${k}.` })).join("\n") + "\n";
// 12 steps with an evaluation every 6: long enough that a cancel after step 1 lands mid-run, short
// enough that a cycle takes seconds. Dropout is off by default, so the run is a function of the seed.
const CONFIG = {
  data: { policy: "skip", causal: { seq_len: 32 } },
  validation_fraction: 0.2,
  batch_size: 4,
  samples: 2,
  sample_tokens: 8,
  train: { method: "lora", lr: 1e-2, steps: 12, eval_every: 6, seed: 7, lora_r: 8, lora_alpha: 16 },
};

const CYCLES = 20;
// Cycles 1..WARM_UP fill the allocators (wasm memory grows to the job's peak in the first cycle and
// never shrinks); drift is measured from the end of this cycle to the end of the last.
const WARM_UP = 3;
const MIB = 1 << 20;
// Bounds on the drift from cycle 3 to cycle 20 (17 cycles), from what was measured (soak.json):
// - the wasm heap's live bytes (the module's allocator counts them) are what a leak grows: every
//   cycle ends in the same state (the model, the last job's fine-tuned model and export), so they
//   must come back to the same count. A leak of 0.06 MiB per cycle fails the 1 MiB bound.
// - the wasm linear memory only grows, in steps of about one [4, 32, 50257] f32 logits tensor
//   (24.5 MiB), when an allocation finds no free block: fragmentation as much as leaks. Since a
//   job keeps one copy of the model (no reload from its export, no merged bytes), it no longer
//   reaches its peak in cycle 1: measured 106 MiB after cycle 1, 131 after cycle 2, then 155
//   from cycle 9 (or from 7, or never) to 20 (the job that reloaded its export held 157.5 MiB
//   from cycle 1), with 20.42 MiB of live heap after every cycle. The bound
//   allows one such step after warm-up; leaking on purpose 1 MiB per cycle grew it by 24.6 MiB
//   at cycle 18 and one model's weights (3.26 MB) per cycle by 73.7 MiB, which the heap bound
//   catches either way.
// - the page's heap grows by about 0.66 MiB: it keeps one load record and two fine-tuning records
//   per cycle by design (window.webtune.loads / finetunes; their JSON grows by 0.35 MiB, logged and
//   in soak.json); the worker's by about 0.08 MiB. Leaking the model files (3.0 MB per load) would
//   add 51 MB.
const WASM_HEAP_DRIFT_BOUND = 1 * MIB;
const WASM_DRIFT_BOUND = 26 * MIB;
const PAGE_HEAP_DRIFT_BOUND = 4 * MIB;
const WORKER_HEAP_DRIFT_BOUND = 2 * MIB;

const OP_TIMEOUT_MS = 180_000;

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/**
 * A CDP session on the page's dedicated worker, reached through the browser session (Playwright
 * offers CDP sessions for pages only): `send(method, params)` runs a command in the worker.
 */
async function workerCdp(workerUrl) {
  const session = await browser.newBrowserCDPSession();
  const { targetInfos } = await session.send("Target.getTargets");
  const target = targetInfos.find((t) => t.type === "worker" && t.url === workerUrl);
  assert.ok(target, `a CDP target for ${workerUrl} among ${JSON.stringify(targetInfos.map((t) => [t.type, t.url]))}`);
  const { sessionId } = await session.send("Target.attachToTarget", { targetId: target.targetId, flatten: false });
  let nextId = 1;
  const waiting = new Map();
  session.on("Target.receivedMessageFromTarget", (event) => {
    if (event.sessionId !== sessionId) return;
    const message = JSON.parse(event.message);
    const settle = waiting.get(message.id);
    if (!settle) return;
    waiting.delete(message.id);
    if (message.error) settle.reject(new Error(`${message.error.message} (${JSON.stringify(message.error)})`));
    else settle.resolve(message.result);
  });
  const send = (method, params = {}) => {
    const id = nextId++;
    const reply = new Promise((resolve, reject) => waiting.set(id, { resolve, reject }));
    session.send("Target.sendMessageToTarget", { sessionId, message: JSON.stringify({ id, method, params }) });
    return withTimeout(reply, 30_000, `the worker's answer to ${method}`);
  };
  return { send, detach: () => session.detach().catch(() => {}) };
}

/** JS heap after a full GC: objects plus array-buffer and external-string backing stores. */
async function heapAfterGc(send) {
  await send("HeapProfiler.collectGarbage");
  const usage = await send("Runtime.getHeapUsage");
  return { used: usage.usedSize, backing: usage.backingStorageSize, total: usage.usedSize + usage.backingStorageSize };
}

/**
 * What must be identical between runs of the same job: losses, gradient norms, learning rates,
 * evaluations and samples. Fields are picked by name: timings (`seconds`) differ run to run.
 */
function outcome(result) {
  const s = result.summary;
  const evaluation = (e) => (e ? { loss: e.loss, perplexity: e.perplexity, tokens: e.tokens } : e);
  return {
    losses: s.losses,
    grad_norms: s.grad_norms,
    lrs: s.lrs,
    eval: s.eval.map((e) => ({ step: e.step, ...evaluation(e) })),
    before: evaluation(result.before),
    after: evaluation(result.after),
    samples: result.samples.map((x) => ({ prompt: x.prompt, reference: x.reference, before: x.before, after: x.after })),
  };
}

const mib = (bytes) => (bytes / MIB).toFixed(2);

test("soak: 20 × (reload the model, check the data, cancel a job after step 1, run it again to the end) in one tab: identical results, no memory drift", { timeout: 1_800_000 }, async () => {
  await withPage("soak", browser, { backend: "cpu" }, async ({ context, page, log }) => {
    await waitForBackend(page);
    const worker = page.workers().find((w) => new URL(w.url()).pathname.endsWith("/worker.js"));
    assert.ok(worker, `the compute worker among ${JSON.stringify(page.workers().map((w) => w.url()))}`);
    const workerSession = await workerCdp(worker.url());
    const pageSession = await context.newCDPSession(page);
    const pageSend = (method, params) => withTimeout(pageSession.send(method, params), 30_000, `the page's answer to ${method}`);

    // The fixture's files, decoded once and kept in the page: each cycle hands copies to
    // loadModelFiles, as picking the same files again would.
    const files = MODEL_FILES.map((name) => ({ name, b64: fs.readFileSync(path.join(MODEL_DIR, name)).toString("base64") }));
    await page.evaluate((list) => {
      window.soakModelFiles = list.map((f) => ({ name: f.name, bytes: Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0)) }));
    }, files);

    const cycles = [];
    let reference = null;
    const started = Date.now();
    try {
      for (let cycle = 1; cycle <= CYCLES; cycle++) {
        const t0 = Date.now();
        const load = await withTimeout(
          page.evaluate(() => window.webtune.loadModelFiles(window.soakModelFiles).then((r) => ({ status: r.status, error: r.error }))),
          OP_TIMEOUT_MS,
          `cycle ${cycle}: loading the model`,
        );
        assert.deepEqual(load, { status: "done", error: null }, `cycle ${cycle}: the model loads`);
        const inspected = await withTimeout(
          page.evaluate(
            ({ text, config }) =>
              window.webtune.inspectDataset({ name: "capitals.jsonl", bytes: text }, config).then((r) => ({ status: r.status, error: r.error, examples: r.result?.report.examples })),
            { text: JSONL, config: CONFIG },
          ),
          OP_TIMEOUT_MS,
          `cycle ${cycle}: checking the dataset`,
        );
        assert.deepEqual(inspected, { status: "done", error: null, examples: COUNTRIES.length }, `cycle ${cycle}: the dataset is checked`);

        // Start the job on the chosen dataset and cancel it once a step has been reported (it
        // stops after its current step, then is evaluated and exported as a finished one is).
        const index = await page.evaluate((config) => {
          window.soakCancelled = window.webtune.finetune(null, config);
          return window.webtune.finetunes.length - 1;
        }, CONFIG);
        await waitInPage(
          page,
          (i) => window.webtune.finetunes[i]?.events.some((e) => e.type === "step" && e.step >= 1),
          index,
          OP_TIMEOUT_MS,
          `cycle ${cycle}: the first step of the job to cancel`,
        );
        await page.evaluate(() => window.webtune.cancel());
        const cancelled = await withTimeout(
          page.evaluate(() => window.soakCancelled.then((r) => ({ status: r.status, error: r.error, summary: r.result?.summary ?? null, after: r.result?.after ?? null }))),
          OP_TIMEOUT_MS,
          `cycle ${cycle}: the cancelled job to end`,
        );
        assert.equal(cancelled.error, null, `cycle ${cycle}: the cancelled job has no error`);
        assert.equal(cancelled.status, "cancelled", `cycle ${cycle}: the job ends as cancelled`);
        assert.equal(cancelled.summary.cancelled, true);
        const stoppedAt = cancelled.summary.steps;
        assert.ok(stoppedAt >= 1 && stoppedAt < CONFIG.train.steps, `cycle ${cycle}: cancelled after ${stoppedAt} of ${CONFIG.train.steps} steps`);
        assert.ok(cancelled.after, `cycle ${cycle}: the cancelled job's model is still evaluated`);

        // The same job to the end.
        const full = await withTimeout(
          page.evaluate((config) => window.webtune.finetune(null, config).then((r) => ({ status: r.status, error: r.error, result: r.result })), CONFIG),
          OP_TIMEOUT_MS,
          `cycle ${cycle}: the full job`,
        );
        assert.equal(full.error, null, `cycle ${cycle}: the full job has no error`);
        assert.equal(full.status, "done");
        assert.equal(full.result.summary.steps, CONFIG.train.steps);
        const result = outcome(full.result);
        // Same seed, same data, same code: the CPU backend must give the same numbers bit for
        // bit (deepStrictEqual compares with Object.is), on every reload.
        if (reference === null) reference = result;
        else assert.deepStrictEqual(result, reference, `cycle ${cycle}: the full run equals cycle 1's`);
        // The cancelled run trained the same steps before it stopped.
        assert.deepStrictEqual(cancelled.summary.losses, result.losses.slice(0, stoppedAt), `cycle ${cycle}: the cancelled run's losses are the full run's first ${stoppedAt}`);
        assert.equal(await page.evaluate(() => window.webtune.workerState), "ready", `cycle ${cycle}: the worker is ready again`);
        assertCleanLog(assert, log, `cycle ${cycle}`);
        const seconds = (Date.now() - t0) / 1000;

        const wasm = await withTimeout(worker.evaluate(() => self.webtuneWasmMemoryBytes()), 30_000, "the worker's wasm memory size");
        assert.ok(Number.isInteger(wasm) && wasm > 0, `the wasm memory size hook answers (${wasm})`);
        const wasmHeap = await withTimeout(worker.evaluate(() => self.webtuneWasmHeapBytes()), 30_000, "the worker's wasm heap in use");
        assert.ok(Number.isInteger(wasmHeap) && wasmHeap > 0 && wasmHeap < wasm, `the wasm heap hook answers (${wasmHeap})`);
        const workerHeap = await heapAfterGc(workerSession.send);
        const pageHeap = await heapAfterGc(pageSend);
        // What the page keeps on purpose, to tell history from a leak.
        const recordsJsonBytes = await page.evaluate(() => JSON.stringify({ loads: window.webtune.loads, finetunes: window.webtune.finetunes }).length);
        cycles.push({ cycle, seconds, cancelled_after_step: stoppedAt, wasm_memory_bytes: wasm, wasm_heap_bytes: wasmHeap, worker_heap: workerHeap, page_heap: pageHeap, records_json_bytes: recordsJsonBytes });
        console.log(
          `cycle ${cycle}: ${seconds.toFixed(1)} s, cancelled after step ${stoppedAt}, wasm ${mib(wasm)} MiB (heap in use ${mib(wasmHeap)} MiB), ` +
            `worker heap ${mib(workerHeap.total)} MiB, page heap ${mib(pageHeap.total)} MiB`,
        );
      }
    } finally {
      await workerSession.detach();
      writeArtifactJson("soak.json", {
        config: CONFIG,
        cycles_planned: CYCLES,
        warm_up: WARM_UP,
        bounds_bytes: { wasm: WASM_DRIFT_BOUND, wasm_heap: WASM_HEAP_DRIFT_BOUND, page_heap: PAGE_HEAP_DRIFT_BOUND, worker_heap: WORKER_HEAP_DRIFT_BOUND },
        reference_losses: reference?.losses ?? null,
        cycles,
      });
    }

    const warm = cycles[WARM_UP - 1];
    const last = cycles.at(-1);
    const drift = {
      wasm: last.wasm_memory_bytes - warm.wasm_memory_bytes,
      wasm_heap: last.wasm_heap_bytes - warm.wasm_heap_bytes,
      worker_heap: last.worker_heap.total - warm.worker_heap.total,
      page_heap: last.page_heap.total - warm.page_heap.total,
    };
    const perCycle = cycles.map((c) => c.seconds);
    console.log(
      `soak: ${CYCLES} cycles in ${((Date.now() - started) / 1000).toFixed(0)} s ` +
        `(per cycle ${Math.min(...perCycle).toFixed(1)}–${Math.max(...perCycle).toFixed(1)} s, median ${perCycle.toSorted((a, b) => a - b)[CYCLES >> 1].toFixed(1)} s); ` +
        `drift from cycle ${WARM_UP} to ${CYCLES}: wasm ${mib(drift.wasm)} MiB (${mib(last.wasm_memory_bytes)} MiB in all; heap in use ${mib(drift.wasm_heap)} MiB), ` +
        `worker heap ${mib(drift.worker_heap)} MiB, page heap ${mib(drift.page_heap)} MiB ` +
        `(its records, as JSON, ${mib(last.records_json_bytes - warm.records_json_bytes)} MiB)`,
    );
    assert.ok(drift.wasm_heap <= WASM_HEAP_DRIFT_BOUND, `the wasm heap in use grew by ${mib(drift.wasm_heap)} MiB from cycle ${WARM_UP} to ${CYCLES} (bound ${mib(WASM_HEAP_DRIFT_BOUND)} MiB)`);
    assert.ok(drift.wasm <= WASM_DRIFT_BOUND, `wasm memory grew by ${mib(drift.wasm)} MiB from cycle ${WARM_UP} to ${CYCLES} (bound ${mib(WASM_DRIFT_BOUND)} MiB)`);
    assert.ok(drift.worker_heap <= WORKER_HEAP_DRIFT_BOUND, `the worker's JS heap grew by ${mib(drift.worker_heap)} MiB (bound ${mib(WORKER_HEAP_DRIFT_BOUND)} MiB)`);
    assert.ok(drift.page_heap <= PAGE_HEAP_DRIFT_BOUND, `the page's JS heap grew by ${mib(drift.page_heap)} MiB (bound ${mib(PAGE_HEAP_DRIFT_BOUND)} MiB)`);

    // Still usable: a generation with the last fine-tuned model.
    const gen = await withTimeout(
      page.evaluate(() => window.webtune.generate("Q: What is the capital of Peru?", { greedy: true, max_new_tokens: 4, ignore_eos: true, model: "tuned" }).then((r) => ({ status: r.status, error: r.error, tokens: r.result?.generated_ids.length }))),
      60_000,
      "a generation after the soak",
    );
    assert.deepEqual(gen, { status: "done", error: null, tokens: 4 });
    assertCleanLog(assert, log);
  });
});
