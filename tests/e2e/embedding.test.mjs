// The third task in the page: all-MiniLM-L6-v2 (the page's ready-made encoder) on the bundled
// ChatterBot questions and answers learns sentence embeddings (question → answer retrieval)
// instead of a classifier, driven through the panels as a person would. The dataset panel must
// name the task and preview the pairs, the fine-tune panel must switch to the embedding presets
// and refuse a batch of one clearly and stay usable, the results panel must show retrieval
// before and after (recall@1, MRR, the cosines) and measure two typed texts with both models,
// the export must be a sentence-transformers folder, the adapter library must keep an
// embedder's adapter as one, and nothing may touch the network once the data is in the page.
//
// The CPU backend on one thread (the main wasm module), a small held-out share and a few steps
// keep it to a couple of minutes on two cores. A second test gives the same file to the
// <webtune-trainer> element, whose preset must follow the data too.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { artifactPath, assertCleanLog, launchBrowser, useSample, waitForBackend, waitInPage, withPage, withPageAt, withTimeout, writeArtifactJson } from "./harness.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const SAMPLE = "chatterbot_english_qa.jsonl";
// About 63 of the 1,257 pairs held out: enough for intervals, quick to score.
const SHARE = 0.05;
const BATCH = 8;
const STEPS = 6;
const QUESTION = "Do you like music?";
const ANSWER = "Yes, I enjoy listening to songs.";

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** Letters and digits only, lower case: a text and its tokens' concatenation compare equal. */
function squash(text) {
  return text.toLowerCase().replace(/\[(cls|sep|unk)\]|##/g, "").replace(/[^a-z0-9]/g, "");
}

/** The sample's pairs, squashed: [prompt, response]. */
function samplePairs() {
  return fs
    .readFileSync(path.join(ROOT, "www/samples", SAMPLE), "utf8")
    .split("\n")
    .filter(Boolean)
    .map((line) => JSON.parse(line))
    .map((r) => [squash(r.prompt), squash(r.response)]);
}

/** A figure shown as "41.3%" or "0.523" as a number (a percentage as its fraction). */
function shown(text) {
  const t = String(text ?? "").trim();
  return t.endsWith("%") ? Number(t.slice(0, -1)) / 100 : Number(t);
}

test("MiniLM learns question → answer retrieval from the ChatterBot sample in the page: pairs previewed, embedding presets, a refused batch of one, retrieval before/after, similarity, a sentence-transformers export, no network", { timeout: 900_000 }, async () => {
  await withPage("embedding", browser, { backend: "cpu", threads: 1 }, async ({ page, log }) => {
    const stage = (name) => withTimeout(page.screenshot({ path: artifactPath(`embedding-${name}.png`), fullPage: true }), 30_000, `the ${name} screenshot`);
    await waitForBackend(page);
    // The API's table, which the page's embedding presets read (one place for the numbers).
    const presets = await page.evaluate(async () => (await import("./webtune.js")).PRESETS);
    const loaded = await withTimeout(page.evaluate(() => window.webtune.loadDefaultModel("all-minilm-l6-v2")), 300_000, "MiniLM to load");
    assert.equal(loaded.error, null, `loading failed: ${JSON.stringify(loaded.error)}`);
    assert.equal(loaded.info.kind, "encoder");
    // Before any data an encoder classifies: the classifier's batch.
    assert.equal(await page.getByTestId("ft-batch-size").inputValue(), "8");

    // The sample comes from the page's own server; nothing goes over the network after it.
    await page.getByTestId("dataset-validation").fill(String(SHARE));
    await useSample(page, SAMPLE);
    const afterData = log.requests.length;
    assert.match(await page.getByTestId("report-task").textContent(), /^sentence pairs → embeddings/);
    assert.equal(await page.getByTestId("report-schema").textContent(), "prompt → completion (detected)");
    // The preview: each pair's two texts as the encoder reads them, a question and its answer
    // from one line of the file (the answer may be cut at the sequence length).
    const preview = await page
      .locator("[data-testid=preview-example]")
      .evaluateAll((rows) => rows.map((r) => ({ kind: r.getAttribute("data-kind"), anchor: r.querySelector("[data-testid=preview-anchor]")?.textContent ?? "", positive: r.querySelector("[data-testid=preview-positive]")?.textContent ?? "", tokens: r.querySelectorAll(".tok").length })));
    assert.equal(preview.length, 3, JSON.stringify(preview));
    const pairs = samplePairs();
    for (const p of preview) {
      assert.equal(p.kind, "pair");
      assert.ok(p.anchor.startsWith("[CLS]") && p.positive.startsWith("[CLS]"), `both texts are encoded on their own: ${JSON.stringify(p)}`);
      const [a, b] = [squash(p.anchor), squash(p.positive)];
      assert.ok(a.length > 0 && b.length > 0, JSON.stringify(p));
      assert.ok(pairs.some(([q, r]) => q === a && r.startsWith(b)), `a question and its own answer: ${JSON.stringify(p)}`);
    }

    // The base model is scored at once on the held-out pairs: retrieval, not a classifier.
    const baseline = await withTimeout(page.evaluate(() => window.webtune.whenBaseline()), 180_000, "the automatic before");
    assert.equal(baseline?.result?.task, "embedding", JSON.stringify(baseline));
    const b0 = baseline.result;
    assert.ok(b0.pairs >= 40 && b0.pairs === b0.validation_examples, `held-out pairs: ${JSON.stringify(b0)}`);
    assert.ok(b0.accuracy >= 0 && b0.accuracy <= 1 && b0.mrr >= b0.accuracy && b0.mrr <= 1, JSON.stringify(b0));
    assert.match(await page.getByTestId("baseline").textContent(), new RegExp(`on ${b0.pairs} held-out pairs.*recall@1`));
    await stage("1-data");

    // The fine-tune panel follows the data: the embedding presets of the API's table.
    assert.match(await page.getByTestId("ft-expected").textContent(), /recall@1/);
    assert.equal(await page.getByTestId("ft-batch-size").inputValue(), String(presets.balanced.embedding.batch_size));
    assert.equal(Number(await page.getByTestId("ft-lr").inputValue()), presets.balanced.embedding.train.lr);
    await page.getByTestId("ft-preset").selectOption("quick");
    assert.equal(await page.getByTestId("ft-steps").inputValue(), String(presets["quick-demo"].embedding.train.steps));
    assert.equal(await page.getByTestId("ft-batch-size").inputValue(), String(presets["quick-demo"].embedding.batch_size));

    // A batch of one has no negatives: refused at once, said on the page, and the page goes on.
    await page.getByTestId("ft-batch-size").fill("1");
    await page.getByTestId("ft-start").click();
    const refused = await waitInPage(page, () => (window.webtune.finetunes.at(-1)?.status === "error" ? window.webtune.finetunes.at(-1) : null), null, 120_000, "the refusal of batch_size 1");
    assert.equal(refused.error.code, "config.invalid", JSON.stringify(refused.error));
    assert.equal(refused.error.details?.field, "batch_size");
    assert.equal(refused.events.filter((e) => e.type === "step").length, 0, "not a step was trained");
    assert.match(await page.getByTestId("ft-result").textContent(), /^Failed: config\.invalid — .*batch_size ≥ 2/);
    assert.ok(await page.locator("[data-testid=error-code]", { hasText: "config.invalid" }).count(), "an alert names the error");
    await waitInPage(page, () => !document.querySelector("[data-testid=ft-start]")?.disabled, null, 10_000, "Start to be enabled again");

    // Now a short run the page's way: Start with the panel's settings.
    await page.getByTestId("ft-batch-size").fill(String(BATCH));
    await page.getByTestId("ft-steps").fill(String(STEPS));
    const runs = await page.evaluate(() => window.webtune.finetunes.length);
    await page.getByTestId("ft-start").click();
    await waitInPage(page, (n) => (window.webtune.finetunes[n]?.events ?? []).filter((e) => e.type === "step").length >= 2, runs, 300_000, "two training steps");
    await stage("2-training");
    const record = await waitInPage(page, (n) => (window.webtune.finetunes[n] && window.webtune.finetunes[n].status !== "running" ? window.webtune.finetunes[n] : null), runs, 600_000, "fine-tuning to end");
    assert.equal(record.error, null, `fine-tuning failed: ${JSON.stringify(record.error)}`);
    const r = record.result;
    writeArtifactJson("embedding-result.json", { ...r, report: undefined });
    assert.equal(r.task, "embedding");
    assert.equal(record.config.batch_size, BATCH);
    assert.equal(record.config.train.lr, presets.balanced.embedding.train.lr);
    assert.equal(r.summary.steps, STEPS);
    const steps = record.events.filter((e) => e.type === "step");
    assert.equal(steps.length, STEPS, "one progress event per step");
    assert.ok(steps.every((e) => e.examples_per_s > 0 && e.tokens_per_s === undefined), "steps count pairs, not tokens");
    // The job's "before" is the automatic one: the same split, the same model.
    assert.equal(r.before.pairs, b0.pairs);
    assert.ok(Math.abs(r.before.mrr - b0.mrr) < 1e-4 && Math.abs(r.before.loss - b0.loss) < 1e-4, `before: job ${JSON.stringify(r.before)} vs automatic ${JSON.stringify(b0)}`);
    console.log(
      `MiniLM on ChatterBot (CPU wasm, 1 thread): recall@1 ${r.before.accuracy.toFixed(3)} → ${r.after.accuracy.toFixed(3)}, MRR ${r.before.mrr.toFixed(3)} → ${r.after.mrr.toFixed(3)}, ` +
        `pair cosine ${r.before.positive_cosine.toFixed(3)} → ${r.after.positive_cosine.toFixed(3)} over ${r.after.pairs} pairs; ${r.summary.median_step_ms.toFixed(0)} ms/step`,
    );

    // The results panel: retrieval before and after, each figure as the result has it.
    await waitInPage(page, () => document.querySelector("[data-testid=verdict]")?.dataset.outcome ?? null, null, 10_000, "the verdict");
    const figures = await page.evaluate(() => Object.fromEntries(["recall-before", "recall-after", "mrr-before", "mrr-after", "pair-cosine-before", "pair-cosine-after"].map((id) => [id, document.querySelector(`[data-testid="${id}"]`)?.textContent ?? null])));
    for (const [id, key] of [["recall", "accuracy"], ["mrr", "mrr"]]) {
      for (const when of ["before", "after"]) {
        const value = shown(figures[`${id}-${when}`]);
        assert.ok(value >= 0 && value <= 1, `${id} ${when}: ${figures[`${id}-${when}`]}`);
        assert.ok(Math.abs(value - r[when][key]) <= 5e-4, `${id} ${when} shows ${figures[`${id}-${when}`]}, the result has ${r[when][key]}`);
      }
    }
    assert.equal(figures["pair-cosine-after"], r.after.positive_cosine.toFixed(3));
    const verdict = await page.getByTestId("verdict").evaluate((e) => ({ outcome: e.dataset.outcome, text: e.textContent }));
    assert.equal(verdict.outcome, r.comparison.accuracy_change.outcome, "the verdict is the job's judgement of recall@1");
    assert.match(verdict.text, /recall@1 .*% → .*%/);
    // The texts whose best match changed, fixed ones first.
    const changed = await page.locator("[data-testid=changed-row]").evaluateAll((rows) => rows.map((row) => ({ status: row.getAttribute("data-status"), after: row.querySelector("[data-testid=changed-after]")?.getAttribute("data-rank") })));
    assert.equal(changed.length, r.changed.length);
    const order = { fixed: 0, broken: 1, changed: 2 };
    assert.deepEqual(changed.map((c) => c.status), [...changed.map((c) => c.status)].sort((x, y) => order[x] - order[y]));
    assert.ok(changed.filter((c) => c.status === "fixed").every((c) => c.after === "1"), "a fixed text finds its own partner first");
    // The chart: a finite training loss at every step (the chart keeps a non-finite one as a
    // gap), and finite validation points before and after.
    const chart = await page.evaluate(() => window.webtune.finetuneChart());
    const plotted = chart.losses.filter((x) => x !== null);
    assert.equal(plotted.length, STEPS, `one plotted loss per step: ${JSON.stringify(chart)}`);
    assert.ok(plotted.every(Number.isFinite), JSON.stringify(chart.losses));
    const evalPoints = chart.evals.filter((x) => x !== null);
    assert.ok(evalPoints.length >= 2 && evalPoints.every(Number.isFinite), `validation points: ${JSON.stringify(chart.evals)}`);
    assert.ok(r.summary.eval.every((e) => Number.isFinite(e.loss) && e.mrr >= 0 && e.mrr <= 1), JSON.stringify(r.summary.eval));
    await stage("3-results");

    // Try it: two texts measured by the base and the fine-tuned embedder, as the API measures them.
    await page.getByTestId("sim-a").fill(QUESTION);
    await page.getByTestId("sim-b").fill(ANSWER);
    await page.getByTestId("sim-button").click();
    const sims = await waitInPage(page, () => (document.querySelector("[data-testid=sim-out]")?.dataset.after ? { ...document.querySelector("[data-testid=sim-out]").dataset } : null), null, 60_000, "the similarity of the two texts");
    const [base, tuned] = [Number(sims.before), Number(sims.after)];
    assert.ok(base >= -1 && base <= 1 && tuned >= -1 && tuned <= 1, JSON.stringify(sims));
    assert.notEqual(base, tuned, "fine-tuning moved the embeddings");
    const api = await page.evaluate(([a, b]) => window.webtune.similarity(a, b, "tuned"), [QUESTION, ANSWER]);
    assert.equal(api.result.similarity, tuned, "the box shows what similarity() gives");

    // The export is a sentence-transformers folder; its nested files download under flat names.
    const exported = await page.evaluate(async () => {
      const x = await window.webtune.exportFiles();
      const text = (n) => (x.files?.[n] ? new TextDecoder().decode(x.files[n]) : null);
      return { error: x.error, names: Object.keys(x.files ?? {}), pooling: text("merged/1_Pooling/config.json"), adapter: text("adapter/adapter_config.json") };
    });
    assert.equal(exported.error, null);
    for (const f of ["merged/model.safetensors", "merged/config.json", "merged/modules.json", "merged/1_Pooling/config.json", "merged/sentence_bert_config.json", "merged/config_sentence_transformers.json", "merged/tokenizer.json", "adapter/adapter_model.safetensors"]) {
      assert.ok(exported.names.includes(f), `the export has ${f}: ${exported.names.join(", ")}`);
    }
    assert.equal(JSON.parse(exported.pooling).pooling_mode_mean_tokens, true);
    assert.equal(JSON.parse(exported.adapter).task_type, "FEATURE_EXTRACTION");
    assert.match(await page.getByRole("region", { name: "Before / after" }).getByTestId("downloads").textContent(), /SentenceTransformer\(folder\)/);
    const [download] = await Promise.all([page.waitForEvent("download", { timeout: 30_000 }), page.locator('[data-testid=download-file][data-file="merged/1_Pooling/config.json"]').click()]);
    assert.equal(download.suggestedFilename(), "webtune-merged-1_Pooling-config.json");
    assert.equal(fs.readFileSync(await download.path(), "utf8"), exported.pooling);

    // The adapter library keeps an embedder's adapter as one: its retrieval scores, no continued
    // training (an encoder's adapter cannot be trained further), and used un-merged beside the
    // base it embeds as the fine-tuned model does.
    const kept = r.adapter;
    assert.ok(kept && !kept.error, `the adapter is kept: ${JSON.stringify(kept)}`);
    assert.equal(kept.task, "embedding");
    assert.equal(kept.pooling, "mean");
    assert.equal(kept.metrics.after.accuracy, r.after.accuracy);
    const row = page.locator(`[data-testid="adapter-row"][data-name="${kept.name}"]`);
    assert.match(await row.getByTestId("adapter-row-details").textContent(), /held-out recall@1 .*% → .*%, MRR .*embeds sentences \(mean pooling\)/);
    assert.equal(await row.getByTestId("adapter-continue").count(), 0, "no Continue training for an embedder's adapter");
    const used = await page.evaluate((n) => window.webtune.useAdapter(n), kept.name);
    assert.equal(used.error, null, JSON.stringify(used.error));
    const viaAdapter = await page.evaluate(([a, b, n]) => window.webtune.similarity(a, b, `adapter:${n}`), [QUESTION, ANSWER, kept.name]);
    assert.ok(Math.abs(viaAdapter.result.similarity - tuned) <= 1e-4, `adapter ${viaAdapter.result.similarity} vs fine-tuned ${tuned}`);
    // The compare view measures two lines' similarity with each model, and each one's retrieval.
    const compared = await withTimeout(page.evaluate(([t, n]) => window.webtune.compare(t, ["base", `adapter:${n}`]), [`${QUESTION}\n${ANSWER}`, kept.name]), 300_000, "the compare view");
    assert.equal(compared.error ?? null, null, JSON.stringify(compared.error));
    const [baseRow, adapterRow] = compared.rows;
    assert.ok(Math.abs(baseRow.similarity - base) <= 1e-6 && Math.abs(adapterRow.similarity - tuned) <= 1e-4, JSON.stringify(compared.rows));
    assert.ok(Math.abs(baseRow.accuracy - r.before.accuracy) <= 1 / r.before.pairs + 1e-9 && Math.abs(adapterRow.accuracy - r.after.accuracy) <= 1 / r.after.pairs + 1e-9, JSON.stringify(compared.rows));
    const cell = page.locator(`[data-testid="compare-cell"][data-model="adapter:${kept.name}"]`);
    assert.match(await cell.getByTestId("compare-text").textContent(), /^cosine -?\d\.\d{3}$/);
    assert.match(await cell.getByTestId("compare-loss").textContent(), /^held-out recall@1 \d/);

    // The HTML report carries the retrieval view.
    const html = await page.evaluate(() => window.webtune.evaluationReportHtml());
    fs.writeFileSync(artifactPath("embedding-report.html"), html);
    const pct = (x) => `${(x * 100).toFixed(1)}%`;
    assert.ok(html.includes(`<td class="before">${pct(r.before.accuracy)}</td><td class="after">${pct(r.after.accuracy)}</td>`), "recall@1 before and after in the report");
    assert.doesNotMatch(html, /<script/i);

    assert.deepEqual(log.requests.slice(afterData), [], "training, evaluating, measuring and exporting touched no network");
    assert.equal(await page.getByTestId("privacy").getAttribute("data-other-hosts"), "0");
    assertCleanLog(assert, log);
  });
});

test("<webtune-trainer> given the ChatterBot pairs checks them again with the embedding preset and shows recall@1 and MRR before/after", { timeout: 600_000 }, async () => {
  const params = { dataset: `../samples/${SAMPLE}`, steps: 2, backend: "cpu" };
  await withPageAt("embedding-component", browser, "examples/sentiment.html", params, async ({ page, log }) => {
    await waitInPage(page, () => document.querySelector("webtune-trainer")?.hasAttribute("data-model-loaded"), null, 300_000, "MiniLM to load");
    const mark = log.requests.length;
    const checked = await waitInPage(page, () => ["ready", "error"].includes(document.querySelector("webtune-trainer")?.dataset.state ?? "") && document.querySelector("webtune-trainer").dataset.state, null, 180_000, "the pairs to be checked");
    assert.equal(checked, "ready", await page.locator("[data-testid=wt-error]").textContent());
    // The element first checks with the classifier's preset (an encoder's task before data), then
    // again with the embedding one: the dataset's options are the embedding preset's.
    const before = await page.evaluate(async () => {
      const t = document.querySelector("webtune-trainer").tuner;
      const { PRESETS } = await import("../webtune.js");
      return { task: t.task, options: t.dataset.options, preset: PRESETS["quick-demo"].embedding };
    });
    assert.equal(before.task, "embedding");
    assert.deepEqual(before.options, before.preset);
    await page.locator("[data-testid=wt-train]").click();
    const end = await waitInPage(page, () => ["done", "error"].includes(document.querySelector("webtune-trainer")?.dataset.state ?? "") && document.querySelector("webtune-trainer").dataset.state, null, 480_000, "training to end");
    assert.equal(end, "done", await page.locator("[data-testid=wt-error]").textContent());
    const r = await page.evaluate(() => {
      const x = document.querySelector("webtune-trainer").result;
      return { task: x.task, steps: x.summary.steps, batch: x.config.batch_size, before: x.before, after: x.after, outcome: x.comparison?.accuracy_change?.outcome ?? null, changed: x.changed.length };
    });
    console.log(`<webtune-trainer> on ChatterBot: ${r.steps} steps of ${r.batch} pairs; recall@1 ${r.before.accuracy.toFixed(3)} → ${r.after.accuracy.toFixed(3)}, MRR ${r.before.mrr.toFixed(3)} → ${r.after.mrr.toFixed(3)}`);
    assert.equal(r.task, "embedding");
    assert.equal(r.steps, params.steps);
    assert.equal(r.batch, before.preset.batch_size);
    const pct = (x) => `${(x * 100).toFixed(1)}%`;
    const text = (id) => page.locator(`[data-testid=${id}]`).textContent().then((t) => t.trim());
    assert.equal(await text("wt-recall-before"), pct(r.before.accuracy));
    assert.equal(await text("wt-recall-after"), pct(r.after.accuracy));
    assert.equal(await text("wt-mrr-after"), r.after.mrr.toFixed(3));
    const caption = page.locator("[data-testid=wt-verdict]");
    assert.equal(await caption.getAttribute("data-outcome"), r.outcome);
    assert.match(await caption.textContent(), new RegExp(`measured on ${r.after.pairs} held-out pairs .*recall@1`));
    assert.equal(await page.locator("[data-testid=wt-changed]").count(), Math.min(5, r.changed));
    // The prompt box continues text, which an encoder does not do.
    assert.equal(await page.locator("[data-testid=wt-try]").isHidden(), true);
    assert.deepEqual(log.requests.slice(mark), [], "no request after the model was loaded");
    assertCleanLog(assert, log);
  });
});
