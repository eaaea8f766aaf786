// Fine-tuning browser tests on the tiny random GPT-2 with the real GPT-2 vocabulary
// (tests/fixtures/tiny_random/gpt2-vocab): the dataset report (a malformed JSONL line under the
// skip and stop policies), a LoRA run whose held-out loss falls, shown on the chart and in the
// before/after panel, Stop mid-run, a no-egress check over the whole local flow (with the
// evaluation report downloaded as JSON and as an HTML page that opens offline, and the training
// recipe as a ZIP), the exported
// merged model loading in the native CLI with the same logits, and WebGPU losses matching CPU.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import {
  CLI,
  artifactPath,
  assertCleanLog,
  launchBrowser,
  loadDefaultModel,
  maxAbsDiff,
  readStoredZip,
  waitForBackend,
  waitInPage,
  withPage,
  withTimeout,
  writeArtifactJson,
} from "./harness.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const MODEL_DIR = path.join(ROOT, "tests/fixtures/tiny_random/gpt2-vocab");
// tokenizer.json is a symlink; readFileSync follows it.
const MODEL_FILES = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json"];

// A small, repetitive prompt → completion set: the completions share their wording, so even a
// random tiny model learns it within a few dozen LoRA steps.
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
const GOOD_JSONL = COUNTRIES.map(([c, k]) => JSON.stringify({ prompt: `Q: What is the capital of ${c}?`, completion: `A: The capital of ${c} is ${k}.` })).join("\n") + "\n";
// Line 3 is broken JSON; the other lines are fine.
const BAD_JSONL = GOOD_JSONL.split("\n")
  .map((line, i) => (i === 2 ? '{"prompt": "Q: What is the capital of Italy?", "completion": ' : line))
  .join("\n");

// seq_len 32 covers every example (about 20 tokens); a 20% validation share holds out 8 pairs.
const DATA = { data: { policy: "skip", causal: { seq_len: 32 } }, validation_fraction: 0.2, batch_size: 4 };
const LORA = { ...DATA, samples: 3, sample_tokens: 12, train: { method: "lora", lr: 1e-2, steps: 30, eval_every: 10, seed: 7, lora_r: 8, lora_alpha: 16 } };

const OP_TIMEOUT_MS = 180_000;

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** Load the fixture through window.webtune.loadModelFiles([{name, bytes}]). */
async function loadFixture(page) {
  const files = MODEL_FILES.map((name) => ({ name, b64: fs.readFileSync(path.join(MODEL_DIR, name)).toString("base64") }));
  const record = await withTimeout(
    page.evaluate(async (list) => {
      const decode = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const r = await window.webtune.loadModelFiles(list.map((f) => ({ name: f.name, bytes: decode(f.b64) })));
      return { status: r.status, info: r.info, error: r.error };
    }, files),
    120_000,
    "the gpt2-vocab fixture to load",
  );
  assert.equal(record.error, null, `loading failed: ${JSON.stringify(record.error)}`);
  assert.equal(record.info.vocab_size, 50257);
  assert.equal(record.info.has_tokenizer, true);
  return record.info;
}

function inspect(page, name, text, config, ms = OP_TIMEOUT_MS) {
  return withTimeout(
    page.evaluate(({ name, text, config }) => window.webtune.inspectDataset({ name, bytes: text }, config), { name, text, config }),
    ms,
    `inspectDataset(${name})`,
  );
}

/** Fine-tune through the API; returns the record without the bulky report. */
function finetune(page, name, text, config, ms = OP_TIMEOUT_MS) {
  return withTimeout(
    page.evaluate(({ name, text, config }) => window.webtune.finetune({ name, bytes: text }, config), { name, text, config }),
    ms,
    `finetune(${name})`,
  );
}

/** The last row of logits([1, 2, 3], which), as a plain array. */
async function lastLogits(page, which) {
  const out = await withTimeout(
    page.evaluate(async (w) => {
      const r = await window.webtune.logits([1, 2, 3], w);
      if (r.error) return { error: r.error };
      const [t, v] = r.shape;
      return { shape: r.shape, last: Array.from(r.data.subarray((t - 1) * v, t * v)) };
    }, which),
    60_000,
    `logits([1, 2, 3], ${which})`,
  );
  assert.equal(out.error, undefined, `logits failed: ${JSON.stringify(out.error)}`);
  return out.last;
}

function cliJson(args) {
  assert.ok(CLI, "WEBTUNE_CLI is not set (cargo xtask test sets it to the native webtune binary)");
  const stdout = execFileSync(CLI, [...args, "--json"], { encoding: "utf8", timeout: 300_000, maxBuffer: 256 << 20 });
  return JSON.parse(stdout.trim().split("\n").filter(Boolean).at(-1));
}

const isLocal = (url) => {
  const u = new URL(url);
  if (u.protocol === "blob:" || u.protocol === "data:") return true;
  return ["127.0.0.1", "localhost", "[::1]"].includes(u.hostname);
};

// ---------------------------------------------------------------------------------------------

test("a. a malformed JSONL line: listed with its line number under skip, data.invalid naming line 3 under stop; the page stays usable", { timeout: 300_000 }, async () => {
  await withPage("finetune-a-report", browser, { backend: "cpu" }, async ({ page, log }) => {
    await waitForBackend(page);
    await loadFixture(page);

    // Skip: the report lists line 3 and keeps the rest.
    const skip = await inspect(page, "bad.jsonl", BAD_JSONL, DATA);
    assert.equal(skip.error, null, `inspect failed: ${JSON.stringify(skip.error)}`);
    const r = skip.result.report;
    console.log(`skip report: records ${r.records}, examples ${r.examples}, skipped ${JSON.stringify(r.skipped_by_reason)}, issue ${JSON.stringify(r.issues[0])}`);
    assert.equal(r.format, "jsonl");
    assert.equal(r.schema.schema.kind, "prompt_completion");
    assert.equal(r.examples, COUNTRIES.length - 1);
    assert.equal(r.skipped, 1);
    assert.equal(r.issues.length, 1);
    assert.equal(r.issues[0].line, 3);
    assert.equal(r.issues[0].reason, "malformed_json");
    assert.equal(skip.result.train_examples + skip.result.validation_examples, COUNTRIES.length - 1);
    // The panel shows it.
    const issue = page.locator('[data-testid=dataset-issue][data-line="3"]');
    await issue.waitFor({ timeout: 10_000 });
    assert.match(await issue.textContent(), /bad\.jsonl:3/);
    assert.match(await page.getByTestId("report-format").textContent(), /JSON Lines/);
    assert.match(await page.getByTestId("report-schema").textContent(), /prompt → completion \(detected\)/);
    assert.match(await page.getByTestId("report-skipped").textContent(), /^1: malformed json ×1/);
    assert.match(await page.getByTestId("report-examples").textContent(), new RegExp(`^${COUNTRIES.length - 1}$`));
    assert.match(await page.getByTestId("report-truncated").textContent(), /^0 longer than 32 tokens/);
    assert.match(await page.getByTestId("dataset-privacy").textContent(), /never leaves this machine/);
    // The preview shows the completion tokens (and only those) as counting in the loss.
    const preview = skip.result.preview;
    assert.ok(preview.length > 0, "a preview of the first examples");
    const counted = preview[0].tokens.filter((t) => t.counts).map((t) => t.text).join("");
    assert.match(counted, /^A: The capital of \w+ is [\w ]+\.<\|endoftext\|>$/, `counted tokens: ${JSON.stringify(counted)}`);
    assert.doesNotMatch(counted, /Q: What/, "prompt tokens do not count");
    // The panel highlights the tokens that are predicted in the loss: the completion and its EOS.
    const highlighted = await page.locator("[data-testid=preview-example]").first().locator("mark.counts").allTextContents();
    assert.match(highlighted.join(""), /^A: The capital of \w+ is [\w ]+\.<\|endoftext\|>$/, `highlighted: ${JSON.stringify(highlighted)}`);

    // Stop, through the panel: changing the policy checks the chosen file again.
    await page.getByLabel("Bad records").selectOption("stop");
    const state = await waitInPage(
      page,
      () => {
        const el = document.querySelector("[data-testid=dataset-state]");
        return el?.dataset.outcome === "error" ? el.textContent : null;
      },
      null,
      30_000,
      "the stop policy to refuse the file in the dataset panel",
    );
    assert.match(state, /data\.invalid \(bad\.jsonl:3\)/);
    assert.equal(await page.getByTestId("dataset-report").isHidden(), true, "no report for a refused file");
    const alert = page.locator('[data-testid=error][data-code="data.invalid"]');
    await alert.first().waitFor({ timeout: 10_000 });
    assert.match(await alert.first().textContent(), /line 3/);

    // Stop, through the API: the error names line 3.
    const stop = await inspect(page, "bad.jsonl", BAD_JSONL, { ...DATA, data: { ...DATA.data, policy: "stop" } });
    assert.equal(stop.status, "error");
    assert.equal(stop.error.code, "data.invalid");
    assert.equal(stop.error.details.line, 3);
    assert.equal(stop.error.details.file, "bad.jsonl");
    assert.match(stop.error.message, /line 3/);

    // A sample dataset, fetched from the page's own origin with the chooser.
    await page.getByLabel("Bad records").selectOption("skip");
    await waitInPage(page, () => document.querySelector("[data-testid=dataset-state]")?.dataset.outcome === "done", null, 30_000, "bad.jsonl checked again under skip");
    await page.getByLabel("Sample dataset").selectOption("chatterbot_english_qa.jsonl");
    await page.getByTestId("use-sample").click();
    await waitInPage(
      page,
      () => document.querySelector("[data-testid=dataset-state]")?.dataset.outcome === "done" && /chatterbot/.test(document.querySelector("[data-testid=report-file]")?.textContent ?? ""),
      null,
      60_000,
      "the sample's report",
    );
    assert.equal(await page.evaluate(() => window.webtune.dataset.source), "sample");
    assert.match(await page.getByTestId("report-skipped").textContent(), /empty text ×28/);
    assert.match(await page.getByTestId("report-schema").textContent(), /prompt → completion/);

    // A CSV saved by a Western-European spreadsheet (windows-1252): refused as UTF-8 with the
    // byte's line, read correctly once its encoding is chosen in the panel.
    // Header, 11 plain rows, then "café – good" on line 13 (é = 0xE9, the en dash = 0x96).
    const plain = Array.from({ length: 11 }, (_, i) => `row ${i + 1}`).join("\n");
    const latin = [...Buffer.from(`text\n${plain}\n`, "latin1"), 0x63, 0x61, 0x66, 0xe9, 0x20, 0x96, 0x20, 0x67, 0x6f, 0x6f, 0x64, 0x0a];
    const asUtf8 = await withTimeout(
      page.evaluate(([b, c]) => window.webtune.inspectDataset({ name: "latin.csv", bytes: new Uint8Array(b) }, c), [latin, DATA]),
      OP_TIMEOUT_MS,
      "latin.csv as UTF-8",
    );
    assert.equal(asUtf8.error?.code, "data.invalid");
    assert.equal(asUtf8.error.details.line, 13);
    assert.match(asUtf8.error.message, /windows-1252/);
    // Choosing the encoding checks the chosen file again, with the panel's settings.
    await page.getByLabel("Text encoding").selectOption("windows-1252");
    await waitInPage(
      page,
      () => document.querySelector("[data-testid=dataset-state]")?.dataset.outcome === "done" && /windows-1252/.test(document.querySelector("[data-testid=report-format]")?.textContent ?? ""),
      null,
      60_000,
      "latin.csv read as windows-1252",
    );
    assert.match(await page.getByTestId("report-examples").textContent(), /12/);
    await page.getByLabel("Text encoding").selectOption("utf-8");

    // A play is detected as continuous text and read as one document in chunks, said with the
    // reason; the panel's switch reads it one example per line instead.
    await page.getByLabel("Sample dataset").selectOption("shakespeare_excerpt.txt");
    await page.getByTestId("use-sample").click();
    const reportOf = (file) =>
      waitInPage(page, (f) => document.querySelector("[data-testid=dataset-state]")?.dataset.outcome === "done" && (document.querySelector("[data-testid=report-file]")?.textContent ?? "").startsWith(f), file, 60_000, `${file}'s report`);
    await reportOf("shakespeare_excerpt.txt");
    assert.match(await page.getByTestId("report-text-mode").textContent(), /^continuous text \(\d+% of lines end mid-sentence.*\(detected\)$/);
    const chunks = Number((await page.getByTestId("report-examples").textContent()).replaceAll(",", ""));
    await page.getByLabel("Plain text is").selectOption("lines");
    await waitInPage(page, () => /^one example per line, as asked/.test(document.querySelector("[data-testid=report-text-mode]")?.textContent ?? ""), null, 60_000, "the sample read line by line");
    const lines = Number((await page.getByTestId("report-examples").textContent()).replaceAll(",", ""));
    assert.ok(chunks > 50 && lines > 10 * chunks, `${chunks} chunks, ${lines} lines`);
    await page.getByLabel("Plain text is").selectOption("auto");
    await waitInPage(page, () => /^continuous text/.test(document.querySelector("[data-testid=report-text-mode]")?.textContent ?? "") && document.querySelector("[data-testid=dataset-state]")?.dataset.outcome === "done", null, 60_000, "the sample read as a document again");

    // Still usable: a good file is reported, generation works.
    const good = await inspect(page, "capitals.jsonl", GOOD_JSONL, DATA);
    assert.equal(good.error, null);
    assert.equal(good.result.report.skipped, 0);
    assert.equal(good.result.report.examples, COUNTRIES.length);
    const gen = await withTimeout(page.evaluate(() => window.webtune.generate("Q: What is", { greedy: true, max_new_tokens: 4, ignore_eos: true })), 60_000, "a generation");
    assert.equal(gen.error, null);
    assert.equal(gen.result.generated_ids.length, 4);
    assert.equal(await page.evaluate(() => window.webtune.workerState), "ready");
    assertCleanLog(assert, log);
  });
});

test("b. LoRA fine-tuning lowers the held-out loss; chart, before/after and samples show it; Stop works mid-run", { timeout: 600_000 }, async () => {
  await withPage("finetune-b-lora", browser, { backend: "cpu" }, async ({ page, log }) => {
    await waitForBackend(page);
    await loadFixture(page);

    const run = await finetune(page, "capitals.jsonl", GOOD_JSONL, LORA);
    assert.equal(run.error, null, `fine-tuning failed: ${JSON.stringify(run.error)}`);
    assert.equal(run.status, "done");
    const { summary, before: b, after: a, samples, files } = run.result;
    const steps = run.events.filter((e) => e.type === "step");
    const phases = run.events.filter((e) => e.type === "phase").map((e) => e.phase);
    console.log(
      `LoRA CPU: ${summary.steps} steps, train loss ${summary.losses[0].toFixed(4)} → ${summary.losses.at(-1).toFixed(4)}, ` +
        `validation loss ${b.loss.toFixed(4)} → ${a.loss.toFixed(4)} (perplexity ${b.perplexity.toFixed(1)} → ${a.perplexity.toFixed(1)}, ${a.tokens} tokens), ` +
        `${summary.median_step_ms.toFixed(1)} ms/step median (first ${summary.first_step_ms.toFixed(1)}), ${summary.tokens_per_s.toFixed(0)} tokens/s, ` +
        `${summary.trainable_params} of ${summary.total_params} parameters trained; phases ${phases.join(",")}`,
    );
    writeArtifactJson("finetune-b-lora.json", { summary, before: b, after: a, samples, files });
    assert.equal(summary.cancelled, false);
    assert.equal(summary.steps, 30);
    assert.equal(steps.length, 30);
    assert.equal(summary.method, "lora");
    assert.ok(summary.trainable_params < summary.total_params);
    assert.ok(a.loss < b.loss, `validation loss after (${a.loss}) < before (${b.loss})`);
    assert.ok(summary.eval.length >= 3, "validation loss every 10 steps");
    assert.ok(files.includes("merged/model.safetensors") && files.includes("adapter/adapter_model.safetensors"), `files: ${files}`);
    assert.ok(samples.length > 0 && samples.length <= 3, "held-out samples");

    // The fine-tune panel: progress, chart with train and validation points.
    assert.equal((await page.getByTestId("ft-step").textContent()).trim(), "30 / 30");
    const chart = await page.evaluate(() => {
      const plot = document.querySelector("[data-testid=ft-chart] .uplot");
      return { drawn: Boolean(plot), legend: [...document.querySelectorAll("[data-testid=ft-chart] .u-legend .u-label")].map((l) => l.textContent) };
    });
    assert.ok(chart.drawn, "the uPlot chart is drawn");
    assert.deepEqual(chart.legend.slice(1), ["train loss", "validation loss", "learning rate"]);
    // The learning-rate curve is the schedule the run used, step by step.
    const plotted = await page.evaluate(() => window.webtune.finetuneChart());
    const drawnLrs = plotted.steps.map((s, i) => [s, plotted.lrs[i]]).filter(([, lr]) => lr !== null);
    assert.deepEqual(drawnLrs.map(([s]) => s), summary.lrs.map((_, i) => i + 1));
    assert.ok(maxAbsDiff(drawnLrs.map(([, lr]) => lr), summary.lrs).max < 1e-12, "the plotted learning rates are the summary's");
    assert.match(await page.getByTestId("ft-result").textContent(), /^Done: 30 steps of LoRA on CPU/);

    // The before/after panel shows the same numbers, the verdict and the samples.
    assert.equal((await page.getByTestId("val-loss-before").textContent()).trim(), b.loss.toFixed(4));
    assert.equal((await page.getByTestId("val-loss-after").textContent()).trim(), a.loss.toFixed(4));
    assert.equal((await page.getByTestId("perplexity-after").textContent()).trim(), a.perplexity.toFixed(2));
    assert.equal(await page.getByTestId("val-loss-change").getAttribute("data-better"), "true");
    assert.equal(await page.getByTestId("verdict").getAttribute("data-outcome"), "better");
    assert.match(await page.getByTestId("verdict").textContent(), /validation loss fell/);
    // The verdict is the comparison's: the paired interval of the change excludes no change,
    // and the panel shows it beside the change and under each figure.
    const c = run.result.comparison;
    assert.equal(c.loss_change.outcome, "better");
    assert.ok(c.loss_change.interval.high < 0, JSON.stringify(c.loss_change));
    assert.equal(c.units, b.row_losses.length);
    const pctText = (x) => `${x > 0 ? "+" : x < 0 ? "−" : "±"}${Math.abs(x * 100).toFixed(1)}%`;
    assert.equal((await page.getByTestId("val-loss-interval").textContent()).trim(), `${pctText(c.loss_change.interval.low)} to ${pctText(c.loss_change.interval.high)}`);
    assert.equal(await page.getByTestId("val-loss-interval").getAttribute("data-outcome"), "better");
    assert.match(await page.getByTestId("verdict").textContent(), new RegExp(`95% interval ${pctText(c.loss_change.interval.low)} to ${pctText(c.loss_change.interval.high)} over ${c.units} held-out rows`));
    assert.equal((await page.getByTestId("val-loss-before-ci").textContent()).trim(), `95%: ${c.loss_before.interval.low.toFixed(4)}–${c.loss_before.interval.high.toFixed(4)}`);
    assert.equal(await page.getByTestId("sample-row").count(), samples.length);
    assert.equal((await page.getByTestId("sample-after").first().textContent()), samples[0].after);
    assert.ok((await page.locator("[data-testid=download-file]").count()) >= 4, "download buttons");
    // The generate panel offers the fine-tuned model, chosen by default.
    assert.ok(await page.getByTestId("gen-model-tuned").isEnabled());
    assert.ok(await page.getByTestId("gen-model-tuned").isChecked());

    // A second run, started from the panel, stopped mid-run with the Stop button.
    await page.getByLabel("Training steps").fill("400");
    await page.getByLabel("Fine-tune learning rate").fill("0.01");
    const index = await page.evaluate(() => window.webtune.finetunes.length);
    await page.getByTestId("ft-start").click();
    await waitInPage(page, (i) => (window.webtune.finetunes[i]?.events.filter((e) => e.type === "step").length ?? 0) >= 3, index, 120_000, "three steps of the second run");
    await page.getByTestId("ft-stop").click();
    const stopped = await waitInPage(
      page,
      (i) => {
        const r = window.webtune.finetunes[i];
        return r && r.status !== "running" && r.status !== "cancelling" ? { status: r.status, summary: r.result?.summary ?? null, after: r.result?.after ?? null, error: r.error } : null;
      },
      index,
      120_000,
      "the stopped run to end",
    );
    console.log(`stopped run: status ${stopped.status}, ${stopped.summary?.steps} of 400 steps, after ${JSON.stringify(stopped.after)}`);
    assert.equal(stopped.error, null);
    assert.equal(stopped.status, "cancelled");
    assert.equal(stopped.summary.cancelled, true);
    assert.ok(stopped.summary.steps >= 3 && stopped.summary.steps < 400, `stopped after ${stopped.summary.steps} steps`);
    assert.ok(stopped.after, "the stopped model is still evaluated");
    assert.match(await page.getByTestId("ft-result").textContent(), /^Stopped:/);

    // Still usable: generate with the fine-tuned model from the panel.
    await page.getByLabel("Prompt").fill("Q: What is the capital of France?");
    await page.getByLabel("Max new tokens").fill("6");
    await page.getByLabel("Greedy").check();
    await page.getByTestId("generate").click();
    await waitInPage(page, () => document.querySelector("[data-testid=gen-stats]")?.dataset.outcome === "done", null, 60_000, "the generation to finish");
    assert.match(await page.getByTestId("gen-stats").textContent(), /fine-tuned model/);
    assertCleanLog(assert, log);
  });
});

test("c. privacy: after the model is loaded, checking data, fine-tuning, generating and exporting make no request at all", { timeout: 600_000 }, async () => {
  await withPage("finetune-c-privacy", browser, { backend: "cpu" }, async ({ page, log }) => {
    await waitForBackend(page);
    await loadFixture(page);
    await page.waitForLoadState("networkidle").catch(() => {});
    const mark = log.requests.length;

    // The dataset through the file input, checked automatically.
    await page.getByTestId("dataset-file").setInputFiles({ name: "capitals.jsonl", mimeType: "application/jsonl", buffer: Buffer.from(GOOD_JSONL) });
    await waitInPage(page, () => document.querySelector("[data-testid=dataset-state]")?.dataset.outcome === "done", null, 60_000, "the dataset report");
    // Fine-tune the chosen dataset (input null).
    const direct = await withTimeout(page.evaluate((config) => window.webtune.finetune(null, config), { ...LORA, train: { ...LORA.train, steps: 10 } }), OP_TIMEOUT_MS, "fine-tuning the chosen dataset");
    assert.equal(direct.error, null, `fine-tuning failed: ${JSON.stringify(direct.error)}`);
    assert.equal(direct.name, "capitals.jsonl");
    const gen = await withTimeout(
      page.evaluate(() => window.webtune.generate("Q: What is the capital of Peru?", { greedy: true, max_new_tokens: 8, ignore_eos: true, model: "tuned" })),
      60_000,
      "generating with the fine-tuned model",
    );
    assert.equal(gen.error, null);
    const exported = await withTimeout(
      page.evaluate(async () => {
        const r = await window.webtune.exportFiles();
        // The merged weights are written on demand, tensor by tensor: a whole safetensors
        // file (header, then every tensor's bytes up to the last offset), not zeros.
        const w = r.files?.["merged/model.safetensors"];
        let weights = null;
        if (w) {
          const n = Number(new DataView(w.buffer, w.byteOffset, 8).getBigUint64(0, true));
          const header = JSON.parse(new TextDecoder().decode(w.subarray(8, 8 + n)));
          const tensors = Object.entries(header).filter(([k]) => k !== "__metadata__");
          const end = Math.max(...tensors.map(([, t]) => t.data_offsets[1]));
          weights = { complete: 8 + n + end === w.byteLength, tensors: tensors.length, nonzero: w.subarray(8 + n).some((b) => b !== 0) };
        }
        return { error: r.error, names: r.files ? Object.keys(r.files) : null, weights };
      }),
      60_000,
      "exportFiles()",
    );
    assert.equal(exported.error, null);
    assert.ok(exported.names.includes("merged/config.json") && exported.names.includes("adapter/adapter_model.safetensors"), exported.names.join(", "));
    assert.equal(exported.weights?.complete, true, JSON.stringify(exported.weights));
    assert.ok(exported.weights.tensors > 0 && exported.weights.nonzero, JSON.stringify(exported.weights));
    // And a real download through the page's button.
    const [download] = await Promise.all([
      page.waitForEvent("download", { timeout: 30_000 }),
      page.locator('[data-testid=download-file][data-file="merged/config.json"]').click(),
    ]);
    assert.equal(download.suggestedFilename(), "webtune-merged-config.json");
    // The evaluation report: one JSON file with the settings and the before/after numbers.
    const [reportDownload] = await Promise.all([page.waitForEvent("download", { timeout: 30_000 }), page.getByTestId("download-report").click()]);
    assert.equal(reportDownload.suggestedFilename(), "webtune-evaluation-report.json");
    const report = JSON.parse(fs.readFileSync(await reportDownload.path(), "utf8"));
    const latest = await page.evaluate(() => window.webtune.finetunes.at(-1).result);
    assert.equal(report.result.after.loss, latest.after.loss);
    assert.equal(report.result.before.loss, latest.before.loss);
    assert.equal(report.backend.backend, "cpu");
    assert.equal(report.model.architecture, "gpt2");
    assert.equal(typeof report.config.train, "object");
    // Its data summary and curves are the run's own.
    assert.equal(report.task, "causal");
    assert.equal(report.data_summary.file, "capitals.jsonl");
    assert.equal(report.data_summary.examples, latest.report.examples);
    assert.deepEqual([report.data_summary.train_examples, report.data_summary.validation_examples], [latest.train_examples, latest.validation_examples]);
    assert.equal(report.data_summary.tokens.seq_len, 32);
    assert.deepEqual(report.curves.steps, latest.summary.losses.map((_, i) => i + 1));
    assert.deepEqual(report.curves.train_loss, latest.summary.losses);
    assert.deepEqual(report.curves.learning_rate, latest.summary.lrs);
    assert.deepEqual(report.curves.validation.map((p) => p.step), latest.summary.eval.map((p) => p.step));

    // The same report as one HTML page: the JSON's numbers as the results panel formats them,
    // the curves as SVG polylines (one point per step), the settings, and nothing to load.
    const [htmlDownload] = await Promise.all([page.waitForEvent("download", { timeout: 30_000 }), page.getByTestId("download-report-html").click()]);
    assert.equal(htmlDownload.suggestedFilename(), "webtune-evaluation-report.html");
    // Saved under its own name: a file:// page is parsed as HTML only with the .html extension.
    const htmlPath = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "webtune-report-")), htmlDownload.suggestedFilename());
    await htmlDownload.saveAs(htmlPath);
    const html = fs.readFileSync(htmlPath, "utf8");
    fs.copyFileSync(htmlPath, artifactPath("finetune-c-report.html"));
    const b = report.result.before;
    const a = report.result.after;
    assert.ok(
      html.includes(`<tr data-metric="loss"><th scope="row">Validation loss</th><td class="before">${b.loss.toFixed(4)}</td><td class="after">${a.loss.toFixed(4)}</td>`),
      "the validation loss before and after",
    );
    assert.ok(html.includes(`<td class="before">${b.perplexity.toFixed(2)}</td><td class="after">${a.perplexity.toFixed(2)}</td>`), "the perplexity before and after");
    assert.ok(html.includes(`<td class="before">${b.tokens}</td><td class="after">${a.tokens}</td>`), "the tokens scored");
    const polyline = (key) => html.match(new RegExp(`<polyline data-series="${key}"[^>]* points="([^"]*)"`))?.[1].trim().split(/\s+/).length ?? 0;
    assert.equal(polyline("train_loss"), report.curves.train_loss.length);
    assert.equal(polyline("train_loss"), 10);
    assert.equal(polyline("learning_rate"), report.curves.learning_rate.length);
    assert.equal(polyline("validation_loss"), report.curves.validation.length);
    assert.ok(html.includes(`<tr><th scope="row">train.lr</th><td>${LORA.train.lr}</td></tr>`), "the learning rate setting");
    assert.ok(html.includes("<title>webtune report: gpt2 (local files) on capitals.jsonl, "), "the title names model and dataset");
    assert.doesNotMatch(html, /<script/i);
    assert.doesNotMatch(html, /https?:\/\//i);
    // Opened from the file with the network off (in its own context, outside this page's
    // request log): it renders, requests nothing else, and its CSP reports no violation.
    const viewer = await browser.newContext({ offline: true });
    try {
      const view = await viewer.newPage();
      const seen = [];
      const errors = [];
      view.on("request", (r) => seen.push(r.url()));
      view.on("console", (m) => m.type() === "error" && errors.push(m.text()));
      const fileUrl = pathToFileURL(htmlPath).href;
      await withTimeout(view.goto(fileUrl, { waitUntil: "load" }), 30_000, "the HTML report to open from its file");
      const shown = await view.evaluate(() => ({
        before: document.querySelector('tr[data-metric="loss"] td.before')?.textContent,
        after: document.querySelector('tr[data-metric="loss"] td.after')?.textContent,
        polylines: document.querySelectorAll("svg polyline").length,
        width: document.querySelector("svg")?.getBoundingClientRect().width ?? 0,
        scripts: document.scripts.length,
      }));
      assert.deepEqual(seen, [fileUrl], "the report loads nothing but itself");
      assert.deepEqual(errors, []);
      assert.deepEqual([shown.before, shown.after], [b.loss.toFixed(4), a.loss.toFixed(4)]);
      assert.equal(shown.polylines, 3, "train loss, validation loss and learning rate");
      assert.ok(shown.width > 100, `the chart is drawn (${shown.width} px wide)`);
      assert.equal(shown.scripts, 0);
    } finally {
      await viewer.close();
      fs.rmSync(path.dirname(htmlPath), { recursive: true, force: true });
    }
    // The training recipe: the panel's job as a Python project (transformers + PEFT +
    // Accelerate), written in the page as one ZIP, with the split and data of this dataset.
    const [recipeDownload] = await Promise.all([page.waitForEvent("download", { timeout: 60_000 }), page.getByTestId("ft-recipe").click()]);
    assert.equal(recipeDownload.suggestedFilename(), "webtune-recipe.zip");
    const recipe = readStoredZip(fs.readFileSync(await recipeDownload.path()));
    for (const name of ["job.json", "train.py", "requirements.txt", "README.md", "tokenizer.json", "data/train.jsonl", "data/validation.jsonl", "initial_adapter/adapter_model.safetensors", "accelerate/fsdp.yaml"]) {
      assert.ok(recipe[`webtune-recipe/${name}`], `the recipe has ${name}: ${Object.keys(recipe).join(", ")}`);
    }
    const job = JSON.parse(recipe["webtune-recipe/job.json"].toString("utf8"));
    assert.equal(job.task, "causal_lm");
    assert.equal(job.method, "lora");
    // The panel's row length, within the model's 128 positions (a row needs one more token).
    const panelSeqLen = Number(await page.getByTestId("dataset-seq-len").inputValue());
    assert.equal(job.tokens.seq_len, Math.min(panelSeqLen, 127));
    assert.equal(job.data.train_examples + job.data.validation_examples, latest.report.examples);
    const trainLines = recipe["webtune-recipe/data/train.jsonl"].toString("utf8").trim().split("\n");
    assert.equal(trainLines.length, job.data.train_examples);
    assert.ok(trainLines.every((l) => JSON.parse(l).source.startsWith("capitals.jsonl line ")), trainLines[0]);
    // Picked files do not say where the model lives: the recipe's reader names it (--model).
    assert.equal(job.base_model.path, "path/to/the/base/model");
    assert.equal(JSON.parse(recipe["webtune-recipe/tokenizer.json"].toString("utf8")).model.type, "BPE");
    await waitInPage(page, () => document.querySelector("[data-testid=ft-recipe]")?.disabled === false, null, 10_000, "the page to be usable after the recipe");
    await page.waitForTimeout(500);

    const during = log.requests.slice(mark);
    console.log(`requests before the model was loaded: ${mark}; after: ${during.length} ${JSON.stringify(during)}`);
    assert.deepEqual(during, [], "no request after the model was loaded");
    // The page's own privacy line agrees (it reads the browser's Resource Timing records of the
    // page and the worker)…
    const privacy = page.getByTestId("privacy");
    assert.equal(await privacy.getAttribute("data-requests"), "0");
    assert.match(await privacy.textContent(), /no network request since the model was loaded/);
    // …counts a file fetched from the page's own server (as a bundled sample is) without a
    // warning…
    await page.evaluate(() => fetch("./models/index.json").then((r) => r.text()));
    await waitInPage(page, () => document.querySelector("[data-testid=privacy]")?.dataset.requests === "1", null, 10_000, "the page's request to be counted");
    assert.equal(await privacy.getAttribute("data-state"), "own-server");
    assert.match(await privacy.textContent(), /^Private: nothing sent to another host since the model was loaded; 1 request to this page's own server \(models\/index\.json\)/);
    // …and warns when something goes to another host. The page's Content-Security-Policy lets
    // no request out to another origin (connect-src is the page's own), so such a request is
    // handed to a second indicator the way the worker reports its own requests.
    const warned = await page.evaluate(async () => {
      const { createPrivacyIndicator } = await import(new URL("components/privacy-indicator.js", location.href).href);
      const box = document.createElement("div");
      const indicator = createPrivacyIndicator(box);
      indicator.modelLoaded();
      const now = performance.timeOrigin + performance.now() + 1;
      indicator.record(new URL("samples/shakespeare_excerpt.txt", location.href).href, now);
      const own = { state: box.firstChild.dataset.state, text: box.firstChild.textContent };
      indicator.record("https://tracker.example/collect?q=1", now);
      return { own, state: box.firstChild.dataset.state, others: box.firstChild.dataset.otherHosts, text: box.firstChild.textContent };
    });
    assert.deepEqual(warned.own, { state: "own-server", text: "Private: nothing sent to another host since the model was loaded; 1 request to this page's own server (samples/shakespeare_excerpt.txt), which served this page." });
    assert.equal(warned.state, "warn");
    assert.equal(warned.others, "1");
    assert.equal(warned.text, "1 request to another host since the model was loaded: https://tracker.example/collect?q=1. Also 1 request to this page's own server (samples/shakespeare_excerpt.txt).");
    const remote = log.requests.filter((r) => !isLocal(r.url));
    assert.deepEqual(remote, [], "no request to another host during the whole test");
    assert.deepEqual(log.failedRequests, []);
    assertCleanLog(assert, log);
  });
});

test("d. the exported merged model loads in the native CLI, whose logits equal the browser's fine-tuned logits", { timeout: 600_000 }, async () => {
  await withPage("finetune-d-export", browser, { backend: "cpu" }, async ({ page, log }) => {
    await waitForBackend(page);
    await loadFixture(page);
    const run = await finetune(page, "capitals.jsonl", GOOD_JSONL, { ...LORA, train: { ...LORA.train, steps: 15 } });
    assert.equal(run.error, null, `fine-tuning failed: ${JSON.stringify(run.error)}`);
    const merged = run.result.files.filter((f) => f.startsWith("merged/"));
    assert.ok(merged.includes("merged/model.safetensors") && merged.includes("merged/config.json"), `merged files: ${merged}`);

    // Download each merged file with the page's buttons.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "webtune-merged-"));
    for (const file of merged) {
      const [download] = await Promise.all([
        page.waitForEvent("download", { timeout: 60_000 }),
        page.locator(`[data-testid=download-file][data-file="${file}"]`).click(),
      ]);
      assert.equal(download.suggestedFilename(), `webtune-${file.replaceAll("/", "-")}`);
      await download.saveAs(path.join(dir, file.slice("merged/".length)));
    }
    console.log(`downloaded ${merged.length} files to ${dir}: ${fs.readdirSync(dir).map((f) => `${f} (${fs.statSync(path.join(dir, f)).size} B)`).join(", ")}`);

    const tuned = await lastLogits(page, "tuned");
    const base = await lastLogits(page, "base");
    const info = cliJson(["info", dir]);
    assert.equal(info.architecture, "gpt2");
    assert.equal(info.vocab_size, 50257);
    const native = cliJson(["forward", dir, "--ids", "1,2,3"]);
    assert.equal(native.logits_last.length, tuned.length);
    const d = maxAbsDiff(native.logits_last, tuned);
    const moved = maxAbsDiff(base, tuned);
    console.log(`CLI vs browser tuned logits: max |Δ| ${d.max.toExponential(2)} at ${d.at}; tuned vs base: max |Δ| ${moved.max.toExponential(2)}; CLI info ${JSON.stringify(info)}`);
    assert.ok(d.max <= 1e-4, `native logits of the export differ from the browser's by ${d.max}`);
    assert.ok(moved.max > 1e-3, "the fine-tuned logits differ from the base model's");
    fs.rmSync(dir, { recursive: true, force: true });
    assertCleanLog(assert, log);
  });
});

// Per-step training losses, WebGPU vs CPU, same data, config and seed. Measured on headless
// chromium's SwiftShader adapter (5 LoRA steps, batch 2, seq_len 24): max |Δ| 1.9e-6 (losses
// ≈ 10.86). The 1e-4 bound leaves room for f32 reductions in another order (matmul tiling,
// softmax) on hardware GPUs compounding over a few optimiser steps; a real bug (a wrong gradient,
// a missing mask) moves the losses by far more. The measured value is printed and saved.
const WEBGPU_LOSS_TOLERANCE = 1e-4;
const SMALL = {
  data: { policy: "skip", causal: { seq_len: 24 } },
  validation_fraction: 0.2,
  validation_max: 4,
  batch_size: 2,
  samples: 1,
  sample_tokens: 2,
  train: { method: "lora", lr: 1e-2, steps: 5, seed: 3, lora_r: 4, lora_alpha: 8 },
};

test("e. a short LoRA run on WebGPU has the CPU run's per-step losses", { timeout: 900_000 }, async () => {
  const results = {};
  for (const backend of ["cpu", "webgpu"]) {
    await withPage(`finetune-e-${backend}`, browser, { backend }, async ({ page, log }) => {
      const message = await waitForBackend(page);
      assert.equal(message.backend, backend);
      await loadFixture(page);
      const run = await finetune(page, "capitals.jsonl", GOOD_JSONL, SMALL, 600_000);
      assert.equal(run.error, null, `${backend} fine-tuning failed: ${JSON.stringify(run.error)}`);
      results[backend] = run.result.summary;
      results[backend].before = run.result.before;
      results[backend].after = run.result.after;
      assertCleanLog(assert, log);
    });
  }
  const cpu = results.cpu;
  const gpu = results.webgpu;
  const d = maxAbsDiff(cpu.losses, gpu.losses);
  console.log(
    `losses cpu ${JSON.stringify(cpu.losses.map((x) => +x.toFixed(6)))}\n` +
      `losses webgpu ${JSON.stringify(gpu.losses.map((x) => +x.toFixed(6)))}\n` +
      `max |Δ| ${d.max.toExponential(2)} at step ${d.at + 1}; before ${cpu.before.loss} vs ${gpu.before.loss}; ` +
      `median ms/step cpu ${cpu.median_step_ms.toFixed(1)} webgpu ${gpu.median_step_ms.toFixed(1)} (first ${cpu.first_step_ms.toFixed(0)} / ${gpu.first_step_ms.toFixed(0)})`,
  );
  writeArtifactJson("finetune-e-webgpu-vs-cpu.json", { tolerance: WEBGPU_LOSS_TOLERANCE, max_abs_diff: d.max, cpu, webgpu: gpu });
  assert.equal(gpu.backend, "webgpu");
  assert.equal(gpu.losses.length, 5);
  assert.equal(cpu.losses.length, 5);
  assert.ok(Math.abs(cpu.before.loss - gpu.before.loss) <= WEBGPU_LOSS_TOLERANCE, "the base model's held-out loss matches");
  assert.ok(d.max <= WEBGPU_LOSS_TOLERANCE, `WebGPU losses differ from CPU by ${d.max}`);
});

test("e2. QLoRA (q8 base) on WebGPU has the CPU run's per-step losses: the frozen quantized product on both backends", { timeout: 900_000 }, async () => {
  const config = { ...SMALL, train: { ...SMALL.train, quantize_base: "q8" } };
  const results = {};
  for (const backend of ["cpu", "webgpu"]) {
    await withPage(`finetune-e2-qlora-${backend}`, browser, { backend }, async ({ page, log }) => {
      const message = await waitForBackend(page);
      assert.equal(message.backend, backend);
      await loadFixture(page);
      const run = await finetune(page, "capitals.jsonl", GOOD_JSONL, config, 600_000);
      assert.equal(run.error, null, `${backend} QLoRA failed: ${JSON.stringify(run.error)}`);
      results[backend] = run.result.summary;
      assertCleanLog(assert, log);
    });
  }
  const { cpu, webgpu: gpu } = results;
  const d = maxAbsDiff(cpu.losses, gpu.losses);
  console.log(`QLoRA losses cpu ${JSON.stringify(cpu.losses)} webgpu ${JSON.stringify(gpu.losses)}; max |Δ| ${d.max.toExponential(2)}; quantized ${JSON.stringify(gpu.quantized_base)}`);
  // The tiny GPT-2's 8 projections (c_attn, c_proj, c_fc, mlp c_proj × 2 layers), 8-bit on both.
  for (const s of [cpu, gpu]) {
    assert.equal(s.quantized_base?.bits, 8, JSON.stringify(s.quantized_base));
    assert.equal(s.quantized_base.tensors, 8, JSON.stringify(s.quantized_base));
    assert.equal(s.losses.length, 5);
    assert.ok(s.losses.every(Number.isFinite), s.losses.join(", "));
  }
  assert.ok(d.max <= WEBGPU_LOSS_TOLERANCE, `WebGPU QLoRA losses differ from CPU by ${d.max}`);
});

test("f. a run too big for the CPU backend's memory is refused before training, with advice, and the page stays usable", { timeout: 300_000 }, async () => {
  await withPage("finetune-f-memory", browser, { backend: "cpu" }, async ({ page, log }) => {
    await waitForBackend(page);
    const loaded = await loadDefaultModel(page, 300_000, "SmolLM2 to load");
    assert.equal(loaded.error, null, JSON.stringify(loaded.error));
    // About 10,000 tokens of plain text, packed into 127-token rows. Full fine-tuning of SmolLM2
    // holds weights, gradients and AdamW's two moments (2.2 GB); batches of 64 rows keep the
    // activations of 64 × 127 positions through 30 layers for the backward pass (~16 GB).
    const lines = Array.from({ length: 16 }, () => COUNTRIES.map(([c, k]) => `The capital of ${c} is ${k}, and everyone there knows it well.`)).flat();
    const text = lines.join("\n") + "\n";
    const big = { data: { causal: { seq_len: 127 } }, validation_fraction: 0.1, batch_size: 64, train: { method: "full", steps: 2 } };
    const inspected = await inspect(page, "long.txt", text, big);
    assert.equal(inspected.error, null, JSON.stringify(inspected.error));
    const m = inspected.result.memory;
    assert.equal(m.batch_size, 64);
    assert.ok(m.activations > 8 * 2 ** 30, `activations ${m.activations} of 64 × 127 positions`);
    assert.ok(m.optimizer === 2 * m.gradients && m.gradients > 500e6, JSON.stringify(m));
    assert.match(inspected.result.memory_problem, /use LoRA/);
    assert.match(await page.getByTestId("ft-memory-estimate").textContent(), /will not fit/);

    const run = await finetune(page, "long.txt", text, big);
    assert.equal(run.status, "error");
    assert.equal(run.error.code, "memory.insufficient");
    assert.match(run.error.message, /batch size of \d+ or less/);
    assert.deepEqual(
      run.events.filter((e) => e.type === "step"),
      [],
      "refused before any training step",
    );

    // The advice works: LoRA with small batches of the same text trains.
    const ok = await finetune(page, "long.txt", text, { ...big, batch_size: 4, train: { method: "lora", steps: 2, lr: 1e-3 } });
    assert.equal(ok.error, null, JSON.stringify(ok.error));
    assert.equal(ok.result.summary.steps, 2);
    assert.ok(ok.events.some((e) => e.type === "phase" && e.phase === "memory"));
    assert.ok(ok.result.memory.total < m.total);
    assertCleanLog(assert, log);
  });
});

test("g. a separate validation file: chosen in the panel, it replaces the held-out share, overlapping pairs leave training, and the CLI makes the same split", { timeout: 600_000 }, async () => {
  // Training: the first 32 pairs plus 2 that are also in the validation file (the last 8).
  const lines = GOOD_JSONL.trim().split("\n");
  const trainText = [...lines.slice(0, 32), ...lines.slice(32, 34)].join("\n") + "\n";
  const validText = lines.slice(32).join("\n") + "\n";
  const config = { ...DATA, samples: 1, sample_tokens: 4, train: { method: "lora", lr: 1e-2, steps: 4, seed: 7, lora_r: 4, lora_alpha: 8 } };
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "webtune-validation-file-"));
  fs.writeFileSync(path.join(tmp, "train.jsonl"), trainText);
  fs.writeFileSync(path.join(tmp, "valid.jsonl"), validText);
  const native = cliJson(["train", MODEL_DIR, "--data", path.join(tmp, "train.jsonl"), "--validation", path.join(tmp, "valid.jsonl"), "--config", JSON.stringify(config), "--out", path.join(tmp, "out")]);
  assert.equal(native.overlap_removed, 2);
  assert.equal(native.validation_examples, 8);
  assert.equal(native.validation_report.file, "valid.jsonl");

  await withPage("finetune-g-validation-file", browser, { backend: "cpu" }, async ({ page, log }) => {
    await waitForBackend(page);
    await loadFixture(page);
    const outcome = () => page.evaluate(() => document.querySelector("[data-testid=dataset-state]")?.dataset.outcome ?? null);
    await page.getByTestId("dataset-file").setInputFiles({ name: "train.jsonl", mimeType: "application/jsonl", buffer: Buffer.from(trainText) });
    await waitInPage(page, () => /train\.jsonl/.test(document.querySelector("[data-testid=report-file]")?.textContent ?? ""), null, 60_000, "train.jsonl checked");
    assert.equal(await outcome(), "done");
    // Without a validation file: the default share of the 34 pairs (a tenth would be 3; a
    // small file gives up to a quarter towards 40 held-out examples: 9).
    assert.match(await page.getByTestId("report-split").textContent(), /^25 training · 9 validation$/);
    await page.getByTestId("dataset-validation-file").setInputFiles({ name: "valid.jsonl", mimeType: "application/jsonl", buffer: Buffer.from(validText) });
    const shown = await waitInPage(
      page,
      () => document.querySelector("[data-testid=report-validation-file]")?.textContent ?? null,
      null,
      60_000,
      "the validation file in the report",
    );
    assert.match(shown, /^valid\.jsonl \(.*\): 8 examples kept · 2 training example\(s\) also in it were left out of training$/);
    assert.match(await page.getByTestId("report-split").textContent(), /^32 training · 8 validation \(from valid\.jsonl\)$/);
    assert.match(await page.getByTestId("dataset-validation-name").textContent(), /^valid\.jsonl/);
    assert.equal(await page.getByTestId("dataset-validation").isDisabled(), true, "the share does not apply with a validation file");

    // "Before" runs by itself once model and data are in: the base model on the 8 held-out pairs.
    const baseline = await withTimeout(page.evaluate(() => window.webtune.whenBaseline()), 120_000, "the automatic before evaluation");
    assert.equal(baseline?.dataset, "train.jsonl");
    assert.equal(baseline.result.validation_examples, 8);
    assert.ok(Number.isFinite(baseline.result.loss) && baseline.result.perplexity > 1, JSON.stringify(baseline.result));
    assert.match(await page.getByTestId("baseline").textContent(), /^Before fine-tuning, on 8 held-out examples \(\d+ tokens scored in [\d.]+ s\): loss [\d.]+, perplexity [\d,]+\./);

    // Presets set the steps from the checked dataset (32 training pairs in batches of 4: 8
    // batches) and the LoRA size; typing a value makes the settings "custom".
    const fields = () => page.evaluate(() => ["ft-preset", "ft-steps", "ft-lora-r", "ft-lora-alpha"].map((id) => document.querySelector(`[data-testid=${id}]`).value));
    assert.deepEqual(await fields(), ["balanced", "8", "8", "16"]);
    await page.getByTestId("ft-preset").selectOption("quick");
    assert.deepEqual(await fields(), ["quick", "4", "8", "16"]);
    await page.getByTestId("ft-preset").selectOption("thorough");
    assert.deepEqual(await fields(), ["thorough", "24", "16", "32"]);
    await page.getByTestId("ft-steps").fill("5");
    assert.deepEqual(await fields(), ["custom", "5", "16", "32"]);
    await page.getByTestId("ft-preset").selectOption("balanced");
    assert.deepEqual(await fields(), ["balanced", "8", "8", "16"]);

    const run = await finetune(page, "train.jsonl", trainText, config);
    assert.equal(run.error, null, `fine-tuning failed: ${JSON.stringify(run.error)}`);
    const r = run.result;
    assert.equal(r.overlap_removed, 2);
    assert.equal(r.train_examples, 32);
    assert.equal(r.validation_examples, 8);
    assert.equal(r.validation_report.examples, 8);
    // Same split and the same base model: the same "before" loss as the native CLI.
    console.log(`validation file: page before ${r.before.loss}, CLI before ${native.before.loss}; after ${r.after.loss} vs ${native.after.loss}`);
    assert.ok(Math.abs(r.before.loss - native.before.loss) < 1e-4, `before: page ${r.before.loss}, CLI ${native.before.loss}`);
    // The automatic "before" is the job's "before": same split, same model.
    assert.ok(Math.abs(baseline.result.loss - r.before.loss) < 1e-5, `automatic before ${baseline.result.loss}, job before ${r.before.loss}`);
    assert.equal(await page.getByTestId("baseline").isHidden(), true, "the before/after table replaces the lone before");
    assert.equal(r.before.tokens, native.before.tokens);
    const report = await page.evaluate(() => window.webtune.evaluationReport());
    assert.equal(report.validation_file, "valid.jsonl");

    // Removing it brings the share back.
    await page.getByTestId("dataset-validation-remove").click();
    await waitInPage(page, () => /^25 training · 9 validation$/.test(document.querySelector("[data-testid=report-split]")?.textContent ?? ""), null, 60_000, "the share split again");
    assert.equal(await page.getByTestId("report-validation-file").count(), 0);
    assert.equal(await page.evaluate(() => window.webtune.validationFile), null);
    assertCleanLog(assert, log);
  });
});
