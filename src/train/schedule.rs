//! Learning-rate schedules with the semantics of Hugging Face's `get_*_schedule_with_warmup`:
//! the factor at (0-based) step `s` is `s / warmup` during warmup — so the very first update
//! uses a learning rate of 0 when warmup > 0, exactly as transformers does.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    Constant,
    Linear,
    #[default]
    Cosine,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub kind: ScheduleKind,
    pub base_lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl LrSchedule {
    pub fn lr_at(&self, step: usize) -> f64 {
        self.base_lr * self.factor(step)
    }

    fn factor(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return step as f64 / self.warmup_steps.max(1) as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / decay_steps).min(1.0);
        match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Linear => 1.0 - progress,
            ScheduleKind::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(kind: ScheduleKind) -> LrSchedule {
        LrSchedule {
            kind,
            base_lr: 1.0,
            warmup_steps: 4,
            total_steps: 14,
        }
    }

    #[test]
    fn warmup_is_linear_from_zero() {
        let s = sched(ScheduleKind::Constant);
        let lrs: Vec<f64> = (0..6).map(|i| s.lr_at(i)).collect();
        assert_eq!(lrs, vec![0.0, 0.25, 0.5, 0.75, 1.0, 1.0]);
    }

    #[test]
    fn linear_and_cosine_decay_to_zero_at_the_end() {
        let lin = sched(ScheduleKind::Linear);
        assert_eq!(lin.lr_at(4), 1.0);
        assert!((lin.lr_at(9) - 0.5).abs() < 1e-12);
        assert_eq!(lin.lr_at(14), 0.0);
        let cos = sched(ScheduleKind::Cosine);
        assert_eq!(cos.lr_at(4), 1.0);
        assert!((cos.lr_at(9) - 0.5).abs() < 1e-12);
        assert!(cos.lr_at(14).abs() < 1e-12);
        // Past the end the factor stays at its final value instead of rising again.
        assert!(cos.lr_at(20).abs() < 1e-12);
    }
}
