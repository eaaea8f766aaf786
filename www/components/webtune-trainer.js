// <webtune-trainer>: a compact fine-tuning widget for any page, built only on the public
// FineTuner API (../webtune.js). Importing this module defines the element.
//
//   <script type="module" src="https://your.site/webtune/components/webtune-trainer.js"></script>
//   <webtune-trainer model="smollm2-135m-instruct" dataset="samples/shakespeare_excerpt.txt" preset="quick-demo"></webtune-trainer>
//
// Attributes (read when the element is connected):
//   model      a served model id (models/index.json next to webtune.js), a Hub repo "owner/name",
//              or a URL of a Hub-layout repo / one .gguf file (relative: "./", "../" or "/")
//   dataset    URL of a dataset file, fetched before the model is loaded (so that nothing goes
//              over the network once the model is in memory); users can also drop or pick a file
//   preset     "quick-demo" (default), "balanced" or "thorough" (webtune.js PRESETS)
//   backend    "auto" (default), "webgpu" or "cpu"
//   steps, lr, method ("lora" | "full")   override the preset's training settings
//   endpoint   Hub endpoint for repo ids (default https://huggingface.co)
//   label      the heading (default "Fine-tune <model>")
//   adapter    the name of an adapter kept in this browser (the adapter library) to use once the
//              model is loaded; the picker (part "adapters") lists the kept adapters of the model,
//              and a file input (part "adapter-files") keeps and uses a PEFT adapter picked from
//              disk (adapter_config.json + adapter_model.safetensors)
//   url-params when present, the page's query parameters model, dataset, preset, backend, steps,
//              lr, method and endpoint override the attributes (handy for demos and tests)
//
// Theming (CSS custom properties, set them on the element or an ancestor):
//   --webtune-accent (buttons, train-loss line), --webtune-eval (validation points),
//   --webtune-bg, --webtune-fg, --webtune-muted, --webtune-border, --webtune-radius,
//   --webtune-font, --webtune-good, --webtune-bad (before/after changes), --webtune-error.
// Parts (::part): container, header, title, dropzone, button, chart, table, adapters,
// adapter-files.
//
// Events (bubbling, composed CustomEvents on the element): "webtune-state" {state},
// "webtune-progress" (a training step), "webtune-done" (the train() result), "webtune-error"
// (a WebtuneError). The element's `tuner` is its FineTuner, `result` the latest result.

import { FineTuner, PRESETS, WebtuneError } from "../webtune.js";
import { createLossChart } from "./loss-chart.js";
import { el, formatBytes, formatDuration, formatInt, formatLoss } from "../lib/format.js";
import { changeInterval, intervalsOf, verdictFor } from "./results-panel.js";

const UPLOT_CSS = new URL("../vendor/uplot/uPlot.min.css", import.meta.url);
const OVERRIDES = ["model", "dataset", "preset", "backend", "steps", "lr", "method", "endpoint"];

const STYLE = `
:host {
  display: block;
  --_accent: var(--webtune-accent, #2563eb);
  --_bg: var(--webtune-bg, Canvas);
  --_fg: var(--webtune-fg, CanvasText);
  --_muted: var(--webtune-muted, color-mix(in srgb, var(--_fg) 60%, transparent));
  --_border: var(--webtune-border, color-mix(in srgb, var(--_fg) 20%, transparent));
  --_radius: var(--webtune-radius, 8px);
  --_good: var(--webtune-good, #15803d);
  --_bad: var(--webtune-bad, #b91c1c);
  --_error: var(--webtune-error, #b91c1c);
  font: 14px/1.45 var(--webtune-font, system-ui, sans-serif);
  color: var(--_fg);
}
:host([hidden]), [hidden] { display: none !important; }
.wt { background: var(--_bg); border: 1px solid var(--_border); border-radius: var(--_radius); padding: 1rem; display: grid; gap: .75rem; }
header { display: flex; flex-wrap: wrap; gap: .25rem 1rem; align-items: baseline; justify-content: space-between; }
h2 { font-size: 1.05rem; margin: 0; }
.status { color: var(--_muted); margin: 0; }
.drop { border: 2px dashed var(--_border); border-radius: var(--_radius); padding: .75rem; }
.drop[data-over] { border-color: var(--_accent); background: color-mix(in srgb, var(--_accent) 8%, transparent); }
.drop p { margin: .25rem 0 0; color: var(--_muted); }
.controls { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: center; }
button { font: inherit; padding: .35rem .9rem; border-radius: calc(var(--_radius) * .75); border: 1px solid var(--_border); background: transparent; color: inherit; cursor: pointer; }
button.primary { background: var(--_accent); border-color: var(--_accent); color: white; }
button:disabled { opacity: .5; cursor: not-allowed; }
progress { width: 10rem; accent-color: var(--_accent); }
.stat { font-variant-numeric: tabular-nums; }
.chart { --accent: var(--_accent); --eval: var(--webtune-eval, #d9480f); --fg: var(--_fg); --grid: var(--webtune-grid, var(--_border)); min-height: 0; }
.chart[hidden] { display: none; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
caption { text-align: left; color: var(--_muted); padding-bottom: .25rem; }
th, td { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid var(--_border); vertical-align: top; }
td.num { text-align: right; }
td[data-better="true"] { color: var(--_good); }
td[data-better="false"] { color: var(--_bad); }
.error { color: var(--_error); border-left: 3px solid var(--_error); padding: .25rem .5rem; margin: 0; white-space: pre-wrap; }
.samples { display: grid; gap: .5rem; }
.sample { border: 1px solid var(--_border); border-radius: calc(var(--_radius) * .75); padding: .5rem; }
.sample q { font-style: italic; }
.try { display: flex; gap: .5rem; flex-wrap: wrap; }
.try input { flex: 1 1 14rem; font: inherit; padding: .3rem .5rem; border: 1px solid var(--_border); border-radius: calc(var(--_radius) * .75); background: transparent; color: inherit; }
.out { white-space: pre-wrap; margin: .25rem 0; }
.privacy { color: var(--_muted); font-size: .9em; margin: 0; }
`;

function pct(before, after) {
  return ((after - before) / before) * 100;
}

function signedPct(x) {
  return `${x > 0 ? "+" : x < 0 ? "−" : "±"}${Math.abs(x).toFixed(1)}%`;
}

function f1(x) {
  return Number.isFinite(x) ? x.toFixed(3) : "–";
}

function percent(x) {
  return Number.isFinite(x) ? `${(x * 100).toFixed(1)}%` : "–";
}

/** The loadModel() argument for the `model` attribute. */
function modelSource(value, endpoint) {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(value) || /^\.{0,2}\//.test(value)) return value;
  if (value.includes("/")) return endpoint ? { hub: value, endpoint } : value;
  return { served: value };
}

export class WebtuneTrainer extends HTMLElement {
  #tuner = null;
  #result = null;
  #state = "idle";
  #data = null; // {name, bytes: ArrayBuffer}
  #chart = null;
  #ui = null;
  #started = false;

  get tuner() {
    return this.#tuner;
  }

  get result() {
    return this.#result;
  }

  get state() {
    return this.#state;
  }

  /** An attribute, or with `url-params` the page's query parameter of the same name. */
  #option(name) {
    if (this.hasAttribute("url-params") && OVERRIDES.includes(name)) {
      const value = new URLSearchParams(location.search).get(name);
      if (value !== null && value !== "") return value;
    }
    return this.getAttribute(name);
  }

  connectedCallback() {
    if (this.#started) return;
    this.#started = true;
    if (!this.shadowRoot) this.attachShadow({ mode: "open" });
    this.#render();
    this.#start().catch((e) => this.#fail(e));
  }

  disconnectedCallback() {
    // Moving the element within the page reconnects it at once; only a real removal disposes.
    queueMicrotask(() => {
      if (this.isConnected) return;
      this.#tuner?.dispose();
      this.#tuner = null;
      this.#started = false;
    });
  }

  #render() {
    const ui = {};
    ui.title = el("h2", { part: "title" }, this.getAttribute("label") ?? "Fine-tune a model");
    ui.status = el("p", { class: "status", role: "status", "aria-live": "polite", "data-testid": "wt-status" }, "Starting…");
    ui.file = el("input", { type: "file", accept: ".jsonl,.json,.csv,.tsv,.txt,.ndjson", "data-testid": "wt-file", "aria-label": "Dataset file" });
    ui.datasetInfo = el("p", { "data-testid": "wt-dataset" }, "No dataset yet.");
    ui.drop = el(
      "div",
      { class: "drop", part: "dropzone", "data-testid": "wt-drop" },
      el("label", {}, "Dataset: drop a file here or ", ui.file),
      ui.datasetInfo,
    );
    ui.train = el("button", { type: "button", class: "primary", part: "button", disabled: true, "data-testid": "wt-train" }, "Train");
    ui.cancel = el("button", { type: "button", part: "button", disabled: true, "data-testid": "wt-cancel" }, "Stop");
    ui.progress = el("progress", { max: 1, value: 0, "data-testid": "wt-progress", "aria-label": "Training progress" });
    ui.step = el("span", { class: "stat", "data-testid": "wt-step" }, "");
    ui.loss = el("span", { class: "stat", "data-testid": "wt-loss" }, "");
    ui.chart = el("div", { class: "chart", part: "chart", hidden: true, role: "img", "aria-label": "Training and validation loss by step", "data-testid": "wt-chart" });
    ui.table = el("table", { part: "table", hidden: true, "data-testid": "wt-before-after" });
    ui.extra = el("div", { class: "samples", hidden: true, "data-testid": "wt-samples" });
    ui.prompt = el("input", { type: "text", "aria-label": "Prompt", placeholder: "Write the start of a text…", "data-testid": "wt-prompt" });
    ui.generate = el("button", { type: "button", part: "button", "data-testid": "wt-generate" }, "Continue with both models");
    ui.outputs = el("div", { "data-testid": "wt-outputs" });
    ui.try = el("div", { hidden: true, "data-testid": "wt-try" }, el("div", { class: "try" }, ui.prompt, ui.generate), ui.outputs);
    ui.error = el("p", { class: "error", role: "alert", hidden: true, "data-testid": "wt-error" });
    // The adapter library's adapters for this model: choosing one switches without reloading.
    ui.adapter = el("select", { part: "adapters", "aria-label": "Adapter", "data-testid": "wt-adapter" });
    ui.adapters = el("label", { class: "controls", hidden: true }, "Adapter: ", ui.adapter);
    ui.adapterFiles = el("input", { type: "file", multiple: true, accept: ".json,.safetensors", part: "adapter-files", "aria-label": "PEFT adapter files", "data-testid": "wt-adapter-files" });
    ui.adapterLoad = el("label", { class: "controls", hidden: true }, "Add a PEFT adapter (adapter_config.json + adapter_model.safetensors): ", ui.adapterFiles);
    ui.privacy = el("p", { class: "privacy" }, "Training runs in this browser tab; your data is not uploaded.");

    const root = this.shadowRoot;
    root.replaceChildren(
      el("link", { rel: "stylesheet", href: UPLOT_CSS.href }),
      el("style", {}, STYLE),
      el(
        "div",
        { class: "wt", part: "container" },
        el("header", { part: "header" }, ui.title, ui.status),
        ui.drop,
        el("div", { class: "controls" }, ui.train, ui.cancel, ui.progress, ui.step, ui.loss),
        ui.adapters,
        ui.adapterLoad,
        ui.chart,
        ui.table,
        ui.extra,
        ui.try,
        ui.error,
        ui.privacy,
      ),
    );

    ui.train.addEventListener("click", () => void this.train());
    ui.cancel.addEventListener("click", () => this.cancel());
    ui.file.addEventListener("change", () => {
      const file = ui.file.files?.[0];
      ui.file.value = "";
      if (file) void this.#useFile(file);
    });
    ui.drop.addEventListener("dragover", (event) => {
      if (!event.dataTransfer?.types?.includes("Files")) return;
      event.preventDefault();
      ui.drop.dataset.over = "";
    });
    ui.drop.addEventListener("dragleave", () => delete ui.drop.dataset.over);
    ui.drop.addEventListener("drop", (event) => {
      event.preventDefault();
      delete ui.drop.dataset.over;
      const file = event.dataTransfer?.files?.[0];
      if (file) void this.#useFile(file);
    });
    ui.generate.addEventListener("click", () => void this.#tryPrompt());
    ui.adapter.addEventListener("change", () => void this.useAdapter(ui.adapter.value || null));
    ui.adapterFiles.addEventListener("change", () => {
      const files = Array.from(ui.adapterFiles.files ?? []);
      ui.adapterFiles.value = "";
      if (files.length) void this.loadAdapter(files);
    });
    this.#ui = ui;
  }

  #setState(state, text) {
    this.#state = state;
    this.dataset.state = state;
    if (text !== undefined) this.#ui.status.textContent = text;
    const busy = ["starting", "loading", "training", "checking", "generating"].includes(state);
    this.#ui.train.disabled = busy || !this.#tuner?.model || !this.#tuner?.dataset;
    this.#ui.cancel.disabled = !(state === "training" || (state === "loading" && this.#tuner));
    this.#ui.file.disabled = busy;
    this.#ui.generate.disabled = busy || !(this.#tuner?.tuned || this.#tuner?.adapter);
    this.#ui.adapter.disabled = busy;
    this.#ui.adapterFiles.disabled = busy;
    this.dispatchEvent(new CustomEvent("webtune-state", { detail: { state }, bubbles: true, composed: true }));
  }

  #fail(error) {
    const e = WebtuneError.from(error);
    this.#ui.error.hidden = false;
    this.#ui.error.dataset.code = e.code;
    const line = e.details?.line != null ? ` (${e.details.file ?? "line"}:${e.details.line})` : "";
    this.#ui.error.textContent = `${e.code}${line}: ${e.message}`;
    this.dataset.errorCode = e.code;
    this.#setState("error", "Something went wrong (see below).");
    this.dispatchEvent(new CustomEvent("webtune-error", { detail: e, bubbles: true, composed: true }));
  }

  #clearError() {
    this.#ui.error.hidden = true;
    this.#ui.error.textContent = "";
    delete this.dataset.errorCode;
  }

  async #start() {
    this.#setState("starting", "Starting the training worker…");
    const backend = /** @type {import("../webtune").Backend} */ (this.#option("backend") || "auto");
    const modelAttr = (this.#option("model") ?? "").trim();
    const datasetAttr = (this.#option("dataset") ?? "").trim();
    const endpoint = this.#option("endpoint") || undefined;

    if (modelAttr && !this.hasAttribute("label")) this.#ui.title.textContent = `Fine-tune ${modelAttr}`;
    // The dataset first: once the model is in memory, nothing goes over the network.
    if (datasetAttr) {
      const url = new URL(datasetAttr, document.baseURI);
      let response;
      try {
        response = await fetch(url);
      } catch (e) {
        throw new WebtuneError("data.missing", `Could not read the dataset ${url.href}: ${e?.message ?? e}`, { url: url.href });
      }
      if (!response.ok) throw new WebtuneError("data.missing", `Could not read the dataset ${url.href} (HTTP ${response.status}).`, { url: url.href });
      this.#data = { name: decodeURIComponent(url.pathname.split("/").pop()), bytes: await response.arrayBuffer() };
      this.#ui.datasetInfo.textContent = `${this.#data.name} (${formatBytes(this.#data.bytes.byteLength)}) — checked once the model is loaded.`;
    }

    this.#tuner = await FineTuner.create({ backend });
    this.#tuner.on("progress", (p) => this.#progress(p));
    this.#tuner.on("phase", (p) => {
      if (this.#state === "training") this.#ui.status.textContent = p.message;
    });
    this.#tuner.on("error", (e) => {
      if (e.fatal) this.#fail(e);
    });
    const downloads = new Map();
    this.#tuner.on("download", (d) => {
      downloads.set(d.file, d);
      let loaded = 0;
      let total = 0;
      for (const f of downloads.values()) {
        loaded += f.loaded ?? 0;
        total += f.total ?? f.loaded ?? 0;
      }
      this.#ui.status.textContent = `Downloading the model: ${formatBytes(loaded)}${total ? ` of ${formatBytes(total)}` : ""}…`;
    });

    if (!modelAttr) {
      this.#setState("idle", `Ready on ${this.#tuner.backend?.backend ?? "?"}; this element has no model attribute.`);
      return;
    }
    this.#setState("loading", `Loading ${modelAttr}…`);
    const loaded = await this.#tuner.loadModel(modelSource(modelAttr, endpoint));
    const params = loaded.info.parameters;
    this.#ui.title.textContent = this.getAttribute("label") ?? `Fine-tune ${modelAttr} (${params >= 1e6 ? `${(params / 1e6).toFixed(1)} M` : formatInt(params)} parameters)`;
    this.#setState("loaded", `Model loaded${loaded.source.cached ? " from the browser cache" : ""} on ${this.#tuner.backend.backend === "webgpu" ? "WebGPU" : "the CPU"}.`);
    this.dataset.modelLoaded = "";
    await this.#refreshAdapters();
    const wanted = this.#option("adapter");
    if (wanted) await this.useAdapter(wanted);
    if (this.#data) await this.#check();
    else this.#setState("loaded", `Model loaded${this.#tuner.adapter ? `, adapter “${this.#tuner.adapter}” in use` : ""}. Drop a dataset file to continue.`);
  }

  /** The job options: the preset for `task` (what the model learns from its data). */
  #options(task) {
    const preset = this.#option("preset") || "quick-demo";
    const chosen = PRESETS[preset]?.[task ?? "causal"];
    if (!chosen) throw new WebtuneError("config.invalid", `Unknown preset ${JSON.stringify(preset)}; choose one of ${Object.keys(PRESETS).join(", ")}.`);
    return chosen;
  }

  /** Training overrides from the steps / lr / method attributes. */
  #overrides() {
    const train = {};
    const steps = Number(this.#option("steps"));
    if (this.#option("steps") && Number.isInteger(steps) && steps > 0) train.steps = steps;
    const lr = Number(this.#option("lr"));
    if (this.#option("lr") && Number.isFinite(lr) && lr > 0) train.lr = lr;
    const method = this.#option("method");
    if (method === "lora" || method === "full") train.method = method;
    return Object.keys(train).length ? { train } : {};
  }

  async #useFile(file) {
    this.#data = { name: file.name, bytes: await file.arrayBuffer() };
    if (this.#tuner?.model) await this.#check().catch((e) => this.#fail(e));
    else this.#ui.datasetInfo.textContent = `${file.name} (${formatBytes(file.size)}) — checked once the model is loaded.`;
  }

  async #check() {
    this.#clearError();
    this.#setState("checking", `Checking ${this.#data.name}…`);
    const data = { name: this.#data.name, bytes: this.#data.bytes };
    const task = this.#tuner.task;
    let result = await this.#tuner.loadDataset(data, this.#options(task));
    // An encoder learns embeddings from pairs and a classifier from labels: once the check
    // tells which, check again with that task's preset (its batches and memory estimate).
    if (this.#tuner.task !== task) result = await this.#tuner.loadDataset(data, this.#options(this.#tuner.task));
    const r = result.report;
    this.#ui.datasetInfo.textContent =
      `${this.#data.name}: ${formatInt(r.examples)} examples` +
      (r.skipped ? ` (${formatInt(r.skipped)} skipped)` : "") +
      ` — ${formatInt(result.train_examples)} to train on, ${formatInt(result.validation_examples)} held out to measure the change.`;
    this.#setState("ready", "Ready: press Train.");
  }

  #progress(p) {
    const ui = this.#ui;
    if (Number.isFinite(p.total_steps) && p.total_steps > 0) {
      ui.progress.max = p.total_steps;
      ui.progress.value = p.step;
    }
    ui.step.textContent = `${p.step} / ${p.total_steps}`;
    ui.loss.textContent = `loss ${formatLoss(p.loss)}${Number.isFinite(p.eta_s) ? ` · ${formatDuration(p.eta_s)} left` : ""}`;
    this.#chart?.push(p.step, p.loss, p.total_steps);
    if (p.eval && Number.isFinite(p.eval.loss)) this.#chart?.pushEval(p.step, p.eval.loss);
    this.dispatchEvent(new CustomEvent("webtune-progress", { detail: p, bubbles: true, composed: true }));
  }

  /** Train with the preset and attribute overrides; resolves with the result (null on error). */
  async train() {
    if (!this.#tuner?.model || !this.#tuner?.dataset || this.#state === "training") return null;
    this.#clearError();
    const ui = this.#ui;
    ui.chart.hidden = false;
    this.#chart ??= createLossChart(ui.chart, { validation: true });
    this.#chart.reset(0);
    ui.table.hidden = true;
    ui.extra.hidden = true;
    ui.step.textContent = "";
    ui.loss.textContent = "";
    ui.progress.value = 0;
    this.#setState("training", "Measuring the base model, then training…");
    try {
      const result = await this.#tuner.train(this.#overrides());
      this.#result = result;
      this.#chart.flush();
      this.#showResult(result);
      await this.#refreshAdapters();
      const s = result.summary;
      this.#setState(
        "done",
        `${result.cancelled ? "Stopped" : "Done"}: ${s.steps} steps on ${s.backend === "webgpu" ? "WebGPU" : "the CPU"}${Number.isFinite(s.median_step_ms) ? `, ${(s.median_step_ms / 1000).toFixed(2)} s per step` : ""}.`,
      );
      this.dispatchEvent(new CustomEvent("webtune-done", { detail: result, bubbles: true, composed: true }));
      return result;
    } catch (e) {
      this.#fail(e);
      return null;
    }
  }

  cancel() {
    if (this.#tuner?.cancel()) this.#ui.status.textContent = "Stopping after the current step; the model is still measured…";
  }

  #showResult(result) {
    const { before: b, after: a } = result;
    const ui = this.#ui;
    const intervals = intervalsOf(result);
    const row = (label, key, fmt, lowerIsBetter, testid) => {
      const x = b?.[key];
      const y = a?.[key];
      if (!Number.isFinite(x) && !Number.isFinite(y)) return null;
      const change = Number.isFinite(x) && Number.isFinite(y) && x !== 0 ? pct(x, y) : null;
      const better = change === null || change === 0 ? "" : lowerIsBetter === change < 0 ? "true" : "false";
      return el(
        "tr",
        { "data-testid": `wt-row-${testid}` },
        el("th", { scope: "row" }, label),
        el("td", { class: "num", "data-testid": `wt-${testid}-before` }, fmt(x)),
        el("td", { class: "num", "data-testid": `wt-${testid}-after` }, fmt(y)),
        el("td", { class: "num", "data-testid": `wt-${testid}-change`, "data-better": better }, change === null ? "–" : signedPct(change)),
        el("td", { class: "num", "data-testid": `wt-${testid}-interval`, "data-outcome": intervals[key]?.change?.outcome ?? "" }, changeInterval(intervals[key]?.change, intervals[key]?.fmt)),
      );
    };
    const classification = result.task === "classification";
    const embedding = result.task === "embedding";
    const rows = embedding
      ? [row("Recall@1", "accuracy", percent, false, "recall"), row("MRR", "mrr", f1, false, "mrr"), row("Loss", "loss", formatLoss, true, "loss")]
      : classification
      ? [
          row("Accuracy", "accuracy", percent, false, "accuracy"),
          row("Macro-F1", "macro_f1", f1, false, "macro-f1"),
          row("Loss", "loss", formatLoss, true, "loss"),
        ]
      : [row("Loss", "loss", formatLoss, true, "loss"), row("Perplexity", "perplexity", (x) => (Number.isFinite(x) ? x.toFixed(2) : "–"), true, "perplexity")];
    const scored = embedding
      ? `${formatInt(a?.pairs ?? b?.pairs)} held-out pairs`
      : classification
      ? `${formatInt(a?.examples ?? b?.examples)} held-out examples`
      : `${formatInt(a?.tokens ?? b?.tokens)} held-out tokens`;
    const verdict = verdictFor(result);
    ui.table.replaceChildren(
      el("caption", { "data-testid": "wt-verdict", "data-outcome": verdict.outcome }, `Before / after, measured on ${scored} the model never trained on. ${verdict.text}`),
      el("thead", {}, el("tr", {}, el("th", {}, ""), el("th", { scope: "col" }, "Base model"), el("th", { scope: "col" }, "Fine-tuned"), el("th", { scope: "col" }, "Change"), el("th", { scope: "col" }, "95% interval"))),
      el("tbody", {}, rows.filter(Boolean)),
    );
    ui.table.hidden = false;

    const extra = [];
    if (embedding) {
      const changed = result.changed ?? [];
      if (changed.length) extra.push(el("strong", {}, `Held-out texts whose best match changed (${formatInt(result.fixed ?? 0)} fixed, ${formatInt(result.broken ?? 0)} broken, ${formatInt(result.changed_total ?? changed.length)} in all)`));
      for (const c of changed.slice(0, 5)) {
        const first = (r) => (r?.rank === 1 ? "its own partner" : `“${r?.text ?? "–"}”`);
        extra.push(el("div", { class: "sample", "data-testid": "wt-changed" }, el("q", {}, c.anchor), el("div", {}, `${c.status}: ranked first ${first(c.before)} → ${first(c.after)}`)));
      }
    } else if (classification) {
      const perClass = a?.per_class ?? [];
      if (perClass.length) {
        const beforeF1 = new Map((b?.per_class ?? []).map((c) => [c.label, c.f1]));
        extra.push(
          el(
            "table",
            { "data-testid": "wt-per-class" },
            el("caption", {}, "Per class (F1 before → after)"),
            el("tbody", {}, perClass.map((c) => el("tr", {}, el("th", { scope: "row" }, c.label), el("td", { class: "num" }, `${f1(beforeF1.get(c.label))} → ${f1(c.f1)}`), el("td", { class: "num" }, `${formatInt(c.support)} examples`)))),
          ),
        );
      }
      const changed = result.changed ?? [];
      if (changed.length) {
        const counts = Number.isFinite(result.changed_total) ? ` (${formatInt(result.fixed ?? 0)} fixed, ${formatInt(result.broken ?? 0)} broken, ${formatInt(result.changed_total)} in all)` : "";
        extra.push(el("strong", {}, `Held-out sentences the fine-tuned model labels differently${counts}`));
      }
      for (const c of changed.slice(0, 5)) {
        extra.push(
          el(
            "div",
            { class: "sample", "data-testid": "wt-changed" },
            el("q", {}, c.text),
            el("div", {}, `${c.status ? `${c.status} · ` : ""}true label ${c.label}: ${c.before?.label} (${percent(c.before?.prob)}) → ${c.after?.label} (${percent(c.after?.prob)})`),
          ),
        );
      }
    } else {
      if (result.samples?.length) extra.push(el("strong", {}, "Held-out prompts, continued by both models"));
      for (const s of (result.samples ?? []).slice(0, 3)) {
        extra.push(
          el(
            "div",
            { class: "sample", "data-testid": "wt-sample" },
            el("div", {}, el("strong", {}, "Prompt: "), el("q", {}, s.prompt)),
            el("div", {}, el("strong", {}, "Base model: "), s.before),
            el("div", {}, el("strong", {}, "Fine-tuned: "), s.after),
          ),
        );
      }
    }
    ui.extra.replaceChildren(...extra);
    ui.extra.hidden = extra.length === 0;
    // The box continues a prompt: nothing an encoder does.
    ui.try.hidden = classification || embedding;
  }

  /** Refill the adapter picker from the library (shown once it holds an adapter of this model). */
  async #refreshAdapters() {
    const ui = this.#ui;
    let list;
    try {
      list = (await this.#tuner.adapters()).filter((m) => m.fits);
    } catch {
      // A library that cannot be read (no OPFS) only hides the picker.
      ui.adapters.hidden = true;
      return;
    }
    ui.adapter.replaceChildren(el("option", { value: "" }, this.#tuner.tuned ? "None (the model trained here)" : "None (the base model)"), ...list.map((m) => el("option", { value: m.name }, m.name)));
    ui.adapter.value = this.#tuner.adapter ?? "";
    ui.adapters.hidden = list.length === 0;
    ui.adapterLoad.hidden = false;
  }

  /**
   * Keep a PEFT adapter for the loaded model (File objects, or [{name, bytes}]) and use it.
   * Resolves to its description, or null when it was refused (the error is shown).
   */
  async loadAdapter(files, options = {}) {
    if (!this.#tuner?.model) return null;
    this.#clearError();
    this.#setState("loading", "Loading the adapter…");
    try {
      const meta = await this.#tuner.loadAdapter(files, options);
      await this.#refreshAdapters();
      await this.useAdapter(meta.name);
      return meta;
    } catch (e) {
      this.#fail(e);
      return null;
    }
  }

  /** Answer with a kept adapter (null: none), switching without reloading the model. */
  async useAdapter(name) {
    if (!this.#tuner?.model) return null;
    this.#clearError();
    try {
      const s = await this.#tuner.useAdapter(name);
      this.#ui.adapter.value = name ?? "";
      this.#ui.try.hidden = false;
      this.#setState("loaded", name === null ? "No adapter in use." : `Adapter “${name}” in use (switched in ${s.switch_ms.toFixed(1)} ms).`);
      return s;
    } catch (e) {
      this.#ui.adapter.value = this.#tuner.adapter ?? "";
      this.#fail(e);
      return null;
    }
  }

  async #tryPrompt() {
    const prompt = this.#ui.prompt.value.trim();
    if (!prompt || !(this.#tuner?.tuned || this.#tuner?.adapter)) return;
    this.#clearError();
    this.#setState("generating", "Continuing the prompt with both models…");
    const outputs = [];
    try {
      const adapter = this.#tuner.adapter;
      for (const which of ["base", adapter ? `adapter:${adapter}` : "tuned"]) {
        const r = await this.#tuner.generate(prompt, { model: which, max_new_tokens: 32, temperature: 0.8, top_p: 0.95, seed: 1 });
        const label = which === "base" ? "Base model: " : adapter ? `Adapter “${adapter}”: ` : "Fine-tuned: ";
        outputs.push(el("p", { class: "out", "data-testid": `wt-output-${which === "base" ? "base" : "tuned"}` }, el("strong", {}, label), r.text ?? r.generated_ids.join(" ")));
        this.#ui.outputs.replaceChildren(...outputs);
      }
      this.#setState("done", "Done.");
    } catch (e) {
      this.#fail(e);
    }
  }
}

if (!customElements.get("webtune-trainer")) customElements.define("webtune-trainer", WebtuneTrainer);
