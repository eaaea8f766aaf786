// "Adapters" panel: the adapter library kept in this browser (every LoRA adapter trained here or
// loaded from PEFT files), each with its base, shape, dataset, date and before/after scores;
// choose one to generate with it (the base stays loaded: switching costs milliseconds), rename,
// delete, download its PEFT files, or load one from files. Below it, the compare view: the same
// prompt continued greedily (for an encoder: the same text classified, or two texts' similarity
// when the checked data are sentence pairs) by the base and up to three adapters side by side,
// each with its held-out loss (accuracy, recall@1) on the checked dataset.

import { el, formatInt, formatLoss, formatMs, formatPercent } from "../lib/format.js";

export const MAX_COMPARED = 3;

/**
 * @param {HTMLElement} section
 * @param {{onLoad: (files: File[], name: string | null) => void, onLoadUrl: (source: string, name: string | null) => void, onUse: (name: string | null) => void, onContinue: (name: string) => void,
 *   onRename: (name: string, to: string) => void, onDelete: (name: string) => void,
 *   onDownload: (name: string) => void, onCompare: (prompt: string, models: string[], maxTokens: number) => void}} handlers
 */
export function createAdaptersPanel(section, { onLoad, onLoadUrl, onUse, onContinue, onRename, onDelete, onDownload, onCompare }) {
  const files = el("input", { type: "file", id: "adapter-files", multiple: true, accept: ".json,.safetensors", "data-testid": "adapter-files" });
  const name = el("input", { type: "text", id: "adapter-name", "data-testid": "adapter-name", placeholder: "optional" });
  const load = el("button", { type: "button", "data-testid": "adapter-load", disabled: true }, "Load adapter");
  files.addEventListener("change", () => syncButtons());
  // A whole adapter folder (as save_pretrained writes it): its two files are picked from it.
  const folder = el("input", { type: "file", id: "adapter-folder", webkitdirectory: true, "data-testid": "adapter-folder" });
  folder.addEventListener("change", () => {
    onLoad(Array.from(folder.files ?? []), name.value.trim() || null);
    folder.value = "";
    name.value = "";
  });
  const url = el("input", { type: "text", id: "adapter-url", "data-testid": "adapter-url", placeholder: "owner/name or https://…/folder/" });
  const loadUrl = el("button", { type: "button", "data-testid": "adapter-url-load", disabled: true }, "Download adapter");
  url.addEventListener("input", () => syncButtons());
  loadUrl.addEventListener("click", () => {
    onLoadUrl(url.value.trim(), name.value.trim() || null);
    url.value = "";
    name.value = "";
    syncButtons();
  });
  load.addEventListener("click", () => {
    onLoad(Array.from(files.files ?? []), name.value.trim() || null);
    files.value = "";
    name.value = "";
    syncButtons();
  });
  const switched = el("p", { class: "result", "data-testid": "adapter-switch" });
  const useBase = el("button", { type: "button", "data-testid": "adapter-use-base", disabled: true, onclick: () => onUse(null) }, "Use the base model");
  const list = el("div", { class: "adapter-list", "data-testid": "adapter-list" });
  const empty = el("p", { class: "help", "data-testid": "adapter-empty" }, "No adapter is kept in this browser yet: fine-tune with LoRA, or load a PEFT adapter.");

  const comparePrompt = el("textarea", { id: "compare-prompt", rows: 2, "data-testid": "compare-prompt" });
  const comparePromptLabel = el("label", { for: "compare-prompt" }, "Text to continue");
  const compareTokens = el("input", { id: "compare-tokens", type: "number", min: 1, step: 1, value: 24, "data-testid": "compare-tokens" });
  const compareTokensField = el("div", { class: "fields" }, el("div", { class: "field" }, el("label", { for: "compare-tokens" }, "New tokens"), compareTokens));
  const compareHelp = el("p", { class: "help" });
  const compareChoices = el("fieldset", { class: "choice", "data-testid": "compare-models" });
  const compareRun = el("button", { type: "button", class: "primary", "data-testid": "compare-run", disabled: true }, "Compare");
  const compareOut = el("div", { class: "compare-grid", "data-testid": "compare-results" });
  compareRun.addEventListener("click", () => {
    const models = Array.from(compareChoices.querySelectorAll("input:checked"), (i) => /** @type {HTMLInputElement} */ (i).value);
    const tokens = Math.max(1, Math.trunc(compareTokens.valueAsNumber) || 24);
    onCompare(comparePrompt.value, models, tokens);
  });
  compareChoices.addEventListener("change", () => {
    const adapters = compareChoices.querySelectorAll("input[data-kind=adapter]");
    const chosen = Array.from(adapters).filter((i) => /** @type {HTMLInputElement} */ (i).checked).length;
    for (const i of adapters) /** @type {HTMLInputElement} */ (i).disabled = !/** @type {HTMLInputElement} */ (i).checked && chosen >= MAX_COMPARED;
    syncButtons();
  });

  section.append(
    el("h2", { id: "adapters-title" }, "Adapters"),
    el("p", { class: "help" }, "Kept in this browser (nothing is uploaded). Use one to generate with it: the base model stays loaded, so switching is instant."),
    empty,
    list,
    el("div", { class: "buttons" }, useBase),
    switched,
    el(
      "details",
      { class: "adapter-load-box" },
      el("summary", {}, "Load a PEFT adapter"),
      el("div", { class: "fields" }, el("div", { class: "field wide" }, el("label", { for: "adapter-files" }, "adapter_config.json and adapter_model.safetensors"), files), el("div", { class: "field" }, el("label", { for: "adapter-name" }, "Name"), name)),
      el("div", { class: "buttons" }, load),
      el("div", { class: "fields" }, el("div", { class: "field wide" }, el("label", { for: "adapter-folder" }, "Or its folder"), folder)),
      el("div", { class: "fields" }, el("div", { class: "field wide" }, el("label", { for: "adapter-url" }, "Or a Hub repo or URL (from the host the model came from)"), url)),
      el("div", { class: "buttons" }, loadUrl),
    ),
    el(
      "details",
      { class: "compare-box", "data-testid": "compare-box" },
      el("summary", {}, "Compare the base and adapters"),
      el("div", { class: "field wide" }, comparePromptLabel, comparePrompt),
      compareTokensField,
      compareHelp,
      compareChoices,
      el("div", { class: "buttons" }, compareRun),
      compareOut,
    ),
  );

  let adapters = [];
  let canAct = false;
  let active = null;
  // What the compare view asks: "causal_lm" (adapters continue text), or for an encoder
  // (BERT/MiniLM) "classification" (they classify) or "embedding" (they embed sentences).
  let task = "causal_lm";
  const HELP = {
    causal_lm: `Greedy continuations of the base and up to ${MAX_COMPARED} adapters; with a checked dataset, each one's held-out loss too.`,
    classification: `The class the base and up to ${MAX_COMPARED} adapters give this text; with a checked dataset, each one's held-out accuracy too.`,
    embedding: `How similar the base and up to ${MAX_COMPARED} sentence-embedding adapters find two texts (cosine); with a checked dataset of pairs, each one's held-out recall@1 and MRR too.`,
  };

  function syncTask() {
    comparePromptLabel.textContent = { causal_lm: "Text to continue", classification: "Text to classify", embedding: "Two texts, one per line" }[task];
    compareTokensField.hidden = task !== "causal_lm";
    compareHelp.textContent = HELP[task];
  }
  syncTask();

  /** Whether the compare view offers adapter `m`: an encoder's adapters answer only what they were trained for. */
  function comparable(m) {
    if (!m.fits) return false;
    if (task === "embedding") return m.task === "embedding";
    return task === "classification" ? m.task !== "embedding" : true;
  }

  function syncButtons() {
    load.disabled = !canAct || (files.files?.length ?? 0) === 0;
    loadUrl.disabled = !canAct || url.value.trim() === "";
    folder.disabled = !canAct;
    useBase.disabled = !canAct || active === null;
    compareRun.disabled = !canAct || compareChoices.querySelectorAll("input:checked").length === 0;
    // Library chores run beside other work; Use needs the worker's turn and an adapter of this model.
    for (const b of list.querySelectorAll("button")) {
      const button = /** @type {HTMLButtonElement} */ (b);
      button.disabled = (!canAct && button.dataset.quiet !== "true") || button.dataset.unfit === "true";
    }
  }

  function metrics(m) {
    if (m.task === "embedding") {
      const b = m.metrics?.before;
      const a = m.metrics?.after;
      if (Number.isFinite(b?.accuracy) && Number.isFinite(a?.accuracy)) return `held-out recall@1 ${formatPercent(b.accuracy)} → ${formatPercent(a.accuracy)}, MRR ${b.mrr?.toFixed(3)} → ${a.mrr?.toFixed(3)}`;
    }
    if (m.task === "classification") {
      const b = m.metrics?.before?.accuracy;
      const a = m.metrics?.after?.accuracy;
      if (Number.isFinite(b) && Number.isFinite(a)) return `held-out accuracy ${formatPercent(b)} → ${formatPercent(a)}`;
    }
    const b = m.metrics?.before?.loss;
    const a = m.metrics?.after?.loss;
    if (Number.isFinite(b) && Number.isFinite(a)) return `held-out loss ${formatLoss(b)} → ${formatLoss(a)}`;
    return m.source === "trained" ? "no held-out score" : `loaded from ${m.source === "url" ? "a URL" : "files"}`;
  }

  function row(m) {
    const rename = el("input", { type: "text", value: m.name, "aria-label": `New name for ${m.name}`, "data-testid": "adapter-rename-name" });
    const details = [
      `r ${m.lora?.r ?? "?"}, alpha ${m.lora?.lora_alpha ?? "?"}${m.lora?.target_modules?.length ? ` on ${m.lora.target_modules.join(", ")}` : ""}`,
      Array.isArray(m.labels) ? `classifies ${m.labels.join(" / ")}` : null,
      m.task === "embedding" ? `embeds sentences${m.pooling ? ` (${m.pooling} pooling)` : ""}` : null,
      m.dataset ? `${m.dataset.name} (${formatInt(m.dataset.size)} bytes)` : null,
      m.steps != null ? `${m.steps} steps${m.cancelled ? " (stopped early)" : ""}` : null,
      new Date(m.created_at).toLocaleString(),
    ].filter(Boolean);
    const r = el(
      "div",
      { class: "adapter-row", "data-testid": "adapter-row", "data-name": m.name, "data-fits": String(Boolean(m.fits)), "data-active": String(active === m.name) },
      el("p", { class: "adapter-name" }, el("strong", { "data-testid": "adapter-row-name" }, m.name), active === m.name ? " · in use" : "", m.fits ? "" : ` · for ${m.base?.name ?? "another model"}`),
      el("p", { class: "help", "data-testid": "adapter-row-details" }, `${metrics(m)} · ${details.join(" · ")}`),
      el(
        "div",
        { class: "buttons" },
        el("button", { type: "button", "data-testid": "adapter-use", "data-unfit": String(!m.fits), onclick: () => onUse(m.name) }, "Use"),
        // An encoder's adapter (a classifier's, an embedder's) cannot be trained further: the
        // wasm job continues only a causal LM's factors.
        m.task === "classification" || m.task === "embedding" ? null : el("button", { type: "button", "data-testid": "adapter-continue", "data-quiet": "true", "data-unfit": String(!m.fits), title: "Start the next fine-tuning run from this adapter", onclick: () => onContinue(m.name) }, "Continue training"),
        el("button", { type: "button", "data-testid": "adapter-download", "data-quiet": "true", onclick: () => onDownload(m.name) }, "Download"),
        rename,
        el("button", { type: "button", "data-testid": "adapter-rename", "data-quiet": "true", onclick: () => rename.value.trim() && rename.value.trim() !== m.name && onRename(m.name, rename.value.trim()) }, "Rename"),
        el("button", { type: "button", "data-testid": "adapter-delete", "data-quiet": "true", onclick: () => onDelete(m.name) }, "Delete"),
      ),
    );
    return r;
  }

  function render() {
    list.replaceChildren(...adapters.map(row));
    empty.hidden = adapters.length > 0;
    const keep = new Set(Array.from(compareChoices.querySelectorAll("input:checked"), (i) => /** @type {HTMLInputElement} */ (i).value));
    const box = (value, label, kind) =>
      el(
        "span",
        { class: "field checkbox" },
        el("input", { type: "checkbox", id: `compare-${value}`, value, "data-kind": kind, "data-testid": "compare-model", checked: keep.has(value) || (kind === "base" && keep.size === 0) }),
        el("label", { for: `compare-${value}` }, label),
      );
    compareChoices.replaceChildren(
      el("legend", {}, "Models"),
      box("base", "Base model", "base"),
      ...adapters.filter(comparable).map((m) => box(`adapter:${m.name}`, m.name, "adapter")),
    );
    // Say why an encoder's other adapters are missing from the choice.
    const other = adapters.filter((m) => m.fits && !comparable(m)).length;
    compareHelp.textContent =
      HELP[task] +
      (other === 0 ? "" : task === "embedding" ? ` ${other} classifier adapter(s) are compared once a labelled dataset is checked.` : ` ${other} sentence-embedding adapter(s) are compared once a dataset of sentence pairs is checked.`);
    compareChoices.dispatchEvent(new Event("change"));
    syncButtons();
  }

  function similarityCell(r) {
    const scored = Number.isFinite(r.accuracy) ? `held-out recall@1 ${formatPercent(r.accuracy)}, MRR ${r.mrr?.toFixed(3)}` : r.similarity == null && !r.error ? "" : "no dataset of pairs checked: no held-out recall";
    return el(
      "div",
      { class: "compare-cell", "data-testid": "compare-cell", "data-model": r.model },
      el("h3", {}, r.label),
      el("p", { class: "generated", "data-testid": "compare-text", "data-similarity": r.similarity ?? "" }, r.error ? `Failed: ${r.error.message}` : Number.isFinite(r.similarity) ? `cosine ${r.similarity.toFixed(3)}` : "…"),
      el("p", { class: "help", "data-testid": "compare-loss" }, scored),
    );
  }

  function classCell(r) {
    const p = r.predicted;
    const prob = p ? p.probs?.[p.labels?.indexOf(p.label) ?? -1] : null;
    return el(
      "div",
      { class: "compare-cell", "data-testid": "compare-cell", "data-model": r.model },
      el("h3", {}, r.label),
      el("p", { class: "generated", "data-testid": "compare-text", "data-label": p?.label ?? "" }, r.error ? `Failed: ${r.error.message}` : p ? `${p.label}${Number.isFinite(prob) ? ` (${formatPercent(prob)})` : ""}` : "…"),
      el("p", { class: "help", "data-testid": "compare-loss" }, Number.isFinite(r.accuracy) ? `held-out accuracy ${formatPercent(r.accuracy)} (loss ${formatLoss(r.loss)})` : p == null && !r.error ? "" : "no dataset checked: no held-out accuracy"),
    );
  }

  return {
    /** The library as the worker lists it. */
    show(list) {
      adapters = list ?? [];
      if (active !== null && !adapters.some((m) => m.name === active && m.fits)) active = null;
      render();
    },
    /** The adapter generation now uses (null: none) and what switching to it cost. */
    switched(name, timing) {
      active = name;
      switched.textContent = timing ? `${name === null ? "Base model" : `Adapter “${name}”`} in use: switched in ${formatMs(timing.switch_ms)}${timing.attached_before ? " (already attached)" : ` (attaching its factors: ${formatMs(timing.attach_ms)})`}.` : "";
      render();
    },
    setMode({ canAct: can }) {
      canAct = can;
      syncButtons();
    },
    /**
     * What the compare view asks: "causal_lm" (continue text), "classification" (classify a
     * text) or "embedding" (two texts' similarity).
     */
    setTask(next) {
      const chosen = next === "embedding" || next === "classification" ? next : "causal_lm";
      if (chosen === task) return;
      task = chosen;
      syncTask();
      render();
    },
    /**
     * Compare results (a cell may still be pending): [{model, label, text, error, loss,
     * perplexity}] for generation, [{model, label, predicted: {label, probs, labels}, error,
     * accuracy, loss}] for classification, [{model, label, similarity, error, accuracy, mrr}]
     * for sentence embeddings.
     */
    compared(rows) {
      if (task === "classification") {
        compareOut.replaceChildren(...rows.map(classCell));
        return;
      }
      if (task === "embedding") {
        compareOut.replaceChildren(...rows.map(similarityCell));
        return;
      }
      compareOut.replaceChildren(
        ...rows.map((r) =>
          el(
            "div",
            { class: "compare-cell", "data-testid": "compare-cell", "data-model": r.model },
            el("h3", {}, r.label),
            el("p", { class: "generated", "data-testid": "compare-text" }, r.error ? `Failed: ${r.error.message}` : r.text ?? "…"),
            el("p", { class: "help", "data-testid": "compare-loss" }, Number.isFinite(r.loss) ? `held-out loss ${formatLoss(r.loss)} (perplexity ${r.perplexity?.toFixed(2)})` : r.text == null ? "" : "no dataset checked: no held-out loss"),
          ),
        ),
      );
    },
  };
}
