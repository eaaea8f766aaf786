//! The foundation's native checks: the toy transformer trains on the CPU backend, runs are
//! reproducible from their seed, the progress callback can stop a run, and bad configs are
//! refused with `config.invalid`.

use webtune::backend::Backend;
use webtune::train::toy::{train_toy, ToyTrainConfig};
use webtune::Code;

fn config(steps: usize, seed: u64) -> ToyTrainConfig {
    ToyTrainConfig {
        steps,
        seed,
        ..ToyTrainConfig::default()
    }
}

fn run(cfg: &ToyTrainConfig) -> webtune::train::toy::ToySummary {
    pollster::block_on(train_toy(&Backend::cpu(), cfg, |_| true)).expect("toy training runs")
}

#[test]
fn loss_falls_on_cpu() {
    let summary = run(&config(150, 42));
    assert_eq!(summary.steps, 150);
    assert!(!summary.cancelled);
    // Untrained, the copied half is a uniform guess over 16 tokens: ln 16 ≈ 2.77.
    assert!(
        (summary.initial_loss - 16f32.ln()).abs() < 0.1,
        "initial loss {} should be near ln(16)",
        summary.initial_loss
    );
    assert!(
        summary.final_loss < 0.5 * summary.initial_loss,
        "loss should at least halve: {} → {}",
        summary.initial_loss,
        summary.final_loss
    );
    assert!(summary.losses.iter().all(|l| l.is_finite()));
}

#[test]
fn same_seed_reproduces_and_other_seed_differs() {
    let a = run(&config(12, 7));
    let b = run(&config(12, 7));
    let c = run(&config(12, 8));
    assert_eq!(
        a.losses, b.losses,
        "identical seeds must give identical losses"
    );
    assert_ne!(a.losses, c.losses, "a different seed must change the run");
}

#[test]
fn progress_callback_can_cancel() {
    let mut seen = Vec::new();
    let summary = pollster::block_on(train_toy(&Backend::cpu(), &config(1000, 1), |p| {
        seen.push((p.step, p.total_steps, p.lr));
        p.step < 5
    }))
    .expect("cancelled run still returns a summary");
    assert!(summary.cancelled);
    assert_eq!(summary.steps, 5);
    assert_eq!(summary.losses.len(), 5);
    let steps: Vec<usize> = seen.iter().map(|s| s.0).collect();
    assert_eq!(steps, vec![1, 2, 3, 4, 5]);
    assert!(seen.iter().all(|s| s.1 == 1000));
    // Warmup (10 steps) starts at a learning rate of 0, as in transformers.
    assert_eq!(seen[0].2, 0.0);
    assert!(seen[1].2 > 0.0);
}

#[test]
fn invalid_configs_are_refused_with_a_code() {
    let bad = [
        ToyTrainConfig {
            steps: 0,
            ..Default::default()
        },
        ToyTrainConfig {
            lr: -1.0,
            ..Default::default()
        },
        ToyTrainConfig {
            lr: f64::NAN,
            ..Default::default()
        },
        ToyTrainConfig {
            d_model: 30,
            heads: 4,
            ..Default::default()
        },
        ToyTrainConfig {
            vocab: 1,
            ..Default::default()
        },
        ToyTrainConfig {
            batch_size: 0,
            ..Default::default()
        },
    ];
    for cfg in bad {
        let err = pollster::block_on(train_toy(&Backend::cpu(), &cfg, |_| true))
            .expect_err("invalid config must be refused");
        assert_eq!(err.code, Code::ConfigInvalid, "{cfg:?}: {err}");
        assert!(!err.message.is_empty());
    }
    let err = ToyTrainConfig::from_json(r#"{"stepz": 3}"#).expect_err("unknown key");
    assert_eq!(err.code, Code::ConfigInvalid);
    assert!(err.message.contains("stepz"), "{}", err.message);
}
