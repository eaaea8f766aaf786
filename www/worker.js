// webtune compute worker (a module worker): loads the wasm module, chooses the compute backend,
// and runs training, model loading (local files or Hub downloads) and generation off the main
// thread, so the page never freezes.
// The messages it takes and sends are typed once in protocol.d.ts (checked by `tsc`; see
// tsconfig.worker.json) and explained in docs/protocol.md.

import { downloadHubModel, forget, resolveHubSource } from "./lib/hub.js";
import { readJson, writeFile } from "./lib/opfs.js";
import { ADAPTER_FILES, ADAPTER_NOTE, checkNameFree, deleteAdapter, freeName, listAdapters, loraOf, readAdapter, renameAdapter, saveAdapter } from "./lib/adapter-library.js";

const PKG_URL = new URL("./pkg/webtune.js", import.meta.url);
// Passed explicitly: wasm-bindgen's `init()` only defaults to the file next to webtune.js when
// generated with a default module path.
const WASM_URL = new URL("./pkg/webtune_bg.wasm", import.meta.url);
// The threaded CPU-only build (`cargo xtask build-wasm` makes both).
const THREADS_PKG_URL = new URL("./pkg-threads/webtune.js", import.meta.url);
const THREADS_WASM_URL = new URL("./pkg-threads/webtune_bg.wasm", import.meta.url);
const THREAD_WORKER_URL = new URL("./thread-worker.js", import.meta.url);
/** The pool's workers, kept referenced for the worker's lifetime. */
const threadWorkers = [];

/** The loaded wasm-bindgen module (its free functions), once "init" has loaded it. */
let wasmModule = null;
/** The wasm instance's exports (its `memory` included), once "init" has loaded it. */
let wasmExports = null;
// Test hook (tests/e2e/soak.test.mjs reads it with Playwright's worker.evaluate): the size of the
// wasm linear memory in bytes, or null before init. It never shrinks, so growth over repeated
// identical jobs is a leak or fragmentation. A global, because the page has no message for it.
self.webtuneWasmMemoryBytes = () => wasmExports?.memory?.buffer.byteLength ?? null;
// Test hook beside it: the bytes of live allocations in the module (its allocator's count), which
// grow with a leak but not with the allocator's fragmentation.
self.webtuneWasmHeapBytes = () => wasmModule?.heapBytes?.() ?? null;
/** The session promise, set by "init". Resolves to the wasm Session; rejects on init failure. */
let sessionPromise = null;
/**
 * @typedef {object} Op  an operation in progress
 * @property {string} id
 * @property {string} kind
 * @property {boolean} cancelRequested
 * @property {AbortController | null} abort
 * @property {boolean} pauseRequested
 * @property {{step: number, end: (goOn: boolean) => void} | null} paused
 * @property {number} [totalSteps]  a fine-tuning job's steps, once its first step reports them
 */
/** The operation in progress. @type {Op | null} */
let currentOp = null;
/** Int32Array over the page's interrupt SharedArrayBuffer (see "init"), or null. @type {Int32Array | null} */
let interrupt = null;
/** Set once the wasm instance has panicked or trapped: nothing may call into it again. */
let broken = null;

/** @param {import("./protocol").Reply} message @param {Transferable[]} [transfer] */
function post(message, transfer = []) {
  self.postMessage(message, transfer);
}

function coded(code, message, details) {
  return Object.assign(new Error(message), details === undefined ? { code } : { code, details });
}

/** Whether the page asked the current fine-tuning job to pause (by message, or the interrupt flag's 2). */
function pauseRequested(op) {
  if (!op.pauseRequested && interrupt !== null && Atomics.load(interrupt, 0) === 2) op.pauseRequested = true;
  return op.pauseRequested;
}

/**
 * Pause the job after the step `event`: the Promise returned to wasm keeps the training loop
 * waiting between two steps (nothing of its state changes) until "resume" (true) or "cancel"
 * (false: the job then ends as a cancelled one, evaluated and exported). A pause asked through
 * the interrupt flag alone also ends when the flag goes back to 0 (resume) or to 1 (cancel).
 */
function pauseAfter(op, id, event) {
  const byFlag = interrupt !== null && Atomics.load(interrupt, 0) === 2;
  return new Promise((resolve) => {
    const poll = interrupt === null ? 0 : setInterval(() => {
      const flag = Atomics.load(interrupt, 0);
      if (flag === 1) end(false);
      else if (flag === 0 && byFlag) end(true);
    }, 50);
    const end = (goOn) => {
      if (op.paused === null) return;
      clearInterval(poll);
      op.paused = null;
      op.pauseRequested = false;
      if (!goOn) op.cancelRequested = true;
      else post({ type: "finetune-event", id, event: { type: "resumed", step: event.step, total_steps: event.total_steps } });
      resolve(goOn);
    };
    op.paused = { step: event.step, end };
    post({ type: "finetune-event", id, event: { type: "paused", step: event.step, total_steps: event.total_steps } });
  });
}

/** Whether the page asked the current operation to stop (by message or through the interrupt flag). */
function stopRequested(op) {
  if (!op.cancelRequested && interrupt !== null && Atomics.load(interrupt, 0) === 1) op.cancelRequested = true;
  return op.cancelRequested;
}

/** A structured-clonable `{code, message, details}` from anything thrown. */
function errorPayload(error, fallbackCode = "internal") {
  if (error instanceof WebAssembly.RuntimeError) {
    return {
      code: "wasm.trap",
      message: `The wasm module crashed (${error.message}). Restart the worker to continue.`,
      details: { name: error.name, stack: String(error.stack ?? "") },
    };
  }
  if (error !== null && typeof error === "object") {
    const coded = typeof error.code === "string" && error.code.length > 0;
    let details = error.details ?? undefined;
    if (!coded && details === undefined && error.stack) {
      details = { name: String(error.name ?? "Error"), stack: String(error.stack) };
    }
    try {
      structuredClone(details);
    } catch {
      details = { unclonable: String(details) };
    }
    return {
      code: coded ? error.code : fallbackCode,
      message: String(error.message ?? error),
      details,
    };
  }
  return { code: fallbackCode, message: String(error), details: undefined };
}

function isFatal(error) {
  return broken !== null || error instanceof WebAssembly.RuntimeError;
}

function reportError(id, error, { fallbackCode = "internal", fatal = isFatal(error) } = {}) {
  const payload = errorPayload(error, fallbackCode);
  if (fatal && broken === null) broken = payload;
  post({ type: "error", id: id ?? null, error: payload, fatal: Boolean(fatal) });
}

// Every request this worker makes, as the browser records it (Resource Timing), so the page's
// privacy indicator counts the worker's requests too. `at` is wall-clock ms: the worker's clock
// has its own origin.
if (typeof PerformanceObserver === "function") {
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) post({ type: "network", url: entry.name, at: performance.timeOrigin + entry.startTime });
  }).observe({ type: "resource", buffered: false });
}

// Every GPUDevice created in this worker (wgpu asks the adapter for one), so a lost device is
// reported the moment the browser says so (driver reset, GPU process crash, the tab losing its
// GPU) instead of surfacing later as a confusing failed readback, and so tests can lose one.
const gpuDevices = [];
function watchGpuDevices() {
  // @ts-ignore: a mark on the wrapped method, so it is wrapped once.
  if (typeof GPUAdapter === "undefined" || GPUAdapter.prototype.requestDevice.webtuneWatched) return;
  const original = GPUAdapter.prototype.requestDevice;
  const watched = async function (...args) {
    const device = await original.apply(this, args);
    gpuDevices.push(device);
    device.lost.then((info) => {
      // A device dropped while the backend was being chosen (auto falling back) is no loss.
      if (!sessionUsesGpu) return;
      const payload = {
        code: "device.lost",
        message:
          `The GPU device was lost (${info.reason === "destroyed" ? "destroyed" : "the browser reported a loss"}${info.message ? `: ${info.message}` : ""}). ` +
          "What was running stopped; your dataset and settings are kept. Restart the worker to continue, or use the CPU backend if this happens again.",
        details: { reason: String(info.reason ?? "unknown"), message: String(info.message ?? "") },
      };
      if (broken === null) broken = payload;
      post({ type: "error", id: currentOp?.id ?? null, error: payload, fatal: true });
    });
    return device;
  };
  watched.webtuneWatched = true;
  GPUAdapter.prototype.requestDevice = watched;
}
watchGpuDevices();
/** Whether the session computes on a GPU device (else a device lost is only a probe's). */
let sessionUsesGpu = false;

// wasm calls this from its panic hook before the instance traps, so the page hears about a
// panic even when the trap leaves a promise unsettled.
self.__webtune_on_panic = (message) => {
  const payload = {
    code: "wasm.panic",
    message: `webtune panicked: ${message}`,
    details: { panic: String(message) },
  };
  if (broken === null) broken = payload;
  post({ type: "error", id: currentOp?.id ?? null, error: payload, fatal: true });
};

self.addEventListener("error", (event) => {
  const error = event.error ?? new Error(event.message || "uncaught error in the worker");
  reportError(currentOp?.id ?? null, error, { fallbackCode: "worker.uncaught" });
  event.preventDefault(); // reported above; do not also surface it as a page-side worker error
});

self.addEventListener("unhandledrejection", (event) => {
  reportError(currentOp?.id ?? null, event.reason, { fallbackCode: "worker.uncaught" });
  event.preventDefault();
});

/**
 * Look for a WebGPU adapter from JS: whether one exists, whether it is a fallback (software)
 * adapter, what it is, and its key limits. Never throws.
 */
async function probeWebGpu() {
  if (!("gpu" in navigator) || !navigator.gpu) {
    return { adapter: null, limits: null, why: "This browser does not expose WebGPU (navigator.gpu is missing)" };
  }
  let adapter = null;
  try {
    adapter = await navigator.gpu.requestAdapter();
  } catch (e) {
    return { adapter: null, limits: null, why: `WebGPU requestAdapter() failed (${e?.message ?? e})` };
  }
  if (!adapter) {
    return { adapter: null, limits: null, why: "WebGPU is exposed but no adapter is available" };
  }
  // Older browsers lack `info` and name `isFallbackAdapter` on the adapter itself.
  /** @type {Record<string, any>} */
  const info = adapter.info ?? {};
  const isFallback = Boolean(info.isFallbackAdapter ?? /** @type {any} */ (adapter).isFallbackAdapter ?? false);
  /** @type {Record<string, any>} */
  const limits = adapter.limits ?? {};
  return {
    adapter: {
      vendor: String(info.vendor ?? ""),
      architecture: String(info.architecture ?? ""),
      device: String(info.device ?? ""),
      description: String(info.description ?? ""),
      is_fallback: isFallback,
    },
    limits: {
      maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize ?? null,
      maxBufferSize: limits.maxBufferSize ?? null,
      maxComputeWorkgroupStorageSize: limits.maxComputeWorkgroupStorageSize ?? null,
    },
    why: null,
  };
}

/** "SwiftShader", "llvmpipe", ... when the adapter names a known software renderer. */
function softwareName(adapter) {
  const text = `${adapter.vendor} ${adapter.architecture} ${adapter.description}`.toLowerCase();
  for (const [needle, name] of [["swiftshader", "SwiftShader"], ["llvmpipe", "llvmpipe"], ["lavapipe", "lavapipe"], ["warp", "WARP"]]) {
    if (text.includes(needle)) return name;
  }
  return null;
}

function describeAdapter(adapter) {
  const parts = [adapter.vendor, adapter.architecture, adapter.description].filter(Boolean);
  return parts.length ? parts.join(" ") : "unnamed adapter";
}

/** Import a wasm-bindgen package and instantiate its module; sets wasmModule/wasmExports. */
async function loadPackage(pkgUrl, wasmUrl) {
  try {
    const wasm = await import(pkgUrl.href);
    wasmExports = await wasm.default({ module_or_path: wasmUrl });
    wasmModule = wasm;
    return wasm;
  } catch (e) {
    const err = new Error(
      `Could not load the webtune wasm module from ${pkgUrl.pathname} (${e?.message ?? e}). ` +
        "Build it with `cargo xtask build-wasm`.",
    );
    err.code = e?.code ?? "wasm.load_failed";
    throw err;
  }
}

/**
 * Why the threaded CPU module cannot be used here (a sentence), or null when it can: it needs
 * SharedArrayBuffer (cross-origin isolation) and more than one thread.
 */
function threadsUnavailable(threads) {
  if (threads <= 1) return "one CPU thread was asked for";
  if (!self.crossOriginIsolated || typeof SharedArrayBuffer !== "function") {
    return "the page is not cross-origin isolated (COOP/COEP headers), so wasm threads cannot share memory";
  }
  return null;
}

/**
 * Load the threaded module and start its pool of `threads` Web Workers; resolves once every
 * thread runs. The pool workers instantiate the same module on the same (shared) memory. The
 * workers start first: rayon's pool build blocks until its threads run, and a browser starts no
 * worker while its parent is blocked.
 */
async function loadThreadedPackage(threads) {
  const wasm = await loadPackage(THREADS_PKG_URL, THREADS_WASM_URL);
  if (typeof wasm.threadPoolBuild !== "function") throw new Error(`${THREADS_PKG_URL.pathname} has no thread pool`);
  const [module, memory] = wasm.threadPoolShared();
  const started = [];
  for (let i = 0; i < threads; i++) {
    const worker = new Worker(THREAD_WORKER_URL, { type: "module", name: `webtune-cpu-${i}` });
    threadWorkers.push(worker);
    started.push(
      new Promise((resolve, reject) => {
        worker.addEventListener("message", (e) => (e.data?.type === "ready" ? resolve() : reject(new Error(e.data?.message ?? "thread failed"))));
        worker.addEventListener("error", (e) => reject(new Error(e.message || "a CPU thread's worker failed to load")));
      }),
    );
    // A trap or panic on a pool thread leaves this worker blocked waiting for it, unable to
    // report anything: the thread tells the page directly, through a port of its own.
    const channel = new MessageChannel();
    post({ type: "thread-port", port: channel.port1 }, [channel.port1]);
    worker.postMessage({ pkgUrl: THREADS_PKG_URL.href, module, memory, port: channel.port2 }, [channel.port2]);
  }
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error("the CPU threads did not start within 60 s")), 60_000);
  });
  try {
    await Promise.race([Promise.all(started), timeout]);
  } finally {
    clearTimeout(timer);
  }
  // Every worker now waits for a rayon thread to run.
  wasm.threadPoolBuild(threads);
  return wasm;
}

/** Decide the backend for `requested`, create the wasm session, and announce it. */
async function initialise(requested, cpuThreads) {
  const probe = requested === "cpu" ? null : await probeWebGpu();
  let backend;
  let reason;
  let session = null;

  if (requested === "cpu") {
    backend = "cpu";
    reason = "CPU chosen explicitly.";
  } else if (requested === "webgpu") {
    if (!probe.adapter) {
      const err = new Error(`${probe.why}, so the WebGPU backend cannot start. Choose CPU or Auto instead.`);
      err.code = "device.unavailable";
      err.details = { requested };
      throw err;
    }
    backend = "webgpu";
    reason = probe.adapter.is_fallback
      ? `WebGPU chosen explicitly. The adapter is a fallback (software) adapter` +
        `${softwareName(probe.adapter) ? ` (${softwareName(probe.adapter)})` : ""}, so training will be slow.`
      : `WebGPU chosen explicitly (${describeAdapter(probe.adapter)}).`;
  } else if (!probe.adapter) {
    backend = "cpu";
    reason = `${probe.why}, so auto chose CPU.`;
  } else if (probe.adapter.is_fallback) {
    backend = "cpu";
    const name = softwareName(probe.adapter);
    reason =
      `Only a fallback (software) WebGPU adapter${name ? ` (${name})` : ""} is available; it is ~25x slower ` +
      "than the CPU backend for small models, so auto chose CPU. Choose WebGPU explicitly to use it anyway.";
  } else {
    backend = "webgpu";
    reason = `A hardware WebGPU adapter is available (${describeAdapter(probe.adapter)}), so auto chose WebGPU.`;
  }

  let wasm;
  let threadsNote = "";
  if (backend === "cpu") {
    const why = threadsUnavailable(cpuThreads);
    if (why === null) {
      try {
        wasm = await loadThreadedPackage(cpuThreads);
      } catch (e) {
        // A threaded module that is missing or whose threads do not start is no reason to fail:
        // the single-threaded module computes the same, slower. The half-started one is dropped.
        for (const worker of threadWorkers.splice(0)) worker.terminate();
        wasmModule = null;
        wasmExports = null;
        threadsNote = ` The threaded CPU module could not be used (${e?.message ?? e}), so the CPU backend runs on one thread.`;
      }
    } else if (cpuThreads > 1) {
      threadsNote = ` The CPU backend runs on one thread: ${why}.`;
    }
  }
  if (wasm === undefined) wasm = await loadPackage(PKG_URL, WASM_URL);

  if (backend === "webgpu") {
    try {
      session = await wasm.Session.create("webgpu");
      sessionUsesGpu = true;
    } catch (e) {
      if (requested === "webgpu" || isFatal(e)) throw e;
      // auto: a device that cannot be created is no reason to fail; use the CPU.
      backend = "cpu";
      reason = `The WebGPU device could not be created (${e?.message ?? e}), so auto fell back to CPU.`;
    }
  }
  if (session === null) session = await wasm.Session.create("cpu");

  const info = session.backendInfo();
  if (info?.backend === "cpu" && info.cpu_threads > 1) {
    threadsNote = ` The CPU backend runs on ${info.cpu_threads} threads (Web Workers sharing the wasm memory).`;
  }
  const deviceLimits = info?.device_limits ?? null;
  const adapterLimits = probe?.limits ?? null;
  post({
    type: "backend",
    backend: info?.backend ?? backend,
    requested,
    reason: reason + threadsNote,
    cpu_threads: info?.cpu_threads ?? null,
    adapter: probe?.adapter ?? null,
    limits: adapterLimits || deviceLimits ? { adapter: adapterLimits, device: deviceLimits } : null,
    info: info ?? null,
    version: typeof wasm.version === "function" ? wasm.version() : null,
  });
  return session;
}

/**
 * The session, once the backend is ready, for operation `id`; null (after reporting why) when the
 * operation cannot start. Marks the operation as current; the caller must call `finish(op)`.
 */
async function beginOp(id, kind) {
  if (sessionPromise === null) {
    reportError(id, coded("worker.protocol", `The worker got ${kind} before its init message.`), { fatal: false });
    return null;
  }
  let session;
  try {
    session = await sessionPromise;
  } catch {
    // The init failure was already reported (fatal); say why this operation cannot start too.
    reportError(id, coded(broken?.code ?? "device.unavailable", `The backend failed to start, so ${kind} cannot begin.`), { fatal: true });
    return null;
  }
  if (broken !== null) {
    post({ type: "error", id, error: broken, fatal: true });
    return null;
  }
  if (currentOp !== null) {
    const what = currentOp.kind === "train-toy" ? `Run ${currentOp.id} is still training` : `${currentOp.kind} ${currentOp.id} is still running`;
    const code = kind === "train-toy" || kind === "finetune" ? "train.busy" : "worker.busy";
    reportError(id, coded(code, `${what}; cancel it or wait for it to finish.`, { running: currentOp.id, kind: currentOp.kind }), { fatal: false });
    return null;
  }
  currentOp = { id, kind, cancelRequested: false, abort: null, pauseRequested: false, paused: null };
  return { session, op: currentOp };
}

function finish(op) {
  if (currentOp === op) currentOp = null;
}

async function trainToy(id, config) {
  const started = await beginOp(id, "train-toy");
  if (!started) return;
  const { session, op } = started;
  try {
    const { debug_panic: debugPanic, debug_panic_thread: debugPanicThread, ...toyConfig } = config ?? {};
    // Test hooks: a run that panics inside wasm on purpose (here, or on a CPU pool thread while
    // this worker waits for it), to prove crashes are survivable.
    if (debugPanic) wasmModule.debugPanic(String(debugPanic));
    if (debugPanicThread) {
      if (typeof wasmModule.debugPanicOnThread !== "function") {
        throw coded("config.invalid", "debug_panic_thread needs the threaded CPU backend.");
      }
      wasmModule.debugPanicOnThread(String(debugPanicThread));
    }
    const summary = await session.trainToy(toyConfig, (progress) => {
      post({ ...progress, type: "progress", id });
      return !stopRequested(op);
    });
    post({ type: "done", id, summary });
  } catch (e) {
    reportError(id, e);
  } finally {
    finish(op);
  }
}

/**
 * `[{name, bytes}]` → `{name: ArrayBuffer | Blob}` for wasm; throws `worker.protocol` on bad input.
 * A Blob (a picked File) is best: the module reads weights from it a tensor at a time.
 */
function localFiles(files) {
  if (!Array.isArray(files) || files.length === 0) {
    throw coded("model.missing_file", "No model files were given: choose config.json, the .safetensors weights and tokenizer.json.");
  }
  const out = {};
  for (const f of files) {
    const name = typeof f?.name === "string" ? f.name : null;
    const bytes = f?.bytes;
    if (!name || !(bytes instanceof ArrayBuffer || ArrayBuffer.isView(bytes) || bytes instanceof Blob)) {
      throw coded("worker.protocol", "load-model files must be [{name, bytes: ArrayBuffer | Blob}].", { name });
    }
    out[name] = bytes;
  }
  return out;
}

async function loadModel(id, source) {
  const started = await beginOp(id, "load-model");
  if (!started) return;
  const { session, op } = started;
  let downloaded = null;
  try {
    let files;
    let described;
    const t0 = performance.now();
    if (source?.kind === "files") {
      files = localFiles(source.files);
      described = { kind: "files", files: Object.keys(files) };
    } else if (source?.kind === "hub") {
      const hub = resolveHubSource(source);
      op.abort = new AbortController();
      downloaded = await downloadHubModel(hub, {
        signal: op.abort.signal,
        onProgress: (p) => post({ type: "download", id, ...p }),
      });
      files = downloaded.files;
      described = {
        kind: "hub",
        repo: hub.repo,
        revision: hub.revision,
        endpoint: hub.endpoint,
        base: hub.base,
        files: downloaded.report,
        cached: downloaded.report.every((f) => f.cached),
        cache_warning: downloaded.cacheWarning,
      };
    } else {
      throw coded("worker.protocol", 'load-model needs source {kind: "files", files} or {kind: "hub", repo}.', { kind: source?.kind ?? null });
    }
    const t1 = performance.now();
    let info;
    try {
      info = await session.loadModel(files, { quantize_base: source.quantize_base ?? null });
    } catch (e) {
      // Files that do not load should not be served from the cache again: a retry downloads them.
      if (downloaded && !isFatal(e)) await forget(downloaded.urls);
      throw e;
    }
    const t2 = performance.now();
    // Picked files say nothing of where the model lives on disk: the recipe's reader fills it in.
    loadedModelName = described.kind === "hub" ? described.repo : null;
    loadedModelLabel = described.kind === "files" ? (described.files.find((f) => f.endsWith(".gguf")) ?? null) : null;
    post({ type: "model", id, info, source: described, timing: { download_ms: t1 - t0, load_ms: t2 - t1 } });
  } catch (e) {
    reportError(id, e);
  } finally {
    finish(op);
  }
}

async function generate(id, input, options) {
  const started = await beginOp(id, "generate");
  if (!started) return;
  const { session, op } = started;
  let stoppedByCancel = false;
  try {
    checkWhich(options?.model);
    await ensureAdapter(session, options?.model);
    const result = await session.generate(input ?? "", options ?? {}, (token, text) => {
      post({ type: "token", id, token, text: text ?? null });
      if (stopRequested(op)) {
        stoppedByCancel = true;
        return false;
      }
      return true;
    });
    post({ type: "done", id, result: { ...result, cancelled: stoppedByCancel } });
  } catch (e) {
    reportError(id, e);
  } finally {
    finish(op);
  }
}

/** A dataset's bytes as the Uint8Array wasm expects; throws `worker.protocol` on bad input. */
function datasetBytes(kind, name, bytes) {
  if (typeof name !== "string" || name === "") throw coded("worker.protocol", `${kind} needs the dataset file's name.`);
  if (bytes instanceof ArrayBuffer) return new Uint8Array(bytes);
  if (ArrayBuffer.isView(bytes)) return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  throw coded("worker.protocol", `${kind} needs bytes: an ArrayBuffer of the dataset file.`, { name });
}

/**
 * What wasm's Session takes for a job on a dataset (inspectDataset, finetune, evaluate, recipe):
 * `{data: {name, bytes}, validation: {name, bytes} | null, config}`; throws `worker.protocol`
 * on bad bytes.
 */
function jobRequest(kind, name, bytes, config, validation) {
  return {
    data: { name, bytes: datasetBytes(kind, name, bytes) },
    validation: validation == null ? null : { name: validation.name, bytes: datasetBytes(`${kind} (validation file)`, validation.name, validation.bytes) },
    config: config ?? {},
  };
}

async function inspectDataset(id, name, bytes, config, validation) {
  const started = await beginOp(id, "inspect-dataset");
  if (!started) return;
  const { session, op } = started;
  try {
    const request = jobRequest("inspect-dataset", name, bytes, config, validation);
    // Reading a large file takes a while: progress about a hundred times per file.
    const onProgress = (p) => post({ type: "dataset-progress", id, file: p.file, bytes: p.bytes, bytes_done: p.bytes_done, records_done: p.records_done });
    const result = await session.inspectDataset(request, onProgress);
    post({ type: "dataset", id, result });
  } catch (e) {
    reportError(id, e);
  } finally {
    finish(op);
  }
}

// Checkpoints of the current fine-tuning job, in the origin private file system (OPFS): one slot,
// the latest run's. `run.ckpt` holds wasm's checkpoint bytes (trainable weights, AdamW state,
// batch position, loss history); `run.json` says what it belongs to: {step, total_steps,
// saved_at, config, dataset: {name, size, sha256}, validation, model: {architecture, parameters, layers,
// hidden_size, vocab_size}}. It is written after the bytes, so it never names a missing one.
const CHECKPOINT_DIR = "webtune-checkpoints";

async function checkpointDir(create) {
  if (!navigator.storage?.getDirectory) return null;
  const root = await navigator.storage.getDirectory();
  try {
    return await root.getDirectoryHandle(CHECKPOINT_DIR, { create });
  } catch {
    return null;
  }
}

/** The saved checkpoint's description, or null. */
async function checkpointMeta() {
  const dir = await checkpointDir(false);
  if (!dir) return null;
  try {
    return await readJson(dir, "run.json");
  } catch {
    return null;
  }
}

async function discardCheckpoint() {
  const root = navigator.storage?.getDirectory ? await navigator.storage.getDirectory() : null;
  await root?.removeEntry(CHECKPOINT_DIR, { recursive: true }).catch(() => {});
}

async function sha256Hex(bytes) {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** What identifies the loaded model in a checkpoint's description. */
function modelKey(session) {
  const i = session.modelInfo();
  return { architecture: i.architecture, parameters: i.parameters, layers: i.layers, hidden_size: i.hidden_size, vocab_size: i.vocab_size };
}

/** The saved checkpoint's bytes if it belongs to this model and dataset; throws a coded error otherwise. */
async function checkpointFor(session, dataset, heldOut) {
  const meta = await checkpointMeta();
  if (!meta) throw coded("checkpoint.missing", "There is no interrupted run to continue in this browser.");
  if (JSON.stringify(meta.model) !== JSON.stringify(modelKey(session))) {
    throw coded("checkpoint.model_mismatch", `The interrupted run trained another model (${meta.model?.architecture}, ${meta.model?.parameters} parameters); load that model to continue it.`, { expected: meta.model });
  }
  const d = meta.dataset;
  if (d.size !== dataset.size || d.sha256 !== dataset.sha256) {
    throw coded(
      "checkpoint.dataset_mismatch",
      `${dataset.name} is not the file the interrupted run trained on: that was ${d.name} (${d.size} bytes, SHA-256 ${d.sha256.slice(0, 12)}…), ` +
        `this one has ${dataset.size} bytes and SHA-256 ${dataset.sha256.slice(0, 12)}…. Choose the same file to continue.`,
      { expected: d, got: dataset },
    );
  }
  // A different validation file changes which examples train (the overlap is dropped).
  const v = meta.validation ?? null;
  if ((v?.sha256 ?? null) !== (heldOut?.sha256 ?? null)) {
    throw coded(
      "checkpoint.dataset_mismatch",
      v
        ? `The interrupted run also used the validation file ${v.name} (${v.size} bytes); choose it too to continue.`
        : "The interrupted run held out a share of the dataset instead of using a validation file; remove the validation file to continue.",
      { expected: v, got: heldOut },
    );
  }
  const dir = await checkpointDir(false);
  const file = await (await dir.getFileHandle("run.ckpt")).getFile();
  return { meta, bytes: new Uint8Array(await file.arrayBuffer()) };
}

async function finetune(id, name, bytes, config, resume, validation) {
  const started = await beginOp(id, "finetune");
  if (!started) return;
  const { session, op } = started;
  // The library's name for the adapter this job trains, and the kept adapter it continues
  // training: not settings of the job itself.
  const { adapter_name: adapterName, init_adapter: initName, ...jobConfig } = config ?? {};
  config = jobConfig;
  let continued = initName ?? null;
  try {
    const request = jobRequest("finetune", name, bytes, config, validation);
    const data = request.data.bytes;
    const validationData = request.validation?.bytes ?? null;
    // Checkpoints need OPFS and WebCrypto (both only in secure contexts); without them the job
    // trains without checkpoints.
    const resumable = typeof crypto?.subtle?.digest === "function" && (await checkpointDir(true).catch(() => null)) !== null;
    if (resume && !resumable) throw coded("checkpoint.unsupported", "This browser cannot save or resume checkpoints.");
    let writes = Promise.resolve();
    let onCheckpoint;
    // What the checkpoint and the kept adapter record of the data (hashed once).
    const dataset = { name, size: data.byteLength, sha256: await sha256OrNull(data) };
    if (resumable) {
      const heldOut = validationData ? { name: request.validation.name, size: validationData.byteLength, sha256: await sha256Hex(validationData) } : null;
      if (resume) {
        const saved = await checkpointFor(session, dataset, heldOut);
        config = saved.meta.config;
        continued = saved.meta.init_adapter ?? null;
        request.resume = saved.bytes;
      }
      const model = modelKey(session);
      // Writes are chained, so they land in step order; a failed write is reported, not fatal.
      onCheckpoint = ({ step, bytes: ckpt }) => {
        writes = writes.then(async () => {
          try {
            const dir = await checkpointDir(true);
            await writeFile(dir, "run.ckpt", ckpt);
            const meta = { step, total_steps: op.totalSteps ?? null, saved_at: new Date().toISOString(), config: config ?? {}, init_adapter: continued, dataset, validation: heldOut, model };
            await writeFile(dir, "run.json", JSON.stringify(meta));
            post({ type: "finetune-event", id, event: { type: "checkpoint", step, bytes: ckpt.byteLength } });
          } catch (e) {
            post({ type: "finetune-event", id, event: { type: "checkpoint", step, error: errorPayload(e) } });
          }
        });
      };
    }
    request.config = await withInitAdapter(session, config, continued);
    // wasm yields to the event loop only once per step, so a "cancel" message can arrive late:
    // the interrupt flag, read after every event, stops the run after its current step.
    const result = await session.finetune(request, (event) => {
      if (event.type === "step") op.totalSteps = event.total_steps;
      post({ type: "finetune-event", id, event });
      if (stopRequested(op)) return false;
      // Pausing after the last step would only delay the evaluation.
      if (event.type === "step" && event.step < event.total_steps && pauseRequested(op)) return pauseAfter(op, id, event);
      return true;
    }, onCheckpoint);
    await writes;
    // A run that reached its end needs no checkpoint; a stopped one keeps its last.
    if (resumable && !result?.summary?.cancelled) await discardCheckpoint();
    let tunedInfo = null;
    try {
      tunedInfo = session.tunedInfo() ?? null;
    } catch {
      tunedInfo = null;
    }
    const adapter = await keepTrainedAdapter(session, { adapterName, dataset, config, result, continued });
    post({ type: "done", id, result: { ...result, tuned_info: tunedInfo, adapter } });
  } catch (e) {
    reportError(id, e);
  } finally {
    finish(op);
  }
}

async function evaluate(id, name, bytes, config, which, validation) {
  const started = await beginOp(id, "evaluate");
  if (!started) return;
  const { session, op } = started;
  try {
    if (typeof session.evaluate !== "function") {
      throw coded("evaluate.unsupported", "This build of the webtune wasm module cannot evaluate without training (it has no Session.evaluate); rebuild it with `cargo xtask build-wasm`.");
    }
    checkWhich(which);
    await ensureAdapter(session, which);
    const result = await session.evaluate(jobRequest("evaluate", name, bytes, config, validation), which ?? "base");
    post({ type: "done", id, result: { ...result, model: which ?? "base" } });
  } catch (e) {
    reportError(id, e);
  } finally {
    finish(op);
  }
}

/** How a recipe's job.json names the base: its Hub repository, or a folder for the user to fill in. */
let loadedModelName = null;
/** What the adapter library calls a base loaded from picked files: its GGUF file's name, or null. */
let loadedModelLabel = null;

async function recipe(id, name, bytes, config, validation) {
  const started = await beginOp(id, "recipe");
  if (!started) return;
  const { session, op } = started;
  try {
    if (typeof session.recipe !== "function") {
      throw coded("recipe.unsupported", "This build of the webtune wasm module cannot write recipes (it has no Session.recipe); rebuild it with `cargo xtask build-wasm`.");
    }
    // The library's keys are not job settings; a kept adapter to continue goes to wasm as its
    // files (the project starts from them, as `webtune recipe --init-adapter DIR` does).
    const { adapter_name: _name, init_adapter: initName, ...jobConfig } = config ?? {};
    const runConfig = await withInitAdapter(session, jobConfig, initName ?? null);
    const request = jobRequest("recipe", name, bytes, runConfig, validation);
    const zip = await session.recipe(request, loadedModelName ?? "path/to/the/base/model");
    const buffer = zip.byteOffset === 0 && zip.byteLength === zip.buffer.byteLength ? zip.buffer : zip.slice().buffer;
    post({ type: "done", id, result: buffer }, [buffer]);
  } catch (e) {
    reportError(id, e);
  } finally {
    finish(op);
  }
}

async function encoderCall(id, kind, which, call) {
  const started = await beginOp(id, kind);
  if (!started) return;
  const { session, op } = started;
  try {
    checkWhich(which);
    await ensureAdapter(session, which);
    post({ type: "done", id, result: await call(session, which ?? "base") });
  } catch (e) {
    reportError(id, e);
  } finally {
    finish(op);
  }
}

async function exportFiles(id) {
  const started = await beginOp(id, "export");
  if (!started) return;
  const { session, op } = started;
  try {
    const out = await session.exportFiles();
    /** @type {Record<string, ArrayBuffer>} */
    const files = {};
    const transfer = [];
    for (const [name, bytes] of Object.entries(out ?? {})) {
      // Transfer a buffer that holds exactly this file.
      const whole = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength;
      const buffer = whole ? bytes.buffer : bytes.slice().buffer;
      files[name] = buffer;
      transfer.push(buffer);
    }
    post({ type: "files", id, files }, transfer);
  } catch (e) {
    reportError(id, e);
  } finally {
    finish(op);
  }
}

async function replayReference(id, reference, method) {
  const started = await beginOp(id, "replay-reference");
  if (!started) return;
  const { session, op } = started;
  try {
    if (typeof session.replayReference !== "function") throw coded("replay.unsupported", "this wasm build has no Session.replayReference.");
    if (typeof reference !== "string") throw coded("config.invalid", "replay-reference needs the reference run as JSON text.");
    if (method !== "lora" && method !== "full") throw coded("config.invalid", `method must be "lora" or "full", not ${JSON.stringify(method)}.`);
    post({ type: "done", id, result: await session.replayReference(reference, method) });
  } catch (e) {
    reportError(id, e);
  } finally {
    finish(op);
  }
}

// The adapter library (lib/adapter-library.js) and hot swap: adapters sit un-merged beside the
// loaded base in the wasm session, attached on first use; a request names one as
// "adapter:NAME" wherever it names "base" or "tuned".

const ADAPTER_PREFIX = "adapter:";

function checkWhich(which) {
  if (which == null || which === "base" || which === "tuned") return;
  if (typeof which === "string" && which.startsWith(ADAPTER_PREFIX) && which.length > ADAPTER_PREFIX.length) return;
  throw coded("config.invalid", `The model must be "base", "tuned" or "adapter:NAME", not ${JSON.stringify(which)}.`);
}

/** The loaded model as an adapter's description records it. */
function baseIdentity(session) {
  const i = session.modelInfo();
  if (!i) throw coded("model.not_loaded", "No model is loaded; load one first.");
  return { name: loadedModelName ?? loadedModelLabel ?? i.architecture, architecture: i.architecture, parameters: i.parameters, fingerprint: i.fingerprint ?? null };
}

function describeBase(b) {
  return `${b?.name ?? "an unnamed model"} (${b?.architecture ?? "?"}, ${Number(b?.parameters ?? 0).toLocaleString("en-US")} parameters)`;
}

/** Refuses an adapter kept for another base, naming both. */
function checkBase(session, meta) {
  const loaded = baseIdentity(session);
  if (meta.base?.fingerprint && loaded.fingerprint && meta.base.fingerprint !== loaded.fingerprint) {
    throw coded(
      "adapter.base_mismatch",
      `The adapter "${meta.name}" was trained on ${describeBase(meta.base)}, not on the loaded model, ${describeBase(loaded)}: load that model to use it.`,
      { adapter: meta.name, adapter_base: meta.base, loaded },
    );
  }
}

/**
 * Attach a kept adapter to the session unless it already is. Resolves to {attach_ms,
 * attached_before}; a base model or "tuned" needs nothing.
 */
async function ensureAdapter(session, which) {
  if (typeof which !== "string" || !which.startsWith(ADAPTER_PREFIX)) return null;
  const name = which.slice(ADAPTER_PREFIX.length);
  if (typeof session.attachAdapter !== "function") throw coded("adapter.unsupported", "This build of the webtune wasm module cannot attach adapters; rebuild it with `cargo xtask build-wasm`.");
  if (session.attachedAdapters().includes(name)) return { attach_ms: 0, attached_before: true };
  const { meta, files } = await readAdapter(name);
  checkBase(session, meta);
  const summary = await session.attachAdapter(name, files);
  return { attach_ms: summary.attach_ms, attached_before: false };
}

/** The job's configuration for wasm: with the files of the kept adapter `name` it continues, if any. */
async function withInitAdapter(session, config, name) {
  if (name == null) return config ?? {};
  const { meta, files } = await readAdapter(String(name));
  checkBase(session, meta);
  return { ...(config ?? {}), init_adapter: files };
}

async function sha256OrNull(bytes) {
  return typeof crypto?.subtle?.digest === "function" ? sha256Hex(bytes) : null;
}

/**
 * What the library records of an adapter's task: a classifier's labels and pooling, a sentence
 * embedder's pooling (`embedding`: a job on pairs, or PEFT's FEATURE_EXTRACTION), else none.
 */
function taskOf(labels, pooling, embedding = false) {
  if (Array.isArray(labels)) return { task: "classification", labels, pooling: pooling ?? null };
  if (embedding) return { task: "embedding", labels: null, pooling: pooling ?? null };
  return { task: "causal_lm", labels: null, pooling: null };
}

/**
 * After a LoRA job (a causal LM's, a classifier's or a sentence embedder's): keep its adapter in the library (named
 * `adapterName`, or after the dataset), so it can be chosen again after a reload. Resolves to
 * the kept description, `null` when the job has no adapter to keep, or `{error}`: a failure
 * to keep it does not fail the job, whose model stays usable as "tuned".
 */
async function keepTrainedAdapter(session, { adapterName, dataset, config, result, continued }) {
  if (typeof session.adapterFiles !== "function") return null;
  if ((config?.train?.method ?? "lora") === "full") return null;
  try {
    const files = await session.adapterFiles();
    const stem = String(dataset.name).replace(/\.[^.]*$/, "") || "adapter";
    const wanted = adapterName != null && String(adapterName).trim() !== "" ? String(adapterName).trim() : await freeName(stem);
    const meta = await saveAdapter(
      {
        name: wanted,
        source: "trained",
        ...taskOf(result?.labels, result?.pooling, result?.task === "embedding"),
        base: baseIdentity(session),
        lora: loraOf(files["adapter_config.json"]),
        dataset,
        config,
        metrics: { before: result?.before ?? null, after: result?.after ?? null },
        steps: result?.summary?.steps ?? null,
        cancelled: Boolean(result?.summary?.cancelled),
        continued_from: continued,
      },
      files,
    );
    // Not attached now: "tuned" is the same model, and a tab that trains many times should not
    // hold every adapter's factors. The first "adapter:NAME" request attaches it.
    return meta;
  } catch (e) {
    return { error: errorPayload(e) };
  }
}

/** Files given as [{name, bytes}] → {adapter_config.json, adapter_model.safetensors} as Uint8Array. */
async function adapterFilesOf(list) {
  if (!Array.isArray(list)) throw coded("worker.protocol", "adapter-load needs files: [{name, bytes}].");
  const out = {};
  for (const f of list) {
    // The page downloads a kept adapter's files as "<name>-adapter_config.json" …: read them back
    // under either name.
    const leaf = String(f?.name ?? "").split("/").pop() ?? "";
    const base = [...ADAPTER_FILES, ADAPTER_NOTE].find((n) => leaf === n || leaf.endsWith(`-${n}`));
    if (!base) continue;
    const b = f.bytes;
    out[base] = b instanceof Blob ? new Uint8Array(await b.arrayBuffer()) : ArrayBuffer.isView(b) ? new Uint8Array(b.buffer, b.byteOffset, b.byteLength) : b instanceof ArrayBuffer ? new Uint8Array(b) : null;
  }
  for (const f of ADAPTER_FILES) {
    if (!out[f]) throw coded("model.missing_file", `The adapter has no ${f}: a PEFT adapter is adapter_config.json and adapter_model.safetensors (as save_pretrained writes them).`, { file: f });
  }
  return out;
}

/** The files of the adapter in the folder at `url` (PEFT's two, and webtune's note when there is one), downloaded (not cached). */
async function downloadAdapter(url, signal) {
  const out = [];
  for (const name of [...ADAPTER_FILES, ADAPTER_NOTE]) {
    const at = new URL(name, url).href;
    let response;
    try {
      response = await fetch(at, { signal });
    } catch (e) {
      throw coded(
        "network.failed",
        `Could not download ${at}: ${e?.message ?? e}. The worker reaches only the hosts its page allows (the model's host among them): load a model from that host first, or pick the adapter's files.`,
        { url: at },
      );
    }
    if (name === ADAPTER_NOTE && response.status === 404) continue;
    if (!response.ok) throw coded("model.missing_file", `Could not download ${at} (HTTP ${response.status}).`, { url: at, status: response.status, file: name });
    out.push({ name, bytes: await response.arrayBuffer() });
  }
  return out;
}

/** Load a PEFT adapter from files or a URL into the library: it must fit the loaded model (attached at once). */
async function loadAdapter(id, name, list, origin) {
  const started = await beginOp(id, "adapter-load");
  if (!started) return;
  const { session, op } = started;
  try {
    if (typeof list === "string") {
      op.abort = new AbortController();
      list = await downloadAdapter(list, op.abort.signal);
    }
    const files = await adapterFilesOf(list);
    const lora = loraOf(files["adapter_config.json"]);
    const wanted = name != null && String(name).trim() !== "" ? String(name).trim() : await freeName(lora.base_model_name_or_path ? `${String(lora.base_model_name_or_path).split("/").pop()} adapter` : "adapter");
    await checkNameFree(wanted);
    // Attaching checks that it fits this base (modules and sizes) before anything is kept.
    const summary = await session.attachAdapter(wanted, files);
    let meta;
    try {
      const task = taskOf(summary.labels, summary.pooling, lora.task_type === "FEATURE_EXTRACTION");
      meta = await saveAdapter({ name: wanted, source: origin === "url" ? "url" : "files", ...task, base: baseIdentity(session), lora, dataset: null, config: null, metrics: null, steps: null, cancelled: false }, files);
    } catch (e) {
      session.detachAdapter(wanted);
      throw e;
    }
    post({ type: "done", id, result: { ...meta, attach_ms: summary.attach_ms } });
  } catch (e) {
    reportError(id, e);
  } finally {
    finish(op);
  }
}

/** Make `name` (null: the base) the model that answers, attaching it if needed; times the switch. */
async function useAdapter(id, name) {
  const started = await beginOp(id, "adapter-use");
  if (!started) return;
  const { session, op } = started;
  try {
    const t0 = performance.now();
    const attach = name == null ? null : await ensureAdapter(session, ADAPTER_PREFIX + String(name));
    post({ type: "done", id, result: { name: name ?? null, model: name == null ? "base" : ADAPTER_PREFIX + name, switch_ms: performance.now() - t0, attach_ms: attach?.attach_ms ?? 0, attached_before: attach?.attached_before ?? true } });
  } catch (e) {
    reportError(id, e);
  } finally {
    finish(op);
  }
}

/** The library, each adapter marked with whether it fits the loaded model and is attached. */
async function adapterList() {
  const list = await listAdapters();
  const session = sessionPromise ? await sessionPromise.catch(() => null) : null;
  let loaded = null;
  try {
    loaded = session?.modelInfo() ? baseIdentity(session) : null;
  } catch {
    loaded = null;
  }
  const attached = new Set(typeof session?.attachedAdapters === "function" ? session.attachedAdapters() : []);
  return list.map((m) => ({ ...m, fits: loaded != null && (!m.base?.fingerprint || m.base.fingerprint === loaded.fingerprint), attached: attached.has(m.name) }));
}

async function adapterDelete(name) {
  const meta = await deleteAdapter(String(name));
  const session = sessionPromise ? await sessionPromise.catch(() => null) : null;
  session?.detachAdapter?.(meta.name);
  return meta;
}

async function adapterRename(name, to) {
  const session = sessionPromise ? await sessionPromise.catch(() => null) : null;
  const meta = await renameAdapter(String(name), String(to ?? "").trim());
  // The session knows it by its old name: attach again on next use.
  session?.detachAdapter?.(String(name));
  return meta;
}

/** Answer a request the library serves without the compute session's turn. */
function libraryRequest(id, work, transfer = (/** @type {any} */ _r) => []) {
  work.then(
    (result) => post({ type: "done", id, result }, transfer(result)),
    (e) => reportError(id, e, { fatal: false }),
  );
}

async function logits(id, ids, which) {
  const started = await beginOp(id, "logits");
  if (!started) return;
  const { session, op } = started;
  try {
    if (!Array.isArray(ids) && !ArrayBuffer.isView(ids)) throw coded("config.invalid", "logits needs ids: an array of token ids.");
    // Uint32Array would wrap negative or fractional ids silently: check first.
    const list = /** @type {ArrayLike<number>} */ (ids);
    const bad = Array.from(list).find((t) => !Number.isInteger(t) || t < 0 || t > 0xffffffff);
    if (bad !== undefined) throw coded("config.invalid", `token ids must be non-negative integers, got ${bad}.`, { token_id: String(bad) });
    checkWhich(which);
    await ensureAdapter(session, which);
    const out = await session.logits(Uint32Array.from(list), which ?? "base");
    const data = out.data;
    post({ type: "logits", id, shape: Array.from(out.shape), data }, [data.buffer]);
  } catch (e) {
    reportError(id, e);
  } finally {
    finish(op);
  }
}

self.addEventListener("message", (/** @type {MessageEvent} */ event) => {
  // Typed as the protocol says; every handler still checks what it reads (pages make mistakes).
  const message = /** @type {import("./protocol").Request} */ (event.data ?? {});
  switch (message.type) {
    case "init": {
      if (sessionPromise !== null) {
        reportError(null, Object.assign(new Error("init was sent twice; start a new worker to change backend."), { code: "worker.protocol" }), { fatal: false });
        return;
      }
      const requested = ["auto", "webgpu", "cpu"].includes(message.backend) ? message.backend : "auto";
      if (typeof SharedArrayBuffer === "function" && message.interrupt instanceof SharedArrayBuffer && message.interrupt.byteLength >= 4) {
        interrupt = new Int32Array(message.interrupt, 0, 1);
      }
      const hardware = Math.max(1, Math.min(16, navigator.hardwareConcurrency || 1));
      const cpuThreads = Number.isInteger(message.cpuThreads) && message.cpuThreads >= 1 ? Math.min(message.cpuThreads, 64) : hardware;
      sessionPromise = initialise(requested, cpuThreads);
      // Any init failure leaves the worker without a backend: fatal.
      sessionPromise.catch((e) => reportError(null, e, { fallbackCode: "device.unavailable", fatal: true }));
      return;
    }
    case "train-toy":
      trainToy(message.id, message.config);
      return;
    case "load-model":
      loadModel(message.id, message.source);
      return;
    case "generate":
      generate(message.id, message.input, message.options);
      return;
    case "logits":
      logits(message.id, message.ids, message.which);
      return;
    case "inspect-dataset":
      inspectDataset(message.id, message.name, message.bytes, message.config, message.validation);
      return;
    case "finetune":
      finetune(message.id, message.name, message.bytes, message.config, message.resume === true, message.validation);
      return;
    case "checkpoint-info":
      checkpointMeta().then(
        (meta) => post({ type: "done", id: message.id, result: meta }),
        (e) => reportError(message.id, e),
      );
      return;
    case "checkpoint-discard":
      discardCheckpoint().then(() => post({ type: "done", id: message.id, result: null }));
      return;
    case "evaluate":
      evaluate(message.id, message.name, message.bytes, message.config, message.which, message.validation);
      return;
    case "classify":
      encoderCall(message.id, "classify", message.which, (session, which) => session.classify(String(message.text ?? ""), which));
      return;
    case "similarity":
      encoderCall(message.id, "similarity", message.which, async (session, which) => ({
        similarity: await session.similarity(String(message.a ?? ""), String(message.b ?? ""), which),
      }));
      return;
    case "export":
      exportFiles(message.id);
      return;
    case "adapters":
      libraryRequest(message.id, adapterList());
      return;
    case "adapter-load":
      loadAdapter(message.id, message.name, message.url ?? message.files, message.origin);
      return;
    case "adapter-use":
      useAdapter(message.id, message.name ?? null);
      return;
    case "adapter-rename":
      libraryRequest(message.id, adapterRename(message.name, message.to));
      return;
    case "adapter-delete":
      libraryRequest(message.id, adapterDelete(message.name));
      return;
    case "adapter-files":
      libraryRequest(
        message.id,
        readAdapter(String(message.name)).then(({ meta, files }) => ({ meta, files: Object.fromEntries(Object.entries(files).map(([n, b]) => [n, b.buffer])) })),
        (r) => Object.values(r.files),
      );
      return;
    case "recipe":
      recipe(message.id, message.name, message.bytes, message.config, message.validation);
      return;
    case "replay-reference":
      replayReference(message.id, message.reference, message.method);
      return;
    case "debug-lose-device":
      // Test hook: lose the GPU device as a driver reset would.
      for (const device of gpuDevices) device.destroy();
      return;
    case "cancel":
      if (currentOp !== null) {
        currentOp.cancelRequested = true;
        currentOp.abort?.abort();
        currentOp.paused?.end(false);
      }
      return;
    case "pause":
      if (currentOp?.kind === "finetune") currentOp.pauseRequested = true;
      return;
    case "resume":
      if (currentOp?.kind === "finetune") {
        currentOp.pauseRequested = false;
        currentOp.paused?.end(true);
      }
      return;
    default:
      reportError(null, Object.assign(new Error(`unknown message type ${JSON.stringify(event.data?.type)}`), { code: "worker.protocol" }), { fatal: false });
  }
});
