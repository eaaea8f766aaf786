// Small formatting helpers shared by the page's components.

const integer = new Intl.NumberFormat("en", { maximumFractionDigits: 0 });

/** 12,345 */
export function formatInt(n) {
  return Number.isFinite(n) ? integer.format(n) : "–";
}

/**
 * What became of a job's held-out examples ({examples, scored, returned_to_training}): "34 of 89
 * held out are scored, 55 went back to training", or "" when all were scored.
 */
export function formatHeldOut(h) {
  if (!h || h.scored >= h.examples) return "";
  const rest = h.returned_to_training > 0 ? `${formatInt(h.returned_to_training)} went back to training` : `${formatInt(h.examples - h.scored)} are not scored`;
  return `${formatInt(h.scored)} of ${formatInt(h.examples)} held out are scored, ${rest}`;
}

/** A loss value: 4 significant decimals. */
export function formatLoss(x) {
  return Number.isFinite(x) ? x.toFixed(4) : "–";
}

/** 0.003 → "0.003", 1e-5 → "1e-5". */
export function formatLr(x) {
  if (!Number.isFinite(x)) return "–";
  if (x === 0) return "0";
  return Math.abs(x) < 1e-3 ? x.toExponential(1) : String(Number(x.toPrecision(3)));
}

/** Seconds → "0.8 s", "12 s", "3 min 05 s", "1 h 02 min". */
export function formatDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "–";
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const s = Math.round(seconds);
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
}

/** A rate in 0..1 as a percentage. */
export function formatPercent(x) {
  return Number.isFinite(x) ? `${(x * 100).toFixed(1)}%` : "–";
}

/** Milliseconds with sensible precision. */
export function formatMs(ms) {
  if (!Number.isFinite(ms)) return "–";
  return ms < 10 ? `${ms.toFixed(2)} ms` : ms < 1000 ? `${ms.toFixed(1)} ms` : `${integer.format(ms)} ms`;
}

/** Bytes → "512 B", "1.5 MiB", "2.00 GiB". */
export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

/** Element helper: `el("p", {class: "x", "data-testid": "y"}, "text", child)`. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
