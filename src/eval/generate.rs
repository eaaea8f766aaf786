//! Text generation from a causal LM: greedy or sampled (temperature, top-k, top-p, repetition
//! penalty), seeded, stopping at an end token or `max_new_tokens`, with a KV cache so that each
//! new token costs one position. Tokens are handed to a callback as they come (streaming).

use burn::prelude::*;
use burn::tensor::TensorData;
use serde::{Deserialize, Serialize};

use crate::error::{Code, Error, Result};
use crate::models::{CausalLm, KvCache};
use crate::rng::Rng;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// Pick the most likely token (ignores temperature/top-k/top-p).
    pub greedy: bool,
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1.0 = off).
    pub top_p: f32,
    /// >1 discourages tokens already present (transformers' CTRL-style penalty).
    pub repetition_penalty: f32,
    pub seed: u64,
    /// Reuse keys/values of past positions (off only to measure what the cache saves).
    pub use_cache: bool,
    /// Stop when one of these is produced (filled from the model's EOS when empty).
    pub stop_tokens: Vec<u32>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 32,
            greedy: false,
            temperature: 1.0,
            top_k: 50,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
            use_cache: true,
            stop_tokens: Vec::new(),
        }
    }
}

impl GenerateOptions {
    pub fn validate(&self) -> Result<()> {
        let temperature_ok = self.temperature.is_finite() && self.temperature > 0.0;
        if !self.greedy && !temperature_ok {
            return Err(Error::config(
                "temperature must be positive (or use greedy decoding)",
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::config("top_p must be in (0, 1]"));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(Error::config("repetition_penalty must be positive"));
        }
        Ok(())
    }
}

/// Choose the next token from last-position logits. `history` is prompt + generated so far.
pub fn choose_token(
    logits: &mut [f32],
    history: &[u32],
    opts: &GenerateOptions,
    rng: &mut Rng,
) -> u32 {
    if opts.repetition_penalty != 1.0 {
        for &t in history {
            if let Some(l) = logits.get_mut(t as usize) {
                // As in transformers: shrink positive logits, push negative ones further down.
                *l = if *l > 0.0 {
                    *l / opts.repetition_penalty
                } else {
                    *l * opts.repetition_penalty
                };
            }
        }
    }
    if opts.greedy {
        return argmax(logits);
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if opts.top_k > 0 {
        order.truncate(opts.top_k.max(1));
    }
    let max = logits[order[0]];
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&i| (((logits[i] - max) / opts.temperature) as f64).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if opts.top_p < 1.0 {
        let mut cumulative = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            cumulative += p;
            if cumulative >= opts.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
        order.truncate(keep);
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
    }
    let mut u = rng.uniform();
    for (p, &i) in probs.iter().zip(&order) {
        if u < *p {
            return i as u32;
        }
        u -= p;
    }
    order.last().copied().unwrap_or(0) as u32
}

fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// The last position's logits `[V]` from hidden states `[1, T, d]` and the LM head `[V, d]`
/// (only that position goes through the head), read back asynchronously.
async fn last_logits(hidden: Tensor<3>, head: Tensor<2>) -> Result<Vec<f32>> {
    let [_, t, d] = hidden.dims();
    let v = head.dims()[0];
    let last = hidden
        .narrow(1, t - 1, 1)
        .reshape([1, d])
        .matmul(head.transpose())
        .reshape([v]);
    let data = last.into_data_async().await.map_err(|e| {
        Error::new(
            Code::DeviceLost,
            format!("reading logits back failed: {e:?}"),
        )
    })?;
    data.try_to_vec::<f32>().map_err(|e| {
        Error::new(
            Code::Internal,
            format!("logits had an unexpected type: {e:?}"),
        )
    })
}

/// Generate up to `max_new_tokens` after `prompt`. `on_token` sees each new token and may stop
/// generation by returning `false`. Returns the new tokens.
pub async fn generate(
    model: &impl CausalLm,
    device: &Device,
    prompt: &[u32],
    opts: &GenerateOptions,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<Vec<u32>> {
    opts.validate()?;
    model.check_causal()?;
    if prompt.is_empty() {
        return Err(Error::config("the prompt has no tokens"));
    }
    let max_positions = model.max_positions();
    if prompt.len() >= max_positions {
        return Err(Error::config(format!(
            "the prompt has {} tokens but the model handles at most {max_positions}",
            prompt.len()
        )));
    }
    let to_tensor = |ids: &[u32]| {
        let ids: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
        let n = ids.len();
        Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), device)
    };
    let mut rng = Rng::new(opts.seed);
    let mut history = prompt.to_vec();
    let mut cache = KvCache::new();
    let mut generated = Vec::new();
    let mut pending = prompt.to_vec();
    while generated.len() < opts.max_new_tokens && history.len() < max_positions {
        let hidden = if opts.use_cache {
            model.hidden(to_tensor(&pending), Some(&mut cache))
        } else {
            model.hidden(to_tensor(&history), None)
        };
        let mut last = last_logits(hidden, model.head()).await?;
        let token = choose_token(&mut last, &history, opts, &mut rng);
        history.push(token);
        generated.push(token);
        pending = vec![token];
        if !on_token(token) || opts.stop_tokens.contains(&token) {
            break;
        }
    }
    Ok(generated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_argmax_after_repetition_penalty() {
        let opts = GenerateOptions {
            greedy: true,
            ..Default::default()
        };
        let mut rng = Rng::new(0);
        assert_eq!(choose_token(&mut [0.1, 3.0, 2.9], &[], &opts, &mut rng), 1);
        let opts = GenerateOptions {
            greedy: true,
            repetition_penalty: 2.0,
            ..Default::default()
        };
        // Token 1 was seen: 3.0 / 2 = 1.5 < 2.9.
        assert_eq!(choose_token(&mut [0.1, 3.0, 2.9], &[1], &opts, &mut rng), 2);
    }

    #[test]
    fn top_k_one_is_greedy_and_top_p_cuts_the_tail() {
        let mut rng = Rng::new(1);
        let opts = GenerateOptions {
            top_k: 1,
            ..Default::default()
        };
        for _ in 0..20 {
            assert_eq!(
                choose_token(&mut [1.0, 0.5, 2.0, -1.0], &[], &opts, &mut rng),
                2
            );
        }
        // Probabilities ≈ [0.87, 0.12, 0.02]: top_p 0.8 keeps only the first.
        let opts = GenerateOptions {
            top_k: 0,
            top_p: 0.8,
            ..Default::default()
        };
        for _ in 0..50 {
            assert_eq!(choose_token(&mut [4.0, 2.0, 0.0], &[], &opts, &mut rng), 0);
        }
    }

    #[test]
    fn sampling_follows_the_distribution_and_the_seed() {
        let opts = GenerateOptions {
            top_k: 0,
            ..Default::default()
        };
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..4000)
                .map(|_| choose_token(&mut [0.0, (3f32).ln()], &[], &opts, &mut rng))
                .collect::<Vec<_>>()
        };
        let a = draw(9);
        assert_eq!(a, draw(9));
        let ones = a.iter().filter(|&&t| t == 1).count() as f64 / a.len() as f64;
        assert!((ones - 0.75).abs() < 0.03, "P(1) should be 3/4, got {ones}");
    }
}
