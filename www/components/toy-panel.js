// "Toy training" panel: steps / learning rate / seed inputs, Start and Cancel, a progress bar
// with live step, loss, tokens/s, elapsed, ETA and memory, the loss chart, and a results line.

import { el, formatBytes, formatDuration, formatInt, formatLoss, formatLr, formatMs } from "../lib/format.js";
import { createLossChart } from "./loss-chart.js";

const DEFAULTS = { steps: 200, lr: 0.003, seed: 42 };
const BACKEND_NAMES = { webgpu: "WebGPU", cpu: "CPU" };

/**
 * @param {HTMLElement} section  the panel's <section>
 * @param {{onStart: (config: object) => void, onCancel: () => void}} options
 */
export function createToyPanel(section, { onStart, onCancel }) {
  const input = (id, label, value, attrs) => {
    const field = el("input", { id, name: id, type: "number", value, required: true, "data-testid": id, ...attrs });
    return { field, wrap: el("div", { class: "field" }, el("label", { for: id }, label), field) };
  };
  const steps = input("steps", "Steps", DEFAULTS.steps, { min: 1, max: 1000000, step: 1, inputmode: "numeric" });
  const lr = input("lr", "Learning rate", DEFAULTS.lr, { min: 0, step: "any", inputmode: "decimal" });
  const seed = input("seed", "Seed", DEFAULTS.seed, { min: 0, step: 1, inputmode: "numeric" });

  const start = el("button", { type: "submit", class: "primary", "data-testid": "start" }, "Start");
  const cancel = el("button", { type: "button", "data-testid": "cancel", disabled: true, onclick: () => onCancel() }, "Cancel");

  // The worker validates the config (errors come back as `config.invalid`), so the browser's
  // own form validation is off: out-of-range values reach wasm and get its message.
  const form = el(
    "form",
    { class: "toy-form", novalidate: true, "aria-describedby": "toy-help" },
    el("div", { class: "fields" }, steps.wrap, lr.wrap, seed.wrap),
    el("div", { class: "buttons" }, start, cancel),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    onStart({ steps: steps.field.valueAsNumber, lr: lr.field.valueAsNumber, seed: seed.field.valueAsNumber });
  });

  const bar = el("progress", { max: 1, value: 0, "data-testid": "progress", "aria-label": "Training progress" });
  const stat = (label, testid) => {
    const value = el("span", { class: "stat-value", "data-testid": testid }, "–");
    return { value, wrap: el("div", { class: "stat" }, el("span", { class: "stat-label" }, label), value) };
  };
  const step = stat("Step", "progress-step");
  const loss = stat("Loss", "loss-value");
  const rate = stat("Tokens/s", "tokens-per-s");
  const elapsed = stat("Elapsed", "elapsed");
  const eta = stat("ETA", "eta");
  const memory = stat("Memory", "memory");
  memory.wrap.hidden = true;

  const chartBox = el("div", { class: "chart", role: "img", "aria-label": "Training loss by step", "data-testid": "loss-chart" });
  const result = el("p", { class: "result", "data-testid": "result" }, "No run yet.");

  section.append(
    el("h2", { id: "toy-title" }, "Toy training"),
    el(
      "p",
      { id: "toy-help", class: "help" },
      "A one-block transformer learns to copy the first half of each sequence into the second half. " +
        "Untrained, the loss is about ln 16 ≈ 2.77; it should fall well below that.",
    ),
    form,
    el("div", { class: "progress-row" }, bar),
    el("div", { class: "stats" }, step.wrap, loss.wrap, rate.wrap, elapsed.wrap, eta.wrap, memory.wrap),
    chartBox,
    result,
  );

  const chart = createLossChart(chartBox);
  let latest = null;
  let frame = 0;
  // The previous curve stays until the new run's first step (a refused config keeps it).
  let chartResetPending = false;

  function render() {
    frame = 0;
    const p = latest;
    if (!p) return;
    bar.max = p.total_steps;
    bar.value = p.step;
    step.value.textContent = `${formatInt(p.step)} / ${formatInt(p.total_steps)}`;
    loss.value.textContent = formatLoss(p.loss);
    rate.value.textContent = formatInt(p.tokens_per_s);
    elapsed.value.textContent = formatDuration(p.elapsed_s);
    eta.value.textContent = formatDuration(p.eta_s);
    memory.wrap.hidden = p.memory_bytes == null;
    if (p.memory_bytes != null) memory.value.textContent = formatBytes(p.memory_bytes);
  }

  return {
    /** Enable/disable the controls: mode is "idle" | "running" | "cancelling" | "unavailable". */
    setMode(mode) {
      start.disabled = mode !== "idle";
      cancel.disabled = mode !== "running";
      for (const f of [steps.field, lr.field, seed.field]) f.disabled = mode === "running" || mode === "cancelling";
      section.dataset.mode = mode;
    },
    /** A run begins. */
    begin(config) {
      latest = null;
      bar.max = Number.isFinite(config.steps) && config.steps > 0 ? config.steps : 1;
      bar.value = 0;
      for (const s of [step, loss, rate, elapsed, eta, memory]) s.value.textContent = "–";
      memory.wrap.hidden = true;
      delete result.dataset.outcome;
      result.textContent = `Running (lr ${formatLr(config.lr ?? DEFAULTS.lr)}, seed ${config.seed ?? DEFAULTS.seed})…`;
      chartResetPending = true;
    },
    /** One progress message. Text is redrawn at most once per frame. */
    progress(p) {
      latest = p;
      if (chartResetPending) {
        chartResetPending = false;
        chart.reset(p.total_steps);
      }
      chart.push(p.step, p.loss, p.total_steps);
      if (frame === 0) frame = requestAnimationFrame(render);
    },
    /** The run ended with a summary. */
    finish(summary) {
      render();
      chart.flush();
      const ratio = summary.final_loss / summary.initial_loss;
      const backend = BACKEND_NAMES[summary.backend] ?? summary.backend;
      const head = summary.cancelled ? `Cancelled after ${formatInt(summary.steps)} steps. ` : `Done: ${formatInt(summary.steps)} steps on ${backend}. `;
      result.textContent =
        head +
        `Loss ${formatLoss(summary.initial_loss)} → ${formatLoss(summary.final_loss)}` +
        (Number.isFinite(ratio) ? ` (×${ratio.toFixed(2)})` : "") +
        ` · ${formatMs(summary.median_step_ms)}/step (median; first step ${formatMs(summary.first_step_ms)})` +
        ` · ${formatInt(summary.tokens_per_s)} tokens/s`;
      result.dataset.outcome = summary.cancelled ? "cancelled" : "done";
    },
    /** The run failed. */
    fail(error) {
      chartResetPending = false;
      render();
      chart.flush();
      result.textContent = `Failed: ${error.code} — ${error.message}`;
      result.dataset.outcome = "error";
    },
  };
}
