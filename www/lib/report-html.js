// The evaluation report (app.js `evaluationReport()`) as one self-contained HTML document: inline
// CSS, no scripts, no external resources (a Content-Security-Policy says so too), so the file
// opens offline and shows the same thing on any machine. Curves are inline SVG polylines drawn
// from the numbers: a static document needs no charting library.
//
// Every string that comes from data (dataset text, labels, file names, model output) goes
// through `html`'s escaping: dataset text is user input and must not become markup. Pure and
// free of DOM use, so node tests import it directly.

import { formatBytes, formatInt, formatLoss, formatLr } from "./format.js";
import { changeInterval, intervalsOf, pct, percent, points, signed, verdictFor } from "../components/results-panel.js";

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

/** Text → HTML text (also safe inside a quoted attribute). */
export function escapeHtml(value) {
  return String(value).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

/** Markup built by `html`: interpolated into another `html` without being escaped again. */
class Markup {
  constructor(text) {
    this.text = text;
  }
  toString() {
    return this.text;
  }
}

function render(value) {
  if (value instanceof Markup) return value.text;
  if (Array.isArray(value)) return value.map(render).join("");
  if (value === null || value === undefined || value === false) return "";
  return escapeHtml(value);
}

/** Tagged template: every interpolated value is escaped unless it is itself `html` markup. */
function html(strings, ...values) {
  let out = strings[0];
  values.forEach((v, i) => {
    out += render(v) + strings[i + 1];
  });
  return new Markup(out);
}

const fixed = (digits) => (x) => (Number.isFinite(x) ? x.toFixed(digits) : "–");
const seconds = (x) => (Number.isFinite(x) ? `${x.toFixed(1)} s` : "–");

/** `{train: {lr: 0.01}}` → [["train.lr", "0.01"]]: the settings as given, one row each. */
function flatten(value, prefix = "", out = []) {
  for (const [key, v] of Object.entries(value ?? {})) {
    const name = prefix ? `${prefix}.${key}` : key;
    if (v !== null && typeof v === "object" && !Array.isArray(v)) flatten(v, name, out);
    else out.push([name, Array.isArray(v) ? v.map((x) => (typeof x === "object" ? JSON.stringify(x) : String(x))).join(", ") : String(v)]);
  }
  return out;
}

/** The model's name for the title: the Hub repo, else its architecture. */
function modelName(report) {
  const repo = report.model_source?.repo;
  if (repo) return repo;
  const arch = report.model?.architecture;
  return arch ? `${arch} (local files)` : "a model";
}

/** "2025-01-31T12:34:56.789Z" → "2025-01-31 12:34 UTC" (what the file says, wherever it is opened). */
function when(iso) {
  return typeof iso === "string" && /^\d{4}-\d\d-\d\dT\d\d:\d\d/.test(iso) ? `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC` : "an unknown date";
}

// --- before → after -----------------------------------------------------------------------------

/**
 * One metrics row: `better` is "lower", "higher" or null (a count: no change shown). Rates in
 * 0..1 change in percentage points, figures with `digits` by their difference (as retrieval's
 * changes are judged), others in percent, as the results panel shows them.
 */
function metricRow({ label, key, before, after, fmt, better, rate = false, digits = null, interval = null }) {
  if (!Number.isFinite(before) && !Number.isFinite(after)) return null;
  let change = "";
  let isBetter = "";
  if (better && Number.isFinite(before) && Number.isFinite(after)) {
    if (rate) change = points(before, after);
    else if (digits !== null) change = `${after >= before ? "+" : "−"}${Math.abs(after - before).toFixed(digits)}`;
    else change = before !== 0 ? signed(pct(before, after)) : "–";
    if (after !== before) isBetter = String(better === "lower" ? after < before : after > before);
  }
  const ci = interval?.change ? changeInterval(interval.change, interval.fmt) : "";
  return html`<tr data-metric="${key}"><th scope="row">${label}</th><td class="before">${fmt(before)}</td><td class="after">${fmt(after)}</td><td class="change" data-better="${isBetter}">${change}</td><td class="interval" data-outcome="${interval?.change?.outcome ?? ""}">${ci}</td></tr>`;
}

/** "Validation loss: base 7.0512–7.1722, fine-tuned 5.0012–5.0801": the figures' intervals. */
function figureIntervals(rows, intervals) {
  const parts = rows
    .filter((r) => intervals[r.key]?.before || intervals[r.key]?.after)
    .map((r) => {
      const i = intervals[r.key];
      const range = (x) => (x ? `${r.fmt(x.low)}–${r.fmt(x.high)}` : "–");
      return `${r.label}: base ${range(i.before)}, fine-tuned ${range(i.after)}`;
    });
  return parts.length ? html`<p class="help" id="intervals">95% intervals of the figures (Wilson for accuracy, a bootstrap over the held-out units otherwise): ${parts.join("; ")}.</p>` : "";
}

/** A sentence embedder's rows: retrieval on the held-out pairs. */
function retrievalRows(b, a) {
  return [
    { label: "Recall@1 (its own partner ranks first)", key: "accuracy", before: b.accuracy, after: a.accuracy, fmt: percent, better: "higher", rate: true },
    { label: "Mean reciprocal rank", key: "mrr", before: b.mrr, after: a.mrr, fmt: fixed(3), better: "higher", digits: 3 },
    { label: "Cosine of a pair", key: "positive_cosine", before: b.positive_cosine, after: a.positive_cosine, fmt: fixed(3), better: "higher", digits: 3 },
    { label: "Cosine with the other partners", key: "negative_cosine", before: b.negative_cosine, after: a.negative_cosine, fmt: fixed(3), better: null },
    { label: "Validation loss (contrastive)", key: "loss", before: b.loss, after: a.loss, fmt: formatLoss, better: "lower", digits: 4 },
    { label: "Held-out pairs", key: "pairs", before: b.pairs, after: a.pairs, fmt: formatInt, better: null },
  ];
}

function metricsTable(result) {
  const b = result.before ?? {};
  const a = result.after ?? {};
  const classification = result.task === "classification";
  const rows = result.task === "embedding"
    ? retrievalRows(b, a)
    : classification
    ? [
        { label: "Accuracy", key: "accuracy", before: b.accuracy, after: a.accuracy, fmt: percent, better: "higher", rate: true },
        { label: "Macro-F1", key: "macro_f1", before: b.macro_f1, after: a.macro_f1, fmt: fixed(3), better: "higher", rate: true },
        { label: "Validation loss", key: "loss", before: b.loss, after: a.loss, fmt: formatLoss, better: "lower" },
        { label: "Held-out examples", key: "examples", before: b.examples, after: a.examples, fmt: formatInt, better: null },
        { label: "Evaluation time", key: "seconds", before: b.seconds, after: a.seconds, fmt: seconds, better: null },
      ]
    : [
        { label: "Validation loss", key: "loss", before: b.loss, after: a.loss, fmt: formatLoss, better: "lower" },
        { label: "Perplexity", key: "perplexity", before: b.perplexity, after: a.perplexity, fmt: fixed(2), better: "lower" },
        { label: "Exact match (greedy answers)", key: "exact_match", before: result.answers_before?.exact_match, after: result.answers_after?.exact_match, fmt: percent, better: "higher", rate: true },
        { label: "Token F1 (greedy answers)", key: "token_f1", before: result.answers_before?.token_f1, after: result.answers_after?.token_f1, fmt: fixed(3), better: "higher", rate: true },
        { label: "Answers compared", key: "answers", before: result.answers_before?.examples, after: result.answers_after?.examples, fmt: formatInt, better: null },
        // The causal job scores both models on the same held-out split.
        { label: "Held-out examples", key: "examples", before: result.before ? result.validation_examples : null, after: result.after ? result.validation_examples : null, fmt: formatInt, better: null },
        { label: "Tokens scored", key: "tokens", before: b.tokens, after: a.tokens, fmt: formatInt, better: null },
        { label: "Evaluation time", key: "seconds", before: b.seconds, after: a.seconds, fmt: seconds, better: null },
      ];
  const intervals = intervalsOf(result);
  const body = rows.map((r) => metricRow({ ...r, interval: intervals[r.key] })).filter(Boolean);
  if (!body.length) return html`<p class="help">There were no held-out examples to evaluate, so there are no before/after numbers.</p>`;
  return html`<table class="metrics" id="metrics">
<thead><tr><th></th><th scope="col">Base model</th><th scope="col">Fine-tuned</th><th scope="col">Change</th><th scope="col">95% interval of the change</th></tr></thead>
<tbody>
${body.map((r) => html`${r}\n`)}</tbody>
</table>
${figureIntervals(rows, intervals)}`;
}

function perClassTable(result) {
  const labels = result.labels ?? [];
  const f = fixed(3);
  const cells = (s) => (s ? html`<td>${f(s.precision)}</td><td>${f(s.recall)}</td><td>${f(s.f1)}</td>` : html`<td>–</td><td>–</td><td>–</td>`);
  return html`<table class="per-class" id="per-class">
<caption>Precision, recall and F1 per class</caption>
<thead><tr><th scope="col" rowspan="2">Label</th><th scope="col" rowspan="2">Support</th><th scope="colgroup" colspan="3">Base model</th><th scope="colgroup" colspan="3">Fine-tuned</th></tr>
<tr><th scope="col">P</th><th scope="col">R</th><th scope="col">F1</th><th scope="col">P</th><th scope="col">R</th><th scope="col">F1</th></tr></thead>
<tbody>
${labels.map((l, i) => {
  const b = result.before?.per_class?.[i];
  const a = result.after?.per_class?.[i];
  return html`<tr data-label="${l}"><th scope="row">${l}</th><td>${formatInt(a?.support ?? b?.support)}</td>${cells(b)}${cells(a)}</tr>\n`;
})}</tbody>
</table>`;
}

function confusion(title, which, labels, m) {
  return html`<table class="confusion" data-matrix="${which}">
<caption>${title}</caption>
<thead><tr><th scope="col">true ↓ / predicted →</th>${labels.map((l) => html`<th scope="col">${l}</th>`)}</tr></thead>
<tbody>
${labels.map((l, i) => html`<tr><th scope="row">${l}</th>${labels.map((_, j) => html`<td data-diagonal="${String(i === j)}">${m?.[i]?.[j] ?? 0}</td>`)}</tr>\n`)}</tbody>
</table>`;
}

// --- curves -------------------------------------------------------------------------------------

const CHART = { width: 640, height: 220, left: 64, right: 16, top: 14, bottom: 34 };

function extent(values) {
  // A loop, not Math.min(...values): a long run has more steps than a call takes arguments.
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  // A flat series still needs a band to be drawn in.
  if (lo === hi) {
    const pad = Math.abs(lo) * 0.1 || 1;
    lo -= pad;
    hi += pad;
  }
  return [lo, hi];
}

/**
 * An SVG line chart: `series` = [{name, key, color, points: [[x, y]], dots}]. Axes are the data's
 * extent, labelled with their min and max; non-finite points are left out.
 */
function lineChart({ title, series, fmtY }) {
  const clean = series.map((s) => ({ ...s, points: s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)) }));
  const all = clean.flatMap((s) => s.points);
  if (!all.length) return html`<p class="help">No ${title.toLowerCase()} was recorded.</p>`;
  const { width, height, left, right, top, bottom } = CHART;
  const [x0, x1] = extent(all.map((p) => p[0]));
  const [y0, y1] = extent(all.map((p) => p[1]));
  const sx = (x) => left + ((x - x0) / (x1 - x0)) * (width - left - right);
  const sy = (y) => top + ((y1 - y) / (y1 - y0)) * (height - top - bottom);
  const xy = ([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`;
  const bottomY = height - bottom;
  const legend = clean.map((s, i) => html`<text x="${width - right - 170}" y="${top + 12 + 16 * i}" class="legend" fill="${s.color}">— ${s.name}</text>`);
  return html`<figure>
<svg viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" role="img" aria-label="${title}">
<rect x="${left}" y="${top}" width="${width - left - right}" height="${bottomY - top}" class="plot"/>
<text x="${left - 6}" y="${top + 4}" text-anchor="end" class="tick">${fmtY(y1)}</text>
<text x="${left - 6}" y="${bottomY}" text-anchor="end" class="tick">${fmtY(y0)}</text>
<text x="${left}" y="${bottomY + 16}" text-anchor="middle" class="tick">${formatInt(x0)}</text>
<text x="${width - right}" y="${bottomY + 16}" text-anchor="middle" class="tick">${formatInt(x1)}</text>
<text x="${(left + width - right) / 2}" y="${height - 4}" text-anchor="middle" class="tick">step</text>
${clean.map(
  (s) =>
    html`<polyline data-series="${s.key}" fill="none" stroke="${s.color}" stroke-width="1.5" points="${s.points.map(xy).join(" ")}"/>
${s.dots ? s.points.map((p) => html`<circle cx="${sx(p[0]).toFixed(1)}" cy="${sy(p[1]).toFixed(1)}" r="2.5" fill="${s.color}"/>`) : ""}
`,
)}${legend}
</svg>
<figcaption>${title}</figcaption>
</figure>`;
}

function curvesSection(curves) {
  if (!curves) return html`<p class="help">No curves were recorded.</p>`;
  const train = curves.steps.map((s, i) => [s, curves.train_loss[i]]);
  const validation = (curves.validation ?? []).map((p) => [p.step, p.loss]);
  const lr = curves.steps.map((s, i) => [s, curves.learning_rate[i]]);
  return html`${lineChart({
    title: "Loss per step: training (each step) and held-out validation",
    series: [
      { name: "train loss", key: "train_loss", color: "#2563eb", points: train },
      { name: "validation loss", key: "validation_loss", color: "#dc2626", points: validation, dots: true },
    ],
    fmtY: formatLoss,
  })}
${lineChart({ title: "Learning rate per step", series: [{ name: "learning rate", key: "learning_rate", color: "#059669", points: lr }], fmtY: formatLr })}`;
}

// --- examples -----------------------------------------------------------------------------------

/** What ranked first for a held-out text: its own partner, or another text (with the partner's rank). */
function retrieved(r) {
  if (!r) return "–";
  return html`${r.rank === 1 ? "its own partner" : r.text}<div class="source">partner ranked ${formatInt(r.rank)}, cosine ${fixed(3)(r.cosine)}</div>`;
}

function examplesSection(result) {
  if (result.task === "embedding") {
    const changed = result.changed ?? [];
    if (!changed.length) return html`<p class="help">No held-out text's best match changed.</p>`;
    const shown = result.changed_total > changed.length ? ` (first ${changed.length} of ${result.changed_total} shown)` : "";
    return html`<table class="examples" id="examples">
<caption>Held-out texts whose best match changed (each searched all held-out partners): ${formatInt(result.fixed)} fixed, ${formatInt(result.broken)} broken${shown}</caption>
<thead><tr><th scope="col">Status</th><th scope="col">Text</th><th scope="col">Its partner</th><th scope="col">Base model ranked first</th><th scope="col">Fine-tuned ranked first</th></tr></thead>
<tbody>
${changed.map(
  (c) =>
    html`<tr data-status="${c.status}"><td>${c.status}</td><td class="text">${c.anchor}<div class="source">${c.source}</div></td><td class="text">${c.positive}</td><td class="text">${retrieved(c.before)}</td><td class="text">${retrieved(c.after)}</td></tr>
`,
)}</tbody>
</table>`;
  }
  if (result.task === "classification") {
    const changed = result.changed ?? [];
    if (!changed.length) return html`<p class="help">No held-out prediction changed.</p>`;
    const shown = result.changed_total > changed.length ? ` (first ${changed.length} of ${result.changed_total} shown)` : "";
    return html`<table class="examples" id="examples">
<caption>Held-out examples whose prediction changed: ${formatInt(result.fixed)} fixed, ${formatInt(result.broken)} broken${shown}</caption>
<thead><tr><th scope="col">Status</th><th scope="col">Text</th><th scope="col">True label</th><th scope="col">Base model</th><th scope="col">Fine-tuned</th></tr></thead>
<tbody>
${changed.map(
  (c) =>
    html`<tr data-status="${c.status}"><td>${c.status}</td><td class="text">${c.text}<div class="source">${c.source}</div></td><td>${c.label}</td><td>${c.before?.label} (${percent(c.before?.prob)})</td><td>${c.after?.label} (${percent(c.after?.prob)})</td></tr>\n`,
)}</tbody>
</table>`;
  }
  const samples = result.samples ?? [];
  if (!samples.length) return html`<p class="help">No held-out examples were continued.</p>`;
  return html`<table class="examples" id="examples">
<caption>Held-out prompts continued greedily by both models, next to what the data says follows</caption>
<thead><tr><th scope="col">Prompt</th><th scope="col">Reference</th><th scope="col">Base model</th><th scope="col">Fine-tuned</th></tr></thead>
<tbody>
${samples.map(
  (s) =>
    html`<tr><td class="text">${s.prompt}<div class="source">${s.source}</div></td><td class="text">${s.reference}</td><td class="text">${s.before}</td><td class="text">${s.after}</td></tr>\n`,
)}</tbody>
</table>`;
}

// --- settings and data --------------------------------------------------------------------------

function facts(rows) {
  return html`<table class="facts">
<tbody>
${rows.filter(Boolean).map(([k, v]) => html`<tr><th scope="row">${k}</th><td>${v}</td></tr>\n`)}</tbody>
</table>`;
}

function settingsSection(report) {
  const s = report.result?.summary ?? {};
  const r = report.result ?? {};
  // Tasks that count examples report examples_per_s (their tokens_per_s counts nothing).
  const speed = Number.isFinite(s.examples_per_s) ? `${s.examples_per_s.toFixed(1)} ${r.task === "embedding" ? "pairs" : "examples"}/s` : Number.isFinite(s.tokens_per_s) ? `${formatInt(s.tokens_per_s)} tokens/s` : "–";
  const run = facts([
    ["Method", s.method ?? "–"],
    ["Steps run", `${formatInt(s.steps)}${s.cancelled ? " (stopped early)" : ""}`],
    ["Trainable parameters", `${formatInt(s.trainable_params)} of ${formatInt(s.total_params)}`],
    r.task === "classification" ? ["Head", `${r.pooling ?? "–"} pooling, ${r.head_from_checkpoint ? "from the checkpoint" : "new"}`] : null,
    r.task === "embedding" ? ["Embeddings", `${r.pooling ?? "–"} pooling, cosine scale ${r.scale ?? "–"}, at most ${formatInt(r.seq_len)} tokens per text`] : null,
    ["Backend", report.backend?.backend ?? s.backend ?? "–"],
    ["Step time (median, first)", `${fixed(1)(s.median_step_ms)} ms, ${fixed(1)(s.first_step_ms)} ms`],
    ["Speed", speed],
  ]);
  const given = flatten(report.config);
  return html`<h3>The run</h3>
${run}
<h3>Settings</h3>
${
  given.length
    ? html`<table class="facts" id="hyperparameters">
<tbody>
${given.map(([k, v]) => html`<tr><th scope="row">${k}</th><td>${v}</td></tr>\n`)}</tbody>
</table>`
    : ""
}
<p class="help">The job configuration as it was given; settings not listed took webtune's defaults.</p>`;
}

function dataSection(d) {
  if (!d) return html`<p class="help">No data report was recorded.</p>`;
  const skipped = Object.entries(d.skipped_by_reason ?? {});
  const schema = d.schema ? `${String(d.schema.kind ?? "?").replaceAll("_", " ")}${d.schema_detected === false ? " (chosen)" : " (detected)"}` : "–";
  const mapping = d.schema
    ? Object.entries(d.schema)
        .filter(([k]) => k !== "kind")
        .map(([k, v]) => `${k} ← ${v}`)
        .join(", ")
    : "";
  const t = d.tokens;
  const table = facts([
    ["File", `${d.file} (${formatBytes(d.bytes)})`],
    ["Format", `${d.format}${d.encoding && d.encoding !== "utf-8" ? ` (${d.encoding})` : ""}`],
    ["Schema", mapping ? `${schema}: ${mapping}` : schema],
    ["Records", formatInt(d.records)],
    ["Examples kept", d.sampled == null ? formatInt(d.examples) : `${formatInt(d.examples)}, of which a random ${formatInt(d.sampled)} were used`],
    ["Skipped", d.skipped ? `${formatInt(d.skipped)}: ${skipped.map(([k, n]) => `${k.replaceAll("_", " ")} ×${n}`).join(", ")}` : "none"],
    ["Duplicates", formatInt(d.duplicates)],
    ["Split", `${formatInt(d.train_examples)} training · ${formatInt(d.validation_examples)} validation`],
    d.validation_file
      ? ["Validation file", `${d.validation_file.file} (${formatBytes(d.validation_file.bytes)}): ${formatInt(d.validation_file.examples)} examples kept${d.overlap_removed ? ` · ${formatInt(d.overlap_removed)} training example(s) also in it were left out of training` : ""}`]
      : null,
    ["Training batches", formatInt(d.train_batches)],
    t ? ["Tokens per example (min / median / p95 / max)", `${t.min} / ${t.median} / ${t.p95} / ${t.max}`] : null,
    t ? ["Tokens per example (mean) · total", `${fixed(1)(t.mean)} · ${formatInt(t.total)}`] : null,
    t ? ["Truncated", `${formatInt(t.truncated)} longer than ${t.seq_len} tokens`] : null,
    d.chat_template ? ["Chat template", d.chat_template] : null,
  ]);
  const labels = d.labels
    ? html`<table class="labels" id="labels">
<caption>Label distribution</caption>
<thead><tr><th scope="col">Label</th><th scope="col">Examples</th></tr></thead>
<tbody>
${Object.entries(d.labels).map(([l, n]) => html`<tr><td>${l}</td><td>${formatInt(n)}</td></tr>\n`)}</tbody>
</table>`
    : "";
  return html`${table}\n${labels}`;
}

/** What the reader should know besides the verdict: data problems kept or skipped, truncation. */
function notes(d) {
  const out = [...(d?.warnings ?? [])];
  if (d?.skipped) out.push(`${formatInt(d.skipped)} record(s) of ${d.file} were skipped (see the data summary).`);
  if (d?.tokens?.truncated) out.push(`${formatInt(d.tokens.truncated)} example(s) were longer than ${d.tokens.seq_len} tokens and were cut.`);
  return out;
}

function verdictOf(result) {
  // The classification verdict reads both evaluations; without them there is nothing to judge.
  if (!result.before || !result.after) return { text: "There were no held-out examples to evaluate, so there is no before/after comparison.", outcome: "none" };
  return verdictFor(result);
}

const STYLE = `
:root { color-scheme: light dark; --fg: #1d2330; --bg: #ffffff; --muted: #5b6475; --border: #d9dde5; --good: #15803d; --bad: #b91c1c; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e9ef; --bg: #111418; --muted: #a2aab8; --border: #2e343d; --good: #4ade80; --bad: #f87171; } }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--fg); background: var(--bg); max-width: 60rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.45; }
h1 { margin-bottom: 0.25rem; }
.meta, .help, .source, figcaption, caption { color: var(--muted); font-size: 0.9rem; }
caption { text-align: left; padding: 0.25rem 0; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid var(--border); padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
td { font-variant-numeric: tabular-nums; }
.facts th { font-weight: normal; color: var(--muted); }
.examples td.text { white-space: pre-wrap; word-break: break-word; max-width: 18rem; }
.source { margin-top: 0.25rem; }
[data-better="true"] { color: var(--good); }
[data-better="false"] { color: var(--bad); }
.verdict { font-size: 1.1rem; padding: 0.6rem 0.8rem; border-left: 4px solid var(--border); }
.verdict[data-outcome="better"] { border-color: var(--good); }
.verdict[data-outcome="worse"] { border-color: var(--bad); }
.confusions { display: flex; flex-wrap: wrap; gap: 1.5rem; }
td[data-diagonal="true"] { font-weight: bold; }
figure { margin: 0.5rem 0 1rem; }
svg { max-width: 100%; height: auto; }
svg .plot { fill: none; stroke: var(--border); }
svg text { font-size: 11px; fill: var(--muted); }
svg text.legend { font-size: 12px; }
`;

/**
 * The report as a complete HTML document (a string). `report` is `evaluationReport()`'s object:
 * {webtune_version, created, backend, model, model_source, dataset, validation_file, task,
 * config, data_summary, curves, result}.
 */
export function reportHtml(report) {
  if (!report || typeof report !== "object" || !report.result) {
    throw new Error("reportHtml needs an evaluation report with a result (window.webtune.evaluationReport()); got none.");
  }
  const result = report.result;
  const model = modelName(report);
  const date = when(report.created);
  const title = `webtune report: ${model} on ${report.dataset ?? "a dataset"}, ${date}`;
  const verdict = verdictOf(result);
  const remarks = notes(report.data_summary);
  const classification = result.task === "classification";
  const info = report.model ?? {};
  // The architecture is already in the name when there is no repo to name the model by.
  const modelFacts = [report.model_source?.repo ? info.architecture : null, Number.isFinite(info.parameters) ? `${formatInt(info.parameters)} parameters` : null].filter(Boolean).join(", ");
  const doc = html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="webtune ${report.webtune_version ?? ""}">
<title>${title}</title>
<style>${new Markup(STYLE)}</style>
</head>
<body>
<header>
<h1>Fine-tuning report</h1>
<p class="meta"><span id="model">${model}</span>${modelFacts ? ` (${modelFacts})` : ""} fine-tuned on <span id="dataset">${report.dataset ?? "–"}</span>${report.validation_file ? ` with the validation file ${report.validation_file}` : ""} · ${date} · ${report.backend?.backend ?? "–"} backend · webtune ${report.webtune_version ?? "–"}</p>
</header>
<main>
<section id="verdict-section">
<h2>Verdict</h2>
<p class="verdict" id="verdict" data-outcome="${verdict.outcome}">${verdict.text}</p>
${remarks.length ? html`<ul class="notes" id="notes">${remarks.map((n) => html`<li>${n}</li>`)}</ul>` : ""}
</section>
<section id="metrics-section">
<h2>Before → after (held-out validation set)</h2>
${metricsTable(result)}
${
  classification
    ? html`${perClassTable(result)}
<div class="confusions">${confusion("Confusion matrix, base model", "before", result.labels ?? [], result.before?.confusion_matrix)}${confusion("Confusion matrix, fine-tuned", "after", result.labels ?? [], result.after?.confusion_matrix)}</div>`
    : ""
}
</section>
<section id="curves">
<h2>Curves</h2>
${curvesSection(report.curves)}
</section>
<section id="examples-section">
<h2>Examples</h2>
${examplesSection(result)}
</section>
<section id="settings">
<h2>Hyperparameters</h2>
${settingsSection(report)}
</section>
<section id="data">
<h2>Data summary</h2>
${dataSection(report.data_summary)}
</section>
</main>
<footer><p class="help">Made in the browser by webtune; the data never left the machine. This file holds no scripts and loads nothing.</p></footer>
</body>
</html>
`;
  return doc.text;
}
