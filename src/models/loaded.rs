//! A model ready to use: architecture, config, weights on a device, tokenizer. Built from the
//! same `ModelFiles` whether they came from a folder, the browser's file picker or a URL.

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use serde::Serialize;
use serde_json::{json, Value};

use super::bert::{Bert, BertConfig, Pooling};
use super::gpt2::{Gpt2, Gpt2Config};
use super::llama::{Llama, LlamaConfig};
use super::{CausalLm, Dims, KvCache};
use crate::data::chat::{ChatTemplate, Message};
use crate::error::{Code, Error, Result};
use crate::io::hf::{architecture, LinearHook, ModelFiles};
use crate::io::tokenizer::Tokenizer;

// One per loaded model, and the weights themselves live on the device: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Family {
    Gpt2(Gpt2),
    Llama(Llama),
    /// An encoder: no next-token prediction (see [`CausalLm::check_causal`]).
    Bert(Bert),
}

impl Family {
    /// The same weights made trainable on `device`, the inference device's autodiff twin (with
    /// its gradient-checkpointing strategy): burn's tensors are reference-counted and an
    /// autodiff tensor wraps its inner one, so the parameters are shared with `self`, not
    /// copied, and training holds no second copy of the base. Every parameter requires grad,
    /// as when loading onto the autodiff device; LoRA and freezing then choose what trains.
    pub fn trainable_on(&self, device: &Device) -> Family {
        struct Trainable<'a>(&'a Device);
        impl ModuleMapper for Trainable<'_> {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                param.map(|t| {
                    let t = t.to_device(&self.0.clone().inner()).autodiff();
                    match self.0.gradient_checkpointing_strategy() {
                        Some(s) => t.with_gradient_checkpointing_strategy(s),
                        None => t,
                    }
                    .require_grad()
                })
            }
        }
        let mut to = Trainable(device);
        match self {
            Family::Gpt2(m) => Family::Gpt2(m.clone().map(&mut to)),
            Family::Llama(m) => Family::Llama(m.clone().map(&mut to)),
            Family::Bert(m) => Family::Bert(m.clone().map(&mut to)),
        }
    }

    /// The same weights without autodiff (nothing recorded when run, no gradient kept).
    pub fn valid(&self) -> Family {
        match self {
            Family::Gpt2(m) => Family::Gpt2(m.valid()),
            Family::Llama(m) => Family::Llama(m.valid()),
            Family::Bert(m) => Family::Bert(m.valid()),
        }
    }
}

impl CausalLm for Family {
    fn hidden(&self, tokens: Tensor<2, Int>, cache: Option<&mut KvCache>) -> Tensor<3> {
        match self {
            Family::Gpt2(m) => m.hidden(tokens, cache),
            Family::Llama(m) => m.hidden(tokens, cache),
            // Unreachable through webtune's entry points, which call `check_causal` first.
            Family::Bert(m) => m.forward(tokens, None, None),
        }
    }
    fn head(&self) -> Tensor<2> {
        match self {
            Family::Gpt2(m) => m.head(),
            Family::Llama(m) => m.head(),
            Family::Bert(m) => m.word_embeddings(),
        }
    }
    fn max_positions(&self) -> usize {
        match self {
            Family::Gpt2(m) => m.max_positions(),
            Family::Llama(m) => m.max_positions(),
            Family::Bert(m) => m.max_positions(),
        }
    }
    fn check_causal(&self) -> Result<()> {
        match self {
            Family::Bert(_) => Err(Error::config(
                "this is an encoder (BERT) model: it embeds and classifies text but does not \
                 generate it or train as a language model; use a causal LM (GPT-2, Llama) instead",
            )
            .with_details(json!({ "kind": "encoder" }))),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub architecture: String,
    /// Sizes and per-token work, as the family computes them.
    #[serde(flatten)]
    pub dims: Dims,
    /// Dtypes of the stored weights, e.g. `["F32"]`.
    pub dtype: Vec<&'static str>,
    /// Bytes of the weight files the model was loaded from.
    pub stored_bytes: u64,
    /// What loading held besides the model: weight files read whole, or the largest tensor of
    /// files read tensor by tensor.
    pub load_bytes: u64,
    /// The linear projections quantized as they were loaded (QLoRA), when they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compact: Option<CompactWeights>,
    pub has_tokenizer: bool,
    /// `causal_lm` or `encoder`.
    pub kind: &'static str,
    /// Class names of a classification head in the checkpoint, in id order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// How the classification head pools the encoder's output (with `labels`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pooling: Option<Pooling>,
    #[serde(flatten)]
    pub chat: ChatInfo,
}

/// Weights kept quantized since loading: how, how many f32 values they stand for, and the bytes
/// they take (values and scales).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CompactWeights {
    pub quant: crate::train::qlora::BaseQuant,
    pub values: u64,
    pub bytes: u64,
}

/// Whether the model ships a chat template (so the page offers chat mode), where it came from
/// (`chat_template.jinja`, `tokenizer_config.json`, `gguf`…), or why it cannot be used.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChatInfo {
    pub has_chat_template: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_template_source: Option<String>,
    /// The `chat_template.invalid` message of a template that does not compile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_template_error: Option<String>,
}

#[derive(Debug)]
pub struct LoadedModel {
    pub family: Family,
    pub info: ModelInfo,
    pub tokenizer: Option<Tokenizer>,
    pub eos_token_id: Option<u32>,
    pub device: Device,
    /// The chat template the model ships (see [`ChatTemplate::from_model_files`]).
    pub chat_template: Option<ChatTemplate>,
}

impl LoadedModel {
    /// This model with other weights of the same shape (a fine-tuned copy, LoRA adapters
    /// attached or not): config, tokenizer and chat template are this model's.
    pub fn with_family(&self, family: Family) -> LoadedModel {
        LoadedModel {
            family,
            info: self.info.clone(),
            tokenizer: self.tokenizer.clone(),
            eos_token_id: self.eos_token_id,
            device: self.device.clone(),
            chat_template: self.chat_template.clone(),
        }
    }

    pub fn load(files: ModelFiles, device: &Device) -> Result<Self> {
        Self::load_with(files, device, None)
    }

    /// [`load`](Self::load), passing each linear projection weight (GPT-2's `Conv1D` ones too)
    /// through `hook` as it is read.
    pub fn load_with(files: ModelFiles, device: &Device, hook: Option<LinearHook>) -> Result<Self> {
        // Read before the weights consume the files. A template that does not compile leaves
        // the model usable without chat mode; the error is kept in the info.
        let chat = ChatTemplate::from_model_files(&files);
        let mut model = Self::load_weights(files, device, hook)?;
        match chat {
            Ok(Some(t)) => {
                model.info.chat = ChatInfo {
                    has_chat_template: true,
                    chat_template_source: Some(t.origin().to_string()),
                    chat_template_error: None,
                };
                model.chat_template = Some(t);
            }
            Ok(None) => {}
            Err(e) => model.info.chat.chat_template_error = Some(e.message),
        }
        Ok(model)
    }

    fn load_weights(
        mut files: ModelFiles,
        device: &Device,
        hook: Option<LinearHook>,
    ) -> Result<Self> {
        let config = files.config()?;
        let arch = architecture(&config)?;
        let tokenizer = files.tokenizer()?;
        let eos_from_generation = files
            .get("generation_config.json")
            .and_then(|b| serde_json::from_slice::<Value>(b).ok())
            .and_then(|g| first_id(g.get("eos_token_id")));
        let mut weights = files.take_weights()?;
        if let Some(hook) = hook {
            weights.set_linear_hook(hook);
        }
        let dtype = weights.dtypes();
        let stored_bytes = weights.stored_bytes();
        let load_bytes = weights.load_bytes();
        let mut head = None;
        let (dims, eos_token_id, family) = match arch.as_str() {
            "gpt2" => {
                let cfg = Gpt2Config::from_json(&config)?;
                let model = Gpt2::load(&cfg, &weights, device)?;
                (model.dims(&cfg), cfg.eos_token_id, Family::Gpt2(model))
            }
            "llama" | "qwen2" | "mistral" => {
                let cfg = LlamaConfig::from_json(&config)?;
                let model = Llama::load(&cfg, &weights, device)?;
                (model.dims(&cfg), cfg.eos_token_id, Family::Llama(model))
            }
            "bert" => {
                let cfg = BertConfig::from_json(&config)?;
                let model = Bert::load(&cfg, &weights, device)?;
                head = model.head_info(&cfg);
                (model.dims(&cfg), None, Family::Bert(model))
            }
            other => {
                return Err(Error::new(
                    Code::UnsupportedArchitecture,
                    format!("{other} is recognised but cannot be loaded yet"),
                ))
            }
        };
        let encoder = matches!(family, Family::Bert(_));
        let (labels, pooling) = head.unzip();
        let info = ModelInfo {
            architecture: arch,
            dims,
            dtype,
            stored_bytes,
            load_bytes,
            compact: None,
            has_tokenizer: tokenizer.is_some(),
            chat: ChatInfo::default(),
            kind: if encoder { "encoder" } else { "causal_lm" },
            labels,
            pooling,
        };
        Ok(Self {
            family,
            info,
            tokenizer,
            chat_template: None,
            // An encoder generates nothing: no end-of-sequence token.
            eos_token_id: eos_from_generation.filter(|_| !encoder).or(eos_token_id),
            device: device.clone(),
        })
    }

    pub fn causal_lm(&self) -> &impl CausalLm {
        &self.family
    }

    /// Tokenize with the model's tokenizer, or fail with a clear message when it has none.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let tokenizer = self.tokenizer.as_ref().ok_or_else(|| {
            Error::new(
                Code::ModelMissingFile,
                "this model has no tokenizer.json; pass token ids instead of text",
            )
        })?;
        let ids = tokenizer.encode(text)?;
        self.check_ids(&ids)?;
        Ok(ids)
    }

    /// Token ids must exist in the embedding (a tokenizer from another model may not fit).
    pub fn check_ids(&self, ids: &[u32]) -> Result<()> {
        if let Some(bad) = ids
            .iter()
            .find(|&&t| t as usize >= self.info.dims.vocab_size)
        {
            return Err(Error::config(format!(
                "token id {bad} is outside the model's vocabulary of {}",
                self.info.dims.vocab_size
            ))
            .with_details(json!({ "token_id": bad, "vocab_size": self.info.dims.vocab_size })));
        }
        Ok(())
    }

    /// Logits of every position for one sequence, `[T][vocab]`.
    pub async fn logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        self.family.check_causal()?;
        self.check_ids(ids)?;
        if ids.is_empty() || ids.len() > self.info.dims.max_positions {
            return Err(Error::config(format!(
                "the input must have between 1 and {} tokens, got {}",
                self.info.dims.max_positions,
                ids.len()
            )));
        }
        let tokens = Tensor::<2, Int>::from_data(
            burn::tensor::TensorData::new(
                ids.iter().map(|&t| t as i64).collect::<Vec<_>>(),
                [1, ids.len()],
            ),
            &self.device,
        );
        let logits = self.causal_lm().forward(tokens, None::<&mut KvCache>);
        let [_, t, v] = logits.dims();
        let data = logits
            .into_data_async()
            .await
            .map_err(|e| {
                Error::new(
                    Code::DeviceLost,
                    format!("reading logits back failed: {e:?}"),
                )
            })?
            .try_to_vec::<f32>()
            .map_err(|e| Error::new(Code::Internal, format!("{e:?}")))?;
        Ok((0..t).map(|i| data[i * v..(i + 1) * v].to_vec()).collect())
    }
}

impl LoadedModel {
    /// Whether the model is an encoder (embeds and classifies; does not generate).
    pub fn is_encoder(&self) -> bool {
        matches!(self.family, Family::Bert(_))
    }

    /// An encoder's last hidden states for one sequence (no padding), `[T][hidden]`.
    pub async fn encode_hidden(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        let Family::Bert(bert) = &self.family else {
            return Err(Error::config(
                "hidden states of the encoder are only available for encoder (BERT) models",
            ));
        };
        self.check_ids(ids)?;
        if ids.is_empty() || ids.len() > self.info.dims.max_positions {
            return Err(Error::config(format!(
                "the input must have between 1 and {} tokens, got {}",
                self.info.dims.max_positions,
                ids.len()
            )));
        }
        let ids: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
        let tokens = super::bert::int_tensor(&ids, 1, ids.len(), &self.device);
        let hidden = bert.forward(tokens, None, None);
        let [_, t, d] = hidden.dims();
        let data = read_vec(hidden.reshape([t * d])).await?;
        Ok(data.chunks(d).map(<[f32]>::to_vec).collect())
    }
}

impl LoadedModel {
    /// Mean-pooled sentence embedding of `text` (sentence-transformers' pooling for MiniLM).
    pub async fn embed(&self, text: &str) -> Result<Vec<f32>> {
        let ids = self.encoder_ids(text)?;
        let hidden = self.encode_hidden(&ids).await?;
        let mut mean = vec![0f32; hidden.first().map_or(0, Vec::len)];
        for row in &hidden {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v;
            }
        }
        let n = hidden.len().max(1) as f32;
        mean.iter_mut().for_each(|m| *m /= n);
        Ok(mean)
    }

    /// Classification logits of `text` with the checkpoint's head (`info.labels` order).
    pub async fn classify(&self, text: &str) -> Result<Vec<f32>> {
        let Family::Bert(bert) = &self.family else {
            return Err(Error::config(
                "only encoder (BERT) models classify texts; this one generates text",
            ));
        };
        let pooling = self.info.pooling.ok_or_else(|| {
            Error::config(
                "this encoder has no classification head yet: fine-tune it on a labelled dataset",
            )
        })?;
        let ids = self.encoder_ids(text)?;
        let ids: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
        let tokens = super::bert::int_tensor(&ids, 1, ids.len(), &self.device);
        let hidden = bert.forward(tokens, None, None);
        let logits = bert.classify(bert.pool(hidden, None, pooling)?)?;
        let n = logits.dims()[1];
        read_vec(logits.reshape([n])).await
    }

    /// `text` tokenized with special tokens, cut to the model's positions keeping the final
    /// special token (BERT's `[SEP]`).
    fn encoder_ids(&self, text: &str) -> Result<Vec<u32>> {
        let tokenizer = self.tokenizer.as_ref().ok_or_else(|| {
            Error::new(
                Code::ModelMissingFile,
                "this model has no tokenizer; load it together with its tokenizer.json",
            )
        })?;
        let mut ids = tokenizer.encode(text)?;
        let max = self.info.dims.max_positions;
        if ids.len() > max {
            let last = ids[ids.len() - 1];
            ids.truncate(max - 1);
            ids.push(last);
        }
        Ok(ids)
    }
}

impl LoadedModel {
    /// The model's chat template, or why there is none: `chat_template.invalid` for one that
    /// does not compile, `config.invalid` for a model that ships none.
    pub fn chat(&self) -> Result<&ChatTemplate> {
        if let Some(t) = &self.chat_template {
            return Ok(t);
        }
        Err(match &self.info.chat.chat_template_error {
            Some(message) => Error::new(Code::ChatTemplateInvalid, message.clone()),
            None => Error::config(
                "this model ships no chat template (tokenizer_config.json, chat_template.jinja \
                 or GGUF metadata), so it has no chat mode; give a plain prompt instead",
            ),
        })
    }

    /// A conversation formatted with the model's template, as transformers'
    /// `apply_chat_template(messages, tokenize=False, add_generation_prompt=…)` returns it.
    pub fn chat_prompt(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        if messages.is_empty() {
            return Err(Error::config("the conversation has no messages"));
        }
        self.chat()?.render(messages, add_generation_prompt)
    }

    /// Token ids of a formatted conversation. The template writes the special tokens, so the
    /// tokenizer adds none (transformers tokenizes with `add_special_tokens=False`).
    pub fn chat_ids(&self, messages: &[Message], add_generation_prompt: bool) -> Result<Vec<u32>> {
        let text = self.chat_prompt(messages, add_generation_prompt)?;
        let tokenizer = self.tokenizer.as_ref().ok_or_else(|| {
            Error::new(
                Code::ModelMissingFile,
                "this model has no tokenizer, so a conversation cannot be turned into tokens",
            )
        })?;
        let ids = tokenizer.encode_with(&text, false)?;
        self.check_ids(&ids)?;
        Ok(ids)
    }

    /// Where chat generation stops: the model's EOS and the template's end-of-turn token
    /// (they differ for e.g. ChatML templates on a model whose EOS is `<|endoftext|>`).
    pub fn chat_stop_tokens(&self) -> Vec<u32> {
        let mut stops: Vec<u32> = self.eos_token_id.into_iter().collect();
        if let (Some(t), Some(tokenizer)) = (&self.chat_template, &self.tokenizer) {
            let eot = t.end_of_turn(tokenizer);
            let eos = tokenizer.token_id(&t.eos_token);
            for id in [eot, eos].into_iter().flatten() {
                if !stops.contains(&id) && (id as usize) < self.info.dims.vocab_size {
                    stops.push(id);
                }
            }
        }
        stops
    }
}

/// A tensor read back asynchronously (WebGPU cannot read synchronously).
async fn read_vec(t: Tensor<1>) -> Result<Vec<f32>> {
    t.into_data_async()
        .await
        .map_err(|e| {
            Error::new(
                Code::DeviceLost,
                format!("reading results back failed: {e:?}"),
            )
        })?
        .try_to_vec::<f32>()
        .map_err(|e| Error::new(Code::Internal, format!("{e:?}")))
}

fn first_id(v: Option<&Value>) -> Option<u32> {
    match v? {
        Value::Number(n) => n.as_u64().map(|n| n as u32),
        Value::Array(a) => a.first().and_then(Value::as_u64).map(|n| n as u32),
        _ => None,
    }
}
