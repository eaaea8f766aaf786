// Pause and resume of a fine-tuning job in the browser (CPU backend, the tiny random GPT-2 with
// the real GPT-2 vocabulary): a run paused from the panel waits with no step while paused, shows
// "Paused at step N" and a Resume button, and once resumed gives the per-step losses of an
// uninterrupted run with the same seed; Stop while paused ends the job as a cancel does
// (evaluated and exported); window.webtune.pause()/resume() drive the same. A run interrupted
// by a reload continues from its OPFS checkpoint once the same dataset file is given again (a
// different file is refused), with the losses of the uninterrupted run. The FineTuner module's
// pause()/resume() do the same for embedders. A MiniLM classification job resumes after a
// reload as a causal one does.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { assertCleanLog, launchBrowser, waitForBackend, waitInPage, withPage, withTimeout, writeArtifactJson } from "./harness.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const MODEL_DIR = path.join(ROOT, "tests/fixtures/tiny_random/gpt2-vocab");
const MODEL_FILES = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json"];
const DATA_TEXT = fs.readFileSync(path.join(ROOT, "tests/fixtures/data/capitals.jsonl"), "utf8");

const STEPS = 16;
const CONFIG = {
  data: { causal: { seq_len: 32 } },
  validation_fraction: 0.2,
  batch_size: 4,
  samples: 1,
  sample_tokens: 4,
  train: { method: "lora", lr: 1e-2, steps: STEPS, eval_every: 4, warmup: 2, weight_decay: 0.01, grad_accum: 2, seed: 11, lora_r: 4, lora_alpha: 8 },
};

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

async function loadFixture(page) {
  const files = MODEL_FILES.map((name) => ({ name, b64: fs.readFileSync(path.join(MODEL_DIR, name)).toString("base64") }));
  const record = await withTimeout(
    page.evaluate(async (list) => {
      const decode = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const r = await window.webtune.loadModelFiles(list.map((f) => ({ name: f.name, bytes: decode(f.b64) })));
      return { status: r.status, error: r.error };
    }, files),
    120_000,
    "the gpt2-vocab fixture to load",
  );
  assert.equal(record.error, null, `loading failed: ${JSON.stringify(record.error)}`);
}

/** Start a fine-tuning job without waiting for it; returns its index in window.webtune.finetunes. */
function startJob(page, config = CONFIG, name = "capitals.jsonl", text = DATA_TEXT) {
  return page.evaluate(
    ({ name, text, config }) => {
      const index = window.webtune.finetunes.length;
      window.__job = window.webtune.finetune({ name, bytes: text }, config);
      return index;
    },
    { name, text, config },
  );
}

const stepsOf = (page, i) => page.evaluate((i) => window.webtune.finetunes[i].events.filter((e) => e.type === "step").length, i);

function waitForSteps(page, index, n) {
  return waitInPage(page, ({ i, n }) => (window.webtune.finetunes[i]?.events.filter((e) => e.type === "step").length ?? 0) >= n, { i: index, n }, 120_000, `${n} steps`);
}

function waitForPaused(page, index) {
  return waitInPage(page, (i) => (Number.isInteger(window.webtune.finetunes[i]?.pause) ? window.webtune.finetunes[i].pause : null), index, 60_000, "the job to pause");
}

async function jobResult(page) {
  return withTimeout(
    page.evaluate(async () => {
      const r = await window.__job;
      return { status: r.status, error: r.error, summary: r.result?.summary ?? null, after: r.result?.after ?? null, files: r.result?.files ?? [], events: r.events.filter((e) => e.type !== "step") };
    }),
    180_000,
    "the job to end",
  );
}

test("a. a job paused from the panel and resumed gives the losses of an uninterrupted run", { timeout: 600_000 }, async () => {
  await withPage("resume-a-pause", browser, { backend: "cpu" }, async ({ page, log }) => {
    await waitForBackend(page);
    await loadFixture(page);

    // The uninterrupted run.
    await startJob(page);
    const straight = await jobResult(page);
    assert.equal(straight.error, null, JSON.stringify(straight.error));
    assert.equal(straight.summary.steps, STEPS);

    // The same job, paused after a few steps with the panel's button.
    const index = await startJob(page);
    await waitForSteps(page, index, 3);
    assert.equal((await page.getByTestId("ft-pause").textContent()).trim(), "Pause");
    await page.getByTestId("ft-pause").click();
    const pausedAt = await waitForPaused(page, index);
    assert.ok(pausedAt >= 3 && pausedAt < STEPS, `paused at step ${pausedAt}`);
    assert.match(await page.getByTestId("ft-phase").textContent(), new RegExp(`^Paused at step ${pausedAt} of ${STEPS}\\.`));
    assert.equal((await page.getByTestId("ft-pause").textContent()).trim(), "Resume");
    assert.equal(await page.getByTestId("ft-stop").isEnabled(), true);
    // Nothing trains while paused.
    const before = await stepsOf(page, index);
    assert.equal(before, pausedAt);
    await page.waitForTimeout(1500);
    assert.equal(await stepsOf(page, index), before, "no step while paused");

    await page.getByTestId("ft-pause").click();
    const resumed = await jobResult(page);
    assert.equal(resumed.error, null, JSON.stringify(resumed.error));
    assert.equal(resumed.status, "done");
    assert.equal(resumed.summary.cancelled, false);
    assert.equal(resumed.summary.steps, STEPS);
    const kinds = resumed.events.map((e) => e.type);
    assert.ok(kinds.includes("paused") && kinds.includes("resumed"), `events ${kinds}`);

    const a = straight.summary.losses;
    const b = resumed.summary.losses;
    assert.equal(b.length, a.length);
    const worst = Math.max(...a.map((x, i) => Math.abs(x - b[i])));
    console.log(`paused at step ${pausedAt}; per-step losses vs uninterrupted: max |diff| ${worst} (${a[0].toFixed(4)} → ${a.at(-1).toFixed(4)})`);
    writeArtifactJson("resume-a-pause.json", { pausedAt, straight: a, resumed: b, worst });
    assert.ok(worst <= 1e-5, `losses differ by ${worst}`);
    assert.deepEqual(
      resumed.summary.eval.map((e) => [e.step, e.loss]),
      straight.summary.eval.map((e) => [e.step, e.loss]),
      "validation losses",
    );
    assert.match(await page.getByTestId("ft-result").textContent(), /^Done:/);
    assertCleanLog(assert, log);
  });
});

test("b. window.webtune.pause()/resume(), and Stop while paused evaluates and exports", { timeout: 600_000 }, async () => {
  await withPage("resume-b-cancel", browser, { backend: "cpu" }, async ({ page, log }) => {
    await waitForBackend(page);
    await loadFixture(page);
    // Nothing to pause while idle.
    assert.equal(await page.evaluate(() => window.webtune.pause()), false);

    const index = await startJob(page);
    await waitForSteps(page, index, 2);
    assert.equal(await page.evaluate(() => window.webtune.pause()), true);
    const first = await waitForPaused(page, index);
    assert.equal(await page.evaluate(() => window.webtune.resume()), true);
    await waitForSteps(page, index, first + 2);
    assert.equal(await page.evaluate(() => window.webtune.pause()), true);
    const second = await waitForPaused(page, index);
    assert.ok(second > first, `paused again later (${first}, then ${second})`);

    await page.getByTestId("ft-stop").click();
    const out = await jobResult(page);
    console.log(`paused at ${first}, resumed, paused at ${second}, stopped: ${out.summary?.steps} steps, after ${JSON.stringify(out.after)}`);
    assert.equal(out.error, null, JSON.stringify(out.error));
    assert.equal(out.status, "cancelled");
    assert.equal(out.summary.cancelled, true);
    assert.equal(out.summary.steps, second, "no step after the pause");
    assert.ok(out.after, "the stopped model is evaluated");
    assert.ok(out.files.includes("adapter/adapter_model.safetensors") && out.files.includes("merged/model.safetensors"), `files ${out.files}`);
    assert.match(await page.getByTestId("ft-result").textContent(), /^Stopped:/);
    assert.equal(await page.evaluate(() => window.webtune.resume()), false);
    assertCleanLog(assert, log);
  });
});

test("c. after a reload, the checkpoint in OPFS continues the run from where it stopped, only on the same file", { timeout: 600_000 }, async () => {
  await withPage("resume-c-checkpoint", browser, { backend: "cpu" }, async ({ page, log }) => {
    await waitForBackend(page);
    await loadFixture(page);
    const config = { ...CONFIG, checkpoint_every: 4 };

    // The uninterrupted run; reaching its end deletes its checkpoints.
    await startJob(page, config);
    const straight = await jobResult(page);
    assert.equal(straight.error, null, JSON.stringify(straight.error));
    const saves = straight.events.filter((e) => e.type === "checkpoint");
    assert.deepEqual(saves.map((e) => e.step), [4, 8, 12], "a checkpoint every 4 steps, none at the end");
    assert.ok(saves.every((e) => e.bytes > 0 && !e.error), JSON.stringify(saves));
    assert.equal(await page.evaluate(() => window.webtune.refreshCheckpoint()), null, "a finished run leaves no checkpoint");

    // The same run, paused after step 5 or later: the pause saves a checkpoint.
    const index = await startJob(page, config);
    await waitForSteps(page, index, 5);
    await page.evaluate(() => window.webtune.pause());
    const pausedAt = await waitForPaused(page, index);
    await waitInPage(page, ({ i, step }) => window.webtune.finetunes[i].events.some((e) => e.type === "checkpoint" && e.step === step), { i: index, step: pausedAt }, 30_000, "the pause's checkpoint");

    // The tab is reloaded; the model is loaded again.
    await page.reload({ waitUntil: "load" });
    await waitForBackend(page);
    await loadFixture(page);
    const offer = page.getByTestId("ft-checkpoint");
    await offer.waitFor({ state: "visible", timeout: 20_000 });
    const text = await offer.textContent();
    console.log(`offer after reload: ${text}`);
    assert.match(text, new RegExp(`step ${pausedAt} of ${STEPS}`));
    assert.match(text, /capitals\.jsonl/);
    assert.equal((await page.getByTestId("ft-continue").textContent()).trim(), `Continue the interrupted run from step ${pausedAt}`);
    const meta = await page.evaluate(() => window.webtune.checkpoint);
    assert.equal(meta.step, pausedAt);
    assert.equal(meta.dataset.size, Buffer.byteLength(DATA_TEXT));

    // Another file (same size, one letter changed) is refused.
    const other = DATA_TEXT.replace("France", "Frence");
    assert.equal(Buffer.byteLength(other), Buffer.byteLength(DATA_TEXT));
    const wrong = await withTimeout(page.evaluate((t) => window.webtune.resumeInterrupted({ name: "capitals.jsonl", bytes: t }), other), 60_000, "the refused resume");
    console.log(`another file: ${wrong.error?.code}: ${wrong.error?.message}`);
    assert.equal(wrong.status, "error");
    assert.equal(wrong.error.code, "checkpoint.dataset_mismatch");
    assert.match(wrong.error.message, /not the file the interrupted run trained on/);

    // The same file: the run continues from the checkpoint.
    const resumed = await withTimeout(
      page.evaluate(async (t) => {
        const r = await window.webtune.resumeInterrupted({ name: "capitals.jsonl", bytes: t });
        return { status: r.status, error: r.error, summary: r.result?.summary ?? null, after: r.result?.after ?? null, steps: r.events.filter((e) => e.type === "step").map((e) => e.step) };
      }, DATA_TEXT),
      180_000,
      "the resumed run",
    );
    assert.equal(resumed.error, null, JSON.stringify(resumed.error));
    assert.equal(resumed.status, "done");
    assert.equal(resumed.steps[0], pausedAt + 1, "training continues after the saved step");
    assert.equal(resumed.steps.length, STEPS - pausedAt);
    assert.equal(resumed.summary.steps, STEPS);
    const a = straight.summary.losses;
    const b = resumed.summary.losses;
    assert.equal(b.length, a.length, "the summary covers the whole run");
    const worst = Math.max(...a.map((x, i) => Math.abs(x - b[i])));
    const worstAfter = Math.max(...a.slice(pausedAt).map((x, i) => Math.abs(x - b[pausedAt + i])));
    console.log(`reloaded at step ${pausedAt}: losses after the resume vs uninterrupted: max |diff| ${worstAfter} (whole run ${worst})`);
    writeArtifactJson("resume-c-checkpoint.json", { pausedAt, straight: a, resumed: b, worst, offer: text });
    assert.ok(worst <= 1e-5, `losses differ by ${worst}`);
    assert.ok(Math.abs(resumed.after.loss - straight.after.loss) <= 1e-5, `held-out loss ${resumed.after.loss} vs ${straight.after.loss}`);
    assert.equal(await page.evaluate(() => window.webtune.refreshCheckpoint()), null, "the finished run deleted its checkpoint");
    assert.equal(await offer.isHidden(), true);
    assertCleanLog(assert, log);
  });
});

test("d. the FineTuner module: ft.pause()/ft.resume() with paused/resumed events; the losses of an uninterrupted run", { timeout: 600_000 }, async () => {
  await withPage("resume-d-finetuner", browser, { backend: "cpu" }, async ({ page, log }) => {
    await waitForBackend(page);
    const files = MODEL_FILES.map((name) => ({ name, b64: fs.readFileSync(path.join(MODEL_DIR, name)).toString("base64") }));
    const out = await withTimeout(
      page.evaluate(
        async ({ files, text, config }) => {
          const wt = await import(new URL("webtune.js", location.href).href);
          const ft = await wt.FineTuner.create({ backend: "cpu" });
          await ft.loadModel(files.map((f) => ({ name: f.name, bytes: Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0)) })));
          await ft.loadDataset({ name: "capitals.jsonl", text }, config);
          const idle = ft.pause();
          const straight = await ft.train(config);
          const events = [];
          ft.on("paused", (e) => {
            events.push(["paused", e.step]);
            setTimeout(() => ft.resume(), 500);
          });
          ft.on("resumed", (e) => events.push(["resumed", e.step]));
          let steps = 0;
          const off = ft.on("progress", (p) => {
            steps += 1;
            if (p.step === 3) ft.pause();
          });
          const paused = await ft.train(config);
          off();
          ft.dispose();
          return { idle, straight: straight.summary.losses, paused: paused.summary.losses, cancelled: paused.cancelled, events, steps };
        },
        { files, text: DATA_TEXT, config: CONFIG },
      ),
      300_000,
      "two FineTuner runs",
    );
    console.log(`FineTuner: events ${JSON.stringify(out.events)}, ${out.steps} progress events`);
    assert.equal(out.idle, false, "nothing to pause while idle");
    assert.equal(out.cancelled, false);
    assert.equal(out.events.length, 2);
    assert.equal(out.events[0][0], "paused");
    assert.deepEqual(out.events[1], ["resumed", out.events[0][1]]);
    assert.ok(out.events[0][1] >= 3 && out.events[0][1] < STEPS, `paused at ${out.events[0][1]}`);
    assert.equal(out.steps, STEPS);
    assert.deepEqual(out.paused, out.straight, "per-step losses");
    assertCleanLog(assert, log);
  });
});

test("e. a classification job (MiniLM) interrupted by a reload continues from its checkpoint with the uninterrupted run's losses and metrics", { timeout: 900_000 }, async () => {
  // 80 sentences of the sentiment sample (40 of each label: the file lists the negative ones
  // first): 64 to train on in batches of 8, 16 held out.
  const lines = fs.readFileSync(path.join(ROOT, "www/samples/pang_lee_polarity_200.jsonl"), "utf8").trim().split("\n");
  const text = [...lines.slice(0, 40), ...lines.slice(-40)].join("\n") + "\n";
  const steps = 12;
  const config = {
    data: { causal: { seq_len: 32 } },
    validation_fraction: 0.2,
    batch_size: 8,
    checkpoint_every: 4,
    train: { method: "lora", lr: 5e-3, steps, warmup: 2, seed: 3, eval_every: 6 },
  };
  const loadMiniLM = async (page) => {
    const loaded = await withTimeout(page.evaluate(() => window.webtune.loadDefaultModel("all-minilm-l6-v2")), 300_000, "MiniLM to load");
    assert.equal(loaded.error, null, `loading failed: ${JSON.stringify(loaded.error)}`);
  };
  await withPage("resume-e-classification", browser, { backend: "cpu" }, async ({ page, log }) => {
    await waitForBackend(page);
    await loadMiniLM(page);

    await startJob(page, config, "reviews.jsonl", text);
    const straight = await jobResult(page);
    assert.equal(straight.error, null, JSON.stringify(straight.error));
    assert.deepEqual(
      straight.events.filter((e) => e.type === "checkpoint").map((e) => e.step),
      [4, 8],
      "a checkpoint every 4 steps, none at the end",
    );
    const straightMetrics = await page.evaluate(() => window.webtune.finetunes.at(-1).result.after);

    const index = await startJob(page, config, "reviews.jsonl", text);
    await waitForSteps(page, index, 5);
    await page.evaluate(() => window.webtune.pause());
    const pausedAt = await waitForPaused(page, index);
    await waitInPage(page, ({ i, step }) => window.webtune.finetunes[i].events.some((e) => e.type === "checkpoint" && e.step === step), { i: index, step: pausedAt }, 30_000, "the pause's checkpoint");

    await page.reload({ waitUntil: "load" });
    await waitForBackend(page);
    await loadMiniLM(page);
    const offer = page.getByTestId("ft-checkpoint");
    await offer.waitFor({ state: "visible", timeout: 20_000 });
    assert.match(await offer.textContent(), new RegExp(`step ${pausedAt} of ${steps}.*reviews\\.jsonl`));

    const resumed = await withTimeout(
      page.evaluate(async (t) => {
        const r = await window.webtune.resumeInterrupted({ name: "reviews.jsonl", bytes: t });
        return { status: r.status, error: r.error, summary: r.result?.summary ?? null, after: r.result?.after ?? null, steps: r.events.filter((e) => e.type === "step").map((e) => e.step) };
      }, text),
      300_000,
      "the resumed classification run",
    );
    assert.equal(resumed.error, null, JSON.stringify(resumed.error));
    assert.equal(resumed.steps[0], pausedAt + 1, "training continues after the saved step");
    const a = straight.summary.losses;
    const b = resumed.summary.losses;
    assert.equal(b.length, a.length);
    const worst = Math.max(...a.map((x, i) => Math.abs(x - b[i])));
    console.log(`MiniLM reloaded at step ${pausedAt}: max |loss diff| ${worst}; accuracy ${straightMetrics.accuracy} vs ${resumed.after.accuracy}`);
    writeArtifactJson("resume-e-classification.json", { pausedAt, straight: a, resumed: b, worst });
    assert.ok(worst <= 1e-5, `losses differ by ${worst}`);
    assert.equal(resumed.after.accuracy, straightMetrics.accuracy);
    assert.deepEqual(resumed.after.confusion_matrix, straightMetrics.confusion_matrix);
    assert.equal(await page.evaluate(() => window.webtune.refreshCheckpoint()), null, "the finished run deleted its checkpoint");
    assertCleanLog(assert, log);
  });
});
