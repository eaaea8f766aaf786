// "Model" panel: load a model from this computer (files, a folder, or a drop of either) or from
// the Hugging Face Hub (repo id or URL, endpoint, revision), with per-file download progress,
// and a table describing the loaded model.

import { el, formatBytes, formatInt, formatMs } from "../lib/format.js";
import { entriesFromDrop, entriesFromFileList } from "../lib/model-files.js";

/** 30720 → "30,720 (30.7 K)"; 124439808 → "124,439,808 (124.4 M)". */
export function formatParameters(n) {
  if (!Number.isFinite(n)) return "–";
  const scaled = n >= 1e9 ? `${(n / 1e9).toFixed(2)} B` : n >= 1e6 ? `${(n / 1e6).toFixed(1)} M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} K` : null;
  return scaled ? `${formatInt(n)} (${scaled})` : formatInt(n);
}

/**
 * @param {HTMLElement} section  the panel's <section>
 * @param {object} options
 * @param {string} options.endpoint      initial Hub endpoint
 * @param {(entries: {path: string, file: File}[]) => void} options.onFiles  files picked or dropped
 * @param {(repo: string, opts: {endpoint: string, revision: string}) => void} options.onHub
 * @param {(id: string) => void} options.onDefault  load a ready-made model (its id in models/index.json)
 * @param {() => void} options.onCancel        stop a download
 * @param {() => void} options.onClearCache    forget downloaded models
 * @param {(base: string) => void} options.onDeleteCached  forget one cached repo (its URL before /resolve/)
 * @param {(error: object) => void} options.onError
 */
export function createModelPanel(section, { endpoint, onFiles, onHub, onDefault, onCancel, onClearCache, onDeleteCached, onError }) {
  // Models served with the page (filled by setDefaults).
  const defaultSelect = el("select", { id: "default-model", "data-testid": "default-model" });
  const defaultLoad = el("button", { type: "submit", class: "primary", "data-testid": "load-default-model" }, "Load");
  const defaultForm = el(
    "form",
    { class: "default-form", novalidate: true, hidden: true, "aria-label": "Load a model served with this page" },
    el("div", { class: "field wide" }, el("label", { for: "default-model" }, "Ready-made model"), defaultSelect),
    el("div", { class: "buttons" }, defaultLoad),
  );
  defaultForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (defaultSelect.value) onDefault(defaultSelect.value);
  });

  // Local files.
  const filesInput = el("input", { id: "model-files", type: "file", multiple: true, "data-testid": "model-files", "aria-describedby": "model-drop-help" });
  const folderInput = el("input", { id: "model-folder", type: "file", webkitdirectory: true, "data-testid": "model-folder", "aria-describedby": "model-drop-help" });
  for (const input of [filesInput, folderInput]) {
    input.addEventListener("change", () => {
      const entries = entriesFromFileList(input.files ?? []);
      input.value = ""; // choosing the same files again must fire "change" again
      if (entries.length) onFiles(entries);
    });
  }
  const drop = el(
    "div",
    { class: "dropzone", "data-testid": "model-drop" },
    el("div", { class: "field" }, el("label", { for: "model-files" }, "Model files"), filesInput),
    el("div", { class: "field" }, el("label", { for: "model-folder" }, "Model folder"), folderInput),
    el(
      "p",
      { id: "model-drop-help", class: "help" },
      "…or drop files or a folder here: config.json, the .safetensors weights (all shards and the index), tokenizer.json — " +
        "or a single .gguf file. " +
        "They are read in this tab and never uploaded.",
    ),
  );
  drop.addEventListener("dragover", (event) => {
    if (!event.dataTransfer?.types?.includes("Files")) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    drop.dataset.over = "";
  });
  drop.addEventListener("dragleave", (event) => {
    if (!drop.contains(event.relatedTarget)) delete drop.dataset.over;
  });
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    delete drop.dataset.over;
    // Entries must be taken before the handler returns.
    entriesFromDrop(event.dataTransfer)
      .then((entries) => {
        if (entries.length) onFiles(entries);
      })
      .catch((e) => onError({ code: "model.missing_file", message: `Could not read the dropped files: ${e?.message ?? e}` }));
  });

  // Hub.
  const repo = el("input", {
    id: "hub-repo",
    type: "text",
    name: "repo",
    placeholder: "owner/name or https://huggingface.co/owner/name",
    autocomplete: "off",
    spellcheck: "false",
    "data-testid": "hub-repo",
  });
  const endpointField = el("input", { id: "hub-endpoint", type: "url", name: "endpoint", value: endpoint, "data-testid": "hub-endpoint" });
  const revision = el("input", { id: "hub-revision", type: "text", name: "revision", value: "main", "data-testid": "hub-revision" });
  const load = el("button", { type: "submit", class: "primary", "data-testid": "load-model" }, "Load");
  const stop = el("button", { type: "button", "data-testid": "cancel-load", disabled: true, onclick: () => onCancel() }, "Stop");
  const clear = el(
    "button",
    { type: "button", "data-testid": "clear-model-cache", title: "Delete the model files this site keeps in the browser", onclick: () => onClearCache() },
    "Forget downloads",
  );
  const hubForm = el(
    "form",
    { class: "hub-form", novalidate: true, "aria-label": "Load from the Hugging Face Hub" },
    el("div", { class: "field wide" }, el("label", { for: "hub-repo" }, "Hub repo id or URL"), repo),
    el("div", { class: "field wide" }, el("label", { for: "hub-endpoint" }, "Hub endpoint"), endpointField),
    el("div", { class: "field" }, el("label", { for: "hub-revision" }, "Revision"), revision),
    el("div", { class: "buttons" }, load, stop, clear),
  );
  hubForm.addEventListener("submit", (event) => {
    event.preventDefault();
    onHub(repo.value.trim(), { endpoint: endpointField.value.trim(), revision: revision.value.trim() || "main" });
  });

  // The base's precision in memory, chosen before loading: 8 or 4 bits keeps the linear
  // projections quantized as they are read (QLoRA), so a larger model fits the tab.
  const precision = el(
    "select",
    { id: "model-precision", "data-testid": "model-precision", "aria-describedby": "model-precision-help" },
    el("option", { value: "f32" }, "f32 (full precision; any method)"),
    el("option", { value: "q8" }, "8-bit projections (QLoRA: LoRA only, about ¼ of the memory)"),
    el("option", { value: "q4" }, "4-bit projections (QLoRA: LoRA only, about ⅙ of the memory; less precise)"),
  );
  const precisionField = el(
    "div",
    { class: "field wide" },
    el("label", { for: "model-precision" }, "Base weights in memory"),
    precision,
    el(
      "p",
      { id: "model-precision-help", class: "help" },
      "Applies to the next load. Quantized projections cannot be fully fine-tuned; the export is f32 either way.",
    ),
  );

  const status = el("p", { class: "model-status", role: "status", "aria-live": "polite", "data-testid": "model-status" }, "No model loaded.");
  const downloads = el("ul", { class: "downloads", "data-testid": "downloads", "aria-label": "Downloads" });
  const info = el("table", { class: "model-info", "data-testid": "model-info", hidden: true });
  // What the browser keeps from earlier downloads (lib/hub.js listCachedModels).
  const cacheList = el("ul", { class: "cached-models", "data-testid": "cached-models", "aria-labelledby": "model-cache-title" });
  const cacheTotal = el("p", { class: "help", "data-testid": "cache-total" }, "Checking the browser's model cache…");
  const cacheBox = el("details", { class: "model-cache", "data-testid": "model-cache", open: true }, el("summary", { id: "model-cache-title" }, "Downloaded models kept in this browser"), cacheTotal, cacheList);

  section.append(
    el("h2", { id: "model-title" }, "Model"),
    precisionField,
    defaultForm,
    drop,
    el("div", { class: "or" }, "or from the Hub"),
    hubForm,
    status,
    downloads,
    info,
    cacheBox,
  );
  let cacheBusy = false;

  const rows = new Map(); // file → {row, bar, text}
  let frame = 0;
  const latest = new Map();

  function renderDownloads() {
    frame = 0;
    for (const [file, p] of latest) {
      let entry = rows.get(file);
      if (!entry) {
        const bar = el("progress", { max: 1, value: 0, "aria-label": `Download of ${file}` });
        const text = el("span", { class: "download-text", "data-testid": "download-text" });
        const row = el("li", { class: "download", "data-testid": "download", "data-file": file }, el("code", {}, file), bar, text);
        downloads.append(row);
        entry = { row, bar, text };
        rows.set(file, entry);
      }
      const { row, bar, text } = entry;
      const state = p.missing ? "missing" : p.cached ? "cached" : p.done ? "done" : "downloading";
      row.dataset.state = state;
      if (p.missing) {
        bar.hidden = true;
        text.textContent = p.cached ? "not in the repo (remembered)" : "not in the repo";
        continue;
      }
      if (Number.isFinite(p.total) && p.total > 0) {
        bar.max = p.total;
        bar.value = Math.min(p.loaded, p.total);
      } else if (p.done) {
        bar.max = 1;
        bar.value = 1;
      } else {
        bar.removeAttribute("value"); // indeterminate
      }
      const size = Number.isFinite(p.total) && p.total > 0 ? `${formatBytes(p.loaded)} / ${formatBytes(p.total)}` : formatBytes(p.loaded);
      text.textContent = p.cached ? `${formatBytes(p.loaded)}, from the browser cache` : p.done ? `${formatBytes(p.loaded)}, downloaded` : size;
    }
    latest.clear();
  }

  function fact(label, value, testid) {
    return el("tr", {}, el("th", { scope: "row" }, label), el("td", { "data-testid": testid }, value));
  }

  return {
    /** The precision chosen for the next load: "f32", "q8" or "q4". */
    precision() {
      return precision.value;
    },
    /** canLoad: the worker is idle; loading: a load is running (Stop enabled). */
    setMode({ canLoad, loading }) {
      precision.disabled = !canLoad;
      load.disabled = !canLoad;
      defaultLoad.disabled = !canLoad;
      filesInput.disabled = !canLoad;
      folderInput.disabled = !canLoad;
      stop.disabled = !loading;
      clear.disabled = loading;
      this.setCacheBusy(loading);
      section.dataset.mode = loading ? "loading" : canLoad ? "idle" : "busy";
    },
    /** The models served with the page: [{id, name, files: [{name, bytes}], ...}]. */
    setDefaults(models) {
      defaultSelect.replaceChildren(
        ...models.map((m) => {
          const bytes = (m.files ?? []).reduce((sum, f) => sum + (f.bytes ?? 0), 0);
          return el("option", { value: m.id }, `${m.name}${bytes ? ` — ${formatBytes(bytes)}` : ""}`);
        }),
      );
      defaultForm.hidden = models.length === 0;
    },
    /** A load begins; `what` says what is loaded. */
    begin(what) {
      rows.clear();
      latest.clear();
      downloads.replaceChildren();
      status.dataset.state = "loading";
      status.textContent = `Loading ${what}…`;
    },
    /** One download message. Rows are redrawn at most once per frame. */
    download(message) {
      latest.set(message.file, message);
      if (!message.done && !message.cached) status.textContent = `Downloading ${message.file}…`;
      if (frame === 0) frame = requestAnimationFrame(renderDownloads);
    },
    /** Reading the bytes into the model (after any download). */
    building() {
      status.textContent = "Building the model…";
    },
    /** The model is loaded. */
    showModel(modelInfo, source, timing) {
      renderDownloads();
      const from =
        source?.kind === "hub" ? `${source.repo}@${source.revision}${source.cached ? " (from the browser cache)" : ""}` : `${source?.files?.length ?? 0} local files`;
      const ms = timing ? timing.download_ms + timing.load_ms : NaN;
      status.dataset.state = "loaded";
      status.textContent = `Loaded ${modelInfo.architecture} from ${from}${Number.isFinite(ms) ? ` in ${formatMs(ms)}` : ""}.`;
      info.replaceChildren(
        el("caption", {}, "Loaded model"),
        el(
          "tbody",
          {},
          fact("Architecture", modelInfo.architecture, "model-architecture"),
          fact("Parameters", formatParameters(modelInfo.parameters), "model-parameters"),
          fact("Layers", formatInt(modelInfo.layers), "model-layers"),
          fact("Hidden size", formatInt(modelInfo.hidden_size), "model-hidden-size"),
          fact("Attention heads", formatInt(modelInfo.heads), "model-heads"),
          fact("Vocabulary", formatInt(modelInfo.vocab_size), "model-vocab"),
          fact("Context length", formatInt(modelInfo.max_positions), "model-context"),
          fact("Weights dtype", (modelInfo.dtype ?? []).join(", ") || "–", "model-dtype"),
          // Weights are computed in f32 whatever their stored dtype (but projections loaded
          // quantized); activations come on top.
          modelInfo.compact
            ? fact(
                "Memory (weights)",
                `≈ ${formatBytes((modelInfo.parameters - modelInfo.compact.values) * 4 + modelInfo.compact.bytes)}, projections in ${modelInfo.compact.quant} (f32: ${formatBytes(modelInfo.parameters * 4)})`,
                "model-memory",
              )
            : fact("Memory (weights, f32)", `≈ ${formatBytes(modelInfo.parameters * 4)}`, "model-memory"),
          fact("Tokenizer", modelInfo.has_tokenizer ? "yes" : "no (prompts are token ids)", "model-tokenizer"),
          fact("Source", from, "model-source"),
        ),
      );
      info.hidden = false;
    },
    /** The load failed; `current` is the model still loaded (or null). */
    fail(error, current) {
      renderDownloads();
      status.dataset.state = "error";
      status.textContent =
        `Loading failed (${error.code}).` + (current ? ` The ${current.architecture} model loaded before is still in use.` : " No model is loaded.");
    },
    /** No model (e.g. the worker restarted and lost it). */
    clear(message = "No model loaded.") {
      info.hidden = true;
      info.replaceChildren();
      status.dataset.state = "none";
      status.textContent = message;
    },
    /** The cached repos: [{base, repo, revisions, files: [{file, bytes}], bytes}] (lib/hub.js). */
    setCache(repos) {
      const total = repos.reduce((sum, r) => sum + r.bytes, 0);
      cacheTotal.textContent = repos.length
        ? `${repos.length} model${repos.length === 1 ? "" : "s"}, ${formatBytes(total)} in all. Loading one of them again downloads nothing.`
        : "None: models downloaded from the Hub (or the ready-made ones) are kept here for the next visit.";
      cacheList.replaceChildren(
        ...repos.map((r) => {
          const remove = el(
            "button",
            { type: "button", "data-testid": "delete-cached-model", title: `Delete the cached files of ${r.base}`, "aria-label": `Delete ${r.repo} from the cache`, disabled: cacheBusy, onclick: () => onDeleteCached(r.base) },
            "Delete",
          );
          const files = r.files.length;
          return el(
            "li",
            { class: "cached-model", "data-testid": "cached-model", "data-base": r.base, "data-repo": r.repo, "data-bytes": String(r.bytes), "data-files": String(files) },
            el("span", { class: "cached-name", title: r.base }, r.repo, r.revisions.length ? el("small", {}, ` @${r.revisions.join(", ")}`) : null),
            el("span", { class: "cached-size", "data-testid": "cached-size" }, `${formatBytes(r.bytes)} · ${files} file${files === 1 ? "" : "s"}`),
            remove,
          );
        }),
      );
    },
    /** Disable the delete buttons while a load runs (it may be writing to the cache). */
    setCacheBusy(busy) {
      cacheBusy = busy;
      for (const b of cacheList.querySelectorAll("button")) b.disabled = busy;
    },
    /** A short note in the status line (e.g. after clearing the cache). */
    note(text) {
      status.textContent = text;
    },
  };
}
