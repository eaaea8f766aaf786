// "Before / after" panel: the base model's score as soon as a dataset is checked; then held-out validation loss and perplexity of the base model and of the
// fine-tuned one, with the change and an honest verdict (including "it got worse"); the held-out
// samples side by side (prompt, reference, base output, fine-tuned output); and downloads of the
// exported files (the merged Hugging Face model folder and, after LoRA, the PEFT adapter) and of
// the evaluation report (HTML or JSON). The verdict and the number formats are exported for the
// HTML report (lib/report-html.js), so both say the same thing.
// For a classifier (an encoder fine-tuned on labelled data): accuracy, macro-F1 and loss, F1 per
// class, both confusion matrices, the held-out examples whose prediction changed, and a box to
// try a sentence on both models (plus sentence similarity before/after). For sentence
// embeddings (an encoder fine-tuned on pairs): retrieval on the held-out pairs — recall@1, mean
// reciprocal rank, the cosine of a pair against the others' — the anchors whose best match
// changed, and a box that measures two texts' similarity with both models.

import { el, formatBytes, formatHeldOut, formatInt, formatLoss, formatPercent } from "../lib/format.js";

/** "merged/model.safetensors" → "webtune-merged-model.safetensors". */
export function downloadName(path) {
  return `webtune-${path.replaceAll("/", "-")}`;
}

/** Relative change in percent. */
export function pct(before, after) {
  return ((after - before) / before) * 100;
}

/** A signed percentage: "+1.5%", "−3.0%", "±0.0%". */
export function signed(x, digits = 1) {
  return `${x > 0 ? "+" : x < 0 ? "−" : "±"}${Math.abs(x).toFixed(digits)}%`;
}

/** A rate in 0..1 as a percentage. */
export const percent = formatPercent;

/** The change of a rate in percentage points: "+12.5 pts". */
export function points(b, a) {
  return Number.isFinite(b) && Number.isFinite(a) ? `${a - b >= 0 ? "+" : "−"}${Math.abs((a - b) * 100).toFixed(1)} pts` : "–";
}

/** Fewer held-out units than this give no interval (src/eval/uncertainty.rs, MIN_UNITS). */
export const MIN_UNITS = 6;

/** A change that is a fraction (−0.291) as a signed percentage: "−29.1%". */
const relative = (x) => signed(x * 100);
/** A change of a rate in 0..1 as signed points: "+23.3 pts". */
const pointsOf = (x) => `${x >= 0 ? "+" : "−"}${Math.abs(x * 100).toFixed(1)} pts`;
/** An absolute change with `digits` decimals: "+0.123", "−0.0456". */
const difference = (digits) => (x) => (Number.isFinite(x) ? `${x >= 0 ? "+" : "−"}${Math.abs(x).toFixed(digits)}` : "–");
/** A figure with three decimals (MRR, a cosine). */
const three = (x) => (Number.isFinite(x) ? x.toFixed(3) : "–");

/**
 * The 95% intervals of a result's before/after figures, by metric key: `{before, after}` are
 * intervals `{low, high}` of the figure (or null), `change` the job's judged change `{value,
 * interval, outcome}` (or null) with `fmt` for its ends. From the job's `comparison`
 * (src/eval/uncertainty.rs): Wilson for accuracy, a bootstrap over held-out units otherwise, a
 * paired bootstrap for every change.
 */
export function intervalsOf(result) {
  const c = result.comparison;
  if (!c) return {};
  const of = (before, after, change, fmt) => ({ before: before?.interval ?? null, after: after?.interval ?? null, change: change ?? null, fmt });
  if (result.task === "classification") {
    return {
      accuracy: of(c.accuracy_before, c.accuracy_after, c.accuracy_change, pointsOf),
      macro_f1: of(c.macro_f1_before, c.macro_f1_after, c.macro_f1_change, pointsOf),
      loss: of(c.loss_before, c.loss_after, c.loss_change, relative),
    };
  }
  // Retrieval's changes are differences (after − before), the loss's too.
  if (result.task === "embedding") {
    return {
      accuracy: of(c.accuracy_before, c.accuracy_after, c.accuracy_change, pointsOf),
      mrr: of(c.mrr_before, c.mrr_after, c.mrr_change, difference(3)),
      loss: of(c.loss_before, c.loss_after, c.loss_change, difference(4)),
      positive_cosine: of(c.positive_cosine_before, c.positive_cosine_after, null, difference(3)),
    };
  }
  return {
    loss: of(c.loss_before, c.loss_after, c.loss_change, relative),
    perplexity: of(c.perplexity_before, c.perplexity_after, null, relative),
  };
}

/** "−31.2% to −27.1%": the interval of a change, or "–" without one. */
export function changeInterval(change, fmt) {
  return change?.interval ? `${fmt(change.interval.low)} to ${fmt(change.interval.high)}` : "–";
}

/**
 * The verdict on a fine-tuning result, {text, outcome: "better" | "same" | "worse" | "none"}:
 * the panel shows it, and the HTML report repeats it word for word. The outcome is the job's
 * (`comparison`): "better" or "worse" only when the 95% interval of the change excludes no
 * change, whatever the two point estimates say.
 */
export function verdictFor(result) {
  if (result.task === "embedding") return retrievalVerdict(result);
  return result.task === "classification" ? classVerdict(result) : verdictText(result);
}

/** " (95% interval … over 26 held-out rows)", or "" without an interval. */
function withInterval(change, fmt, units) {
  return change?.interval ? ` (95% interval ${changeInterval(change, fmt)} over ${units})` : "";
}

/** Why there is no verdict when there is no interval. */
function tooFew(units) {
  return `${units} are too few to tell a change from chance (at least ${MIN_UNITS} are needed): hold out more data.`;
}

function classVerdict(result) {
  const { before, after, summary, comparison: c } = result;
  if (!before || !after) return { text: "There were no held-out examples to evaluate, so there is no before/after comparison.", outcome: "none" };
  const stopped = summary.cancelled ? ` Training was stopped after ${formatInt(summary.steps)} steps.` : "";
  const chance = result.head_from_checkpoint
    ? ""
    : " The base model had no head for these labels, so its head was new and \u201cbefore\u201d is chance level: that is the baseline fine-tuning has to beat.";
  const change = c?.accuracy_change;
  const units = `${formatInt(c?.examples ?? after.examples)} held-out examples`;
  const ci = change?.interval ? `; 95% interval ${changeInterval(change, pointsOf)} over ${units}` : "";
  const accuracy = `held-out accuracy ${percent(before.accuracy)} → ${percent(after.accuracy)} (${points(before.accuracy, after.accuracy)}${ci})`;
  const outcome = change?.outcome ?? "same";
  if (outcome === "better") {
    return { text: `Fine-tuning helped: ${accuracy}, macro-F1 ${before.macro_f1.toFixed(3)} → ${after.macro_f1.toFixed(3)}.${chance}${stopped}`, outcome };
  }
  if (outcome === "worse") {
    return { text: `Fine-tuning made the classifier worse: ${accuracy}. Try a lower learning rate or fewer steps.${stopped}`, outcome };
  }
  const why = change?.interval ? "The interval includes no change. Try more steps, a higher learning rate or more held-out data." : tooFew(units);
  return { text: `No clear change: ${accuracy}; validation loss ${formatLoss(before.loss)} → ${formatLoss(after.loss)}. ${why}${chance}${stopped}`, outcome: "same" };
}

function retrievalVerdict(result) {
  const { before, after, summary, comparison: c } = result;
  if (!before || !after) return { text: "There were no held-out pairs to evaluate, so there is no before/after comparison.", outcome: "none" };
  const stopped = summary.cancelled ? ` Training was stopped after ${formatInt(summary.steps)} steps.` : "";
  const change = c?.accuracy_change;
  const n = c?.pairs ?? after.pairs;
  const units = `${formatInt(n)} held-out pairs`;
  const ci = change?.interval ? `; 95% interval ${changeInterval(change, pointsOf)} over ${units}` : "";
  const recall = `held-out recall@1 ${percent(before.accuracy)} → ${percent(after.accuracy)} (${points(before.accuracy, after.accuracy)}${ci})`;
  const mrr = `MRR ${three(before.mrr)} → ${three(after.mrr)}`;
  const search = ` Each of the ${formatInt(n)} held-out texts searched all ${formatInt(n)} partners; recall@1 is how often its own came first.`;
  const outcome = change?.outcome ?? "same";
  if (outcome === "better") return { text: `Fine-tuning helped: ${recall}, ${mrr}.${search}${stopped}`, outcome };
  if (outcome === "worse") return { text: `Fine-tuning made retrieval worse: ${recall}, ${mrr}. Try a lower learning rate or fewer steps.${stopped}`, outcome };
  const why = change?.interval ? "The interval includes no change. Try more steps, a higher learning rate or more held-out pairs." : tooFew(units);
  return { text: `No clear change: ${recall}; ${mrr}. ${why}${search}${stopped}`, outcome: "same" };
}

function verdictText(result) {
  const { before, after, summary, comparison: c } = result;
  if (!before || !after) return { text: "There were no held-out examples to evaluate, so there is no before/after comparison.", outcome: "none" };
  const move = pct(before.loss, after.loss);
  const change = c?.loss_change;
  const units = `${formatInt(c?.units ?? 0)} held-out rows`;
  const ci = withInterval(change, relative, units);
  const losses = summary.losses ?? [];
  const k = Math.max(1, Math.floor(losses.length / 5));
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  const trainFell = losses.length >= 2 && mean(losses.slice(-k)) < mean(losses.slice(0, k));
  const stopped = summary.cancelled ? ` Training was stopped after ${formatInt(summary.steps)} steps.` : "";
  const figures = `${formatLoss(before.loss)} → ${formatLoss(after.loss)}, perplexity ${before.perplexity.toFixed(2)} → ${after.perplexity.toFixed(2)}`;
  const outcome = change?.outcome ?? "same";
  if (outcome === "better") {
    // Sure is not the same as large: a consistent fall of a fraction of a percent is said as such.
    const how = Math.abs(move) < 2 ? "Fine-tuning helped a little" : "Fine-tuning helped";
    return { text: `${how}: validation loss fell ${Math.abs(move).toFixed(1)}%${ci}: ${figures}.${stopped}`, outcome };
  }
  if (outcome === "worse") {
    const why = trainFell
      ? "The training loss fell while the validation loss rose: the model is memorising the training examples (overfitting). Use fewer steps, a lower learning rate or more data."
      : "The training loss did not fall either: the learning rate may be too high or too low, or there were too few steps.";
    return { text: `Fine-tuning made the model worse on held-out data: validation loss rose ${Math.abs(move).toFixed(1)}%${ci}: ${figures}. ${why}${stopped}`, outcome };
  }
  const moved = Math.abs(move) < 0.05 ? "stayed the same" : `${move < 0 ? "fell" : "rose"} ${Math.abs(move).toFixed(1)}%`;
  const why = change?.interval ? "The interval includes no change. Try more steps, a higher learning rate or more held-out data." : tooFew(units);
  return { text: `No clear change: validation loss ${moved}${ci} (${figures}). ${why}${stopped}`, outcome: "same" };
}

/** How to use the merged folder whose files are `merged` ("merged/…" names). */
function mergedHelp(merged) {
  if (merged.includes("merged/modules.json")) {
    // Saved files are named after their path ("webtune-merged-1_Pooling-config.json").
    return (
      "A sentence-transformers folder: put these files in one folder, 1_Pooling/config.json in its subfolder 1_Pooling, " +
      "and load it with SentenceTransformer(folder); transformers' AutoModel reads it as a plain BERT encoder."
    );
  }
  if (merged.includes("merged/modeling_webtune.py")) {
    return "Put these files in one folder. The classifier was trained on mean or CLS pooling, which transformers' own BERT head does not do, so modeling_webtune.py comes with it: load it with AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True) to get the predictions seen here (webtune reads it as it is).";
  }
  return "Put these files in one folder: it loads like the base model (transformers, webtune).";
}

/**
 * @param {HTMLElement} section  the panel's <section>
 * @param {object} options
 * @param {(path: string) => void} options.onDownload
 * @param {(kind: "html" | "json") => void} [options.onReport]
 * @param {(text: string, which: "base" | "tuned") => Promise<any>} [options.onClassify]  an encoder's label for a text
 * @param {(a: string, b: string, which: "base" | "tuned") => Promise<any>} [options.onSimilarity]  two texts' cosine similarity
 */
export function createResultsPanel(section, { onDownload, onClassify, onSimilarity, onReport }) {
  const empty = el("p", { class: "help", "data-testid": "results-empty" }, "Fine-tune a model to compare it with the base model here.");
  const verdict = el("p", { class: "verdict", role: "status", "aria-live": "polite", "data-testid": "verdict" });
  const table = el("table", { class: "before-after", "data-testid": "before-after", hidden: true });
  const samples = el("div", { class: "samples", "data-testid": "samples", hidden: true });
  const downloads = el("div", { class: "downloads", "data-testid": "downloads", hidden: true });
  const classes = el("div", { class: "classes", "data-testid": "classes", hidden: true });
  const tryIt = el("div", { class: "try-it", "data-testid": "try-it", hidden: true });
  // "Before" alone: the base model scored as soon as a dataset is checked.
  const baselineEl = el("p", { class: "baseline", role: "status", "aria-live": "polite", "data-testid": "baseline", hidden: true });
  section.append(el("h2", { id: "results-title" }, "Before / after"), empty, baselineEl, verdict, table, classes, samples, tryIt, downloads);

  function cell(text, testid, attrs = {}) {
    return el("td", { "data-testid": testid, ...attrs }, text);
  }

  /** "34 of 89 held out are scored, 55 went back to training; ", or "" when all were scored. */
  function heldOutText(result) {
    const text = formatHeldOut(result?.held_out);
    return text ? `${text}; ` : "";
  }

  /** A figure with its 95% interval below it (the figure alone carries the test id). */
  function figure(text, testid, interval, fmt) {
    const ci = interval ? el("small", { class: "ci", "data-testid": `${testid}-ci` }, `95%: ${fmt(interval.low)}–${fmt(interval.high)}`) : "";
    return el("td", {}, el("span", { "data-testid": testid }, text), ci);
  }

  /** The change's 95% interval and what it says. */
  function intervalCell(info, testid) {
    const change = info?.change;
    return cell(changeInterval(change, info?.fmt), `${testid}-interval`, { "data-outcome": change?.outcome ?? "" });
  }

  function renderTable(result) {
    const { before, after } = result;
    const answers = { before: result.answers_before, after: result.answers_after };
    const intervals = intervalsOf(result);
    const row = (label, key, fmt, testid) => {
      const b = before?.[key];
      const a = after?.[key];
      const change = Number.isFinite(b) && Number.isFinite(a) && b !== 0 ? pct(b, a) : null;
      const info = intervals[key];
      return el(
        "tr",
        {},
        el("th", { scope: "row" }, label),
        figure(fmt(b), `${testid}-before`, info?.before, fmt),
        figure(fmt(a), `${testid}-after`, info?.after, fmt),
        cell(change === null ? "–" : signed(change), `${testid}-change`, { "data-better": change === null ? "" : change < 0 ? "true" : "false" }),
        intervalCell(info, testid),
      );
    };
    // Exact match and token F1 of the greedy answers shown below (prompt–completion and chat
    // data): higher is better, so the change is in points and "better" means a rise.
    const answerRow = (label, key, testid) => {
      const b = answers?.before?.[key];
      const a = answers?.after?.[key];
      const better = Number.isFinite(b) && Number.isFinite(a) && a !== b ? String(a > b) : "";
      return el("tr", {}, el("th", { scope: "row" }, label), cell(percent(b), `${testid}-before`), cell(percent(a), `${testid}-after`), cell(points(b, a), `${testid}-change`, { "data-better": better }), cell("–", `${testid}-interval`));
    };
    const n = answers?.after?.examples ?? answers?.before?.examples;
    const answerRows = n ? [answerRow(`Exact match (${formatInt(n)} greedy answers; higher is better)`, "exact_match", "exact-match"), answerRow("Token F1 (same answers; higher is better)", "token_f1", "token-f1")] : [];
    table.replaceChildren(
      el("caption", {}, `Held-out validation set (${heldOutText(result)}${formatInt(after?.tokens ?? before?.tokens)} tokens scored; loss and perplexity: lower is better; 95% intervals from a bootstrap over the held-out rows)`),
      el(
        "thead",
        {},
        el("tr", {}, el("th", {}, ""), el("th", { scope: "col" }, "Base model"), el("th", { scope: "col" }, "Fine-tuned"), el("th", { scope: "col" }, "Change"), el("th", { scope: "col" }, "95% interval of the change")),
      ),
      el(
        "tbody",
        {},
        row("Validation loss", "loss", formatLoss, "val-loss"),
        row("Perplexity", "perplexity", (x) => (Number.isFinite(x) ? x.toFixed(2) : "–"), "perplexity"),
        ...answerRows,
      ),
    );
    table.hidden = false;
  }

  function renderClassTable(result) {
    const { before, after } = result;
    const intervals = intervalsOf(result);
    const row = (label, key, fmt, testid, higherBetter) => {
      const b = before?.[key];
      const a = after?.[key];
      const better = Number.isFinite(b) && Number.isFinite(a) && a !== b ? String(higherBetter ? a > b : a < b) : "";
      const change = higherBetter ? points(b, a) : Number.isFinite(b) && Number.isFinite(a) && b !== 0 ? signed(pct(b, a)) : "–";
      const info = intervals[key];
      return el("tr", {}, el("th", { scope: "row" }, label), figure(fmt(b), `${testid}-before`, info?.before, fmt), figure(fmt(a), `${testid}-after`, info?.after, fmt), cell(change, `${testid}-change`, { "data-better": better }), intervalCell(info, testid));
    };
    table.replaceChildren(
      el("caption", {}, `Held-out validation set (${heldOutText(result)}${formatInt(after?.examples ?? before?.examples)} examples scored, ${result.labels.length} labels; 95% intervals: Wilson for accuracy, a bootstrap over the examples otherwise)`),
      el("thead", {}, el("tr", {}, el("th", {}, ""), el("th", { scope: "col" }, "Base model"), el("th", { scope: "col" }, "Fine-tuned"), el("th", { scope: "col" }, "Change"), el("th", { scope: "col" }, "95% interval of the change"))),
      el(
        "tbody",
        {},
        row("Accuracy", "accuracy", percent, "accuracy", true),
        row("Macro-F1", "macro_f1", (x) => (Number.isFinite(x) ? x.toFixed(3) : "–"), "macro-f1", true),
        row("Validation loss", "loss", formatLoss, "val-loss", false),
      ),
    );
    table.hidden = false;
  }

  /** Retrieval before/after: rates and MRR change by difference, as the job judges them. */
  function renderRetrievalTable(result) {
    const { before, after } = result;
    const intervals = intervalsOf(result);
    const row = (label, key, fmt, testid, { higherBetter = true, change: changeFmt = difference(3) } = {}) => {
      const b = before?.[key];
      const a = after?.[key];
      const both = Number.isFinite(b) && Number.isFinite(a);
      const better = both && a !== b && higherBetter !== null ? String(higherBetter ? a > b : a < b) : "";
      const info = intervals[key];
      return el("tr", {}, el("th", { scope: "row" }, label), figure(fmt(b), `${testid}-before`, info?.before, fmt), figure(fmt(a), `${testid}-after`, info?.after, fmt), cell(both ? changeFmt(a - b) : "–", `${testid}-change`, { "data-better": better }), intervalCell(info, testid));
    };
    const n = after?.pairs ?? before?.pairs;
    table.replaceChildren(
      el(
        "caption",
        {},
        `Held-out pairs (${heldOutText(result)}${formatInt(n)} pairs scored: each text searches all ${formatInt(n)} partners by cosine similarity; ` +
          "recall@1 and MRR: higher is better; 95% intervals: Wilson for recall@1, a bootstrap over the pairs otherwise)",
      ),
      el("thead", {}, el("tr", {}, el("th", {}, ""), el("th", { scope: "col" }, "Base model"), el("th", { scope: "col" }, "Fine-tuned"), el("th", { scope: "col" }, "Change"), el("th", { scope: "col" }, "95% interval of the change"))),
      el(
        "tbody",
        {},
        row("Recall@1 (its own partner ranks first)", "accuracy", percent, "recall", { change: pointsOf }),
        row("Mean reciprocal rank", "mrr", three, "mrr"),
        row("Cosine of a pair", "positive_cosine", three, "pair-cosine"),
        // Lower is better only together with the pair's: both may rise, so no colour.
        row("Cosine with the other partners", "negative_cosine", three, "other-cosine", { higherBetter: null }),
        row("Validation loss (contrastive)", "loss", formatLoss, "val-loss", { higherBetter: false, change: difference(4) }),
      ),
    );
    table.hidden = false;
  }

  /** The held-out texts whose best match changed: fixed first, as the job lists them. */
  function renderRetrievalChanges(result) {
    const changed = result.changed ?? [];
    const found = (r, testid) =>
      el(
        "td",
        { "data-testid": testid, "data-rank": String(r?.rank ?? "") },
        r?.rank === 1 ? "its own partner" : (r?.text ?? "–"),
        el("small", { class: "ci" }, r ? ` (partner ranked ${formatInt(r.rank)}, cosine ${three(r.cosine)})` : ""),
      );
    const list = changed.length
      ? el(
          "table",
          { class: "side-by-side", "data-testid": "changed" },
          el("caption", {}, `Held-out texts whose best match changed: ${formatInt(result.fixed)} fixed, ${formatInt(result.broken)} broken${result.changed_total > changed.length ? ` (first ${changed.length} of ${result.changed_total} shown)` : ""}`),
          el("thead", {}, el("tr", {}, ["", "Text", "Its partner", "Base model ranked first", "Fine-tuned ranked first"].map((h) => el("th", { scope: "col" }, h)))),
          el(
            "tbody",
            {},
            changed.map((c) =>
              el(
                "tr",
                { "data-testid": "changed-row", "data-status": c.status, title: c.source },
                el("td", {}, c.status),
                el("td", { "data-testid": "changed-anchor" }, c.anchor),
                el("td", {}, c.positive),
                found(c.before, "changed-before"),
                found(c.after, "changed-after"),
              ),
            ),
          ),
        )
      : el("p", { class: "help" }, "No held-out text's best match changed.");
    classes.replaceChildren(el("h3", {}, "What changed"), list);
    classes.hidden = false;
  }

  /** Two texts' cosine similarity with the base and the fine-tuned embedder. */
  function renderSimilarity(result) {
    if (!onSimilarity) return;
    const a = el("input", { type: "text", "data-testid": "sim-a", "aria-label": "First text", placeholder: "A question, say" });
    const b = el("input", { type: "text", "data-testid": "sim-b", "aria-label": "Second text", placeholder: "An answer to it" });
    const out = el("p", { "data-testid": "sim-out", role: "status", "aria-live": "polite" });
    const run = async () => {
      out.textContent = "Comparing…";
      delete out.dataset.before;
      delete out.dataset.after;
      const before = await onSimilarity(a.value, b.value, "base");
      const after = await onSimilarity(a.value, b.value, "tuned");
      const value = (r) => r?.result?.similarity;
      out.textContent = `Cosine similarity: base ${three(value(before))}, fine-tuned ${three(value(after))}.`;
      // Full precision for scripts; the text rounds.
      if (Number.isFinite(value(before))) out.dataset.before = String(value(before));
      if (Number.isFinite(value(after))) out.dataset.after = String(value(after));
    };
    const pooled = result.pooling === "cls" ? " (The box pools by the mean; this run trained CLS pooling, so the export's embeddings differ from these.)" : "";
    tryIt.replaceChildren(
      el("h3", {}, "Try it"),
      el("p", { class: "help" }, `Two texts that belong together (a question and its answer) should come closer after fine-tuning, and unrelated ones stay apart: 1 is the same direction, 0 unrelated.${pooled}`),
      el("form", { class: "row", onsubmit: (e) => (e.preventDefault(), void run()) }, a, b, el("button", { type: "submit", "data-testid": "sim-button" }, "Compare with both")),
      out,
    );
    tryIt.hidden = false;
  }

  function matrix(title, labels, m, testid) {
    return el(
      "table",
      { class: "confusion", "data-testid": testid },
      el("caption", {}, title),
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "true ↓ / predicted →"), labels.map((l) => el("th", { scope: "col" }, l)))),
      el(
        "tbody",
        {},
        labels.map((l, i) => el("tr", {}, el("th", { scope: "row" }, l), labels.map((_, j) => el("td", { "data-diagonal": i === j ? "true" : "false" }, String(m?.[i]?.[j] ?? 0))))),
      ),
    );
  }

  function renderClasses(result) {
    const { labels, before, after, changed } = result;
    const perClass = el(
      "table",
      { class: "before-after", "data-testid": "per-class" },
      el("caption", {}, "F1 per class (precision and recall after fine-tuning)"),
      el("thead", {}, el("tr", {}, ["Label", "Support", "F1 before", "F1 after", "Precision", "Recall"].map((h) => el("th", { scope: "col" }, h)))),
      el(
        "tbody",
        {},
        labels.map((l, i) => {
          const b = before?.per_class?.[i];
          const a = after?.per_class?.[i];
          return el(
            "tr",
            { "data-testid": "per-class-row" },
            el("th", { scope: "row" }, l),
            el("td", {}, formatInt(a?.support)),
            el("td", {}, b ? b.f1.toFixed(3) : "–"),
            el("td", { "data-better": b && a && a.f1 !== b.f1 ? String(a.f1 > b.f1) : "" }, a ? a.f1.toFixed(3) : "–"),
            el("td", {}, a ? a.precision.toFixed(3) : "–"),
            el("td", {}, a ? a.recall.toFixed(3) : "–"),
          );
        }),
      ),
    );
    const matrices = el("div", { class: "confusions" }, matrix("Base model", labels, before?.confusion_matrix, "confusion-before"), matrix("Fine-tuned", labels, after?.confusion_matrix, "confusion-after"));
    const list = changed?.length
      ? el(
          "table",
          { class: "side-by-side", "data-testid": "changed" },
          el("caption", {}, `Held-out examples whose prediction changed: ${formatInt(result.fixed)} fixed, ${formatInt(result.broken)} broken${result.changed_total > changed.length ? ` (first ${changed.length} of ${result.changed_total} shown)` : ""}`),
          el("thead", {}, el("tr", {}, ["", "Text", "True label", "Base model", "Fine-tuned"].map((h) => el("th", { scope: "col" }, h)))),
          el(
            "tbody",
            {},
            changed.map((c) =>
              el(
                "tr",
                { "data-testid": "changed-row", "data-status": c.status, title: c.source },
                el("td", {}, c.status),
                el("td", {}, c.text),
                el("td", {}, c.label),
                el("td", {}, `${c.before.label} (${percent(c.before.prob)})`),
                el("td", {}, `${c.after.label} (${percent(c.after.prob)})`),
              ),
            ),
          ),
        )
      : el("p", { class: "help" }, "No held-out prediction changed.");
    classes.replaceChildren(el("h3", {}, "Per class"), perClass, matrices, el("h3", {}, "What changed"), list);
    classes.hidden = false;
  }

  function renderTryIt(result) {
    if (!onClassify) return;
    const input = el("input", { type: "text", "data-testid": "try-text", "aria-label": "A sentence to classify", placeholder: "Type a sentence…" });
    const out = el("div", { class: "try-out", "data-testid": "try-out", role: "status", "aria-live": "polite" });
    const describe = (r) => (r ? `${r.label} (${percent(Math.max(...r.probs))})` : "–");
    const run = async () => {
      out.textContent = "Classifying…";
      const base = result.head_from_checkpoint ? await onClassify(input.value, "base") : null;
      const tuned = await onClassify(input.value, "tuned");
      out.replaceChildren(
        el("p", { "data-testid": "try-base" }, `Base model: ${result.head_from_checkpoint ? describe(base?.result) : "no head for these labels before fine-tuning"}`),
        el("p", { "data-testid": "try-tuned" }, `Fine-tuned: ${describe(tuned?.result)}`),
      );
    };
    const a = el("input", { type: "text", "data-testid": "sim-a", "aria-label": "First sentence", placeholder: "First sentence" });
    const b = el("input", { type: "text", "data-testid": "sim-b", "aria-label": "Second sentence", placeholder: "Second sentence" });
    const simOut = el("p", { "data-testid": "sim-out", role: "status", "aria-live": "polite" });
    const sim = async () => {
      simOut.textContent = "Comparing…";
      const before = await onSimilarity(a.value, b.value, "base");
      const after = await onSimilarity(a.value, b.value, "tuned");
      const f = (r) => (Number.isFinite(r?.result?.similarity) ? r.result.similarity.toFixed(3) : "–");
      simOut.textContent = `Cosine similarity of the sentence embeddings: base ${f(before)}, fine-tuned ${f(after)}.`;
      simOut.dataset.before = f(before);
      simOut.dataset.after = f(after);
    };
    tryIt.replaceChildren(
      el("h3", {}, "Try it"),
      el("form", { class: "row", onsubmit: (e) => (e.preventDefault(), void run()) }, input, el("button", { type: "submit", "data-testid": "try-button" }, "Classify with both")),
      out,
      el("p", { class: "help" }, "Fine-tuning for a labelling also moves the sentence embeddings: compare how similar two sentences look to each model."),
      el("form", { class: "row", onsubmit: (e) => (e.preventDefault(), void sim()) }, a, b, el("button", { type: "submit", "data-testid": "sim-button" }, "Compare")),
      simOut,
    );
    tryIt.hidden = false;
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
    // (replaceChildren writes a null as the text "null": absent groups are left out first.)
    const parts = [
      onReport
        ? el(
            "p",
            {},
            el("button", { type: "button", "data-testid": "download-report-html", onclick: () => onReport("html") }, "Download report (HTML)"),
            " ",
            el("button", { type: "button", "data-testid": "download-report", onclick: () => onReport("json") }, "Download report (JSON)"),
            " — settings, data summary, curves, before/after numbers and examples: a page that opens offline, or the numbers to compare runs.",
          )
        : null,
      el("h3", {}, "Download the fine-tuned model"),
      el("p", { class: "help" }, "The files are made in this tab and saved straight to your computer; nothing is uploaded."),
      group(
        "Merged model (Hugging Face folder)",
        merged,
        "merged/",
        mergedHelp(merged),
      ),
      group("LoRA adapter (PEFT)", adapter, "adapter/", "Only the adapter weights: load them on top of the base model with PEFT."),
      group("Other files", other, "", null),
    ].filter(Boolean);
    downloads.replaceChildren(...parts);
    downloads.hidden = false;
  }

  return {
    show(result) {
      empty.hidden = true;
      baselineEl.hidden = true;
      if (result.task === "classification") {
        renderClassTable(result);
        renderClasses(result);
        renderTryIt(result);
      } else if (result.task === "embedding") {
        renderRetrievalTable(result);
        renderRetrievalChanges(result);
        renderSimilarity(result);
      } else {
        renderTable(result);
        classes.hidden = true;
        tryIt.hidden = true;
      }
      const v = verdictFor(result);
      verdict.textContent = v.text;
      verdict.dataset.outcome = v.outcome;
      renderSamples(result.samples);
      renderDownloads(result.files);
    },
    /** The base model is being scored on the checked dataset's held-out split. */
    baselinePending(name) {
      baselineEl.hidden = false;
      baselineEl.dataset.state = "pending";
      baselineEl.textContent = `Scoring the base model on the held-out examples of ${name}…`;
    },
    /** The base model's score ("before"), or why there is none (`error`); both null: hide it. */
    baseline(r, error) {
      baselineEl.hidden = !r && !error;
      if (error) {
        baselineEl.dataset.state = "error";
        baselineEl.textContent = `Could not score the base model before training: ${error.code} — ${error.message}`;
        return;
      }
      if (!r) return;
      baselineEl.dataset.state = "done";
      const n = formatInt(r.validation_examples ?? r.examples);
      const secs = Number.isFinite(r.seconds) ? ` in ${r.seconds.toFixed(1)} s` : "";
      if (r.task === "embedding") {
        baselineEl.textContent =
          `Before fine-tuning, on ${formatInt(r.pairs)} held-out pairs${secs}: recall@1 ${percent(r.accuracy)} (each text's own partner first among all ${formatInt(r.pairs)}), ` +
          `MRR ${three(r.mrr)}, cosine of a pair ${three(r.positive_cosine)} against ${three(r.negative_cosine)} with the others. Fine-tuning should raise recall@1 and MRR.`;
        return;
      }
      baselineEl.textContent =
        r.task === "classification"
          ? `Before fine-tuning, on ${n} held-out examples${secs}: accuracy ${(r.accuracy * 100).toFixed(1)}%, macro-F1 ${r.macro_f1.toFixed(3)}, loss ${formatLoss(r.loss)}. ` +
            "A new classification head starts untrained, so this is about chance level: the number to beat."
          : `Before fine-tuning, on ${n} held-out examples (${formatInt(r.tokens)} tokens scored${secs}): loss ${formatLoss(r.loss)}, perplexity ${formatInt(Math.round(r.perplexity))}. Fine-tuning should lower both.`;
    },
    /** File sizes became known (after the first export). */
    sizes(files, sizes) {
      renderDownloads(files, sizes);
    },
    clear(text) {
      empty.hidden = false;
      baselineEl.hidden = true;
      empty.textContent = text ?? "Fine-tune a model to compare it with the base model here.";
      verdict.textContent = "";
      delete verdict.dataset.outcome;
      table.hidden = true;
      classes.hidden = true;
      tryIt.hidden = true;
      samples.hidden = true;
      downloads.hidden = true;
    },
  };
}
