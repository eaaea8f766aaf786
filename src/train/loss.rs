//! Training objectives.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// Mean next-token cross-entropy over the positions where `mask` is 1.
///
/// `logits [B, T, V]`, `targets [B, T]`, `mask [B, T]` (0/1); `counted` is the number of ones in
/// `mask`, known on the host, so no device readback is needed to normalise.
pub fn masked_cross_entropy(
    logits: Tensor<3>,
    targets: Tensor<2, Int>,
    mask: Tensor<2>,
    counted: usize,
) -> Tensor<1> {
    masked_log_probs(logits, targets, mask)
        .sum()
        .neg()
        .div_scalar(counted.max(1) as f64)
}

/// Summed next-token cross-entropy of each row `[B]` over the positions where `mask` is 1.
pub fn row_cross_entropy(logits: Tensor<3>, targets: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<1> {
    let [b, _] = mask.dims();
    masked_log_probs(logits, targets, mask)
        .sum_dim(1)
        .neg()
        .reshape([b])
}

/// The log-probability of each target `[B, T]`, 0 where `mask` is 0.
fn masked_log_probs(logits: Tensor<3>, targets: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<2> {
    let picked = log_softmax(logits, 2)
        .gather(2, targets.unsqueeze_dim::<3>(2))
        .squeeze_dim::<2>(2);
    picked * mask
}
