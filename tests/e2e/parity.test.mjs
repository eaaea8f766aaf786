// The training engine's numerics in the browser, against PyTorch itself: the committed 20-step
// reference runs (tools/reference/finetune_reference.py: PyTorch + PEFT on the tiny random GPT-2
// and Llama, LoRA and full fine-tuning, with gradient accumulation, warmup + linear decay, weight
// decay and clipping active) are replayed by the page's worker (window.webtune.replayReference)
// on WebGPU and on the CPU-wasm backend, from the same batches and initial LoRA factors, and the
// per-step losses and gradient norms are compared with PyTorch's.
//
// Tolerances. Native CPU matches PyTorch within 2.2e-6 relative on losses (tests/finetune.rs
// asserts 1e-5). The browser backends run the same f32 arithmetic in another reduction order
// (WebGPU: tiled matmuls and workgroup reductions on the adapter; SwiftShader on a GPU-less
// machine), and twenty optimiser steps compound it, so losses are held to 1e-4 relative (what
// the issue asks of a 20-step run) and grad norms to 1e-3 relative (a norm sums squares of many
// small gradient entries; LoRA's start at ~0.07). A wrong gradient, mask or schedule moves them
// by orders of magnitude more. The measured values are printed and saved as an artifact.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { assertCleanLog, launchBrowser, loadModelFilesFromDisk, waitForBackend, withPage, withTimeout, writeArtifactJson } from "./harness.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const LOSS_RTOL = 1e-4;
const GRAD_NORM_RTOL = 1e-3;
const MODELS = ["gpt2", "llama"];
const METHODS = ["lora", "full"];

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

async function loadFixture(page, name) {
  const dir = path.join(ROOT, "tests/fixtures/tiny_random", name);
  const paths = fs.readdirSync(dir).map((file) => path.join(dir, file));
  const record = await loadModelFilesFromDisk(page, paths, 120_000, `the ${name} fixture to load`);
  assert.equal(record.error, null, `loading ${name} failed: ${JSON.stringify(record.error)}`);
  assert.equal(record.info.architecture, name);
}

function maxRel(ours, theirs) {
  assert.equal(ours.length, theirs.length, `step counts differ: ${ours.length} vs ${theirs.length}`);
  let worst = 0;
  for (let i = 0; i < ours.length; i++) {
    const d = Math.abs(ours[i] - theirs[i]) / Math.max(Math.abs(theirs[i]), 1e-12);
    // NaN compares false: count it as the worst possible.
    worst = d <= worst ? worst : d;
  }
  return worst;
}

// "cpu" is the page's default CPU backend: the threaded module on every core when the page is
// cross-origin isolated (as served here); "cpu-1t" the single-threaded module.
const VARIANTS = [
  { name: "webgpu", params: { backend: "webgpu" } },
  { name: "cpu", params: { backend: "cpu" } },
  { name: "cpu-1t", params: { backend: "cpu", threads: 1 } },
];

for (const { name: variant, params } of VARIANTS) {
  const backend = params.backend;
  test(`${variant}: the 20-step PyTorch/PEFT reference runs replay with PyTorch's losses and grad norms`, { timeout: 900_000 }, async () => {
    const measured = {};
    await withPage(`parity-${variant}`, browser, params, async ({ page, log }) => {
      const message = await waitForBackend(page);
      assert.equal(message.backend, backend);
      if (backend === "cpu") {
        const cores = await page.evaluate(() => navigator.hardwareConcurrency);
        const expected = params.threads ?? cores;
        assert.equal(message.cpu_threads, expected, `CPU threads (reason: ${message.reason})`);
        if (expected > 1) assert.match(message.reason, new RegExp(`runs on ${expected} threads`));
      } else {
        assert.equal(message.cpu_threads, null);
      }
      for (const model of MODELS) {
        await loadFixture(page, model);
        const reference = fs.readFileSync(path.join(ROOT, `tests/fixtures/reference/finetune_${model}.json`), "utf8");
        const expected = JSON.parse(reference);
        for (const method of METHODS) {
          const out = await withTimeout(
            page.evaluate(({ reference, method }) => window.webtune.replayReference(reference, method), { reference, method }),
            600_000,
            `replaying ${model} ${method} on ${backend}`,
          );
          assert.equal(out.error, null, `${model} ${method}: ${JSON.stringify(out.error)}`);
          const { summary, reference_losses: refLosses, reference_grad_norms: refNorms } = out.result;
          // The page replayed what the file holds, all twenty steps.
          assert.deepEqual(refLosses.map(Math.fround), expected[method].losses.map(Math.fround));
          assert.equal(summary.steps, 20);
          assert.equal(summary.backend.startsWith(backend), true, `ran on ${summary.backend}`);
          const loss = maxRel(summary.losses, refLosses);
          const norm = maxRel(summary.grad_norms, refNorms);
          // The run learns: a replay that did nothing would fail here as well as above.
          assert.ok(summary.losses.at(-1) < summary.losses[0], `${model} ${method}: loss did not fall`);
          measured[`${model}_${method}`] = { loss_max_rel: loss, grad_norm_max_rel: norm, losses: summary.losses, reference: refLosses, median_step_ms: summary.median_step_ms };
          console.log(`${variant} ${model} ${method}: losses max rel diff ${loss.toExponential(2)}, grad norms ${norm.toExponential(2)} (${summary.median_step_ms.toFixed(1)} ms/step)`);
          assert.ok(loss <= LOSS_RTOL, `${backend} ${model} ${method}: losses differ from PyTorch by ${loss} relative`);
          assert.ok(norm <= GRAD_NORM_RTOL, `${backend} ${model} ${method}: grad norms differ from PyTorch by ${norm} relative`);
        }
      }
      assertCleanLog(assert, log);
    });
    writeArtifactJson(`parity-${variant}.json`, { loss_rtol: LOSS_RTOL, grad_norm_rtol: GRAD_NORM_RTOL, measured });
  });
}
