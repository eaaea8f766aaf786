// The causal flow of the page as a person meets it (issue 9): the default model (SmolLM2-135M-
// Instruct, the real GGUF served with the page) is loaded with its button, the Q&A sample
// (www/samples/chatterbot_english_qa.jsonl) is chosen in the dataset panel, the base model is
// scored by itself ("before"), the quick preset is fine-tuned with LoRA from the panel, and the
// results panel shows before/after loss and perplexity, exact match and token F1, and the
// held-out prompts answered by both models next to the dataset's own answers.
//
// CPU only: headless chromium's WebGPU is SwiftShader, far too slow for 135M parameters. On
// CPU-wasm greedy generation (a few tokens/s) and training (tens of tokens/s) set the cost, so
// the settings below keep both small; each stage's seconds are printed and saved.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { artifactPath, assertCleanLog, launchBrowser, loadDefaultModel, waitForBackend, waitInPage, withPage, withTimeout, writeArtifactJson } from "./harness.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const SAMPLE = "chatterbot_english_qa.jsonl";
// What a person types into the panels after choosing the quick preset:
// - a 1% validation share: 12 held-out pairs, so each evaluation is a few seconds;
// - 64-token sequences: covers 95% of the pairs (p95 68) and bounds the cost of a step;
// - 10 training steps instead of the preset's 20, at the page's default learning rate for LoRA
//   (2e-3, chosen by the sweep in docs/defaults.md; typed in, so the preset becomes "custom").
//   A step costs ~8 s here and the validation loss is computed every steps/5 steps.
// The answers compared are the page's: the first 3 held-out prompts, at most 24 new tokens each.
const SETTINGS = { seqLen: 64, validationShare: 0.01, steps: 10, lr: 2e-3 };
const QUICK_STEPS = 20;

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** SQuAD's answer normalisation and token F1 (src/eval/metrics.rs), to check the shown F1. */
function words(text) {
  return text
    .toLowerCase()
    .replace(/[^\p{Alphabetic}\p{N}]/gu, " ")
    .split(/\s+/)
    .filter((w) => w && !["a", "an", "the"].includes(w));
}
function tokenF1(prediction, reference) {
  const p = words(prediction);
  const r = words(reference);
  if (!p.length || !r.length) return p.length === r.length ? 1 : 0;
  const left = [...r];
  let common = 0;
  for (const w of p) {
    const i = left.indexOf(w);
    if (i >= 0) {
      left.splice(i, 1);
      common += 1;
    }
  }
  if (!common) return 0;
  const precision = common / p.length;
  const recall = common / r.length;
  return (2 * precision * recall) / (precision + recall);
}

test("SmolLM2 fine-tuned on the Q&A sample in the page: before/after loss and perplexity, exact match and F1, answers side by side", { timeout: 1_200_000 }, async () => {
  // The sample's lines, to check the references shown against the file itself.
  const lines = fs.readFileSync(path.join(ROOT, "www/samples", SAMPLE), "utf8").split("\n");

  await withPage("smollm2-qa", browser, { backend: "cpu" }, async ({ page, log }) => {
    const stage = (name) => withTimeout(page.screenshot({ path: artifactPath(`smollm2-qa-${name}.png`), fullPage: true }), 30_000, `the ${name} screenshot`);
    const seconds = {};
    let mark = Date.now();
    const lap = (name) => {
      seconds[name] = (Date.now() - mark) / 1000;
      mark = Date.now();
    };
    const backend = await waitForBackend(page);
    assert.equal(backend.backend, "cpu");

    // 1. The ready-made model, with its button (the first entry of models/index.json).
    const loaded = await loadDefaultModel(page, 300_000, "SmolLM2 to download and load");
    assert.equal(loaded.error, null, `loading failed: ${JSON.stringify(loaded.error)}`);
    assert.match(loaded.source.repo, /models\/smollm2-135m-instruct$/, JSON.stringify(loaded.source));
    assert.equal(loaded.info.architecture, "llama");
    assert.equal(loaded.info.kind, "causal_lm");
    assert.equal(loaded.info.has_tokenizer, true);
    lap("load");
    await stage("1-model");

    // 2. The dataset panel's options, then the sample: checked, then scored by itself.
    await page.getByLabel("Sequence length (tokens)").fill(String(SETTINGS.seqLen));
    await page.getByLabel("Validation share").fill(String(SETTINGS.validationShare));
    await page.getByLabel("Sample dataset").selectOption(SAMPLE);
    await page.getByTestId("use-sample").click();
    await waitInPage(
      page,
      (file) => {
        const outcome = document.querySelector("[data-testid=dataset-state]")?.dataset.outcome;
        return outcome === "error" || (outcome === "done" && (document.querySelector("[data-testid=report-file]")?.textContent ?? "").startsWith(file));
      },
      SAMPLE,
      120_000,
      "the sample's report",
    );
    assert.equal(await page.getByTestId("dataset-state").getAttribute("data-outcome"), "done", await page.getByTestId("dataset-state").textContent());
    assert.equal(await page.evaluate(() => window.webtune.dataset.source), "sample");
    assert.match(await page.getByTestId("report-schema").textContent(), /^prompt → completion \(detected\)$/);
    // 1,257 records, 28 with an empty field skipped; 1% of the 1,229 distinct pairs held out.
    assert.equal((await page.getByTestId("report-examples").textContent()).trim(), "1,229");
    assert.match(await page.getByTestId("report-split").textContent(), /^1,217 training · 12 validation$/);
    lap("check");
    const shown = await waitInPage(
      page,
      () => {
        const el = document.querySelector("[data-testid=baseline]");
        return el && !el.hidden && ["done", "error"].includes(el.dataset.state) ? { state: el.dataset.state, text: el.textContent } : null;
      },
      null,
      300_000,
      "the automatic before",
    );
    assert.equal(shown.state, "done", shown.text);
    const baseline = await page.evaluate(() => window.webtune.baseline);
    assert.equal(baseline.dataset, SAMPLE);
    const b0 = baseline.result;
    assert.equal(b0.validation_examples, 12);
    assert.ok(Number.isFinite(b0.loss) && b0.loss > 0, JSON.stringify(b0));
    assert.ok(Math.abs(Math.log(b0.perplexity) - b0.loss) < 1e-4, `perplexity ${b0.perplexity} = exp(loss ${b0.loss})`);
    assert.equal(
      shown.text,
      `Before fine-tuning, on 12 held-out examples (${b0.tokens.toLocaleString("en")} tokens scored in ${b0.seconds.toFixed(1)} s): ` +
        `loss ${b0.loss.toFixed(4)}, perplexity ${Math.round(b0.perplexity).toLocaleString("en")}. Fine-tuning should lower both.`,
    );
    lap("before");
    await stage("2-data-before");

    // 3. The quick preset (half a pass, at most 20 steps), then fewer steps and a higher learning
    // rate typed in (the preset becomes "custom"); Start.
    const fields = () => page.evaluate(() => ["ft-preset", "ft-method", "ft-steps", "ft-lr", "ft-lora-r", "ft-lora-alpha", "ft-batch-size"].map((id) => document.querySelector(`[data-testid=${id}]`).value));
    await page.getByTestId("ft-preset").selectOption("quick");
    assert.deepEqual(await fields(), ["quick", "lora", String(QUICK_STEPS), "0.002", "8", "16", "4"]);
    await page.getByLabel("Training steps").fill(String(SETTINGS.steps));
    await page.getByLabel("Fine-tune learning rate").fill(String(SETTINGS.lr));
    assert.deepEqual(await fields(), ["custom", "lora", String(SETTINGS.steps), String(SETTINGS.lr), "8", "16", "4"]);
    lap("settings");
    await page.getByTestId("ft-start").click();
    // The job's stages, timed from here: the base model's answers, training, then evaluation,
    // the fine-tuned model's answers and the export.
    const stepsDone = () => page.evaluate(() => (window.webtune.finetunes.at(-1)?.events ?? []).filter((e) => e.type === "step").length);
    await waitInPage(page, () => (window.webtune.finetunes.at(-1)?.events ?? []).some((e) => e.type === "phase" && e.phase === "training"), null, 300_000, "the training phase");
    lap("answers_before");
    await waitInPage(page, () => (window.webtune.finetunes.at(-1)?.events ?? []).filter((e) => e.type === "step").length >= 3, null, 300_000, "three training steps");
    await stage("3-training");
    assert.match(await page.getByTestId("ft-phase").textContent(), /^Training: /);
    await waitInPage(page, (n) => (window.webtune.finetunes.at(-1)?.events ?? []).filter((e) => e.type === "step").length >= n, SETTINGS.steps, 900_000, "the last training step");
    assert.equal(await stepsDone(), SETTINGS.steps);
    lap("training");
    const record = await waitInPage(
      page,
      () => {
        const r = window.webtune.finetunes.at(-1);
        return r && r.status !== "running" && r.status !== "cancelling" ? { ...r, result: r.result && { ...r.result, report: undefined } } : null;
      },
      null,
      900_000,
      "the fine-tuning to end",
    );
    lap("evaluate_answers_export");
    assert.equal(record.error, null, `fine-tuning failed: ${JSON.stringify(record.error)}`);
    assert.equal(record.status, "done");
    assert.equal(record.name, SAMPLE);
    assert.equal(record.config.validation_fraction, SETTINGS.validationShare);
    assert.equal(record.config.data.causal.seq_len, SETTINGS.seqLen);
    assert.deepEqual(record.config.train, { method: "lora", steps: SETTINGS.steps, lr: SETTINGS.lr, lora_r: 8, lora_alpha: 16 });
    const r = record.result;
    const steps = record.events.filter((e) => e.type === "step");
    const phase = (name) => record.events.findIndex((e) => e.type === "phase" && e.phase === name);
    assert.equal(r.summary.steps, SETTINGS.steps);
    assert.equal(steps.length, SETTINGS.steps);
    assert.equal(r.validation_examples, 12);
    // The job's "before" is the automatic one: the same split, the same base model.
    assert.ok(Math.abs(r.before.loss - b0.loss) < 1e-5, `automatic before ${b0.loss}, job before ${r.before.loss}`);
    assert.equal(r.before.tokens, b0.tokens);
    for (const [k, e] of Object.entries({ before: r.before, after: r.after })) {
      assert.ok(Number.isFinite(e.loss) && e.loss > 0 && Number.isFinite(e.perplexity), `${k}: ${JSON.stringify(e)}`);
      assert.ok(Math.abs(Math.log(e.perplexity) - e.loss) < 1e-4, `${k}: perplexity ${e.perplexity} = exp(loss ${e.loss})`);
    }
    // Teaching works: the held-out loss falls.
    assert.ok(r.after.loss < r.before.loss, `held-out loss ${r.before.loss} → ${r.after.loss}`);
    assert.ok(phase("samples") >= 0 && phase("training") > phase("samples"), "base answers are written before training");

    // 4. The results panel: the numbers as displayed, consistent with each other.
    await waitInPage(page, () => !document.querySelector("[data-testid=before-after]")?.hidden, null, 10_000, "the before/after table");
    const text = (id) => page.getByTestId(id).textContent().then((t) => t.trim());
    const view = {};
    for (const id of ["val-loss-before", "val-loss-after", "perplexity-before", "perplexity-after", "exact-match-before", "exact-match-after", "token-f1-before", "token-f1-after"]) view[id] = await text(id);
    for (const k of ["before", "after"]) {
      const loss = Number(view[`val-loss-${k}`]);
      const ppl = Number(view[`perplexity-${k}`]);
      assert.equal(view[`val-loss-${k}`], r[k].loss.toFixed(4));
      assert.equal(view[`perplexity-${k}`], r[k].perplexity.toFixed(2));
      // exp(shown loss) is the shown perplexity within the rounding of both (4 and 2 decimals).
      assert.ok(Math.abs(Math.exp(loss) - ppl) <= ppl * 5.1e-5 + 0.0051, `shown perplexity ${ppl} vs exp(${loss}) = ${Math.exp(loss)}`);
    }
    assert.ok(Number(view["val-loss-after"]) < Number(view["val-loss-before"]));
    assert.equal(await page.getByTestId("val-loss-change").getAttribute("data-better"), "true");
    assert.equal(await page.getByTestId("verdict").getAttribute("data-outcome"), "better");
    assert.match(await page.getByTestId("verdict").textContent(), /^Fine-tuning helped: validation loss fell/);

    // The answers side by side: base, fine-tuned and the dataset's own answer to each prompt.
    const rows = await page.locator("[data-testid=sample-row]").evaluateAll((trs) =>
      trs.map((tr) => ({
        source: tr.title,
        prompt: tr.querySelector(".sample-prompt").textContent,
        reference: tr.querySelector(".sample-reference").textContent,
        before: tr.querySelector("[data-testid=sample-before]").textContent,
        after: tr.querySelector("[data-testid=sample-after]").textContent,
        visible: tr.getBoundingClientRect().height > 0,
      })),
    );
    assert.equal(rows.length, 3, "the first 3 held-out prompts are answered by both models");
    for (const [i, row] of rows.entries()) {
      assert.ok(row.visible, `row ${i + 1} is visible`);
      assert.deepEqual({ ...row, visible: undefined }, { ...r.samples[i], visible: undefined }, `row ${i + 1} shows the job's sample`);
      const m = /^chatterbot_english_qa\.jsonl line (\d+)$/.exec(row.source);
      assert.ok(m, `row ${i + 1} names its line: ${row.source}`);
      const line = JSON.parse(lines[Number(m[1]) - 1]);
      assert.equal(row.prompt, `${line.prompt}\n`, `row ${i + 1}: the prompt of line ${m[1]} (and the separator)`);
      assert.equal(row.reference, line.response, `row ${i + 1}: the reference is line ${m[1]}'s response`);
      assert.ok(row.before.trim() && row.after.trim(), `row ${i + 1}: both models answered`);
    }
    assert.ok(rows.some((row) => row.before !== row.after), "the fine-tuned model answers differently");

    // Exact match and token F1, before and after, of exactly these answers.
    for (const k of ["before", "after"]) {
      const a = r[`answers_${k}`];
      assert.equal(a.examples, rows.length);
      assert.ok(a.exact_match >= 0 && a.exact_match <= 1 && a.token_f1 >= 0 && a.token_f1 <= 1, JSON.stringify(a));
      assert.equal(view[`exact-match-${k}`], `${(a.exact_match * 100).toFixed(1)}%`);
      assert.equal(view[`token-f1-${k}`], `${(a.token_f1 * 100).toFixed(1)}%`);
      const f1 = rows.reduce((s, row) => s + tokenF1(row[k], row.reference), 0) / rows.length;
      assert.ok(Math.abs(f1 - a.token_f1) < 1e-9, `${k}: token F1 ${a.token_f1}, recomputed from the shown answers ${f1}`);
    }
    await page.getByTestId("samples").scrollIntoViewIfNeeded();
    await stage("4-results");

    const s = r.summary;
    const result = {
      seconds,
      settings: SETTINGS,
      before: r.before,
      after: r.after,
      answers_before: r.answers_before,
      answers_after: r.answers_after,
      eval: s.eval,
      losses: s.losses,
      median_step_ms: s.median_step_ms,
      tokens_per_s: s.tokens_per_s,
      samples: r.samples,
    };
    writeArtifactJson("smollm2-qa-result.json", result);
    console.log(
      `SmolLM2 + Q&A (CPU wasm), seconds: ${JSON.stringify(seconds)}; held-out loss ${r.before.loss.toFixed(4)} → ${r.after.loss.toFixed(4)}, ` +
        `perplexity ${r.before.perplexity.toFixed(2)} → ${r.after.perplexity.toFixed(2)}, exact match ${r.answers_before.exact_match} → ${r.answers_after.exact_match}, ` +
        `token F1 ${r.answers_before.token_f1.toFixed(3)} → ${r.answers_after.token_f1.toFixed(3)}; ${s.median_step_ms.toFixed(0)} ms/step, ${s.tokens_per_s.toFixed(1)} tokens/s; ` +
        `validation curve ${JSON.stringify(s.eval.map((e) => +e.loss.toFixed(4)))}`,
    );
    assertCleanLog(assert, log);
  });
});
