// Scale browser tests: a model of SmolLM2-360M's exact shapes (seeded random weights written by
// the native CLI's `webtune shape`, with SmolLM2's tokenizer) loads from files into the page's
// CPU-wasm backend and fine-tunes there. Before the job kept one copy of the model, loading
// this checkpoint trapped the wasm module ("unreachable") after ~7 s.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { CLI, launchBrowser, waitForBackend, waitInPage, withPage, withTimeout, writeArtifactJson } from "./harness.mjs";

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

test("a 360M-parameter model (SmolLM2-360M's shapes) loads from files and fine-tunes on CPU-wasm: finite losses falling on a repeated batch, memory reported", { timeout: 1_200_000 }, async () => {
  assert.ok(CLI, "WEBTUNE_CLI (the native CLI, set by cargo xtask test) writes the checkpoint");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "webtune-smollm2-360m-"));
  try {
    execFileSync(CLI, ["shape", "smollm2-360m", "--out", dir, "--tokenizer", SMOLLM2_GGUF], { stdio: "inherit" });
    const files = ["config.json", "model.safetensors", "tokenizer.json"].map((f) => path.join(dir, f));
    await withPage("scale-360m-cpu", browser, { backend: "cpu" }, async ({ page }) => {
      await waitForBackend(page);
      const index = await page.evaluate(() => window.webtune.loads.length);
      await page.getByTestId("model-files").setInputFiles(files);
      const load = await waitInPage(
        page,
        (i) => {
          const record = window.webtune.loads[i];
          return record && record.status !== "loading" ? { status: record.status, info: record.info, error: record.error } : null;
        },
        index,
        600_000,
        "the 360M checkpoint to load",
      );
      assert.equal(load.error, null, `loading failed: ${JSON.stringify(load.error)}`);
      assert.equal(load.info.parameters, 361_821_120);
      assert.equal(load.info.hidden_size, 960);

      await page.getByTestId("dataset-validation-file").setInputFiles({ name: "valid.jsonl", mimeType: "application/jsonl", buffer: Buffer.from(VALID) });
      const config = {
        batch_size: 1,
        validation_max: 1,
        samples: 0,
        data: { causal: { seq_len: 128 } },
        train: { method: "lora", lora_r: 8, lora_alpha: 16, steps: 3, lr: 1e-2, eval_every: 1000, seed: 0 },
      };
      const run = await withTimeout(
        page.evaluate(({ text, config }) => window.webtune.finetune({ name: "train.jsonl", bytes: text }, config), { text: TRAIN, config }),
        900_000,
        "3 LoRA steps on the 360M model",
      );
      assert.equal(run.error, null, `fine-tuning failed: ${JSON.stringify(run.error)}`);
      const r = run.result;
      writeArtifactJson("scale-360m-cpu.json", { info: load.info, summary: r.summary, memory: r.memory, before: r.before, after: r.after });
      const losses = r.summary.losses;
      console.log(`360M on CPU-wasm: losses ${losses.join(", ")}; memory ${JSON.stringify(r.summary.peak_memory_bytes)} (estimated ${r.memory.total})`);
      assert.equal(losses.length, 3);
      assert.ok(losses.every(Number.isFinite), losses.join(", "));
      // The same batch three times at a high learning rate: the loss goes down.
      assert.ok(losses[2] < losses[0] - 0.5, losses.join(", "));
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
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
