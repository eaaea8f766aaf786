// Live training-loss chart, drawn by uPlot (vendored into www/vendor/uplot by `cargo xtask
// build-wasm`). Points are buffered and drawn at most once per animation frame. With
// `{validation: true}` a second series shows validation-loss points (pushEval) on the same axes;
// with `{lr: true}` the learning rate of each step is drawn on its own scale (right axis), so a
// warmup or a decay is visible next to the loss it causes.

import uPlot from "../vendor/uplot/uPlot.esm.js";

const HEIGHT = 240;

/**
 * @param {HTMLElement} container  element the chart fills (its width is followed)
 * @param {{validation?: boolean, lr?: boolean}} [options]  validation: add a "validation loss"
 *   point series; lr: add a "learning rate" line on a right-hand axis (push's 4th argument)
 * @returns {{reset: Function, push: Function, pushEval: Function, flush: Function, data: Function}}
 */
export function createLossChart(container, { validation = false, lr = false } = {}) {
  let steps = [];
  let losses = [];
  let evals = [];
  let lrs = [];
  let totalSteps = 1;
  let frame = 0;
  let chart = null;

  function colors() {
    const style = getComputedStyle(container);
    return {
      text: style.getPropertyValue("--fg").trim() || "#222",
      grid: style.getPropertyValue("--grid").trim() || "rgba(128,128,128,0.25)",
      line: style.getPropertyValue("--accent").trim() || "#2563eb",
      eval: style.getPropertyValue("--eval").trim() || "#d9480f",
      lr: style.getPropertyValue("--lr").trim() || "#7c8a99",
    };
  }

  function width() {
    return Math.max(240, Math.floor(container.clientWidth || 600));
  }

  function build() {
    chart?.destroy();
    const c = colors();
    const axis = (label) => ({
      label,
      stroke: c.text,
      grid: { stroke: c.grid, width: 1 },
      ticks: { stroke: c.grid, width: 1 },
    });
    chart = new uPlot(
      {
        width: width(),
        height: HEIGHT,
        scales: {
          x: { time: false, range: () => [1, Math.max(2, totalSteps)] },
          y: { range: (_u, _min, max) => [0, Math.max(0.5, Number.isFinite(max) ? max * 1.05 : 3)] },
          ...(lr ? { lr: { range: (_u, _min, max) => [0, Number.isFinite(max) && max > 0 ? max * 1.1 : 1] } } : {}),
        },
        series: [
          { label: "step", value: (_u, v) => (v == null ? "–" : String(v)) },
          {
            label: "train loss",
            stroke: c.line,
            width: 2,
            points: { show: false },
            value: (_u, v) => (v == null ? "–" : v.toFixed(4)),
          },
          ...(validation
            ? [
                {
                  label: "validation loss",
                  stroke: c.eval,
                  width: 0,
                  paths: () => null,
                  points: { show: true, size: 9, width: 2, stroke: c.eval, fill: c.eval },
                  value: (_u, v) => (v == null ? "–" : v.toFixed(4)),
                },
              ]
            : []),
          ...(lr
            ? [
                {
                  label: "learning rate",
                  scale: "lr",
                  stroke: c.lr,
                  width: 1,
                  dash: [4, 4],
                  points: { show: false },
                  value: (_u, v) => (v == null ? "–" : v.toExponential(2)),
                },
              ]
            : []),
        ],
        axes: [
          axis("step"),
          axis("loss"),
          ...(lr ? [{ ...axis("learning rate"), scale: "lr", side: 1, grid: { show: false }, values: (_u, ticks) => ticks.map((t) => (t === 0 ? "0" : t.toExponential(0))) }] : []),
        ],
        legend: { show: true, live: true },
        cursor: { drag: { x: false, y: false } },
      },
      series(),
      container,
    );
  }

  /** uPlot's columns: x (steps), then one per series, null where a series has no point. */
  function series() {
    return /** @type {import("../vendor/uplot/uPlot.esm.js").AlignedData} */ ([steps, losses, ...(validation ? [evals] : []), ...(lr ? [lrs] : [])]);
  }

  function flush() {
    frame = 0;
    chart?.setData(series(), true);
  }

  function schedule() {
    if (frame === 0) frame = requestAnimationFrame(flush);
  }

  /** Start a new curve for a run of `total` steps. */
  function reset(total) {
    steps = [];
    losses = [];
    evals = [];
    lrs = [];
    totalSteps = total > 0 ? total : 1;
    flush();
  }

  /** Add one point (`rate`: that step's learning rate, drawn with `{lr: true}`). */
  function push(step, loss, total, rate) {
    if (Number.isFinite(total) && total > 0) totalSteps = total;
    steps.push(step);
    losses.push(Number.isFinite(loss) ? loss : null);
    evals.push(null);
    lrs.push(Number.isFinite(rate) ? rate : null);
    schedule();
  }

  /** A validation loss at `step` (a step already pushed, or a new x position). */
  function pushEval(step, loss) {
    if (!validation) return;
    const value = Number.isFinite(loss) ? loss : null;
    const at = steps.lastIndexOf(step);
    if (at >= 0) {
      evals[at] = value;
    } else {
      steps.push(step);
      losses.push(null);
      evals.push(value);
      lrs.push(null);
    }
    schedule();
  }

  /** What is plotted: {steps, losses, evals, lrs}. */
  function data() {
    return { steps: [...steps], losses: [...losses], evals: [...evals], lrs: [...lrs] };
  }

  build();
  // Resized on the next frame, not inside the observer's callback: resizing there changes the
  // layout the observer is reporting and ends in "ResizeObserver loop" errors on narrow screens.
  // A hidden container (a step not open yet, folded diagnostics) has no width to follow.
  let resizing = false;
  new ResizeObserver(() => {
    if (resizing || !container.clientWidth) return;
    resizing = true;
    requestAnimationFrame(() => {
      resizing = false;
      if (chart && container.clientWidth && chart.width !== width()) chart.setSize({ width: width(), height: HEIGHT });
    });
  }).observe(container);
  // Canvas colours do not follow CSS: rebuild when the colour scheme changes.
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", build);

  return { reset, push, pushEval, flush, data };
}
