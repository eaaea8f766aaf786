// "Before / after" panel: held-out validation loss and perplexity of the base model and of the
// fine-tuned one, with the change and an honest verdict (including "it got worse"); the held-out
// samples side by side (prompt, reference, base output, fine-tuned output); and downloads of the
// exported files (the merged Hugging Face model folder and, after LoRA, the PEFT adapter).

import { el, formatBytes, formatInt, formatLoss } from "../lib/format.js";

/** "merged/model.safetensors" → "webtune-merged-model.safetensors". */
export function downloadName(path) {
  return `webtune-${path.replaceAll("/", "-")}`;
}

function pct(before, after) {
  return ((after - before) / before) * 100;
}

function signed(x, digits = 1) {
  return `${x > 0 ? "+" : x < 0 ? "−" : "±"}${Math.abs(x).toFixed(digits)}%`;
}

/**
 * @param {HTMLElement} section  the panel's <section>
 * @param {{onDownload: (path: string) => void}} options
 */
export function createResultsPanel(section, { onDownload }) {
  const empty = el("p", { class: "help", "data-testid": "results-empty" }, "Fine-tune a model to compare it with the base model here.");
  const verdict = el("p", { class: "verdict", role: "status", "aria-live": "polite", "data-testid": "verdict" });
  const table = el("table", { class: "before-after", "data-testid": "before-after", hidden: true });
  const samples = el("div", { class: "samples", "data-testid": "samples", hidden: true });
  const downloads = el("div", { class: "downloads", "data-testid": "downloads", hidden: true });
  section.append(el("h2", { id: "results-title" }, "Before / after"), empty, verdict, table, samples, downloads);

  function cell(text, testid, attrs = {}) {
    return el("td", { "data-testid": testid, ...attrs }, text);
  }

  function renderTable(before, after) {
    const row = (label, key, fmt, testid) => {
      const b = before?.[key];
      const a = after?.[key];
      const change = Number.isFinite(b) && Number.isFinite(a) && b !== 0 ? pct(b, a) : null;
      return el(
        "tr",
        {},
        el("th", { scope: "row" }, label),
        cell(fmt(b), `${testid}-before`),
        cell(fmt(a), `${testid}-after`),
        cell(change === null ? "–" : signed(change), `${testid}-change`, { "data-better": change === null ? "" : change < 0 ? "true" : "false" }),
      );
    };
    table.replaceChildren(
      el("caption", {}, `Held-out validation set (${formatInt(after?.tokens ?? before?.tokens)} tokens scored; lower is better)`),
      el(
        "thead",
        {},
        el("tr", {}, el("th", {}, ""), el("th", { scope: "col" }, "Base model"), el("th", { scope: "col" }, "Fine-tuned"), el("th", { scope: "col" }, "Change")),
      ),
      el(
        "tbody",
        {},
        row("Validation loss", "loss", formatLoss, "val-loss"),
        row("Perplexity", "perplexity", (x) => (Number.isFinite(x) ? x.toFixed(2) : "–"), "perplexity"),
      ),
    );
    table.hidden = false;
  }

  function verdictText(result) {
    const { before, after, summary } = result;
    if (!before || !after) return { text: "There were no held-out examples to evaluate, so there is no before/after comparison.", outcome: "none" };
    const change = pct(before.loss, after.loss);
    const losses = summary.losses ?? [];
    const k = Math.max(1, Math.floor(losses.length / 5));
    const mean = (xs) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
    const trainFell = losses.length >= 2 && mean(losses.slice(-k)) < mean(losses.slice(0, k));
    const stopped = summary.cancelled ? ` Training was stopped after ${formatInt(summary.steps)} steps.` : "";
    if (after.loss < before.loss - 1e-6) {
      return {
        text: `Fine-tuning helped: validation loss fell ${Math.abs(change).toFixed(1)}% (${formatLoss(before.loss)} → ${formatLoss(after.loss)}), perplexity ${before.perplexity.toFixed(2)} → ${after.perplexity.toFixed(2)}.${stopped}`,
        outcome: "better",
      };
    }
    if (Math.abs(after.loss - before.loss) <= 1e-6) {
      return { text: `No change: validation loss stayed at ${formatLoss(after.loss)}. Try more steps or a higher learning rate.${stopped}`, outcome: "same" };
    }
    const why = trainFell
      ? "The training loss fell while the validation loss rose: the model is memorising the training examples (overfitting). Use fewer steps, a lower learning rate or more data."
      : "The training loss did not fall either: the learning rate may be too high or too low, or there were too few steps.";
    return {
      text: `Fine-tuning made the model worse on held-out data: validation loss rose ${change.toFixed(1)}% (${formatLoss(before.loss)} → ${formatLoss(after.loss)}). ${why}${stopped}`,
      outcome: "worse",
    };
  }

  function renderSamples(list) {
    if (!list?.length) {
      samples.hidden = true;
      return;
    }
    samples.replaceChildren(
      el("h3", {}, "Held-out examples, greedy answers"),
      el(
        "table",
        { class: "side-by-side" },
        el(
          "thead",
          {},
          el("tr", {}, ["Prompt", "Reference", "Base model", "Fine-tuned"].map((h) => el("th", { scope: "col" }, h))),
        ),
        el(
          "tbody",
          {},
          list.map((s) =>
            el(
              "tr",
              { "data-testid": "sample-row", title: s.source },
              el("td", { class: "sample-prompt" }, s.prompt),
              el("td", { class: "sample-reference" }, s.reference),
              el("td", { class: "sample-before", "data-testid": "sample-before" }, s.before),
              el("td", { class: "sample-after", "data-testid": "sample-after" }, s.after),
            ),
          ),
        ),
      ),
    );
    samples.hidden = false;
  }

  function renderDownloads(files, sizes) {
    if (!files?.length) {
      downloads.hidden = true;
      return;
    }
    const group = (title, mine, prefix, help) => {
      if (!mine.length) return null;
      return el(
        "div",
        { class: "download-group" },
        el("h4", {}, title),
        help ? el("p", { class: "help" }, help) : null,
        el(
          "ul",
          {},
          mine.map((f) =>
            el(
              "li",
              {},
              el("button", { type: "button", "data-testid": "download-file", "data-file": f, onclick: () => onDownload(f) }, `Download ${f.slice(prefix.length)}`),
              sizes?.[f] != null ? ` (${formatBytes(sizes[f])})` : "",
            ),
          ),
        ),
      );
    };
    const merged = files.filter((f) => f.startsWith("merged/"));
    const adapter = files.filter((f) => f.startsWith("adapter/"));
    const other = files.filter((f) => !f.startsWith("merged/") && !f.startsWith("adapter/"));
    downloads.replaceChildren(
      el("h3", {}, "Download the fine-tuned model"),
      el("p", { class: "help" }, "The files are made in this tab and saved straight to your computer; nothing is uploaded."),
      group("Merged model (Hugging Face folder)", merged, "merged/", "Put these files in one folder: it loads like the base model (transformers, webtune)."),
      group("LoRA adapter (PEFT)", adapter, "adapter/", "Only the adapter weights: load them on top of the base model with PEFT."),
      group("Other files", other, "", null),
    );
    downloads.hidden = false;
  }

  return {
    show(result) {
      empty.hidden = true;
      renderTable(result.before, result.after);
      const v = verdictText(result);
      verdict.textContent = v.text;
      verdict.dataset.outcome = v.outcome;
      renderSamples(result.samples);
      renderDownloads(result.files);
    },
    /** File sizes became known (after the first export). */
    sizes(files, sizes) {
      renderDownloads(files, sizes);
    },
    clear(text) {
      empty.hidden = false;
      empty.textContent = text ?? "Fine-tune a model to compare it with the base model here.";
      verdict.textContent = "";
      delete verdict.dataset.outcome;
      table.hidden = true;
      samples.hidden = true;
      downloads.hidden = true;
    },
  };
}
