// Scale browser tests: a model of SmolLM2-360M's exact shapes (seeded random weights written by
// the native CLI's `webtune shape`, with SmolLM2's tokenizer) loads from files into the page's
// CPU-wasm backend and fine-tunes there. Before the job kept one copy of the model, loading
// this checkpoint trapped the wasm module ("unreachable") after ~7 s. Qwen2.5-0.5B's and
// SmolLM2-1.7B's shapes load with their projections quantized (8 and 4 bits) for QLoRA.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { CLI, launchBrowser, loadDefaultModel, pickModelFiles, waitForBackend, waitInPage, withPage, withTimeout, writeArtifactJson } from "./harness.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const SMOLLM2_GGUF = path.join(ROOT, "www/models/smollm2-135m-instruct/resolve/main/SmolLM2-135M-Instruct.Q4_1.gguf");
// One training example (every step sees the same batch) and one held-out example.
const TRAIN = JSON.stringify({ prompt: "The capital of France is", completion: " Paris, a city on the Seine known for the Louvre and the Eiffel Tower." }) + "\n";
const VALID = JSON.stringify({ prompt: "The capital of Peru is", completion: " Lima." }) + "\n";

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** `fn(files)` over a checkpoint of `shape`'s exact shapes (`webtune shape`, SmolLM2's tokenizer),
 * written to a temporary folder and removed afterwards. */
async function withShapeCheckpoint(shape, fn) {
  assert.ok(CLI, "WEBTUNE_CLI (the native CLI, set by cargo xtask test) writes the checkpoint");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `webtune-${shape}-`));
  try {
    execFileSync(CLI, ["shape", shape, "--out", dir, "--tokenizer", SMOLLM2_GGUF], { stdio: "inherit" });
    await fn(["config.json", "model.safetensors", "tokenizer.json"].map((f) => path.join(dir, f)));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Three LoRA steps of 1 × 128 tokens on the TRAIN example at a high learning rate (`train`
 * overrides the training settings), with VALID as the validation file; asserts they ran and the
 * losses are finite and fall (the same batch three times), writes `label`'s artifact and
 * returns the job's result. */
async function threeSteps(page, label, info, train, timeout) {
  await withTimeout(page.evaluate((text) => window.webtune.setValidationFile({ name: "valid.jsonl", bytes: text }), VALID), 60_000, "the validation file");
  assert.match(await page.getByTestId("dataset-validation-name").textContent(), /^valid\.jsonl/);
  const config = {
    batch_size: 1,
    validation_max: 1,
    samples: 0,
    data: { causal: { seq_len: 128 } },
    train: { method: "lora", lora_r: 8, lora_alpha: 16, steps: 3, lr: 1e-2, eval_every: 1000, seed: 0, ...train },
  };
  const run = await withTimeout(
    page.evaluate(({ text, config }) => window.webtune.finetune({ name: "train.jsonl", bytes: text }, config), { text: TRAIN, config }),
    timeout,
    `3 steps on ${label}`,
  );
  assert.equal(run.error, null, `fine-tuning failed: ${JSON.stringify(run.error)}`);
  const r = run.result;
  writeArtifactJson(`${label}.json`, { info, summary: r.summary, memory: r.memory, before: r.before, after: r.after });
  const losses = r.summary.losses;
  console.log(`${label}: losses ${losses.join(", ")}; memory ${r.summary.peak_memory_bytes} (estimated ${r.memory.peak}); load held ${info.load_bytes} of ${info.stored_bytes} file bytes`);
  assert.equal(losses.length, 3);
  assert.ok(losses.every(Number.isFinite), losses.join(", "));
  assert.ok(losses[2] < losses[0] - 0.5, losses.join(", "));
  return r;
}

test("a 360M-parameter model (SmolLM2-360M's shapes) loads from files and fine-tunes on CPU-wasm: finite losses falling on a repeated batch, memory reported", { timeout: 1_200_000 }, async () => {
  await withShapeCheckpoint("smollm2-360m", async (files) => {
    await withPage("scale-360m-cpu", browser, { backend: "cpu" }, async ({ page }) => {
      await waitForBackend(page);
      const load = await pickModelFiles(page, files, 600_000, "the 360M checkpoint to load");
      assert.equal(load.error, null, `loading failed: ${JSON.stringify(load.error)}`);
      assert.equal(load.info.parameters, 361_821_120);
      assert.equal(load.info.hidden_size, 960);

      const r = await threeSteps(page, "scale-360m-cpu", load.info, {}, 900_000);
      assert.ok(r.summary.peak_memory_bytes > 1_000_000_000, `memory reported: ${r.summary.peak_memory_bytes}`);
      assert.ok(r.memory.total > 1_000_000_000, `estimate: ${r.memory.total}`);
      // The page stays usable: the fine-tuned model answers.
      const gen = await withTimeout(
        page.evaluate(() => window.webtune.generate("The capital of", { model: "tuned", max_new_tokens: 2, greedy: true })),
        300_000,
        "generation with the tuned 360M model",
      );
      assert.equal(gen.error ?? null, null, JSON.stringify(gen.error));
    });
  });
});

test("Qwen2.5-0.5B's shapes load with 8-bit projections from files (read a tensor at a time) and QLoRA fine-tunes on CPU-wasm: finite losses falling on a repeated batch, memory reported; full fine-tuning of that base is refused", { timeout: 1_200_000 }, async () => {
  await withShapeCheckpoint("qwen2.5-0.5b", async (files) => {
    await withPage("scale-qwen-q8-cpu", browser, { backend: "cpu" }, async ({ page }) => {
      await waitForBackend(page);
      await page.getByTestId("model-precision").selectOption("q8");
      const load = await pickModelFiles(page, files, 600_000, "the 0.5B checkpoint to load in 8 bits");
      assert.equal(load.error, null, `loading failed: ${JSON.stringify(load.error)}`);
      const info = load.info;
      assert.equal(info.architecture, "qwen2");
      assert.equal(info.hidden_size, 896);
      // Every projection of the 24 layers (q, k, v, o, gate, up, down) came in as 8 bits: the
      // loaded base is about a third of its f32 size, and the file was never held whole.
      const projections = 24 * (2 * 896 * 896 + 2 * 896 * 128 + 3 * 896 * 4864);
      assert.equal(info.compact?.quant, "q8", JSON.stringify(info.compact));
      assert.equal(info.compact.values, projections, JSON.stringify(info.compact));
      assert.ok(info.compact.bytes < info.compact.values * 1.2, JSON.stringify(info.compact));
      // Loading held one tensor at a time (the largest: the bf16 embedding), not the 988 MB file.
      assert.equal(info.load_bytes, 151_936 * 896 * 2, JSON.stringify([info.load_bytes, info.stored_bytes]));
      assert.ok(info.stored_bytes > 3 * info.load_bytes, JSON.stringify([info.load_bytes, info.stored_bytes]));
      assert.match(await page.getByTestId("model-memory").textContent(), /projections in q8/);
      // The Fine-tune panel follows the base: 8-bit, LoRA only.
      assert.equal(await page.getByTestId("ft-base-quant").inputValue(), "q8");
      assert.equal(await page.getByTestId("ft-base-quant").isDisabled(), true);

      // Full fine-tuning would train the quantized projections: refused before any step.
      await withTimeout(page.evaluate((text) => window.webtune.setValidationFile({ name: "valid.jsonl", bytes: text }), VALID), 60_000, "the validation file");
      const config = {
        batch_size: 1,
        validation_max: 1,
        samples: 0,
        data: { causal: { seq_len: 128 } },
        train: { method: "full", steps: 3, lr: 1e-2, eval_every: 1000, seed: 0 },
      };
      const full = await withTimeout(
        page.evaluate(({ text, config }) => window.webtune.finetune({ name: "train.jsonl", bytes: text }, config), { text: TRAIN, config }),
        300_000,
        "the refusal of full fine-tuning",
      );
      assert.equal(full.error?.code, "config.invalid", JSON.stringify(full.error));
      assert.match(full.error.message, /loaded with its projections in 8 bits/);

      const r = await threeSteps(page, "scale-qwen-q8-cpu", info, { quantize_base: "q8" }, 900_000);
      assert.equal(r.summary.quantized_base?.bits, 8, JSON.stringify(r.summary.quantized_base));
      assert.ok(r.summary.peak_memory_bytes > 500_000_000, `memory reported: ${r.summary.peak_memory_bytes}`);
    });
  });
});

test("SmolLM2-1.7B's shapes load with 4-bit projections (two values to a byte) and QLoRA fine-tunes on CPU-wasm: finite losses falling on a repeated batch, memory reported and under the module's 4 GiB", { timeout: 1_800_000 }, async () => {
  await withShapeCheckpoint("smollm2-1.7b", async (files) => {
    await withPage("scale-1.7b-q4-cpu", browser, { backend: "cpu" }, async ({ page }) => {
      await waitForBackend(page);
      await page.getByTestId("model-precision").selectOption("q4");
      const load = await pickModelFiles(page, files, 1_200_000, "the 1.7B checkpoint to load in 4 bits");
      assert.equal(load.error, null, `loading failed: ${JSON.stringify(load.error)}`);
      const info = load.info;
      assert.equal(info.hidden_size, 2048);
      // Every projection of the 24 layers came in as 4 bits, packed: half a byte a value plus an
      // f16 scale per 32 values (burn's CPU storage would be a byte and an f32 scale).
      const projections = 24 * (4 * 2048 * 2048 + 3 * 2048 * 8192);
      assert.equal(info.compact?.quant, "q4", JSON.stringify(info.compact));
      assert.equal(info.compact.values, projections, JSON.stringify(info.compact));
      assert.equal(info.compact.bytes, projections / 2 + (projections / 32) * 2, JSON.stringify(info.compact));
      assert.match(await page.getByTestId("model-memory").textContent(), /projections in q4/);

      const r = await threeSteps(page, "scale-1.7b-q4-cpu", info, { lr: 3e-3, quantize_base: "q4" }, 1_200_000);
      assert.equal(r.summary.quantized_base?.bits, 4, JSON.stringify(r.summary.quantized_base));
      // More than the packed base alone (0.9 GB); the module stays under its 4 GiB.
      assert.ok(r.summary.peak_memory_bytes > info.compact.bytes, `memory reported: ${r.summary.peak_memory_bytes}`);
      assert.ok(r.summary.peak_memory_bytes < 4 * 2 ** 30, `memory reported: ${r.summary.peak_memory_bytes}`);
    });
  });
});

test("QLoRA in the page: the default SmolLM2 fine-tunes on CPU-wasm with its frozen base in 8 bits (chosen in the Fine-tune panel), before/after shown, a whole f32 export", { timeout: 1_200_000 }, async () => {
  await withPage("scale-qlora-q8-cpu", browser, { backend: "cpu" }, async ({ page }) => {
    await waitForBackend(page);
    const loaded = await loadDefaultModel(page, 300_000, "SmolLM2 to load");
    assert.equal(loaded.error, null, JSON.stringify(loaded.error));

    // Short rows and a 1% validation share keep each evaluation to seconds (as smollm2-qa does).
    await page.getByLabel("Sequence length (tokens)").fill("64");
    await page.getByLabel("Validation share").fill("0.01");
    await page.getByLabel("Sample dataset").selectOption("chatterbot_english_qa.jsonl");
    await page.getByTestId("use-sample").click();
    await waitInPage(page, () => document.querySelector("[data-testid=dataset-state]")?.dataset.outcome === "done", null, 120_000, "the sample's report");

    // The Fine-tune panel: LoRA with the frozen base in 8 bits, 3 steps of 2 rows.
    await page.getByTestId("ft-method").selectOption("lora");
    assert.equal(await page.getByTestId("ft-base-quant").isVisible(), true, "the base precision is offered for LoRA");
    await page.getByTestId("ft-base-quant").selectOption("q8");
    await page.getByTestId("ft-steps").fill("3");
    await page.getByTestId("ft-lr").fill("0.002");
    await page.getByTestId("ft-batch-size").fill("2");
    const run = await withTimeout(page.evaluate(() => window.webtune.finetune(null)), 900_000, "QLoRA on SmolLM2 in the page");
    assert.equal(run.error, null, `fine-tuning failed: ${JSON.stringify(run.error)}`);
    assert.equal(run.config.train.quantize_base, "q8", JSON.stringify(run.config.train));
    const r = run.result;
    const q = r.summary.quantized_base;
    console.log(`QLoRA q8 in the page: losses ${r.summary.losses.join(", ")}; before ${r.before.loss}, after ${r.after.loss}; base ${q?.f32_bytes} -> ${q?.quantized_bytes} bytes; memory ${r.summary.peak_memory_bytes} (estimated ${r.memory.peak})`);
    writeArtifactJson("scale-qlora-q8-cpu.json", { summary: r.summary, memory: r.memory, before: r.before, after: r.after });
    // Every linear projection of the 30 layers (q, k, v, o, gate, up, down) is stored in 8 bits.
    assert.equal(q?.bits, 8, JSON.stringify(q));
    assert.equal(q.tensors, 30 * 7, JSON.stringify(q));
    assert.ok(q.quantized_bytes * 3 < q.f32_bytes, JSON.stringify(q));
    assert.equal(r.summary.losses.length, 3);
    assert.ok(r.summary.losses.every(Number.isFinite), r.summary.losses.join(", "));
    assert.ok(Number.isFinite(r.before.loss) && Number.isFinite(r.after.loss), JSON.stringify([r.before, r.after]));
    assert.ok(r.summary.peak_memory_bytes > 0 && r.memory.peak > 0);
    await waitInPage(page, () => !document.querySelector("[data-testid=before-after]")?.hidden, null, 30_000, "the before/after table");

    // The export is a whole f32 model: the merged weights' header says F32 for every tensor.
    const exported = await withTimeout(
      page.evaluate(async () => {
        const out = await window.webtune.exportFiles();
        const w = out.files?.["merged/model.safetensors"];
        if (!w) return { error: out.error, names: out.files ? Object.keys(out.files) : null };
        const n = Number(new DataView(w.buffer, w.byteOffset, 8).getBigUint64(0, true));
        const header = JSON.parse(new TextDecoder().decode(w.subarray(8, 8 + n)));
        const tensors = Object.entries(header).filter(([k]) => k !== "__metadata__");
        const end = Math.max(...tensors.map(([, t]) => t.data_offsets[1]));
        return { complete: 8 + n + end === w.byteLength, dtypes: [...new Set(tensors.map(([, t]) => t.dtype))], tensors: tensors.length };
      }),
      300_000,
      "the QLoRA export",
    );
    assert.deepEqual({ complete: exported.complete, dtypes: exported.dtypes }, { complete: true, dtypes: ["F32"] }, JSON.stringify(exported));
  });
});

test("a model the page's CPU backend cannot hold is refused before any weight is read (memory.insufficient, with the estimate and what would fit); the loaded model stays usable", { timeout: 300_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "webtune-too-large-"));
  try {
    // SmolLM2-1.7B's config and a weights file that declares 1.23 G bf16 values (4.9 GB as the
    // f32 weights the CPU backend builds): only its header is written, since the refusal must
    // come from the header alone, before any weight is read.
    const config = { architectures: ["LlamaForCausalLM"], model_type: "llama", hidden_size: 2048, intermediate_size: 8192, num_hidden_layers: 24, num_attention_heads: 32, num_key_value_heads: 32, vocab_size: 49152, max_position_embeddings: 8192, rms_norm_eps: 1e-5, tie_word_embeddings: true };
    const values = 600_000 * 2048;
    const header = Buffer.from(JSON.stringify({ "model.embed_tokens.weight": { dtype: "BF16", shape: [600_000, 2048], data_offsets: [0, values * 2] } }));
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(header.length));
    fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify(config));
    fs.writeFileSync(path.join(dir, "model.safetensors"), Buffer.concat([length, header]));
    const tiny = path.join(ROOT, "tests/fixtures/tiny_random/gpt2");

    await withPage("scale-too-large-cpu", browser, { backend: "cpu" }, async ({ page }) => {
      await waitForBackend(page);
      const tinyFiles = ["config.json", "generation_config.json", "model.safetensors"].map((f) => path.join(tiny, f));
      const small = await pickModelFiles(page, tinyFiles, 120_000, "the tiny model to load");
      assert.equal(small.error, null, JSON.stringify(small.error));

      const big = await pickModelFiles(page, [path.join(dir, "config.json"), path.join(dir, "model.safetensors")], 120_000, "the refusal");
      assert.equal(big.error?.code, "memory.insufficient", JSON.stringify(big.error));
      assert.match(big.error.message, /WebAssembly module can address: load it with its projections in 8 bits \(QLoRA\), use the WebGPU backend/);
      assert.equal(big.error.details.parameters, values);
      assert.ok(big.error.details.needed_bytes > 4 * 2 ** 30, JSON.stringify(big.error.details));

      // Nothing trapped: the tiny model is still the loaded one, and it still generates.
      assert.deepEqual(await page.evaluate(() => window.webtune.model), small.info);
      const gen = await withTimeout(page.evaluate(() => window.webtune.generate({ ids: [1, 2, 3] }, { greedy: true, max_new_tokens: 3, ignore_eos: true })), 60_000, "a generation after the refusal");
      assert.equal(gen.error ?? null, null, JSON.stringify(gen.error));
      assert.equal(gen.result.generated_ids.length, 3);
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
