// Page-side handle on the compute worker (protocol: see the comment at the top of worker.js).
// Owns one worker per backend choice, turns replies into events and operation promises, and keeps
// a watchdog: a fatal error terminates the worker (promises of its operations settle with that
// error) and a worker that stays silent while busy is reported as unresponsive, so the page never
// waits forever.
//
// Network policy: the server gives the worker script a Content-Security-Policy whose connect-src
// is 'self' plus the origins in the worker URL's `connect` parameters (xtask/src/serve.rs), and a
// dedicated worker obeys its own script's policy. A worker therefore starts able to reach only the
// page's origin. A Hub load from another origin runs in a new worker whose URL allows that Hub
// (and its file hosts: see hubSources): the current worker keeps its model meanwhile and is
// replaced only once the new one has loaded, so a failed load still leaves the previous model in
// use, as in a single worker. Nothing else lives only in a worker: datasets are re-sent with each
// operation, checkpoints are in OPFS, and a fine-tuned model belongs to the model being replaced.

import { resolveHubSource } from "./hub.js";

/** @typedef {import("../protocol").Request} Request */
/** @typedef {import("../protocol").RequestBody} RequestBody */
/** @typedef {import("../webtune").WhichModel} WhichModel */

/**
 * Post one protocol message to a worker (typed here, so a wrong field fails `tsc`).
 * @param {Worker} worker @param {Request} message @param {Transferable[]} [transfer]
 */
function send(worker, message, transfer = []) {
  worker.postMessage(message, transfer);
}

/**
 * Events (subscribe with `on(type, fn)`; `on` returns an unsubscribe function):
 *   "state"    {state, generation}   state: "starting" | "ready" | "busy" | "crashed"
 *   "backend"  the worker's backend message
 *   "progress" the worker's progress message (training)
 *   "download" the worker's download message (hub model loads)
 *   "token"    the worker's token message (generation)
 *   "finetune-event" the worker's finetune-event message (fine-tuning phases and steps)
 *   "network"  the worker's network message (a request the worker made: {url, at})
 *   "error"    {error: {code, message, details}, fatal, id}  errors not tied to a run, and fatal ones
 *   "stalled"  {silentMs, state}     no message for `watchdogMs` while starting or busy
 */
export class WorkerClient {
  /**
   * @param {object} options
   * @param {URL} options.workerUrl   module URL of worker.js
   * @param {"auto" | "webgpu" | "cpu"} options.backend
   * @param {number} [options.watchdogMs]  silence (while starting or busy) before "stalled"
   * @param {number} [options.cpuThreads]  CPU backend threads (default: the worker's choice,
   *   navigator.hardwareConcurrency; 1 = the single-threaded module)
   */
  constructor({ workerUrl, backend, watchdogMs = 60_000, cpuThreads }) {
    this.workerUrl = new URL(workerUrl, globalThis.location?.href);
    // Sources an embedder put in the URL itself stay allowed in every worker.
    this.baseConnect = this.workerUrl.searchParams.getAll("connect");
    /** The sources (besides 'self') the current worker may connect to. */
    this.connect = this.baseConnect;
    /** A worker started for a load from a new origin: {worker, connect, id, source, backend}. */
    this.candidate = null;
    this.backendChoice = backend;
    this.cpuThreads = cpuThreads;
    this.watchdogMs = watchdogMs;
    this.worker = null;
    this.generation = 0;
    this.state = "starting";
    this.backend = null;
    this.lastError = null;
    this.listeners = new Map();
    this.pending = new Map(); // operation id → {resolve, onEvent}
    this.quiet = new Set(); // ids of pending quiet requests (they do not make the worker busy)
    // Shared with the worker so that "stop" reaches a generation that never yields (see worker.js).
    this.interrupt = typeof SharedArrayBuffer === "function" && self.crossOriginIsolated ? new SharedArrayBuffer(4) : null;
    this.nextId = 1;
    this.lastMessageAt = 0;
    this.stallReported = false;
    this.readyWaiters = [];
    this.watchdogTimer = setInterval(() => this.checkWatchdog(), 1000);
  }

  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.listeners.get(type)?.delete(fn);
  }

  emit(type, detail) {
    for (const fn of this.listeners.get(type) ?? []) {
      try {
        fn(detail);
      } catch (e) {
        console.error(`webtune: a "${type}" listener failed`, e);
      }
    }
  }

  setState(state) {
    this.state = state;
    this.emit("state", { state, generation: this.generation });
  }

  /** Start a fresh worker for the current backend choice (terminating any previous one). */
  start() {
    this.stop("worker.restarted", "The worker was restarted; this operation was abandoned.");
    this.generation += 1;
    this.backend = null;
    this.lastError = null;
    this.stallReported = false;
    this.lastMessageAt = performance.now();
    // A fresh worker has no model, so it needs no model host.
    this.connect = this.baseConnect;
    this.worker = this.spawn(this.connect, `webtune-${this.backendChoice}-${this.generation}`);
    this.setState("starting");
  }

  /** A new worker allowed to reach `connect`, its messages routed to this client; "init" sent. */
  spawn(connect, name) {
    const url = new URL(this.workerUrl);
    url.searchParams.delete("connect");
    for (const source of connect) url.searchParams.append("connect", source);
    const worker = new Worker(url, { type: "module", name });
    worker.addEventListener("message", (event) => {
      if (event.data?.type === "thread-port") {
        // A CPU pool thread's crash report: its worker is stuck waiting for it (see worker.js).
        event.data.port.onmessage = ({ data }) => {
          if (this.worker === worker) this.fail(data);
        };
        return;
      }
      if (this.worker === worker) this.handleMessage(event.data);
      else if (this.candidate?.worker === worker) this.handleCandidateMessage(event.data);
    });
    worker.addEventListener("error", (event) => {
      // Reaches the page only when the worker could not handle it itself: the script failed to
      // load or parse, or it crashed before installing its own handlers.
      if (this.worker !== worker && this.candidate?.worker !== worker) return;
      event.preventDefault?.();
      const message = event.message || "The worker script failed to load or crashed.";
      const error = { code: "worker.crashed", message, details: { filename: event.filename ?? null, lineno: event.lineno ?? null } };
      if (this.worker === worker) this.fail(error);
      else this.dropCandidate(error);
    });
    worker.addEventListener("messageerror", () => {
      if (this.worker !== worker && this.candidate?.worker !== worker) return;
      this.emit("error", { id: null, fatal: false, error: { code: "worker.protocol", message: "A message from the worker could not be decoded." } });
    });
    send(worker, { type: "init", backend: this.backendChoice, interrupt: this.interrupt ?? undefined, cpuThreads: this.cpuThreads });
    return worker;
  }

  /** Terminate the worker now; operations still pending settle with `{error: {code, message}}`. */
  stop(code = "worker.terminated", message = "The worker was stopped; this operation was abandoned.") {
    this.dropCandidate(null);
    if (this.worker) {
      this.worker.terminate();
      this.worker = null;
    }
    this.settleAll({ code, message });
  }

  /** Switch backend: a new worker (one worker per backend choice). */
  setBackend(choice) {
    if (choice === this.backendChoice && this.worker) return;
    this.backendChoice = choice;
    this.start();
  }

  restart() {
    this.start();
  }

  /** Resolves with the backend message of the current worker; rejects if it fails first. */
  whenReady() {
    if (this.backend && this.state !== "crashed") return Promise.resolve(this.backend);
    if (this.state === "crashed") return Promise.reject(errorObject(this.lastError));
    return new Promise((resolve, reject) => this.readyWaiters.push({ resolve, reject }));
  }

  /**
   * Start a toy run. Returns `{id, result}`; `result` always settles, with `{summary}` or
   * `{error}` (also when the worker crashes or is replaced mid-run).
   */
  trainToy(config) {
    return this.request("run", { type: "train-toy", config });
  }

  /**
   * Load a model (`source` as in worker.js). `onDownload(message)` sees download progress.
   * `result` settles with `{info, source, timing}` or `{error}`.
   */
  loadModel(source, /** @type {{onDownload?: (message: object) => void}} */ { onDownload } = {}, transfer = []) {
    const needed = this.hubSourcesFor(source);
    if (needed === null) return this.request("load", { type: "load-model", source }, onDownload, transfer);
    if (!Array.isArray(needed)) {
      const id = `load-${this.generation}-${this.nextId++}`;
      return { id, result: Promise.resolve({ error: needed.error }) };
    }
    if (needed.every((s) => this.connect.includes(s))) {
      return this.request("load", { type: "load-model", source }, onDownload, transfer);
    }
    return this.loadInNewWorker(source, [...new Set([...this.baseConnect, ...needed])], onDownload);
  }

  /**
   * The CSP sources a hub `source` downloads from, [] when that is the worker's own origin, null
   * when it is no hub source or not a valid one (the worker then reports why), or {error} when
   * no CSP source can name its host.
   * @returns {string[] | {error: {code: string, message: string, details: object}} | null}
   */
  hubSourcesFor(source) {
    if (source?.kind !== "hub") return null;
    let base;
    try {
      base = new URL(resolveHubSource(source).base);
    } catch {
      return null;
    }
    if (base.origin === this.workerUrl.origin) return [];
    if (base.hostname.startsWith("[")) {
      // CSP host sources have no syntax for IPv6 literals.
      const message = `The worker may only connect to hosts named in its Content-Security-Policy, which cannot name the IPv6 address ${base.host}: use a host name for it.`;
      return { error: { code: "config.invalid", message, details: { value: base.origin } } };
    }
    return hubSources(base);
  }

  /**
   * Load a hub model in a new worker allowed to reach its host (see the top of this file); the
   * current worker is replaced only when the model has loaded. Returns {id, result} as request().
   */
  loadInNewWorker(source, connect, onDownload) {
    const id = `load-${this.generation}-${this.nextId++}`;
    const result = new Promise((resolve) => this.pending.set(id, { resolve, onEvent: onDownload }));
    if (!this.worker || this.state === "crashed") {
      this.settle(id, { error: { code: "worker.crashed", message: "The worker is not running; restart it first." } });
      return { id, result };
    }
    if (this.candidate || this.state === "busy") {
      // One operation at a time, as the worker itself enforces.
      const message = "Another operation is still running; cancel it or wait for it to finish.";
      this.settle(id, { error: { code: "worker.busy", message } });
      return { id, result };
    }
    this.beginOperation();
    this.candidate = { worker: null, connect, id, source, backend: null };
    this.candidate.worker = this.spawn(connect, `webtune-${this.backendChoice}-${this.generation}-load`);
    return { id, result };
  }

  /** Messages of the candidate worker: its backend, then its load's downloads and outcome. */
  handleCandidateMessage(message) {
    const candidate = this.candidate;
    this.lastMessageAt = performance.now();
    this.stallReported = false;
    switch (message?.type) {
      case "backend":
        candidate.backend = message;
        send(candidate.worker, { type: "load-model", id: candidate.id, source: candidate.source });
        break;
      case "network":
      case "download":
        this.handleMessage(message);
        break;
      case "model": {
        // Loaded: the candidate becomes the worker (its backend message first, as for a start).
        const previous = this.worker;
        this.candidate = null;
        this.worker = candidate.worker;
        this.connect = candidate.connect;
        previous?.terminate();
        // Only quick requests can still wait on the previous worker: they will get no answer.
        for (const id of [...this.pending.keys()]) {
          if (id !== candidate.id) this.settle(id, { error: { code: "worker.restarted", message: "The worker was replaced by one with the new model; ask again." } });
        }
        this.handleMessage(candidate.backend);
        this.handleMessage(message);
        break;
      }
      case "error":
        // Any error before the model loaded ends this load; the current worker stays as it was.
        this.dropCandidate(message.error);
        break;
      default:
        break;
    }
  }

  /** An operation starts: busy, the watchdog reset, and un-interrupted (one runs at a time). */
  beginOperation() {
    this.lastMessageAt = performance.now();
    this.stallReported = false;
    if (this.state === "ready") this.setState("busy");
    this.paused = false;
    if (this.interrupt) Atomics.store(new Int32Array(this.interrupt), 0, 0);
  }

  /** Terminate the candidate worker; its load settles with `error` (if one is given). */
  dropCandidate(error) {
    const candidate = this.candidate;
    if (!candidate) return;
    this.candidate = null;
    candidate.worker.terminate();
    if (error) this.settle(candidate.id, { error });
  }

  /** Generate. `onToken(message)` sees each token; `result` settles with `{result}` or `{error}`. */
  generate(input, options, /** @type {{onToken?: (message: object) => void}} */ { onToken } = {}) {
    return this.request("gen", { type: "generate", input, options }, onToken);
  }

  /**
   * Logits of every position of the base (default) or the fine-tuned ("tuned") model; `result`
   * settles with `{shape, data}` or `{error}`.
   */
  logits(/** @type {number[]} */ ids, /** @type {WhichModel} */ which = "base") {
    return this.request("logits", { type: "logits", ids, which });
  }

  /**
   * Replay a committed reference training run (JSON text of tests/fixtures/reference/finetune_*.json)
   * on this worker's backend from the loaded model's files; `result` settles with
   * `{result: {summary, reference_losses, reference_grad_norms}}` or `{error}`.
   */
  replayReference(reference, method) {
    return this.request("replay", { type: "replay-reference", reference, method });
  }

  /**
   * Read and validate a dataset file (`bytes`: an ArrayBuffer, copied to the worker). `result`
   * settles with `{result}` (the report, splits and preview) or `{error}`.
   */
  inspectDataset(name, bytes, config, validation = undefined, onProgress = null) {
    return this.request("data", { type: "inspect-dataset", name, bytes, config, validation }, onProgress);
  }

  /**
   * Fine-tune on a dataset file. `onEvent(message)` sees each finetune-event message; `result`
   * settles with `{result}` or `{error}`.
   */
  finetune(name, bytes, config, /** @type {{onEvent?: (message: object) => void, resume?: boolean, validation?: object}} */ { onEvent, resume = false, validation = undefined } = {}) {
    return this.request("ft", { type: "finetune", name, bytes, config, validation, ...(resume ? { resume: true } : {}) }, onEvent);
  }

  /** The saved checkpoint of an interrupted fine-tuning run; `result` settles with `{result: description | null}`. */
  checkpointInfo() {
    return this.quietRequest("ckpt", { type: "checkpoint-info" });
  }

  /** Delete the saved checkpoint; `result` settles with `{result: null}`. */
  discardCheckpoint() {
    return this.quietRequest("ckpt", { type: "checkpoint-discard" });
  }

  /**
   * A request the worker answers at once, beside any operation: it neither marks the worker
   * busy (which would refuse the page's next operation meanwhile) nor touches the interrupt flag.
   */
  quietRequest(/** @type {string} */ prefix, /** @type {RequestBody} */ message) {
    const id = `${prefix}-${this.generation}-${this.nextId++}`;
    const result = new Promise((resolve) => this.pending.set(id, { resolve, onEvent: null }));
    this.quiet.add(id);
    if (!this.worker || this.state === "crashed") {
      this.settle(id, { error: { code: "worker.crashed", message: "The worker is not running; restart it first." } });
    } else {
      send(this.worker, /** @type {Request} */ ({ ...message, id }));
    }
    return { id, result };
  }

  /**
   * Score the base (`which` "base") or fine-tuned ("tuned") model on a dataset file's held-out
   * split without training; `result` settles with `{result}` or `{error}`.
   */
  evaluate(/** @type {string} */ name, /** @type {ArrayBuffer} */ bytes, config, /** @type {WhichModel} */ which = "base", validation = undefined) {
    return this.request("eval", { type: "evaluate", name, bytes, config, which, validation });
  }

  /**
   * The job finetune() would run with these arguments, as a Python project for transformers +
   * PEFT + Accelerate; `result` settles with `{result: ArrayBuffer}` (a ZIP) or `{error}`.
   */
  recipe(/** @type {string} */ name, /** @type {ArrayBuffer} */ bytes, config, validation = undefined) {
    return this.request("recipe", { type: "recipe", name, bytes, config, validation });
  }

  /** Classify a text with an encoder's head; `result` settles with `{result: {label, labels, probs}}` or `{error}`. */
  classify(/** @type {string} */ text, /** @type {WhichModel} */ which = "base") {
    return this.request("cls", { type: "classify", text, which });
  }

  /** Cosine similarity of two texts' embeddings; `result` settles with `{result: {similarity}}` or `{error}`. */
  similarity(/** @type {string} */ a, /** @type {string} */ b, /** @type {WhichModel} */ which = "base") {
    return this.request("sim", { type: "similarity", a, b, which });
  }

  /** The fine-tuned model's files; `result` settles with `{files: {name: ArrayBuffer}}` or `{error}`. */
  exportFiles() {
    return this.request("export", { type: "export" });
  }

  /** The adapter library, each entry with `fits` (the loaded model) and `attached`; quiet. */
  adapters() {
    return this.quietRequest("adapters", { type: "adapters" });
  }

  /**
   * Keep a PEFT adapter under `name`, attached to the loaded model it must fit: `files`
   * ([{name, bytes}]), or with origin "url" the URL of a folder holding its two files (the worker
   * downloads them).
   */
  loadAdapter(/** @type {string | null} */ name, /** @type {any} */ files, /** @type {"files" | "url"} */ origin = "files") {
    if (origin !== "url") return this.request("adapter", { type: "adapter-load", name, files, origin });
    // The worker reaches only the hosts of the models it was started for: say so up front
    // rather than let the download fail on the policy.
    let url;
    try {
      url = new URL(String(files));
    } catch {
      url = null;
    }
    const allowed = url !== null && (url.origin === this.workerUrl.origin || hubSources(url).every((s) => this.connect.includes(s)));
    if (!allowed) {
      const id = `adapter-${this.generation}-${this.nextId++}`;
      const message =
        url === null
          ? `${JSON.stringify(String(files))} is not a URL.`
          : `The worker may not reach ${url.host}: it connects only to this site and the hosts of the models it loaded. Load a model from ${url.host} first, or pick the adapter's files.`;
      return { id, result: Promise.resolve({ error: { code: url === null ? "config.invalid" : "network.blocked", message, details: { url: String(files) } } }) };
    }
    return this.request("adapter", { type: "adapter-load", name, url: url.href, origin });
  }

  /** Attach a kept adapter (null: none) so that "adapter:NAME" answers at once; resolves with the switch's timing. */
  useAdapter(/** @type {string | null} */ name) {
    return this.request("adapter", { type: "adapter-use", name });
  }

  renameAdapter(/** @type {string} */ name, /** @type {string} */ to) {
    return this.quietRequest("adapter", { type: "adapter-rename", name, to });
  }

  deleteAdapter(/** @type {string} */ name) {
    return this.quietRequest("adapter", { type: "adapter-delete", name });
  }

  /** A kept adapter's PEFT files: `result` settles with `{result: {meta, files: {name: ArrayBuffer}}}`. */
  adapterFiles(/** @type {string} */ name) {
    return this.quietRequest("adapter", { type: "adapter-files", name });
  }

  /**
   * Send one operation (`message` without its id). Returns `{id, result}`; `result` always
   * settles. `onEvent` sees the operation's intermediate messages (progress, download, token).
   */
  request(/** @type {string} */ prefix, /** @type {RequestBody} */ message, onEvent = null, /** @type {Transferable[]} */ transfer = []) {
    const id = `${prefix}-${this.generation}-${this.nextId++}`;
    const result = new Promise((resolve) => this.pending.set(id, { resolve, onEvent }));
    if (!this.worker || this.state === "crashed") {
      this.settle(id, { error: { code: "worker.crashed", message: "The worker is not running; restart it first." } });
      return { id, result };
    }
    this.beginOperation();
    send(this.worker, /** @type {Request} */ ({ ...message, id }), transfer);
    return { id, result };
  }

  /** Ask the current operation to stop (see "cancel" in worker.js). */
  cancel() {
    this.paused = false;
    if (this.interrupt) Atomics.store(new Int32Array(this.interrupt), 0, 1);
    if (this.worker) send(this.worker, { type: "cancel" });
    if (this.candidate?.backend) send(this.candidate.worker, { type: "cancel" });
    // Still starting: its load has not begun, so it ends here.
    else this.dropCandidate({ code: "model.load_cancelled", message: "Loading the model was cancelled." });
  }

  /** Test hook: the worker destroys its GPU devices as a driver reset would (see worker.js). */
  debugLoseDevice() {
    if (this.worker) send(this.worker, { type: "debug-lose-device" });
  }

  /** Pause the running fine-tuning job after its current step (see "pause" in worker.js). */
  pause() {
    // A paused worker is silent on purpose: no "stalled" warning meanwhile.
    this.paused = true;
    if (this.interrupt) Atomics.store(new Int32Array(this.interrupt), 0, 2);
    if (this.worker) send(this.worker, { type: "pause" });
  }

  /** Continue a paused fine-tuning job (see "resume" in worker.js). */
  resume() {
    this.paused = false;
    this.lastMessageAt = performance.now();
    if (this.interrupt) Atomics.store(new Int32Array(this.interrupt), 0, 0);
    if (this.worker) send(this.worker, { type: "resume" });
  }

  handleMessage(message) {
    this.lastMessageAt = performance.now();
    this.stallReported = false;
    switch (message?.type) {
      case "backend":
        this.backend = message;
        this.emit("backend", message);
        this.setState(this.operations() > 0 ? "busy" : "ready");
        for (const w of this.readyWaiters.splice(0)) w.resolve(message);
        break;
      case "network":
        this.emit("network", message);
        break;
      case "progress":
      case "download":
      case "token":
      case "finetune-event":
      case "dataset-progress":
        this.pending.get(message.id)?.onEvent?.(message);
        this.emit(message.type, message);
        break;
      case "done":
        this.settle(message.id, "summary" in message ? { summary: message.summary } : { result: message.result });
        break;
      case "model":
        this.settle(message.id, { info: message.info, source: message.source, timing: message.timing });
        break;
      case "logits":
        this.settle(message.id, { shape: message.shape, data: message.data });
        break;
      case "dataset":
        this.settle(message.id, { result: message.result });
        break;
      case "files":
        this.settle(message.id, { files: message.files });
        break;
      case "error":
        if (message.fatal) {
          this.fail(message.error, message.id);
        } else if (message.id != null && this.pending.has(message.id)) {
          this.settle(message.id, { error: message.error });
        } else {
          this.emit("error", { id: message.id ?? null, fatal: false, error: message.error });
        }
        break;
      default:
        console.warn("webtune: unknown message from the worker", message);
    }
  }

  /** Operations in flight (quiet requests aside). */
  operations() {
    return this.pending.size - this.quiet.size;
  }

  settle(id, outcome) {
    const entry = this.pending.get(id);
    if (!entry) return;
    this.pending.delete(id);
    this.quiet.delete(id);
    entry.resolve(outcome);
    if (this.operations() === 0 && this.state === "busy" && this.worker) this.setState("ready");
  }

  settleAll(error) {
    for (const id of [...this.pending.keys()]) this.settle(id, { error });
  }

  /** A fatal error: terminate the worker, settle its operations, tell the page. */
  fail(error, id = null) {
    this.dropCandidate(null);
    if (this.worker) {
      this.worker.terminate();
      this.worker = null;
    }
    this.lastError = error;
    this.setState("crashed");
    this.settleAll(error);
    for (const w of this.readyWaiters.splice(0)) w.reject(errorObject(error));
    this.emit("error", { id, fatal: true, error });
  }

  checkWatchdog() {
    if (!this.worker || this.stallReported || this.paused) return;
    if (this.state !== "starting" && this.state !== "busy") return;
    const silentMs = performance.now() - this.lastMessageAt;
    if (silentMs > this.watchdogMs) {
      this.stallReported = true;
      this.emit("stalled", { silentMs, state: this.state });
    }
  }
}

/**
 * CSP sources for a Hub at `url`'s origin. huggingface.co and hf.co redirect file downloads to
 * their own subdomains (cdn-lfs.hf.co, cas-bridge.xethub.hf.co, ...) and a redirect is checked
 * against connect-src too, so that family is allowed whole; another named host is allowed with
 * its subdomains (where a mirror would keep its files), an IP address alone.
 */
function hubSources(url) {
  const host = url.hostname;
  if (url.protocol === "https:" && (host === "huggingface.co" || host === "hf.co")) {
    return ["https://huggingface.co", "https://*.huggingface.co", "https://hf.co", "https://*.hf.co"];
  }
  return /^[\d.]+$/.test(host) ? [url.origin] : [url.origin, `${url.protocol}//*.${url.host}`];
}

function errorObject(error) {
  const e = new Error(error?.message ?? "the worker failed");
  e.code = error?.code ?? "worker.crashed";
  e.details = error?.details;
  return e;
}
