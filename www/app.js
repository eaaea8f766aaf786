// webtune page entry point: starts the compute worker (one per backend choice), wires it to the
// panels, keeps the run history, and exposes `window.webtune` for debugging and the browser tests.
//
// URL parameters: ?backend=auto|webgpu|cpu (default auto); ?watchdog=<seconds> (default 60): how
// long the worker may stay silent while starting or training before the page offers a restart.
//
// window.webtune = {
//   backend,            latest backend message from the worker (null while a worker starts)
//   runs,               [{id, config, backend, status, progress: [...], summary, error}]
//   ready,              promise: the first backend message (rejects if the first worker fails first)
//   train(config),      start a toy run; resolves with its run record when it ends (never rejects)
//   cancel(), setBackend(choice), restartWorker(), whenReady()  (backend message of the current worker)
//   workerState, generation, backendChoice   (read-only)
// }

import { WorkerClient } from "./lib/worker-client.js";
import { createAlerts } from "./components/alerts.js";
import { createBackendPanel } from "./components/backend-panel.js";
import { createToyPanel } from "./components/toy-panel.js";

const CHOICES = ["auto", "webgpu", "cpu"];
const NAMES = { auto: "auto", webgpu: "WebGPU", cpu: "CPU" };

const params = new URLSearchParams(location.search);
const initialChoice = CHOICES.includes(params.get("backend")) ? params.get("backend") : "auto";
const watchdogSeconds = Number(params.get("watchdog"));
const watchdogMs = Number.isFinite(watchdogSeconds) && watchdogSeconds > 0 ? watchdogSeconds * 1000 : 60_000;

const statusEl = document.querySelector("[data-testid=status]");
const alerts = createAlerts(document.getElementById("alerts"));

/** Everything the page knows; `window.webtune` exposes it. */
const state = { backend: null, runs: [], activeRun: null };
const runsById = new Map();

let resolveReady;
let rejectReady;
const ready = new Promise((resolve, reject) => {
  resolveReady = resolve;
  rejectReady = reject;
});
ready.catch(() => {}); // a failed start is shown in the alert region; awaiting `ready` still rejects

const client = new WorkerClient({ workerUrl: new URL("./worker.js", import.meta.url), backend: initialChoice, watchdogMs });

const backendPanel = createBackendPanel(document.getElementById("backend-panel"), {
  choice: initialChoice,
  onChoose: (choice) => setBackend(choice),
  onRestart: () => restartWorker(),
});
const toyPanel = createToyPanel(document.getElementById("toy-panel"), {
  onStart: (config) => void train(config),
  onCancel: () => cancel(),
});

function setStatus(text, mode) {
  statusEl.textContent = text;
  statusEl.dataset.state = mode;
}

/** Bring the controls in line with the worker state and the active run. */
function updateMode() {
  const run = state.activeRun;
  let mode;
  if (run) mode = run.status === "cancelling" ? "cancelling" : "running";
  else if (client.state === "ready") mode = "idle";
  else mode = "unavailable";
  toyPanel.setMode(mode);
  document.body.dataset.mode = mode;
}

function restartAction() {
  return { label: "Restart worker", testid: "restart-worker-alert", run: () => restartWorker() };
}

client.on("state", ({ state: workerState }) => {
  backendPanel.showState(workerState);
  if (workerState === "starting") {
    state.backend = null;
    window.webtune.backend = null;
    backendPanel.showBackend(null);
    setStatus(`Starting the worker (${NAMES[client.backendChoice]})…`, "starting");
  } else if (workerState === "ready" && !state.activeRun) {
    setStatus(`Ready on ${NAMES[state.backend?.backend] ?? "?"}.`, "idle");
  } else if (workerState === "crashed") {
    setStatus("The worker stopped after a fatal error. Restart it to continue.", "crashed");
  }
  updateMode();
});

client.on("backend", (message) => {
  state.backend = message;
  window.webtune.backend = message;
  backendPanel.showBackend(message);
  resolveReady(message); // only the first call counts
  alerts.dismissWhere((code) => code === "worker.unresponsive");
});

client.on("progress", (message) => {
  const run = runsById.get(message.id);
  if (!run) return;
  const { type: _type, id: _id, ...progress } = message;
  run.progress.push(progress);
  if (run === state.activeRun) toyPanel.progress(progress);
});

client.on("error", ({ error, fatal }) => {
  if (fatal) {
    const actions = [restartAction()];
    if (error.code === "device.unavailable" && client.backendChoice !== "cpu") {
      actions.push({ label: "Use the CPU", testid: "use-cpu", run: () => setBackend("cpu") });
    }
    alerts.show(error, { actions });
    rejectReady(Object.assign(new Error(error.message), { code: error.code, details: error.details }));
  } else {
    alerts.show(error);
  }
});

client.on("stalled", ({ silentMs, state: workerState }) => {
  alerts.show(
    {
      code: "worker.unresponsive",
      message:
        `The worker has not answered for ${Math.round(silentMs / 1000)} s while ${workerState === "busy" ? "training" : "starting"}. ` +
        "It may be stuck (for example after a crash in the wasm module). Keep waiting, or restart it.",
    },
    { level: "warning", actions: [restartAction()] },
  );
});

/**
 * Start a toy run with `config` (snake_case keys, see worker.js). Resolves with the run record
 * when the run ends, successfully or not; never rejects.
 */
async function train(config = {}) {
  const run = {
    id: null,
    config: { ...config },
    backend: state.backend?.backend ?? null,
    status: "running",
    progress: [],
    summary: null,
    error: null,
  };
  state.runs.push(run);
  const refuse = (error) => {
    run.status = "error";
    run.error = error;
    alerts.show(error);
    return run;
  };
  if (state.activeRun) return refuse({ code: "train.busy", message: "A run is already in progress; cancel it or wait for it to finish." });
  if (client.state !== "ready") {
    return refuse({
      code: client.state === "crashed" ? "worker.crashed" : "worker.not_ready",
      message: client.state === "crashed" ? "The worker has stopped; restart it first." : "The backend is still starting; try again in a moment.",
    });
  }

  state.activeRun = run;
  toyPanel.begin(config);
  const { id, result } = client.trainToy(config);
  run.id = id;
  runsById.set(id, run);
  updateMode();
  setStatus(`Training on ${NAMES[state.backend?.backend] ?? "?"}…`, "running");

  const outcome = await result;
  state.activeRun = null;
  if (outcome.summary) {
    const s = outcome.summary;
    run.summary = s;
    run.status = s.cancelled ? "cancelled" : "done";
    toyPanel.finish(s);
    setStatus(
      s.cancelled ? `Run cancelled after ${s.steps} of ${run.config.steps ?? "?"} steps.` : `Run finished: ${s.steps} steps, loss ${s.initial_loss.toFixed(3)} → ${s.final_loss.toFixed(3)}.`,
      client.state === "ready" ? "idle" : client.state,
    );
  } else {
    run.error = outcome.error;
    run.status = "error";
    toyPanel.fail(outcome.error);
    // Fatal errors were already shown (with a restart button) when the worker was stopped.
    if (client.state !== "crashed") {
      const abandoned = outcome.error.code === "worker.restarted" || outcome.error.code === "worker.terminated";
      alerts.show(outcome.error, { level: abandoned ? "warning" : "error" });
      setStatus(`Run failed: ${outcome.error.code}.`, client.state === "ready" ? "idle" : client.state);
    }
  }
  updateMode();
  return run;
}

function cancel() {
  const run = state.activeRun;
  if (!run || run.status !== "running") return;
  run.status = "cancelling";
  client.cancel();
  setStatus("Cancelling after the current step…", "cancelling");
  updateMode();
}

/** Switch backend: terminates the current worker and starts one for `choice`. */
function setBackend(choice) {
  if (!CHOICES.includes(choice)) throw new Error(`unknown backend ${choice}: choose one of ${CHOICES.join(", ")}`);
  backendPanel.setChoice(choice);
  const url = new URL(location.href);
  url.searchParams.set("backend", choice);
  history.replaceState(null, "", url);
  client.setBackend(choice);
}

function restartWorker() {
  alerts.dismissWhere((code) => code === "worker.unresponsive");
  client.restart();
}

// Errors in the page itself should be visible too, not only in the console.
window.addEventListener("error", (event) => {
  alerts.show({ code: "page.error", message: event.message || "An error occurred in the page." });
});
window.addEventListener("unhandledrejection", (event) => {
  alerts.show({ code: "page.error", message: String(event.reason?.message ?? event.reason) });
});

window.webtune = {
  backend: null,
  runs: state.runs,
  ready,
  train,
  cancel,
  setBackend,
  restartWorker,
  whenReady: () => client.whenReady(),
  get workerState() {
    return client.state;
  },
  get generation() {
    return client.generation;
  },
  get backendChoice() {
    return client.backendChoice;
  },
};

client.start();
