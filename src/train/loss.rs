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
    let log_probs = log_softmax(logits, 2);
    let picked = log_probs
        .gather(2, targets.unsqueeze_dim::<3>(2))
        .squeeze_dim::<2>(2);
    (picked * mask)
        .sum()
        .neg()
        .div_scalar(counted.max(1) as f64)
}
