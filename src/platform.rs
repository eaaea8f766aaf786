//! The few things that differ between the browser and native: a clock and a way to let the
//! event loop run. `std::time::Instant` panics on wasm32-unknown-unknown, and a training loop
//! that never yields would keep a worker from seeing the page's "cancel" message.

/// Milliseconds from an arbitrary origin, monotonic where the platform allows.
#[cfg(not(target_arch = "wasm32"))]
pub fn now_ms() -> f64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_secs_f64() * 1e3
}

#[cfg(target_arch = "wasm32")]
pub fn now_ms() -> f64 {
    use wasm_bindgen::JsCast;
    // `performance` exists in windows and workers alike; fall back to the wall clock.
    js_sys::Reflect::get(&js_sys::global(), &"performance".into())
        .ok()
        .and_then(|p| p.dyn_into::<web_sys::Performance>().ok())
        .map(|p| p.now())
        .unwrap_or_else(js_sys::Date::now)
}

/// Let pending events (messages from the page) run. A no-op natively.
#[cfg(not(target_arch = "wasm32"))]
pub async fn yield_now() {}

/// Resolve on a fresh macrotask. A `MessageChannel` message is used rather than `setTimeout(0)`,
/// which browsers clamp to ≥4 ms once calls nest.
#[cfg(target_arch = "wasm32")]
pub async fn yield_now() {
    use wasm_bindgen::closure::Closure;
    use wasm_bindgen::JsCast;
    let promise = js_sys::Promise::new(&mut |resolve, _reject| {
        let Ok(channel) = web_sys::MessageChannel::new() else {
            let _ = resolve.call0(&wasm_bindgen::JsValue::UNDEFINED);
            return;
        };
        let on_message = Closure::once_into_js(move || {
            let _ = resolve.call0(&wasm_bindgen::JsValue::UNDEFINED);
        });
        channel
            .port1()
            .set_onmessage(Some(on_message.unchecked_ref()));
        let _ = channel.port2().post_message(&wasm_bindgen::JsValue::NULL);
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}
