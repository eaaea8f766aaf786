//! Training objectives.
//!
//! A causal LM's loss reads the LM head over the whole vocabulary (49,152 tokens for SmolLM2,
//! 151,936 for Qwen2.5). Formed at once, the logits of a 4 × 128 batch are 100 MB, and autodiff
//! keeps them, their log-softmax and their gradient: several times that for one number.
//! [`head_cross_entropy`] instead walks the counted positions in chunks: each chunk's logits are
//! formed, reduced to the chunk's losses and to the gradient of its hidden states, and dropped.
//! As the loss is the last operation of a step, the gradient of the hidden states is known in
//! the forward pass (`∂L/∂h = w·(softmax·E − E[target])`, `w` the position's weight); autodiff
//! receives it through a surrogate `Σ h·g` whose value is replaced by the true loss. The head's
//! own gradient (full fine-tuning of a tied embedding) is accumulated the same way.
//! Positions that do not count (prompts, padding) never reach the head.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn::tensor::{IndexingUpdateOp, TensorData};

use crate::data::TokenBatch;

/// Logits formed at once, at most: 32 MB of f32 per chunk whatever the vocabulary.
const CHUNK_LOGITS: usize = 1 << 23;

/// Positions whose logits one chunk holds, out of `positions`, over a vocabulary of `vocab`.
pub fn head_chunk_rows(vocab: usize, positions: usize) -> usize {
    (CHUNK_LOGITS / vocab.max(1)).clamp(1, positions.max(1))
}

/// Mean next-token cross-entropy over the positions where `mask` is 1.
///
/// `logits [B, T, V]`, `targets [B, T]`, `mask [B, T]` (0/1); `counted` is the number of ones in
/// `mask`, known on the host, so no device readback is needed to normalise. (The toy model's
/// loss; language models use [`head_cross_entropy`].)
pub fn masked_cross_entropy(
    logits: Tensor<3>,
    targets: Tensor<2, Int>,
    mask: Tensor<2>,
    counted: usize,
) -> Tensor<1> {
    let picked = log_softmax(logits, 2)
        .gather(2, targets.unsqueeze_dim::<3>(2))
        .squeeze_dim::<2>(2);
    (picked * mask)
        .sum()
        .neg()
        .div_scalar(counted.max(1) as f64)
}

/// The positions of a batch that count in the loss.
struct Counted {
    /// Flat indices into `[B·T]`.
    positions: Vec<i64>,
    targets: Vec<i64>,
    weights: Vec<f32>,
    /// Whether every position counts (then no selection is needed).
    all: bool,
}

impl Counted {
    fn of(batch: &TokenBatch) -> Self {
        let mut c = Counted {
            positions: Vec::new(),
            targets: Vec::new(),
            weights: Vec::new(),
            all: false,
        };
        for (i, &w) in batch.loss_mask.iter().enumerate() {
            if w > 0.0 {
                c.positions.push(i as i64);
                c.targets.push(batch.targets[i]);
                c.weights.push(w);
            }
        }
        c.all = c.positions.len() == batch.loss_mask.len();
        c
    }

    /// The counted rows of `hidden [B, T, d]`, as `[n, d]`.
    fn select(&self, hidden: Tensor<3>) -> Tensor<2> {
        let [b, t, d] = hidden.dims();
        let flat = hidden.reshape([b * t, d]);
        if self.all {
            flat
        } else {
            let device = flat.device();
            flat.select(0, int_tensor(&self.positions, &device))
        }
    }
}

fn int_tensor(values: &[i64], device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}

/// What one walk over the head gives.
struct HeadPass {
    /// Each position's cross-entropy `[n]`.
    nll: Tensor<1>,
    /// `∂L/∂h` of each position `[n, d]`, when asked for.
    grad_hidden: Option<Tensor<2>>,
    /// `∂L/∂E` of the head `[V, d]`, when asked for.
    grad_head: Option<Tensor<2>>,
}

/// Cross-entropy of `hidden [n, d]` against `targets` through `head [V, d]`, in chunks of rows;
/// with `scale` (each position's weight in the loss), the gradients of that weighted sum.
/// Tensors are plain (no autodiff): nothing of a chunk outlives it but its results.
fn head_pass(
    hidden: Tensor<2>,
    head: Tensor<2>,
    targets: &[i64],
    scale: Option<&[f32]>,
    want_head: bool,
    rows: usize,
) -> HeadPass {
    let [n, d] = hidden.dims();
    let [vocab, _] = head.dims();
    let device = hidden.device();
    let head_t = head.clone().transpose();
    let (mut nll, mut grad_hidden) = (Vec::new(), Vec::new());
    let mut grad_head = want_head.then(|| Tensor::<2>::zeros([vocab, d], &device));
    for start in (0..n).step_by(rows) {
        let len = rows.min(n - start);
        let h = hidden.clone().narrow(0, start, len);
        let t = int_tensor(&targets[start..start + len], &device);
        let logits = h.clone().matmul(head_t.clone());
        let max = logits.clone().max_dim(1);
        let picked = logits.clone().gather(1, t.clone().unsqueeze_dim::<2>(1));
        let exp = (logits - max.clone()).exp();
        let sum = exp.clone().sum_dim(1);
        nll.push((max + sum.clone().log() - picked).reshape([len]));
        let Some(scale) = scale else { continue };
        // softmax·w in one pass over the chunk: w / Σexp per row.
        let w = Tensor::<2>::from_data(
            TensorData::new(scale[start..start + len].to_vec(), [len, 1]),
            &device,
        );
        let probs = exp * (w.clone() / sum);
        // Minus the target's one-hot, without forming it: E[target] per row.
        grad_hidden.push(
            probs.clone().matmul(head.clone()) - head.clone().select(0, t.clone()) * w.clone(),
        );
        if let Some(g) = grad_head.take() {
            let g = g + probs.transpose().matmul(h.clone());
            grad_head = Some(g.select_assign(0, t, (h * w).neg(), IndexingUpdateOp::Add));
        }
    }
    HeadPass {
        nll: Tensor::cat(nll, 0),
        grad_hidden: scale.map(|_| Tensor::cat(grad_hidden, 0)),
        grad_head,
    }
}

/// Mean next-token cross-entropy of a causal LM over the positions of `batch` that count,
/// divided by `units` (known on the host: a step's counted tokens over all its micro-batches).
/// `hidden [B, T, d]` are the final hidden states, `head [V, d]` the LM head; neither the whole
/// logits nor their gradient are ever formed (see the module's notes). The result carries the
/// gradients of `hidden` and, if it trains, of `head`.
pub fn head_cross_entropy(
    hidden: Tensor<3>,
    head: Tensor<2>,
    batch: &TokenBatch,
    units: usize,
) -> Tensor<1> {
    let rows = head_chunk_rows(head.dims()[0], batch.loss_mask.len());
    chunked_cross_entropy(hidden, head, batch, units, rows)
}

fn chunked_cross_entropy(
    hidden: Tensor<3>,
    head: Tensor<2>,
    batch: &TokenBatch,
    units: usize,
    rows: usize,
) -> Tensor<1> {
    let counted = Counted::of(batch);
    let device = hidden.device();
    if counted.positions.is_empty() {
        // Nothing counts: a zero that still belongs to the graph.
        return hidden.sum().mul_scalar(0.0);
    }
    let h = counted.select(hidden);
    let units = units.max(1) as f32;
    let scale: Vec<f32> = counted.weights.iter().map(|w| w / units).collect();
    let (track_hidden, track_head) = (h.is_tracked(), head.is_tracked());
    let pass = head_pass(
        h.clone().inner(),
        head.clone().inner(),
        &counted.targets,
        (track_hidden || track_head).then_some(&scale[..]),
        track_head,
        rows,
    );
    let weights =
        Tensor::<1>::from_data(TensorData::new(scale, [counted.positions.len()]), &device);
    let value = (pass.nll * weights.inner()).sum();
    // Σ h·g has the gradient g; subtracting its own value leaves the loss's.
    let mut surrogate: Option<Tensor<1>> = None;
    if let Some(g) = pass.grad_hidden.filter(|_| track_hidden) {
        surrogate = Some((h * g).sum());
    }
    if let Some(g) = pass.grad_head {
        let s = (head * g).sum();
        surrogate = Some(match surrogate {
            Some(prev) => prev + s,
            None => s,
        });
    }
    match surrogate {
        Some(s) => s.clone() - s.inner() + value,
        None => value,
    }
}

/// Each row's summed cross-entropy over its counted positions (0 for a row where none count),
/// for evaluation: `hidden [B, T, d]`, `head [V, d]`, no gradients.
pub async fn head_row_losses(
    hidden: Tensor<3>,
    head: Tensor<2>,
    batch: &TokenBatch,
) -> crate::error::Result<Vec<f32>> {
    let counted = Counted::of(batch);
    let mut rows = vec![0.0f32; batch.batch_size];
    if counted.positions.is_empty() {
        return Ok(rows);
    }
    let h = counted.select(hidden).inner();
    let chunk = head_chunk_rows(head.dims()[0], counted.positions.len());
    let pass = head_pass(h, head.inner(), &counted.targets, None, false, chunk);
    let nll = super::lora::read_f32(pass.nll).await?;
    for ((&p, &w), l) in counted.positions.iter().zip(&counted.weights).zip(nll) {
        rows[p as usize / batch.seq_len] += w * l;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn grad_of<const D: usize>(t: &Tensor<D>, grads: &burn::tensor::Gradients) -> Vec<f32> {
        t.grad(grads)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    }

    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len());
        assert!(want.iter().any(|x| x.abs() > 1e-3), "{what}: all zero");
        for (x, y) in got.iter().zip(want) {
            assert!((x - y).abs() < 1e-6, "{what}: {x} vs {y}");
        }
    }

    /// The chunked loss and its gradients (hidden states, and the head when it trains) equal the
    /// plain log-softmax over all the logits, with positions masked out and chunks that do not
    /// divide the positions; evaluation's per-row sums add up to the same loss.
    #[test]
    fn chunks_equal_the_whole_logits() {
        let device = Device::flex().autodiff();
        let mut rng = Rng::new(7);
        let (b, t, d, v) = (2, 5, 8, 11);
        let batch = TokenBatch {
            batch_size: b,
            seq_len: t,
            inputs: vec![0; b * t],
            targets: (0..b * t).map(|i| (i * 7 % v) as i64).collect(),
            loss_mask: vec![1., 1., 0., 1., 1., 0., 0., 1., 1., 1.],
        };
        let units = 9; // as if another micro-batch of the step counted 2 more positions
        let h = Tensor::<3>::from_data(
            TensorData::new(rng.normal_vec(b * t * d, 1.0), [b, t, d]),
            &device,
        )
        .require_grad();
        let e_values = rng.normal_vec(v * d, 1.0);
        for train_head in [true, false] {
            let e = Tensor::<2>::from_data(TensorData::new(e_values.clone(), [v, d]), &device)
                .set_require_grad(train_head);
            // A nonlinearity before the loss, so the gradient travels on through autodiff.
            let plain = {
                let logits = crate::models::layers::lm_head_logits(h.clone().tanh(), e.clone());
                let targets = Tensor::<2, Int>::from_data(
                    TensorData::new(batch.targets.clone(), [b, t]),
                    &device,
                );
                let mask = Tensor::<2>::from_data(
                    TensorData::new(batch.loss_mask.clone(), [b, t]),
                    &device,
                );
                masked_cross_entropy(logits, targets, mask, units)
            };
            let want = plain.clone().into_scalar::<f32>();
            let plain_grads = plain.backward();
            for rows in [1, 3, 7, 100] {
                let loss = chunked_cross_entropy(h.clone().tanh(), e.clone(), &batch, units, rows);
                let got = loss.clone().into_scalar::<f32>();
                assert!((got - want).abs() < 1e-6, "rows {rows}: {got} vs {want}");
                let grads = loss.backward();
                assert_close(&grad_of(&h, &grads), &grad_of(&h, &plain_grads), "hidden");
                if train_head {
                    assert_close(&grad_of(&e, &grads), &grad_of(&e, &plain_grads), "head");
                } else {
                    assert!(e.grad(&grads).is_none());
                }
            }
            let rows =
                pollster::block_on(head_row_losses(h.clone().tanh().inner(), e.inner(), &batch))
                    .unwrap();
            let total: f32 = rows.iter().sum();
            assert!((total / units as f32 - want).abs() < 1e-6, "{total}");
            assert!(rows.iter().all(|&r| r > 0.0));
        }
    }
}
