// The HTML evaluation report (www/lib/report-html.js) and the report's derived sections
// (www/lib/report.js), imported directly in node: hand-made causal, classification and
// sentence-embedding reports whose data tries to inject markup, checked for escaping,
// self-containment (no script, no external reference), the before/after numbers, the curves and
// the confusion matrices.
// No browser needed; the page's download of the same document is checked in finetune.test.mjs.

import { test } from "node:test";
import assert from "node:assert/strict";

import { escapeHtml, reportHtml } from "../../www/lib/report-html.js";
import { curves, dataSummary, modelSource } from "../../www/lib/report.js";
import { verdictFor } from "../../www/components/results-panel.js";

const INJECT = "<script>alert(1)</script>";

function dataReport(extra = {}) {
  return {
    file: "<b>capitals</b>.jsonl",
    bytes: 4096,
    format: "jsonl",
    encoding: "utf-8",
    schema: { schema: { kind: "prompt_completion", prompt: "prompt", completion: "completion" }, detected: true, fields: ["prompt", "completion"], explanation: "…" },
    policy: "skip",
    records: 41,
    examples: 40,
    skipped: 1,
    skipped_by_reason: { malformed_json: 1 },
    issues: [{ reason: "malformed_json", file: "capitals.jsonl", line: 3, message: "line 3: malformed JSON" }],
    issues_not_listed: 0,
    warnings: [],
    blank_lines: 0,
    duplicates: 2,
    tokens: { seq_len: 32, min: 11, median: 17, p95: 21, max: 23, mean: 16.5, total: 660, truncated: 0, histogram: [{ from: 0, to: 3, count: 1 }] },
    ...extra,
  };
}

function causalResult() {
  return {
    task: "causal",
    report: dataReport(),
    overlap_removed: 0,
    train_examples: 32,
    validation_examples: 8,
    train_batches: 8,
    summary: {
      backend: "cpu",
      method: "lora",
      steps: 5,
      cancelled: false,
      losses: [3.5, 3.1, 2.8, 2.6, 2.5],
      grad_norms: [1.5, 1.2, 1.1, 1.0, 0.9],
      lrs: [0.01, 0.008, 0.006, 0.004, 0.002],
      eval: [
        { step: 0, loss: 3.6, perplexity: 36.6, tokens: 96 },
        { step: 5, loss: 2.7, perplexity: 14.9, tokens: 96 },
      ],
      trainable_params: 12_288,
      total_params: 1_000_000,
      first_step_ms: 40,
      median_step_ms: 20,
      tokens_per_s: 1500,
    },
    before: { loss: 3.612345, perplexity: 37.0512, tokens: 96 },
    after: { loss: 2.701234, perplexity: 14.8972, tokens: 96 },
    held_out: { examples: 8, scored: 8, returned_to_training: 0 },
    comparison: {
      units: 8,
      loss_before: { value: 3.612345, interval: { low: 3.4, high: 3.8 } },
      loss_after: { value: 2.701234, interval: { low: 2.5, high: 2.9 } },
      perplexity_before: { value: 37.0512, interval: { low: 29.96, high: 44.7 } },
      perplexity_after: { value: 14.8972, interval: { low: 12.18, high: 18.17 } },
      loss_change: { value: -0.2522, interval: { low: -0.31, high: -0.19 }, outcome: "better" },
    },
    answers_before: { exact_match: 0, token_f1: 0.125, examples: 2 },
    answers_after: { exact_match: 0.5, token_f1: 0.75, examples: 2 },
    samples: [
      { source: "capitals.jsonl line 7", prompt: `Q: ${INJECT}?`, reference: "A: <b>Paris</b> & more", before: "A: \"no\" 'idea'", after: "A: Paris" },
      { source: "capitals.jsonl line 9", prompt: "Q: Rome?", reference: "A: Rome", before: "A: x", after: "A: Rome" },
    ],
    files: ["merged/model.safetensors"],
    tuned_info: null,
  };
}

function reportOf(result, config) {
  return {
    webtune_version: "0.1.0",
    created: "2025-03-04T05:06:07.000Z",
    backend: { backend: "cpu", adapter: null },
    model: { architecture: "gpt2", parameters: 1_000_000 },
    model_source: { kind: "hub", repo: "owner/<i>model</i>", revision: "main", files: ["model.safetensors"] },
    dataset: "<b>capitals</b>.jsonl",
    validation_file: null,
    task: result.task,
    config,
    data_summary: dataSummary(result),
    curves: curves(result.summary),
    result,
  };
}

/** The cells of the table row `<tr data-metric="key">`: [label, before, after, change]. */
function metricRow(html, key) {
  const m = html.match(new RegExp(`<tr data-metric="${key}">(.*?)</tr>`));
  assert.ok(m, `a row for ${key}`);
  return [...m[1].matchAll(/<t[hd][^>]*>(.*?)<\/t[hd]>/g)].map((c) => c[1]);
}

/** The number of points of the polyline `data-series="key"`. */
function polylinePoints(html, key) {
  const m = html.match(new RegExp(`<polyline data-series="${key}"[^>]* points="([^"]*)"`));
  assert.ok(m, `a polyline for ${key}`);
  return m[1].trim().split(/\s+/).filter(Boolean);
}

function assertSelfContained(html) {
  assert.match(html, /^<!doctype html>/);
  assert.doesNotMatch(html, /<script/i, "no script element");
  assert.doesNotMatch(html, /https?:\/\//i, "no http(s) reference");
  assert.doesNotMatch(html, /\s(src|href)=/i, "nothing to load or follow");
  assert.match(html, /<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">/);
}

test("escapeHtml escapes the five markup characters", () => {
  assert.equal(escapeHtml(`<a href="x">'&'</a>`), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
});

test("a causal report is one self-contained document with escaped data, the numbers, the curves and the settings", () => {
  const result = causalResult();
  const config = { batch_size: 4, validation_fraction: 0.2, train: { method: "lora", lr: 0.01, steps: 5, lora_targets: ["c_attn", "c_proj"] } };
  const html = reportHtml(reportOf(result, config));
  assertSelfContained(html);

  // Data is text, never markup: the injected script, the <b> in names and text, the quotes.
  assert.ok(!html.includes(INJECT) && html.includes("Q: &lt;script&gt;alert(1)&lt;/script&gt;?"), "the example's script is escaped");
  assert.ok(!html.includes("<b>") && !html.includes("<i>"), "no markup from data");
  assert.ok(html.includes("&lt;b&gt;capitals&lt;/b&gt;.jsonl") && html.includes("A: &lt;b&gt;Paris&lt;/b&gt; &amp; more"));
  assert.ok(html.includes("A: &quot;no&quot; &#39;idea&#39;"));
  assert.match(html, /<title>webtune report: owner\/&lt;i&gt;model&lt;\/i&gt; on &lt;b&gt;capitals&lt;\/b&gt;\.jsonl, 2025-03-04 05:06 UTC<\/title>/);

  // Before → after, as the results panel formats them, with the change.
  assert.deepEqual(metricRow(html, "loss"), ["Validation loss", "3.6123", "2.7012", "−25.2%", "−31.0% to −19.0%"]);
  assert.deepEqual(metricRow(html, "perplexity"), ["Perplexity", "37.05", "14.90", "−59.8%", ""]);
  assert.deepEqual(metricRow(html, "exact_match"), ["Exact match (greedy answers)", "0.0%", "50.0%", "+50.0 pts", ""]);
  assert.deepEqual(metricRow(html, "token_f1"), ["Token F1 (greedy answers)", "0.125", "0.750", "+62.5 pts", ""]);
  assert.deepEqual(metricRow(html, "tokens"), ["Tokens scored", "96", "96", "", ""]);
  assert.deepEqual(metricRow(html, "examples"), ["Held-out examples", "8", "8", "", ""]);
  assert.match(html, /<tr data-metric="loss">.*<td class="interval" data-outcome="better">/);
  assert.ok(html.includes("Validation loss: base 3.4000–3.8000, fine-tuned 2.5000–2.9000; Perplexity: base 29.96–44.70, fine-tuned 12.18–18.17."), "the figures' intervals");
  assert.match(html, /<tr data-metric="loss">.*<td class="change" data-better="true">/);
  assert.doesNotMatch(html, /data-metric="seconds"/, "no row for a number the run does not have");

  // The verdict is the results panel's, word for word.
  const verdict = verdictFor(result);
  assert.equal(verdict.outcome, "better");
  assert.ok(html.includes(`<p class="verdict" id="verdict" data-outcome="better">${escapeHtml(verdict.text)}</p>`));
  assert.ok(html.includes("1 record(s) of &lt;b&gt;capitals&lt;/b&gt;.jsonl were skipped"), "the skipped record is noted");

  // One polyline point per curve entry.
  assert.equal(polylinePoints(html, "train_loss").length, result.summary.losses.length);
  assert.equal(polylinePoints(html, "learning_rate").length, result.summary.lrs.length);
  assert.equal(polylinePoints(html, "validation_loss").length, result.summary.eval.length);
  // The first training point is at step 1, the last validation point at the right edge.
  const xs = polylinePoints(html, "validation_loss").map((p) => Number(p.split(",")[0]));
  assert.ok(xs[0] < Number(polylinePoints(html, "train_loss")[0].split(",")[0]), "validation starts at step 0, left of step 1");

  // Hyperparameters: the configuration as given, flattened.
  assert.ok(html.includes('<tr><th scope="row">train.lr</th><td>0.01</td></tr>'));
  assert.ok(html.includes('<tr><th scope="row">train.lora_targets</th><td>c_attn, c_proj</td></tr>'));
  assert.ok(html.includes('<tr><th scope="row">Trainable parameters</th><td>12,288 of 1,000,000</td></tr>'));

  // The data summary.
  assert.ok(html.includes('<tr><th scope="row">Split</th><td>32 training · 8 validation</td></tr>'));
  assert.ok(html.includes('<tr><th scope="row">Skipped</th><td>1: malformed json ×1</td></tr>'));
  assert.ok(html.includes('<tr><th scope="row">Tokens per example (min / median / p95 / max)</th><td>11 / 17 / 21 / 23</td></tr>'));

  // The examples, side by side.
  assert.equal((html.match(/<td class="text">/g) ?? []).length, 4 * result.samples.length);
});

test("the verdict follows the interval of the change, not the point estimates", () => {
  const result = causalResult();
  const judged = (loss_change, units = 8) => verdictFor({ ...result, comparison: { ...result.comparison, units, loss_change } });
  // The interval excludes no change: the verdict says so with the interval.
  const better = judged({ value: -0.2522, interval: { low: -0.31, high: -0.19 }, outcome: "better" });
  assert.equal(better.outcome, "better");
  assert.match(better.text, /^Fine-tuning helped: validation loss fell 25\.2% \(95% interval −31\.0% to −19\.0% over 8 held-out rows\)/);
  // The same fall with an interval that includes zero: no clear change, whatever the points say.
  const unsure = judged({ value: -0.2522, interval: { low: -0.4, high: 0.05 }, outcome: "same" });
  assert.equal(unsure.outcome, "same");
  assert.match(unsure.text, /^No clear change: validation loss fell 25\.2% \(95% interval −40\.0% to \+5\.0% over 8 held-out rows\).*includes no change/);
  // Too few rows for an interval: no verdict either, and why.
  const few = judged({ value: -0.2522, interval: null, outcome: "same" }, 3);
  assert.equal(few.outcome, "same");
  assert.match(few.text, /3 held-out rows are too few to tell a change from chance \(at least 6 are needed\)/);
  // Sure but small: said as such.
  const small = verdictFor({ ...result, after: { ...result.after, loss: result.before.loss * 0.995 }, comparison: { ...result.comparison, loss_change: { value: -0.005, interval: { low: -0.007, high: -0.003 }, outcome: "better" } } });
  assert.match(small.text, /^Fine-tuning helped a little: validation loss fell 0\.5% \(95% interval −0\.7% to −0\.3%/);
  // A rise whose interval excludes zero is worse, with the interval.
  const worse = judged({ value: 0.1, interval: { low: 0.05, high: 0.15 }, outcome: "worse" });
  assert.equal(worse.outcome, "worse");
  assert.match(worse.text, /validation loss rose 25\.2% \(95% interval \+5\.0% to \+15\.0%/);
});

test("a classification report shows per-class scores, both confusion matrices and the changed predictions", () => {
  const labels = ["neg", 'p"os'];
  const result = {
    task: "classification",
    labels,
    pooling: "mean",
    head_from_checkpoint: false,
    report: dataReport({ file: "reviews.csv", format: "csv", schema: { schema: { kind: "classification", text: "text", label: "label" }, detected: true, fields: ["text", "label"] }, labels: { neg: 20, 'p"os': 20 }, skipped: 0, skipped_by_reason: {} }),
    overlap_removed: 0,
    train_examples: 30,
    validation_examples: 10,
    train_batches: 4,
    summary: { backend: "cpu", method: "lora", steps: 4, cancelled: false, losses: [0.7, 0.6, 0.5, 0.45], grad_norms: [1, 1, 1, 1], lrs: [0.005, 0.005, 0.005, 0.005], eval: [{ step: 0, loss: 0.69, accuracy: 0.5, examples: 10 }, { step: 4, loss: 0.41, accuracy: 0.8, examples: 10 }], trainable_params: 1000, total_params: 22_000_000, first_step_ms: 90, median_step_ms: 80, examples_per_s: 100 },
    before: {
      loss: 0.6931,
      accuracy: 0.5,
      macro_f1: 0.3333,
      per_class: [
        { label: "neg", precision: 0.5, recall: 1, f1: 0.6667, support: 5 },
        { label: 'p"os', precision: 0, recall: 0, f1: 0, support: 5 },
      ],
      confusion_matrix: [[5, 0], [5, 0]],
      examples: 10,
      seconds: 0.5,
    },
    after: {
      loss: 0.4102,
      accuracy: 0.8,
      macro_f1: 0.798,
      per_class: [
        { label: "neg", precision: 0.75, recall: 0.9, f1: 0.8182, support: 5 },
        { label: 'p"os', precision: 0.875, recall: 0.7, f1: 0.7778, support: 5 },
      ],
      confusion_matrix: [[4, 1], [1, 4]],
      examples: 10,
      seconds: 0.4,
    },
    comparison: {
      examples: 10,
      accuracy_before: { value: 0.5, interval: { low: 0.2366, high: 0.7634 } },
      accuracy_after: { value: 0.8, interval: { low: 0.4902, high: 0.9433 } },
      macro_f1_before: { value: 0.3333, interval: null },
      macro_f1_after: { value: 0.798, interval: null },
      loss_before: { value: 0.6931, interval: null },
      loss_after: { value: 0.4102, interval: null },
      accuracy_change: { value: 0.3, interval: { low: 0.1, high: 0.6 }, outcome: "better" },
      macro_f1_change: { value: 0.4647, interval: { low: 0.15, high: 0.7 }, outcome: "better" },
      loss_change: { value: -0.408, interval: { low: -0.5, high: -0.3 }, outcome: "better" },
    },
    changed: [{ source: "reviews.csv row 3 (line 4)", text: `great ${INJECT} film`, label: 'p"os', status: "fixed", before: { label: "neg", prob: 0.51, prob_true: 0.49 }, after: { label: 'p"os', prob: 0.934, prob_true: 0.934 } }],
    changed_total: 1,
    fixed: 1,
    broken: 0,
    files: ["merged/model.safetensors"],
  };
  const html = reportHtml(reportOf(result, { train: { lr: 0.005, steps: 4 } }));
  assertSelfContained(html);
  assert.ok(!html.includes(INJECT) && html.includes("great &lt;script&gt;alert(1)&lt;/script&gt; film"));
  assert.ok(html.includes('data-label="p&quot;os"'), "a label with a quote stays inside its attribute");

  assert.deepEqual(metricRow(html, "accuracy"), ["Accuracy", "50.0%", "80.0%", "+30.0 pts", "+10.0 pts to +60.0 pts"]);
  assert.deepEqual(metricRow(html, "macro_f1"), ["Macro-F1", "0.333", "0.798", "+46.5 pts", "+15.0 pts to +70.0 pts"]);
  assert.deepEqual(metricRow(html, "loss"), ["Validation loss", "0.6931", "0.4102", "−40.8%", "−50.0% to −30.0%"]);
  assert.deepEqual(metricRow(html, "seconds"), ["Evaluation time", "0.5 s", "0.4 s", "", ""]);
  assert.ok(html.includes("Accuracy: base 23.7%–76.3%, fine-tuned 49.0%–94.3%"), "accuracy's Wilson intervals");
  assert.ok(html.includes(escapeHtml(verdictFor(result).text)), "the classification verdict");
  assert.match(verdictFor(result).text, /^Fine-tuning helped: held-out accuracy 50\.0% → 80\.0% \(\+30\.0 pts; 95% interval \+10\.0 pts to \+60\.0 pts over 10 held-out examples\)/);

  // Both confusion matrices, cell for cell, the diagonal marked.
  for (const [which, m] of [["before", result.before.confusion_matrix], ["after", result.after.confusion_matrix]]) {
    const table = html.match(new RegExp(`<table class="confusion" data-matrix="${which}">([\\s\\S]*?)</table>`));
    assert.ok(table, `the ${which} confusion matrix`);
    const cells = [...table[1].matchAll(/<td data-diagonal="(true|false)">(\d+)<\/td>/g)];
    assert.deepEqual(cells.map((c) => Number(c[2])), m.flat());
    assert.deepEqual(cells.map((c) => c[1]), ["true", "false", "false", "true"]);
  }
  // Per class: precision, recall and F1 before and after.
  assert.match(html, /<tr data-label="neg"><th scope="row">neg<\/th><td>5<\/td><td>0\.500<\/td><td>1\.000<\/td><td>0\.667<\/td><td>0\.750<\/td><td>0\.900<\/td><td>0\.818<\/td><\/tr>/);
  // The changed prediction with both probabilities, and the label distribution.
  assert.match(html, /<tr data-status="fixed">.*<td>neg \(51\.0%\)<\/td><td>p&quot;os \(93\.4%\)<\/td><\/tr>/);
  assert.match(html, /<table class="labels" id="labels">[\s\S]*<tr><td>neg<\/td><td>20<\/td><\/tr>/);
  assert.equal(polylinePoints(html, "validation_loss").length, 2);
});

function embeddingResult() {
  return {
    task: "embedding",
    pooling: "mean",
    scale: 20,
    seq_len: 64,
    report: dataReport({ file: "qa.jsonl", schema: { schema: { kind: "sentence_pairs", anchor: "anchor", positive: "positive" }, detected: true, fields: ["anchor", "positive"] }, skipped: 0, skipped_by_reason: {} }),
    overlap_removed: 0,
    train_examples: 30,
    validation_examples: 10,
    held_out: { examples: 10, scored: 10, returned_to_training: 0 },
    train_batches: 4,
    summary: {
      backend: "cpu",
      method: "lora",
      steps: 4,
      cancelled: false,
      losses: [1.9, 1.6, 1.4, 1.2],
      grad_norms: [1, 1, 1, 1],
      lrs: [0.001, 0.001, 0.001, 0.001],
      eval: [{ step: 0, loss: 1.2345, accuracy: 0.5, mrr: 0.632, positive_cosine: 0.501, negative_cosine: 0.12, pairs: 10 }, { step: 4, loss: 0.8765, accuracy: 0.8, mrr: 0.856, positive_cosine: 0.679, negative_cosine: 0.15, pairs: 10 }],
      trainable_params: 1000,
      total_params: 22_000_000,
      first_step_ms: 90,
      median_step_ms: 80,
      tokens_per_s: 0,
      examples_per_s: 40,
    },
    before: { loss: 1.2345, accuracy: 0.5, mrr: 0.632, positive_cosine: 0.501, negative_cosine: 0.12, pairs: 10 },
    after: { loss: 0.8765, accuracy: 0.8, mrr: 0.856, positive_cosine: 0.679, negative_cosine: 0.15, pairs: 10 },
    comparison: {
      pairs: 10,
      accuracy_before: { value: 0.5, interval: { low: 0.2366, high: 0.7634 } },
      accuracy_after: { value: 0.8, interval: { low: 0.4902, high: 0.9433 } },
      mrr_before: { value: 0.632, interval: { low: 0.5, high: 0.75 } },
      mrr_after: { value: 0.856, interval: { low: 0.75, high: 0.95 } },
      loss_before: { value: 1.2345, interval: null },
      loss_after: { value: 0.8765, interval: null },
      positive_cosine_before: { value: 0.501, interval: { low: 0.45, high: 0.55 } },
      positive_cosine_after: { value: 0.679, interval: { low: 0.62, high: 0.73 } },
      accuracy_change: { value: 0.3, interval: { low: 0.1, high: 0.5 }, outcome: "better" },
      mrr_change: { value: 0.224, interval: { low: 0.1, high: 0.35 }, outcome: "better" },
      loss_change: { value: -0.358, interval: { low: -0.5, high: -0.2 }, outcome: "better" },
    },
    changed: [
      {
        source: "qa.jsonl line 4",
        anchor: `what is ${INJECT}?`,
        positive: "a <b>test</b>",
        status: "fixed",
        before: { text: "wrong <i>answer</i>", rank: 3, cosine: 0.41 },
        after: { text: "a <b>test</b>", rank: 1, cosine: 0.77 },
      },
    ],
    changed_total: 1,
    fixed: 1,
    broken: 0,
    files: ["merged/model.safetensors", "merged/modules.json", "merged/1_Pooling/config.json"],
  };
}

test("an embedding report shows retrieval before and after with its intervals, the texts whose best match changed, and the pooling", () => {
  const result = embeddingResult();
  const html = reportHtml(reportOf(result, { batch_size: 8, train: { lr: 0.001, steps: 4 } }));
  assertSelfContained(html);
  assert.ok(!html.includes(INJECT) && !html.includes("<b>") && !html.includes("<i>"), "no markup from data");

  // Rates change in points, MRR, cosines and the loss by their difference (as the job judges them).
  assert.deepEqual(metricRow(html, "accuracy"), ["Recall@1 (its own partner ranks first)", "50.0%", "80.0%", "+30.0 pts", "+10.0 pts to +50.0 pts"]);
  assert.deepEqual(metricRow(html, "mrr"), ["Mean reciprocal rank", "0.632", "0.856", "+0.224", "+0.100 to +0.350"]);
  assert.deepEqual(metricRow(html, "positive_cosine"), ["Cosine of a pair", "0.501", "0.679", "+0.178", ""]);
  assert.deepEqual(metricRow(html, "negative_cosine"), ["Cosine with the other partners", "0.120", "0.150", "", ""]);
  assert.deepEqual(metricRow(html, "loss"), ["Validation loss (contrastive)", "1.2345", "0.8765", "−0.3580", "−0.5000 to −0.2000"]);
  assert.deepEqual(metricRow(html, "pairs"), ["Held-out pairs", "10", "10", "", ""]);
  assert.ok(html.includes("Recall@1 (its own partner ranks first): base 23.7%–76.3%, fine-tuned 49.0%–94.3%; Mean reciprocal rank: base 0.500–0.750, fine-tuned 0.750–0.950"), "the figures' intervals");
  assert.doesNotMatch(html, /class="confusion"/, "no confusion matrix for retrieval");

  // The verdict: recall@1 decides, with its interval.
  const verdict = verdictFor(result);
  assert.equal(verdict.outcome, "better");
  assert.match(verdict.text, /^Fine-tuning helped: held-out recall@1 50\.0% → 80\.0% \(\+30\.0 pts; 95% interval \+10\.0 pts to \+50\.0 pts over 10 held-out pairs\), MRR 0\.632 → 0\.856\./);
  assert.ok(html.includes(`data-outcome="better">${escapeHtml(verdict.text)}</p>`));
  const unsure = verdictFor({ ...result, comparison: { ...result.comparison, accuracy_change: { value: 0.3, interval: { low: -0.1, high: 0.6 }, outcome: "same" } } });
  assert.equal(unsure.outcome, "same");
  assert.match(unsure.text, /^No clear change: .*includes no change/);
  const worse = verdictFor({ ...result, comparison: { ...result.comparison, accuracy_change: { value: -0.3, interval: { low: -0.5, high: -0.1 }, outcome: "worse" } } });
  assert.equal(worse.outcome, "worse");
  assert.match(worse.text, /^Fine-tuning made retrieval worse/);

  // The changed text: what ranked first before (another text, its partner 3rd) and after (its own).
  assert.ok(
    html.includes(
      '<td class="text">wrong &lt;i&gt;answer&lt;/i&gt;<div class="source">partner ranked 3, cosine 0.410</div></td><td class="text">its own partner<div class="source">partner ranked 1, cosine 0.770</div></td>',
    ),
    "before and after of the changed text",
  );
  assert.match(html, /<tr data-status="fixed"><td>fixed<\/td><td class="text">what is &lt;script&gt;alert\(1\)&lt;\/script&gt;\?/);
  assert.ok(html.includes('<tr><th scope="row">Embeddings</th><td>mean pooling, cosine scale 20, at most 64 tokens per text</td></tr>'));
  assert.ok(html.includes('<tr><th scope="row">Speed</th><td>40.0 pairs/s</td></tr>'), "pairs per second, not the tokens a pair task does not count");
});

test("the report's data summary and curves are read from the result", () => {
  const result = causalResult();
  result.validation_report = { file: "valid.jsonl", bytes: 100, examples: 8, skipped: 0 };
  result.overlap_removed = 2;
  const d = dataSummary(result);
  assert.equal(d.file, "<b>capitals</b>.jsonl");
  assert.deepEqual(d.schema, result.report.schema.schema);
  assert.deepEqual(d.skipped_by_reason, { malformed_json: 1 });
  assert.equal(d.train_examples, 32);
  assert.equal(d.validation_examples, 8);
  assert.deepEqual(d.validation_file, { file: "valid.jsonl", bytes: 100, examples: 8, skipped: 0 });
  assert.equal(d.overlap_removed, 2);
  assert.equal(d.tokens.p95, 21);
  assert.equal(d.tokens.histogram, undefined, "the summary leaves the histogram in result.report");
  assert.equal(d.labels, null);
  assert.equal(dataSummary({}), null);

  const c = curves(result.summary);
  assert.deepEqual(c.steps, [1, 2, 3, 4, 5]);
  assert.deepEqual(c.train_loss, result.summary.losses);
  assert.deepEqual(c.learning_rate, result.summary.lrs);
  assert.deepEqual(c.grad_norm, result.summary.grad_norms);
  assert.deepEqual(c.validation, result.summary.eval);
  assert.equal(curves(null), null);

  assert.deepEqual(modelSource({ kind: "hub", repo: "o/n", revision: "main", endpoint: "https://hf.example", base: "https://hf.example/o/n", files: [{ file: "a.gguf", url: "https://hf.example/o/n/resolve/main/a.gguf" }] }), {
    kind: "hub",
    repo: "o/n",
    revision: "main",
    files: ["a.gguf"],
  });
  assert.deepEqual(modelSource({ kind: "files", files: ["config.json"] }), { kind: "files", files: ["config.json"] });
});

test("a run without held-out numbers or finite curve points still renders, and no report is a clear error", () => {
  const result = causalResult();
  result.before = null;
  result.after = null;
  result.answers_before = null;
  result.answers_after = null;
  result.summary.losses = [2, null, 1];
  result.summary.eval = [];
  const html = reportHtml(reportOf(result, {}));
  assertSelfContained(html);
  assert.match(html, /data-outcome="none"/);
  assert.match(html, /no before\/after numbers/);
  assert.equal(polylinePoints(html, "train_loss").length, 2, "the non-finite loss is left out");
  assert.throws(() => reportHtml(null), /reportHtml needs an evaluation report/);
});
