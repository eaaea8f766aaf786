// The default model served with the page (SmolLM2-135M-Instruct, a real pretrained GGUF with
// Q4_1/Q8_0 weights, prepared by `cargo xtask models`): it loads from the page's own "Ready-made
// model" button, reports what the native CLI reports, tokenizes text and continues it greedily
// exactly as the native CLI does, and a reload serves it from the browser cache. Its GGUF carries
// a chat template: the generate panel offers chat mode, formats the conversation with it and
// stops at its end-of-turn token, as `webtune generate --chat` does.
//
// CPU only: on headless chromium's SwiftShader adapter a 135M-parameter model would take many
// minutes per token; WebGPU numerics are covered on the tiny fixtures (models.test.mjs).

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { CLI, assertCleanLog, launchBrowser, loadDefaultModel, waitForBackend, waitInPage, withPage, withTimeout } from "./harness.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const INDEX = path.join(ROOT, "www/models/index.json");
const PROMPT = "The capital of France is";
const NEW_TOKENS = 6;

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

function defaultModel() {
  const index = JSON.parse(fs.readFileSync(INDEX, "utf8"));
  const model = index.models.find((m) => m.id === "smollm2-135m-instruct");
  assert.ok(model, `${INDEX} lists no smollm2-135m-instruct: \`cargo xtask models\` could not fetch it (see its output)`);
  return { model, dir: path.join(ROOT, "www", model.repo, "resolve/main") };
}

function cli(args) {
  assert.ok(CLI, "WEBTUNE_CLI is not set (cargo xtask test sets it)");
  const stdout = execFileSync(CLI, [...args, "--json"], { encoding: "utf8", timeout: 300_000, maxBuffer: 64 << 20 });
  return JSON.parse(stdout.trim().split("\n").at(-1));
}

test("the default model loads from the page, matches the native CLI, generates from text, and is cached", { timeout: 900_000 }, async () => {
  const { dir } = defaultModel();
  const nativeInfo = cli(["info", dir]);
  const native = cli(["generate", dir, "--prompt", PROMPT, "--greedy", "--max-new-tokens", String(NEW_TOKENS), "--ignore-eos"]);

  await withPage("default-model", browser, { backend: "cpu" }, async ({ page, log }) => {
    await waitForBackend(page);
    await page.evaluate(() => window.webtune.clearModelCache());
    const loaded = await loadDefaultModel(page, 300_000, "the default model to download and load");
    assert.equal(loaded.error, null, `loading failed: ${JSON.stringify(loaded.error)}`);
    assert.deepEqual(loaded.info, nativeInfo, "the page reports what `webtune info` reports");
    assert.equal(loaded.info.architecture, "llama");
    assert.equal(loaded.info.has_tokenizer, true);
    console.log(`default model: download ${loaded.timing.download_ms.toFixed(0)} ms, build ${loaded.timing.load_ms.toFixed(0)} ms`);

    // Text in, text out: the tokenizer from the GGUF metadata and the greedy continuation agree
    // with the native build token for token.
    const requestsBefore = log.requests.length;
    const gen = await withTimeout(
      page.evaluate(
        ([prompt, n]) => window.webtune.generate(prompt, { greedy: true, max_new_tokens: n, ignore_eos: true }),
        [PROMPT, NEW_TOKENS],
      ),
      300_000,
      "greedy generation",
    );
    assert.equal(gen.error, null, `generation failed: ${JSON.stringify(gen.error)}`);
    assert.deepEqual(gen.result.prompt_ids, native.prompt_ids);
    assert.deepEqual(gen.result.generated_ids, native.generated_ids);
    assert.equal(gen.result.text, native.text);
    console.log(`default model: "${PROMPT}" →${JSON.stringify(gen.result.text)} at ${gen.result.tokens_per_s.toFixed(2)} tokens/s (CPU wasm)`);
    assert.deepEqual(log.requests.slice(requestsBefore), [], "generation made no network request");

    // A reload loads it again from the Cache API: the weights are not requested again.
    await withTimeout(page.reload({ waitUntil: "load" }), 30_000, "the page to reload");
    await waitForBackend(page);
    const requestsAtReload = log.requests.length;
    const again = await withTimeout(page.evaluate(() => window.webtune.loadDefaultModel()), 300_000, "the cached default model");
    assert.equal(again.error, null, `the cached load failed: ${JSON.stringify(again.error)}`);
    assert.equal(again.source.cached, true);
    const gguf = log.requests.slice(requestsAtReload).filter((r) => r.url.endsWith(".gguf"));
    assert.deepEqual(gguf, [], "the GGUF came from the browser cache");
    assertCleanLog(assert, log);
  });
});

test("the default model chats: the template from its GGUF formats the conversation and the reply stops at <|im_end|>", { timeout: 900_000 }, async () => {
  const { dir } = defaultModel();
  const QUESTION = "What is the capital of France?";
  const MAX = 16;
  const native = cli(["generate", dir, "--chat", QUESTION, "--greedy", "--max-new-tokens", String(MAX)]);
  assert.ok(native.chat_prompt.includes(`<|im_start|>user\n${QUESTION}<|im_end|>\n<|im_start|>assistant\n`), native.chat_prompt);

  await withPage("default-model-chat", browser, { backend: "cpu" }, async ({ page, log }) => {
    await waitForBackend(page);
    const loaded = await withTimeout(page.evaluate(() => window.webtune.loadDefaultModel()), 300_000, "the default model");
    assert.equal(loaded.error, null, `loading failed: ${JSON.stringify(loaded.error)}`);
    assert.equal(loaded.info.has_chat_template, true);
    assert.equal(loaded.info.chat_template_source, "gguf");

    // The chat switch is offered (and on) for a model with a template.
    assert.ok(await page.getByTestId("chat-fields").isVisible(), "the chat switch is shown");
    assert.ok(await page.getByTestId("chat-mode").isChecked(), "chat mode is on by default for a chat model");
    await page.getByTestId("prompt").fill(QUESTION);
    await page.getByTestId("max-new-tokens").fill(String(MAX));
    await page.getByTestId("greedy").check();
    await page.getByTestId("generate").click();
    await waitInPage(page, () => ["done", "error"].includes(document.querySelector("[data-testid=gen-stats]")?.dataset.outcome), null, 300_000, "the chat reply");
    assert.equal(await page.getByTestId("gen-stats").getAttribute("data-outcome"), "done", await page.getByTestId("gen-stats").textContent());

    // The formatted prompt is the model's template applied to the conversation, as the CLI has it.
    const formatted = await page.getByTestId("chat-prompt").textContent();
    assert.ok(formatted.includes("<|im_start|>user"), formatted);
    assert.equal(formatted, native.chat_prompt);
    // The reply is the native one, token for token, and stops at <|im_end|> (id 2) when it
    // ends within the limit; the shown text leaves the end-of-turn token out.
    const ids = (await page.getByTestId("gen-ids").textContent()).replace("Generated ids: ", "").split(", ").map(Number);
    assert.deepEqual(ids, native.generated_ids);
    if (ids.length < MAX) assert.equal(ids.at(-1), 2, "the reply ended at <|im_end|>");
    const reply = await page.getByTestId("gen-output").textContent();
    assert.ok(!reply.includes("<|im_end|>"), reply);
    console.log(`default model chat: ${JSON.stringify(QUESTION)} →${JSON.stringify(reply)} (${ids.length} tokens)`);
    assert.match(await page.getByTestId("chat-state").textContent(), /1 earlier turn/);
    assertCleanLog(assert, log);
  });
});

// WebGPU: the same chat on the GPU backend. On a GPU-less machine headless chromium's adapter is
// SwiftShader, which generates with this 135M-parameter model at about 0.16 tokens/s (cargo xtask
// bench), so the reply is capped at 8 tokens — SmolLM2's whole answer here ("The capital of
// France is Paris." + <|im_end|>). The prompt and the tokens must be the native CLI's.
test("the default model loads and chats on WebGPU too, with the native CLI's tokens", { timeout: 1_200_000 }, async () => {
  const { dir } = defaultModel();
  const QUESTION = "What is the capital of France?";
  const MAX = 8;
  const native = cli(["generate", dir, "--chat", QUESTION, "--greedy", "--max-new-tokens", String(MAX)]);

  await withPage("default-model-webgpu", browser, { backend: "webgpu" }, async ({ page, log }) => {
    const message = await waitForBackend(page);
    assert.equal(message.backend, "webgpu");
    const loaded = await withTimeout(page.evaluate(() => window.webtune.loadDefaultModel()), 600_000, "the default model on WebGPU");
    assert.equal(loaded.error, null, `loading failed: ${JSON.stringify(loaded.error)}`);
    assert.equal(loaded.info.has_chat_template, true);
    const gen = await withTimeout(
      page.evaluate(
        ([q, n]) => window.webtune.generate({ chat: [{ role: "user", content: q }] }, { greedy: true, max_new_tokens: n }),
        [QUESTION, MAX],
      ),
      1_000_000,
      "the chat reply on WebGPU",
    );
    assert.equal(gen.error, null, `generation failed: ${JSON.stringify(gen.error)}`);
    assert.equal(gen.result.chat_prompt, native.chat_prompt);
    assert.deepEqual(gen.result.prompt_ids, native.prompt_ids);
    assert.deepEqual(gen.result.generated_ids, native.generated_ids);
    console.log(
      `default model on WebGPU: load ${loaded.timing.load_ms.toFixed(0)} ms; ${JSON.stringify(QUESTION)} →${JSON.stringify(gen.result.text)} ` +
        `(${gen.result.generated_ids.length} tokens, ${gen.result.tokens_per_s.toFixed(3)} tokens/s)`,
    );
    assertCleanLog(assert, log);
  });
});
