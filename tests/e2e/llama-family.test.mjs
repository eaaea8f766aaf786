// The Llama family in the browser, against transformers: the tiny random Llama (GQA 4/2, untied
// head), Qwen2 (q/k/v biases), Llama with Llama 3.1 rope scaling, Mistral with an 8-position
// sliding window (it matters on the 20- and 64-token cases), and the tiny Llama as a GGUF file
// with llama.cpp's q/k row permutation — loaded in the page on the CPU-wasm backend and on
// WebGPU, logits of every position compared with transformers' (tools/reference/tiny_models.py,
// tiny_variants.py) and greedy generation (KV cache) compared token for token.
//
// Tolerance: 1e-4 max |Δ| on both backends, as the issue asks. Native webtune measures 2e-7
// (Llama) to 5e-6 (the variants, whose logits reach ±4.6); the measured values are printed and
// saved. A wrong mask, rope or bias moves logits by > 0.07 (asserted in the reference script).

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { assertCleanLog, launchBrowser, loadModelFilesFromDisk, maxAbsDiff, waitForBackend, withPage, withTimeout, writeArtifactJson } from "./harness.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const TOLERANCE = 1e-4;
// SwiftShader compiles every new kernel shape: the first calls take tens of seconds.
const OP_TIMEOUT_MS = { cpu: 60_000, webgpu: 300_000 };

const read = (rel) => JSON.parse(fs.readFileSync(path.join(ROOT, rel), "utf8"));
const variants = read("tests/fixtures/reference/tiny_variants.json").models;
const MODELS = [
  { name: "llama", dir: "tests/fixtures/tiny_random/llama", ref: read("tests/fixtures/reference/tiny_llama.json"), architecture: "llama" },
  ...["qwen2", "llama3_rope", "mistral_sw"].map((name) => ({ name, dir: `tests/fixtures/tiny_random/${name}`, ref: variants[name], architecture: variants[name].config.model_type })),
  // The same weights as `llama`, stored the way llama.cpp's converter stores them.
  { name: "llama_gguf", files: ["tests/fixtures/tiny_gguf/tiny_llama_f32.gguf"], ref: read("tests/fixtures/reference/tiny_llama.json"), architecture: "llama" },
];

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

async function load(page, model, ms) {
  const paths = (model.files ?? fs.readdirSync(path.join(ROOT, model.dir)).map((f) => path.join(model.dir, f))).map((p) => path.join(ROOT, p));
  const record = await loadModelFilesFromDisk(page, paths, ms, `${model.name} to load`);
  assert.equal(record.error, null, `loading ${model.name} failed: ${JSON.stringify(record.error)}`);
  assert.equal(record.info.architecture, model.architecture);
  return record.info;
}

for (const backend of ["cpu", "webgpu"]) {
  test(`${backend}: Llama, Qwen2, Llama 3 rope, Mistral's sliding window and a GGUF give transformers' logits and greedy tokens`, { timeout: 1_800_000 }, async () => {
    const measured = {};
    await withPage(`llama-family-${backend}`, browser, { backend }, async ({ page, log }) => {
      const message = await waitForBackend(page);
      assert.equal(message.backend, backend);
      for (const model of MODELS) {
        await load(page, model, OP_TIMEOUT_MS[backend]);
        const vocab = model.ref.config.vocab_size;
        const out = (measured[model.name] = { cases: {}, generation: [] });
        for (const c of model.ref.cases) {
          const got = await withTimeout(
            page.evaluate(async (ids) => {
              const r = await window.webtune.logits(ids);
              return { shape: r.shape, data: r.data ? Array.from(r.data) : null, error: r.error };
            }, c.input_ids),
            OP_TIMEOUT_MS[backend],
            `${model.name} logits of ${c.name} on ${backend}`,
          );
          assert.equal(got.error, null, `${model.name} ${c.name}: ${JSON.stringify(got.error)}`);
          assert.deepEqual(got.shape, [c.input_ids.length, vocab]);
          const diff = maxAbsDiff(got.data, c.logits.flat());
          out.cases[c.name] = diff.max;
          assert.ok(diff.max <= TOLERANCE, `${backend} ${model.name} ${c.name}: max |Δ| ${diff.max} at ${diff.at}`);
          const argmax = c.input_ids.map((_, t) => {
            const row = got.data.slice(t * vocab, (t + 1) * vocab);
            return row.indexOf(Math.max(...row));
          });
          assert.deepEqual(argmax, c.argmax, `${backend} ${model.name} argmax of ${c.name}`);
        }
        const generations = Array.isArray(model.ref.generation) ? model.ref.generation : [model.ref.generation, ...(model.ref.generation_more ?? [])];
        for (const g of generations) {
          const gen = await withTimeout(
            page.evaluate(
              ({ input, options }) => window.webtune.generate(input, options),
              { input: { ids: g.prompt_ids }, options: { greedy: true, max_new_tokens: g.generated_ids.length, ignore_eos: true } },
            ),
            OP_TIMEOUT_MS[backend],
            `${model.name} greedy generation on ${backend}`,
          );
          assert.equal(gen.error, null, `${model.name} generation: ${JSON.stringify(gen.error)}`);
          assert.deepEqual(gen.result.generated_ids, g.generated_ids, `${backend} ${model.name} greedy ids from ${JSON.stringify(g.prompt_ids)}`);
          out.generation.push(gen.result.generated_ids.length);
        }
        const worst = Math.max(...Object.values(out.cases));
        console.log(`${backend} ${model.name}: logits max |Δ| ${worst.toExponential(2)} over ${Object.keys(out.cases).length} cases; greedy ${out.generation.join("+")} tokens equal`);
      }
      assertCleanLog(assert, log);
    });
    writeArtifactJson(`llama-family-${backend}.json`, { tolerance: TOLERANCE, measured });
  });
}
