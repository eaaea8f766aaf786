// The page as a path of four steps — 1 model, 2 data, 3 fine-tune, 4 compare — walked at a
// phone's width (390 px) and a laptop's (1280 px): the ready-made SmolLM2 with the Shakespeare
// and Q&A samples, then the ready-made MiniLM with the sentiment sample. Each step opens when the
// one it needs is done, the step list says where you are, nothing is wider than the screen, a
// screenshot of each step is saved (test-artifacts/guided-<width>-*.png), and axe-core finds no
// WCAG 2.1 A/AA violation at any step. The diagnostics (backend details, toy transformer) are
// folded away at the end and still open.
//
// CPU-wasm; two training steps per sample on a small held-out share keep each run to about a
// minute: the point here is the path, not the gains (docs/evaluation.md, the other tests).

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { artifactPath, assertCleanLog, launchBrowser, loadDefaultModel, useSample, waitForBackend, waitForLoad, waitInPage, withPage } from "./harness.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
// axe-core from npm, evaluated through the DevTools protocol (the page's CSP forbids inline
// scripts and eval, and rightly so).
const AXE = fs.readFileSync(path.join(ROOT, "node_modules/axe-core/axe.min.js"), "utf8");
const STEPS = ["model", "data", "finetune", "compare"];

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** Each step's state (done, current, open, upcoming) and whether its panels are shown. */
function stepStates(page) {
  return page.evaluate((keys) =>
    Object.fromEntries(
      keys.map((k) => {
        const s = document.getElementById(`step-${k}`);
        const item = document.querySelector(`[data-testid=step-list] li[data-step="${k}"]`);
        return [k, { state: s.dataset.state, open: !s.querySelector(".step-body").hidden, listed: item.dataset.state, current: item.querySelector("a").getAttribute("aria-current") === "step" }];
      }),
    ),
  STEPS);
}

function assertSteps(states, expected, what) {
  const got = Object.fromEntries(Object.entries(states).map(([k, v]) => [k, v.state]));
  assert.deepEqual(got, expected, `${what}: ${JSON.stringify(states)}`);
  for (const [k, v] of Object.entries(states)) {
    assert.equal(v.listed, v.state, `the step list agrees on ${k}`);
    assert.equal(v.open, v.state !== "upcoming", `${k} is open unless upcoming`);
    assert.equal(v.current, v.state === "current", `aria-current marks the current step only (${k})`);
  }
}

/** No horizontal scrolling: the page fits the window's width. */
async function assertFits(page, width, what) {
  const wide = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(wide <= width, `${what}: the page is ${wide} px wide in a ${width} px window`);
}

/** axe-core's WCAG 2.1 A and AA rules on the whole page as it is now. */
async function assertAccessible(page, what) {
  if (!(await page.evaluate(() => typeof window.axe === "object"))) await page.evaluate(AXE);
  const violations = await page.evaluate(async () => {
    const r = await window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 4).map((n) => `${n.target.join(" ")}: ${n.failureSummary}`) }));
  });
  assert.deepEqual(violations, [], `${what}: ${JSON.stringify(violations, null, 1)}`);
}

/** A screenshot of one step's section (the sticky step list kept out of the way). */
async function shoot(page, width, key, name) {
  await page.locator(`#step-${key}`).screenshot({ path: artifactPath(`guided-${width}-${name}.png`), style: "[data-testid=step-list] { position: static !important; }" });
}

/** Two training steps from the fine-tune step's form; resolves with the run's record. */
async function trainTwoSteps(page, what) {
  const index = await page.evaluate(() => window.webtune.finetunes.length);
  await page.getByLabel("Training steps").fill("2");
  await page.getByTestId("ft-start").click();
  return waitInPage(
    page,
    (i) => {
      const r = window.webtune.finetunes[i];
      return r && r.status !== "running" ? { status: r.status, error: r.error, outcome: document.querySelector("[data-testid=verdict]")?.dataset.outcome ?? null } : null;
    },
    index,
    600_000,
    what,
  );
}

for (const width of [1280, 390]) {
  test(`the page walks four steps at ${width} px: model, data, fine-tune, compare, for each ready-made model and sample; accessible at every step`, { timeout: 1_500_000 }, async () => {
    await withPage(`guided-${width}`, browser, { backend: "cpu" }, async ({ page, log }) => {
      await page.setViewportSize({ width, height: 900 });
      await waitForBackend(page);

      // 1. Only the model step is open; the others say what they wait for.
      assertSteps(await stepStates(page), { model: "current", data: "upcoming", finetune: "upcoming", compare: "upcoming" }, "at the start");
      assert.match(await page.getByTestId("step-data-hint").textContent(), /opens when a model is loaded/);
      // The diagnostics are folded away at the end, and open.
      assert.equal(await page.getByTestId("diagnostics").evaluate((d) => d.open), false);
      assert.equal(await page.getByTestId("backend-name").isVisible(), false);
      await page.getByTestId("diagnostics").locator("summary").click();
      assert.equal(await page.getByTestId("backend-name").isVisible(), true);
      await page.getByTestId("diagnostics").locator("summary").click();
      // Keyboard focus follows the steps: every focusable control of a step comes after those
      // of the steps before it.
      const order = await page.evaluate((keys) => {
        const focusable = [...document.querySelectorAll("a[href], button, input, select, textarea, summary, [tabindex]")].filter((e) => e.tabIndex >= 0);
        return focusable.map((e) => keys.findIndex((k) => document.getElementById(`step-${k}`)?.contains(e))).filter((i) => i >= 0);
      }, STEPS);
      assert.deepEqual(order, [...order].sort((a, b) => a - b), "tab order follows the steps");
      await assertFits(page, width, "step 1");
      await assertAccessible(page, "step 1");
      await shoot(page, width, "model", "1-model");

      const loaded = await loadDefaultModel(page, 300_000, "SmolLM2 to load");
      assert.equal(loaded.error, null, JSON.stringify(loaded.error));
      assertSteps(await stepStates(page), { model: "done", data: "current", finetune: "upcoming", compare: "upcoming" }, "after the model");
      await assertFits(page, width, "step 2");
      await assertAccessible(page, "step 2");
      await shoot(page, width, "data", "2-data");

      // 2–4 for each causal sample: short rows and a small held-out share keep it quick.
      await page.getByLabel("Sequence length (tokens)").fill("32");
      await page.getByLabel("Validation share").fill("0.02");
      for (const [sample, slug] of [["shakespeare_excerpt.txt", "shakespeare"], ["chatterbot_english_qa.jsonl", "qa"]]) {
        await useSample(page, sample);
        assertSteps(await stepStates(page), { model: "done", data: "done", finetune: "current", compare: "open" }, `${sample} checked`);
        await waitInPage(page, () => document.querySelector("[data-testid=baseline]")?.dataset.state === "done", null, 300_000, "the base model's score");
        await assertFits(page, width, `${sample}: data`);
        await assertAccessible(page, `${sample}: data checked`);
        await shoot(page, width, "data", `2-data-${slug}`);
        await shoot(page, width, "finetune", `3-finetune-${slug}-before`);

        const run = await trainTwoSteps(page, `two steps on ${sample}`);
        assert.equal(run.error, null, JSON.stringify(run.error));
        assert.equal(run.status, "done");
        assert.ok(["better", "same", "worse"].includes(run.outcome), `a verdict: ${run.outcome}`);
        assertSteps(await stepStates(page), { model: "done", data: "done", finetune: "done", compare: "current" }, `${sample} fine-tuned`);
        await assertFits(page, width, `${sample}: results`);
        await assertAccessible(page, `${sample}: results`);
        await shoot(page, width, "finetune", `3-finetune-${slug}`);
        await shoot(page, width, "compare", `4-compare-${slug}`);
        assert.doesNotMatch(await page.getByTestId("step-compare").getByTestId("downloads").textContent(), /null/, "no stray text among the downloads");
      }

      // The encoder and the sentiment sample: a new model sends the path back to step 2.
      const index = await page.evaluate(() => window.webtune.loads.length);
      await page.getByLabel("Ready-made model").selectOption("all-minilm-l6-v2");
      await page.getByTestId("load-default-model").click();
      const minilm = await waitForLoad(page, index, 120_000, "MiniLM to load");
      assert.equal(minilm.error, null, JSON.stringify(minilm.error));
      await waitInPage(page, () => document.getElementById("step-data").dataset.state === "current", null, 60_000, "step 2 again");
      await useSample(page, "pang_lee_polarity_200.jsonl");
      assertSteps(await stepStates(page), { model: "done", data: "done", finetune: "current", compare: "open" }, "sentiment checked");
      const run = await trainTwoSteps(page, "two steps on the sentiment sample");
      assert.equal(run.error, null, JSON.stringify(run.error));
      assertSteps(await stepStates(page), { model: "done", data: "done", finetune: "done", compare: "current" }, "sentiment fine-tuned");
      await assertFits(page, width, "sentiment results");
      await assertAccessible(page, "sentiment results");
      await shoot(page, width, "data", "2-data-sentiment");
      await shoot(page, width, "finetune", "3-finetune-sentiment");
      await shoot(page, width, "compare", "4-compare-sentiment");
      await page.screenshot({ path: artifactPath(`guided-${width}-page.png`), fullPage: true });
      assertCleanLog(assert, log);
    });
  });
}
