// webtune page entry point: drives one FineTuner (webtune.js, the API embedders use; it owns the
// compute worker, one per backend choice), wires it to the panels, keeps the run history, and
// exposes `window.webtune` for debugging and the browser tests.
//
// URL parameters: ?backend=auto|webgpu|cpu (default auto); ?watchdog=<seconds> (default 60): how
// long the worker may stay silent while starting or busy before the page offers a restart;
// ?hub=<url> (default https://huggingface.co): the initial "Hub endpoint" for model downloads.
//
// One long operation runs at a time (training, loading a model, generating, logits, checking a
// dataset, fine-tuning, exporting); starting
// another meanwhile resolves at once with an error (`train.busy` / `worker.busy`).
//
// window.webtune = {
//   backend,            latest backend message from the worker (null while a worker starts)
//   runs,               [{id, config, backend, status, progress: [...], summary, error}]
//   ready,              promise: the first backend message (rejects if the first worker fails first)
//   train(config),      start a toy run; resolves with its run record when it ends (never rejects)
//   cancel(), setBackend(choice), restartWorker(), whenReady()  (backend message of the current worker)
//   workerState, generation, backendChoice   (read-only)
//   model,              info of the loaded model (see protocol.d.ts ModelMessage) or null (read-only)
//   loads,              [{source, status, downloads: [download messages], info, timing, error}]
//   loadModelFiles(files)         load from File objects / a FileList / [{name, bytes}] (bytes:
//                                 ArrayBuffer or typed array); non-model files are skipped.
//   loadModelFromHub(repo, {endpoint, revision, files})   download (or read from the browser
//                                 cache) a Hub repo ("owner/name" or URL); endpoint defaults to
//                                 ?hub=; `files` (e.g. ["model.Q4_1.gguf"]) fetches only those.
//   loadDefaultModel(id?)         load a model served with the page (models/index.json; default
//                                 the first); `defaultModels` is a promise of that list.
//       Both resolve with their load record (status "done" | "error" | "cancelled"); on error the
//       previous model stays loaded.
//   generate(input, options)      input: string | {text} | {ids}; options: snake_case (worker.js).
//       Resolves with {status, input, options, tokens: [streamed ids], result, error};
//       result = {prompt_ids, generated_ids, text, seconds, tokens_per_s, cancelled}.
//   logits(ids, which)            which: "base" (default) | "tuned" (the fine-tuned model);
//                                 resolves with {shape: [T, vocab], data: Float32Array, error}
//   replayReference(json, method) self-check: replay a committed PyTorch/PEFT training run
//                                 (tests/fixtures/reference/finetune_*.json text; "lora" | "full")
//                                 from the loaded model's files; resolves with {result:
//                                 {summary, reference_losses, reference_grad_norms}, error}
//   classify(text, which)         an encoder's prediction (which: "base" | "tuned"): resolves with
//                                 {result: {label, labels, probs}, error}
//   similarity(a, b, which)       cosine similarity of two texts' mean-pooled embeddings (an
//                                 encoder): resolves with {result: {similarity}, error}
//   samples                       [{file, title, task}]: the sample datasets (www/samples/)
//   dataset                       the chosen dataset {name, bytes: byte length, source} or null
//   setValidationFile(input)      a separate validation file (a File or {name, bytes}; null
//                                 removes it): it replaces the held-out share in inspectDataset
//                                 and finetune, and training examples it also has are left out
//                                 of training. Re-checks the chosen dataset; resolves as
//                                 inspectDataset does (or with null when nothing is chosen).
//   validationFile                {name, bytes: byte length} or null
//   baseline                      after a dataset is checked, the base model is scored on its
//                                 held-out split automatically ("before"; worker.js "evaluate"):
//                                 {dataset, config, result} or null; whenBaseline() waits for it.
//                                 Operations started meanwhile wait for it to end.
//   inspectDataset(input, config) input: a File, {name, bytes} (bytes: ArrayBuffer / typed array
//                                 / string), a sample's file name, or null (the chosen dataset);
//                                 it becomes the chosen dataset. config: the job configuration
//                                 (worker.js "inspect-dataset"; default: the panels' settings).
//       Resolves with {status: "done" | "error", name, config, result, error}; result = the
//       worker's dataset result {report, train_examples, validation_examples, ..., preview}.
//   finetune(input, config)       fine-tune on `input` (as above; null: the chosen dataset) with
//                                 the job configuration `config` (default: the panels' settings).
//       Resolves with {status: "done" | "cancelled" | "error", name, config,
//       events: [finetune events], result, error}; result as worker.js "done" (finetune).
//       cancel() stops it after the current step (evaluation and export still run).
//   checkpoint                    the interrupted run saved in this browser (OPFS) for the loaded
//                                 model: {step, total_steps, saved_at, config, dataset: {name, size,
//                                 sha256}, model} or null; refreshCheckpoint() re-reads it
//   resumeInterrupted(input)      continue it on `input` (as finetune; must be the same file, by
//                                 size and SHA-256, else error checkpoint.dataset_mismatch);
//                                 resolves as finetune does. discardCheckpoint() deletes it.
//   pause() / resume()            pause the running fine-tuning job after its current step /
//                                 continue it exactly where it stopped (false when there is
//                                 nothing to pause or resume); the record's `pause` is null,
//                                 "pausing" or the step it paused at; its events include
//                                 {type: "paused" | "resumed", step, total_steps}.
//   finetunes                     the fine-tuning records, oldest first
//   finetuneChart()               what the fine-tuning chart plots: {steps, losses, evals, lrs}
//   debugLoseDevice()             test hook: the worker destroys its GPU device (see worker.js)
//   evaluationReport()            the latest fine-tuning of the loaded model as one JSON-able
//                                 report (model, dataset, config, data_summary, curves, result
//                                 with before/after) or null; the results panel offers it as a
//                                 download. evaluationReportHtml(): the same as one self-contained
//                                 HTML document (lib/report-html.js), or null.
//   tuned                         info of the latest fine-tuned model, or null (read-only)
//   exportFiles()                 resolves with {files: {name: Uint8Array}, error} (the
//                                 fine-tuned model's "merged/..." and "adapter/..." files)
//   adapters()                    re-read the adapter library kept in this browser (OPFS): resolves
//                                 with {result: [AdapterMeta with fits/attached], error}
//   loadAdapterFiles(files, {name})  keep a PEFT adapter (adapter_config.json +
//                                 adapter_model.safetensors as Files or {name, bytes}) for the
//                                 loaded model (it must fit it); resolves with {result, error}
//   loadAdapterFromUrl(source, {name, endpoint, revision})  the same from a folder URL or a Hub
//                                 repo id (downloaded by the worker, which reaches only the hosts
//                                 of the models it loaded)
//   useAdapter(name | null)       attach a kept adapter beside the base (null: back to the base);
//                                 resolves with {result: {switch_ms, attach_ms, ...}, error}; the
//                                 generate panel then answers with it. `adapter`: its name.
//   renameAdapter(name, to), deleteAdapter(name), adapterFiles(name) ({files, error})
//   compare(prompt, models, options)  greedy continuations of `prompt` by each of `models`
//                                 ("base", "adapter:NAME", "tuned") and, with a checked dataset,
//                                 each one's held-out loss: resolves with {rows, error}
//   clearModelCache()             forget downloaded model files; resolves with true/false
//   cachedModels()                re-read the model cache (also shown in the model panel);
//                                 resolves with [{base, repo, revisions, files, bytes}]
//   deleteCachedModel(base)       forget one cached repo (base: its URL before /resolve/);
//                                 resolves with the number of cache entries deleted
//   Every one of them resolves (never rejects); errors come back in `error` ({code, message,
//   details}) and are also shown in the alert region.
// }

import { FineTuner, mergeConfig } from "./webtune.js";
import { createPrivacyIndicator } from "./components/privacy-indicator.js";
import { createAlerts } from "./components/alerts.js";
import { createBackendPanel } from "./components/backend-panel.js";
import { createToyPanel } from "./components/toy-panel.js";
import { createModelPanel } from "./components/model-panel.js";
import { createGeneratePanel } from "./components/generate-panel.js";
import { createAdaptersPanel } from "./components/adapters-panel.js";
import { createDatasetPanel } from "./components/dataset-panel.js";
import { createFinetunePanel } from "./components/finetune-panel.js";
import { createResultsPanel, downloadName } from "./components/results-panel.js";
import { createSteps } from "./components/steps.js";
import { SAMPLES, sampleUrl } from "./lib/samples.js";
import { curves, dataSummary, modelSource } from "./lib/report.js";
import { reportHtml } from "./lib/report-html.js";
import { entriesFromFileList, pickModelFiles } from "./lib/model-files.js";
import { DEFAULT_ENDPOINT } from "./lib/hub.js";

const CHOICES = ["auto", "webgpu", "cpu"];
const BUSY_WORDS = {
  train: "training",
  load: "loading a model",
  generate: "generating",
  logits: "computing logits",
  inspect: "checking a dataset",
  finetune: "fine-tuning",
  export: "exporting the fine-tuned model",
  classify: "classifying",
  evaluate: "evaluating the base model",
  replay: "replaying a reference run",
  adapter: "switching adapters",
  compare: "comparing models",
};
const NAMES = { auto: "auto", webgpu: "WebGPU", cpu: "CPU" };

const params = new URLSearchParams(location.search);
const initialChoice = /** @type {"auto" | "webgpu" | "cpu"} */ (CHOICES.includes(params.get("backend")) ? params.get("backend") : "auto");
const watchdogSeconds = Number(params.get("watchdog"));
const watchdogMs = Number.isFinite(watchdogSeconds) && watchdogSeconds > 0 ? watchdogSeconds * 1000 : 60_000;
const hubEndpoint = params.get("hub") || DEFAULT_ENDPOINT;
// ?threads=N: threads of the CPU backend (default: all cores; 1 = the single-threaded module).
const threadsParam = Number(params.get("threads"));
const cpuThreads = Number.isInteger(threadsParam) && threadsParam >= 1 ? threadsParam : undefined;

const statusEl = /** @type {HTMLElement} */ (document.querySelector("[data-testid=status]"));
const alerts = createAlerts(document.getElementById("alerts"));

/** Everything the page knows; `window.webtune` exposes it. */
// activeOp: the operation in progress ({kind: "train" | "load" | "generate" | "logits"}), or null.
// dataset: {name, bytes: ArrayBuffer, source: "file" | "sample" | "api"}; tuned: fine-tuned model info;
// exported: {files: {name: Uint8Array}} once fetched for the current fine-tuned model.
const state = {
  backend: null,
  runs: [],
  activeRun: null,
  activeOp: null,
  model: null,
  loads: [],
  dataset: null,
  // A separate validation file {name, bytes: ArrayBuffer}, or null (hold out a share).
  validation: null,
  // The automatic "before" evaluation: its promise while it runs, and its latest result.
  autoEval: null,
  // The pending checkpoint-info request after a model load (see refreshCheckpoint), or null.
  checkpointRefresh: null,
  baseline: null,
  // Whether the chosen dataset was checked without error for the loaded model (step 2 done),
  // and the dataset the last fine-tuning run trained on (step 3 done when it is the chosen one).
  datasetChecked: false,
  // What the checked dataset makes the loaded model learn ("causal", "classification" or
  // "embedding": an encoder's task follows its data), or null.
  dataTask: null,
  trainedOn: null,
  finetunes: [],
  activeFinetune: null,
  tuned: null,
  lastResult: null,
  /** The adapter library as last listed, and the adapter in use (null: none). */
  adapters: [],
  adapter: null,
  exported: null,
};

let resolveReady;
let rejectReady;
const ready = new Promise((resolve, reject) => {
  resolveReady = resolve;
  rejectReady = reject;
});
ready.catch(() => {}); // a failed start is shown in the alert region; awaiting `ready` still rejects

// Its worker starts now; the page shows the start once its handlers are wired (the end of this file).
const tuner = FineTuner.start({ backend: initialChoice, watchdogMs, cpuThreads });

const backendPanel = createBackendPanel(document.getElementById("backend-panel"), {
  choice: initialChoice,
  onChoose: (choice) => setBackend(choice),
  onRestart: () => restartWorker(),
});
const toyPanel = createToyPanel(document.getElementById("toy-panel"), {
  onStart: (config) => void train(config),
  onCancel: () => cancel(),
});
const modelPanel = createModelPanel(document.getElementById("model-panel"), {
  endpoint: hubEndpoint,
  onFiles: (entries) => void loadModelEntries(entries),
  onHub: (repo, options) => void loadModelFromHub(repo, options),
  onDefault: (id) => void loadDefaultModel(id),
  onCancel: () => cancel(),
  onClearCache: () => void clearModelCache(),
  onDeleteCached: (base) => void deleteCached(base),
  onError: (error) => alerts.show(error),
});
const defaultModels = fetchDefaultModels();
defaultModels.then((models) => modelPanel.setDefaults(models));
const generatePanel = createGeneratePanel(document.getElementById("generate-panel"), {
  onGenerate: (input, options) => void generate(input, options),
  onStop: () => cancel(),
  onError: (error) => alerts.show(error),
});
const adaptersPanel = createAdaptersPanel(document.getElementById("adapters-panel"), {
  onLoad: (files, name) => void loadAdapterFiles(files, { name }),
  onLoadUrl: (source, name) => void loadAdapterFromUrl(source, { name }),
  onUse: (name) => void useAdapter(name),
  onContinue: (name) => {
    finetunePanel.setAdapters(fittingAdapters(), name);
    document.getElementById("finetune-panel")?.scrollIntoView({ behavior: "smooth", block: "start" });
  },
  onRename: (name, to) => void renameAdapter(name, to),
  onDelete: (name) => void deleteAdapter(name),
  onDownload: (name) => void downloadAdapter(name),
  onCompare: (prompt, models, maxTokens) => void compareModels(prompt, models, { max_new_tokens: maxTokens }),
});

const datasetPanel = createDatasetPanel(document.getElementById("dataset-panel"), {
  samples: SAMPLES,
  onFile: (file) => void chooseAndInspect(file),
  onSample: (file) => void chooseAndInspect(file),
  onInspect: () => void inspectDataset(null),
  onValidationFile: (file) => void setValidationFile(file),
});
const finetunePanel = createFinetunePanel(document.getElementById("finetune-panel"), {
  onStart: () => void finetune(null),
  onRecipe: () => void downloadRecipe(),
  onStop: () => cancel(),
  onPause: () => pause(),
  onResume: () => resume(),
  onContinue: () => void resumeInterrupted(null),
  onDiscard: () => void discardCheckpoint(),
});
const steps = createSteps(document.querySelector("[data-testid=step-list]"));
steps.update({ model: false, data: false, trained: false });
// ?diagnostics=open or #diagnostics: the backend details and the toy check, unfolded.
const diagnostics = /** @type {HTMLDetailsElement} */ (document.getElementById("diagnostics"));
if (params.get("diagnostics") === "open" || location.hash === "#diagnostics") diagnostics.open = true;

const resultsPanel = createResultsPanel(document.getElementById("results-panel"), {
  onDownload: (path) => void download(path),
  onClassify: (text, which) => classify(text, which),
  onSimilarity: (a, b, which) => similarity(a, b, which),
  onReport: (kind) => downloadReport(kind),
});

function setStatus(text, mode) {
  statusEl.textContent = text;
  statusEl.dataset.state = mode;
}

/** Bring the controls in line with the worker state and the active run. */
function updateMode() {
  const run = state.activeRun;
  const op = state.activeOp;
  let mode;
  if (run) mode = run.status === "cancelling" ? "cancelling" : "running";
  // The automatic "before" evaluation keeps the controls usable: what they start waits for it.
  else if (op && !op.auto) mode = "busy";
  else if (tuner.state === "ready" || (op?.auto && tuner.state === "busy")) mode = "idle";
  else mode = "unavailable";
  toyPanel.setMode(mode);
  modelPanel.setMode({ canLoad: mode === "idle", loading: op?.kind === "load" });
  generatePanel.setMode({ canGenerate: mode === "idle" && state.model !== null, generating: op?.kind === "generate" });
  adaptersPanel.setTask(compareTask());
  adaptersPanel.setMode({ canAct: mode === "idle" && state.model !== null });
  const idle = mode === "idle";
  datasetPanel.setMode({ canInspect: idle && state.model !== null && state.dataset !== null, busy: op?.kind === "inspect" || op?.kind === "finetune" });
  finetunePanel.setMode({
    canStart: idle && state.model !== null && state.dataset !== null,
    running: op?.kind === "finetune",
    cancelling: state.activeFinetune?.status === "cancelling",
    pausing: state.activeFinetune?.pause === "pausing",
    paused: Number.isInteger(state.activeFinetune?.pause),
  });
  document.body.dataset.mode = mode;
  // A fine-tuning run reads and checks the data itself (one running counts), and an
  // interrupted run's checkpoint opens the fine-tune step to offer it. Step 3 is done by a run
  // on the current data.
  steps.update({
    model: state.model !== null,
    data: state.datasetChecked || state.activeFinetune !== null || Boolean(state.checkpoint),
    trained: state.lastResult !== null && state.trainedOn === state.dataset,
  });
}

/** Show what is going on in the status line once an operation ended. */
function idleStatus() {
  if (tuner.state === "ready") setStatus(`Ready on ${NAMES[state.backend?.backend] ?? "?"}.`, "idle");
}

function restartAction() {
  return { label: "Restart worker", testid: "restart-worker-alert", run: () => restartWorker() };
}

tuner.on("state", (workerState) => showWorkerState(workerState));

function showWorkerState(workerState) {
  backendPanel.showState(workerState);
  if (workerState === "starting") {
    state.backend = null;
    window.webtune.backend = null;
    backendPanel.showBackend(null);
    // A new worker has no model.
    if (state.model !== null) {
      setModel(null);
      modelPanel.clear("The worker was restarted, so the model is no longer loaded: load it again.");
    }
    setStatus(`Starting the worker (${NAMES[tuner.backendChoice]})…`, "starting");
  } else if (workerState === "ready" && !state.activeOp) {
    setStatus(`Ready on ${NAMES[state.backend?.backend] ?? "?"}.`, "idle");
  } else if (workerState === "crashed") {
    setStatus("The worker stopped after a fatal error. Restart it to continue.", "crashed");
  }
  updateMode();
}

tuner.on("backend", (message) => {
  state.backend = message;
  window.webtune.backend = message;
  backendPanel.showBackend(message);
  resolveReady(message); // only the first call counts
  void refreshAdapters();
  alerts.dismissWhere((code) => code === "worker.unresponsive");
});

const privacy = createPrivacyIndicator(document.querySelector(".site-header"));
tuner.on("network", ({ url, at }) => privacy.record(url, at));

tuner.on("toy-progress", (progress) => {
  const run = state.activeRun;
  if (!run) return;
  run.progress.push(progress);
  toyPanel.progress(progress);
});

tuner.on("error", (e) => {
  const error = plainError(e);
  if (e.fatal) {
    const actions = [restartAction()];
    if ((error.code === "device.unavailable" || error.code === "device.lost") && tuner.backendChoice !== "cpu") {
      actions.push({ label: "Use the CPU", testid: "use-cpu", run: () => setBackend("cpu") });
    }
    alerts.show(error, { actions });
    rejectReady(Object.assign(new Error(error.message), { code: error.code, details: error.details }));
  } else {
    alerts.show(error);
  }
});

tuner.on("stalled", ({ silentMs, state: workerState }) => {
  alerts.show(
    {
      code: "worker.unresponsive",
      message:
        `The worker has not answered for ${Math.round(silentMs / 1000)} s while ${workerState === "busy" ? BUSY_WORDS[state.activeOp?.kind] ?? "busy" : "starting"}. ` +
        "It may be stuck (for example after a crash in the wasm module). Keep waiting, or restart it.",
    },
    { level: "warning", actions: [restartAction()] },
  );
});

/**
 * Start a toy run with `config` (snake_case keys, see protocol.d.ts TrainToyRequest). Resolves with the run record
 * when the run ends, successfully or not; never rejects.
 */
async function train(/** @type {Record<string, any>} */ config = {}) {
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
  if (state.autoEval || state.checkpointRefresh) await settleAuto();
  const refusal = refusalFor("train");
  if (refusal) return refuse(refusal);

  state.activeRun = run;
  state.activeOp = { kind: "train" };
  toyPanel.begin(config);
  run.id = `toy-${tuner.generation}-${state.runs.length}`;
  const pending = attempt(() => tuner.trainToy(config), (summary) => ({ summary }));
  updateMode();
  setStatus(`Training on ${NAMES[state.backend?.backend] ?? "?"}…`, "running");

  const outcome = await pending;
  state.activeRun = null;
  state.activeOp = null;
  if (outcome.summary) {
    const s = outcome.summary;
    run.summary = s;
    run.status = s.cancelled ? "cancelled" : "done";
    toyPanel.finish(s);
    setStatus(
      s.cancelled ? `Run cancelled after ${s.steps} of ${run.config.steps ?? "?"} steps.` : `Run finished: ${s.steps} steps, loss ${s.initial_loss.toFixed(3)} → ${s.final_loss.toFixed(3)}.`,
      tuner.state === "ready" ? "idle" : tuner.state,
    );
  } else {
    run.error = outcome.error;
    run.status = "error";
    toyPanel.fail(outcome.error);
    // Fatal errors were already shown (with a restart button) when the worker was stopped.
    if (tuner.state !== "crashed") {
      const abandoned = outcome.error.code === "worker.restarted" || outcome.error.code === "worker.terminated";
      alerts.show(outcome.error, { level: abandoned ? "warning" : "error" });
      setStatus(`Run failed: ${outcome.error.code}.`, tuner.state === "ready" ? "idle" : tuner.state);
    }
  }
  updateMode();
  return run;
}

/** Stop the operation in progress (a run after its current step, a generation after its token, a download at once). */
function cancel() {
  const run = state.activeRun;
  if (run) {
    if (run.status !== "running") return;
    run.status = "cancelling";
    tuner.cancel();
    setStatus("Cancelling after the current step…", "cancelling");
    updateMode();
    return;
  }
  const ft = state.activeFinetune;
  if (ft) {
    if (ft.status !== "running") return;
    ft.status = "cancelling";
    tuner.cancel();
    finetunePanel.stopping();
    setStatus("Stopping after the current step; the model is still evaluated and exported…", "cancelling");
    updateMode();
    return;
  }
  const op = state.activeOp;
  if (!op || op.cancelling) return;
  op.cancelling = true;
  tuner.cancel();
  setStatus(op.kind === "load" ? "Stopping the download…" : "Stopping…", "cancelling");
}

/**
 * window.webtune.pause: pause the running fine-tuning job after its current step (worker.js
 * "pause"). Returns false when no job is training. The record's `pause` is then "pausing", and
 * the step number once the worker reports the job paused.
 */
function pause() {
  const ft = state.activeFinetune;
  if (!ft || ft.status !== "running" || ft.pause != null) return false;
  ft.pause = "pausing";
  tuner.pause();
  finetunePanel.pausing();
  setStatus("Pausing after the current step…", "running");
  updateMode();
  return true;
}

/** window.webtune.resume: continue a paused (or pausing) fine-tuning job. */
function resume() {
  const ft = state.activeFinetune;
  if (!ft || ft.status !== "running" || ft.pause == null) return false;
  ft.pause = null;
  tuner.resume();
  finetunePanel.resumed();
  setStatus(`Fine-tuning on ${NAMES[state.backend?.backend] ?? "?"}…`, "running");
  updateMode();
  return true;
}

/**
 * The interrupted run saved in this browser (worker.js "checkpoint-info"), offered when it belongs
 * to the loaded model: window.webtune.checkpoint.
 */
async function refreshCheckpoint() {
  const model = state.model;
  // A background request: operations started meanwhile wait for it (settleAuto) instead of
  // finding the worker busy.
  const pending = model ? attempt(() => tuner.checkpoint(), (result) => ({ result })) : Promise.resolve({ result: null });
  state.checkpointRefresh = pending;
  const outcome = await pending;
  if (state.checkpointRefresh === pending) state.checkpointRefresh = null;
  const meta = outcome.result ?? null;
  const fits = meta && model && meta.model?.architecture === model.architecture && meta.model?.parameters === model.parameters;
  state.checkpoint = fits ? meta : null;
  finetunePanel.checkpoint(state.checkpoint);
  updateMode();
  return state.checkpoint;
}

/**
 * window.webtune.resumeInterrupted(input): continue the saved interrupted run on `input` (as for
 * finetune; null: the chosen dataset), which must be the same file (size and SHA-256), with the
 * run's own configuration. Resolves as finetune does; a different file ends with error
 * `checkpoint.dataset_mismatch`.
 */
async function resumeInterrupted(input) {
  const meta = state.checkpoint ?? (await refreshCheckpoint());
  return finetune(input, meta?.config ?? panelConfig(), { resume: true });
}

async function discardCheckpoint() {
  await attempt(() => tuner.discardCheckpoint());
  return refreshCheckpoint();
}

/** A finetune event about pausing: keep the record and the controls in line. */
function pauseEvent(record, event) {
  if (event.type === "paused" && record.pause === "pausing") {
    record.pause = event.step;
    finetunePanel.paused(event.step, event.total_steps);
    setStatus(`Paused at step ${event.step}.`, "paused");
    updateMode();
  }
}

/** Why an operation of `kind` cannot start now, as an error; null when it can. */
function refusalFor(kind) {
  if (state.activeOp) {
    const what = BUSY_WORDS[state.activeOp.kind] ?? "busy";
    return {
      code: kind === "train" ? "train.busy" : "worker.busy",
      message: `The worker is ${what}; wait for it to finish or stop it first.`,
    };
  }
  if (tuner.state !== "ready") {
    const [code, message] = {
      crashed: ["worker.crashed", "The worker has stopped; restart it first."],
      busy: ["worker.busy", "The worker is finishing another request; try again in a moment."],
    }[tuner.state] ?? ["worker.not_ready", "The backend is still starting; try again in a moment."];
    return {
      code,
      message,
    };
  }
  return null;
}

function setModel(info) {
  state.model = info;
  // The data is checked again with the new model's tokenizer.
  state.datasetChecked = false;
  if (info) privacy.modelLoaded();
  window.webtune.model = info;
  generatePanel.setModel(info);
  datasetPanel.setModel(info);
  finetunePanel.setModel(info);
  // Adapters attach to the model loaded now (the library marks which fit it).
  state.adapter = null;
  adaptersPanel.switched(null, null);
  void refreshAdapters();
  // The base model's "before" belonged to the previous model.
  state.baseline = null;
  resultsPanel.baseline(null, null);
  void refreshCheckpoint();
  // A fine-tuned model belongs to the model it was tuned from.
  if (state.tuned !== null || state.lastResult !== null) {
    setTuned(null);
    resultsPanel.clear(info ? "A different model was loaded: fine-tune it to compare." : "The worker was restarted: the fine-tuned model is gone.");
  }
  updateMode();
}

function setTuned(info) {
  state.tuned = info;
  state.exported = null;
  if (info === null) state.lastResult = null;
  generatePanel.setTuned(info !== null);
}

/** An error as a plain {code, message, details} (for records and alerts). */
function plainError(e, fallbackCode = "page.error") {
  return { code: e?.code ?? fallbackCode, message: String(e?.message ?? e), details: e?.details };
}

/**
 * A FineTuner call's outcome as the page's records keep it: `wrap(value)` ({result: value} by
 * default) or {error: plain error}; never rejects. `call` runs before anything is awaited, so an
 * operation reaches the worker synchronously (a cancel() right after generate() relies on it).
 * @template T @param {() => Promise<T>} call @param {(value: T) => object} [wrap]
 * @returns {Promise<Record<string, any>>}
 */
async function attempt(call, wrap = (result) => ({ result })) {
  try {
    return wrap(await call());
  } catch (e) {
    return { error: plainError(e) };
  }
}

/**
 * Load a model (FineTuner.loadModel); `prepare()` builds its source after the busy check.
 */
async function loadModel(label, sourceSummary, prepare) {
  const record = { source: sourceSummary, status: "loading", downloads: [], info: null, timing: null, error: null };
  state.loads.push(record);
  if (state.autoEval || state.checkpointRefresh) await settleAuto();
  const refusal = refusalFor("load");
  if (refusal) {
    record.status = "error";
    record.error = refusal;
    alerts.show(refusal);
    return record;
  }
  state.activeOp = { kind: "load" };
  updateMode();
  modelPanel.begin(label);
  setStatus(`Loading ${label}…`, "loading");
  const off = tuner.on("download", (progress) => {
    record.downloads.push(progress);
    modelPanel.download(progress);
  });
  const outcome = await attempt(async () => tuner.loadModel(await prepare(), { quantize_base: modelPanel.precision() }), (loaded) => loaded);
  off();
  state.activeOp = null;
  void refreshCache();
  if (outcome.info) {
    record.status = "done";
    record.info = outcome.info;
    record.source = outcome.source;
    record.timing = outcome.timing;
    modelPanel.showModel(outcome.info, outcome.source, outcome.timing);
    setModel(outcome.info);
    if (outcome.source?.cache_warning) alerts.show({ code: "model.cache_failed", message: outcome.source.cache_warning }, { level: "warning" });
    idleStatus();
  } else {
    record.error = outcome.error;
    record.status = outcome.error.code === "model.load_cancelled" ? "cancelled" : "error";
    modelPanel.fail(outcome.error, state.model);
    if (tuner.state !== "crashed") {
      alerts.show(outcome.error, { level: record.status === "cancelled" ? "warning" : "error" });
      idleStatus();
    }
    updateMode();
  }
  return record;
}

/** Files picked or dropped in the model panel. */
function loadModelEntries(entries) {
  const { picked, ignored } = pickModelFiles(entries);
  const names = picked.map((p) => p.name);
  return loadModel(`${picked.length} file${picked.length === 1 ? "" : "s"}`, { kind: "files", files: names, ignored }, async () => {
    if (picked.length === 0) {
      throw Object.assign(new Error(`None of the ${entries.length} chosen files is a model file (config.json, *.safetensors, tokenizer.json, …).`), {
        code: "model.missing_file",
        details: { chosen: entries.slice(0, 50).map((e) => e.path) },
      });
    }
    // Files, not their bytes: the worker reads weights from them a tensor at a time, so a
    // file larger than the module's memory loads and nothing is copied up front.
    return picked.map((p) => ({ name: p.name, bytes: p.file }));
  });
}

/** window.webtune.loadModelFiles: File objects, a FileList, or [{name, bytes}]. */
function loadModelFiles(files) {
  const list = Array.from(files ?? []);
  const entries = list.map((f) => {
    if (typeof File !== "undefined" && f instanceof File) return entriesFromFileList([f])[0];
    const bytes = f?.bytes instanceof ArrayBuffer ? f.bytes : ArrayBuffer.isView(f?.bytes) ? f.bytes.slice().buffer : null;
    return { path: String(f?.name ?? ""), file: new Blob(bytes ? [bytes] : []) };
  });
  return loadModelEntries(entries);
}

/** window.webtune.loadModelFromHub. */
/** @param {string} repo @param {{endpoint?: string, revision?: string, files?: string[]}} [options] */
function loadModelFromHub(repo, { endpoint, revision, files } = {}) {
  const source = { kind: "hub", repo: String(repo ?? ""), revision: revision || "main", endpoint: endpoint || hubEndpoint };
  if (Array.isArray(files) && files.length) source.files = files.map(String);
  const { repo: hub, kind: _kind, ...options } = source;
  return loadModel(source.repo || "a Hub model", { ...source }, async () => ({ hub, ...options }));
}

/**
 * The models served with this page (`cargo xtask models` puts them in www/models/ in the Hub's
 * URL layout, listed in models/index.json). Resolves to [] when there are none.
 */
function fetchDefaultModels() {
  return FineTuner.servedModels().catch(() => []);
}

/** window.webtune.loadDefaultModel: one of the models served with the page (default: the first). */
async function loadDefaultModel(id) {
  const models = await defaultModels;
  const model = id == null ? models[0] : models.find((m) => m.id === id);
  if (!model) {
    const error = {
      code: "model.missing_file",
      message:
        models.length === 0
          ? "This page was served without a default model (run `cargo xtask models`, or load your own files)."
          : `There is no default model ${JSON.stringify(id)}; available: ${models.map((m) => m.id).join(", ")}.`,
    };
    alerts.show(error);
    return { status: "error", error };
  }
  const repo = new URL(model.repo, location.href).href;
  return loadModelFromHub(repo, { files: model.files.map((f) => f.name) });
}

/** Generate from `input` (string | {text} | {ids}) with `options` (snake_case). */
async function generate(input, options = {}) {
  const record = { input, options: { ...options }, status: "generating", tokens: [], result: null, error: null };
  if (state.autoEval || state.checkpointRefresh) await settleAuto();
  const refusal = refusalFor("generate");
  if (refusal) {
    record.status = "error";
    record.error = refusal;
    alerts.show(refusal);
    return record;
  }
  state.activeOp = { kind: "generate" };
  updateMode();
  generatePanel.begin();
  setStatus(`Generating on ${NAMES[state.backend?.backend] ?? "?"}…`, "generating");
  const off = tuner.on("token", (message) => {
    record.tokens.push(message.token);
    generatePanel.token(message);
  });
  const outcome = await attempt(() => tuner.generate(input, { ...options, model: options.model ?? "base" }));
  off();
  state.activeOp = null;
  if (outcome.result) {
    record.result = outcome.result;
    record.status = outcome.result.cancelled ? "cancelled" : "done";
    generatePanel.finish({ ...outcome.result, model: options.model ?? "base" }, state.backend?.backend);
    idleStatus();
  } else {
    record.error = outcome.error;
    record.status = "error";
    generatePanel.fail(outcome.error);
    if (tuner.state !== "crashed") {
      alerts.show(outcome.error);
      idleStatus();
    }
  }
  updateMode();
  return record;
}

/** Logits of every position of `ids` under the base or the "tuned" model: {shape, data: Float32Array, error}. */
async function logits(ids, /** @type {import("./webtune").WhichModel} */ which = "base") {
  if (state.autoEval || state.checkpointRefresh) await settleAuto();
  const refusal = refusalFor("logits");
  if (refusal) {
    alerts.show(refusal);
    return { shape: null, data: null, error: refusal };
  }
  state.activeOp = { kind: "logits" };
  updateMode();
  const outcome = await attempt(() => tuner.logits(Array.from(ids ?? []), { model: which }), (r) => r);
  state.activeOp = null;
  updateMode();
  if (outcome.error) {
    if (tuner.state !== "crashed") alerts.show(outcome.error);
    return { shape: null, data: null, error: outcome.error };
  }
  return { shape: outcome.shape, data: outcome.data, error: null };
}

/**
 * Self-check: replay a committed PyTorch/PEFT reference run (the JSON text of
 * tests/fixtures/reference/finetune_*.json; method "lora" | "full") on this page's backend from the
 * loaded model's files. Resolves with {result: {summary, reference_losses, reference_grad_norms}, error}.
 */
async function replayReference(reference, method) {
  if (state.autoEval || state.checkpointRefresh) await settleAuto();
  const refusal = refusalFor("replay");
  if (refusal) return { result: null, error: refusal };
  state.activeOp = { kind: "replay" };
  updateMode();
  const outcome = await attempt(() => tuner.replayReference(String(reference ?? ""), method));
  state.activeOp = null;
  updateMode();
  return { result: outcome.result ?? null, error: outcome.error ?? null };
}

/** Run one short encoder operation (`call()`, a FineTuner call); resolves with {result, error}. */
async function encoderOp(call) {
  if (state.autoEval || state.checkpointRefresh) await settleAuto();
  const refusal = refusalFor("classify");
  if (refusal) {
    alerts.show(refusal);
    return { result: null, error: refusal };
  }
  state.activeOp = { kind: "classify" };
  updateMode();
  const outcome = await attempt(call);
  state.activeOp = null;
  updateMode();
  if (outcome.error) {
    if (tuner.state !== "crashed") alerts.show(outcome.error);
    return { result: null, error: outcome.error };
  }
  return { result: outcome.result, error: null };
}

/** An encoder's prediction for `text`: {result: {label, labels, probs}, error}. */
function classify(text, /** @type {import("./webtune").WhichModel} */ which = "base") {
  return encoderOp(() => tuner.classify(String(text ?? ""), { model: which }));
}

/** Cosine similarity of two texts' embeddings: {result: {similarity}, error}. */
function similarity(a, b, /** @type {import("./webtune").WhichModel} */ which = "base") {
  return encoderOp(() => tuner.similarity(String(a ?? ""), String(b ?? ""), { model: which }));
}

// ---------------------------------------------------------------------------------------------
// The adapter library (worker.js, lib/adapter-library.js) and the compare view.

/** Names of the kept adapters that belong to the loaded model. */
function fittingAdapters() {
  return state.adapters.filter((m) => m.fits).map((m) => m.name);
}

/** Re-read the library; resolves with its list (also shown in the Adapters panel). */
async function refreshAdapters() {
  const outcome = await attempt(() => tuner.adapters());
  if (outcome.error) return { result: null, error: outcome.error };
  state.adapters = outcome.result ?? [];
  if (state.adapter !== null && !state.adapters.some((m) => m.name === state.adapter && m.fits)) state.adapter = null;
  adaptersPanel.show(state.adapters);
  generatePanel.setAdapters(fittingAdapters());
  finetunePanel.setAdapters(fittingAdapters());
  return { result: state.adapters, error: null };
}

/** Run one adapter operation that takes the worker's turn; resolves with {result, error}. */
async function adapterOp(kind, call) {
  if (state.autoEval || state.checkpointRefresh) await settleAuto();
  const refusal = refusalFor(kind) ?? (state.model ? null : { code: "model.not_loaded", message: "Load a model first: adapters belong to a base model." });
  if (refusal) {
    alerts.show(refusal);
    return { result: null, error: refusal };
  }
  state.activeOp = { kind };
  updateMode();
  let outcome;
  try {
    outcome = await call();
  } finally {
    state.activeOp = null;
    updateMode();
  }
  if (outcome.error && tuner.state !== "crashed") alerts.show(outcome.error);
  return { result: outcome.result ?? null, error: outcome.error ?? null };
}

/** window.webtune.loadAdapterFiles: keep a PEFT adapter (File objects or [{name, bytes}]) for the loaded model. */
async function loadAdapterFiles(files, { name = null } = {}) {
  const list = Array.from(files ?? [], (f) => ({ name: String(f.webkitRelativePath || f.name), bytes: f instanceof Blob ? f : ArrayBuffer.isView(f.bytes) ? f.bytes.slice().buffer : f.bytes }));
  const out = await adapterOp("adapter", () => attempt(() => tuner.loadAdapter(list, { name })));
  if (out.result) setStatus(`Adapter “${out.result.name}” loaded and kept in this browser.`, "done");
  await refreshAdapters();
  return out;
}

/**
 * window.webtune.loadAdapterFromUrl: keep a PEFT adapter downloaded by the worker from a folder
 * URL or a Hub repo ("owner/name", on the page's Hub endpoint).
 */
async function loadAdapterFromUrl(source, { name = null, endpoint = hubEndpoint, revision = "main" } = {}) {
  const out = await adapterOp("adapter", () => attempt(() => tuner.loadAdapter(String(source ?? ""), { name, endpoint, revision })));
  if (out.result) setStatus(`Adapter “${out.result.name}” downloaded and kept in this browser.`, "done");
  await refreshAdapters();
  return out;
}

/** window.webtune.useAdapter: generate with a kept adapter (null: the base model); resolves with the switch's timing. */
async function useAdapter(name) {
  const out = await adapterOp("adapter", () => attempt(() => tuner.useAdapter(name ?? null)));
  if (!out.error) {
    state.adapter = name ?? null;
    adaptersPanel.switched(state.adapter, out.result);
    generatePanel.setAdapters(fittingAdapters(), state.adapter);
    await refreshAdapters();
  }
  return out;
}

/** A library request that does not take the worker's turn; shows its error. */
async function quietAdapterOp(call) {
  const outcome = await attempt(call);
  if (outcome.error) alerts.show(outcome.error);
  await refreshAdapters();
  return { result: outcome.result ?? null, error: outcome.error ?? null };
}

async function renameAdapter(name, to) {
  const out = await quietAdapterOp(() => tuner.renameAdapter(name, to));
  if (out.result && state.adapter === name) {
    state.adapter = out.result.name;
    adaptersPanel.switched(state.adapter, null);
    generatePanel.setAdapters(fittingAdapters(), state.adapter);
  }
  return out;
}

async function deleteAdapter(name) {
  const out = await quietAdapterOp(() => tuner.deleteAdapter(name));
  if (out.result && state.adapter === name) {
    state.adapter = null;
    adaptersPanel.switched(null, null);
  }
  return out;
}

/** window.webtune.adapterFiles: a kept adapter's PEFT files as {name: Uint8Array}. */
async function adapterFiles(name) {
  return attempt(() => tuner.adapterFiles(name), (files) => ({ files, error: null }));
}

/** Save a kept adapter's two PEFT files (named after it). */
async function downloadAdapter(name) {
  const { files, error } = await adapterFiles(name);
  if (error) return void alerts.show(error);
  const stem = name.replace(/[^\w.-]+/g, "_");
  for (const [file, bytes] of Object.entries(files)) saveBlob(new Blob([bytes]), `${stem}-${file}`);
}

/**
 * window.webtune.compare: continue `prompt` greedily with each of `models` ("base",
 * "adapter:NAME", "tuned") in turn — for an encoder, classify it, or after a dataset of sentence
 * pairs was checked, measure the similarity of its two lines — and with a checked dataset score
 * each on its held-out split. Resolves with {rows: [{model, label, text, generated_ids, loss,
 * perplexity}] (an encoder's: {model, label, predicted, accuracy, loss}; an embedder's: {model,
 * label, similarity, accuracy (recall@1), mrr}), error}.
 */
async function compareModels(prompt, models, options = {}) {
  const text = String(prompt ?? "");
  // What each model is asked and which held-out scores its cell shows: an encoder classifies the
  // text (a model without a head, a base encoder, says so in its cell and the others go on) or
  // measures two texts' cosine; a causal LM continues it greedily (a failure stops the
  // comparison).
  const kind = compareTask();
  const [a, b] = twoTexts(text);
  const task =
    kind === "embedding"
      ? {
          cell: { similarity: null, accuracy: null, mrr: null },
          ask: (model) =>
            attempt(async () => {
              if (!a || !b) throw Object.assign(new Error("Write two texts, one per line, to compare how similar each model finds them."), { code: "config.invalid" });
              return tuner.similarity(a, b, { model });
            }),
          fill: (row, r) => (row.similarity = r.similarity),
          scores: (row, ev) => Object.assign(row, { accuracy: ev.accuracy, mrr: ev.mrr }),
          goesOn: () => false,
        }
      : kind === "classification"
      ? {
          cell: { predicted: null, accuracy: null, loss: null },
          ask: (model) => attempt(() => tuner.classify(text, { model })),
          fill: (row, r) => (row.predicted = r),
          scores: (row, ev) => Object.assign(row, { accuracy: ev.accuracy, loss: ev.loss }),
          goesOn: () => tuner.state !== "crashed",
        }
      : {
          cell: { text: null, generated_ids: null, loss: null, perplexity: null },
          ask: (model) => attempt(() => tuner.generate({ text }, { ...options, greedy: true, model })),
          fill: (row, r) => Object.assign(row, { text: r.text, generated_ids: r.generated_ids }),
          scores: (row, ev) => Object.assign(row, { loss: ev.loss, perplexity: ev.perplexity }),
          goesOn: () => false,
        };
  const rows = models.map((model) => ({ model, label: compareLabel(model), ...task.cell, error: null }));
  adaptersPanel.compared(rows);
  const withData = state.datasetChecked && state.dataset !== null;
  const config = state.baseline?.config ?? panelConfig();
  const out = await adapterOp("compare", async () => {
    for (const row of rows) {
      const answer = await task.ask(row.model);
      if (answer.error) {
        row.error = answer.error;
        adaptersPanel.compared(rows);
        if (task.goesOn()) continue;
        return { error: answer.error };
      }
      task.fill(row, answer.result);
      if (withData) {
        const ev = await attempt(() => tuner.evaluate({ ...config, model: row.model }, datasetOptions(state.dataset)));
        if (ev.error) return { error: ev.error };
        task.scores(row, ev.result);
      }
      adaptersPanel.compared(rows);
    }
    return { result: rows };
  });
  await refreshAdapters();
  return { rows, error: out.error };
}

/**
 * What the compare view asks the loaded model's adapters: a causal LM's continue text; an
 * encoder's classify a text, or, once a dataset of sentence pairs is checked, measure two
 * texts' similarity.
 */
function compareTask() {
  if (state.model?.kind !== "encoder") return "causal_lm";
  return state.datasetChecked && state.dataTask === "embedding" ? "embedding" : "classification";
}

/** The two texts of an embedding comparison: the first line, and the rest. */
function twoTexts(text) {
  const [a, ...rest] = text.split("\n");
  return [a.trim(), rest.join("\n").trim()];
}

function compareLabel(model) {
  return model === "base" ? "Base model" : model === "tuned" ? "Fine-tuned model" : `Adapter “${model.slice(8)}”`;
}

// ---------------------------------------------------------------------------------------------
// Datasets, fine-tuning, export.

/** The job configuration the panels describe. */
function panelConfig() {
  return mergeConfig(datasetPanel.config(), finetunePanel.config());
}

/**
 * `input` → {name, bytes: ArrayBuffer, source}: a File, {name, bytes}, a sample's file name, or
 * null (the chosen dataset). Throws a coded error.
 */
async function datasetFrom(input) {
  if (input === null || input === undefined) {
    if (!state.dataset) throw Object.assign(new Error("Choose a dataset file or a sample first."), { code: "data.missing" });
    return state.dataset;
  }
  if (typeof File !== "undefined" && input instanceof File) {
    return { name: input.name, bytes: await input.arrayBuffer(), source: "file" };
  }
  if (typeof input === "string") {
    const sample = SAMPLES.find((s) => s.file === input);
    if (!sample) {
      throw Object.assign(new Error(`There is no sample dataset ${JSON.stringify(input)}; available: ${SAMPLES.map((s) => s.file).join(", ")}.`), {
        code: "data.missing",
      });
    }
    let response;
    try {
      response = await fetch(sampleUrl(sample.file));
    } catch (e) {
      throw Object.assign(new Error(`Could not read the sample ${sample.file}: ${e?.message ?? e}`), { code: "data.missing" });
    }
    if (!response.ok) throw Object.assign(new Error(`Could not read the sample ${sample.file} (HTTP ${response.status}).`), { code: "data.missing" });
    return { name: sample.file, bytes: await response.arrayBuffer(), source: "sample" };
  }
  const name = typeof input?.name === "string" ? input.name : "";
  let bytes = input?.bytes;
  if (typeof bytes === "string") bytes = new TextEncoder().encode(bytes).buffer;
  else if (ArrayBuffer.isView(bytes)) bytes = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  if (!name || !(bytes instanceof ArrayBuffer)) {
    throw Object.assign(new Error("A dataset is a File, {name, bytes} or a sample's file name."), { code: "config.invalid" });
  }
  return { name, bytes, source: "api" };
}

function setDataset(dataset) {
  // Another file sends the path back to step 2 until it is checked; checking the same one
  // again (other options) keeps the steps after it open meanwhile.
  const same = state.dataset && dataset.name === state.dataset.name && dataset.bytes === state.dataset.bytes;
  if (!same) state.datasetChecked = false;
  state.dataset = dataset;
  datasetPanel.chosen(dataset.name, dataset.bytes.byteLength, state.model ? null : "Load a model to check it: the report counts tokens with the model's tokenizer.");
  updateMode();
}

/** FineTuner's dataset options for `dataset` and the separate validation file, if any. */
function datasetOptions(dataset) {
  return { dataset: { name: dataset.name, bytes: dataset.bytes }, validation: state.validation ?? undefined };
}

/** window.webtune.setValidationFile: keep (or drop) a validation file and re-check the dataset. */
async function setValidationFile(input) {
  if (input === null || input === undefined) {
    state.validation = null;
  } else {
    let file;
    try {
      file = await datasetFrom(input);
    } catch (e) {
      alerts.show(plainError(e, "data.missing"));
      return null;
    }
    state.validation = { name: file.name, bytes: file.bytes };
  }
  datasetPanel.validationFile(state.validation ? { name: state.validation.name, bytes: state.validation.bytes.byteLength } : null);
  if (state.dataset && state.model && (!state.activeOp || state.activeOp.auto) && tuner.state !== "crashed") return inspectDataset(null);
  return null;
}

/** A file or sample chosen in the panel: keep it, and check it when a model is loaded. */
async function chooseAndInspect(input) {
  let dataset;
  try {
    dataset = await datasetFrom(input);
  } catch (e) {
    alerts.show(plainError(e, "data.missing"));
    return;
  }
  setDataset(dataset);
  if (state.model && (!state.activeOp || state.activeOp.auto) && tuner.state !== "crashed") await inspectDataset(null);
}

/**
 * Resolves once the automatic "before" evaluation (if one runs) has ended. Callers await it
 * only while one runs: an operation must otherwise reach the worker synchronously (a cancel()
 * right after generate() relies on it).
 */
async function settleAuto() {
  while (state.autoEval || state.checkpointRefresh) await (state.autoEval ?? state.checkpointRefresh);
}

/**
 * Score the base model on the held-out split of the dataset just checked (the split the job
 * will make with `config`), and show it in the results panel. Runs only when nothing else does;
 * any operation started meanwhile waits for it (settleAuto). Failures are shown there quietly:
 * the job reports its own "before" anyway.
 */
async function autoBefore(dataset, config) {
  if (state.checkpointRefresh) await state.checkpointRefresh.catch(() => {});
  if (!state.model || state.activeOp || tuner.state !== "ready") return;
  const op = { kind: "evaluate", auto: true };
  state.activeOp = op;
  /** @type {(value?: unknown) => void} */
  let done = () => {};
  state.autoEval = new Promise((resolve) => (done = resolve));
  const model = state.model;
  resultsPanel.baselinePending(dataset.name);
  try {
    const outcome = await attempt(() => tuner.evaluate({ ...config, model: "base" }, datasetOptions(dataset)));
    state.baseline = outcome.result ? { dataset: dataset.name, config, result: outcome.result } : null;
    // A model loaded meanwhile makes these numbers stale (loading waited, so this is rare).
    if (state.model === model) resultsPanel.baseline(outcome.result ?? null, outcome.error ?? null);
  } finally {
    if (state.activeOp === op) state.activeOp = null;
    state.autoEval = null;
    done();
    updateMode();
  }
}

/** window.webtune.inspectDataset. */
async function inspectDataset(input, config) {
  const record = { status: "checking", name: null, config: null, result: null, error: null };
  const fail = (error) => {
    record.status = "error";
    record.error = error;
    if (tuner.state !== "crashed") alerts.show(error);
    return record;
  };
  let dataset;
  try {
    dataset = await datasetFrom(input);
  } catch (e) {
    return fail(plainError(e, "data.missing"));
  }
  record.name = dataset.name;
  record.config = config ?? panelConfig();
  setDataset(dataset);
  if (state.autoEval || state.checkpointRefresh) await settleAuto();
  const refusal = refusalFor("inspect") ?? (state.model ? null : { code: "model.not_loaded", message: "Load a model first: the dataset is tokenised with its tokenizer." });
  if (refusal) {
    datasetPanel.note(refusal.message);
    return fail(refusal);
  }
  state.activeOp = { kind: "inspect" };
  updateMode();
  datasetPanel.begin(dataset.name);
  setStatus(`Checking ${dataset.name}…`, "loading");
  // Copied to the worker (not transferred): the page keeps the bytes for fine-tuning.
  const off = tuner.on("data-progress", (p) => datasetPanel.progress(p));
  const { dataset: file, validation } = datasetOptions(dataset);
  const outcome = await attempt(() => tuner.loadDataset(file, { ...record.config, validation }));
  off();
  state.activeOp = null;
  state.datasetChecked = Boolean(outcome.result);
  if (outcome.result) {
    record.status = "done";
    record.result = outcome.result;
    datasetPanel.show(outcome.result);
    state.dataTask = outcome.result.task ?? null;
    finetunePanel.dataset(outcome.result, record.config);
    idleStatus();
    // "Before" on its own, as soon as model and data are in: the numbers fine-tuning must beat
    // (not when the run would not fit: scoring uses the same batches).
    if (!outcome.result.memory_problem) void autoBefore(dataset, record.config);
  } else {
    datasetPanel.fail(outcome.error);
    fail(outcome.error);
    idleStatus();
  }
  updateMode();
  return record;
}

/** window.webtune.finetune. */
async function finetune(input, config, { resume = false } = {}) {
  const record = { status: "running", name: null, config: null, events: [], result: null, error: null, pause: null };
  state.finetunes.push(record);
  const fail = (error) => {
    record.status = "error";
    record.error = error;
    if (tuner.state !== "crashed") alerts.show(error);
    return record;
  };
  let dataset;
  try {
    dataset = await datasetFrom(input);
  } catch (e) {
    return fail(plainError(e, "data.missing"));
  }
  record.name = dataset.name;
  record.validation = state.validation?.name ?? null;
  record.config = config ?? panelConfig();
  if (input !== null && input !== undefined) setDataset(dataset);
  if (state.autoEval || state.checkpointRefresh) await settleAuto();
  const refusal = refusalFor("train") ?? (state.model ? null : { code: "model.not_loaded", message: "Load a model first." });
  if (refusal) return fail(refusal);

  state.activeOp = { kind: "finetune" };
  state.activeFinetune = record;
  updateMode();
  finetunePanel.begin(record.config);
  setStatus(`Fine-tuning on ${NAMES[state.backend?.backend] ?? "?"}…`, "running");
  if (resume) record.resumed = true;
  const off = tuner.on("job-event", (event) => {
    record.events.push(event);
    finetunePanel.event(event);
    pauseEvent(record, event);
  });
  const outcome = await attempt(() => tuner.train(record.config, { ...datasetOptions(dataset), resume }));
  off();
  state.activeOp = null;
  state.activeFinetune = null;
  record.pause = null;
  // A finished run deleted its checkpoint; a stopped one saved its last.
  void refreshCheckpoint();
  if (outcome.result) {
    const r = outcome.result;
    record.result = r;
    record.status = r.summary?.cancelled ? "cancelled" : "done";
    setTuned(r.tuned_info ?? state.model);
    state.lastResult = r;
    // A LoRA job's adapter was kept in the library (or why not).
    if (r.adapter?.error) alerts.show({ ...r.adapter.error, message: `The adapter was trained but not kept in this browser: ${r.adapter.error.message}` });
    void refreshAdapters();
    // The run read and checked its data: step 2 is done for it, step 3 too.
    if (state.dataset === dataset) {
      state.datasetChecked = true;
      state.dataTask = r.task;
    }
    state.trainedOn = dataset;
    finetunePanel.finish(r);
    resultsPanel.show(r);
    // Retrieval is judged by recall@1, the others by their held-out loss.
    const [what, b, a, fmt] =
      r.task === "embedding" ? ["held-out recall@1", r.before?.accuracy, r.after?.accuracy, (x) => `${(x * 100).toFixed(1)}%`] : ["validation loss", r.before?.loss, r.after?.loss, (x) => x.toFixed(3)];
    setStatus(
      `Fine-tuning ${r.summary.cancelled ? "stopped" : "finished"} after ${r.summary.steps} steps` + (Number.isFinite(a) && Number.isFinite(b) ? `: ${what} ${fmt(b)} → ${fmt(a)}.` : "."),
      tuner.state === "ready" ? "idle" : tuner.state,
    );
  } else {
    finetunePanel.fail(outcome.error);
    if (outcome.error?.code === "data.invalid") datasetPanel.fail(outcome.error);
    fail(outcome.error);
    if (tuner.state !== "crashed") setStatus(`Fine-tuning failed: ${outcome.error.code}.`, tuner.state === "ready" ? "idle" : tuner.state);
  }
  updateMode();
  return record;
}

/** window.webtune.exportFiles: {files: {name: Uint8Array}, error}. Fetched once per fine-tuned model. */
async function exportFiles() {
  if (state.exported) return { files: state.exported.files, error: null };
  if (state.autoEval || state.checkpointRefresh) await settleAuto();
  const refusal = refusalFor("export") ?? (state.tuned ? null : { code: "model.not_tuned", message: "Fine-tune a model first." });
  if (refusal) {
    alerts.show(refusal);
    return { files: null, error: refusal };
  }
  state.activeOp = { kind: "export" };
  updateMode();
  // "all": the merged model's files under merged/, the adapter's under adapter/.
  const outcome = await attempt(() => tuner.export("all"), (files) => ({ files }));
  state.activeOp = null;
  updateMode();
  if (outcome.error) {
    if (tuner.state !== "crashed") alerts.show(outcome.error);
    return { files: null, error: outcome.error };
  }
  const files = outcome.files;
  state.exported = { files };
  resultsPanel.sizes(Object.keys(files), Object.fromEntries(Object.entries(files).map(([n, b]) => [n, b.byteLength])));
  return { files, error: null };
}

/**
 * "Download a training recipe": the job the panel would start, as a Python project for
 * transformers + PEFT + Accelerate (worker "recipe"), saved as webtune-recipe.zip. Nothing is
 * trained and nothing is uploaded.
 */
async function downloadRecipe() {
  // The automatic "before" evaluation first, as a run waits for it.
  if (state.autoEval || state.checkpointRefresh) await settleAuto();
  const refusal = refusalFor("train") ?? (state.model ? null : { code: "model.not_loaded", message: "Load a model first." });
  if (refusal) return void alerts.show(refusal);
  if (!state.dataset) return void alerts.show({ code: "data.missing", message: "Choose a dataset file or a sample first." });
  setStatus("Writing the training recipe…", "running");
  const outcome = await attempt(() => tuner.recipe(panelConfig(), datasetOptions(state.dataset)));
  if (outcome.error) {
    setStatus("The training recipe could not be written.", "error");
    alerts.show(outcome.error);
    return;
  }
  saveBlob(new Blob([outcome.result], { type: "application/zip" }), "webtune-recipe.zip");
  setStatus("Training recipe saved (webtune-recipe.zip).", "done");
}

/** Offer `blob` as a download named `name` through a Blob URL. */
function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** Save one exported file through a Blob URL (nothing is uploaded). */
async function download(path) {
  const { files, error } = await exportFiles();
  if (error) return;
  const bytes = files[path];
  if (!bytes) {
    alerts.show({ code: "model.missing_file", message: `The export has no file ${path}.` });
    return;
  }
  const type = path.endsWith(".json") ? "application/json" : "application/octet-stream";
  saveBlob(new Blob([bytes], { type }), downloadName(path));
}

/**
 * The latest fine-tuning's evaluation report: what was trained, on what, with which settings,
 * the data summary, the curves, and the before/after numbers and examples, as one JSON document
 * (snake_case keys as the CLI's `train --json`). `result` is the job's result as the worker sent
 * it; `data_summary` (lib/report.js dataSummary) and `curves` (per step: train loss, learning
 * rate, gradient norm; validation points) are read from it. Null before any fine-tuning, and
 * once another model is loaded (the result shown belongs to the model it was tuned from).
 */
function evaluationReport() {
  const record = state.lastResult ? state.finetunes.findLast((f) => f.result === state.lastResult) : null;
  if (!record) return null;
  const load = state.loads.findLast((l) => l.status === "done" && l.info === state.model);
  return {
    webtune_version: state.backend?.version ?? null,
    created: new Date().toISOString(),
    backend: state.backend ? { backend: state.backend.backend, adapter: state.backend.adapter } : null,
    model: state.model,
    model_source: modelSource(load?.source),
    dataset: record.name,
    validation_file: record.validation ?? null,
    task: record.result.task ?? "causal",
    config: record.config,
    data_summary: dataSummary(record.result),
    curves: curves(record.result.summary),
    result: record.result,
  };
}

/** The evaluation report as a self-contained HTML document, or null before any fine-tuning. */
function evaluationReportHtml() {
  const report = evaluationReport();
  return report ? reportHtml(report) : null;
}

/** Save the evaluation report, `kind` "html" or "json" (made in the tab; nothing is uploaded). */
function downloadReport(kind = "json") {
  const report = evaluationReport();
  if (!report) return;
  let body;
  try {
    body = kind === "html" ? reportHtml(report) : JSON.stringify(report, null, 2);
  } catch (e) {
    alerts.show(plainError(e, "report.failed"));
    return;
  }
  const type = kind === "html" ? "text/html;charset=utf-8" : "application/json";
  saveBlob(new Blob([body], { type }), `webtune-evaluation-report.${kind === "html" ? "html" : "json"}`);
}

/** Delete the downloaded model files from the browser (the loaded model stays loaded). */
async function clearModelCache() {
  try {
    const deleted = await FineTuner.clearCache();
    modelPanel.note(deleted ? "Downloaded model files were deleted from this browser." : "No downloaded model files were stored.");
    await refreshCache();
    return deleted;
  } catch (e) {
    alerts.show({ code: "model.cache_failed", message: `Could not clear the model cache: ${e?.message ?? e}` });
    return false;
  }
}

/** Re-read the model cache into the panel; resolves with the list (window.webtune.cachedModels()). */
let cacheRead = Promise.resolve([]);
function refreshCache() {
  // Reads are chained so that an older listing never overwrites a newer one.
  cacheRead = cacheRead
    .catch(() => [])
    .then(() => FineTuner.cachedModels())
    .then(
      (repos) => {
        modelPanel.setCache(repos);
        return repos;
      },
      (e) => {
        alerts.show({ code: "model.cache_failed", message: `Could not read the model cache: ${e?.message ?? e}` }, { level: "warning" });
        return [];
      },
    );
  return cacheRead;
}

/** Forget one cached repo (`base`: its URL before /resolve/); resolves with the entries deleted. */
async function deleteCached(base) {
  if (state.activeOp?.kind === "load") return 0;
  try {
    const count = await FineTuner.deleteCachedModel(base);
    modelPanel.note(`Deleted ${base} from the browser's model cache.`);
    await refreshCache();
    return count;
  } catch (e) {
    alerts.show({ code: "model.cache_failed", message: `Could not delete ${base} from the model cache: ${e?.message ?? e}` });
    return 0;
  }
}

/** Switch backend: terminates the current worker and starts one for `choice`. */
function setBackend(choice) {
  if (!CHOICES.includes(choice)) throw new Error(`unknown backend ${choice}: choose one of ${CHOICES.join(", ")}`);
  backendPanel.setChoice(choice);
  const url = new URL(location.href);
  url.searchParams.set("backend", choice);
  history.replaceState(null, "", url);
  tuner.setBackend(choice);
}

function restartWorker() {
  alerts.dismissWhere((code) => code === "worker.unresponsive");
  tuner.restart();
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
  model: null,
  runs: state.runs,
  loads: state.loads,
  ready,
  train,
  cancel,
  pause,
  resume,
  resumeInterrupted: (input = null) => resumeInterrupted(input).catch((e) => ({ status: "error", events: [], result: null, error: plainError(e) })),
  discardCheckpoint,
  refreshCheckpoint,
  get checkpoint() {
    return state.checkpoint ?? null;
  },
  loadModelFiles,
  loadModelFromHub,
  loadDefaultModel,
  defaultModels,
  generate,
  logits,
  replayReference,
  classify,
  similarity,
  clearModelCache,
  cachedModels: refreshCache,
  deleteCachedModel: deleteCached,
  samples: SAMPLES,
  finetunes: state.finetunes,
  inspectDataset: (input = null, config) => inspectDataset(input, config).catch((e) => ({ status: "error", error: plainError(e) })),
  finetune: (input = null, config) => finetune(input, config).catch((e) => ({ status: "error", events: [], result: null, error: plainError(e) })),
  exportFiles: () => exportFiles().catch((e) => ({ files: null, error: plainError(e) })),
  adapters: () => refreshAdapters().catch((e) => ({ result: null, error: plainError(e) })),
  loadAdapterFiles: (files, options) => loadAdapterFiles(files, options).catch((e) => ({ result: null, error: plainError(e) })),
  loadAdapterFromUrl: (source, options) => loadAdapterFromUrl(source, options).catch((e) => ({ result: null, error: plainError(e) })),
  useAdapter: (name = null) => useAdapter(name).catch((e) => ({ result: null, error: plainError(e) })),
  renameAdapter: (name, to) => renameAdapter(name, to).catch((e) => ({ result: null, error: plainError(e) })),
  deleteAdapter: (name) => deleteAdapter(name).catch((e) => ({ result: null, error: plainError(e) })),
  adapterFiles: (name) => adapterFiles(name).catch((e) => ({ files: null, error: plainError(e) })),
  compare: (prompt, models, options) => compareModels(prompt, models, options).catch((e) => ({ rows: [], error: plainError(e) })),
  get adapter() {
    return state.adapter;
  },
  finetuneChart: () => finetunePanel.chartData(),
  evaluationReport,
  evaluationReportHtml,
  debugLoseDevice: () => tuner.debugLoseDevice(),
  get dataset() {
    return state.dataset ? { name: state.dataset.name, bytes: state.dataset.bytes.byteLength, source: state.dataset.source } : null;
  },
  setValidationFile: (input = null) => setValidationFile(input).catch((e) => ({ status: "error", error: plainError(e) })),
  /** The automatic "before" evaluation of the checked dataset: {dataset, config, result} or null. */
  get baseline() {
    return state.baseline;
  },
  /** Resolves when the automatic "before" evaluation (if running) has ended. */
  whenBaseline: () => settleAuto().then(() => state.baseline),
  get validationFile() {
    return state.validation ? { name: state.validation.name, bytes: state.validation.bytes.byteLength } : null;
  },
  get tuned() {
    return state.tuned;
  },
  setBackend,
  restartWorker,
  whenReady: () => tuner.whenReady(),
  get workerState() {
    return tuner.state;
  },
  get generation() {
    return tuner.generation;
  },
  get backendChoice() {
    return tuner.backendChoice;
  },
};

void refreshCache();
// The worker started with the FineTuner; its "starting" came before these handlers.
showWorkerState(tuner.state);
