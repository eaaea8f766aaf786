// The adapter library and hot swap in the browser (CPU backend). The page keeps every LoRA
// adapter it trains (OPFS): two adapters trained on two datasets are listed after a reload with
// their base, dataset and before/after losses; switching base → A → B → base needs no reload of
// the base, and each greedy generation equals what that adapter's freshly merged model gave when
// it was trained; the compare view gives the same texts side by side, and each adapter's held-out
// loss equals its job's "after". An adapter saved by PEFT's own save_pretrained
// (tools/reference/peft_adapters.py) loads from files and gives PEFT's logits; one for another
// base is refused, naming both, and one that does not fit is refused without being kept. The
// FineTuner API does the same for embedders, loading an adapter from a Hub-layout URL.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { assertCleanLog, launchBrowser, loadModelFilesFromDisk, readStoredZip, startHubServer, waitForBackend, withPage, withPageAt, withTimeout, writeArtifactJson } from "./harness.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const FIXTURES = path.join(ROOT, "tests/fixtures");
const VOCAB = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json"].map((f) => path.join(FIXTURES, "tiny_random/gpt2-vocab", f));
const GPT2 = ["config.json", "generation_config.json", "model.safetensors"].map((f) => path.join(FIXTURES, "tiny_random/gpt2", f));
const ADAPTER_FILES = ["adapter_config.json", "adapter_model.safetensors"];
const PEFT_REFERENCE = JSON.parse(fs.readFileSync(path.join(FIXTURES, "reference/peft_adapters.json"), "utf8"));
const CAPITALS = fs.readFileSync(path.join(FIXTURES, "data/capitals.jsonl"), "utf8");
// B's data: plain text about something else, so the two adapters pull the model apart.
const STORY = Array.from({ length: 60 }, (_, i) => `Day ${i + 1}: the quick brown fox jumps over the lazy dog ${i % 7} times before noon.`).join("\n") + "\n";

const CONFIG = {
  data: { causal: { seq_len: 32 } },
  validation_fraction: 0.2,
  batch_size: 4,
  samples: 1,
  sample_tokens: 4,
  train: { method: "lora", lr: 2e-2, steps: 8, warmup: 1, seed: 11, lora_r: 4, lora_alpha: 8 },
};
const PROMPT = "The capital of France is";
const GREEDY = { greedy: true, max_new_tokens: 8, ignore_eos: true };
const OP_MS = 240_000;

let browser;
let hub;
before(async () => {
  browser = await launchBrowser();
  const dir = path.join(FIXTURES, "peft_adapters/gpt2_c_attn");
  hub = await startHubServer({
    "webtune-test/gpt2-c-attn": Object.fromEntries(ADAPTER_FILES.map((f) => [f, fs.readFileSync(path.join(dir, f))])),
    "webtune-test/tiny-gpt2-vocab": Object.fromEntries(VOCAB.map((p) => [path.basename(p), fs.readFileSync(p)])),
    "webtune-test/tiny-gpt2": Object.fromEntries(GPT2.map((p) => [path.basename(p), fs.readFileSync(p)])),
  });
});
after(async () => {
  await browser?.close();
  await hub?.close();
});

const b64Files = (dir) => ADAPTER_FILES.map((name) => ({ name, b64: fs.readFileSync(path.join(FIXTURES, dir, name)).toString("base64") }));

function finetune(page, name, text, adapterName) {
  return withTimeout(
    page.evaluate(
      async ({ name, text, config }) => {
        const r = await window.webtune.finetune({ name, bytes: text }, config);
        return { status: r.status, error: r.error, adapter: r.result?.adapter ?? null, after: r.result?.after ?? null, before: r.result?.before ?? null };
      },
      { name, text, config: { ...CONFIG, adapter_name: adapterName } },
    ),
    OP_MS,
    `fine-tuning ${adapterName}`,
  );
}

async function generateIds(page, model) {
  const r = await withTimeout(
    page.evaluate(({ prompt, options }) => window.webtune.generate(prompt, options), { prompt: PROMPT, options: { ...GREEDY, model } }),
    OP_MS,
    `a generation with ${model}`,
  );
  assert.equal(r.error, null, `${model}: ${JSON.stringify(r.error)}`);
  return r.result.generated_ids;
}

/** No page errors; console errors only for the 404s of optional model files on the test Hub. */
function assertCleanBesideHub(log) {
  assert.deepEqual(log.pageErrors, [], "uncaught page errors");
  const unexpected = log.consoleErrors.filter((e) => !/Failed to load resource: the server responded with a status of 404/.test(e));
  assert.deepEqual(unexpected, [], "console errors (page and workers)");
  assert.equal(log.crashed, false, "the renderer crashed");
}

const call = (page, name, ...args) => withTimeout(page.evaluate(({ name, args }) => window.webtune[name](...args), { name, args }), OP_MS, `webtune.${name}`);

test("a. two trained adapters are kept across a reload and switch base → A → B → base, each as its merged model generated; compare view; rename and delete", { timeout: 900_000 }, async () => {
  await withPage("adapters-a-library", browser, { backend: "cpu" }, async ({ page, log }) => {
    await waitForBackend(page);
    assert.equal((await loadModelFilesFromDisk(page, VOCAB, OP_MS, "the gpt2-vocab fixture")).error, null);
    assert.equal(await page.getByTestId("adapter-empty").isVisible(), true, "an empty library says so");
    const base = await generateIds(page, "base");

    const a = await finetune(page, "capitals.jsonl", CAPITALS, "A");
    assert.equal(a.error, null, JSON.stringify(a.error));
    assert.equal(a.adapter?.name, "A", JSON.stringify(a.adapter));
    const mergedA = await generateIds(page, "tuned");
    const b = await finetune(page, "story.txt", STORY, "B");
    assert.equal(b.error, null, JSON.stringify(b.error));
    assert.equal(b.adapter?.name, "B");
    const mergedB = await generateIds(page, "tuned");
    assert.notDeepEqual(mergedA, mergedB, "the two adapters generate differently (else the test proves little)");
    assert.notDeepEqual(mergedA, base);
    // Attached un-merged beside the base, each is its merged model.
    assert.deepEqual(await generateIds(page, "adapter:A"), mergedA);
    assert.deepEqual(await generateIds(page, "adapter:B"), mergedB);

    await page.reload();
    await waitForBackend(page);
    assert.equal((await loadModelFilesFromDisk(page, VOCAB, OP_MS, "the gpt2-vocab fixture again")).error, null);
    const listed = await call(page, "adapters");
    assert.equal(listed.error, null);
    assert.deepEqual(
      listed.result.map((m) => m.name),
      ["A", "B"],
    );
    for (const [m, job, data] of [
      [listed.result[0], a, "capitals.jsonl"],
      [listed.result[1], b, "story.txt"],
    ]) {
      assert.equal(m.fits, true, `${m.name} fits the model it was trained on`);
      assert.equal(m.source, "trained");
      assert.equal(m.dataset.name, data);
      assert.match(m.dataset.sha256, /^[0-9a-f]{64}$/);
      assert.equal(m.base.architecture, "gpt2");
      assert.match(m.base.fingerprint, /^[0-9a-f]{16}$/);
      assert.deepEqual([m.lora.r, m.lora.lora_alpha], [4, 8]);
      assert.equal(m.metrics.before.loss, job.before.loss);
      assert.equal(m.metrics.after.loss, job.after.loss);
      assert.equal(m.steps, CONFIG.train.steps);
    }
    await page.waitForSelector("[data-testid=adapter-row][data-name=B]");
    assert.match(await page.locator("[data-testid=adapter-row][data-name=A] [data-testid=adapter-row-details]").textContent(), /held-out loss [\d.]+ → [\d.]+ · r 4, alpha 8.*capitals\.jsonl/);

    // base → A (the panel's Use button and the generate panel) → B → base.
    const switches = [];
    await page.locator("[data-testid=adapter-row][data-name=A] [data-testid=adapter-use]").click();
    await page.waitForFunction(() => window.webtune.adapter === "A" && document.querySelector("[data-testid=gen-model-adapter]")?.checked);
    assert.match(await page.getByTestId("adapter-switch").textContent(), /Adapter “A” in use: switched in [\d.]+ (ms|s)/);
    assert.equal(await page.getByTestId("gen-adapter").inputValue(), "A");
    await page.getByTestId("prompt").fill(PROMPT);
    await page.getByTestId("max-new-tokens").fill(String(GREEDY.max_new_tokens));
    await page.getByTestId("greedy").check();
    await page.getByTestId("generate").click();
    await page.waitForFunction(() => ["done", "error"].includes(document.querySelector("[data-testid=gen-stats]")?.dataset.outcome ?? ""), null, { timeout: OP_MS });
    assert.match(await page.getByTestId("gen-stats").textContent(), /adapter “A”/);
    const shownA = (await page.getByTestId("gen-ids").textContent()).replace("Generated ids: ", "").split(", ").map(Number);
    // The page's generation stops at EOS; the merged model's ran on (ignore_eos): compare the shared part.
    assert.deepEqual(shownA, mergedA.slice(0, shownA.length));
    assert.ok(shownA.length > 0);
    for (const [name, want] of [
      ["B", mergedB],
      [null, base],
      ["A", mergedA],
    ]) {
      const s = await call(page, "useAdapter", name);
      assert.equal(s.error, null, JSON.stringify(s.error));
      switches.push({ to: name, ...s.result });
      assert.deepEqual(await generateIds(page, name === null ? "base" : `adapter:${name}`), want, `after switching to ${name ?? "the base"}`);
    }
    // Once attached, switching is a choice, not work.
    assert.equal(switches.at(-1).attached_before, true);
    assert.equal(switches.at(-1).attach_ms, 0);

    // The compare view: the same continuations side by side, and each model's held-out loss on
    // a dataset checked with A's job configuration is A's job's "before"/"after".
    const checked = await withTimeout(
      page.evaluate(async ({ text, config }) => {
        const r = await window.webtune.inspectDataset({ name: "capitals.jsonl", bytes: text }, config);
        await window.webtune.whenBaseline();
        return r.error;
      }, { text: CAPITALS, config: CONFIG }),
      OP_MS,
      "checking capitals.jsonl",
    );
    assert.equal(checked, null);
    const compared = await call(page, "compare", PROMPT, ["base", "adapter:A", "adapter:B"], { max_new_tokens: GREEDY.max_new_tokens, ignore_eos: true });
    assert.equal(compared.error, null, JSON.stringify(compared.error));
    assert.deepEqual(
      compared.rows.map((r) => r.generated_ids),
      [base, mergedA, mergedB],
    );
    const close = (x, y) => Math.abs(x - y) <= 1e-4 * Math.max(1, Math.abs(y));
    assert.ok(close(compared.rows[0].loss, a.before.loss), `base ${compared.rows[0].loss} vs before ${a.before.loss}`);
    assert.ok(close(compared.rows[1].loss, a.after.loss), `A ${compared.rows[1].loss} vs its job's after ${a.after.loss}`);
    assert.ok(compared.rows[2].loss !== compared.rows[1].loss);
    assert.equal(await page.locator("[data-testid=compare-cell]").count(), 3);
    assert.match(await page.locator("[data-testid=compare-cell][data-model='adapter:A'] [data-testid=compare-loss]").textContent(), /held-out loss/);

    // Rename keeps the adapter usable under its new name; delete removes it for good.
    const renamed = await call(page, "renameAdapter", "A", "capitals");
    assert.equal(renamed.error, null);
    assert.deepEqual(await generateIds(page, "adapter:capitals"), mergedA);
    const files = await call(page, "adapterFiles", "capitals");
    assert.deepEqual(Object.keys(files.files).sort(), ADAPTER_FILES);
    assert.equal((await call(page, "deleteAdapter", "B")).error, null);
    assert.deepEqual(
      (await call(page, "adapters")).result.map((m) => m.name),
      ["capitals"],
    );
    const gone = await page.evaluate(() => window.webtune.generate("x", { model: "adapter:B", max_new_tokens: 1 }));
    assert.equal(gone.error?.code, "adapter.not_found", JSON.stringify(gone.error));

    // Another base: the kept adapter is refused, naming both; PEFT's own adapter loads from
    // files and gives PEFT's logits; one that does not fit is refused and not kept.
    assert.equal((await loadModelFilesFromDisk(page, GPT2, OP_MS, "the tiny gpt2 fixture")).error, null);
    const other = await call(page, "useAdapter", "capitals");
    assert.equal(other.error?.code, "adapter.base_mismatch", JSON.stringify(other.error));
    assert.match(other.error.message, /"capitals" was trained on .*gpt2.*not on the loaded model, .*gpt2/);
    assert.equal((await call(page, "adapters")).result[0].fits, false);
    assert.equal(await page.locator("[data-testid=adapter-row][data-name=capitals] [data-testid=adapter-use]").isDisabled(), true);

    const peft = await page.evaluate(async (files) => {
      const decode = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      return window.webtune.loadAdapterFiles(files.map((f) => ({ name: `gpt2_c_attn/${f.name}`, bytes: decode(f.b64) })), { name: "peft" });
    }, b64Files("peft_adapters/gpt2_c_attn"));
    assert.equal(peft.error, null, JSON.stringify(peft.error));
    assert.equal(peft.result.source, "files");
    const ref = PEFT_REFERENCE.cases.gpt2_c_attn;
    const got = await page.evaluate(async (ids) => {
      const r = await window.webtune.logits(ids, "adapter:peft");
      return { shape: r.shape, data: r.data ? Array.from(r.data) : null, error: r.error };
    }, ref.sequence);
    assert.equal(got.error, null, JSON.stringify(got.error));
    const want = ref.logits.flat();
    assert.equal(got.data.length, want.length);
    const diff = got.data.reduce((m, x, i) => Math.max(m, Math.abs(x - want[i])), 0);
    assert.ok(diff <= 2e-5, `logits differ from PEFT's by ${diff}`);

    const misfit = await page.evaluate(async (files) => {
      const decode = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      return window.webtune.loadAdapterFiles(files.map((f) => ({ name: f.name, bytes: decode(f.b64) })), { name: "llama" });
    }, b64Files("peft_adapters/llama_q_v"));
    assert.equal(misfit.error?.code, "model.shape_mismatch", JSON.stringify(misfit.error));
    assert.deepEqual(
      (await call(page, "adapters")).result.map((m) => m.name),
      ["capitals", "peft"],
    );
    writeArtifactJson("adapters-switch.json", { switches, peft_logit_diff: diff, attach_ms: peft.result.attach_ms });
    assertCleanLog(assert, log);
  });
});

test("b. FineTuner: loadAdapter from a Hub-layout URL, adapters(), useAdapter() makes generate() use it, deleteAdapter()", { timeout: 300_000 }, async () => {
  await withPageAt("adapters-b-api", browser, "examples/index.html", {}, async ({ page, log }) => {
    const out = await withTimeout(
      page.evaluate(
        async ({ endpoint, ids }) => {
          const wt = await import(new URL("../webtune.js", location.href).href);
          const ft = await wt.FineTuner.create({ backend: "cpu" });
          // From the Hub's host: the worker may then reach it for the adapter too.
          await ft.loadModel("webtune-test/tiny-gpt2", { endpoint });
          const base = await ft.generate({ ids }, { greedy: true, max_new_tokens: 6, ignore_eos: true });
          const loaded = await ft.loadAdapter("webtune-test/gpt2-c-attn", { endpoint, name: "hub" });
          const listed = await ft.adapters();
          const switched = await ft.useAdapter("hub");
          const adapted = await ft.generate({ ids }, { greedy: true, max_new_tokens: 6, ignore_eos: true });
          const back = await ft.useAdapter(null);
          const again = await ft.generate({ ids }, { greedy: true, max_new_tokens: 6, ignore_eos: true });
          const peftFiles = await ft.adapterFiles("hub");
          await ft.deleteAdapter("hub");
          let missing = null;
          try {
            await ft.useAdapter("hub");
          } catch (e) {
            missing = { code: e.code, webtune: e instanceof wt.WebtuneError };
          }
          const after = await ft.adapters();
          ft.dispose();
          return { base: base.generated_ids, adapted: adapted.generated_ids, adaptedModel: adapted.model, again: again.generated_ids, loaded, listed, switched, back, peftFiles: Object.keys(peftFiles).sort(), missing, after };
        },
        { endpoint: hub.endpoint, ids: PEFT_REFERENCE.cases.gpt2_c_attn.sequence.slice(0, 4) },
      ),
      OP_MS,
      "the FineTuner adapter calls",
    );
    assert.equal(out.loaded.name, "hub");
    assert.equal(out.loaded.source, "url");
    assert.deepEqual(out.listed.map((m) => [m.name, m.fits, m.attached]), [["hub", true, true]]);
    assert.equal(out.switched.model, "adapter:hub");
    assert.equal(out.switched.attached_before, true);
    assert.equal(out.adaptedModel, "adapter:hub");
    assert.notDeepEqual(out.adapted, out.base, "the adapter changes the generation");
    assert.deepEqual(out.again, out.base, "useAdapter(null) goes back to the base");
    assert.deepEqual(out.peftFiles, ADAPTER_FILES);
    assert.deepEqual(out.missing, { code: "adapter.not_found", webtune: true });
    assert.deepEqual(out.after, []);
    assert.ok(
      hub.log.some((r) => r.path.endsWith("/adapter_model.safetensors") && r.status === 200),
      "the adapter came from the Hub-layout server",
    );
    assertCleanBesideHub(log);
  });
});

test("c. <webtune-trainer adapter=…> uses a kept adapter once its model loads (from a Hub-layout URL: the same files, the same fingerprint), offers the library in its picker and keeps an adapter picked from files", { timeout: 300_000 }, async () => {
  await withPageAt("adapters-c-component", browser, "examples/index.html", {}, async ({ page, log }) => {
    const files = VOCAB.map((p) => ({ name: path.basename(p), b64: fs.readFileSync(p).toString("base64") }));
    // Train and keep an adapter with the API, from picked files.
    const kept = await withTimeout(
      page.evaluate(
        async ({ files, text, config }) => {
          const wt = await import(new URL("../webtune.js", location.href).href);
          const ft = await wt.FineTuner.create({ backend: "cpu" });
          await ft.loadModel(files.map((f) => ({ name: f.name, bytes: Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0)) })));
          await ft.loadDataset({ name: "capitals.jsonl", text }, config);
          const r = await ft.train({ ...config, train: { ...config.train, steps: 3 }, adapter_name: "capitals" });
          // Its PEFT files, to pick again below as a user would from a download.
          const peft = await ft.adapterFiles("capitals");
          ft.dispose();
          const b64 = (bytes) => btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join(""));
          return { ...r.adapter, files: Object.fromEntries(Object.entries(peft).map(([n, b]) => [n, b64(b)])) };
        },
        { files, text: CAPITALS, config: CONFIG },
      ),
      OP_MS,
      "training an adapter with the API",
    );
    assert.equal(kept?.name, "capitals", JSON.stringify(kept));
    await page.evaluate(async (endpoint) => {
      await import(new URL("../components/webtune-trainer.js", location.href).href);
      const el = document.createElement("webtune-trainer");
      el.setAttribute("backend", "cpu");
      el.setAttribute("model", "webtune-test/tiny-gpt2-vocab");
      el.setAttribute("endpoint", endpoint);
      el.setAttribute("adapter", "capitals");
      el.id = "wt";
      document.body.append(el);
    }, hub.endpoint);
    await page.waitForFunction(() => /[Aa]dapter “capitals” in use/.test(document.querySelector("#wt")?.shadowRoot?.querySelector("[data-testid=wt-status]")?.textContent ?? ""), null, { timeout: OP_MS });
    const picker = page.locator("#wt").locator("[data-testid=wt-adapter]");
    assert.equal(await picker.inputValue(), "capitals");
    assert.deepEqual(await picker.locator("option").allTextContents(), ["None (the base model)", "capitals"]);
    await page.locator("#wt").locator("[data-testid=wt-prompt]").fill("The capital of");
    await page.locator("#wt").locator("[data-testid=wt-generate]").click();
    await page.waitForFunction(() => document.querySelector("#wt")?.dataset.state === "done", null, { timeout: OP_MS });
    assert.match(await page.locator("#wt").locator("[data-testid=wt-output-tuned]").textContent(), /^Adapter “capitals”: /);
    // Back to no adapter through the picker.
    await picker.selectOption("");
    await page.waitForFunction(() => /No adapter in use/.test(document.querySelector("#wt")?.shadowRoot?.querySelector("[data-testid=wt-status]")?.textContent ?? ""), null, { timeout: OP_MS });
    // PEFT files picked in the element (part "adapter-files") are kept, listed and used; named
    // as the page's Download button names them ("<adapter>-adapter_config.json", ...).
    await page
      .locator("#wt")
      .locator("[data-testid=wt-adapter-files]")
      .setInputFiles(ADAPTER_FILES.map((name) => ({ name: `capitals-${name}`, mimeType: "application/octet-stream", buffer: Buffer.from(kept.files[name], "base64") })));
    await page.waitForFunction(() => /[Aa]dapter “[^”]+” in use \(switched/.test(document.querySelector("#wt")?.shadowRoot?.querySelector("[data-testid=wt-status]")?.textContent ?? ""), null, { timeout: OP_MS });
    const options = await picker.locator("option").allTextContents();
    assert.equal(options.length, 3, options.join(", "));
    const added = options[2];
    assert.notEqual(added, "capitals");
    assert.equal(await picker.inputValue(), added);
    assertCleanBesideHub(log);
  });
});

test("d. train({init_adapter}) continues a kept adapter from its factors (its rank wins; a warmup step scores its job's after), kept as a new adapter; the page's Fine-tune panel starts from one", { timeout: 300_000 }, async () => {
  await withPage("adapters-d-continue", browser, { backend: "cpu" }, async ({ page, log }) => {
    await waitForBackend(page);
    assert.equal((await loadModelFilesFromDisk(page, VOCAB, OP_MS, "the gpt2-vocab fixture")).error, null);
    const first = await finetune(page, "capitals.jsonl", CAPITALS, "first");
    assert.equal(first.error, null, JSON.stringify(first.error));
    // The kept adapter is offered as a start in the Fine-tune panel.
    await page.waitForSelector("[data-testid=ft-init-adapter] option[value=first]", { state: "attached" });
    await page.locator("[data-testid=adapter-row][data-name=first] [data-testid=adapter-continue]").click();
    assert.equal(await page.getByTestId("ft-init-adapter").inputValue(), "first");
    const config = { ...CONFIG, train: { ...CONFIG.train, steps: 1, warmup: 1, lora_r: 8, lora_alpha: 32 }, adapter_name: "second" };
    const second = await withTimeout(
      page.evaluate(async ({ text, config }) => {
        const r = await window.webtune.finetune({ name: "capitals.jsonl", bytes: text }, { ...config, init_adapter: document.querySelector("[data-testid=ft-init-adapter]").value });
        return { error: r.error, adapter: r.result?.adapter ?? null, before: r.result?.before ?? null, after: r.result?.after ?? null };
      }, { text: CAPITALS, config }),
      OP_MS,
      "continuing the adapter",
    );
    assert.equal(second.error, null, JSON.stringify(second.error));
    const near = (x, y) => Math.abs(x - y) <= 1e-5 * Math.max(1, Math.abs(y));
    assert.ok(near(second.before.loss, first.after.loss), `before ${second.before.loss} vs the first job's after ${first.after.loss}`);
    assert.ok(near(second.after.loss, first.after.loss), "a warmup step (learning rate 0) changes nothing");
    assert.equal(second.adapter.name, "second");
    assert.equal(second.adapter.continued_from, "first");
    assert.deepEqual([second.adapter.lora.r, second.adapter.lora.lora_alpha], [4, 8], "the continued adapter's rank and alpha, not the config's");
    const missing = await page.evaluate(async ({ text, config }) => {
      const r = await window.webtune.finetune({ name: "capitals.jsonl", bytes: text }, { ...config, init_adapter: "nonexistent" });
      return r.error;
    }, { text: CAPITALS, config });
    assert.equal(missing?.code, "adapter.not_found", JSON.stringify(missing));
    // The page's recipe continues the kept adapter too: its project starts from "first"'s factors
    // (rank 4 whatever the panel says), as `webtune recipe --init-adapter DIR` writes it.
    assert.equal(await page.getByTestId("ft-init-adapter").inputValue(), "first");
    const download = page.waitForEvent("download", { timeout: OP_MS });
    // (Step 3 may be folded here: the button's own click, as a user's would run it.)
    await page.evaluate(() => document.querySelector("[data-testid=ft-recipe]").click());
    const zip = readStoredZip(fs.readFileSync(await (await download).path()));
    const job = JSON.parse(zip["webtune-recipe/job.json"].toString("utf8"));
    assert.equal(job.lora?.r, 4, JSON.stringify(job.lora));
    assert.equal(job.lora?.initial_adapter, "initial_adapter");
    const kept = await page.evaluate(async () => {
      const r = await window.webtune.adapterFiles("first");
      return Array.from(r.files["adapter_model.safetensors"]);
    });
    assert.deepEqual([...zip["webtune-recipe/initial_adapter/adapter_model.safetensors"]], kept, "the recipe starts from the kept adapter's factors");
    assertCleanLog(assert, log);
  });
});

test("e. the page loads adapters from its Adapters panel: PEFT files, and a Hub repo on the host the model came from; another host is refused before any request", { timeout: 300_000 }, async () => {
  await withPage("adapters-e-page-load", browser, { backend: "cpu", hub: hub.endpoint }, async ({ page, log }) => {
    await waitForBackend(page);
    const loaded = await withTimeout(
      page.evaluate((endpoint) => window.webtune.loadModelFromHub("webtune-test/tiny-gpt2", { endpoint }), hub.endpoint),
      OP_MS,
      "the tiny gpt2 from the Hub-layout server",
    );
    assert.equal(loaded.error, null, JSON.stringify(loaded.error));
    await page.locator("summary", { hasText: "Load a PEFT adapter" }).click();
    // From the Hub (the page's ?hub= endpoint), by repo id.
    await page.getByTestId("adapter-name").fill("from-hub");
    await page.getByTestId("adapter-url").fill("webtune-test/gpt2-c-attn");
    await page.getByTestId("adapter-url-load").click();
    await page.waitForSelector("[data-testid=adapter-row][data-name=from-hub]", { timeout: OP_MS });
    // From picked files.
    await page.getByTestId("adapter-name").fill("from-files");
    await page.getByTestId("adapter-files").setInputFiles(ADAPTER_FILES.map((f) => path.join(FIXTURES, "peft_adapters/gpt2_c_attn", f)));
    await page.getByTestId("adapter-load").click();
    await page.waitForSelector("[data-testid=adapter-row][data-name=from-files]", { timeout: OP_MS });
    const listed = await call(page, "adapters");
    assert.deepEqual(
      listed.result.map((m) => [m.name, m.source, m.fits]),
      [
        ["from-hub", "url", true],
        ["from-files", "files", true],
      ],
    );
    // The same adapter either way: the same logits.
    const ids = PEFT_REFERENCE.cases.gpt2_c_attn.sequence;
    const logits = (which) => page.evaluate(async ({ ids, which }) => Array.from((await window.webtune.logits(ids, which)).data), { ids, which });
    assert.deepEqual(await logits("adapter:from-hub"), await logits("adapter:from-files"));
    const before = log.requests.length;
    const blocked = await call(page, "loadAdapterFromUrl", "https://example.invalid/some/adapter/");
    assert.equal(blocked.error?.code, "network.blocked", JSON.stringify(blocked.error));
    assert.match(blocked.error.message, /may not reach example\.invalid/);
    assert.equal(log.requests.slice(before).filter((r) => r.url.includes("example.invalid")).length, 0);
    assertCleanBesideHub(log);
  });
});
