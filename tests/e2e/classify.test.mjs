// Classification in the page: the default encoder (all-MiniLM-L6-v2, real pretrained weights
// prepared by `cargo xtask models`) is taught the sentiment sample (www/samples/
// pang_lee_polarity_200.jsonl) on the CPU backend. The page's before/after numbers must equal
// what the native CLI computes for the same job, held-out accuracy must rise above the new
// head's chance level, the results panel must show the classification view, the fine-tuned
// model must classify and embed typed sentences, the export must be a
// BertForSequenceClassification folder the native CLI loads with its labels, and nothing may
// touch the network after the model is loaded.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { CLI, artifactPath, assertCleanLog, launchBrowser, waitForBackend, waitInPage, withPage, withTimeout, writeArtifactJson } from "./harness.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const INDEX = path.join(ROOT, "www/models/index.json");
const SAMPLE = "pang_lee_polarity_200.jsonl";
// 160 training sentences, 40 held out; LoRA (q, v) plus the new head, the page's encoder
// defaults (measured natively: accuracy 0.575 → 0.825).
const CONFIG = {
  data: { causal: { seq_len: 64 } },
  validation_fraction: 0.2,
  validation_max: 64,
  batch_size: 8,
  train: { method: "lora", lr: 5e-3, steps: 50, warmup: 5, seed: 3, eval_every: 25 },
};

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

function minilm() {
  const index = JSON.parse(fs.readFileSync(INDEX, "utf8"));
  const model = index.models.find((m) => m.id === "all-minilm-l6-v2");
  assert.ok(model, `${INDEX} lists no all-minilm-l6-v2: \`cargo xtask models\` could not fetch it`);
  return { model, dir: path.join(ROOT, "www", model.repo, "resolve/main") };
}

function cli(args) {
  assert.ok(CLI, "WEBTUNE_CLI is not set (cargo xtask test sets it)");
  const stdout = execFileSync(CLI, [...args, "--json"], { encoding: "utf8", timeout: 600_000, maxBuffer: 64 << 20 });
  return JSON.parse(stdout.trim().split("\n").at(-1));
}

test("MiniLM learns the sentiment sample in the page, as the native CLI does, and the classifier is usable and exported", { timeout: 1_500_000 }, async () => {
  const { dir } = minilm();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "webtune-classify-"));
  const native = cli(["train", dir, "--data", path.join(ROOT, "www/samples", SAMPLE), "--config", JSON.stringify(CONFIG), "--backend", "cpu", "--out", tmp]);
  assert.equal(native.task, "classification");

  await withPage("classify", browser, { backend: "cpu" }, async ({ page, log }) => {
    // A screenshot of each stage of the flow (model → data → training → results), as artifacts.
    const stage = (name) => withTimeout(page.screenshot({ path: artifactPath(`classify-${name}.png`), fullPage: true }), 30_000, `the ${name} screenshot`);
    await waitForBackend(page);
    const loaded = await withTimeout(page.evaluate(() => window.webtune.loadDefaultModel("all-minilm-l6-v2")), 300_000, "MiniLM to load");
    assert.equal(loaded.error, null, `loading failed: ${JSON.stringify(loaded.error)}`);
    assert.equal(loaded.info.kind, "encoder");
    await stage("1-model");

    // Choosing the bundled sample fetches it from the page's own origin, once.
    const inspected = await withTimeout(page.evaluate(([s, c]) => window.webtune.inspectDataset(s, c), [SAMPLE, CONFIG]), 120_000, "inspectDataset");
    assert.equal(inspected.error, null, JSON.stringify(inspected.error));
    assert.equal(inspected.result.task, "classification");
    assert.deepEqual(inspected.result.labels, ["neg", "pos"]);
    assert.equal(inspected.result.train_examples + inspected.result.validation_examples, 200);
    assert.ok(inspected.result.preview[0].label === "neg" || inspected.result.preview[0].label === "pos");
    const requestsAfterData = log.requests.length;
    await stage("2-data");

    // The chosen dataset (null): already in the page, so training needs nothing from the network.
    const running = withTimeout(page.evaluate((c) => window.webtune.finetune(null, c), CONFIG), 1_200_000, "fine-tuning MiniLM");
    await waitInPage(page, () => (window.webtune.finetunes.at(-1)?.events ?? []).filter((e) => e.type === "step").length >= 5, null, 600_000, "five training steps");
    await stage("3-training");
    const record = await running;
    assert.equal(record.error, null, `fine-tuning failed: ${JSON.stringify(record.error)}`);
    const r = record.result;
    writeArtifactJson("classify-result.json", { page: { ...r, report: undefined }, native: { ...native, report: undefined } });
    assert.equal(r.task, "classification");
    assert.deepEqual(r.labels, ["neg", "pos"]);
    assert.equal(r.head_from_checkpoint, false);
    assert.equal(r.summary.steps, CONFIG.train.steps);
    const steps = record.events.filter((e) => e.type === "step");
    assert.equal(steps.length, CONFIG.train.steps, "one progress event per step");
    assert.ok(steps.every((e) => Number.isFinite(e.examples_per_s) && e.examples_per_s > 0));

    // The page runs the CLI's job: same split, same head, same numbers (CPU in wasm vs native).
    for (const k of ["before", "after"]) {
      const [p, n] = [r[k], native[k]];
      assert.equal(p.examples, n.examples, `${k}: held-out examples`);
      assert.ok(Math.abs(p.loss - n.loss) <= 2e-3, `${k} loss: page ${p.loss} vs native ${n.loss}`);
      assert.ok(Math.abs(p.accuracy - n.accuracy) <= 1 / p.examples + 1e-9, `${k} accuracy: page ${p.accuracy} vs native ${n.accuracy}`);
      const total = p.confusion_matrix.flat().reduce((a, b) => a + b, 0);
      assert.equal(total, p.examples, `${k}: the confusion matrix counts every held-out example`);
      assert.equal(p.per_class.length, 2);
    }
    // Teaching works: the new head starts at chance and the tuned classifier beats it clearly.
    assert.ok(r.after.accuracy >= r.before.accuracy + 0.15, `held-out accuracy ${r.before.accuracy} → ${r.after.accuracy}`);
    assert.ok(r.after.loss < r.before.loss, `held-out loss ${r.before.loss} → ${r.after.loss}`);
    console.log(
      `MiniLM sentiment (CPU wasm): accuracy ${r.before.accuracy.toFixed(3)} → ${r.after.accuracy.toFixed(3)}, macro-F1 ${r.before.macro_f1.toFixed(3)} → ${r.after.macro_f1.toFixed(3)}, ` +
        `${r.summary.median_step_ms.toFixed(0)} ms/step, ${r.summary.examples_per_s.toFixed(1)} examples/s; native ${native.summary.examples_per_s.toFixed(1)} examples/s`,
    );

    // The results panel shows the classification view.
    await waitInPage(page, () => !document.querySelector('[data-testid="classes"]')?.hidden, null, 10_000, "the per-class view");
    const shown = await page.evaluate(() => ({
      accuracy: document.querySelector('[data-testid="accuracy-after"]')?.textContent,
      rows: document.querySelectorAll('[data-testid="per-class-row"]').length,
      matrices: document.querySelectorAll('[data-testid^="confusion-"]').length,
      verdict: document.querySelector('[data-testid="verdict"]')?.dataset.outcome,
    }));
    assert.equal(shown.accuracy, `${(r.after.accuracy * 100).toFixed(1)}%`);
    assert.equal(shown.rows, 2);
    assert.equal(shown.matrices, 2);
    assert.equal(shown.verdict, "better");
    await stage("4-results");

    // The HTML report carries the classification view: accuracy, both confusion matrices cell
    // for cell, the changed predictions; and nothing to run or load.
    const [htmlDownload] = await Promise.all([page.waitForEvent("download", { timeout: 30_000 }), page.getByTestId("download-report-html").click()]);
    assert.equal(htmlDownload.suggestedFilename(), "webtune-evaluation-report.html");
    const html = fs.readFileSync(await htmlDownload.path(), "utf8");
    fs.writeFileSync(artifactPath("classify-report.html"), html);
    assert.ok(html.includes(`<td class="before">${(r.before.accuracy * 100).toFixed(1)}%</td><td class="after">${(r.after.accuracy * 100).toFixed(1)}%</td>`), "accuracy before and after");
    for (const which of ["before", "after"]) {
      const table = html.match(new RegExp(`<table class="confusion" data-matrix="${which}">([\\s\\S]*?)</table>`))?.[1] ?? "";
      const cells = [...table.matchAll(/<td data-diagonal="(?:true|false)">(\d+)<\/td>/g)].map((m) => Number(m[1]));
      assert.deepEqual(cells, r[which].confusion_matrix.flat(), `the ${which} confusion matrix`);
    }
    assert.equal((html.match(/<tr data-status="/g) ?? []).length, r.changed.length, "one row per changed prediction");
    assert.doesNotMatch(html, /<script|https?:\/\//i);

    // Typed sentences: the page's "try it" box and the API agree; similarity is a cosine.
    await page.getByTestId("try-text").fill("a warm , funny and beautifully acted film .");
    await page.getByTestId("try-button").click();
    const tried = await waitInPage(page, () => document.querySelector('[data-testid="try-tuned"]')?.textContent ?? null, null, 60_000, "the try-it answer");
    const api = await page.evaluate(() => window.webtune.classify("a warm , funny and beautifully acted film .", "tuned"));
    assert.equal(api.error, null);
    assert.deepEqual(api.result.labels, ["neg", "pos"]);
    assert.ok(Math.abs(api.result.probs[0] + api.result.probs[1] - 1) < 1e-6);
    assert.ok(tried.includes(api.result.label), `${tried} names ${api.result.label}`);
    const base = await page.evaluate(() => window.webtune.classify("fine", "base"));
    assert.equal(base.error.code, "config.invalid", "the base encoder has no head to classify with");
    const sims = await page.evaluate(async () => {
      const a = "the movie was wonderful";
      const b = "a truly great film";
      const c = "the tax form is due in april";
      const s = async (x, y, w) => (await window.webtune.similarity(x, y, w)).result.similarity;
      return { ab: await s(a, b, "base"), ac: await s(a, c, "base"), aa: await s(a, a, "tuned") };
    });
    assert.ok(Math.abs(sims.aa - 1) < 1e-5, `a sentence is its own nearest neighbour (${sims.aa})`);
    assert.ok(sims.ab > sims.ac, `two film reviews are closer (${sims.ab}) than a review and a tax note (${sims.ac})`);

    // The export is a BertForSequenceClassification folder with the labels, loadable natively.
    const exported = await page.evaluate(async () => {
      const r = await window.webtune.exportFiles();
      return { error: r.error, names: Object.keys(r.files ?? {}), config: r.files ? new TextDecoder().decode(r.files["merged/config.json"]) : null };
    });
    assert.equal(exported.error, null);
    assert.ok(exported.names.includes("merged/model.safetensors") && exported.names.includes("merged/tokenizer.json"), exported.names.join(", "));
    const config = JSON.parse(exported.config);
    assert.deepEqual(config.architectures, ["BertForSequenceClassification"]);
    assert.deepEqual(config.id2label, { 0: "neg", 1: "pos" });
    // MiniLM's head pools by the mean, which transformers' BERT head cannot: the export carries
    // the class that does and points AutoModelForSequenceClassification at it, and says so.
    assert.equal(config.webtune_pooling, "mean");
    assert.equal(config.auto_map?.AutoModelForSequenceClassification, "modeling_webtune.WebtuneBertForSequenceClassification");
    assert.ok(exported.names.includes("merged/modeling_webtune.py"), exported.names.join(", "));
    assert.match(await page.getByRole("region", { name: "Before / after" }).getByTestId("downloads").textContent(), /trust_remote_code=True/);
    const info = cli(["info", path.join(tmp, "merged")]);
    assert.deepEqual(info.labels, ["neg", "pos"]);
    // LoRA: the export also holds the classifier as a PEFT adapter of the base (SEQ_CLS, the head
    // saved whole) with webtune's note of its labels and pooling — natively too.
    for (const f of ["adapter_config.json", "adapter_model.safetensors", "webtune_classifier.json"]) {
      assert.ok(exported.names.includes(`adapter/${f}`), `the page's export has adapter/${f}: ${exported.names.join(", ")}`);
      assert.ok(fs.existsSync(path.join(tmp, "adapter", f)), `the CLI's export has adapter/${f}`);
    }
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(tmp, "adapter/webtune_classifier.json"), "utf8")), { labels: ["neg", "pos"], pooling: "mean" });

    // The adapter library keeps the classifier with its labels and before/after accuracy; used
    // as an adapter of the base (un-merged) it classifies as the fine-tuned model does, and the
    // compare view puts the base (no head yet) and the adapter side by side, each with its
    // held-out accuracy on the checked dataset.
    const kept = r.adapter;
    assert.ok(kept && !kept.error, `the classifier's adapter is kept: ${JSON.stringify(kept)}`);
    assert.equal(kept.task, "classification");
    assert.deepEqual(kept.labels, ["neg", "pos"]);
    assert.equal(kept.pooling, "mean");
    assert.equal(kept.metrics.after.accuracy, r.after.accuracy);
    const text = "a warm , funny and beautifully acted film .";
    const viaAdapter = await page.evaluate(([t, n]) => window.webtune.classify(t, `adapter:${n}`), [text, kept.name]);
    assert.equal(viaAdapter.error, null, JSON.stringify(viaAdapter.error));
    assert.deepEqual(viaAdapter.result.labels, ["neg", "pos"]);
    const probDiff = Math.max(...viaAdapter.result.probs.map((p, i) => Math.abs(p - api.result.probs[i])));
    assert.ok(probDiff <= 1e-4, `the adapter classifies as the fine-tuned model (max |p diff| ${probDiff})`);
    const compared = await withTimeout(page.evaluate(([t, n]) => window.webtune.compare(t, ["base", `adapter:${n}`]), [text, kept.name]), 300_000, "the compare view");
    assert.equal(compared.error ?? null, null, JSON.stringify(compared.error));
    const [baseRow, adapterRow] = compared.rows;
    assert.equal(baseRow.error?.code, "config.invalid", "the base encoder has no head to classify with");
    assert.equal(adapterRow.error, null);
    assert.equal(adapterRow.predicted.label, api.result.label);
    assert.ok(Math.abs(adapterRow.accuracy - r.after.accuracy) <= 1 / r.after.examples + 1e-9, `compare accuracy ${adapterRow.accuracy} vs the job's ${r.after.accuracy}`);
    const cell = page.locator(`[data-testid="compare-cell"][data-model="adapter:${kept.name}"]`);
    assert.match(await cell.getByTestId("compare-text").textContent(), new RegExp(`^${api.result.label} \\(`));
    assert.match(await cell.getByTestId("compare-loss").textContent(), /held-out accuracy \d/);
    const row = page.locator(`[data-testid="adapter-row"][data-name="${kept.name}"]`);
    assert.match(await row.getByTestId("adapter-row-details").textContent(), /held-out accuracy .*% → .*%.*classifies neg \/ pos/);
    assert.equal(await row.getByTestId("adapter-continue").count(), 0, "a classifier's adapter offers no continued training");

    assert.deepEqual(log.requests.slice(requestsAfterData), [], "training, evaluating, classifying and exporting touched no network");
    assertCleanLog(assert, log);
  });
  fs.rmSync(tmp, { recursive: true, force: true });
});
