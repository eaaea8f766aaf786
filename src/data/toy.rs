//! The copy task: each sequence is `n` random tokens followed by the same `n` tokens again.
//! The first half is unpredictable, the second half is fully determined by it, so a model that
//! learns to attend back `n` positions drives the loss on the second half towards zero. Only the
//! second half counts in the loss (the same masking the real objectives use for prompts).

use super::TokenBatch;
use crate::rng::Rng;

/// Sample a batch of copy sequences; inputs and shifted targets are `seq_len` long each.
pub fn copy_batch(rng: &mut Rng, batch_size: usize, seq_len: usize, vocab: usize) -> TokenBatch {
    // The doubled prefix must cover seq_len + 1 tokens (inputs plus the last target).
    let half = (seq_len + 1).div_ceil(2);
    let mut inputs = Vec::with_capacity(batch_size * seq_len);
    let mut targets = Vec::with_capacity(batch_size * seq_len);
    let mut loss_mask = Vec::with_capacity(batch_size * seq_len);
    for _ in 0..batch_size {
        let prefix: Vec<i64> = (0..half).map(|_| rng.below(vocab as u64) as i64).collect();
        let sequence: Vec<i64> = prefix.iter().chain(prefix.iter()).copied().collect();
        for t in 0..seq_len {
            inputs.push(sequence[t]);
            targets.push(sequence[t + 1]);
            // Target t+1 is predictable once it lies in the copied half.
            loss_mask.push(if t + 1 >= half { 1.0 } else { 0.0 });
        }
    }
    TokenBatch {
        batch_size,
        seq_len,
        inputs,
        targets,
        loss_mask,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_half_repeats_the_first_and_only_it_counts() {
        let mut rng = Rng::new(5);
        let b = copy_batch(&mut rng, 3, 8, 10);
        assert_eq!(b.inputs.len(), 24);
        for row in 0..3 {
            let x = &b.inputs[row * 8..row * 8 + 8];
            let y = &b.targets[row * 8..row * 8 + 8];
            let m = &b.loss_mask[row * 8..row * 8 + 8];
            // seq_len 8 → a prefix of 5 tokens, repeated from position 5.
            assert_eq!(&x[..3], &x[5..8], "inputs copy the prefix");
            assert_eq!(&x[1..], &y[..7], "targets are inputs shifted by one");
            assert_eq!(m, &[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
            for t in 4..8 {
                assert_eq!(y[t], x[t + 1 - 5], "counted targets are copies");
            }
            assert!(x.iter().chain(y).all(|&t| (0..10).contains(&t)));
        }
        assert_eq!(b.counted(), 12);
    }
}
