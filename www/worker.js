// webtune compute worker (a module worker): loads the wasm module, chooses the compute backend
// and runs training off the main thread, so the page never freezes.
/*
 * Message protocol (structured-clone messages; every field name is stable API).
 *
 * page → worker
 *   {type: "init", backend: "auto" | "webgpu" | "cpu"}
 *       First message, exactly once per worker. One worker serves one backend choice: to switch,
 *       the page terminates this worker and starts a new one.
 *   {type: "train-toy", id, config}
 *       Train the toy model. `id` is chosen by the page and echoed in every reply about this run.
 *       `config` is passed to wasm `Session.trainToy` as is (snake_case keys, all optional:
 *       steps, batch_size, seq_len, vocab, d_model, heads, lr, warmup, seed, ...). Messages sent
 *       before the backend is ready are queued. One run at a time (else error `train.busy`).
 *       Test hook: `config.debug_panic` (a string) makes wasm panic on purpose instead of training.
 *   {type: "cancel"}
 *       Stop the current run after its current step; it still ends with a `done` message whose
 *       summary has `cancelled: true`. Ignored when nothing runs.
 *
 * worker → page
 *   {type: "backend", backend: "webgpu" | "cpu", requested, reason,
 *    adapter: {vendor, architecture, device, description, is_fallback} | null,
 *    limits: {adapter: {maxStorageBufferBindingSize, maxBufferSize, maxComputeWorkgroupStorageSize} | null,
 *             device: {max_storage_buffer_binding_size, max_buffer_size} | null} | null,
 *    info, version}   (info: wasm Session.backendInfo(); version: the wasm crate version)
 *       Sent once, when the session is ready. `requested` is the init choice, `backend` what is
 *       used, `reason` a sentence saying why. `adapter` is the WebGPU adapter the worker probed
 *       (also reported when auto chose CPU because of it); null when none was probed or found.
 *   {type: "progress", id, step, total_steps, loss, lr, tokens_per_s, elapsed_s, eta_s, memory_bytes}
 *       After every training step (memory_bytes is null when the backend cannot tell).
 *   {type: "done", id, summary}
 *       The run ended; summary = {backend, steps, cancelled, losses, initial_loss, final_loss,
 *       first_step_ms, median_step_ms, tokens_per_s}.
 *   {type: "error", id, error: {code, message, details}, fatal}
 *       `id` is the run's id, or null for errors outside a run (init, uncaught errors).
 *       `fatal: true` means this worker is unusable (wasm panic/trap, failed initialisation): the
 *       page should terminate it and offer a restart. Codes come from wasm (`config.invalid`,
 *       `device.unavailable`, `train.non_finite_loss`, `internal`, ...) or from this file:
 *       `wasm.load_failed`, `wasm.panic`, `wasm.trap`, `worker.uncaught`, `worker.protocol`,
 *       `train.busy`.
 */

const PKG_URL = new URL("./pkg/webtune.js", import.meta.url);
// Passed explicitly: wasm-bindgen's `init()` only defaults to the file next to webtune.js when
// generated with a default module path.
const WASM_URL = new URL("./pkg/webtune_bg.wasm", import.meta.url);

/** The loaded wasm-bindgen module (its free functions), once "init" has loaded it. */
let wasmModule = null;
/** The session promise, set by "init". Resolves to the wasm Session; rejects on init failure. */
let sessionPromise = null;
/** The run in progress: {id, cancelRequested}. */
let currentRun = null;
/** Set once the wasm instance has panicked or trapped: nothing may call into it again. */
let broken = null;

function post(message) {
  self.postMessage(message);
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

// wasm calls this from its panic hook before the instance traps, so the page hears about a
// panic even when the trap leaves a promise unsettled.
self.__webtune_on_panic = (message) => {
  const payload = {
    code: "wasm.panic",
    message: `webtune panicked: ${message}`,
    details: { panic: String(message) },
  };
  if (broken === null) broken = payload;
  post({ type: "error", id: currentRun?.id ?? null, error: payload, fatal: true });
};

self.addEventListener("error", (event) => {
  const error = event.error ?? new Error(event.message || "uncaught error in the worker");
  reportError(currentRun?.id ?? null, error, { fallbackCode: "worker.uncaught" });
  event.preventDefault(); // reported above; do not also surface it as a page-side worker error
});

self.addEventListener("unhandledrejection", (event) => {
  reportError(currentRun?.id ?? null, event.reason, { fallbackCode: "worker.uncaught" });
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
  const info = adapter.info ?? {};
  const isFallback = Boolean(info.isFallbackAdapter ?? adapter.isFallbackAdapter ?? false);
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

/** Decide the backend for `requested`, create the wasm session, and announce it. */
async function initialise(requested) {
  let wasm;
  try {
    wasm = await import(PKG_URL.href);
    await wasm.default({ module_or_path: WASM_URL });
    wasmModule = wasm;
  } catch (e) {
    const err = new Error(
      `Could not load the webtune wasm module from ${PKG_URL.pathname} (${e?.message ?? e}). ` +
        "Build it with `cargo xtask build-wasm`.",
    );
    err.code = e?.code ?? "wasm.load_failed";
    throw err;
  }

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

  if (backend === "webgpu") {
    try {
      session = await wasm.Session.create("webgpu");
    } catch (e) {
      if (requested === "webgpu" || isFatal(e)) throw e;
      // auto: a device that cannot be created is no reason to fail; use the CPU.
      backend = "cpu";
      reason = `The WebGPU device could not be created (${e?.message ?? e}), so auto fell back to CPU.`;
    }
  }
  if (session === null) session = await wasm.Session.create("cpu");

  const info = session.backendInfo();
  const deviceLimits = info?.device_limits ?? null;
  const adapterLimits = probe?.limits ?? null;
  post({
    type: "backend",
    backend: info?.backend ?? backend,
    requested,
    reason,
    adapter: probe?.adapter ?? null,
    limits: adapterLimits || deviceLimits ? { adapter: adapterLimits, device: deviceLimits } : null,
    info: info ?? null,
    version: typeof wasm.version === "function" ? wasm.version() : null,
  });
  return session;
}

async function trainToy(id, config) {
  if (sessionPromise === null) {
    reportError(id, Object.assign(new Error("The worker got a run before its init message."), { code: "worker.protocol" }), { fatal: false });
    return;
  }
  let session;
  try {
    session = await sessionPromise;
  } catch {
    // The init failure was already reported (fatal); say why this run cannot start too.
    reportError(id, Object.assign(new Error("The backend failed to start, so the run cannot begin."), { code: broken?.code ?? "device.unavailable" }), { fatal: true });
    return;
  }
  if (broken !== null) {
    post({ type: "error", id, error: broken, fatal: true });
    return;
  }
  if (currentRun !== null) {
    reportError(id, Object.assign(new Error(`Run ${currentRun.id} is still training; cancel it or wait for it to finish.`), { code: "train.busy" }), { fatal: false });
    return;
  }
  const run = { id, cancelRequested: false };
  currentRun = run;
  try {
    const { debug_panic: debugPanic, ...toyConfig } = config ?? {};
    // Test hook: a run that panics inside wasm on purpose, to prove crashes are survivable.
    if (debugPanic) wasmModule.debugPanic(String(debugPanic));
    const summary = await session.trainToy(toyConfig, (progress) => {
      post({ ...progress, type: "progress", id });
      return !run.cancelRequested;
    });
    post({ type: "done", id, summary });
  } catch (e) {
    reportError(id, e);
  } finally {
    if (currentRun === run) currentRun = null;
  }
}

self.addEventListener("message", (event) => {
  const message = event.data ?? {};
  switch (message.type) {
    case "init": {
      if (sessionPromise !== null) {
        reportError(null, Object.assign(new Error("init was sent twice; start a new worker to change backend."), { code: "worker.protocol" }), { fatal: false });
        return;
      }
      const requested = ["auto", "webgpu", "cpu"].includes(message.backend) ? message.backend : "auto";
      sessionPromise = initialise(requested);
      // Any init failure leaves the worker without a backend: fatal.
      sessionPromise.catch((e) => reportError(null, e, { fallbackCode: "device.unavailable", fatal: true }));
      return;
    }
    case "train-toy":
      trainToy(message.id, message.config);
      return;
    case "cancel":
      if (currentRun !== null) currentRun.cancelRequested = true;
      return;
    default:
      reportError(null, Object.assign(new Error(`unknown message type ${JSON.stringify(message.type)}`), { code: "worker.protocol" }), { fatal: false });
  }
});
