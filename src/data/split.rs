//! Train/validation split: seeded (the same seed gives the same split on every platform, through
//! [`crate::rng::Rng`]), stratified by label for classification, and duplicate-safe: identical
//! examples (for classification, identical texts) are one group and land on the same side, so
//! validation never contains an example the model trained on.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::validate::{Dataset, Example};
use crate::error::{Code, Error, Result};
use crate::rng::Rng;

/// How much goes to validation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Holdout {
    /// A fraction of the examples, in (0, 1).
    Fraction(f64),
    /// This many examples (rounded to whole duplicate groups).
    Count(usize),
}

/// Indices into the dataset's examples, each list sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Split {
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
    pub seed: u64,
    pub stratified: bool,
    /// Examples that share their group with an earlier identical one.
    pub duplicates: usize,
}

pub fn split(dataset: &Dataset, holdout: Holdout, seed: u64) -> Result<Split> {
    split_examples(&dataset.examples, holdout, seed)
}

pub fn split_examples(examples: &[Example], holdout: Holdout, seed: u64) -> Result<Split> {
    // Groups of identical examples, in first-seen order.
    let mut group_of: HashMap<u64, usize> = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, e) in examples.iter().enumerate() {
        let g = *group_of.entry(e.content.dedup_key()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    let duplicates = examples.len() - groups.len();
    let n = groups.len();
    let wanted = match holdout {
        Holdout::Fraction(f) if f > 0.0 && f < 1.0 => f * n as f64,
        Holdout::Count(c) if c > 0 && c < n => c as f64,
        _ => {
            return Err(Error::config(format!(
                "the validation split must be a fraction in (0, 1) or a count between 1 and {} \
                 (distinct examples), not {holdout:?}",
                n.saturating_sub(1)
            )))
        }
    };

    // Strata: labels (sorted, so the stream of random numbers does not depend on hash order).
    let stratified = examples.iter().all(|e| e.content.label().is_some());
    let mut strata: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (g, members) in groups.iter().enumerate() {
        let key = if stratified {
            examples[members[0]].content.label().unwrap_or_default()
        } else {
            ""
        };
        strata.entry(key).or_default().push(g);
    }
    // Largest-remainder apportionment of `wanted` groups across strata.
    let share: Vec<f64> = strata
        .values()
        .map(|s| wanted * s.len() as f64 / n as f64)
        .collect();
    let mut take: Vec<usize> = share.iter().map(|s| s.floor() as usize).collect();
    let target = wanted.round() as usize;
    let mut order: Vec<usize> = (0..share.len()).collect();
    order.sort_by(|&a, &b| {
        (share[b] - share[b].floor())
            .total_cmp(&(share[a] - share[a].floor()))
            .then(a.cmp(&b))
    });
    for &s in order.iter().cycle().take(share.len() * 2) {
        if take.iter().sum::<usize>() >= target {
            break;
        }
        take[s] += 1;
    }

    let mut rng = Rng::new(seed);
    let mut validation_groups = HashSet::new();
    for ((_, stratum), k) in strata.iter_mut().zip(take) {
        rng.shuffle(stratum);
        // A stratum of one (a label seen once) stays in training.
        let k = if stratum.len() > 1 {
            k.min(stratum.len() - 1)
        } else {
            0
        };
        validation_groups.extend(stratum[..k].iter().copied());
    }
    let (mut train, mut validation) = (Vec::new(), Vec::new());
    for (g, members) in groups.iter().enumerate() {
        let side = if validation_groups.contains(&g) {
            &mut validation
        } else {
            &mut train
        };
        side.extend(members);
    }
    train.sort_unstable();
    validation.sort_unstable();
    Ok(Split {
        train,
        validation,
        seed,
        stratified,
        duplicates,
    })
}

/// A separate validation file joined to the training file: the validation examples are appended
/// to `train`'s, and the split trains on every training-file example that does not also appear in
/// the validation file (same text for classification, same content otherwise) and validates on
/// the whole validation file. Returns the split and how many training examples were dropped as
/// overlapping. For classification both files need labels, and the validation file may only use
/// labels the training file has (the classifier cannot learn a label it never sees).
pub fn join_validation(
    train: &mut Dataset,
    validation: Dataset,
    seed: u64,
) -> Result<(Split, usize)> {
    match (&train.labels, &validation.labels) {
        (Some(known), Some(theirs)) => {
            let unknown: Vec<&str> = theirs
                .labels
                .iter()
                .filter(|l| known.id(l).is_none())
                .map(String::as_str)
                .collect();
            if !unknown.is_empty() {
                return Err(Error::new(
                    Code::DataInvalid,
                    format!(
                        "the validation file {} has label(s) {} that no example of the training \
                         file {} has (its labels: {}); the classifier cannot learn a label it \
                         never sees",
                        validation.file,
                        unknown.join(", "),
                        train.file,
                        known.labels.join(", ")
                    ),
                ));
            }
        }
        (None, None) => {}
        (Some(_), None) | (None, Some(_)) => {
            return Err(Error::new(
                Code::DataInvalid,
                format!(
                    "the training file {} is read as {} but the validation file {} as {}; give \
                     both the same fields",
                    train.file,
                    train.schema.describe(),
                    validation.file,
                    validation.schema.describe()
                ),
            ));
        }
    }
    if validation.examples.is_empty() {
        return Err(Error::new(
            Code::DataInvalid,
            format!(
                "the validation file {} has no usable examples",
                validation.file
            ),
        ));
    }
    let keys: HashSet<u64> = validation
        .examples
        .iter()
        .map(|e| e.content.dedup_key())
        .collect();
    let n = train.examples.len();
    let kept: Vec<usize> = (0..n)
        .filter(|&i| !keys.contains(&train.examples[i].content.dedup_key()))
        .collect();
    let removed = n - kept.len();
    let mut seen = HashSet::new();
    train.examples.extend(validation.examples);
    let duplicates = train
        .examples
        .iter()
        .filter(|e| !seen.insert(e.content.dedup_key()))
        .count();
    let split = Split {
        train: kept,
        validation: (n..train.examples.len()).collect(),
        seed,
        stratified: false,
        duplicates,
    };
    Ok((split, removed))
}
