//! LoRA on the causal LMs webtune loads, built on burn's reparameterisation: every adapted
//! weight is a `Param` carrying burn's `LoraAdapter`, so `Param::val()` yields
//! `base + scale · (a @ b)`, the optimizer, autodiff and `materialize()` (the merge) are burn's.
//!
//! What burn's own `Lora` reparameterizer lacks and this file adds:
//! - targets are chosen by the *Hugging Face* module name (`c_attn`, `q_proj`, "all-linear"),
//!   as PEFT does, not by burn's field paths (GPT-2's two `c_proj` are `c_proj`/`mlp_proj` here);
//! - factors start from webtune's seeded generator with PEFT's distribution (A ~ kaiming-uniform
//!   with a = √5, i.e. U(±1/√in); B = 0) — burn draws A from the device's RNG, which differs per
//!   backend — or from given factors (to replay a PEFT run exactly);
//! - names and layouts map to PEFT's: burn keeps `a [in, r]`, `b [r, out]`; PEFT `lora_A [r, in]`,
//!   `lora_B [out, r]`;
//! - LoRA dropout: burn's adapter folds the factors into the weight, so there is no branch input
//!   to drop. While training with `lora_dropout` > 0 the models compute PEFT's split form
//!   `x W + scale · (dropout(x) a) b` instead (`models::layers::linear_forward`); without dropout,
//!   and always at inference, they use the folded weight.

use std::collections::BTreeMap;

use burn::module::{LoraAdapter, Module, Param, Reparameterizer};
use burn::prelude::*;
use burn::tensor::TensorData;
use serde_json::json;

use crate::error::{Code, Error, Result};
use crate::io::hf::transposed;
use crate::models::bert::Bert;
use crate::models::frozen::dequantize;
use crate::models::gpt2::Gpt2;
use crate::models::llama::Llama;
use crate::models::loaded::Family;
pub use crate::models::names::{hf_module, hf_tensor, matches_target, FamilyKind, HfTensor};
use crate::models::walk::{MapAt, Paths, VisitAt};
use crate::rng::Rng;

/// Resolve configured targets for a family: empty → family defaults, `all-linear` → every
/// projection. Unknown names are refused (PEFT refuses targets that match nothing, too).
pub fn resolve_targets(kind: FamilyKind, targets: &[String]) -> Result<Vec<String>> {
    if targets.is_empty() {
        return Ok(kind
            .default_targets()
            .iter()
            .map(|s| s.to_string())
            .collect());
    }
    if targets
        .iter()
        .any(|t| t == "all-linear" || t == "all_linear")
    {
        return Ok(kind
            .linear_modules()
            .iter()
            .map(|s| s.to_string())
            .collect());
    }
    for t in targets {
        let last = t.rsplit('.').next().unwrap_or(t);
        if !kind.linear_modules().contains(&last) {
            return Err(Error::config(format!(
                "LoRA target {t:?} is not a linear module of this model; choose from {} or \"all-linear\"",
                kind.linear_modules().join(", ")
            ))
            .with_details(json!({ "target": t, "available": kind.linear_modules() })));
        }
    }
    Ok(targets.to_vec())
}

/// How the LoRA factors start.
#[derive(Debug, Clone)]
pub enum LoraInit {
    /// PEFT's default (`init_lora_weights=True`) drawn from webtune's generator: identical on
    /// every backend for a seed.
    Seeded(u64),
    /// Given factors in PEFT's layout, by Hugging Face module name: `(lora_A [r, in] row-major,
    /// lora_B [out, r] row-major)`. Every adapted module must be present.
    Given(BTreeMap<String, (Vec<f32>, Vec<f32>)>),
}

/// What to adapt and how.
#[derive(Debug, Clone)]
pub struct LoraSpec {
    pub rank: usize,
    pub alpha: f64,
    /// Resolved target names (see [`resolve_targets`]).
    pub targets: Vec<String>,
    pub init: LoraInit,
    /// Dropout on the branch's input while training (applied by the models' forward, see
    /// `models::layers::linear_forward`); recorded in the exported adapter_config.json.
    pub dropout: f64,
}

impl LoraSpec {
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

/// burn reparameterizer building `LoraAdapter`s from a [`LoraSpec`].
struct Attach<'a> {
    kind: FamilyKind,
    spec: &'a LoraSpec,
    state: &'a mut AttachState,
}

/// What attaching found out; kept outside the reparameterizer, which burn consumes.
struct AttachState {
    rng: Rng,
    attached: Vec<String>,
    error: Option<Error>,
}

impl Reparameterizer for Attach<'_> {
    type Reparam = LoraAdapter;

    fn reparameterize<const D: usize>(
        &mut self,
        path: &str,
        param: Param<Tensor<D>>,
    ) -> (Param<Tensor<D>>, Option<LoraAdapter>) {
        // Every base parameter is frozen: only the factors train (PEFT's bias="none").
        let base = param.set_require_grad(false);
        if D != 2 || self.state.error.is_some() {
            return (base, None);
        }
        let Some(module) = hf_module(self.kind, path) else {
            return (base, None);
        };
        if !self.spec.targets.iter().any(|t| matches_target(&module, t)) {
            return (base, None);
        }
        let dims = base.lazy_shape().to_vec();
        let (d_in, d_out, r) = (dims[0], dims[1], self.spec.rank);
        let (a, b) = match &self.spec.init {
            LoraInit::Seeded(_) => {
                let bound = 1.0 / (d_in as f64).sqrt();
                let a: Vec<f32> = (0..r * d_in)
                    .map(|_| ((self.state.rng.uniform() * 2.0 - 1.0) * bound) as f32)
                    .collect();
                (a, vec![0.0; d_out * r])
            }
            LoraInit::Given(map) => match map.get(&module) {
                Some((a, b)) if a.len() == r * d_in && b.len() == d_out * r => {
                    (a.clone(), b.clone())
                }
                Some((a, b)) => {
                    self.state.error = Some(
                        Error::new(
                            Code::ShapeMismatch,
                            format!("given LoRA factors for {module} have the wrong size"),
                        )
                        .with_details(json!({
                            "module": module, "lora_A": a.len(), "lora_B": b.len(),
                            "expected_A": [r, d_in], "expected_B": [d_out, r],
                        })),
                    );
                    return (base, None);
                }
                None => {
                    self.state.error = Some(Error::config(format!(
                        "no initial LoRA factors were given for {module}"
                    )));
                    return (base, None);
                }
            },
        };
        let device = base.lazy_device();
        // PEFT's A [r, in] is burn's a [in, r]; PEFT's B [out, r] is burn's b [r, out]
        // (transposed in memory, not as views the CPU backend would copy on every use).
        let a =
            Tensor::<2>::from_data(TensorData::new(transposed(&a, r, d_in), [d_in, r]), &device);
        let b = Tensor::<2>::from_data(
            TensorData::new(transposed(&b, d_out, r), [r, d_out]),
            &device,
        );
        self.state.attached.push(module);
        let adapter = LoraAdapter {
            a: Param::from_tensor(a),
            b: Param::from_tensor(b),
            scale: self.spec.scale(),
        };
        (base, Some(adapter))
    }
}

fn attach<M: Module>(model: M, kind: FamilyKind, spec: &LoraSpec) -> Result<(M, Vec<String>)> {
    let seed = match spec.init {
        LoraInit::Seeded(seed) => seed,
        LoraInit::Given(_) => 0,
    };
    let mut r = AttachState {
        rng: Rng::new(seed ^ 0x104A_0000),
        attached: Vec::new(),
        error: None,
    };
    let model = model.apply_reparameterization(Attach {
        kind,
        spec,
        state: &mut r,
    });
    if let Some(e) = r.error {
        return Err(e);
    }
    if r.attached.is_empty() {
        return Err(Error::config(format!(
            "the LoRA targets {:?} match no module of this model",
            spec.targets
        )));
    }
    Ok((model, r.attached))
}

/// Attach LoRA adapters to a model (every base parameter is frozen). Returns the adapted model
/// and the Hugging Face names of the adapted modules, in model order.
pub fn apply_lora(family: Family, spec: &LoraSpec) -> Result<(Family, Vec<String>)> {
    if spec.rank == 0 {
        return Err(Error::config("LoRA rank must be at least 1"));
    }
    let kind = FamilyKind::of(&family);
    Ok(match family {
        Family::Gpt2(m) => {
            let (m, names) = attach::<Gpt2>(m, kind, spec)?;
            (Family::Gpt2(m), names)
        }
        Family::Llama(m) => {
            let (m, names) = attach::<Llama>(m, kind, spec)?;
            (Family::Llama(m), names)
        }
        Family::Bert(m) => {
            let (m, names) = attach::<Bert>(m, kind, spec)?;
            (Family::Bert(m), names)
        }
    })
}

/// Fold the adapters into the base weights (`W + scale · a @ b`) and drop them: the model is a
/// plain model again, as fast as before LoRA. A QLoRA base comes back dequantized (f32).
pub fn merge(family: Family) -> Family {
    // Dequantized first, by `models::frozen`: burn's merge would dequantize a packed 4-bit base
    // itself, and only `frozen` reads those.
    match super::qlora::dequantize_all(family) {
        Family::Gpt2(m) => Family::Gpt2(m.materialize()),
        Family::Llama(m) => Family::Llama(m.materialize()),
        Family::Bert(m) => Family::Bert(m.materialize()),
    }
}

/// One parameter's value as read through a visitor: its burn path, shape and a flat view.
pub(crate) struct NamedTensor {
    pub path: String,
    pub shape: Vec<usize>,
    pub value: Tensor<1>,
}

#[derive(Default)]
struct Collect {
    out: Vec<NamedTensor>,
    /// Only the LoRA factors (`….lora.a|b`), not the bases.
    factors_only: bool,
}

impl VisitAt for Collect {
    fn visit_at<const D: usize>(&mut self, path: &str, param: &Param<Tensor<D>>) {
        // Inside a reparameterized parameter the visitor sees the base, then the factors.
        if self.factors_only && !(path.ends_with(".lora.a") || path.ends_with(".lora.b")) {
            return;
        }
        // A QLoRA base is read as the f32 weights it stands for.
        let value = dequantize(param.base());
        let shape = value.dims().to_vec();
        let n: usize = shape.iter().product();
        self.out.push(NamedTensor {
            path: path.to_string(),
            shape,
            value: value.reshape([n]),
        });
    }
}

/// Every float parameter of a model (LoRA bases and factors included) with its burn path.
pub(crate) fn named_tensors(family: &Family) -> Vec<NamedTensor> {
    collect(family, false)
}

fn collect(family: &Family, factors_only: bool) -> Vec<NamedTensor> {
    let mut c = Paths::new(Collect {
        factors_only,
        ..Collect::default()
    });
    match family {
        Family::Gpt2(m) => m.visit(&mut c),
        Family::Llama(m) => m.visit(&mut c),
        Family::Bert(m) => m.visit(&mut c),
    }
    c.inner.out
}

pub(crate) async fn read_f32(t: Tensor<1>) -> Result<Vec<f32>> {
    t.into_data_async()
        .await
        .map_err(|e| {
            Error::new(
                Code::DeviceLost,
                format!("reading weights back from the device failed: {e:?}"),
            )
        })?
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| Error::new(Code::Internal, format!("{e:?}")))
}

/// A trained adapter in PEFT's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraFactors {
    /// Hugging Face module name, e.g. `model.layers.0.self_attn.q_proj`.
    pub module: String,
    pub rank: usize,
    pub d_in: usize,
    pub d_out: usize,
    /// `lora_A [r, in]`, row-major.
    pub a: Vec<f32>,
    /// `lora_B [out, r]`, row-major.
    pub b: Vec<f32>,
}

pub(crate) fn transpose_2d(data: &[f32], shape: &[usize]) -> Vec<f32> {
    transposed(data, shape[0], shape[1])
}

/// Read the adapters of a LoRA model back, in PEFT's layout and model order.
pub async fn lora_factors(family: &Family) -> Result<Vec<LoraFactors>> {
    let kind = FamilyKind::of(family);
    let mut a_of: BTreeMap<String, (Vec<usize>, Tensor<1>)> = BTreeMap::new();
    let mut order = Vec::new();
    let mut b_of: BTreeMap<String, (Vec<usize>, Tensor<1>)> = BTreeMap::new();
    for t in collect(family, true) {
        if let Some(base) = t.path.strip_suffix(".lora.a") {
            let module = hf_module(kind, base).unwrap_or_else(|| base.to_string());
            order.push(module.clone());
            a_of.insert(module, (t.shape, t.value));
        } else if let Some(base) = t.path.strip_suffix(".lora.b") {
            let module = hf_module(kind, base).unwrap_or_else(|| base.to_string());
            b_of.insert(module, (t.shape, t.value));
        }
    }
    let mut out = Vec::with_capacity(order.len());
    for module in order {
        let (a_shape, a) = a_of.remove(&module).expect("collected above");
        let (b_shape, b) = b_of.remove(&module).ok_or_else(|| {
            Error::new(
                Code::Internal,
                format!("LoRA factor b of {module} is missing"),
            )
        })?;
        let (d_in, rank, d_out) = (a_shape[0], a_shape[1], b_shape[1]);
        // burn a [in, r] → PEFT A [r, in]; burn b [r, out] → PEFT B [out, r].
        let a = transposed(&read_f32(a).await?, d_in, rank);
        let b = transposed(&read_f32(b).await?, rank, d_out);
        out.push(LoraFactors {
            module,
            rank,
            d_in,
            d_out,
            a,
            b,
        });
    }
    Ok(out)
}

/// Freeze every parameter whose burn path satisfies `pred` (full fine-tuning's frozen parts).
pub(crate) struct FreezeWhere<F: Fn(&str) -> bool>(pub F);

impl<F: Fn(&str) -> bool> MapAt for FreezeWhere<F> {
    fn map_at<const D: usize>(&mut self, path: &str, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if (self.0)(path) {
            param.set_require_grad(false)
        } else {
            param
        }
    }
}

/// Every float parameter as stored (LoRA bases unmerged, a quantized one dequantized; factors
/// under `<path>.lora.a|b`), by burn path: `(path, shape, data)`. For checks and debugging.
pub async fn parameters(family: &Family) -> Result<Vec<(String, Vec<usize>, Vec<f32>)>> {
    let mut out = Vec::new();
    for t in named_tensors(family) {
        out.push((t.path, t.shape, read_f32(t.value).await?));
    }
    Ok(out)
}
