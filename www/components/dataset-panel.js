// "Dataset" panel: choose a file (.jsonl, .json, .csv, .tsv, .txt) or a sample dataset, choose
// what to do with bad records, the sequence length and the validation share; then the report
// (format, detected schema, the task it makes for the loaded model, examples kept and skipped
// with reasons, issues with file:line, labels, token lengths) and a preview of the first training
// examples with the tokens that count in the loss highlighted (a pair's two texts side by side).
// The file is read in this tab and never leaves the machine.

import { el, formatBytes, formatHeldOut, formatInt } from "../lib/format.js";

const FORMAT_NAMES = { jsonl: "JSON Lines", json: "JSON array", csv: "CSV", tsv: "TSV", text: "plain text" };
const SCHEMA_NAMES = {
  text: "plain text (causal LM)",
  prompt_completion: "prompt → completion",
  alpaca: "Alpaca instruction",
  chat: "chat messages",
  classification: "text → label",
  labeled: "text → label",
  sentence_pairs: "sentence pairs",
};
// What the loaded model learns from the file: an encoder's task follows the data.
const TASK_NAMES = {
  causal: "text → language model (predicts the next tokens)",
  classification: "text → label (a classifier)",
  embedding: "sentence pairs → embeddings (each text learns to find its partner)",
};

/**
 * @param {HTMLElement} section  the panel's <section>
 * @param {object} options
 * @param {{file: string, title: string}[]} options.samples
 * @param {(file: File) => void} options.onFile        a file was chosen
 * @param {(file: string) => void} options.onSample    a sample was chosen
 * @param {() => void} options.onInspect               "Check again" (options changed)
 * @param {(file: File | null) => void} [options.onValidationFile]  a separate validation file was chosen (null: removed)
 */
export function createDatasetPanel(section, { samples, onFile, onSample, onInspect, onValidationFile = () => {} }) {
  const fileInput = el("input", {
    id: "dataset-file",
    type: "file",
    accept: ".jsonl,.ndjson,.json,.csv,.tsv,.txt",
    "data-testid": "dataset-file",
    "aria-describedby": "dataset-privacy",
  });
  fileInput.addEventListener("change", () => {
    const file = fileInput.files?.[0];
    fileInput.value = "";
    if (file) onFile(file);
  });

  const sampleSelect = el(
    "select",
    { id: "dataset-sample", "data-testid": "dataset-sample" },
    el("option", { value: "" }, "Choose a sample…"),
    samples.map((s) => el("option", { value: s.file }, s.title)),
  );
  const sampleButton = el("button", { type: "button", "data-testid": "use-sample", disabled: true }, "Use sample");
  sampleSelect.addEventListener("change", () => (sampleButton.disabled = !sampleSelect.value || section.dataset.mode === "busy"));
  sampleButton.addEventListener("click", () => sampleSelect.value && onSample(sampleSelect.value));

  const policy = el(
    "select",
    { id: "dataset-policy", "data-testid": "dataset-policy" },
    el("option", { value: "skip" }, "Skip them and list them"),
    el("option", { value: "stop" }, "Stop at the first one"),
  );
  const encoding = el(
    "select",
    { id: "dataset-encoding", "data-testid": "dataset-encoding" },
    el("option", { value: "utf-8" }, "UTF-8 (or UTF-16 with a BOM)"),
    el("option", { value: "windows-1252" }, "Windows-1252 / Latin-1"),
    el("option", { value: "utf-16le" }, "UTF-16 LE"),
    el("option", { value: "utf-16be" }, "UTF-16 BE"),
  );
  // How a .txt file becomes examples: detected by default (a play or prose is continuous text;
  // a file of sentences or questions is one example per line), or chosen here.
  const textMode = el(
    "select",
    { id: "dataset-text-mode", "data-testid": "dataset-text-mode" },
    el("option", { value: "auto" }, "Detect from the text"),
    el("option", { value: "lines" }, "One example per line"),
    el("option", { value: "document" }, "Continuous text (one document)"),
  );
  const seqLen = el("input", { id: "dataset-seq-len", type: "number", min: 8, step: 1, value: 128, inputmode: "numeric", "data-testid": "dataset-seq-len" });
  const validation = el("input", {
    id: "dataset-validation",
    type: "number",
    min: 0.01,
    max: 0.9,
    step: "any",
    // Empty: the job's default (a tenth, but at least 40 examples of a small file, up to a
    // quarter), so a small dataset holds out enough to tell a gain from chance.
    placeholder: "auto",
    inputmode: "decimal",
    "aria-describedby": "dataset-validation-help",
    "data-testid": "dataset-validation",
  });
  // A separate validation file replaces the held-out share (the share field is disabled then).
  const validationFile = el("input", {
    id: "dataset-validation-file",
    type: "file",
    accept: ".jsonl,.ndjson,.json,.csv,.tsv,.txt",
    "data-testid": "dataset-validation-file",
  });
  validationFile.addEventListener("change", () => {
    const file = validationFile.files?.[0];
    validationFile.value = "";
    if (file) onValidationFile(file);
  });
  const validationChosen = el("span", { class: "help", "data-testid": "dataset-validation-name" }, "none: a share of the dataset is held out");
  const validationRemove = el("button", { type: "button", "data-testid": "dataset-validation-remove", hidden: true, onclick: () => onValidationFile(null) }, "Remove");
  let hasValidationFile = false;
  const recheck = el("button", { type: "button", "data-testid": "inspect-dataset", disabled: true, onclick: () => onInspect() }, "Check again");
  for (const f of [policy, encoding, textMode, seqLen, validation]) f.addEventListener("change", () => section.dataset.hasDataset === "true" && onInspect());

  const chosen = el("p", { class: "result", "data-testid": "dataset-name" }, "No dataset chosen.");
  const state = el("p", { class: "help", role: "status", "aria-live": "polite", "data-testid": "dataset-state" }, "");
  const reading = el("progress", { max: 1, value: 0, hidden: true, "data-testid": "dataset-progress", "aria-label": "Reading the dataset" });
  const report = el("div", { class: "dataset-report", "data-testid": "dataset-report", hidden: true });
  const preview = el("div", { class: "dataset-preview", "data-testid": "dataset-preview", hidden: true });

  section.append(
    el("h2", { id: "dataset-title" }, "Dataset"),
    el(
      "p",
      { id: "dataset-privacy", class: "help privacy", "data-testid": "dataset-privacy" },
      "Your data never leaves this machine: the file is read by this tab and checked, tokenised and trained on here. " +
        "Nothing is uploaded (the samples below come from this page's own server).",
    ),
    el(
      "div",
      { class: "dropzone" },
      el("div", { class: "field" }, el("label", { for: "dataset-file" }, "Dataset file"), fileInput),
      el("div", { class: "field" }, el("label", { for: "dataset-sample" }, "Sample dataset"), el("div", { class: "buttons" }, sampleSelect, sampleButton)),
      el(
        "p",
        { class: "help" },
        "JSON Lines, JSON, CSV, TSV or plain text. Fields are detected: text; prompt/completion (or input/output, question/answer, prompt/response); Alpaca; chat messages; text/label; " +
          "sentence pairs (anchor/positive, sentence1/sentence2, query/positive, text1/text2). An encoder (MiniLM) learns a classifier from text/label and sentence embeddings from pairs, questions and answers included.",
      ),
    ),
    el(
      "div",
      { class: "fields dataset-options" },
      el("div", { class: "field" }, el("label", { for: "dataset-policy" }, "Bad records"), policy),
      el("div", { class: "field" }, el("label", { for: "dataset-encoding" }, "Text encoding"), encoding),
      el("div", { class: "field" }, el("label", { for: "dataset-text-mode" }, "Plain text is"), textMode),
      el("div", { class: "field" }, el("label", { for: "dataset-seq-len" }, "Sequence length (tokens)"), seqLen),
      el(
        "div",
        { class: "field" },
        el("label", { for: "dataset-validation" }, "Validation share"),
        validation,
        el("span", { class: "help", id: "dataset-validation-help" }, "Empty: a tenth, at least 40 examples (up to a quarter)."),
      ),
      el(
        "div",
        { class: "field" },
        el("label", { for: "dataset-validation-file" }, "Separate validation file (optional)"),
        validationFile,
        el("div", { class: "buttons" }, validationChosen, validationRemove),
      ),
      el("div", { class: "buttons" }, recheck),
    ),
    chosen,
    state,
    reading,
    report,
    preview,
  );

  /** " — 34 of 89 held out are scored, 55 went back to training (the evaluation budget…)". */
  function heldOutNote(h) {
    const text = formatHeldOut(h);
    return text ? ` — ${text} (the evaluation budget; validation_max sets it)` : "";
  }

  function stat(label, value, testid) {
    return [el("dt", {}, label), el("dd", { "data-testid": testid }, value)];
  }

  function renderReport(result) {
    const r = result.report;
    const schema = r.schema ?? {};
    const kind = schema.schema?.kind ?? "?";
    const skipped = Object.entries(r.skipped_by_reason ?? {});
    const children = [
      el(
        "dl",
        { class: "facts" },
        stat("File", `${r.file} (${formatBytes(r.bytes)})`, "report-file"),
        stat("Format", `${FORMAT_NAMES[r.format] ?? r.format}${r.encoding && r.encoding !== "utf-8" ? ` (${r.encoding})` : ""}`, "report-format"),
        stat("Schema", `${SCHEMA_NAMES[kind] ?? kind} (${schema.detected ? "detected" : "chosen"})`, "report-schema"),
        ...(result.task ? stat("Task", TASK_NAMES[result.task] ?? result.task, "report-task") : []),
        ...(r.text_mode ? stat("Read as", `${r.text_mode.reason}${r.text_mode.detected ? " (detected)" : ""}`, "report-text-mode") : []),
        stat("Records", formatInt(r.records), "report-records"),
        stat(
          "Examples kept",
          r.sampled == null
            ? formatInt(r.examples)
            : `${formatInt(r.examples)}, of which a random ${formatInt(r.sampled)} are used (the cap on examples held in memory, max_examples)`,
          "report-examples",
        ),
        stat("Skipped", r.skipped ? `${formatInt(r.skipped)}: ${skipped.map(([k, n]) => `${k.replaceAll("_", " ")} ×${n}`).join(", ")}` : "none", "report-skipped"),
        stat("Duplicates", formatInt(r.duplicates), "report-duplicates"),
        stat(
          "Split",
          `${formatInt(result.train_examples)} training · ${formatInt(result.validation_examples)} validation` +
            (result.validation_report ? ` (from ${result.validation_report.file})` : "") +
            heldOutNote(result.held_out),
          "report-split",
        ),
        ...(result.validation_report
          ? stat(
              "Validation file",
              `${result.validation_report.file} (${formatBytes(result.validation_report.bytes)}): ${formatInt(result.validation_report.examples)} examples kept` +
                (result.validation_report.skipped ? `, ${formatInt(result.validation_report.skipped)} skipped` : "") +
                (result.overlap_removed ? ` · ${formatInt(result.overlap_removed)} training example(s) also in it were left out of training` : " · no overlap with the training file"),
              "report-validation-file",
            )
          : []),
        stat("Batches", `${formatInt(result.train_batches)} training · ${formatInt(result.eval_batches)} evaluation`, "report-batches"),
      ),
      el("p", { class: "help", "data-testid": "report-explanation" }, schema.explanation ?? ""),
    ];
    if (r.issues?.length) {
      children.push(
        el("h3", {}, `Problems (${formatInt(r.skipped)} record${r.skipped === 1 ? "" : "s"} ${r.policy === "stop" ? "" : "skipped"})`),
        el(
          "ol",
          // Scrolls when long: focusable, so a keyboard can scroll it too.
          { class: "issues", "data-testid": "dataset-issues", tabindex: 0, "aria-label": "Skipped records" },
          r.issues.map((i) =>
            el(
              "li",
              { "data-line": i.line ?? "", "data-reason": i.reason, "data-testid": "dataset-issue" },
              el("code", {}, `${i.file}:${i.line ?? "?"}${i.row != null ? ` (row ${i.row})` : ""}`),
              " ",
              i.message,
            ),
          ),
        ),
      );
      if (r.issues_not_listed) children.push(el("p", { class: "help" }, `…and ${formatInt(r.issues_not_listed)} more not listed.`));
    }
    if (r.warnings?.length) {
      children.push(
        el("h3", {}, "Warnings (kept)"),
        el(
          "ul",
          { class: "issues warnings", "data-testid": "dataset-warnings", tabindex: 0, "aria-label": "Warnings" },
          r.warnings.map((i) => el("li", {}, el("code", {}, `${i.file}:${i.line ?? "?"}`), " ", i.message)),
        ),
      );
    }
    if (r.labels) {
      children.push(
        el("h3", {}, "Labels"),
        el(
          "table",
          { class: "labels", "data-testid": "dataset-labels" },
          el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Label"), el("th", { scope: "col" }, "Examples"))),
          el(
            "tbody",
            {},
            Object.entries(r.labels).map(([label, n]) => el("tr", {}, el("td", {}, label), el("td", {}, formatInt(n)))),
          ),
        ),
      );
    }
    if (r.tokens) {
      const t = r.tokens;
      const peak = Math.max(1, ...(t.histogram ?? []).map((b) => b.count));
      children.push(
        el("h3", {}, "Tokens per example"),
        el(
          "dl",
          { class: "facts" },
          stat("Min / median / p95 / max", `${t.min} / ${t.median} / ${t.p95} / ${t.max}`, "report-token-lengths"),
          stat("Mean · total", `${t.mean.toFixed(1)} · ${formatInt(t.total)}`, "report-token-total"),
          stat("Truncated", `${formatInt(t.truncated)} longer than ${t.seq_len} tokens`, "report-truncated"),
        ),
        el(
          "div",
          { class: "histogram", role: "img", "aria-label": "Histogram of tokens per example", "data-testid": "token-histogram" },
          (t.histogram ?? []).map((b) =>
            el(
              "div",
              { class: "bar", title: `${b.from}–${b.to} tokens: ${b.count}` },
              el("span", { class: "bar-fill", style: `height: ${Math.round((100 * b.count) / peak)}%` }),
              el("span", { class: "bar-label" }, String(b.from)),
            ),
          ),
        ),
      );
    }
    if (r.chat_template) children.push(el("p", { class: "help" }, `Chat template: ${r.chat_template}.`));
    report.replaceChildren(...children);
    report.hidden = false;
  }

  /** A pair's anchor and positive as the encoder reads them (every token counts: no highlight). */
  function renderPairs(rows) {
    // WordPiece: a token that continues a word ("##ing") follows it directly, others after a space.
    const side = (tokens, testid) =>
      el(
        "span",
        { class: "pair-side", "data-testid": testid },
        tokens.flatMap((t, i) => [i > 0 && !t.text.startsWith("##") ? " " : null, el("span", { class: "tok", title: `token ${t.id}` }, t.text)]),
      );
    preview.replaceChildren(
      el("h3", {}, "What the model sees"),
      el("p", { class: "help" }, "Each pair as the encoder reads it: a text, then the text it should come closest to. The other pairs of a batch are its negatives."),
      ...rows.map((row, i) =>
        el(
          "div",
          { class: "preview-example pair", "data-testid": "preview-example", "data-kind": "pair", "aria-label": `Training pair ${i + 1}`, tabindex: 0 },
          side(row.tokens, "preview-anchor"),
          el("span", { class: "pair-sep", "aria-label": "pairs with" }, " ≈ "),
          side(row.positive ?? [], "preview-positive"),
        ),
      ),
    );
    preview.hidden = false;
  }

  function renderPreview(result) {
    const rows = result.preview ?? [];
    if (!rows.length) {
      preview.hidden = true;
      return;
    }
    if (result.task === "embedding") return renderPairs(rows);
    preview.replaceChildren(
      el("h3", {}, "What the model sees"),
      el("p", { class: "help" }, el("mark", { class: "tok counts" }, "Highlighted"), " tokens count in the loss (the model learns to predict them); the others are context."),
      ...rows.map((row, i) => {
        // `counts`: this token is predicted with loss (a completion/assistant token).
        const tokens = row.tokens.map((t) => ({ ...t, counts: Boolean(t.counts) }));
        // Trailing padding (the same token repeated, not counted) is left out.
        let end = tokens.length;
        while (end > 1 && !tokens[end - 1].counts && tokens[end - 1].id === tokens[end - 2].id) end -= 1;
        return el(
          "div",
          // Scrolls when long (a narrow screen): focusable, so a keyboard can scroll it too.
          { class: "preview-example", "data-testid": "preview-example", "aria-label": `Training example ${i + 1}`, tabindex: 0 },
          tokens.slice(0, end).map((t) =>
            el(t.counts ? "mark" : "span", { class: t.counts ? "tok counts" : "tok", title: `token ${t.id}`, "data-counts": t.counts ? "1" : "0" }, t.text),
          ),
        );
      }),
    );
    preview.hidden = false;
  }

  return {
    /** canInspect: a dataset is chosen, a model loaded, the worker idle; busy: disable choosing. */
    setMode({ canInspect, busy }) {
      section.dataset.mode = busy ? "busy" : "idle";
      recheck.disabled = !canInspect;
      fileInput.disabled = busy;
      sampleSelect.disabled = busy;
      sampleButton.disabled = busy || !sampleSelect.value;
      for (const f of [policy, encoding, textMode, seqLen, validationFile]) f.disabled = busy;
      validation.disabled = busy || hasValidationFile;
      validationRemove.disabled = busy;
    },
    /** The model changed: the sequence length cannot exceed its context. */
    setModel(info) {
      if (info?.max_positions) {
        seqLen.max = String(info.max_positions);
        if (seqLen.valueAsNumber > info.max_positions) seqLen.value = String(info.max_positions);
      }
    },
    /** A dataset was chosen (it is not checked yet). */
    chosen(name, bytes, note) {
      section.dataset.hasDataset = "true";
      chosen.textContent = `Dataset: ${name} (${formatBytes(bytes)})`;
      state.textContent = note ?? "";
    },
    /** The separate validation file ({name, bytes}) or null. */
    validationFile(file) {
      hasValidationFile = file != null;
      validationChosen.textContent = file ? `${file.name} (${formatBytes(file.bytes)})` : "none: a share of the dataset is held out";
      validationRemove.hidden = !file;
      validation.disabled = hasValidationFile || section.dataset.mode === "busy";
    },
    /** The job configuration's data part, from the controls. */
    config() {
      const out = { data: { policy: policy.value, encoding: encoding.value, text_mode: { mode: textMode.value }, causal: {} } };
      if (Number.isFinite(seqLen.valueAsNumber)) out.data.causal.seq_len = Math.trunc(seqLen.valueAsNumber);
      if (Number.isFinite(validation.valueAsNumber)) out.validation_fraction = validation.valueAsNumber;
      return out;
    },
    begin(name) {
      delete state.dataset.outcome;
      state.textContent = `Checking ${name}…`;
      section.setAttribute("aria-busy", "true");
    },
    /** Reading progress {file, bytes, bytes_done, records_done}. */
    progress(p) {
      if (!(p.bytes > 0) || !Number.isFinite(p.bytes_done)) return;
      reading.hidden = false;
      reading.max = p.bytes;
      reading.value = p.bytes_done;
      reading.dataset.file = p.file;
      state.textContent = `Checking ${p.file} (${formatBytes(p.bytes)}): ${Math.floor((100 * p.bytes_done) / p.bytes)}% read, ${formatInt(p.records_done)} records checked and tokenized…`;
    },
    show(result) {
      section.removeAttribute("aria-busy");
      reading.hidden = true;
      const r = result.report;
      state.dataset.outcome = "done";
      state.textContent =
        `${formatInt(r.examples)} examples kept` +
        (r.skipped ? `, ${formatInt(r.skipped)} skipped` : "") +
        ` · ${formatInt(result.train_examples)} for training, ${formatInt(result.validation_examples)} held out.`;
      renderReport(result);
      renderPreview(result);
    },
    fail(error) {
      section.removeAttribute("aria-busy");
      reading.hidden = true;
      state.dataset.outcome = "error";
      const d = error.details ?? {};
      const where = d.file ? ` (${d.file}${d.line != null ? `:${d.line}` : ""}${d.field ? `, field ${d.field}` : ""})` : "";
      state.textContent = `Not usable: ${error.code}${where} — ${error.message}`;
      report.hidden = true;
      preview.hidden = true;
    },
    note(text) {
      state.textContent = text;
    },
  };
}
