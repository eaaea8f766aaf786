//! The browser face of webtune: a thin wasm-bindgen layer over the library, used by
//! `www/worker.js` and by embedders. All logic lives in the library; this file converts values
//! and errors at the boundary.

use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::backend::{Backend, BackendKind};
use crate::error::{Code, Error};
use crate::train::toy::{train_toy, ToyTrainConfig};

extern "C" {
    // cubecl registers static constructors (through `inventory`). If nothing calls
    // `__wasm_call_ctors`, wasm-ld treats the module as a "command" and re-runs every
    // constructor on each exported call (measured: 18× slower training steps).
    fn __wasm_call_ctors();
}

#[wasm_bindgen(start)]
fn start() {
    // SAFETY: called exactly once, before any other export, as the linker contract requires.
    unsafe { __wasm_call_ctors() };
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        report_panic(&info.to_string());
    }));
}

/// A panic traps the wasm instance and can leave promises unsettled; tell the worker first, so it
/// can report the error and the page can restart it instead of waiting forever.
fn report_panic(message: &str) {
    let global = js_sys::global();
    if let Ok(callback) = js_sys::Reflect::get(&global, &"__webtune_on_panic".into()) {
        if let Some(f) = callback.dyn_ref::<js_sys::Function>() {
            let _ = f.call1(&global, &JsValue::from_str(message));
        }
    }
}

/// The crate version.
#[wasm_bindgen]
pub fn version() -> String {
    crate::VERSION.to_string()
}

fn to_js<T: Serialize + ?Sized>(value: &T) -> Result<JsValue, JsValue> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| error_to_js(&Error::new(Code::Internal, e.to_string())))
}

/// A JS `Error` carrying the stable `code` and structured `details`.
fn error_to_js(error: &Error) -> JsValue {
    let js = js_sys::Error::new(&error.message);
    let _ = js_sys::Reflect::set(&js, &"code".into(), &error.code.as_str().into());
    if !error.details.is_null() {
        if let Ok(details) = to_js(&error.details) {
            let _ = js_sys::Reflect::set(&js, &"details".into(), &details);
        }
    }
    js.into()
}

/// A compute session on one backend.
#[wasm_bindgen]
pub struct Session {
    backend: Backend,
}

#[wasm_bindgen]
impl Session {
    /// Create a session on `"webgpu"` or `"cpu"`.
    pub async fn create(backend: String) -> Result<Session, JsValue> {
        let kind = BackendKind::parse(&backend).map_err(|e| error_to_js(&e))?;
        let backend = Backend::create(kind).await.map_err(|e| error_to_js(&e))?;
        Ok(Session { backend })
    }

    /// `{backend, adapter, device_limits}`.
    #[wasm_bindgen(js_name = backendInfo)]
    pub fn backend_info(&self) -> Result<JsValue, JsValue> {
        to_js(&self.backend.info)
    }

    /// Train the toy model. `on_progress(progress)` runs after every step; returning `false`
    /// stops the run. Resolves to the run summary. The returned promise owns clones of what it
    /// needs, so the session is not borrowed while training.
    #[wasm_bindgen(js_name = trainToy)]
    pub fn train_toy(&self, config: JsValue, on_progress: js_sys::Function) -> js_sys::Promise {
        let backend = self.backend.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let config: ToyTrainConfig = if config.is_undefined() || config.is_null() {
                ToyTrainConfig::default()
            } else {
                serde_wasm_bindgen::from_value(config)
                    .map_err(|e| error_to_js(&Error::config(format!("invalid toy config: {e}"))))?
            };
            let summary = train_toy(&backend, &config, |progress| {
                let Ok(value) = to_js(progress) else {
                    return true;
                };
                match on_progress.call1(&JsValue::NULL, &value) {
                    // Only an explicit `false` stops; `undefined` keeps going.
                    Ok(result) => result.as_bool() != Some(false),
                    Err(_) => false,
                }
            })
            .await
            .map_err(|e| error_to_js(&e))?;
            to_js(&summary)
        })
    }
}
