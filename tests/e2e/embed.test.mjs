// Embedding browser tests: the FineTuner ES module (webtune.js) imported by a page that is not
// webtune's own (examples/index.html): create → loadModel → loadDataset → train → export →
// generate on the tiny GPT-2 with the real vocabulary; cancel() mid-run; typed errors;
// evaluate() against the job's own before/after numbers; the <webtune-trainer> element on the
// example pages (tiny model from a local Hub, then MiniLM classification) with the no-egress
// check; and the model panel's cache list (size, delete, downloads again).

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { artifactPath, launchBrowser, startHubServer, waitInPage, withPage, withPageAt, withTimeout, writeArtifactJson } from "./harness.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const VOCAB_DIR = path.join(ROOT, "tests/fixtures/tiny_random/gpt2-vocab");
const VOCAB_FILES = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json"];
const GPT2_DIR = path.join(ROOT, "tests/fixtures/tiny_random/gpt2");
const GPT2_FILES = ["config.json", "generation_config.json", "model.safetensors"];
const VOCAB_REPO = "webtune-test/tiny-gpt2-vocab";
const GPT2_REPO = "webtune-test/tiny-gpt2";

const COUNTRIES = [
  ["France", "Paris"], ["Germany", "Berlin"], ["Italy", "Rome"], ["Spain", "Madrid"], ["Portugal", "Lisbon"],
  ["Austria", "Vienna"], ["Belgium", "Brussels"], ["Greece", "Athens"], ["Poland", "Warsaw"], ["Norway", "Oslo"],
  ["Sweden", "Stockholm"], ["Finland", "Helsinki"], ["Denmark", "Copenhagen"], ["Ireland", "Dublin"], ["Hungary", "Budapest"],
  ["Egypt", "Cairo"], ["Kenya", "Nairobi"], ["Japan", "Tokyo"], ["China", "Beijing"], ["India", "Delhi"],
];
const GOOD_JSONL = COUNTRIES.map(([c, k]) => JSON.stringify({ prompt: `Q: What is the capital of ${c}?`, completion: `A: The capital of ${c} is ${k}.` })).join("\n") + "\n";
// Line 3 is broken JSON.
const BAD_JSONL = GOOD_JSONL.split("\n")
  .map((line, i) => (i === 2 ? '{"prompt": "Q: What is the capital of Italy?", "completion": ' : line))
  .join("\n");
const DATA = { data: { causal: { seq_len: 32 } }, validation_fraction: 0.2, batch_size: 4, samples: 1, sample_tokens: 4 };
const TRAIN = { train: { method: "lora", lr: 1e-2, steps: 6, seed: 7, lora_r: 4, lora_alpha: 8 } };

const OP_MS = 180_000;
const API_PAGE = "examples/index.html";

let browser;
let hub;
before(async () => {
  browser = await launchBrowser();
  const read = (dir, files) => Object.fromEntries(files.map((f) => [f, fs.readFileSync(path.join(dir, f))]));
  hub = await startHubServer({ [VOCAB_REPO]: read(VOCAB_DIR, VOCAB_FILES), [GPT2_REPO]: read(GPT2_DIR, GPT2_FILES) });
});
after(async () => {
  await browser?.close();
  await hub?.close();
});

const b64 = (dir, files) => files.map((name) => ({ name, b64: fs.readFileSync(path.join(dir, name)).toString("base64") }));

/**
 * Import webtune.js into the page as window.wt, with helpers: wt.files(list), wt.caught(promise).
 * The import can stall the way openPage's navigation does on a loaded machine (harness.mjs: the
 * module requests stay open): the page is reloaded and the import tried again, up to 3 times.
 */
async function importApi(page) {
  for (let tries = 1; ; tries++) {
    try {
      await withTimeout(
        page.evaluate(async () => {
          window.wt = await import(new URL("../webtune.js", location.href).href);
          window.wtFiles = (list) => list.map((f) => ({ name: f.name, bytes: Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0)) }));
          // An error as data, with how it was typed.
          window.wtCaught = async (promise) => {
            try {
              return { value: await promise, error: null };
            } catch (e) {
              return {
                value: null,
                error: { name: e?.name, code: e?.code, message: e?.message, details: e?.details ?? null, webtune: e instanceof window.wt.WebtuneError, isError: e instanceof Error },
              };
            }
          };
        }),
        60_000,
        "webtune.js to be imported",
      );
      return;
    } catch (e) {
      if (tries >= 3 || !String(e?.message).startsWith("timed out")) throw e;
      console.log(`importApi: ${e.message}; reloading the page, try ${tries + 1} of 3 in 10 s`);
      await new Promise((r) => setTimeout(r, 10_000));
      await page.reload({ waitUntil: "load", timeout: 60_000 });
    }
  }
}

/** Create a CPU FineTuner as window.ft with the tiny gpt2-vocab model and (optionally) the good dataset loaded. */
async function setUp(page, { dataset = true } = {}) {
  await importApi(page);
  return withTimeout(
    page.evaluate(
      async ({ files, text, data, dataset }) => {
        window.ft = await window.wt.FineTuner.create({ backend: "cpu" });
        const loaded = await window.ft.loadModel(window.wtFiles(files));
        const report = dataset ? await window.ft.loadDataset({ name: "capitals.jsonl", text }, data) : null;
        return { backend: window.ft.backend.backend, info: loaded.info, report };
      },
      { files: b64(VOCAB_DIR, VOCAB_FILES), text: GOOD_JSONL, data: DATA, dataset },
    ),
    OP_MS,
    "FineTuner.create + loadModel + loadDataset",
  );
}

/** No page errors; console errors only for the 404s of optional model files on the test Hub. */
function assertClean(log, what = "the page") {
  assert.deepEqual(log.pageErrors, [], `${what}: uncaught page errors`);
  const unexpected = log.consoleErrors.filter((e) => !/Failed to load resource: the server responded with a status of 404/.test(e));
  assert.deepEqual(unexpected, [], `${what}: console errors (page and workers)`);
  assert.equal(log.crashed, false, `${what}: the renderer crashed`);
}

const isLocal = (url) => {
  const u = new URL(url);
  return u.protocol === "blob:" || u.protocol === "data:" || ["127.0.0.1", "localhost", "[::1]"].includes(u.hostname);
};

// ---------------------------------------------------------------------------------------------

test("a. the API: create → loadModel → loadDataset → train (progress events) → export merged and PEFT → recipe → generate", { timeout: 300_000 }, async () => {
  await withPageAt("embed-a-api", browser, API_PAGE, {}, async ({ page, log }) => {
    const setup = await setUp(page);
    assert.equal(setup.backend, "cpu");
    assert.equal(setup.info.vocab_size, 50257);
    assert.equal(setup.report.report.examples, COUNTRIES.length);
    assert.equal(setup.report.train_examples + setup.report.validation_examples, COUNTRIES.length);

    const out = await withTimeout(
      page.evaluate(async (config) => {
        const ft = window.ft;
        const progress = [];
        const phases = [];
        const states = [];
        const offPhase = ft.on("phase", (p) => phases.push(p.phase));
        ft.on("progress", (p) => progress.push(p));
        ft.on("state", (s) => states.push(s));
        const result = await ft.train(config);
        offPhase();
        const decode = (bytes) => new TextDecoder().decode(bytes);
        const merged = await ft.export("merged");
        const peft = await ft.export("peft");
        const all = await ft.export("all");
        // The same job as a Python project: a ZIP of stored files, so its job.json reads as text.
        const recipe = await ft.recipe(config);
        const recipeText = decode(recipe);
        const tokens = [];
        const offToken = ft.on("token", (t) => tokens.push(t.token));
        const tuned = await ft.generate("Q: What is the capital of France?", { greedy: true, max_new_tokens: 4, ignore_eos: true });
        offToken();
        const base = await ft.generate("Q: What is the capital of France?", { greedy: true, max_new_tokens: 4, ignore_eos: true, model: "base" });
        return {
          result: { task: result.task, cancelled: result.cancelled, summary: result.summary, before: result.before, after: result.after, files: result.files, samples: result.samples.length },
          progress,
          phases,
          states,
          merged: Object.fromEntries(Object.entries(merged).map(([n, b]) => [n, b.byteLength])),
          mergedConfig: JSON.parse(decode(merged["config.json"])),
          peft: Object.fromEntries(Object.entries(peft).map(([n, b]) => [n, b.byteLength])),
          adapterConfig: JSON.parse(decode(peft["adapter_config.json"])),
          all: Object.keys(all),
          recipe: {
            magic: [...recipe.subarray(0, 4)],
            job: recipeText.includes("webtune-recipe/job.json"),
            steps: recipeText.match(/"steps": (\d+)/)?.[1] ?? null,
            trainPy: recipeText.includes("webtune-recipe/train.py"),
          },
          tuned,
          base,
          tokens,
          state: ft.state,
          tunedInfo: ft.tuned,
        };
      }, TRAIN),
      OP_MS,
      "train + export + generate",
    );
    writeArtifactJson("embed-a-api.json", out);
    const { result, progress } = out;
    console.log(
      `API: ${result.summary.steps} steps, train loss ${result.summary.losses[0].toFixed(4)} → ${result.summary.losses.at(-1).toFixed(4)}, ` +
        `held-out ${result.before.loss.toFixed(4)} → ${result.after.loss.toFixed(4)}; merged ${JSON.stringify(out.merged)}; peft ${JSON.stringify(out.peft)}; ` +
        `generated (tuned) ${JSON.stringify(out.tuned.text)}`,
    );
    assert.equal(result.task, "causal");
    assert.equal(result.cancelled, false);
    assert.equal(result.summary.steps, 6);
    assert.deepEqual(out.recipe, { magic: [0x50, 0x4b, 3, 4], job: true, steps: "6", trainPy: true }, "recipe() writes the job as a ZIP");
    assert.equal(result.summary.backend, "cpu");
    assert.deepEqual(progress.map((p) => p.step), [1, 2, 3, 4, 5, 6], "one progress event per step");
    assert.ok(progress.every((p) => p.total_steps === 6 && Number.isFinite(p.loss) && Number.isFinite(p.lr)));
    assert.deepEqual(progress.map((p) => p.loss), result.summary.losses, "the events carry the summary's losses");
    assert.ok(out.phases.includes("training") && out.phases.includes("export"), `phases ${out.phases}`);
    assert.ok(out.states.includes("busy"), "state events while training");
    assert.ok(Number.isFinite(result.before.loss) && Number.isFinite(result.after.loss) && Number.isFinite(result.after.perplexity));

    // export("merged"): a Hugging Face folder, names without the "merged/" prefix.
    for (const name of ["config.json", "model.safetensors", "tokenizer.json"]) assert.ok(out.merged[name] > 0, `merged ${name}`);
    assert.ok(Object.keys(out.merged).every((n) => !n.includes("/")), `merged names ${Object.keys(out.merged)}`);
    assert.equal(out.mergedConfig.model_type, "gpt2");
    assert.equal(out.mergedConfig.vocab_size, 50257);
    // export("peft"): the LoRA adapter.
    assert.ok(out.peft["adapter_config.json"] > 0 && out.peft["adapter_model.safetensors"] > 0, `peft ${JSON.stringify(out.peft)}`);
    assert.equal(out.adapterConfig.r, 4);
    assert.equal(out.adapterConfig.lora_alpha, 8);
    assert.deepEqual(out.all.sort(), [...result.files].sort(), "export(\"all\") holds the files the job listed");

    // generate(): the fine-tuned model by default after train(), streamed tokens, and the base on request.
    assert.equal(out.tuned.model, "tuned");
    assert.equal(out.tuned.generated_ids.length, 4);
    assert.deepEqual(out.tokens, out.tuned.generated_ids);
    assert.equal(typeof out.tuned.text, "string");
    assert.equal(out.base.model, "base");
    assert.equal(out.base.generated_ids.length, 4);
    assert.equal(out.state, "ready");
    assert.equal(out.tunedInfo.vocab_size, 50257);

    // Reading progress: records are read, checked and tokenized one at a time, and "data-progress"
    // events follow them through the file, from byte 0 to its end.
    const reading = await withTimeout(
      page.evaluate(async () => {
        const text = Array.from({ length: 3000 }, (_, i) => JSON.stringify({ prompt: `Q: item ${i}?`, completion: ` A${i}` })).join("\n") + "\n";
        const events = [];
        const off = window.ft.on("data-progress", (p) => events.push(p));
        const r = await window.ft.loadDataset({ name: "many.jsonl", text });
        off();
        return { events, bytes: new TextEncoder().encode(text).length, examples: r.report.examples };
      }),
      OP_MS,
      "a 3000-line dataset to be checked",
    );
    assert.equal(reading.examples, 3000);
    assert.ok(reading.events.length >= 50, `${reading.events.length} progress events`);
    assert.ok(reading.events.every((e) => e.file === "many.jsonl" && e.bytes === reading.bytes));
    assert.deepEqual([reading.events[0].bytes_done, reading.events[0].records_done], [0, 0]);
    assert.deepEqual([reading.events.at(-1).bytes_done, reading.events.at(-1).records_done], [reading.bytes, 3000]);
    assert.ok(
      reading.events.every((e, i) => i === 0 || (e.bytes_done > reading.events[i - 1].bytes_done && e.records_done > reading.events[i - 1].records_done)),
      "progress only moves forward",
    );

    // dispose(): the worker is gone, later calls throw worker.disposed.
    const disposed = await page.evaluate(async () => {
      window.ft.dispose();
      return { state: window.ft.state, after: (await window.wtCaught(window.ft.generate("x"))).error };
    });
    assert.equal(disposed.state, "disposed");
    assert.equal(disposed.after.code, "worker.disposed");
    assert.equal(disposed.after.webtune, true);
    assertClean(log);
  });
});

test("b. cancel() stops training after the current step; the promise resolves with cancelled: true; overlapping calls are refused", { timeout: 300_000 }, async () => {
  await withPageAt("embed-b-cancel", browser, API_PAGE, {}, async ({ page, log }) => {
    await setUp(page);
    const out = await withTimeout(
      page.evaluate(async () => {
        const ft = window.ft;
        const steps = [];
        let busy = null;
        let cancelled = null;
        const run = ft.train({ train: { method: "lora", lr: 1e-3, steps: 400, seed: 1 } });
        await new Promise((resolve) => {
          ft.on("progress", (p) => {
            steps.push(p.step);
            if (steps.length === 2) resolve();
          });
        });
        busy = (await window.wtCaught(ft.generate("Q:", { max_new_tokens: 1 }))).error;
        cancelled = ft.cancel();
        const result = await run;
        const idle = ft.cancel();
        const after = await ft.generate("Q: What is", { greedy: true, max_new_tokens: 2, ignore_eos: true });
        return { summary: result.summary, cancelled: result.cancelled, after: result.after, busy, cancelledReturn: cancelled, idle, generated: after.generated_ids.length, steps: steps.length };
      }),
      OP_MS,
      "a cancelled training run",
    );
    console.log(`cancel: stopped after ${out.summary.steps} of 400 steps (${out.steps} progress events); busy error ${JSON.stringify(out.busy)}`);
    assert.equal(out.cancelledReturn, true, "cancel() returns true while something runs");
    assert.equal(out.cancelled, true);
    assert.equal(out.summary.cancelled, true);
    assert.ok(out.summary.steps >= 2 && out.summary.steps < 400, `stopped after ${out.summary.steps} steps`);
    assert.ok(Number.isFinite(out.after?.loss), "the stopped model is still evaluated");
    assert.equal(out.busy?.code, "worker.busy", "a generate() during training is refused");
    assert.equal(out.busy?.webtune, true);
    assert.equal(out.idle, false, "cancel() returns false when nothing runs");
    assert.equal(out.generated, 2, "usable after the cancelled run");
    assertClean(log);
  });
});

test("c. typed errors: WebtuneError with code, message and details (model.not_loaded, data.invalid with the line, ...)", { timeout: 300_000 }, async () => {
  await withPageAt("embed-c-errors", browser, API_PAGE, {}, async ({ page, log }) => {
    await importApi(page);
    const out = await withTimeout(
      page.evaluate(
        async ({ files, good, bad }) => {
          const { FineTuner } = window.wt;
          const c = window.wtCaught;
          const badBackend = (await c(FineTuner.create({ backend: "quantum" }))).error;
          const ft = await FineTuner.create({ backend: "cpu" });
          window.ft = ft;
          const errors = [];
          ft.on("error", (e) => errors.push(e.code));
          const out = {
            badBackend,
            trainFirst: (await c(ft.train())).error,
            generateFirst: (await c(ft.generate("hello"))).error,
            datasetFirst: (await c(ft.loadDataset({ name: "capitals.jsonl", text: good }))).error,
            badRepo: (await c(ft.loadModel("not a repo"))).error,
            noFiles: (await c(ft.loadModel([{ name: "notes.txt", bytes: new Uint8Array([1, 2]) }]))).error,
          };
          await ft.loadModel(window.wtFiles(files));
          out.trainNoData = (await c(ft.train())).error;
          out.exportFirst = (await c(ft.export())).error;
          out.malformed = (await c(ft.loadDataset({ name: "bad.jsonl", text: bad }, { data: { policy: "stop" } }))).error;
          // Under "skip" (the default) the same file loads and its report lists line 3.
          const skipped = await ft.loadDataset({ name: "bad.jsonl", text: bad });
          out.skipIssue = skipped.report.issues[0];
          out.badConfig = (await c(ft.train({ train: { lr: -1 } }))).error;
          out.badPreset = (await c(ft.train({ preset: "nope" }))).error;
          out.badExportKind = (await c(ft.export("zip"))).error;
          out.errorEvents = errors;
          out.state = ft.state;
          return out;
        },
        { files: b64(VOCAB_DIR, VOCAB_FILES), good: GOOD_JSONL, bad: BAD_JSONL },
      ),
      OP_MS,
      "the error cases",
    );
    writeArtifactJson("embed-c-errors.json", out);
    const typed = (e, code, what) => {
      assert.ok(e, `${what}: an error was thrown`);
      assert.equal(e.code, code, `${what}: ${JSON.stringify(e)}`);
      assert.equal(e.name, "WebtuneError", what);
      assert.equal(e.webtune, true, `${what}: instanceof WebtuneError`);
      assert.equal(e.isError, true, `${what}: instanceof Error`);
      assert.ok(typeof e.message === "string" && e.message.length > 10, `${what}: a message`);
    };
    typed(out.badBackend, "config.invalid", "create({backend: 'quantum'})");
    typed(out.trainFirst, "model.not_loaded", "train() before loadModel()");
    typed(out.generateFirst, "model.not_loaded", "generate() before loadModel()");
    typed(out.datasetFirst, "model.not_loaded", "loadDataset() before loadModel()");
    typed(out.badRepo, "config.invalid", "loadModel('not a repo')");
    typed(out.noFiles, "model.missing_file", "loadModel([notes.txt])");
    typed(out.trainNoData, "data.missing", "train() before loadDataset()");
    typed(out.exportFirst, "model.not_tuned", "export() before train()");
    typed(out.malformed, "data.invalid", "a malformed line under policy stop");
    assert.equal(out.malformed.details.line, 3);
    assert.equal(out.malformed.details.file, "bad.jsonl");
    assert.match(out.malformed.message, /line 3/);
    assert.equal(out.skipIssue.line, 3);
    assert.equal(out.skipIssue.reason, "malformed_json");
    typed(out.badConfig, "config.invalid", "train({train: {lr: -1}})");
    assert.equal(out.badConfig.details?.field, "lr");
    typed(out.badPreset, "config.invalid", "an unknown preset");
    typed(out.badExportKind, "config.invalid", "export('zip')");
    assert.deepEqual(out.errorEvents, [], "no fatal or stray errors");
    assert.equal(out.state, "ready");
    assertClean(log);
  });
});

test("d. evaluate() scores the held-out split without training: the base model's numbers equal train()'s before, the tuned model's its after", { timeout: 300_000 }, async () => {
  await withPageAt("embed-d-evaluate", browser, API_PAGE, {}, async ({ page, log }) => {
    await setUp(page);
    const out = await withTimeout(
      page.evaluate(async (config) => {
        const ft = window.ft;
        // Before training, the split depends on the config: give it the one train() will use.
        const first = await window.wtCaught(ft.evaluate(config));
        if (first.error) return { error: first.error };
        const result = await ft.train(config);
        const tuned = await ft.evaluate();
        const base = await ft.evaluate({ model: "base" });
        return { first: first.value, result: { before: result.before, after: result.after }, tuned, base };
      }, TRAIN),
      OP_MS,
      "evaluate, train, evaluate",
    );
    assert.equal(out.error, undefined, `evaluate() failed: ${JSON.stringify(out.error)}`);
    console.log(`evaluate: base ${out.first.loss} (job before ${out.result.before.loss}); tuned ${out.tuned.loss} (job after ${out.result.after.loss})`);
    assert.equal(out.first.task, "causal");
    assert.equal(out.first.model, "base");
    const close = (a, b, what) => assert.ok(Math.abs(a - b) <= 1e-5 * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b}`);
    close(out.first.loss, out.result.before.loss, "evaluate() before training = the job's before");
    assert.equal(out.first.tokens, out.result.before.tokens);
    assert.equal(out.tuned.model, "tuned", "after train(), evaluate() scores the fine-tuned model");
    close(out.tuned.loss, out.result.after.loss, "evaluate() after training = the job's after");
    close(out.base.loss, out.result.before.loss, "evaluate({model: 'base'}) after training");
    assertClean(log);
  });
});

test("e. <webtune-trainer> on the Shakespeare example trains a few steps and shows before/after; nothing goes over the network after the model load", { timeout: 600_000 }, async () => {
  const model = `${hub.endpoint}/${VOCAB_REPO}`;
  await withPageAt("embed-e-component", browser, "examples/shakespeare.html", { model, steps: 3, backend: "cpu" }, async ({ page, log }) => {
    // One module script and one element: the whole embedding.
    const shape = await page.evaluate(() => ({
      scripts: [...document.querySelectorAll("script")].map((s) => ({ type: s.type, src: s.getAttribute("src"), inline: !s.src })),
      elements: document.querySelectorAll("webtune-trainer").length,
      defined: Boolean(customElements.get("webtune-trainer")),
    }));
    assert.deepEqual(shape.scripts, [{ type: "module", src: "../components/webtune-trainer.js", inline: false }]);
    assert.equal(shape.elements, 1);
    assert.equal(shape.defined, true);

    const host = page.locator("webtune-trainer");
    await waitInPage(page, () => document.querySelector("webtune-trainer")?.hasAttribute("data-model-loaded"), null, 120_000, "the component to load its model");
    const mark = log.requests.length;
    const hubMark = hub.log.length;
    const state = await waitInPage(
      page,
      () => {
        const s = document.querySelector("webtune-trainer")?.dataset.state;
        return s === "ready" || s === "error" ? s : null;
      },
      null,
      120_000,
      "the component to check its dataset",
    );
    assert.equal(state, "ready", await page.locator("[data-testid=wt-error]").textContent());
    assert.match(await page.locator("[data-testid=wt-dataset]").textContent(), /shakespeare_excerpt\.txt: [\d,]+ examples/);
    assert.ok(await page.locator("[data-testid=wt-train]").isEnabled());

    await page.locator("[data-testid=wt-train]").click();
    const end = await waitInPage(
      page,
      () => {
        const s = document.querySelector("webtune-trainer")?.dataset.state;
        return s === "done" || s === "error" ? s : null;
      },
      null,
      300_000,
      "the component's training to end",
    );
    assert.equal(end, "done", await page.locator("[data-testid=wt-error]").textContent());
    const result = await page.evaluate(() => {
      const r = document.querySelector("webtune-trainer").result;
      return { task: r.task, steps: r.summary.steps, backend: r.summary.backend, before: r.before, after: r.after, samples: r.samples.length };
    });
    console.log(`component: ${result.steps} steps on ${result.backend}; held-out loss ${result.before.loss} → ${result.after.loss}`);
    assert.equal(result.task, "causal");
    assert.equal(result.steps, 3);
    assert.equal(result.backend, "cpu");
    assert.equal((await page.locator("[data-testid=wt-step]").textContent()).trim(), "3 / 3");
    assert.equal(await page.locator("[data-testid=wt-before-after]").isVisible(), true);
    assert.equal((await page.locator("[data-testid=wt-loss-before]").textContent()).trim(), result.before.loss.toFixed(4));
    assert.equal((await page.locator("[data-testid=wt-loss-after]").textContent()).trim(), result.after.loss.toFixed(4));
    assert.equal((await page.locator("[data-testid=wt-perplexity-after]").textContent()).trim(), result.after.perplexity.toFixed(2));
    assert.match(await page.locator("[data-testid=wt-loss-change]").textContent(), /^[+−±]\d+\.\d%$/);
    assert.equal(await page.locator("[data-testid=wt-chart] .uplot").count(), 1, "the loss chart is drawn");
    assert.equal(await page.locator("[data-testid=wt-sample]").count(), result.samples);
    assert.match(await page.locator("[data-testid=wt-status]").textContent(), /^Done: 3 steps on the CPU/);

    // The "try it" box generates with both models, still offline.
    await page.locator("[data-testid=wt-prompt]").fill("Enter LYSANDER");
    await page.locator("[data-testid=wt-generate]").click();
    await waitInPage(page, () => document.querySelector("webtune-trainer")?.shadowRoot.querySelector("[data-testid=wt-output-tuned]") !== null, null, 60_000, "both continuations");

    const during = log.requests.slice(mark);
    console.log(`requests before the model was loaded: ${mark}; after: ${during.length} ${JSON.stringify(during)}`);
    assert.deepEqual(during, [], "no request after the model was loaded");
    assert.equal(hub.log.length, hubMark, "no request to the model host after the load");
    assert.deepEqual(log.requests.filter((r) => !isLocal(r.url)), [], "no request to another host at all");
    await withTimeout(host.screenshot({ path: artifactPath("embed-component.png") }), 15_000, "a screenshot").catch(() => {});
    assertClean(log);
  });
});

test("f. <webtune-trainer> on the sentiment example fine-tunes MiniLM as a classifier and shows accuracy and macro-F1 before/after", { timeout: 900_000 }, async () => {
  const index = JSON.parse(fs.readFileSync(path.join(ROOT, "www/models/index.json"), "utf8"));
  assert.ok(index.models.some((m) => m.id === "all-minilm-l6-v2"), "www/models/index.json lists all-minilm-l6-v2 (`cargo xtask models`)");
  await withPageAt("embed-f-sentiment", browser, "examples/sentiment.html", { steps: 4, backend: "cpu" }, async ({ page, log }) => {
    await waitInPage(page, () => document.querySelector("webtune-trainer")?.hasAttribute("data-model-loaded"), null, 300_000, "MiniLM to load");
    const mark = log.requests.length;
    const state = await waitInPage(
      page,
      () => {
        const s = document.querySelector("webtune-trainer")?.dataset.state;
        return s === "ready" || s === "error" ? s : null;
      },
      null,
      120_000,
      "the sentiment dataset to be checked",
    );
    assert.equal(state, "ready", await page.locator("[data-testid=wt-error]").textContent());
    await page.locator("[data-testid=wt-train]").click();
    const end = await waitInPage(
      page,
      () => {
        const s = document.querySelector("webtune-trainer")?.dataset.state;
        return s === "done" || s === "error" ? s : null;
      },
      null,
      600_000,
      "the classifier's training to end",
    );
    assert.equal(end, "done", await page.locator("[data-testid=wt-error]").textContent());
    const result = await page.evaluate(() => {
      const r = document.querySelector("webtune-trainer").result;
      return { task: r.task, labels: r.labels, steps: r.summary.steps, before: r.before, after: r.after };
    });
    console.log(`sentiment: ${result.steps} steps; accuracy ${result.before.accuracy} → ${result.after.accuracy}, macro-F1 ${result.before.macro_f1} → ${result.after.macro_f1}`);
    assert.equal(result.task, "classification");
    assert.deepEqual([...result.labels].sort(), ["neg", "pos"]);
    assert.equal(result.steps, 4);
    const pct = (x) => `${(x * 100).toFixed(1)}%`;
    assert.equal((await page.locator("[data-testid=wt-accuracy-before]").textContent()).trim(), pct(result.before.accuracy));
    assert.equal((await page.locator("[data-testid=wt-accuracy-after]").textContent()).trim(), pct(result.after.accuracy));
    assert.equal((await page.locator("[data-testid=wt-macro-f1-after]").textContent()).trim(), result.after.macro_f1.toFixed(3));
    assert.equal(await page.locator("[data-testid=wt-chart] .uplot").count(), 1);
    assert.deepEqual(log.requests.slice(mark), [], "no request after the model was loaded");
    assertClean(log);
  });
});

test("g. the model panel lists cached repos with their size; Delete removes one, and the next load downloads it again", { timeout: 300_000 }, async () => {
  await withPage("embed-g-cache", browser, { backend: "cpu", hub: hub.endpoint }, async ({ page, log }) => {
    await page.evaluate(() => window.webtune.ready);
    await page.evaluate(() => window.webtune.clearModelCache());
    await waitInPage(page, () => document.querySelectorAll("[data-testid=cached-model]").length === 0, null, 10_000, "an empty cache list");
    assert.match(await page.getByTestId("cache-total").textContent(), /^None/);

    hub.log.length = 0;
    const first = await withTimeout(page.evaluate((repo) => window.webtune.loadModelFromHub(repo), GPT2_REPO), 60_000, "the Hub load");
    assert.equal(first.error, null, JSON.stringify(first.error));
    assert.equal(first.source.cached, false);
    const row = page.locator(`[data-testid=cached-model][data-repo="${GPT2_REPO}"]`);
    await row.waitFor({ timeout: 10_000 });
    const expected = GPT2_FILES.reduce((sum, f) => sum + fs.statSync(path.join(GPT2_DIR, f)).size, 0);
    assert.equal(Number(await row.getAttribute("data-bytes")), expected, "the listed size is the sum of the downloaded files");
    assert.equal(Number(await row.getAttribute("data-files")), GPT2_FILES.length, "tokenizer.json (absent) is not counted");
    assert.equal(await row.getAttribute("data-base"), `${hub.endpoint}/${GPT2_REPO}`);
    assert.match(await row.getByTestId("cached-size").textContent(), /KiB · 3 files$/);
    assert.match(await page.getByTestId("cache-total").textContent(), /^1 model, /);

    // The API sees the same cache (same origin).
    await importApi(page);
    const listed = await page.evaluate(() => window.wt.FineTuner.cachedModels());
    assert.deepEqual(
      listed.map((r) => ({ repo: r.repo, bytes: r.bytes, revisions: r.revisions })),
      [{ repo: GPT2_REPO, bytes: expected, revisions: ["main"] }],
    );

    // A second load comes from the cache: no request.
    hub.log.length = 0;
    const cached = await withTimeout(page.evaluate((repo) => window.webtune.loadModelFromHub(repo), GPT2_REPO), 60_000, "the cached load");
    assert.equal(cached.source.cached, true);
    assert.deepEqual(hub.log, []);

    // Delete: the row goes, the cache no longer has it, and the next load downloads it again.
    await row.getByTestId("delete-cached-model").click();
    await waitInPage(page, (repo) => !document.querySelector(`[data-testid=cached-model][data-repo="${repo}"]`), GPT2_REPO, 10_000, "the deleted repo's row to disappear");
    assert.deepEqual(await page.evaluate(() => window.webtune.cachedModels()), []);
    assert.match(await page.getByTestId("model-status").textContent(), /^Deleted http:\/\/127\.0\.0\.1:\d+\/webtune-test\/tiny-gpt2 from the browser's model cache\.$/);
    hub.log.length = 0;
    const again = await withTimeout(page.evaluate((repo) => window.webtune.loadModelFromHub(repo), GPT2_REPO), 60_000, "the load after the delete");
    assert.equal(again.error, null);
    assert.equal(again.source.cached, false, "downloaded again");
    assert.ok(hub.log.some((r) => r.path.endsWith("/model.safetensors") && r.status === 200), `requests: ${JSON.stringify(hub.log)}`);
    await row.waitFor({ timeout: 10_000 });
    assert.equal(Number(await row.getAttribute("data-bytes")), expected);
    assertClean(log);
  });
});
