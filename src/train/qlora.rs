//! QLoRA: LoRA over a base whose frozen linear projection weights are kept quantized in memory.
//!
//! Before the adapters are attached, every linear projection weight of the base (the modules
//! PEFT's "all-linear" names — not only the LoRA targets) is quantized with burn's symmetric
//! block quantization: 8 or 4 bits per value, one f32 scale per block of values along the
//! output dimension (kept in f16 for a packed 4-bit block on the CPU, see below). Embeddings,
//! the LM head, norms and biases stay f32; so do the LoRA factors, the only trainable
//! parameters.
//!
//! A quantized projection is never folded with its factors: the layer computes
//! `x·W + scale·(x·a)·b` with `x·W` through [`crate::models::frozen`], which makes W dense only
//! inside its own product, in the forward pass and again in the backward, and keeps nothing
//! dense for autodiff.
//!
//! burn's CPU backend (`flex`) keeps quantized values as one `i8` each whatever the bit width;
//! [`crate::models::frozen::compact`] packs 4-bit ones two to a byte there (WebGPU packs them
//! itself), so q4 takes about half of q8's memory on every backend.
//!
//! Merging (export, `TrainableModel::merged`) folds the adapters into the dequantized base and
//! dequantizes every other quantized weight: a merged model is f32, as without QLoRA.

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::quantization::{quantizable, QuantMode, QuantScheme, QuantValue, ScaleDtype};
use burn::tensor::TensorData;
use serde::{Deserialize, Serialize};
use serde_json::json;

use std::sync::{Arc, Mutex};

use crate::error::{Code, Error, Result};
use crate::io::hf::{LinearHook, ModelFiles};
use crate::models::frozen::{compact, dequantize, is_quantized};
use crate::models::loaded::{CompactWeights, Family, LoadedModel, ModelInfo};
use crate::models::names::{hf_module, matches_target, FamilyKind};
use crate::models::walk::{MapAt, Paths};
use crate::train::finetune::{FinetuneConfig, Method};

/// How the frozen base weights are stored while training with LoRA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BaseQuant {
    /// 8-bit symmetric integers (−127..127) with a scale per block.
    Q8,
    /// 4-bit symmetric integers (−7..7) with a scale per block.
    Q4,
}

/// Values per scale unless configured otherwise (GGUF's Q8_0 / Q4_0 use 32 too).
pub const DEFAULT_BLOCK_SIZE: usize = 32;
/// A weight whose output dimension has no divisor ≥ this up to the block size stays f32: a
/// smaller block would spend more on scales than it saves.
const MIN_BLOCK: usize = 8;

impl BaseQuant {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "q8" | "8" => Ok(Self::Q8),
            "q4" | "4" => Ok(Self::Q4),
            other => Err(Error::config(format!(
                "unknown base quantization {other:?}: choose \"q8\" or \"q4\""
            ))
            .with_details(json!({ "field": "quantize_base" }))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Q8 => "q8",
            Self::Q4 => "q4",
        }
    }

    pub fn bits(self) -> u32 {
        match self {
            Self::Q8 => 8,
            Self::Q4 => 4,
        }
    }

    fn value(self) -> QuantValue {
        match self {
            Self::Q8 => QuantValue::Q8S,
            Self::Q4 => QuantValue::Q4S,
        }
    }

    /// burn's scheme for blocks of `block` values (along the innermost dimension) on `device`:
    /// the device's storage (packed on WebGPU), symmetric values, f32 scales.
    pub fn scheme(self, device: &Device, block: usize) -> QuantScheme {
        device
            .settings()
            .quantization
            .scheme
            .with_value(self.value())
            .with_mode(QuantMode::Symmetric)
            .per_block([block as u8], ScaleDtype::F32)
    }
}

/// What quantizing a base did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QuantReport {
    pub bits: u32,
    pub block_size: usize,
    /// Linear weights now quantized, and their values.
    pub tensors: usize,
    pub values: u64,
    /// Linear weights left in f32 (no usable block divides their output dimension).
    pub kept_f32: Vec<String>,
    /// Bytes those quantized weights took in f32, and take now on this backend (values as
    /// stored, packed to their bits — except a 4-bit block of odd length on the CPU, a byte a
    /// value — plus the scales).
    pub f32_bytes: u64,
    pub quantized_bytes: u64,
}

/// The largest divisor of `n` that is at most `block`.
fn block_for(n: usize, block: usize) -> usize {
    (1..=block.min(n)).rev().find(|b| n % b == 0).unwrap_or(1)
}

/// The per-weight decisions both ways of quantizing a base share (after loading,
/// [`quantize_base`]; while loading, [`load_quantized`]): the block, whether the backend handles
/// it (probed once per block size), and the report.
struct Quantizer {
    quant: BaseQuant,
    block: usize,
    probed: Vec<usize>,
    report: QuantReport,
}

impl Quantizer {
    fn new(quant: BaseQuant, block_size: usize) -> Result<Self> {
        if !(1..=255).contains(&block_size) {
            return Err(Error::config(format!(
                "quantize_block_size must be between 1 and 255, got {block_size}"
            ))
            .with_details(json!({ "field": "quantize_block_size" })));
        }
        Ok(Self {
            quant,
            block: block_size,
            probed: Vec::new(),
            report: QuantReport {
                bits: quant.bits(),
                block_size,
                ..QuantReport::default()
            },
        })
    }

    /// The scheme to store the `[d_in, d_out]` weight `name` in, counted in the report; `None`
    /// (recorded as kept in f32) when no usable block divides its output dimension.
    fn scheme(
        &mut self,
        name: &str,
        d_in: usize,
        d_out: usize,
        device: &Device,
    ) -> Result<Option<QuantScheme>> {
        let block = block_for(d_out, self.block);
        if block < MIN_BLOCK.min(self.block) {
            self.report.kept_f32.push(name.to_string());
            return Ok(None);
        }
        let scheme = self.quant.scheme(device, block);
        if !self.probed.contains(&block) {
            probe(self.quant, device, &scheme, block)?;
            self.probed.push(block);
        }
        self.report
            .add(d_in, d_out, block, self.quant.bits(), device);
        Ok(Some(scheme))
    }
}

struct Quantize {
    kind: FamilyKind,
    q: Quantizer,
    error: Option<Error>,
}

/// Whether this backend quantizes and dequantizes `scheme` correctly, tried on a small tensor
/// (burn's `supports_dtype` answers for arithmetic, which no backend offers on quantized
/// tensors; the CPU backend stores them only).
fn probe(quant: BaseQuant, device: &Device, scheme: &QuantScheme, block: usize) -> Result<()> {
    let refuse = |why: String| {
        Error::new(
            Code::DeviceUnavailable,
            format!(
                "this backend cannot keep weights {}-bit quantized in blocks of {block} ({why}); \
                 train without quantize_base",
                quant.bits()
            ),
        )
        .with_details(json!({ "field": "quantize_base", "block_size": block }))
    };
    if !quantizable(scheme) {
        return Err(refuse("burn cannot quantize this scheme".into()));
    }
    // The round trip below reads back synchronously, which only the CPU backend can do (WebGPU
    // reads back asynchronously, and a synchronous read panics in the browser). On WebGPU the
    // browser test comparing a QLoRA run with the CPU's (finetune.test.mjs e2) stands for it.
    if device.clone().without_autodiff() != Device::flex() {
        return Ok(());
    }
    let values: Vec<f32> = (0..2 * block)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0)
        .collect();
    let x = Tensor::<2>::from_data(TensorData::new(values.clone(), [2, block]), device);
    let back = x
        .quantize_dynamic(scheme)
        .dequantize()
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| refuse(format!("{e:?}")))?;
    // Symmetric rounding is off by at most half a step of the block's largest value (1).
    let (lo, hi) = quant.value().range();
    let step = 2.0 / (hi - lo);
    let tolerance = step * 0.5 + 1e-6;
    let off = |(a, b): (&f32, &f32)| {
        let d = (a - b).abs();
        d.is_nan() || d > tolerance
    };
    if back.len() != values.len() || values.iter().zip(&back).any(off) {
        return Err(refuse(format!(
            "a round trip is off by more than half a step ({tolerance})"
        )));
    }
    Ok(())
}

impl QuantReport {
    /// Count a `[d_in, d_out]` weight quantized in blocks of `block` on `device`.
    fn add(&mut self, d_in: usize, d_out: usize, block: usize, bits: u32, device: &Device) {
        let n = (d_in * d_out) as u64;
        let bytes = if device.clone().without_autodiff() != Device::flex() {
            (n * bits as u64).div_ceil(8) + 4 * (n / block as u64)
        } else {
            cpu_quantized_bytes(n, block, bits)
        };
        self.tensors += 1;
        self.values += n;
        self.f32_bytes += 4 * n;
        self.quantized_bytes += bytes;
    }
}

impl MapAt for Quantize {
    fn map_at<const D: usize>(&mut self, path: &str, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        // The projections PEFT's "all-linear" names: not a classifier head, which trains.
        let linear = hf_module(self.kind, path).is_some_and(|m| {
            self.kind
                .linear_modules()
                .iter()
                .any(|t| matches_target(&m, t))
        });
        if D != 2 || !linear || self.error.is_some() {
            return param;
        }
        let shape = param.lazy_shape();
        let (d_in, d_out) = (shape[0], shape[1]);
        let device = param.lazy_device();
        if is_quantized(&param.base()) {
            // Quantized as it was loaded (`load_quantized`), by the same rules.
            let block = block_for(d_out, self.q.block);
            let bits = self.q.quant.bits();
            self.q.report.add(d_in, d_out, block, bits, &device);
            return param;
        }
        match self.q.scheme(path, d_in, d_out, &device) {
            Ok(Some(scheme)) => param.map(|w| compact(w.quantize_dynamic(&scheme))),
            Ok(None) => param,
            Err(e) => {
                self.error = Some(e);
                param
            }
        }
    }
}

/// Dequantize every quantized float parameter (before a merge: the merged model is f32).
struct Dequantize;

impl ModuleMapper for Dequantize {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if is_quantized(&param.base()) {
            param.map(dequantize)
        } else {
            param
        }
    }
}

/// Quantize every linear projection weight of `family` (before LoRA is attached). `block_size`
/// values share a scale; a weight whose output dimension it does not divide uses the largest
/// divisor below it (at least 8, else the weight stays f32).
pub fn quantize_base(
    family: Family,
    quant: BaseQuant,
    block_size: usize,
) -> Result<(Family, QuantReport)> {
    let q = Quantize {
        kind: FamilyKind::of(&family),
        q: Quantizer::new(quant, block_size)?,
        error: None,
    };
    let mut q = Paths::new(q);
    let family = match family {
        Family::Gpt2(m) => Family::Gpt2(m.map(&mut q)),
        Family::Llama(m) => Family::Llama(m.map(&mut q)),
        Family::Bert(m) => Family::Bert(m.map(&mut q)),
    };
    if let Some(e) = q.inner.error {
        return Err(e);
    }
    let report = q.inner.q.report;
    if report.tensors == 0 {
        return Err(Error::config(
            "quantize_base found no linear weight it could quantize in this model",
        )
        .with_details(json!({ "field": "quantize_base", "kept_f32": report.kept_f32 })));
    }
    Ok((family, report))
}

/// Dequantize every quantized weight, keeping any adapter attached to it.
pub fn dequantize_all(family: Family) -> Family {
    match family {
        Family::Gpt2(m) => Family::Gpt2(m.map(&mut Dequantize)),
        Family::Llama(m) => Family::Llama(m.map(&mut Dequantize)),
        Family::Bert(m) => Family::Bert(m.map(&mut Dequantize)),
    }
}

/// Bytes `values` quantized values take on the CPU backend: a byte each (burn-flex's storage)
/// plus an f32 scale per `block` of them, or at 4 bits in blocks of even length half a byte
/// each plus an f16 scale (`models::frozen::compact`).
pub fn cpu_quantized_bytes(values: u64, block: usize, bits: u32) -> u64 {
    let blocks = values.div_ceil(block.max(1) as u64);
    if bits == 4 && block % 2 == 0 {
        values.div_ceil(2) + 2 * blocks
    } else {
        values + 4 * blocks
    }
}

/// Whether [`load_quantized`] quantizes the weight stored as `name` (a Hugging Face name): the
/// linear projections of every family (PEFT's "all-linear"; not a head).
pub fn quantized_as_loaded(name: &str) -> bool {
    let Some(module) = name.strip_suffix(".weight") else {
        return false;
    };
    let module = module.rsplit('.').next().unwrap_or_default();
    [FamilyKind::Gpt2, FamilyKind::Llama, FamilyKind::Bert]
        .iter()
        .any(|k| k.linear_modules().contains(&module))
}

/// Refuses a job that does not fit a base loaded quantized: full fine-tuning trains every
/// weight, and a base loaded in one precision cannot train in another.
pub fn check_base_precision(base: &ModelInfo, config: &FinetuneConfig) -> Result<()> {
    let Some(compact) = base.compact else {
        return Ok(());
    };
    let loaded = compact.quant.as_str();
    if config.method == Method::Full {
        return Err(Error::config(format!(
            "the base was loaded with its projections in {} bits for QLoRA; full fine-tuning \
             trains every weight and needs it in f32: load the model again in f32, or use LoRA",
            compact.quant.bits()
        ))
        .with_details(json!({ "field": "method", "base": loaded })));
    }
    match config.quantize_base {
        Some(q) if q != compact.quant => Err(Error::config(format!(
            "the base was loaded in {loaded}, so it trains in {loaded}, not {}: ask for \
             quantize_base \"{loaded}\", or load the model again",
            q.as_str()
        ))
        .with_details(json!({ "field": "quantize_base", "base": loaded }))),
        _ => Ok(()),
    }
}

/// Load a model with its linear projections quantized as they are read (the same weights, scheme
/// and blocks [`quantize_base`] would give), so that the process never holds them in f32: the
/// peak while loading is the compact model plus the tensor being read (plus any weight file
/// given in memory rather than behind a handle), and QLoRA trains over the loaded
/// weights themselves instead of a quantized copy beside an f32 base. GPT-2's `Conv1D`,
/// Llama-family and BERT projections alike.
pub fn load_quantized(
    files: ModelFiles,
    device: &Device,
    quant: BaseQuant,
    block_size: usize,
) -> Result<(LoadedModel, QuantReport)> {
    let state = Arc::new(Mutex::new(Quantizer::new(quant, block_size)?));
    let hook_state = state.clone();
    let hook = LinearHook(Arc::new(
        move |name: &str, w: Tensor<2>| -> Result<Tensor<2>> {
            if !quantized_as_loaded(name) {
                return Ok(w);
            }
            let [d_in, d_out] = w.dims();
            let scheme = hook_state
                .lock()
                .map_err(|_| Error::new(Code::Internal, "a poisoned lock"))?
                .scheme(name, d_in, d_out, &w.device())?;
            Ok(match scheme {
                Some(scheme) => compact(w.quantize_dynamic(&scheme)),
                None => w,
            })
        },
    ));
    let mut model = LoadedModel::load_with(files, device, Some(hook))?;
    let report = state
        .lock()
        .map_err(|_| Error::new(Code::Internal, "a poisoned lock"))?
        .report
        .clone();
    if report.tensors > 0 {
        model.info.compact = Some(CompactWeights {
            quant,
            values: report.values,
            bytes: report.quantized_bytes,
        });
    }
    Ok((model, report))
}
