// Live training-loss chart, drawn by uPlot (vendored into www/vendor/uplot by `cargo xtask
// build-wasm`). Points are buffered and drawn at most once per animation frame. With
// `{validation: true}` a second series shows validation-loss points (pushEval) on the same axes.

import uPlot from "../vendor/uplot/uPlot.esm.js";

const HEIGHT = 240;

/**
 * @param {HTMLElement} container  element the chart fills (its width is followed)
 * @param {{validation?: boolean}} [options]  validation: add a "validation loss" point series
 * @returns {{reset: Function, push: Function, pushEval: Function, flush: Function, data: Function}}
 */
export function createLossChart(container, { validation = false } = {}) {
  let steps = [];
  let losses = [];
  let evals = [];
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
        ],
        axes: [axis("step"), axis("loss")],
        legend: { show: true, live: true },
        cursor: { drag: { x: false, y: false } },
      },
      series(),
      container,
    );
  }

  function series() {
    return validation ? [steps, losses, evals] : [steps, losses];
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
    totalSteps = total > 0 ? total : 1;
    flush();
  }

  /** Add one point. */
  function push(step, loss, total) {
    if (Number.isFinite(total) && total > 0) totalSteps = total;
    steps.push(step);
    losses.push(Number.isFinite(loss) ? loss : null);
    evals.push(null);
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
    }
    schedule();
  }

  /** What is plotted: {steps, losses, evals}. */
  function data() {
    return { steps: [...steps], losses: [...losses], evals: [...evals] };
  }

  build();
  new ResizeObserver(() => {
    if (chart && chart.width !== width()) chart.setSize({ width: width(), height: HEIGHT });
  }).observe(container);
  // Canvas colours do not follow CSS: rebuild when the colour scheme changes.
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", build);

  return { reset, push, pushEval, flush, data };
}
