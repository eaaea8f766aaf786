// webtune's embeddable JavaScript API: a promise-based, event-emitting wrapper around the compute
// worker (worker.js; its messages are typed in protocol.d.ts). Types: webtune.d.ts.
//
//   import { FineTuner } from "webtune";            // or "./webtune.js"
//   const ft = await FineTuner.create({ backend: "auto" });
//   ft.on("progress", (step) => console.log(step.step, step.loss));
//   await ft.loadModel("HuggingFaceTB/SmolLM2-135M");       // Hub repo, URL, or File objects
//   await ft.loadDataset(file, { data: { causal: { seq_len: 128 } } });
//   const result = await ft.train({ train: { method: "lora", steps: 30 } });
//   const merged = await ft.export("merged");                // {"config.json": Uint8Array, ...}
//
// Every failure is thrown as a WebtuneError ({code, message, details}). The worker, the wasm
// module and lib/ are found next to this file (import.meta.url), so the module works from any
// page that can load them (module workers and wasm need a served origin, not file://).

import { WorkerClient } from "./lib/worker-client.js";
import { adapterFolderUrl, deleteCachedModel, listCachedModels, CACHE_NAME } from "./lib/hub.js";
import { entriesFromFileList, isModelFile, pickModelFiles } from "./lib/model-files.js";

const WORKER_URL = new URL("./worker.js", import.meta.url);
const MODELS_INDEX_URL = new URL("./models/index.json", import.meta.url);
const BACKENDS = ["auto", "webgpu", "cpu"];

/** An error from webtune: `code` is stable (e.g. "model.not_loaded", "data.invalid"), `details` an object or undefined. */
export class WebtuneError extends Error {
  constructor(code, message, details) {
    super(message);
    this.name = /** @type {const} */ ("WebtuneError");
    this.code = String(code || "internal");
    this.details = details;
  }

  /** A WebtuneError from a worker's `{code, message, details}`, an Error, or anything thrown. */
  static from(error, fallbackCode = "internal") {
    if (error instanceof WebtuneError) return error;
    if (error && typeof error === "object") {
      return new WebtuneError(error.code ?? fallbackCode, String(error.message ?? error), error.details);
    }
    return new WebtuneError(fallbackCode, String(error));
  }

  toJSON() {
    return { name: this.name, code: this.code, message: this.message, details: this.details };
  }
}

/**
 * Ready-made job configurations (worker.js "finetune" config), per task — the page's presets.
 * `quick-demo` trains a few dozen steps on a small held-out set: a demonstration in minutes, not
 * a finished model; `balanced` one pass over the training data (three for a classifier);
 * `thorough` three passes (five for a classifier) with larger adapters. Sentence embeddings
 * (an encoder on pairs) learn from in-batch negatives, so their batches are larger: every other
 * pair of a batch is a negative of each anchor. The held-out share is the job's default (a
 * tenth, but at least 40 examples of a small file; docs/evaluation.md); balanced's learning rate is
 * the page's, from the sweep in docs/defaults.md. The held-out set is scored in full up to
 * the job's evaluation budget (`validation_max` unset; see JobConfig); the quick demo caps it at
 * 96 examples, enough rows for a 95% interval on its verdict. `standard` is the old name of
 * `balanced`.
 */
/** @type {Record<Exclude<import("./webtune").PresetName, "standard">, Record<import("./webtune").Task, import("./webtune").JobConfig>>} */
const PRESET_TABLE = {
  "quick-demo": {
    causal: {
      validation_max: 96,
      batch_size: 2,
      samples: 2,
      sample_tokens: 16,
      data: { causal: { seq_len: 64 } },
      train: { method: "lora", lr: 2e-3, steps: 15, lora_r: 8, lora_alpha: 16, seed: 42 },
    },
    classification: {
      batch_size: 8,
      data: { causal: { seq_len: 64 } },
      // A new head needs a high rate: MiniLM on the sentiment sample reaches 0.83 held-out
      // accuracy in 50 steps at 5e-3 (2e-3 for 40 steps: 0.70; 1e-2 collapses to one class).
      train: { method: "lora", lr: 5e-3, steps: 50, warmup: 5, seed: 3 },
    },
    // MiniLM on the ChatterBot sample (question → answer), batch 16: 30 steps at 1e-3 moved
    // nothing measurable; 3e-3 did (recall@1 +2.4 points, held-out loss 2.83 → 2.64).
    embedding: {
      batch_size: 16,
      data: { causal: { seq_len: 64 } },
      train: { method: "lora", lr: 3e-3, steps: 30, warmup: 3, seed: 3 },
    },
  },
  balanced: {
    causal: {
      batch_size: 4,
      samples: 3,
      sample_tokens: 24,
      data: { causal: { seq_len: 128 } },
      train: { method: "lora", lr: 2e-3, epochs: 1, lora_r: 8, lora_alpha: 16, seed: 42 },
    },
    classification: {
      batch_size: 16,
      data: { causal: { seq_len: 128 } },
      train: { method: "lora", lr: 5e-3, epochs: 3, warmup: 6, seed: 42 },
    },
    embedding: {
      batch_size: 16,
      data: { causal: { seq_len: 128 } },
      // One epoch of the ChatterBot sample at 3e-3: recall@1 0.561 → 0.593, loss 2.22 → 1.84.
      train: { method: "lora", lr: 3e-3, epochs: 1, warmup: 6, seed: 42 },
    },
  },
  // Longer, with larger adapters: three passes (five for a classifier, whose new head needs
  // more) over the training data.
  thorough: {
    causal: {
      batch_size: 4,
      samples: 3,
      sample_tokens: 32,
      data: { causal: { seq_len: 256 } },
      train: { method: "lora", lr: 1e-3, epochs: 3, lora_r: 16, lora_alpha: 32, seed: 42, eval_every: 50 },
    },
    classification: {
      batch_size: 16,
      data: { causal: { seq_len: 128 } },
      train: { method: "lora", lr: 5e-3, epochs: 5, warmup: 10, seed: 42, eval_every: 50 },
    },
    embedding: {
      batch_size: 32,
      data: { causal: { seq_len: 128 } },
      // Not measured: three epochs at a lower rate than balanced's.
      train: { method: "lora", lr: 2e-3, epochs: 3, lora_r: 16, lora_alpha: 32, warmup: 10, seed: 42, eval_every: 50 },
    },
  },
};
// "standard" was the first name of "balanced"; it stays as an alias.
/** @type {Readonly<Record<import("./webtune").PresetName, Record<import("./webtune").Task, import("./webtune").JobConfig>>>} */
export const PRESETS = Object.freeze({ ...PRESET_TABLE, standard: PRESET_TABLE.balanced });

/**
 * The task a job on this model runs: a causal LM continues text; an encoder (BERT/MiniLM)
 * classifies, or learns sentence embeddings from pairs. Which one an encoder does depends on its
 * data, so `data` (a loadDataset() result) decides once there is one; without it, an encoder
 * classifies.
 */
export function taskOf(info, data = null) {
  if (!/bert/i.test(String(info?.architecture ?? ""))) return "causal";
  return data?.task === "embedding" ? "embedding" : "classification";
}

/** `over` merged into `base` (plain objects merge key by key; everything else replaces). */
export function mergeConfig(base, over) {
  const out = { ...(base ?? {}) };
  for (const [key, value] of Object.entries(over ?? {})) {
    const plain = (v) => v !== null && typeof v === "object" && !Array.isArray(v) && !ArrayBuffer.isView(v);
    out[key] = plain(value) && plain(out[key]) ? mergeConfig(out[key], value) : value;
  }
  return out;
}

/** `bytes` (ArrayBuffer, a view, or a string) as a fresh ArrayBuffer of exactly those bytes. */
function toArrayBuffer(bytes) {
  if (typeof bytes === "string") return new TextEncoder().encode(bytes).buffer;
  if (bytes instanceof ArrayBuffer) return bytes;
  if (ArrayBuffer.isView(bytes)) return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  return null;
}

function isBlob(x) {
  return typeof Blob !== "undefined" && x instanceof Blob;
}

function checkBackend(choice) {
  if (!BACKENDS.includes(choice)) throw new WebtuneError("config.invalid", `backend must be one of ${BACKENDS.join(", ")}, not ${JSON.stringify(choice)}.`);
}

function documentBase() {
  return typeof document !== "undefined" ? document.baseURI : self.location.href;
}

/**
 * A relative or absolute URL string → absolute URL; null for a Hub repo id ("owner/name").
 * Relative URLs must start with "./", "../" or "/" (otherwise "models/x" would be a repo id).
 */
function urlOf(text) {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) return new URL(text).href;
  if (/^\.{0,2}\//.test(text)) return new URL(text, documentBase()).href;
  return null;
}

/**
 * The models listed in a models/index.json (`cargo xtask models` writes one next to this file):
 * [{id, name, task, repo, files: [{name, bytes}], ...}] with `repo` made absolute. [] if none.
 */
export async function servedModels(index = MODELS_INDEX_URL) {
  const url = new URL(String(index), documentBase());
  let response;
  try {
    response = await fetch(url);
  } catch (e) {
    throw new WebtuneError("model.download_failed", `Could not read ${url.href}: ${e?.message ?? e}`, { url: url.href });
  }
  if (!response.ok) return [];
  const json = await response.json().catch(() => null);
  const models = Array.isArray(json?.models) ? json.models : [];
  // `repo` is relative to the page that lists it, which sits one folder above the index.
  const root = new URL("../", url);
  return models.map((m) => ({ ...m, repo: new URL(String(m.repo), root).href }));
}

/**
 * Files (File, FileList, [{name, bytes}]) → [{name, bytes: ArrayBuffer | File}] of the model files
 * among them, and the buffers made here (safe to transfer: the caller's own ArrayBuffers are
 * copied; Files are passed as they are).
 */
async function modelFiles(list) {
  const items = Array.from(list);
  const files = [];
  const owned = [];
  const blobs = [];
  for (const item of items) {
    if (isBlob(item)) blobs.push(item);
    else if (item && typeof item.name === "string" && (isBlob(item.bytes) || toArrayBuffer(item.bytes))) {
      const name = item.name.split("/").pop();
      if (!isModelFile(name)) continue;
      // A File under a name of its own (a folder pick's entry) stays a File: read a tensor at a time.
      const bytes = isBlob(item.bytes) ? item.bytes : toArrayBuffer(item.bytes);
      files.push({ name, bytes });
      if (!isBlob(bytes) && bytes !== item.bytes) owned.push(bytes);
    } else throw new WebtuneError("config.invalid", "Model files must be File objects or {name, bytes: ArrayBuffer | Uint8Array}.");
  }
  if (blobs.length) {
    const { picked } = pickModelFiles(entriesFromFileList(blobs));
    // The Files themselves: the worker reads weights from them a tensor at a time.
    for (const p of picked) files.push({ name: p.name, bytes: p.file });
  }
  if (files.length === 0) {
    throw new WebtuneError("model.missing_file", `None of the ${items.length} given files is a model file (config.json, *.safetensors, tokenizer.json, *.gguf).`);
  }
  return { files, owned };
}

/** The worker's load-model `source` (and buffers to transfer) for a loadModel() argument. */
async function modelSource(source, options) {
  const hub = (repo, extra = {}) => {
    const out = { kind: "hub", repo, revision: extra.revision ?? options.revision ?? "main" };
    const endpoint = extra.endpoint ?? options.endpoint;
    if (endpoint) out.endpoint = String(endpoint);
    const files = extra.files ?? options.files;
    if (Array.isArray(files) && files.length) out.files = files.map(String);
    return { source: out, transfer: [] };
  };
  if (typeof source === "string" || source instanceof URL) {
    const text = String(source).trim();
    return hub(urlOf(text) ?? text);
  }
  if (source && typeof source === "object" && !isBlob(source) && !Array.isArray(source) && !(typeof FileList !== "undefined" && source instanceof FileList)) {
    if (typeof source.served === "string") {
      const models = await servedModels(source.index ?? options.index ?? MODELS_INDEX_URL);
      const model = models.find((m) => m.id === source.served);
      if (!model) {
        throw new WebtuneError("model.missing_file", `There is no served model ${JSON.stringify(source.served)}; available: ${models.map((m) => m.id).join(", ") || "none"}.`, {
          served: source.served,
          available: models.map((m) => m.id),
        });
      }
      return hub(model.repo, { files: (model.files ?? []).map((f) => f.name) });
    }
    if (typeof source.hub === "string" || typeof source.url === "string") {
      const text = String(source.hub ?? source.url).trim();
      return hub(urlOf(text) ?? text, source);
    }
    if (source.files) return modelSource(source.files, options);
    throw new WebtuneError("config.invalid", "loadModel() takes a Hub repo id, a URL, File objects, [{name, bytes}], {hub}, {url} or {served}.");
  }
  const { files, owned } = await modelFiles(isBlob(source) ? [source] : source ?? []);
  return { source: { kind: "files", files }, transfer: owned };
}

/** A dataset argument → {name, bytes: ArrayBuffer}. */
async function datasetOf(input, options) {
  if (isBlob(input)) {
    const name = options.name ?? input.name ?? "dataset.jsonl";
    return { name, bytes: await input.arrayBuffer() };
  }
  if (typeof input === "string" || input instanceof URL) {
    const url = new URL(String(input), documentBase());
    let response;
    try {
      response = await fetch(url);
    } catch (e) {
      throw new WebtuneError("data.missing", `Could not read the dataset ${url.href}: ${e?.message ?? e}`, { url: url.href });
    }
    if (!response.ok) throw new WebtuneError("data.missing", `Could not read the dataset ${url.href} (HTTP ${response.status}).`, { url: url.href, status: response.status });
    const name = options.name ?? decodeURIComponent(url.pathname.split("/").pop() || "dataset.jsonl");
    return { name, bytes: await response.arrayBuffer() };
  }
  const name = typeof input?.name === "string" && input.name ? input.name : null;
  const bytes = toArrayBuffer(input?.bytes ?? input?.text);
  if (!name || !bytes) {
    throw new WebtuneError("config.invalid", "A dataset is a File/Blob, a URL, or {name, bytes} / {name, text}; its name's extension (.jsonl, .json, .csv, .tsv, .txt) picks the format.");
  }
  return { name, bytes };
}

/** A separate validation file (any dataset input) as {name, bytes}; undefined for none. */
async function validationOf(input) {
  return input == null ? undefined : datasetOf(input, {});
}

/**
 * One fine-tuning session: a worker with the wasm module on one backend, a loaded model, a
 * dataset, and the latest fine-tuned model. Create with `await FineTuner.create()`.
 */
export class FineTuner {
  #client;
  #listeners = new Map();
  #unsubscribe = [];
  #model = null;
  #dataset = null;
  #tuned = null;
  #lastResult = null;
  #trainedOn = null; // the #dataset object the latest train() used
  #adapter = null; // the kept adapter useAdapter() chose, or null
  #disposed = false;

  /** Use FineTuner.create(). */
  constructor(client) {
    if (!(client instanceof WorkerClient)) throw new WebtuneError("config.invalid", "Use `await FineTuner.create(options)`.");
    this.#client = client;
    const forward = (type, map = (x) => x, as = type) => this.#unsubscribe.push(client.on(type, (detail) => this.#emit(as, map(detail))));
    // Before the page hears of it: a new worker (restart, another backend) holds no model.
    this.#unsubscribe.push(
      client.on("state", ({ state }) => {
        if (state === "starting") this.#forget();
      }),
    );
    forward("state", (d) => d.state);
    forward("backend");
    forward("stalled");
    forward("network", ({ url, at }) => ({ url, at }));
    // The toy run's steps (trainToy); "progress" is fine-tuning's.
    forward("progress", ({ type: _t, id: _i, ...step }) => step, "toy-progress");
    this.#unsubscribe.push(
      client.on("error", ({ error, fatal }) => {
        if (fatal) this.#forget();
        this.#emit("error", Object.assign(WebtuneError.from(error), { fatal: Boolean(fatal) }));
      }),
    );
  }

  /**
   * Start a worker and wait for its backend. Options: backend "auto" (default: WebGPU on a
   * hardware adapter, else CPU) | "webgpu" | "cpu"; workerUrl (default: worker.js next to this
   * module); watchdogMs (silence before a "stalled" event, default 60000); cpuThreads (threads of
   * the CPU backend, default navigator.hardwareConcurrency; more than one needs a cross-origin
   * isolated page, else the backend says why it runs on one).
   */
  static async create(options = {}) {
    const tuner = FineTuner.start(options);
    try {
      await tuner.whenReady();
    } catch (e) {
      tuner.dispose();
      throw e;
    }
    return tuner;
  }

  /**
   * A FineTuner whose worker is still starting (create() without the wait): "state" and
   * "backend" events tell how the start goes, whenReady() waits for it. An operation called
   * meanwhile waits for the backend too (and fails if it does not start). Options as create()'s.
   * @param {import("./webtune").CreateOptions} [options]
   */
  static start({ backend = "auto", workerUrl = WORKER_URL, watchdogMs = 60_000, cpuThreads } = {}) {
    checkBackend(backend);
    if (cpuThreads !== undefined && !(Number.isInteger(cpuThreads) && cpuThreads >= 1)) {
      throw new WebtuneError("config.invalid", `cpuThreads must be a whole number of at least 1, not ${JSON.stringify(cpuThreads)}.`);
    }
    const client = new WorkerClient({ workerUrl: new URL(String(workerUrl), documentBase()), backend, watchdogMs, cpuThreads });
    const tuner = new FineTuner(client);
    client.start();
    return tuner;
  }

  /** Resolves with the backend message once the current worker is ready; rejects (a WebtuneError) if it fails first. */
  async whenReady() {
    this.#alive();
    try {
      return await this.#client.whenReady();
    } catch (e) {
      throw WebtuneError.from(e, "device.unavailable");
    }
  }

  /**
   * Run on another backend ("auto" | "webgpu" | "cpu"): a new worker replaces this one, so the
   * model, dataset and fine-tuned model are gone ("state" goes to "starting"). Does nothing when
   * that backend is already chosen.
   */
  setBackend(choice) {
    this.#alive();
    checkBackend(choice);
    this.#client.setBackend(choice);
  }

  /** Replace the worker with a fresh one on the same backend (after a crash or a stall); the model is gone. */
  restart() {
    this.#alive();
    this.#client.restart();
  }

  /** The backend asked for ("auto" | "webgpu" | "cpu"); `backend` says which one runs. */
  get backendChoice() {
    return this.#client.backendChoice;
  }

  /** How many workers this FineTuner has started (1, then one more per restart or backend switch). */
  get generation() {
    return this.#client.generation;
  }

  /** Models this browser keeps from earlier downloads (Cache API "webtune-models-v1"), one entry per repo. */
  static cachedModels() {
    return listCachedModels();
  }

  /** Forget the cached files of one repo (`base` from cachedModels()); resolves with the entries deleted. */
  static deleteCachedModel(base) {
    return deleteCachedModel(base);
  }

  /** Forget every downloaded model file; resolves with whether anything was stored. */
  static async clearCache() {
    return typeof caches === "undefined" ? false : caches.delete(CACHE_NAME);
  }

  /** The models served next to this module (models/index.json), or from `index`. */
  static servedModels(index) {
    return servedModels(index);
  }

  /** The worker's backend message: {backend: "webgpu" | "cpu", requested, reason, adapter, ...}. */
  get backend() {
    return this.#client.backend;
  }

  /** @returns {import("./webtune").WorkerState} */
  get state() {
    return this.#disposed ? "disposed" : /** @type {import("./webtune").WorkerState} */ (this.#client.state);
  }

  /** Info of the loaded model ({architecture, parameters, ...}) or null. */
  get model() {
    return this.#model;
  }

  /**
   * What train() runs on the loaded model and dataset: "causal", "classification" or
   * "embedding" (an encoder on sentence pairs, known once the dataset is checked); null without
   * a model.
   */
  get task() {
    return this.#model ? taskOf(this.#model, this.#dataset?.result) : null;
  }

  /** The loaded dataset: {name, bytes (length), options, report} or null. */
  get dataset() {
    const d = this.#dataset;
    return d ? { name: d.name, bytes: d.bytes.byteLength, options: d.options, report: d.result?.report ?? null } : null;
  }

  /** Info of the latest fine-tuned model, or null. */
  get tuned() {
    return this.#tuned;
  }

  /** The latest train() result, or null. */
  get lastResult() {
    return this.#lastResult;
  }

  /** Subscribe to an event; returns a function that unsubscribes. */
  on(type, fn) {
    if (typeof fn !== "function") throw new WebtuneError("config.invalid", "on(type, fn) needs a function.");
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
    this.#listeners.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    this.#listeners.get(type)?.delete(fn);
  }

  /** Like on(), but only for the next event of `type`. */
  once(type, fn) {
    const off = this.on(type, (detail) => {
      off();
      fn(detail);
    });
    return off;
  }

  #emit(type, detail) {
    for (const fn of [...(this.#listeners.get(type) ?? [])]) {
      try {
        fn(detail);
      } catch (e) {
        console.error(`webtune: a "${type}" listener failed`, e);
      }
    }
  }

  #alive() {
    if (this.#disposed) throw new WebtuneError("worker.disposed", "This FineTuner was disposed; create a new one.");
  }

  /** The worker that held the model is gone. */
  #forget() {
    this.#model = null;
    this.#tuned = null;
    this.#adapter = null;
    this.#lastResult = null;
    if (this.#dataset) this.#dataset = { ...this.#dataset, result: null };
  }

  /**
   * The dataset an operation reads: `options.dataset` (any loadDataset() input, with
   * `options.validation`) when given — it becomes the loaded dataset, unchecked, unless it is the
   * loaded one — else the loaded dataset.
   */
  async #datasetFor(what, options) {
    const given = options?.dataset;
    if (given == null) {
      this.#needDataset(what);
      return this.#dataset;
    }
    const dataset = await datasetOf(given, {});
    const validation = await validationOf(options.validation);
    const d = this.#dataset;
    const same = (a, b) => (a == null && b == null) || (a != null && b != null && a.name === b.name && a.bytes === b.bytes);
    if (d && same(d, dataset) && same(d.validation, validation)) return d;
    this.#dataset = { ...dataset, validation, options: {}, result: null };
    return this.#dataset;
  }

  #needModel(what) {
    if (!this.#model) throw new WebtuneError("model.not_loaded", `Load a model before ${what}: call loadModel() first.`);
  }

  #needDataset(what) {
    if (!this.#dataset) throw new WebtuneError("data.missing", `Load a dataset before ${what}: call loadDataset() first.`);
  }

  /** Await an operation's settled outcome; throw its error as a WebtuneError. */
  async #settle({ result }) {
    const outcome = await result;
    if (outcome.error) throw WebtuneError.from(outcome.error);
    return outcome;
  }

  /**
   * Load a model, replacing the current one only if the new one loads. `source`: a Hub repo id
   * ("owner/name"); a URL of a Hub-layout repo or of one file (".../resolve/main/x.gguf"; relative
   * URLs start with "./", "../" or "/"); File objects / a FileList / [{name, bytes}] (a folder's
   * non-model files are skipped); {hub | url, endpoint?, revision?, files?}; or {served: id,
   * index?} (a model listed in models/index.json). `options.quantize_base` ("q8" / "q4") keeps
   * the base's projections quantized as they load (QLoRA, LoRA only). Emits "download" events.
   * Resolves with {info, source, timing}.
   */
  async loadModel(source, options = {}) {
    this.#alive();
    const { source: message, transfer } = await modelSource(source, options ?? {});
    const quant = options?.quantize_base;
    if (quant !== undefined && quant !== null && quant !== "f32") message.quantize_base = String(quant);
    const onDownload = (m) => {
      const { type: _t, id: _i, ...progress } = m;
      this.#emit("download", progress);
    };
    const outcome = await this.#settle(this.#client.loadModel(message, { onDownload }, transfer));
    this.#model = outcome.info;
    this.#tuned = null;
    this.#adapter = null;
    this.#lastResult = null;
    this.#dataset = this.#dataset ? { ...this.#dataset, result: null } : null;
    return { info: outcome.info, source: outcome.source, timing: outcome.timing };
  }

  /**
   * Read and validate a dataset for the loaded model (nothing is trained): a File/Blob, a URL
   * (fetched), or {name, bytes | text}. `options` is the job configuration that train() and
   * evaluate() start from (worker.js "inspect-dataset": data: {policy, format, schema, causal:
   * {seq_len, ...}}, validation_fraction, validation_max, batch_size, train: {...}), plus `name`
   * to override the file name and `validation`: a separate validation file (any input form
   * above) evaluated instead of a held-out share (training examples it also has are left out of
   * training; result.validation_report, result.overlap_removed). Resolves with the report, the
   * split and a token preview; a file refused under policy "stop" throws `data.invalid` with
   * details {file, line, field, reason}.
   */
  async loadDataset(input, options = {}) {
    this.#alive();
    const { name: nameOverride, validation: heldOut, ...config } = options ?? {};
    const dataset = await datasetOf(input, { name: nameOverride });
    const validation = await validationOf(heldOut);
    this.#needModel("loadDataset()");
    // Copied to the worker, not transferred: train() and evaluate() send the bytes again.
    const onProgress = (m) => {
      const { type: _t, id: _i, ...progress } = m;
      this.#emit("data-progress", progress);
    };
    const outcome = await this.#settle(this.#client.inspectDataset(dataset.name, dataset.bytes, config, validation, onProgress));
    this.#dataset = { ...dataset, validation, options: config, result: outcome.result };
    return outcome.result;
  }

  /**
   * Score a model on the loaded dataset's held-out split without training: the base model, or
   * `{model: "tuned"}` the latest fine-tuned one (default: the fine-tuned one when there is
   * one). The split depends on the configuration (train.seed, validation_fraction,
   * validation_max): after train() on this dataset, evaluate() uses that job's configuration,
   * so it scores exactly the held-out examples the job did; before, the dataset's options —
   * pass the training config you will use (or put it in loadDataset's options) to get the
   * numbers a following train() reports as `before`. `config` is merged over either.
   * `options.dataset` (with `options.validation`) scores another file, which becomes the loaded
   * dataset without a check (as train()'s).
   */
  /** @param {import("./webtune").JobConfig & {model?: import("./webtune").WhichModel}} [config] @param {import("./webtune").DatasetOptions} [options] */
  async evaluate({ model, ...config } = {}, options = {}) {
    this.#alive();
    this.#needModel("evaluate()");
    const which = this.#whichModel(model);
    const d = await this.#datasetFor("evaluate()", options);
    const start = this.#trainedOn === d && this.#lastResult ? this.#lastResult.config : d.options;
    const outcome = await this.#settle(this.#client.evaluate(d.name, d.bytes, mergeConfig(start, config), which, d.validation));
    const result = outcome.result;
    return { ...result, task: result.task ?? taskOf(this.#model) };
  }

  /**
   * The task of a job on dataset `d`: an encoder's depends on its data, so a dataset given to
   * train() or recipe() without a check is checked here first (only when a preset needs the task).
   */
  async #taskFor(d) {
    if (taskOf(this.#model) === "causal" || d.result) return taskOf(this.#model, d.result);
    const outcome = await this.#settle(this.#client.inspectDataset(d.name, d.bytes, d.options, d.validation));
    d.result = outcome.result;
    return taskOf(this.#model, d.result);
  }

  /** train()'s configuration on dataset `d`: `config` (and its preset) merged over the dataset's options. */
  async #jobConfig(config, d) {
    const { preset, ...rest } = config ?? {};
    let base = d.options ?? {};
    if (preset !== undefined) {
      if (!Object.hasOwn(PRESETS, preset)) throw new WebtuneError("config.invalid", `Unknown preset ${JSON.stringify(preset)}; choose one of ${Object.keys(PRESETS).join(", ")}.`);
      base = mergeConfig(PRESETS[preset][await this.#taskFor(d)], base);
    }
    // steps and epochs exclude each other: the one asked for here replaces the other.
    const asked = rest.train ?? {};
    if (asked.steps != null && base?.train?.epochs != null) base = mergeConfig(base, { train: { epochs: null } });
    if (asked.epochs != null && base?.train?.steps != null) base = mergeConfig(base, { train: { steps: null } });
    return mergeConfig(base, rest);
  }

  /**
   * Fine-tune the loaded model on the loaded dataset (worker.js "finetune"): evaluates the base
   * model on the held-out split, trains, evaluates again and exports. `config` is merged over
   * the dataset's options; `config.preset` ("quick-demo", "standard") starts from PRESETS.
   * Emits "phase" and "progress" (one per training step). cancel() stops after the current
   * step; the promise still resolves (result.cancelled true) with the model trained so far.
   * Every job event is also emitted whole as "job-event" ({type, ...}). Options: `dataset` (and
   * `validation`) trains on that file instead of the loaded dataset (it becomes the loaded one,
   * unchecked: the job reads and checks it itself); `resume: true` continues the interrupted run
   * saved in this browser (checkpoint()) on the same file, with that run's configuration.
   */
  async train(config = {}, options = {}) {
    this.#alive();
    this.#needModel("train()");
    const d = await this.#datasetFor("train()", options);
    const job = await this.#jobConfig(config, d);
    const onEvent = (m) => {
      if (m.event) this.#emit("job-event", m.event);
      const { type, ...event } = m.event ?? {};
      if (type === "step") this.#emit("progress", event);
      else if (type === "phase") this.#emit("phase", event);
      else if (type === "data_progress") this.#emit("data-progress", event);
      else if (type === "paused" || type === "resumed") this.#emit(type, event);
    };
    const outcome = await this.#settle(this.#client.finetune(d.name, d.bytes, job, { onEvent, validation: d.validation, resume: Boolean(options?.resume) }));
    const r = outcome.result;
    const result = { ...r, task: r.task ?? (Array.isArray(r.labels) ? "classification" : "causal"), cancelled: Boolean(r.summary?.cancelled), config: job };
    this.#tuned = r.tuned_info ?? this.#model;
    // The model just trained answers next, not an adapter chosen before.
    this.#adapter = null;
    this.#lastResult = result;
    this.#trainedOn = d;
    return result;
  }

  /**
   * The job train(config) would run, as a Python project that runs it with Hugging Face
   * transformers + PEFT on GPUs or a cluster (launched by Accelerate): the same examples,
   * split, batches, starting weights and optimiser, so on one device it reproduces webtune's
   * losses. Nothing is trained. Resolves with the ZIP archive's bytes (a Uint8Array holding
   * `webtune-recipe/…`: job.json, data/, train.py, requirements.txt, README.md, accelerate/).
   * `options.dataset`/`validation` as train()'s.
   */
  async recipe(config = {}, options = {}) {
    this.#alive();
    this.#needModel("recipe()");
    const d = await this.#datasetFor("recipe()", options);
    const job = await this.#jobConfig(config, d);
    const outcome = await this.#settle(this.#client.recipe(d.name, d.bytes, job, d.validation));
    return new Uint8Array(outcome.result);
  }

  /**
   * Pause training after its current step ("paused" event {step, total_steps} once it waits);
   * resume() continues exactly where it stopped (the losses of an uninterrupted run), cancel()
   * ends it as usual. Returns whether something was running (only training pauses).
   */
  pause() {
    if (this.#disposed || this.#client.state !== "busy") return false;
    this.#client.pause();
    return true;
  }

  /** Continue paused training ("resumed" event); withdraws a pause not yet taken. */
  resume() {
    if (this.#disposed || this.#client.state !== "busy") return false;
    this.#client.resume();
    return true;
  }

  /** Stop what runs: training after its current step, generation after its token, a download at once. */
  cancel() {
    if (this.#disposed || this.#client.state !== "busy") return false;
    this.#client.cancel();
    return true;
  }

  /**
   * Continue `prompt` (a string, {text}, {ids: number[]}, or {chat: [{role, content}]} formatted
   * with the model's chat template, stopping at its end-of-turn token). Options (snake_case, worker.js
   * "generate"): max_new_tokens, greedy, temperature, top_k, top_p, repetition_penalty, seed,
   * use_cache, stop_tokens, ignore_eos, and model: "base" | "tuned" (default: the fine-tuned
   * model when there is one). Emits "token" events. Resolves with {text, generated_ids, ...}.
   */
  /** @param {import("./webtune").GenerateOptions} [options] */
  async generate(prompt, options = {}) {
    this.#alive();
    this.#needModel("generate()");
    const opts = { ...(options ?? {}) };
    opts.model = this.#whichModel(opts.model);
    const onToken = (m) => this.#emit("token", { token: m.token, text: m.text });
    const outcome = await this.#settle(this.#client.generate(prompt, opts, { onToken }));
    return { ...outcome.result, model: opts.model };
  }

  /**
   * An encoder's label for `text` with its classification head: {label, labels, probs}.
   * `options.model`: "base" | "tuned" | "adapter:NAME" (default as generate()'s).
   */
  async classify(text, options = {}) {
    this.#alive();
    this.#needModel("classify()");
    const which = this.#whichModel(options?.model);
    return (await this.#settle(this.#client.classify(String(text ?? ""), which))).result;
  }

  /** Cosine similarity of two texts' mean-pooled embeddings (an encoder): {similarity}. `options.model` as classify()'s. */
  async similarity(a, b, options = {}) {
    this.#alive();
    this.#needModel("similarity()");
    const which = this.#whichModel(options?.model);
    return (await this.#settle(this.#client.similarity(String(a ?? ""), String(b ?? ""), which))).result;
  }

  /**
   * The logits of every position of `ids` (token ids): {shape: [T, vocab], data: Float32Array},
   * for checking numbers against another implementation. `options.model` as classify()'s.
   */
  async logits(ids, options = {}) {
    this.#alive();
    this.#needModel("logits()");
    const which = this.#whichModel(options?.model);
    const { shape, data } = await this.#settle(this.#client.logits(Array.from(ids ?? []), which));
    return { shape, data };
  }

  /**
   * The interrupted fine-tuning run saved in this browser (OPFS): {step, total_steps, saved_at,
   * config, dataset: {name, size, sha256}, model} or null. train(config, {resume: true}) on the
   * same file continues it. Answered beside a running operation.
   */
  async checkpoint() {
    this.#alive();
    return (await this.#settle(this.#client.checkpointInfo())).result ?? null;
  }

  /** Delete the saved checkpoint. */
  async discardCheckpoint() {
    this.#alive();
    await this.#settle(this.#client.discardCheckpoint());
  }

  /**
   * Check the backend: train the built-in toy model (worker.js "train-toy"; config e.g. {steps,
   * seed}) and resolve with its summary {steps, initial_loss, final_loss, cancelled, ...}.
   * Emits "toy-progress" per step. Needs no model.
   */
  async trainToy(config = {}) {
    this.#alive();
    return (await this.#settle(this.#client.trainToy(config ?? {}))).summary;
  }

  /**
   * Self-check: replay a committed PyTorch/PEFT reference run (the JSON text of
   * tests/fixtures/reference/finetune_*.json; method "lora" | "full") on this backend from the
   * loaded model's files: {summary, reference_losses, reference_grad_norms}.
   */
  async replayReference(reference, method) {
    this.#alive();
    this.#needModel("replayReference()");
    return (await this.#settle(this.#client.replayReference(String(reference ?? ""), method))).result;
  }

  /** Test hook: the worker destroys its GPU devices, as a driver reset would. */
  debugLoseDevice() {
    this.#alive();
    this.#client.debugLoseDevice();
  }

  /**
   * The fine-tuned model's files as {name: Uint8Array}: "merged" (default) a Hugging Face model
   * folder (config.json, model.safetensors, tokenizer.json, ...); "peft" the LoRA adapter
   * (adapter_config.json, adapter_model.safetensors; `export.no_adapter` after full
   * fine-tuning); "all" both, named "merged/..." and "adapter/...".
   */
  async export(kind = "merged") {
    this.#alive();
    const prefix = { merged: "merged/", peft: "adapter/", adapter: "adapter/", all: "" }[kind];
    if (prefix === undefined) throw new WebtuneError("config.invalid", `export() takes "merged", "peft" or "all", not ${JSON.stringify(kind)}.`);
    if (!this.#tuned) throw new WebtuneError("model.not_tuned", "There is no fine-tuned model to export: call train() first.");
    const outcome = await this.#settle(this.#client.exportFiles());
    /** @type {Record<string, Uint8Array>} */
    const files = {};
    for (const [name, buffer] of Object.entries(outcome.files)) {
      if (name.startsWith(prefix)) files[name.slice(prefix.length)] = new Uint8Array(buffer);
    }
    if (Object.keys(files).length === 0) {
      throw new WebtuneError(kind === "merged" ? "export.empty" : "export.no_adapter", kind === "merged" ? "The export holds no merged model." : "There is no adapter to export: the model was fully fine-tuned (use \"merged\").");
    }
    return files;
  }

  /** `model` as asked (checked), or the default one. */
  #whichModel(model) {
    const which = model ?? this.#defaultModel();
    if (which === "tuned" && !this.#tuned) throw new WebtuneError("model.not_tuned", "There is no fine-tuned model yet: call train() first, or pass {model: \"base\"}.");
    return which;
  }

  /** What answers generate() and evaluate() when they name no model. */
  #defaultModel() {
    if (this.#adapter !== null) return `adapter:${this.#adapter}`;
    return this.#tuned ? "tuned" : "base";
  }

  /** The adapter useAdapter() chose (null: none). */
  get adapter() {
    return this.#adapter;
  }

  /**
   * The adapters kept in this browser (OPFS: they outlive the tab), oldest first: every LoRA
   * adapter train() made (named by `adapter_name`, else after the dataset) and every one
   * loadAdapter() took, with its base, shape, dataset and before/after scores. `fits` says it
   * belongs to the loaded model, `attached` that choosing it costs nothing.
   */
  async adapters() {
    this.#alive();
    return (await this.#settle(this.#client.adapters())).result;
  }

  /**
   * Keep a PEFT LoRA adapter for the loaded model and attach it: `source` is File objects / a
   * FileList / [{name, bytes}] holding adapter_config.json and adapter_model.safetensors (other
   * files are ignored), a URL of a folder holding both, or a Hub repo id ({endpoint, revision}
   * options as loadModel's). It must fit the model (`model.shape_mismatch` otherwise). Resolves
   * with its description and `attach_ms`.
   */
  async loadAdapter(source, options = {}) {
    this.#alive();
    this.#needModel("loadAdapter()");
    let files;
    let origin = /** @type {"files" | "url"} */ ("files");
    if (typeof source === "string" || source instanceof URL) {
      // The worker downloads it: it is the one allowed to reach model hosts.
      origin = "url";
      files = adapterFolderUrl(source, { endpoint: options.endpoint ?? undefined, revision: options.revision ?? undefined, base: documentBase() });
    } else {
      const list = isBlob(source) ? [source] : Array.from(source ?? []);
      files = [];
      for (const item of list) {
        const name = String(item?.webkitRelativePath || item?.name || "");
        const bytes = isBlob(item) ? item : isBlob(item?.bytes) ? item.bytes : toArrayBuffer(item?.bytes);
        if (!bytes) throw new WebtuneError("config.invalid", "Adapter files must be File objects or {name, bytes: ArrayBuffer | Uint8Array}.");
        files.push({ name, bytes });
      }
    }
    const outcome = await this.#settle(this.#client.loadAdapter(options.name ?? null, files, origin));
    return outcome.result;
  }

  /**
   * Choose the model generate() and evaluate() use from now on: a kept adapter, attached
   * un-merged beside the loaded base (no reload: switching back and forth costs milliseconds),
   * or null for none (then the latest fine-tuned model answers, else the base; pass {model:
   * "base"} to generate() for the base itself). An adapter kept for another base
   * is refused (`adapter.base_mismatch`, naming both). Resolves with the switch's timing.
   */
  async useAdapter(name) {
    this.#alive();
    this.#needModel("useAdapter()");
    const outcome = await this.#settle(this.#client.useAdapter(name ?? null));
    this.#adapter = name ?? null;
    return outcome.result;
  }

  async renameAdapter(name, to) {
    this.#alive();
    const meta = (await this.#settle(this.#client.renameAdapter(name, to))).result;
    if (this.#adapter === name) this.#adapter = meta.name;
    return meta;
  }

  async deleteAdapter(name) {
    this.#alive();
    const meta = (await this.#settle(this.#client.deleteAdapter(name))).result;
    if (this.#adapter === name) this.#adapter = null;
    return meta;
  }

  /** A kept adapter's PEFT files ({"adapter_config.json": Uint8Array, ...}), to download or share. */
  async adapterFiles(name) {
    this.#alive();
    const { files } = (await this.#settle(this.#client.adapterFiles(name))).result;
    return Object.fromEntries(Object.entries(files).map(([n, b]) => [n, new Uint8Array(b)]));
  }

  /** Terminate the worker. Pending operations reject with `worker.disposed`; later calls too. */
  dispose() {
    if (this.#disposed) return;
    this.#disposed = true;
    clearInterval(this.#client.watchdogTimer);
    this.#client.stop("worker.disposed", "The FineTuner was disposed; this operation was abandoned.");
    for (const off of this.#unsubscribe.splice(0)) off();
    this.#emit("state", "disposed");
    this.#listeners.clear();
    this.#model = null;
    this.#tuned = null;
  }
}

export default FineTuner;
