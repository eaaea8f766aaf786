//! The browser face of webtune: a thin wasm-bindgen layer over the library, used by
//! `www/worker.js` and by embedders. All logic lives in the library; this file converts values
//! and errors at the boundary.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use wasm_bindgen::prelude::*;

use crate::backend::{Backend, BackendInfo, BackendKind};
use crate::data::validate::{DataProgress, OnDataProgress};
use crate::error::{Code, Error};
use crate::eval::generate::GenerateOptions;
use crate::eval::respond::{respond, Prompt};
use crate::io::hf::{declared_tensors, ModelFiles};
use crate::io::source::{FileBytes, ReadAt};
use crate::models::loaded::{LoadedModel, ModelInfo};
use crate::train::adapter::{
    attach_peft_adapter, parse_peft_adapter, PeftAdapter, ADAPTER_CLASSIFIER, ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
};
use crate::train::checkpoint::{Checkpoint, Checkpointing};
use crate::train::control::Control;
use crate::train::export::Export;
use crate::train::job::{DataSource, DatasetFile, DatasetFiles, JobConfig};
use crate::train::memory::{self, MemoryLimits};
use crate::train::qlora::{
    cpu_quantized_bytes, load_quantized, quantized_as_loaded, BaseQuant, DEFAULT_BLOCK_SIZE,
};
use crate::train::recipe::{recipe, BaseModelRef};
use crate::train::replay::{replay, ReferenceRun};
use crate::train::toy::{train_toy, ToyTrainConfig};
use crate::train::{evaluate_split, inspect_data, run_task, Room};

mod heap;
#[cfg(feature = "wasm-threads")]
pub mod threads;

extern "C" {
    // cubecl registers static constructors (through `inventory`). If nothing calls
    // `__wasm_call_ctors`, wasm-ld treats the module as a "command" and re-runs every
    // constructor on each exported call (measured: 18× slower training steps).
    fn __wasm_call_ctors();
}

#[wasm_bindgen(start)]
fn start() {
    // SAFETY: called exactly once, before any other export, as the linker contract requires
    // (in the threaded build wasm-bindgen calls this start function on the first thread only).
    unsafe { __wasm_call_ctors() };
    // Tokenization stays serial (the threaded build's pool is for the tensor kernels, and the
    // plain build has no threads at all).
    tokenizers::utils::parallelism::set_parallelism(false);
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

/// Test hook: panic on purpose, so browser tests can prove a crashed worker is reported and
/// restartable.
#[wasm_bindgen(js_name = debugPanic)]
pub fn debug_panic(message: String) {
    panic!("{message}");
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

/// A model's info with the fingerprint of the files it was loaded from.
fn info_to_js(info: &ModelInfo, fingerprint: Option<&str>) -> Result<JsValue, JsValue> {
    let mut value = serde_json::to_value(info)
        .map_err(|e| error_to_js(&Error::new(Code::Internal, e.to_string())))?;
    value["fingerprint"] = json!(fingerprint);
    to_js(&value)
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

/// A compute session on one backend, holding at most one loaded model.
#[wasm_bindgen]
pub struct Session {
    backend: Backend,
    // Shared with the promises of running calls, so a long generation does not borrow the
    // session (JS may call other methods meanwhile).
    model: Rc<RefCell<Option<Rc<LoadedModel>>>>,
    /// The loaded model's files but its safetensors weights (config, tokenizer, a GGUF file):
    /// jobs read the config and tokenizer files from them and export them beside the weights.
    files: Rc<RefCell<Option<Rc<ModelFiles>>>>,
    /// The latest fine-tuned model and its exported files.
    tuned: Rc<RefCell<Option<Rc<Tuned>>>>,
    /// LoRA adapters attached to the loaded model by name, un-merged: each shares the base's
    /// weights, so choosing one (`model: "adapter:NAME"`) switches without reloading anything.
    adapters: Rc<RefCell<BTreeMap<String, Rc<LoadedModel>>>>,
    /// The loaded model's [`ModelFiles::fingerprint`]: what an adapter library records as "the
    /// base this adapter belongs to".
    fingerprint: Rc<RefCell<Option<String>>>,
}

struct Tuned {
    model: Rc<LoadedModel>,
    export: Export,
}

/// What `model`/`which` may name: the base, the latest fine-tuned model, or an attached
/// adapter.
const ADAPTER_PREFIX: &str = "adapter:";

/// A model file handed over from JS: bytes (`Uint8Array`/`ArrayBuffer`) or a `Blob` (a picked
/// `File`, a downloaded body). Weight files stay where they are and are read a tensor at a time
/// while the model loads (a `Blob` through `FileReaderSync`, which workers have), so the module
/// never holds a whole weight file: a file larger than its memory can load.
enum JsFile {
    View(js_sys::Uint8Array),
    Blob(web_sys::Blob),
}

impl ReadAt for JsFile {
    fn size(&self) -> u64 {
        match self {
            Self::View(v) => v.length() as u64,
            Self::Blob(b) => b.size() as u64,
        }
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        let end = offset + buf.len() as u64;
        match self {
            // JS lengths are below 2^32 here: views index with u32.
            Self::View(v) => v.subarray(offset as u32, end as u32).copy_to(buf),
            Self::Blob(b) => {
                let part = b
                    .slice_with_f64_and_f64(offset as f64, end as f64)
                    .map_err(|e| js_message(&e))?;
                let reader = web_sys::FileReaderSync::new().map_err(|_| {
                    "FileReaderSync is missing: give files as Blobs only to a Worker".to_string()
                })?;
                let bytes = reader
                    .read_as_array_buffer(&part)
                    .map_err(|e| js_message(&e))?;
                let bytes = js_sys::Uint8Array::new(&bytes);
                if bytes.length() as usize != buf.len() {
                    return Err(format!(
                        "{} bytes came back instead of {} (the file changed on disk?)",
                        bytes.length(),
                        buf.len()
                    ));
                }
                bytes.copy_to(buf);
            }
        }
        Ok(())
    }
}

/// A thrown JS value's message.
fn js_message(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

/// `{name: Uint8Array | ArrayBuffer | Blob}` (a plain object or a `Map`) → model files. Weight
/// files stay in JS, read as the model loads; the others (config, tokenizer: small) are copied
/// into the module.
fn files_from_js(files: &JsValue) -> Result<ModelFiles, Error> {
    let bad = || {
        Error::config(
            "model files must be an object or Map from file name to Uint8Array/ArrayBuffer/Blob",
        )
    };
    let entries: Vec<(JsValue, JsValue)> = if let Some(map) = files.dyn_ref::<js_sys::Map>() {
        let mut out = Vec::new();
        map.for_each(&mut |value, key| out.push((key, value)));
        out
    } else if files.is_object() {
        js_sys::Object::entries(files.unchecked_ref())
            .iter()
            .map(|pair| {
                let pair: js_sys::Array = pair.unchecked_into();
                (pair.get(0), pair.get(1))
            })
            .collect()
    } else {
        return Err(bad());
    };
    let mut out = ModelFiles::new();
    for (name, value) in entries {
        let name = name.as_string().ok_or_else(bad)?;
        // Folder pickers give paths like "gpt2/config.json": the file name is what matters.
        let name = name.rsplit('/').next().unwrap_or(&name).to_owned();
        let file = if let Some(array) = value.dyn_ref::<js_sys::Uint8Array>() {
            JsFile::View(array.clone())
        } else if let Some(buffer) = value.dyn_ref::<js_sys::ArrayBuffer>() {
            JsFile::View(js_sys::Uint8Array::new(buffer))
        } else if let Some(blob) = value.dyn_ref::<web_sys::Blob>() {
            JsFile::Blob(blob.clone())
        } else {
            return Err(bad().with_details(json!({ "file": name })));
        };
        // The module is single-threaded where JS values live; nothing here crosses threads.
        #[allow(clippy::arc_with_non_send_sync)]
        let handle = FileBytes::Handle(Arc::new(file));
        if name.ends_with(".safetensors") || name.ends_with(".gguf") {
            out.insert(name, handle);
        } else {
            let bytes = handle.read_all(&name)?.into_owned();
            out.insert(name, bytes);
        }
    }
    Ok(out)
}

/// Left free beside a load's estimate: the tokenizer, the allocator's slack, the next steps.
const LOAD_HEADROOM: u64 = 256 << 20;

/// Refuses a model the module cannot hold, before any weight is read (a wasm module that runs
/// out of memory traps and takes the session with it). Weight files stay outside the module
/// and are read a tensor at a time; on the CPU backend every weight is built there in f32; what
/// is already in use (the loaded model, kept until the new one loads) stays. Sizes come from
/// the weight files' headers ([`declared_values`]).
fn check_load_fits(
    model: &ModelFiles,
    quant: Option<BaseQuant>,
    backend: &BackendInfo,
) -> Result<(), Error> {
    let mut files = model.resident_bytes();
    let (mut values, mut compact, mut largest) = (0u64, 0u64, 0u64);
    for name in model.names() {
        for (tensor, n) in model
            .file(name)
            .and_then(|b| declared_tensors(name, b))
            .unwrap_or_default()
        {
            values += n;
            largest = largest.max(n);
            if quant.is_some() && quantized_as_loaded(&tensor) {
                compact += n;
            }
        }
    }
    // Read one at a time: its stored bytes and its f32 values (at most 4 + 4 bytes a value).
    files += 8 * largest;
    let weights = match backend.backend {
        BackendKind::Cpu => {
            let bits = quant.map_or(8, BaseQuant::bits);
            (values - compact) * 4 + cpu_quantized_bytes(compact, DEFAULT_BLOCK_SIZE, bits)
        }
        // Uploaded to the GPU tensor by tensor.
        BackendKind::Webgpu => 0,
    };
    let in_use = heap::heap_bytes() as u64;
    let need = files + weights;
    if in_use + need + LOAD_HEADROOM <= memory::WASM_MEMORY {
        return Ok(());
    }
    let advice = match (backend.backend, quant) {
        (BackendKind::Cpu, None) => {
            "load it with its projections in 8 bits (QLoRA), use the WebGPU backend (the \
             weights then live in GPU memory), or a smaller model"
        }
        (BackendKind::Cpu, Some(_)) => {
            "use the WebGPU backend (the weights then live in GPU memory), or a smaller model"
        }
        (BackendKind::Webgpu, _) => {
            "use a smaller model, or split it into shards no larger than this"
        }
    };
    Err(Error::new(
        Code::MemoryInsufficient,
        format!(
            "loading this model needs about {} inside the page ({} of files and the largest \
             tensor read, {} of weights built for {} parameters) beside the {} in use, more \
             than the {} a WebAssembly module can address: {advice}",
            memory::gib(need),
            memory::gib(files),
            memory::gib(weights),
            values,
            memory::gib(in_use),
            memory::gib(memory::WASM_MEMORY),
        ),
    )
    .with_details(json!({
        "needed_bytes": need, "files_bytes": files, "weights_bytes": weights,
        "parameters": values, "in_use_bytes": in_use, "limit_bytes": memory::WASM_MEMORY,
    })))
}

/// `loadModel`'s options: `{quantize_base?: "q8" | "q4"}` (absent, `null` or `"f32"`: f32).
fn load_quant(options: &JsValue) -> Result<Option<BaseQuant>, Error> {
    if options.is_undefined() || options.is_null() {
        return Ok(None);
    }
    let value: serde_json::Value = serde_wasm_bindgen::from_value(options.clone())
        .map_err(|e| Error::config(format!("invalid load options: {e}")))?;
    match value.get("quantize_base") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s == "f32" => Ok(None),
        Some(serde_json::Value::String(s)) => BaseQuant::parse(s).map(Some),
        Some(other) => Err(Error::config(format!(
            "quantize_base must be \"q8\", \"q4\" or \"f32\", got {other}"
        ))
        .with_details(json!({ "field": "quantize_base" }))),
    }
}

fn no_tuned_model() -> Error {
    Error::new(
        Code::ModelNotLoaded,
        "there is no fine-tuned model yet; fine-tune the loaded model first",
    )
}

/// A job's configuration with `init_adapter` (a PEFT adapter's files, as `attachAdapter` takes
/// them) taken out and read: the adapter the job continues training (`train --init-adapter`).
fn job_config_and_adapter(config: JsValue) -> Result<(JobConfig, Option<PeftAdapter>), Error> {
    let files = js_sys::Reflect::get(&config, &"init_adapter".into()).unwrap_or(JsValue::UNDEFINED);
    if files.is_undefined() || files.is_null() {
        return Ok((job_config(config)?, None));
    }
    // A copy without the key: the files are not settings.
    let rest = js_sys::Object::assign(&js_sys::Object::new(), config.unchecked_ref());
    let _ = js_sys::Reflect::delete_property(&rest, &"init_adapter".into());
    Ok((job_config(rest.into())?, Some(adapter_from_js(&files)?)))
}

/// A job's configuration for `base`, continuing the adapter of `config.init_adapter` when it
/// has one (a causal LM's LoRA: its factors, rank, alpha and modules).
fn continuing(base: &LoadedModel, config: JsValue) -> Result<JobConfig, Error> {
    let (mut config, init) = job_config_and_adapter(config)?;
    if let Some(adapter) = init {
        if base.is_encoder() {
            return Err(Error::config(
                "continuing an adapter trains a causal language model's LoRA factors further; a \
                 classifier starts from its merged model",
            )
            .with_details(json!({ "field": "init_adapter" })));
        }
        config.train = config.train.continue_adapter(adapter)?;
    }
    Ok(config)
}

/// A PEFT adapter from its files handed over from JS (`{name: bytes}` as `loadModel` takes them;
/// folder paths are fine), with webtune's classifier note when there is one.
fn adapter_from_js(files: &JsValue) -> Result<PeftAdapter, Error> {
    let files = files_from_js(files)?;
    let read = |file: &str| {
        files.read(file)?.map(|b| b.into_owned()).ok_or_else(|| {
            Error::new(
                Code::ModelMissingFile,
                format!(
                    "the adapter has no {file} (a PEFT adapter folder holds {ADAPTER_CONFIG} \
                     and {ADAPTER_WEIGHTS})"
                ),
            )
            .with_details(json!({ "file": file }))
        })
    };
    let adapter = parse_peft_adapter(
        &read(ADAPTER_CONFIG)?,
        ADAPTER_WEIGHTS,
        read(ADAPTER_WEIGHTS)?,
    )?;
    // A classifier's labels and pooling, when webtune wrote the adapter.
    match files.read(ADAPTER_CLASSIFIER)? {
        Some(note) => adapter.with_classifier_note(&note),
        None => Ok(adapter),
    }
}

fn job_config(config: JsValue) -> Result<JobConfig, Error> {
    if config.is_undefined() || config.is_null() {
        return Ok(JobConfig::default());
    }
    // Through JSON text, so unknown keys and wrong types get serde's precise messages.
    let value: serde_json::Value = serde_wasm_bindgen::from_value(config)
        .map_err(|e| Error::config(format!("invalid fine-tuning configuration: {e}")))?;
    JobConfig::from_json(&value.to_string())
}

#[wasm_bindgen]
impl Session {
    /// Create a session on `"webgpu"` or `"cpu"`.
    pub async fn create(backend: String) -> Result<Session, JsValue> {
        let kind = BackendKind::parse(&backend).map_err(|e| error_to_js(&e))?;
        let backend = Backend::create(kind).await.map_err(|e| error_to_js(&e))?;
        Ok(Session {
            backend,
            model: Rc::new(RefCell::new(None)),
            files: Rc::new(RefCell::new(None)),
            tuned: Rc::new(RefCell::new(None)),
            adapters: Rc::new(RefCell::new(BTreeMap::new())),
            fingerprint: Rc::new(RefCell::new(None)),
        })
    }

    /// The loaded model and the files it was loaded from (a job reads its config, chat
    /// template and tokenizer files), or `model.not_loaded`.
    fn current_model_and_files(&self) -> Result<(Rc<LoadedModel>, Rc<ModelFiles>), JsValue> {
        let base = self.current_model()?;
        let files = self.files.borrow().clone().ok_or_else(|| {
            error_to_js(&Error::new(
                Code::ModelNotLoaded,
                "no model is loaded; load one first",
            ))
        })?;
        Ok((base, files))
    }

    fn current_model(&self) -> Result<Rc<LoadedModel>, JsValue> {
        self.model.borrow().clone().ok_or_else(|| {
            error_to_js(&Error::new(
                Code::ModelNotLoaded,
                "no model is loaded; load one first",
            ))
        })
    }

    /// Load a model from its files (`{name: Blob | Uint8Array | ArrayBuffer}` or a `Map`):
    /// Hugging Face layout (`config.json`, safetensors, `tokenizer.json`, ...) or a GGUF file.
    /// `options.quantize_base` (`"q8"` / `"q4"`) keeps the linear projections quantized as they
    /// are read (QLoRA: the base then trains only with LoRA). Replaces the current model only
    /// when the new one loads; on error the previous model stays usable. Resolves to the
    /// model's info.
    #[wasm_bindgen(js_name = loadModel)]
    pub fn load_model(&self, files: JsValue, options: JsValue) -> js_sys::Promise {
        let slot = self.model.clone();
        let files_slot = self.files.clone();
        let tuned_slot = self.tuned.clone();
        let adapters_slot = self.adapters.clone();
        let fingerprint_slot = self.fingerprint.clone();
        let device = self.backend.inference.clone();
        let backend_info = self.backend.info.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let quant = load_quant(&options).map_err(|e| error_to_js(&e))?;
            let files = files_from_js(&files).map_err(|e| error_to_js(&e))?;
            check_load_fits(&files, quant, &backend_info).map_err(|e| error_to_js(&e))?;
            let fingerprint = files.fingerprint().map_err(|e| error_to_js(&e))?;
            // Config, tokenizer and chat template stay at hand for jobs; dense weights do not.
            let kept = files.without_weights();
            let model = match quant {
                Some(q) => load_quantized(files, &device, q, DEFAULT_BLOCK_SIZE).map(|m| m.0),
                None => LoadedModel::load(files, &device),
            }
            .map_err(|e| error_to_js(&e))?;
            let info = info_to_js(&model.info, Some(&fingerprint))?;
            *slot.borrow_mut() = Some(Rc::new(model));
            *files_slot.borrow_mut() = Some(Rc::new(kept));
            *fingerprint_slot.borrow_mut() = Some(fingerprint);
            // A fine-tuned model and attached adapters belong to the base they were made for.
            *tuned_slot.borrow_mut() = None;
            adapters_slot.borrow_mut().clear();
            Ok(info)
        })
    }

    /// The loaded model's info, or `null`.
    #[wasm_bindgen(js_name = modelInfo)]
    pub fn model_info(&self) -> Result<JsValue, JsValue> {
        match self.model.borrow().as_ref() {
            Some(model) => info_to_js(&model.info, self.fingerprint.borrow().as_deref()),
            None => Ok(JsValue::NULL),
        }
    }

    /// Token ids of `text` under the loaded model's tokenizer.
    pub fn encode(&self, text: String) -> Result<Vec<u32>, JsValue> {
        self.current_model()?
            .encode(&text)
            .map_err(|e| error_to_js(&e))
    }

    /// Text of token ids.
    pub fn decode(&self, ids: Vec<u32>) -> Result<String, JsValue> {
        let model = self.current_model()?;
        let tokenizer = model.tokenizer.as_ref().ok_or_else(|| {
            error_to_js(&Error::new(
                Code::ModelMissingFile,
                "this model has no tokenizer.json",
            ))
        })?;
        tokenizer.decode(&ids).map_err(|e| error_to_js(&e))
    }

    /// Logits of every position for token ids: resolves to `{shape: [T, vocab], data: Float32Array}`.
    /// `which` is `"base"` (default) or `"tuned"` (the latest fine-tuned model).
    pub fn logits(&self, ids: Vec<u32>, which: Option<String>) -> js_sys::Promise {
        let pick = self.pick_model(which.as_deref());
        wasm_bindgen_futures::future_to_promise(async move {
            let (_, model) = pick?;
            let model = &*model;
            let rows = model.logits(&ids).await.map_err(|e| error_to_js(&e))?;
            let vocab = rows.first().map_or(0, Vec::len);
            let flat: Vec<f32> = rows.iter().flatten().copied().collect();
            let out = js_sys::Object::new();
            let shape = js_sys::Array::of2(&(rows.len() as u32).into(), &(vocab as u32).into());
            js_sys::Reflect::set(&out, &"shape".into(), &shape)?;
            js_sys::Reflect::set(
                &out,
                &"data".into(),
                &js_sys::Float32Array::from(flat.as_slice()),
            )?;
            Ok(out.into())
        })
    }

    /// Continue a prompt (`"text"`, `{text}`, `{ids}`, or `{chat: [{role, content}],
    /// add_generation_prompt?: true}` formatted with the model's chat template; a chat stops at
    /// the template's end-of-turn token). `options` are `GenerateOptions`
    /// (snake_case: max_new_tokens, greedy, temperature, top_k, top_p, repetition_penalty, seed,
    /// use_cache, stop_tokens) plus `ignore_eos` and `model` (`"base"`, the default, or
    /// `"tuned"`). `on_token(id, text_so_far)` sees each token;
    /// returning `false` stops. Resolves to `eval::respond::Reply`: `{prompt_ids, generated_ids,
    /// text, seconds, tokens_per_s, use_cache, chat_prompt}` (`chat_prompt`: the formatted
    /// conversation, or null).
    pub fn generate(
        &self,
        input: JsValue,
        options: JsValue,
        on_token: js_sys::Function,
    ) -> js_sys::Promise {
        let which = js_sys::Reflect::get(&options, &"model".into())
            .ok()
            .and_then(|v| v.as_string());
        let pick = self.pick_model(which.as_deref());
        wasm_bindgen_futures::future_to_promise(async move {
            let (_base, model) = pick?;
            let model = &*model;
            let run = async {
                let mut value: serde_json::Value = if options.is_undefined() || options.is_null() {
                    json!({})
                } else {
                    serde_wasm_bindgen::from_value(options)
                        .map_err(|e| Error::config(format!("invalid generation options: {e}")))?
                };
                if let Some(which) = value.as_object_mut().and_then(|o| o.remove("model")) {
                    if !which.is_string() && !which.is_null() {
                        return Err(Error::config(format!(
                            "model must be \"base\", \"tuned\" or \"adapter:NAME\", not {which}"
                        )));
                    }
                }
                let ignore_eos = value
                    .as_object_mut()
                    .and_then(|o| o.remove("ignore_eos"))
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false);
                let opts: GenerateOptions = serde_json::from_value(value)
                    .map_err(|e| Error::config(format!("invalid generation options: {e}")))?;
                let input: serde_json::Value = match input.as_string() {
                    Some(text) => json!(text),
                    None => serde_wasm_bindgen::from_value(input)
                        .map_err(|e| Error::config(format!("invalid prompt: {e}")))?,
                };
                let prompt = Prompt::from_json(&input)?.prepare(model, opts, ignore_eos)?;
                let mut so_far = Vec::new();
                respond(model, &prompt, |t| {
                    so_far.push(t);
                    let text = model
                        .tokenizer
                        .as_ref()
                        .and_then(|tk| tk.decode(&so_far).ok())
                        .map_or(JsValue::NULL, |t| JsValue::from_str(&t));
                    match on_token.call2(&JsValue::NULL, &t.into(), &text) {
                        Ok(result) => result.as_bool() != Some(false),
                        Err(_) => false,
                    }
                })
                .await
            };
            let result = run.await.map_err(|e| error_to_js(&e))?;
            to_js(&result)
        })
    }

    /// Read and validate a dataset for the loaded model without training. `request` is a
    /// [`JobRequest`] (`{data: {name, bytes}, validation?: {name, bytes}, config?}`; `config`
    /// is the fine-tuning job configuration, whose `data`, `validation_fraction`,
    /// `batch_size`… matter here). Resolves to what `train::inspect_data` gives: the reports,
    /// the split, the batch and step counts, the memory estimate (and why the job cannot fit
    /// this backend, when it cannot) and a preview of the first examples as the model sees them.
    /// `on_progress(p)` sees the reading progress of large files.
    #[wasm_bindgen(js_name = inspectDataset)]
    pub fn inspect_dataset(
        &self,
        request: JsValue,
        on_progress: Option<js_sys::Function>,
    ) -> js_sys::Promise {
        let base = self.current_model();
        let files = self.files.borrow().clone();
        let backend_info = self.backend.info.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let base = base?;
            let run = || -> Result<serde_json::Value, Error> {
                let request = JobRequest::from_js(&request)?;
                let config = job_config(request.config.clone())?;
                let progress = on_progress.as_ref().map(data_progress_to);
                let progress = progress.as_ref().map(|p| p as OnDataProgress);
                let room = Room {
                    kept_files: files.as_ref().map_or(0, |f| f.resident_bytes()),
                    limits: MemoryLimits::of(&backend_info),
                };
                inspect_data(
                    &base,
                    files.as_deref(),
                    request.dataset(progress),
                    &config,
                    room,
                )
            };
            let value = run().map_err(|e| error_to_js(&e))?;
            to_js(&value)
        })
    }

    /// Fine-tune the loaded model on a dataset and evaluate it before and after on held-out
    /// examples. `request` is a [`JobRequest`]: `{data: {name, bytes}, validation?: {name,
    /// bytes}, config?, resume?}`. `on_event(event)` sees `{type: "phase", phase, message}` and
    /// `{type: "step", step, total_steps, loss, lr, grad_norm, tokens_per_s, elapsed_s, eta_s,
    /// eval, ...}`; returning `false` stops training early (evaluation and export still run);
    /// returning a Promise for a step pauses training after it until the Promise settles
    /// (`true`: resume; `false` or a rejection: stop as `false` does).
    /// Resolves to `{report, summary, before, after, samples, files, ...}`; the fine-tuned
    /// model then answers `generate(..., {model: "tuned"})` and `exportFiles()`.
    /// `config.init_adapter`, a PEFT adapter's files (`{"adapter_config.json": ...,
    /// "adapter_model.safetensors": ...}`), continues training that adapter (LoRA on a causal
    /// LM: its rank, alpha and modules are the job's; the optimiser starts fresh).
    ///
    /// With `on_checkpoint`, the job saves checkpoints (causal LMs and classifiers; an
    /// encoder's holds the head too): `on_checkpoint({step, bytes: Uint8Array})` receives one
    /// every `config.checkpoint_every` steps and when the run is paused or stopped early.
    /// `request.resume` (a checkpoint's bytes) then continues the run it was saved from, on the
    /// same model, dataset and configuration, with the losses the uninterrupted run would have
    /// had. A checkpoint of the other kind of job, or of another model, dataset or
    /// configuration, is refused with `config.invalid` (details `{field: "checkpoint", reason}`).
    pub fn finetune(
        &self,
        request: JsValue,
        on_event: js_sys::Function,
        on_checkpoint: Option<js_sys::Function>,
    ) -> js_sys::Promise {
        let loaded = self.current_model_and_files();
        let tuned_slot = self.tuned.clone();
        let backend = self.backend.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let (base, files) = loaded?;
            let run = async {
                let request = JobRequest::from_js(&request)?;
                let config = continuing(&base, request.config.clone())?;
                let progress = data_progress_to(&on_event);
                let checkpointing = match (on_checkpoint, &request.resume) {
                    (Some(on_checkpoint), resume) => {
                        let resume = resume.as_deref().map(Checkpoint::from_bytes).transpose()?;
                        let save = move |ck: Checkpoint| {
                            let out = js_sys::Object::new();
                            let step = (ck.step as f64).into();
                            let _ = js_sys::Reflect::set(&out, &"step".into(), &step);
                            let bytes = js_sys::Uint8Array::from(ck.to_bytes().as_slice());
                            let _ = js_sys::Reflect::set(&out, &"bytes".into(), &bytes);
                            let _ = on_checkpoint.call1(&JsValue::NULL, &out);
                        };
                        Some(Checkpointing {
                            resume,
                            every: config.checkpoint_every,
                            save: Box::new(save),
                        })
                    }
                    (None, Some(_)) => {
                        return Err(Error::config(
                            "resuming a checkpoint needs on_checkpoint: the resumed run saves its \
                             own checkpoints",
                        )
                        .with_details(json!({ "field": "resume" })))
                    }
                    (None, None) => None,
                };
                let out = run_task(
                    &files,
                    &base,
                    &backend,
                    request.dataset(Some(&progress)),
                    &config,
                    "webtune-base",
                    checkpointing,
                    |event| {
                        let Ok(value) = to_js(&event) else {
                            return Control::Continue;
                        };
                        match on_event.call1(&JsValue::NULL, &value) {
                            Ok(result) => js_control(result),
                            Err(_) => Control::Stop,
                        }
                    },
                )
                .await?;
                Ok::<_, Error>(out)
            };
            let out = run.await.map_err(|e| error_to_js(&e))?;
            let value = to_js(&out)?;
            if let (export, Some(model)) = out.into_parts() {
                *tuned_slot.borrow_mut() = Some(Rc::new(Tuned {
                    model: Rc::new(model),
                    export,
                }));
            }
            Ok(value)
        })
    }

    /// The job `finetune` would run with this request (a [`JobRequest`], as `finetune` takes
    /// it), as a Python project for Hugging Face transformers + PEFT launched by Accelerate (the
    /// CLI's `webtune recipe`), zipped under `webtune-recipe/`: resolves to a `Uint8Array`.
    /// `model` is how the project's job.json names the base (a Hub id, or a folder for the user
    /// to fill in). `config.init_adapter` (an adapter's files) starts the project from that
    /// adapter, as `webtune recipe --init-adapter DIR` does. Nothing is trained.
    pub fn recipe(&self, request: JsValue, model: String) -> js_sys::Promise {
        let loaded = self.current_model_and_files();
        let backend = self.backend.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let (base, files) = loaded?;
            let run = async {
                let request = JobRequest::from_js(&request)?;
                let config = continuing(&base, request.config.clone())?;
                let model_ref = BaseModelRef {
                    path: model,
                    gguf_file: files
                        .names()
                        .find(|n| n.ends_with(".gguf"))
                        .map(str::to_string),
                };
                let data = request.dataset(None);
                let written = recipe(&model_ref, &files, &base, &backend, data, &config).await?;
                let named: Vec<(String, Vec<u8>)> = written
                    .into_iter()
                    .map(|(n, b)| (format!("webtune-recipe/{n}"), b))
                    .collect();
                crate::io::zip::stored(&named)
            };
            let zip = run.await.map_err(|e| error_to_js(&e))?;
            Ok(js_sys::Uint8Array::from(zip.as_slice()).into())
        })
    }

    /// The fine-tuned model's files: `{"merged/model.safetensors": Uint8Array, ...}` (plus
    /// `adapter/...` for LoRA) — a Hugging Face model folder and a PEFT adapter. Resolves once
    /// they are written: the merged weights are computed now, one tensor at a time, each copied
    /// into the JavaScript array at once, so wasm memory never holds the file.
    #[wasm_bindgen(js_name = exportFiles)]
    pub fn export_files(&self) -> js_sys::Promise {
        let tuned = self.tuned.borrow().clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let tuned = tuned.ok_or_else(|| error_to_js(&no_tuned_model()))?;
            let out = js_sys::Object::new();
            for name in tuned.export.names() {
                let size = tuned.export.size(&name).unwrap_or(0);
                let size = u32::try_from(size).map_err(|_| {
                    error_to_js(&Error::new(
                        Code::MemoryInsufficient,
                        format!(
                            "{name} is {:.1} GiB, more than one browser array holds (4 GiB): \
                             export the merged weights as f16 or bf16 (export_dtype), or use \
                             the adapter",
                            size as f64 / (1u64 << 30) as f64
                        ),
                    ))
                })?;
                let array = js_sys::Uint8Array::new_with_length(size);
                let mut at = 0u32;
                tuned
                    .export
                    .write(&name, &mut |bytes| {
                        let end = at + bytes.len() as u32;
                        array.subarray(at, end).copy_from(bytes);
                        at = end;
                        Ok(())
                    })
                    .await
                    .map_err(|e| error_to_js(&e))?;
                js_sys::Reflect::set(&out, &name.as_str().into(), &array)?;
            }
            Ok(out.into())
        })
    }

    /// Info of the fine-tuned model, or `null`.
    #[wasm_bindgen(js_name = tunedInfo)]
    pub fn tuned_info(&self) -> Result<JsValue, JsValue> {
        match self.tuned.borrow().as_ref() {
            Some(t) => to_js(&t.model.info),
            None => Ok(JsValue::NULL),
        }
    }

    /// Attach a PEFT LoRA adapter to the loaded model under `name` (replacing one of that
    /// name): `files` holds `adapter_config.json` and `adapter_model.safetensors` (as `loadModel`
    /// takes files; folder paths are fine), and for a classifier's adapter webtune's
    /// `webtune_classifier.json` when it has one. The adapter stays un-merged beside the shared
    /// base weights; `generate`/`logits`/`evaluate`/`classify` then run it as
    /// `"adapter:NAME"`. An adapter that does not fit the base (other modules or sizes) is
    /// `model.shape_mismatch`. Resolves to `{name, r, lora_alpha, use_rslora, scale, modules,
    /// base_model_name_or_path, classifier_labels, labels, pooling, attach_ms}` (`labels` and
    /// `pooling`: what a classifier's adapter answers with; null otherwise).
    #[wasm_bindgen(js_name = attachAdapter)]
    pub fn attach_adapter(&self, name: String, files: JsValue) -> js_sys::Promise {
        let base = self.current_model();
        let slot = self.adapters.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let base = base?;
            let run = || {
                if name.is_empty() {
                    return Err(Error::config("an adapter needs a name"));
                }
                let start = crate::platform::now_ms();
                let adapter = adapter_from_js(&files)?;
                let model = attach_peft_adapter(&base, &adapter)?;
                let mut value = adapter.summary();
                value["name"] = json!(name);
                // A classifier's: the labels and pooling it answers with once attached.
                value["labels"] = json!(adapter.head.as_ref().map(|_| &model.info.labels));
                value["pooling"] = json!(adapter.head.as_ref().and(model.info.pooling));
                value["attach_ms"] = json!(crate::platform::now_ms() - start);
                Ok::<_, Error>((model, value))
            };
            let (model, value) = run().map_err(|e| error_to_js(&e))?;
            slot.borrow_mut().insert(name, Rc::new(model));
            to_js(&value)
        })
    }

    /// Take an attached adapter off the loaded model; `false` when none had that name.
    #[wasm_bindgen(js_name = detachAdapter)]
    pub fn detach_adapter(&self, name: String) -> bool {
        self.adapters.borrow_mut().remove(&name).is_some()
    }

    /// Names of the adapters attached to the loaded model.
    #[wasm_bindgen(js_name = attachedAdapters)]
    pub fn attached_adapters(&self) -> Vec<String> {
        self.adapter_names()
    }

    /// The latest job's PEFT adapter, `{"adapter_config.json": Uint8Array,
    /// "adapter_model.safetensors": Uint8Array}` (a classifier's also
    /// `"webtune_classifier.json"`: its labels and pooling): what an adapter library keeps (without the
    /// merged weights `exportFiles` also writes). `model.not_loaded` before a job; a full
    /// fine-tuning job has no adapter (`config.invalid`).
    #[wasm_bindgen(js_name = adapterFiles)]
    pub fn adapter_files(&self) -> js_sys::Promise {
        let tuned = self.tuned.borrow().clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let run = async {
                let tuned = tuned.ok_or_else(no_tuned_model)?;
                let names: Vec<String> = tuned
                    .export
                    .names()
                    .into_iter()
                    .filter(|n| n.starts_with("adapter/"))
                    .collect();
                if names.is_empty() {
                    return Err(Error::config(
                        "the latest job fine-tuned every weight: it has no adapter (train with \
                         method \"lora\" or \"qlora\" to get one)",
                    ));
                }
                let out = js_sys::Object::new();
                for name in names {
                    let mut bytes = Vec::new();
                    tuned
                        .export
                        .write(&name, &mut |b| {
                            bytes.extend_from_slice(b);
                            Ok(())
                        })
                        .await?;
                    let file = name.trim_start_matches("adapter/");
                    let array = js_sys::Uint8Array::from(bytes.as_slice());
                    let _ = js_sys::Reflect::set(&out, &file.into(), &array);
                }
                Ok::<_, Error>(out)
            };
            run.await.map(Into::into).map_err(|e| error_to_js(&e))
        })
    }

    /// The loaded base and the model `which` names: `"base"` (default), `"tuned"` (the latest
    /// fine-tuned model) or `"adapter:NAME"` (an attached adapter).
    fn pick_model(
        &self,
        which: Option<&str>,
    ) -> Result<(Rc<LoadedModel>, Rc<LoadedModel>), JsValue> {
        let base = self.current_model()?;
        let chosen = match which {
            None | Some("base") => base.clone(),
            Some("tuned") => {
                let tuned = self.tuned.borrow().clone();
                tuned
                    .ok_or_else(|| error_to_js(&no_tuned_model()))?
                    .model
                    .clone()
            }
            Some(other) => match other.strip_prefix(ADAPTER_PREFIX) {
                Some(name) => self.adapters.borrow().get(name).cloned().ok_or_else(|| {
                    error_to_js(
                        &Error::new(
                            Code::ModelNotLoaded,
                            format!(
                                "no adapter named {name:?} is attached to the loaded model \
                                 (attached: {})",
                                self.adapter_names().join(", ")
                            ),
                        )
                        .with_details(json!({ "adapter": name })),
                    )
                })?,
                None => {
                    return Err(error_to_js(&Error::config(format!(
                        "model must be \"base\", \"tuned\" or \"adapter:NAME\", not {other:?}"
                    ))))
                }
            },
        };
        Ok((base, chosen))
    }

    fn adapter_names(&self) -> Vec<String> {
        self.adapters.borrow().keys().cloned().collect()
    }

    /// Score the base model (`which` "base", default) or the latest fine-tuned one ("tuned")
    /// on the held-out split of a dataset (`request`: a [`JobRequest`], as `finetune` takes it),
    /// without training: the split `finetune` makes with the same `config`, so the base model's
    /// numbers equal that job's `before`. Resolves to what [`evaluate_split`] gives.
    pub fn evaluate(&self, request: JsValue, which: Option<String>) -> js_sys::Promise {
        let pick = self.pick_model(which.as_deref());
        let files = self.files.borrow().clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let (base, model) = pick?;
            let model = &*model;
            let run = async {
                let request = JobRequest::from_js(&request)?;
                let config = job_config(request.config.clone())?;
                let dataset = request.dataset(None);
                evaluate_split(&base, model, files.as_deref(), dataset, &config).await
            };
            let value = run.await.map_err(|e| error_to_js(&e))?;
            to_js(&value)
        })
    }

    /// Classify `text` with an encoder's head: `which` is "base" (default; needs a head in the
    /// checkpoint) or "tuned" (the latest fine-tuned classifier). Resolves to
    /// `{labels: [string], probs: [number], label}` (probabilities in label order).
    pub fn classify(&self, text: String, which: Option<String>) -> js_sys::Promise {
        let pick = self.pick_model(which.as_deref());
        wasm_bindgen_futures::future_to_promise(async move {
            let (_, model) = pick?;
            let model = &*model;
            let run = async {
                let logits = model.classify(&text).await?;
                let lp = crate::eval::metrics::log_softmax(&logits);
                let probs: Vec<f64> = lp.iter().map(|v| v.exp()).collect();
                let labels = model.info.labels.clone().unwrap_or_default();
                let best = crate::eval::metrics::argmax(&logits);
                Ok::<_, Error>(json!({
                    "label": labels.get(best),
                    "labels": labels,
                    "probs": probs,
                }))
            };
            let value = run.await.map_err(|e| error_to_js(&e))?;
            to_js(&value)
        })
    }

    /// Cosine similarity of the mean-pooled embeddings of two texts (an encoder, "base" or
    /// "tuned"). Resolves to a number in [-1, 1].
    pub fn similarity(&self, a: String, b: String, which: Option<String>) -> js_sys::Promise {
        let pick = self.pick_model(which.as_deref());
        wasm_bindgen_futures::future_to_promise(async move {
            let (_, model) = pick?;
            let model = &*model;
            let run = async {
                if !model.is_encoder() {
                    return Err(Error::config(
                        "sentence similarity needs an encoder (BERT/MiniLM) model",
                    ));
                }
                let (x, y) = (model.embed(&a).await?, model.embed(&b).await?);
                Ok(cosine(&x, &y))
            };
            let value = run.await.map_err(|e| error_to_js(&e))?;
            Ok(JsValue::from_f64(value))
        })
    }

    /// Replay a committed reference training run (`tests/fixtures/reference/finetune_*.json`,
    /// recorded from PyTorch + PEFT by `tools/reference/finetune_reference.py`) on this session's
    /// backend, starting from the loaded model's weights: `reference` is that file's JSON text,
    /// `method` `"lora"` or `"full"`. Resolves to `{summary, reference_losses,
    /// reference_grad_norms}`: a self-check of the backend's numerics (the browser tests compare
    /// WebGPU with PyTorch through it). The loaded model is not changed.
    #[wasm_bindgen(js_name = replayReference)]
    pub fn replay_reference(&self, reference: String, method: String) -> js_sys::Promise {
        let base = self.model.borrow().clone();
        let backend = self.backend.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let run = async {
                let base = base.ok_or_else(|| {
                    Error::new(Code::ModelNotLoaded, "no model is loaded; load one first")
                })?;
                let value: serde_json::Value = serde_json::from_str(&reference).map_err(|e| {
                    Error::config(format!("the reference run is not valid JSON: {e}"))
                })?;
                let run = ReferenceRun::from_json(&value, &method)?;
                let (_, summary) = replay(&base.family, &backend, &run).await?;
                Ok::<_, Error>(json!({
                    "summary": summary,
                    "reference_losses": run.losses,
                    "reference_grad_norms": run.grad_norms,
                }))
            };
            let out = run.await.map_err(|e| error_to_js(&e))?;
            to_js(&out)
        })
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

fn cosine(x: &[f32], y: &[f32]) -> f64 {
    let dot: f64 = x.iter().zip(y).map(|(a, b)| *a as f64 * *b as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
    dot / (norm(x) * norm(y)).max(1e-12)
}

/// A dataset file from JS: `{name, bytes}` (bytes: a `Uint8Array`, `ArrayBuffer` or array).
struct NamedBytes {
    name: String,
    bytes: Vec<u8>,
}

impl NamedBytes {
    fn from_js(value: &JsValue, what: &str) -> Result<Self, Error> {
        let bad = |m: String| Error::config(m).with_details(json!({ "field": what }));
        let name = js_sys::Reflect::get(value, &"name".into())
            .ok()
            .and_then(|n| n.as_string())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad(format!("{what} needs the file's name")))?;
        let bytes = js_sys::Reflect::get(value, &"bytes".into()).unwrap_or(JsValue::UNDEFINED);
        let bytes = if bytes.is_instance_of::<js_sys::Uint8Array>()
            || bytes.is_instance_of::<js_sys::ArrayBuffer>()
        {
            js_sys::Uint8Array::new(&bytes).to_vec()
        } else {
            serde_wasm_bindgen::from_value(bytes)
                .map_err(|_| bad(format!("{what}'s bytes must be a Uint8Array")))?
        };
        Ok(Self { name, bytes })
    }
}

/// What `Session.finetune` and `Session.inspectDataset` take: `{data: {name, bytes},
/// validation?: {name, bytes}, config?, resume?: Uint8Array}` (`resume`: finetune only).
struct JobRequest {
    data: NamedBytes,
    validation: Option<NamedBytes>,
    /// Kept as JS: `init_adapter` holds files.
    config: JsValue,
    resume: Option<Vec<u8>>,
}

impl JobRequest {
    fn from_js(value: &JsValue) -> Result<Self, Error> {
        if !value.is_object() {
            return Err(Error::config(
                "the request must be {data: {name, bytes}, validation?, config?, resume?}",
            ));
        }
        let get = |key: &str| {
            js_sys::Reflect::get(value, &key.into())
                .ok()
                .filter(|v| !v.is_undefined() && !v.is_null())
        };
        let data =
            get("data").ok_or_else(|| Error::config("the request has no data: {name, bytes}"))?;
        let resume = match get("resume") {
            Some(r) if r.is_instance_of::<js_sys::Uint8Array>() => {
                Some(js_sys::Uint8Array::new(&r).to_vec())
            }
            Some(_) => {
                return Err(
                    Error::config("resume must be a checkpoint's bytes (Uint8Array)")
                        .with_details(json!({ "field": "resume" })),
                )
            }
            None => None,
        };
        Ok(Self {
            data: NamedBytes::from_js(&data, "data")?,
            validation: get("validation")
                .map(|v| NamedBytes::from_js(&v, "validation"))
                .transpose()?,
            config: get("config").unwrap_or(JsValue::UNDEFINED),
            resume,
        })
    }

    fn dataset<'a>(&'a self, progress: Option<OnDataProgress<'a>>) -> DatasetFiles<'a> {
        let file = |f: &'a NamedBytes| DatasetFile {
            name: &f.name,
            source: DataSource::Bytes(&f.bytes),
        };
        DatasetFiles {
            train: file(&self.data),
            validation: self.validation.as_ref().map(file),
            progress,
        }
    }
}

/// Sends `{type: "data_progress", file, bytes, bytes_done, records_done}` to a JS callback (wasm
/// runs the whole read synchronously; a worker's postMessage from the callback still reaches the
/// page meanwhile).
fn data_progress_to(callback: &js_sys::Function) -> impl Fn(DataProgress<'_>) + '_ {
    move |p| {
        if let Ok(value) = to_js(&json!({
            "type": "data_progress",
            "file": p.file,
            "bytes": p.bytes,
            "bytes_done": p.bytes_done,
            "records_done": p.records_done,
        })) {
            let _ = callback.call1(&JsValue::NULL, &value);
        }
    }
}

#[wasm_bindgen]
impl Session {
    /// A conversation (`[{role, content}]`, or that list as JSON text) formatted with the loaded
    /// model's chat template, as transformers' `apply_chat_template(tokenize=False)` gives it:
    /// `{text, ids, stop_tokens, source}`. Errors: `chat_template.invalid` (the template does not
    /// compile or refuses the conversation), `config.invalid` (no template, bad messages).
    #[wasm_bindgen(js_name = chatPrompt)]
    pub fn chat_prompt(
        &self,
        messages: JsValue,
        add_generation_prompt: Option<bool>,
    ) -> Result<JsValue, JsValue> {
        let model = self.current_model()?;
        let run = || -> Result<serde_json::Value, Error> {
            let value: serde_json::Value = serde_wasm_bindgen::from_value(messages)
                .map_err(|e| Error::config(format!("invalid conversation: {e}")))?;
            let messages = Prompt::chat_messages(&value)?;
            let add = add_generation_prompt.unwrap_or(true);
            let text = model.chat_prompt(&messages, add)?;
            let ids = model.chat_ids(&messages, add)?;
            Ok(json!({
                "text": text,
                "ids": ids,
                "stop_tokens": model.chat_stop_tokens(),
                "source": model.info.chat.chat_template_source,
            }))
        };
        let value = run().map_err(|e| error_to_js(&e))?;
        to_js(&value)
    }
}

/// A `finetune` callback's answer: `false` stops; a Promise pauses until it settles (to
/// `false`, or rejected: stop; anything else: resume); anything else goes on.
fn js_control(answer: JsValue) -> Control {
    use wasm_bindgen::JsCast;
    match answer.dyn_into::<js_sys::Promise>() {
        Ok(promise) => Control::Pause(Box::pin(async move {
            match wasm_bindgen_futures::JsFuture::from(promise).await {
                Ok(v) => v.as_bool() != Some(false),
                Err(_) => false,
            }
        })),
        Err(answer) => (answer.as_bool() != Some(false)).into(),
    }
}
