//! Evaluation metrics computed on the host from what the models produced, so the page, the CLI
//! and the tests report the same numbers for "before" and "after". Keys are the stable
//! snake_case names of the JSON report (`accuracy`, `macro_f1`, `per_class`, ...).

use serde::Serialize;

/// Precision, recall and F1 of one class (one-vs-rest), with how many examples carry it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassScore {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Examples whose true label is this class.
    pub support: usize,
}

/// Classification quality on a set of examples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassMetrics {
    /// Mean cross-entropy (nats) of the true label.
    pub loss: f64,
    pub accuracy: f64,
    /// Mean F1 over the classes that occur among the true or the predicted labels
    /// (scikit-learn's `f1_score(average="macro")`, 0 where a ratio is 0/0).
    pub macro_f1: f64,
    pub per_class: Vec<ClassScore>,
    /// `[true][predicted]` counts.
    pub confusion_matrix: Vec<Vec<usize>>,
    pub examples: usize,
    pub seconds: f64,
}

/// Log-softmax of one row of logits, in f64 (a row's scale does not matter).
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits
        .iter()
        .map(|&v| v as f64)
        .fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    let log_sum = max + sum.ln();
    logits.iter().map(|&v| v as f64 - log_sum).collect()
}

/// The index of the largest value; the first one on ties, as `argmax` does in torch.
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// How one anchor's own positive ranks among every candidate positive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RetrievalUnit {
    /// 1 when the anchor's positive is the most similar candidate.
    pub rank: usize,
    /// The candidate ranked first.
    pub top: usize,
    /// Cross-entropy of the anchor's positive among the candidates' scaled cosines (the
    /// contrastive loss over the whole set rather than one batch).
    pub loss: f64,
    /// Cosine similarity of the anchor and its positive.
    pub positive_cosine: f64,
    /// Mean cosine similarity of the anchor and the other candidates.
    pub negative_cosine: f64,
}

/// Retrieval quality of sentence embeddings on pairs: each anchor searches every positive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct RetrievalMetrics {
    /// Mean contrastive loss (nats) over the whole set, see [`RetrievalUnit::loss`].
    pub loss: f64,
    /// Share of anchors whose own positive ranks first (recall@1).
    pub accuracy: f64,
    /// Mean reciprocal rank of the own positive.
    pub mrr: f64,
    pub positive_cosine: f64,
    pub negative_cosine: f64,
    pub pairs: usize,
}

fn unit_norm(v: &[f32]) -> Vec<f64> {
    // F.normalize's eps: a zero vector stays zero instead of dividing by zero.
    let norm = v
        .iter()
        .map(|&x| (x as f64).powi(2))
        .sum::<f64>()
        .sqrt()
        .max(1e-12);
    v.iter().map(|&x| x as f64 / norm).collect()
}

/// Each anchor's rank, loss and cosines against all `positives` (`positives[i]` is
/// `anchors[i]`'s), the loss over cosines multiplied by `scale`.
pub fn retrieval_units(
    anchors: &[Vec<f32>],
    positives: &[Vec<f32>],
    scale: f64,
) -> Vec<RetrievalUnit> {
    let a: Vec<Vec<f64>> = anchors.iter().map(|v| unit_norm(v)).collect();
    let p: Vec<Vec<f64>> = positives.iter().map(|v| unit_norm(v)).collect();
    let n = a.len().min(p.len());
    (0..n)
        .map(|i| {
            let cos: Vec<f64> = p[..n]
                .iter()
                .map(|pj| a[i].iter().zip(pj).map(|(x, y)| x * y).sum())
                .collect();
            let max = cos.iter().fold(f64::NEG_INFINITY, |m, &c| m.max(c * scale));
            let log_sum = max
                + cos
                    .iter()
                    .map(|&c| (c * scale - max).exp())
                    .sum::<f64>()
                    .ln();
            let mut top = 0;
            for (j, &c) in cos.iter().enumerate() {
                if c > cos[top] {
                    top = j;
                }
            }
            RetrievalUnit {
                // Ties count against the positive: a model that maps everything to one point
                // must not score as perfect.
                rank: 1 + cos
                    .iter()
                    .enumerate()
                    .filter(|&(j, &c)| j != i && c >= cos[i])
                    .count(),
                top,
                loss: log_sum - cos[i] * scale,
                positive_cosine: cos[i],
                negative_cosine: if n > 1 {
                    (cos.iter().sum::<f64>() - cos[i]) / (n - 1) as f64
                } else {
                    0.0
                },
            }
        })
        .collect()
}

/// The means of `units`.
pub fn retrieval_metrics(units: &[RetrievalUnit]) -> RetrievalMetrics {
    let n = units.len().max(1) as f64;
    let mean = |f: &dyn Fn(&RetrievalUnit) -> f64| units.iter().map(f).sum::<f64>() / n;
    RetrievalMetrics {
        loss: mean(&|u| u.loss),
        accuracy: mean(&|u| (u.rank == 1) as u8 as f64),
        mrr: mean(&|u| 1.0 / u.rank as f64),
        positive_cosine: mean(&|u| u.positive_cosine),
        negative_cosine: mean(&|u| u.negative_cosine),
        pairs: units.len(),
    }
}

fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// Metrics of `logits` (one row of `labels.len()` values per example) against `truth` (label
/// ids). Rows of another width and ids out of range are not counted (callers build both from
/// one label map, so there are none).
pub fn classification_metrics(
    labels: &[String],
    truth: &[usize],
    logits: &[Vec<f32>],
    seconds: f64,
) -> ClassMetrics {
    let n = labels.len();
    let mut confusion = vec![vec![0usize; n]; n];
    let mut loss = 0.0;
    let mut counted = 0usize;
    for (&t, row) in truth.iter().zip(logits) {
        if t >= n || row.len() != n {
            continue;
        }
        confusion[t][argmax(row)] += 1;
        loss -= log_softmax(row)[t];
        counted += 1;
    }
    let correct: usize = (0..n).map(|c| confusion[c][c]).sum();
    let per_class = (0..n)
        .map(|c| {
            let (precision, recall, f1) = class_f1(&confusion, c);
            ClassScore {
                label: labels[c].clone(),
                precision,
                recall,
                f1,
                support: confusion[c].iter().sum(),
            }
        })
        .collect();
    ClassMetrics {
        loss: if counted == 0 {
            0.0
        } else {
            loss / counted as f64
        },
        accuracy: ratio(correct, counted),
        macro_f1: macro_f1(&confusion),
        per_class,
        confusion_matrix: confusion,
        examples: counted,
        seconds,
    }
}

/// Precision, recall and F1 of class `c` in a `[true][predicted]` confusion matrix (0 where a
/// ratio is 0/0).
fn class_f1(confusion: &[Vec<usize>], c: usize) -> (f64, f64, f64) {
    let tp = confusion[c][c];
    let support: usize = confusion[c].iter().sum();
    let predicted: usize = confusion.iter().map(|row| row[c]).sum();
    let precision = ratio(tp, predicted);
    let recall = ratio(tp, support);
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    (precision, recall, f1)
}

/// Mean F1 over the classes that occur among the true or the predicted labels of a
/// `[true][predicted]` confusion matrix (scikit-learn's macro average).
pub fn macro_f1(confusion: &[Vec<usize>]) -> f64 {
    let (mut sum, mut present) = (0.0, 0usize);
    for c in 0..confusion.len() {
        let support: usize = confusion[c].iter().sum();
        let predicted: usize = confusion.iter().map(|row| row[c]).sum();
        if support + predicted > 0 {
            sum += class_f1(confusion, c).2;
            present += 1;
        }
    }
    if present == 0 {
        0.0
    } else {
        sum / present as f64
    }
}

/// SQuAD-style answer normalisation: lower case, no punctuation, no articles, single spaces.
fn normalize_answer(text: &str) -> Vec<String> {
    let lowered: String = text
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    lowered
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .map(str::to_owned)
        .collect()
}

/// Whether `prediction` and `reference` are the same answer after normalisation.
pub fn exact_match(prediction: &str, reference: &str) -> bool {
    normalize_answer(prediction) == normalize_answer(reference)
}

/// Token-level F1 between the normalised words of `prediction` and `reference` (SQuAD's
/// definition: overlap counted with multiplicity; two empty answers agree).
pub fn token_f1(prediction: &str, reference: &str) -> f64 {
    let p = normalize_answer(prediction);
    let r = normalize_answer(reference);
    if p.is_empty() || r.is_empty() {
        return (p.is_empty() && r.is_empty()) as u8 as f64;
    }
    let mut remaining = r.clone();
    let mut common = 0usize;
    for w in &p {
        if let Some(i) = remaining.iter().position(|x| x == w) {
            remaining.swap_remove(i);
            common += 1;
        }
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / p.len() as f64;
    let recall = common as f64 / r.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Exact match and token F1 of generated answers against references, averaged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AnswerMetrics {
    pub exact_match: f64,
    pub token_f1: f64,
    pub examples: usize,
}

/// Averages over `(prediction, reference)` pairs; `None` when there are none.
pub fn answer_metrics<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<AnswerMetrics> {
    let (mut em, mut f1, mut n) = (0.0, 0.0, 0usize);
    for (p, r) in pairs {
        em += exact_match(p, r) as u8 as f64;
        f1 += token_f1(p, r);
        n += 1;
    }
    (n > 0).then(|| AnswerMetrics {
        exact_match: em / n as f64,
        token_f1: f1 / n as f64,
        examples: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retrieval_ranks_each_anchors_own_positive() {
        // Anchor 0 finds its positive; anchor 1's positive is beaten by positive 0.
        let anchors = vec![vec![1.0, 0.0], vec![0.6, 0.8]];
        let positives = vec![vec![3.0, 4.0], vec![0.0, 1.0]];
        let u = retrieval_units(&anchors, &positives, 20.0);
        assert_eq!((u[0].rank, u[0].top), (1, 0));
        let cos01 = (0.6 * 3.0 + 0.8 * 4.0) / 5.0;
        assert!((u[1].positive_cosine - 0.8).abs() < 1e-6);
        assert!((u[1].negative_cosine - cos01).abs() < 1e-6);
        assert_eq!((u[1].rank, u[1].top), (2, 0));
        // The loss is the cross-entropy of the own positive among the scaled cosines.
        let expected = -(20.0 * 0.8 - ((20.0 * cos01).exp() + (20.0f64 * 0.8).exp()).ln());
        assert!(
            (u[1].loss - expected).abs() < 1e-5,
            "{} vs {expected}",
            u[1].loss
        );
        let m = retrieval_metrics(&u);
        assert_eq!((m.accuracy, m.mrr, m.pairs), (0.5, 0.75, 2));
        // Everything on one point: no anchor ranks its positive first.
        let same = vec![vec![1.0, 1.0]; 3];
        let u = retrieval_units(&same, &same, 20.0);
        assert!(u.iter().all(|u| u.rank == 3));
    }

    fn onehot(pred: &[usize], n: usize) -> Vec<Vec<f32>> {
        pred.iter()
            .map(|&p| (0..n).map(|c| if c == p { 2.0 } else { 0.0 }).collect())
            .collect()
    }

    #[test]
    fn per_class_and_macro_f1_follow_their_definitions() {
        let labels: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        // Worked by hand: a: tp 1, fp 1, fn 1 → P = R = F1 = 0.5; b: tp 2, fp 1, fn 0 →
        // P 2/3, R 1, F1 0.8; c: tp 0, fn 1 → 0. Macro = 1.3 / 3.
        let m =
            classification_metrics(&labels, &[0, 0, 1, 1, 2], &onehot(&[0, 1, 1, 1, 0], 3), 0.0);
        assert_eq!(
            m.confusion_matrix,
            vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 0, 0]]
        );
        assert!((m.accuracy - 0.6).abs() < 1e-12);
        assert!((m.per_class[0].f1 - 0.5).abs() < 1e-12);
        assert!((m.per_class[1].precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.per_class[1].f1 - 0.8).abs() < 1e-12);
        assert_eq!((m.per_class[2].f1, m.per_class[2].support), (0.0, 1));
        assert!((m.macro_f1 - 1.3 / 3.0).abs() < 1e-12);
        // Cross-entropy of logits (2, 0, 0): -ln(e² / (e² + 2)) when right, -ln(1 / (e² + 2)) when wrong.
        let z = 2f64.exp() + 2.0;
        let expected = (3.0 * (z.ln() - 2.0) + 2.0 * z.ln()) / 5.0;
        assert!((m.loss - expected).abs() < 1e-9, "{} vs {expected}", m.loss);
    }

    #[test]
    fn macro_f1_skips_classes_absent_from_truth_and_predictions() {
        let labels: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let m = classification_metrics(&labels, &[0, 1], &onehot(&[0, 1], 3), 0.0);
        assert_eq!(m.macro_f1, 1.0);
        assert_eq!(m.per_class[2].support, 0);
    }

    #[test]
    fn answers_are_normalised_like_squad() {
        assert!(exact_match("The Eiffel Tower!", "eiffel tower"));
        assert!(!exact_match("Paris, France", "Paris"));
        assert!((token_f1("Paris, France", "Paris") - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(token_f1("", ""), 1.0);
        assert_eq!(token_f1("x", ""), 0.0);
        let m = answer_metrics([("Paris", "paris"), ("Rome", "Madrid")]).unwrap();
        assert_eq!((m.exact_match, m.token_f1, m.examples), (0.5, 0.5, 2));
    }
}
