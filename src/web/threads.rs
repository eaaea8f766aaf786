//! The rayon pool of the threaded CPU-only wasm build (`wasm-threads`). wasm has no threads of
//! its own: every rayon thread is a Web Worker that instantiates this same module on the same
//! shared memory (see `www/thread-worker.js`) and then lends itself to rayon for good.
//!
//! Order matters: rayon's `build_global` blocks until every pool thread runs, and a browser
//! does not start a worker while its parent is blocked. So the page starts the workers first;
//! each waits in [`thread_pool_worker`] for a thread to run, and [`thread_pool_build`] hands them
//! out through a channel.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Mutex, OnceLock};

use rayon::ThreadBuilder;
use wasm_bindgen::prelude::*;

type Handoff = (Mutex<Sender<ThreadBuilder>>, Mutex<Receiver<ThreadBuilder>>);

fn handoff() -> &'static Handoff {
    static HANDOFF: OnceLock<Handoff> = OnceLock::new();
    HANDOFF.get_or_init(|| {
        let (tx, rx) = channel();
        (Mutex::new(tx), Mutex::new(rx))
    })
}

/// `[module, memory]`: what a worker needs to instantiate this module as another thread of it.
#[wasm_bindgen(js_name = threadPoolShared)]
pub fn thread_pool_shared() -> js_sys::Array {
    js_sys::Array::of2(&wasm_bindgen::module(), &wasm_bindgen::memory())
}

/// Runs in a pool worker after it instantiated the module: waits for a rayon thread to run and
/// runs it; returns only when the pool shuts down (never, for the global pool).
#[wasm_bindgen(js_name = threadPoolWorker)]
pub fn thread_pool_worker() {
    let thread = match handoff().1.lock() {
        Ok(rx) => rx.recv(),
        Err(_) => return,
    };
    if let Ok(thread) = thread {
        thread.run();
    }
}

/// Builds rayon's global pool with `threads` threads, run by workers already waiting in
/// [`thread_pool_worker`] (exactly `threads` of them, or this blocks forever).
#[wasm_bindgen(js_name = threadPoolBuild)]
pub fn thread_pool_build(threads: usize) -> Result<(), JsValue> {
    if threads == 0 {
        return Err(JsValue::from_str("a thread pool needs at least one thread"));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("webtune-cpu-{i}"))
        .spawn_handler(|thread| {
            let tx = handoff()
                .0
                .lock()
                .map_err(|_| std::io::Error::other("the thread handoff is poisoned"))?;
            tx.send(thread)
                .map_err(|_| std::io::Error::other("no worker waits for a thread"))
        })
        .build_global()
        .map_err(|e| JsValue::from_str(&format!("could not start the thread pool: {e}")))
}

/// Test hook: panic on a pool thread while this thread waits for it, as a bug in a parallel
/// kernel would (browser tests prove the page reports it and can restart).
#[wasm_bindgen(js_name = debugPanicOnThread)]
pub fn debug_panic_on_thread(message: String) {
    rayon::join(move || panic!("{message}"), || ());
}
