// What the workers (worker.js, thread-worker.js) add to their global scope's types. Checked with
// `tsc --noEmit -p tsconfig.worker.json` (run by `cargo xtask test`).

/** Errors carry a webtune code ("data.invalid", "device.lost", …) and details. */
interface Error {
  code?: string;
  details?: unknown;
}

interface WorkerGlobalScope {
  /** Set by the worker for the wasm module to read its memory in use. */
  webtuneWasmMemoryBytes?: () => number;
  webtuneWasmHeapBytes?: () => number;
  /** Called by the wasm module's panic hook (the worker and its threads). */
  __webtune_on_panic?: (message: string) => void;
}
