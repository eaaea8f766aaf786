//! How sure a before/after comparison is. A held-out score measured on a few dozen examples
//! moves by several points depending on which examples were held out, so every before/after
//! figure carries a 95% interval and the verdict ("better", "same", "worse") follows the
//! interval of the change, not the two point estimates.
//!
//! - A rate (accuracy) gets the Wilson score interval, which stays inside [0, 1] and behaves at
//!   0 or n successes, unlike the normal approximation.
//! - A mean loss, a perplexity or a macro-F1 gets a percentile bootstrap over the held-out
//!   units (examples; rows of packed text for a causal LM, where examples share rows).
//! - A change is a *paired* bootstrap: each resample draws the same units for the base model
//!   and the fine-tuned one, so the spread of difficulty between examples cancels out and a
//!   consistent small gain is seen as one.
//!
//! The resamples come from webtune's seeded generator: the same run reports the same intervals.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// Bootstrap resamples per interval: enough for stable 2.5% / 97.5% percentiles (the interval
/// ends move by well under a tenth of their width between seeds) at a cost of milliseconds.
pub const RESAMPLES: usize = 2000;

/// Two-sided 95%: the standard normal's 97.5% quantile.
const Z95: f64 = 1.959_963_984_540_054;

/// Fewer paired units than this give no interval: with 5, even "all five improved" has a
/// two-sided sign-test p-value of 2 · 0.5⁵ = 0.0625, so no method could call it a change at
/// 95%, and a bootstrap over so few would pretend to.
pub const MIN_UNITS: usize = 6;

/// A 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

impl Interval {
    pub fn contains(&self, x: f64) -> bool {
        self.low <= x && x <= self.high
    }

    fn map(self, f: impl Fn(f64) -> f64) -> Self {
        Self {
            low: f(self.low),
            high: f(self.high),
        }
    }
}

/// A figure and its 95% interval (`None` where too few units were scored to give one).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub value: f64,
    pub interval: Option<Interval>,
}

/// What a change says about fine-tuning, from its interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The whole interval is on the better side of zero.
    Better,
    /// The interval holds zero, or there were too few units to have one: no clear change.
    Same,
    /// The whole interval is on the worse side of zero.
    Worse,
}

/// A before → after change with its 95% interval and the outcome that interval gives.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub value: f64,
    pub interval: Option<Interval>,
    pub outcome: Outcome,
}

impl Change {
    /// `value` with `interval`, judged with `higher_is_better`.
    fn judged(value: f64, interval: Option<Interval>, higher_is_better: bool) -> Self {
        let outcome = match interval {
            Some(i) if i.low > 0.0 => Outcome::Better,
            Some(i) if i.high < 0.0 => Outcome::Worse,
            _ => Outcome::Same,
        };
        let outcome = match (outcome, higher_is_better) {
            (Outcome::Better, false) => Outcome::Worse,
            (Outcome::Worse, false) => Outcome::Better,
            (o, _) => o,
        };
        Self {
            value,
            interval,
            outcome,
        }
    }
}

/// The Wilson score interval of `successes` out of `n` (`None` for n = 0).
pub fn wilson(successes: usize, n: usize) -> Option<Interval> {
    if n == 0 {
        return None;
    }
    let (n, p) = (n as f64, successes as f64 / n as f64);
    let z2 = Z95 * Z95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(Interval {
        low: (centre - half).max(0.0),
        high: (centre + half).min(1.0),
    })
}

/// The 2.5% and 97.5% percentiles of `stat` over [`RESAMPLES`] resamples (with replacement) of
/// `n` units; `None` below [`MIN_UNITS`]. `stat` gets the drawn unit indices; resamples where
/// it is not finite (a 0/0) are left out.
pub fn bootstrap(n: usize, seed: u64, mut stat: impl FnMut(&[usize]) -> f64) -> Option<Interval> {
    if n < MIN_UNITS {
        return None;
    }
    let mut rng = Rng::new(seed);
    let mut drawn = vec![0usize; n];
    let mut values = Vec::with_capacity(RESAMPLES);
    for _ in 0..RESAMPLES {
        for d in drawn.iter_mut() {
            *d = rng.below(n as u64) as usize;
        }
        let v = stat(&drawn);
        if v.is_finite() {
            values.push(v);
        }
    }
    if values.len() < RESAMPLES / 2 {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((q * values.len() as f64) as usize).min(values.len() - 1)];
    Some(Interval {
        low: at(0.025),
        high: at(0.975),
    })
}

/// One held-out unit's summed loss and the tokens (or examples) it counts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UnitLoss {
    pub sum: f64,
    pub count: f64,
}

fn mean_loss(units: &[UnitLoss], drawn: impl Iterator<Item = usize>) -> f64 {
    let (mut sum, mut count) = (0.0, 0.0);
    for i in drawn {
        sum += units[i].sum;
        count += units[i].count;
    }
    sum / count
}

/// Held-out loss and perplexity before and after, with intervals, and the relative change of
/// the loss (−0.11: it fell 11%) that decides the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossComparison {
    /// The units resampled (rows of the held-out batches).
    pub units: usize,
    pub loss_before: Estimate,
    pub loss_after: Estimate,
    pub perplexity_before: Estimate,
    pub perplexity_after: Estimate,
    pub loss_change: Change,
}

/// Compare the same held-out units scored before and after (`None` if they are not the same
/// number of units, or none count).
pub fn compare_losses(
    before: &[UnitLoss],
    after: &[UnitLoss],
    seed: u64,
) -> Option<LossComparison> {
    let n = before.len();
    if n == 0 || after.len() != n {
        return None;
    }
    let all = || 0..n;
    let estimate = |units: &[UnitLoss]| Estimate {
        value: mean_loss(units, all()),
        interval: bootstrap(n, seed, |d| mean_loss(units, d.iter().copied())),
    };
    let (loss_before, loss_after) = (estimate(before), estimate(after));
    if !(loss_before.value.is_finite() && loss_after.value.is_finite()) {
        return None;
    }
    let perplexity = |e: Estimate| Estimate {
        value: e.value.exp(),
        interval: e.interval.map(|i| i.map(f64::exp)),
    };
    let relative = |d: &mut dyn Iterator<Item = usize>| {
        let d: Vec<usize> = d.collect();
        mean_loss(after, d.iter().copied()) / mean_loss(before, d.iter().copied()) - 1.0
    };
    let change = relative(&mut all());
    let interval = bootstrap(n, seed, |d| relative(&mut d.iter().copied()));
    Some(LossComparison {
        units: n,
        loss_before,
        loss_after,
        perplexity_before: perplexity(loss_before),
        perplexity_after: perplexity(loss_after),
        loss_change: Change::judged(change, interval, false),
    })
}

/// One held-out example of a classifier: its true label, each model's predicted label and
/// loss (cross-entropy of the true label).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassUnit {
    pub truth: usize,
    pub before: usize,
    pub after: usize,
    pub loss_before: f64,
    pub loss_after: f64,
}

/// Accuracy, macro-F1 and loss before and after, with intervals, and their changes (accuracy
/// and macro-F1 in points as fractions: 0.12 is +12 points); the accuracy's change decides.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassComparison {
    pub examples: usize,
    pub accuracy_before: Estimate,
    pub accuracy_after: Estimate,
    pub macro_f1_before: Estimate,
    pub macro_f1_after: Estimate,
    pub loss_before: Estimate,
    pub loss_after: Estimate,
    pub accuracy_change: Change,
    pub macro_f1_change: Change,
    pub loss_change: Change,
}

/// Compare a classifier's held-out predictions before and after over `labels` classes.
pub fn compare_classes(units: &[ClassUnit], labels: usize, seed: u64) -> Option<ClassComparison> {
    let n = units.len();
    if n == 0 {
        return None;
    }
    let all: Vec<usize> = (0..n).collect();
    let accuracy = |d: &[usize], after: bool| {
        let right = d
            .iter()
            .filter(|&&i| {
                let u = &units[i];
                u.truth == if after { u.after } else { u.before }
            })
            .count();
        right as f64 / d.len() as f64
    };
    let f1 = |d: &[usize], after: bool| {
        let mut confusion = vec![vec![0usize; labels]; labels];
        for &i in d {
            let u = &units[i];
            let p = if after { u.after } else { u.before };
            if u.truth < labels && p < labels {
                confusion[u.truth][p] += 1;
            }
        }
        super::metrics::macro_f1(&confusion)
    };
    let loss = |d: &[usize], after: bool| {
        let sum: f64 = d
            .iter()
            .map(|&i| {
                if after {
                    units[i].loss_after
                } else {
                    units[i].loss_before
                }
            })
            .sum();
        sum / d.len() as f64
    };
    let accuracy_of = |after: bool| {
        let value = accuracy(&all, after);
        Estimate {
            value,
            interval: wilson((value * n as f64).round() as usize, n),
        }
    };
    let boot = |stat: &dyn Fn(&[usize], bool) -> f64, after: bool| Estimate {
        value: stat(&all, after),
        interval: bootstrap(n, seed, |d| stat(d, after)),
    };
    let change = |stat: &dyn Fn(&[usize], bool) -> f64, relative: bool, higher: bool| {
        let diff = |d: &[usize]| {
            let (b, a) = (stat(d, false), stat(d, true));
            if relative {
                a / b - 1.0
            } else {
                a - b
            }
        };
        Change::judged(diff(&all), bootstrap(n, seed, diff), higher)
    };
    Some(ClassComparison {
        examples: n,
        accuracy_before: accuracy_of(false),
        accuracy_after: accuracy_of(true),
        macro_f1_before: boot(&f1, false),
        macro_f1_after: boot(&f1, true),
        loss_before: boot(&loss, false),
        loss_after: boot(&loss, true),
        accuracy_change: change(&accuracy, false, true),
        macro_f1_change: change(&f1, false, true),
        loss_change: change(&loss, true, false),
    })
}

/// Retrieval before and after with intervals: recall@1 (Wilson), mean reciprocal rank and the
/// loss (bootstrap), and their paired changes; the recall@1 change decides, as accuracy does
/// for a classifier.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetrievalComparison {
    pub pairs: usize,
    pub accuracy_before: Estimate,
    pub accuracy_after: Estimate,
    pub mrr_before: Estimate,
    pub mrr_after: Estimate,
    pub loss_before: Estimate,
    pub loss_after: Estimate,
    pub positive_cosine_before: Estimate,
    pub positive_cosine_after: Estimate,
    pub accuracy_change: Change,
    pub mrr_change: Change,
    pub loss_change: Change,
}

/// Compare the same anchors' retrieval before and after (`None` unless both score the same
/// anchors, at least one).
pub fn compare_retrieval(
    before: &[super::metrics::RetrievalUnit],
    after: &[super::metrics::RetrievalUnit],
    seed: u64,
) -> Option<RetrievalComparison> {
    let n = before.len();
    if n == 0 || after.len() != n {
        return None;
    }
    type Stat = fn(&super::metrics::RetrievalUnit) -> f64;
    let hit: Stat = |u| (u.rank == 1) as u8 as f64;
    let rr: Stat = |u| 1.0 / u.rank as f64;
    let loss: Stat = |u| u.loss;
    let cosine: Stat = |u| u.positive_cosine;
    let mean = |units: &[super::metrics::RetrievalUnit], f: Stat, d: &[usize]| {
        d.iter().map(|&i| f(&units[i])).sum::<f64>() / d.len() as f64
    };
    let all: Vec<usize> = (0..n).collect();
    let boot = |units: &[super::metrics::RetrievalUnit], f: Stat| Estimate {
        value: mean(units, f, &all),
        interval: bootstrap(n, seed, |d| mean(units, f, d)),
    };
    let rate = |units: &[super::metrics::RetrievalUnit]| {
        let hits = units.iter().filter(|u| u.rank == 1).count();
        Estimate {
            value: hits as f64 / n as f64,
            interval: wilson(hits, n),
        }
    };
    let change = |f: Stat, higher: bool| {
        let diff = |d: &[usize]| mean(after, f, d) - mean(before, f, d);
        Change::judged(diff(&all), bootstrap(n, seed, diff), higher)
    };
    Some(RetrievalComparison {
        pairs: n,
        accuracy_before: rate(before),
        accuracy_after: rate(after),
        mrr_before: boot(before, rr),
        mrr_after: boot(after, rr),
        loss_before: boot(before, loss),
        loss_after: boot(after, loss),
        positive_cosine_before: boot(before, cosine),
        positive_cosine_after: boot(after, cosine),
        accuracy_change: change(hit, true),
        mrr_change: change(rr, true),
        loss_change: change(loss, false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_the_textbook_values() {
        // 8 of 10: Wilson's 95% interval is [0.4902, 0.9433] (Newcombe 1998, table I's method).
        let i = wilson(8, 10).unwrap();
        assert!(
            (i.low - 0.4902).abs() < 1e-4 && (i.high - 0.9433).abs() < 1e-4,
            "{i:?}"
        );
        // All right: the interval reaches 1 and stays below it at the other end.
        let i = wilson(20, 20).unwrap();
        assert!(i.high == 1.0 && (i.low - 0.8389).abs() < 1e-4, "{i:?}");
        assert_eq!(wilson(0, 0), None);
    }

    fn units(sums: &[f64]) -> Vec<UnitLoss> {
        sums.iter()
            .map(|&sum| UnitLoss { sum, count: 1.0 })
            .collect()
    }

    #[test]
    fn a_consistent_fall_is_better_and_noise_is_no_change() {
        let before = units(&[3.0, 4.0, 2.5, 5.0, 3.5, 4.5, 2.0, 3.0]);
        // Every row 10% lower: the paired interval is tight around −10% and excludes zero,
        // although the rows' spread (2 to 5) dwarfs the change.
        let after: Vec<UnitLoss> = before
            .iter()
            .map(|u| UnitLoss {
                sum: u.sum * 0.9,
                ..*u
            })
            .collect();
        let c = compare_losses(&before, &after, 7).unwrap();
        assert!((c.loss_change.value + 0.1).abs() < 1e-12);
        let i = c.loss_change.interval.unwrap();
        assert!(i.high < 0.0 && i.contains(-0.1), "{i:?}");
        assert_eq!(c.loss_change.outcome, Outcome::Better);
        // The unpaired intervals of the two means overlap: only pairing tells.
        let (b, a) = (
            c.loss_before.interval.unwrap(),
            c.loss_after.interval.unwrap(),
        );
        assert!(a.high > b.low, "{a:?} {b:?}");
        assert!((c.perplexity_before.value - c.loss_before.value.exp()).abs() < 1e-9);

        // Half the rows better, half worse by the same amount: no clear change.
        let mixed = units(&[2.7, 4.4, 2.25, 5.5, 3.15, 4.95, 1.8, 3.3]);
        let c = compare_losses(&before, &mixed, 7).unwrap();
        assert_eq!(c.loss_change.outcome, Outcome::Same);
        assert!(c.loss_change.interval.unwrap().contains(0.0));

        // Every row 10% higher: worse.
        let higher: Vec<UnitLoss> = units(&[3.3, 4.4, 2.75, 5.5, 3.85, 4.95, 2.2, 3.3]);
        assert_eq!(
            compare_losses(&before, &higher, 7)
                .unwrap()
                .loss_change
                .outcome,
            Outcome::Worse
        );
    }

    #[test]
    fn too_few_units_give_no_interval_and_no_verdict() {
        let before = units(&[3.0, 4.0, 2.5, 5.0, 3.5]);
        let after = units(&[1.0, 1.0, 1.0, 1.0, 1.0]);
        let c = compare_losses(&before, &after, 1).unwrap();
        assert!(c.loss_change.value < -0.5);
        assert_eq!(
            (c.loss_change.interval, c.loss_change.outcome),
            (None, Outcome::Same)
        );
        assert_eq!(compare_losses(&before, &after[..4], 1), None);
    }

    #[test]
    fn intervals_repeat_with_the_seed() {
        let before = units(&[3.0, 4.0, 2.5, 5.0, 3.5, 4.5, 2.0, 3.0, 6.0, 1.0]);
        let after = units(&[2.0, 4.1, 2.0, 4.0, 3.6, 4.0, 2.1, 2.5, 5.0, 1.2]);
        let a = compare_losses(&before, &after, 3).unwrap();
        assert_eq!(a, compare_losses(&before, &after, 3).unwrap());
        let i = a.loss_change.interval.unwrap();
        assert!(i.low < a.loss_change.value && a.loss_change.value < i.high);
    }

    #[test]
    fn classifier_changes_are_paired_and_judged_by_accuracy() {
        // 40 examples of two labels: the base is right on 20 (chance), the fine-tuned model on
        // 36, including every one the base got right.
        let units: Vec<ClassUnit> = (0..40)
            .map(|i| ClassUnit {
                truth: i % 2,
                before: if i < 20 { i % 2 } else { 1 - i % 2 },
                after: if i < 36 { i % 2 } else { 1 - i % 2 },
                loss_before: 0.69,
                loss_after: if i < 36 { 0.2 } else { 1.5 },
            })
            .collect();
        let c = compare_classes(&units, 2, 5).unwrap();
        assert_eq!(
            (c.accuracy_before.value, c.accuracy_after.value),
            (0.5, 0.9)
        );
        assert_eq!(c.accuracy_after.interval, wilson(36, 40));
        assert!((c.accuracy_change.value - 0.4).abs() < 1e-12);
        let i = c.accuracy_change.interval.unwrap();
        assert!(i.low > 0.2 && i.contains(0.4), "{i:?}");
        assert_eq!(c.accuracy_change.outcome, Outcome::Better);
        assert_eq!(c.loss_change.outcome, Outcome::Better);
        assert!(c.macro_f1_after.value > c.macro_f1_before.value);

        // The same predictions before and after: no change, whatever the accuracy.
        let same: Vec<ClassUnit> = units
            .iter()
            .map(|u| ClassUnit {
                after: u.before,
                loss_after: u.loss_before,
                ..*u
            })
            .collect();
        let c = compare_classes(&same, 2, 5).unwrap();
        assert_eq!(c.accuracy_change.outcome, Outcome::Same);
        assert_eq!(
            c.accuracy_change.interval,
            Some(Interval {
                low: 0.0,
                high: 0.0
            })
        );
    }
}
