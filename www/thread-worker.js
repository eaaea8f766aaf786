// One thread of the threaded CPU backend (a module worker started by worker.js): instantiate the
// threaded webtune module on the compute worker's shared memory, say so, then lend this thread to
// the module's rayon pool for good (threadPoolWorker waits for the pool to be built, then runs
// one of its threads: it never returns while the pool lives).
//
// A panic or trap here leaves the compute worker blocked waiting for this thread, so it is
// reported to the page directly on `port` (the page then ends that worker as crashed).
self.addEventListener(
  "message",
  async (/** @type {MessageEvent} */ { data }) => {
    const { pkgUrl, module, memory, port } = data;
    let reported = false;
    const report = (code, message, details) => {
      if (reported) return;
      reported = true;
      port.postMessage({ code, message, details });
    };
    // Called by the module's panic hook (src/web/mod.rs) on this thread, before the trap.
    self.__webtune_on_panic = (message) =>
      report("wasm.panic", `webtune panicked on a CPU thread: ${message}`, { panic: String(message) });
    let ready = false;
    try {
      const wasm = await import(pkgUrl);
      wasm.initSync({ module, memory });
      ready = true;
      self.postMessage({ type: "ready" });
      wasm.threadPoolWorker();
    } catch (e) {
      const message = String(e?.message ?? e);
      // Before "ready" the compute worker is waiting for this message and falls back to one thread.
      if (!ready) self.postMessage({ type: "failed", message });
      else report("wasm.panic", `a CPU thread of the wasm module stopped: ${message}`, { trap: message });
    }
  },
  { once: true },
);
