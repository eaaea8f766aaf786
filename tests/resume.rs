//! Pausing and resuming a training run between two steps ([`Control::Pause`]): a paused and
//! resumed run is the uninterrupted run (same per-step losses, bit for bit), and stopping while
//! paused ends it as a cancel does — for the causal job (GPT-2 with its real vocabulary) and the
//! classification loop (the tiny BERT).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use burn::tensor::Device;
use webtune::backend::Backend;
use webtune::data::batching::{ClassBatch, LabelMap};
use webtune::io::hf::ModelFiles;
use webtune::models::bert::Pooling;
use webtune::models::loaded::LoadedModel;
use webtune::train::classify::{train_classifier, ClassifierModel, HeadConfig};
use webtune::train::control::Control;
use webtune::train::finetune::{FinetuneConfig, Method};
use webtune::train::job::{run_job, DatasetFile, JobConfig, JobEvent, JobOutput};

mod common;
use common::fixture;

/// Pending `polls` times (waking itself each time, as a timer or a message would), then ready
/// with `answer`; counts its polls in `seen`, so a test can tell the loop really awaited it.
struct Later {
    polls: usize,
    answer: bool,
    seen: Rc<Cell<usize>>,
}

impl Future for Later {
    type Output = bool;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        self.seen.set(self.seen.get() + 1);
        if self.polls == 0 {
            return Poll::Ready(self.answer);
        }
        self.polls -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

fn pause(answer: bool, seen: &Rc<Cell<usize>>) -> Control {
    Control::Pause(Box::pin(Later {
        polls: 3,
        answer,
        seen: seen.clone(),
    }))
}

fn causal_config(method: &str) -> JobConfig {
    JobConfig::from_json(&format!(
        r#"{{"batch_size": 4, "validation_fraction": 0.2, "samples": 1, "sample_tokens": 4,
            "data": {{"causal": {{"seq_len": 32}}}},
            "train": {{"method": "{method}", "lora_r": 4, "lora_alpha": 8, "lr": 0.005,
                      "steps": 10, "warmup": 2, "weight_decay": 0.01, "grad_accum": 2,
                      "seed": 3}}}}"#
    ))
    .expect("valid config")
}

/// The capitals job on the tiny GPT-2; `on_step(step)` answers after each step.
fn causal_job(config: &JobConfig, mut on_step: impl FnMut(usize) -> Control) -> JobOutput {
    let files = ModelFiles::from_dir(&fixture("tiny_random/gpt2-vocab")).expect("fixture");
    let base = LoadedModel::load(files.clone(), &Device::flex()).expect("loads");
    let data = std::fs::read(fixture("data/capitals.jsonl")).unwrap();
    pollster::block_on(run_job(
        files,
        &base,
        &Backend::cpu(),
        DatasetFile {
            name: "capitals.jsonl",
            bytes: &data,
        },
        config,
        "tiny-gpt2-vocab",
        |e| match e {
            JobEvent::Step(p) => on_step(p.step),
            _ => Control::Continue,
        },
    ))
    .expect("the job runs")
}

#[test]
fn a_paused_and_resumed_causal_run_equals_the_uninterrupted_one() {
    for method in ["lora", "full"] {
        let config = causal_config(method);
        let straight = causal_job(&config, |_| Control::Continue);
        let seen = Rc::new(Cell::new(0));
        // Two pauses, one of them right after the first step.
        let paused = causal_job(&config, |step| {
            if step == 1 || step == 6 {
                pause(true, &seen)
            } else {
                Control::Continue
            }
        });
        assert_eq!(
            seen.get(),
            2 * 4,
            "{method}: both pauses were awaited to the end"
        );
        let (a, b) = (&straight.summary, &paused.summary);
        assert_eq!((a.steps, b.steps, b.cancelled), (10, 10, false));
        assert_eq!(a.losses, b.losses, "{method}: per-step losses");
        assert_eq!(a.grad_norms, b.grad_norms, "{method}: gradient norms");
        let evals = |s: &webtune::train::finetune::FinetuneSummary| {
            s.eval
                .iter()
                .map(|e| (e.step, e.eval.loss))
                .collect::<Vec<_>>()
        };
        assert_eq!(evals(a), evals(b), "{method}: validation losses");
        assert_eq!(
            straight.after.unwrap().loss,
            paused.after.unwrap().loss,
            "{method}: held-out loss after training"
        );
        eprintln!("{method}: losses {:?}", b.losses);
    }
}

#[test]
fn stopping_a_paused_causal_run_cancels_it_and_still_evaluates_and_exports() {
    let config = causal_config("lora");
    let seen = Rc::new(Cell::new(0));
    let out = causal_job(&config, |step| {
        if step == 4 {
            pause(false, &seen)
        } else {
            Control::Continue
        }
    });
    assert_eq!(seen.get(), 4);
    assert_eq!((out.summary.steps, out.summary.cancelled), (4, true));
    assert_eq!(out.summary.losses.len(), 4);
    assert!(out.after.is_some(), "the cancelled run is evaluated");
    assert!(out
        .files
        .iter()
        .any(|f| f == "adapter/adapter_model.safetensors"));
    assert!(out.files.iter().any(|f| f == "merged/model.safetensors"));
}

fn class_batches() -> Vec<ClassBatch> {
    let mut rng = webtune::rng::Rng::new(5);
    (0..6)
        .map(|b| {
            let (rows, len) = (3, 6 + b % 3);
            let mut ids = Vec::new();
            let mut mask = Vec::new();
            for r in 0..rows {
                let real = len - r % 2;
                for i in 0..len {
                    let on = i < real;
                    ids.push(if on {
                        4 + (rng.uniform() * 90.0) as i64
                    } else {
                        0
                    });
                    mask.push(on as i64);
                }
            }
            ClassBatch {
                batch_size: rows,
                seq_len: len,
                input_ids: ids,
                attention_mask: mask,
                labels: (0..rows).map(|r| ((b + r) % 3) as i64).collect(),
            }
        })
        .collect()
}

fn class_run(method: Method, on_step: impl FnMut(usize) -> Control) -> (Vec<f32>, usize, bool) {
    let mut on_step = on_step;
    let backend = Backend::cpu();
    let config = FinetuneConfig {
        method,
        lora_r: 4,
        lora_alpha: 8.0,
        lora_targets: vec!["query".into(), "value".into()],
        lr: 5e-3,
        steps: Some(9),
        grad_accum: 2,
        weight_decay: 0.01,
        seed: 9,
        ..FinetuneConfig::default()
    };
    let files = ModelFiles::from_dir(&fixture("tiny_random/bert")).expect("fixture");
    let loaded = LoadedModel::load(files, &backend.device).unwrap();
    let head = HeadConfig {
        pooling: Pooling::Mean,
        dropout: 0.1,
    };
    let labels = LabelMap::from_labels(["a", "b", "c"]);
    let mut model = ClassifierModel::prepare(loaded.family, labels, &config, head).unwrap();
    let b = class_batches();
    let s = pollster::block_on(train_classifier(
        &mut model,
        &backend,
        &b,
        &b[..2],
        &config,
        |p| on_step(p.step),
    ))
    .unwrap();
    (s.losses, s.steps, s.cancelled)
}

#[test]
fn a_paused_and_resumed_classification_run_equals_the_uninterrupted_one() {
    for method in [Method::Lora, Method::Full] {
        let straight = class_run(method, |_| Control::Continue);
        let seen = Rc::new(Cell::new(0));
        let paused = class_run(method, |step| {
            if step == 3 {
                pause(true, &seen)
            } else {
                Control::Continue
            }
        });
        assert_eq!(seen.get(), 4);
        assert_eq!(straight.1, 9);
        // Head dropout and shuffling are seeded and untouched by the pause.
        assert_eq!(straight, paused, "{method:?}");

        let seen = Rc::new(Cell::new(0));
        let stopped = class_run(method, |step| {
            if step == 3 {
                pause(false, &seen)
            } else {
                Control::Continue
            }
        });
        assert_eq!((stopped.1, stopped.2), (3, true));
        assert_eq!(stopped.0, straight.0[..3]);
    }
}

#[test]
fn a_bool_callback_still_steers_the_loop() {
    // `true` goes on and `false` stops, as before `Control` existed.
    let (losses, steps, cancelled) = class_run(Method::Lora, |step| (step < 2).into());
    assert_eq!((losses.len(), steps, cancelled), (2, 2, true));
}

// ---------------------------------------------------------------------------------------------
// Checkpoints: a run continued from a checkpoint (saved to bytes and read back, into a freshly
// loaded model whose parameters have new ids) gives the losses of the uninterrupted run.

mod checkpoints {
    use super::*;
    use std::cell::RefCell;
    use webtune::data::TokenBatch;
    use webtune::train::checkpoint::{Checkpoint, Checkpointing};
    use webtune::train::finetune::{finetune_checkpointed, FinetuneSummary, TrainableModel};
    use webtune::train::job::prepare_data;
    use webtune::Code;

    fn data(config: &JobConfig) -> (Vec<TokenBatch>, Vec<TokenBatch>) {
        let files = ModelFiles::from_dir(&fixture("tiny_random/gpt2-vocab")).unwrap();
        let base = LoadedModel::load(files, &Device::flex()).unwrap();
        let bytes = std::fs::read(fixture("data/capitals.jsonl")).unwrap();
        let d = prepare_data(&base, None, "capitals.jsonl", &bytes, config).unwrap();
        (d.train_batches, d.eval_batches)
    }

    /// A fresh model prepared for `config` on the CPU backend (new parameter ids every time).
    fn fresh(backend: &Backend, config: &FinetuneConfig) -> TrainableModel {
        let files = ModelFiles::from_dir(&fixture("tiny_random/gpt2-vocab")).unwrap();
        let loaded = LoadedModel::load(files, &backend.device).unwrap();
        TrainableModel::prepare(loaded.family, config).unwrap()
    }

    fn run(
        config: &FinetuneConfig,
        batches: &(Vec<TokenBatch>, Vec<TokenBatch>),
        resume: Option<Checkpoint>,
        every: usize,
        on_step: impl FnMut(usize) -> Control,
    ) -> (webtune::Result<FinetuneSummary>, Vec<Checkpoint>) {
        let backend = Backend::cpu();
        let mut model = fresh(&backend, config);
        let saved = RefCell::new(Vec::new());
        let mut save = |ck: Checkpoint| saved.borrow_mut().push(ck);
        let mut on_step = on_step;
        let out = pollster::block_on(finetune_checkpointed(
            &mut model,
            &backend,
            &batches.0,
            &batches.1,
            config,
            Some(Checkpointing {
                resume,
                every,
                save: &mut save,
            }),
            |p| on_step(p.step),
        ));
        (out, saved.into_inner())
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn a_run_resumed_from_a_checkpoint_equals_the_uninterrupted_one() {
        for method in ["lora", "full"] {
            let job = causal_config(method);
            let mut config = job.train.clone();
            config.steps = Some(12);
            config.eval_every = 4;
            let batches = data(&job);
            let (straight, saved) = run(&config, &batches, None, 5, |_| Control::Continue);
            let straight = straight.unwrap();
            // Every 5 steps, never at the end.
            assert_eq!(saved.iter().map(|c| c.step).collect::<Vec<_>>(), [5, 10]);
            let ck = &saved[0];
            assert_eq!(ck.losses, straight.losses[..5]);
            let bytes = ck.to_bytes();
            let trainable: usize = ck.params.iter().map(|p| p.values.len()).sum();
            eprintln!(
                "{method}: checkpoint at step 5: {} bytes ({} parameters, {trainable} values; optimizer {} bytes)",
                bytes.len(),
                ck.params.len(),
                ck.optimizer.len()
            );
            let back = Checkpoint::from_bytes(&bytes).unwrap();
            assert_eq!(back.params, ck.params);
            assert_eq!(back.optimizer, ck.optimizer);

            // Continued in a fresh model from the bytes.
            let (resumed, later) = run(&config, &batches, Some(back), 5, |_| Control::Continue);
            let resumed = resumed.unwrap();
            assert_eq!(later.iter().map(|c| c.step).collect::<Vec<_>>(), [10]);
            assert_eq!((resumed.steps, resumed.cancelled), (12, false));
            let d = max_diff(&resumed.losses, &straight.losses);
            let g = max_diff(&resumed.grad_norms, &straight.grad_norms);
            eprintln!("{method}: resumed at 5: losses max |diff| {d:e}, grad norms {g:e}");
            assert!(d <= 1e-5, "{method}: losses differ by {d}");
            assert!(g <= 1e-4, "{method}: grad norms differ by {g}");
            let evals = |s: &FinetuneSummary| s.eval.iter().map(|e| e.step).collect::<Vec<_>>();
            assert_eq!(evals(&resumed), evals(&straight));
            let (a, b) = (
                straight.eval.last().unwrap().eval.loss,
                resumed.eval.last().unwrap().eval.loss,
            );
            assert!((a - b).abs() <= 1e-5, "{method}: final eval {a} vs {b}");
        }
    }

    #[test]
    fn pausing_and_stopping_save_a_checkpoint_that_resumes() {
        let job = causal_config("lora");
        let mut config = job.train.clone();
        config.steps = Some(8);
        let batches = data(&job);
        let (straight, none) = run(&config, &batches, None, 0, |_| Control::Continue);
        assert!(none.is_empty(), "every 0: no periodic checkpoint");
        let straight = straight.unwrap();
        let seen = Rc::new(Cell::new(0));
        let (stopped, saved) = run(&config, &batches, None, 0, |step| match step {
            2 => pause(true, &seen),
            6 => Control::Stop,
            _ => Control::Continue,
        });
        let stopped = stopped.unwrap();
        assert!(stopped.cancelled);
        assert_eq!(saved.iter().map(|c| c.step).collect::<Vec<_>>(), [2, 6]);
        let ck = Checkpoint::from_bytes(&saved[1].to_bytes()).unwrap();
        let (resumed, _) = run(&config, &batches, Some(ck), 0, |_| Control::Continue);
        let resumed = resumed.unwrap();
        assert!(max_diff(&resumed.losses, &straight.losses) <= 1e-5);

        // Another configuration, or a checkpoint at the end: refused.
        let mut other = config.clone();
        other.lr *= 2.0;
        let (err, _) = run(&other, &batches, Some(saved[0].clone()), 0, |_| {
            Control::Continue
        });
        assert_eq!(err.unwrap_err().code, Code::ConfigInvalid);
        assert_eq!(
            Checkpoint::from_bytes(b"not a checkpoint")
                .unwrap_err()
                .code,
            Code::DataInvalid
        );
    }
}

/// The job the page runs: a checkpoint saved when a job is stopped continues it in a new job
/// (fresh model, data read again) with the uninterrupted job's losses and held-out loss.
#[test]
fn a_stopped_job_continues_from_its_checkpoint() {
    use std::cell::RefCell;
    use webtune::train::checkpoint::{Checkpoint, Checkpointing};
    use webtune::train::job::run_job_checkpointed;

    let mut config = causal_config("lora");
    config.checkpoint_every = 3;
    let job = |resume: Option<Checkpoint>, stop_at: usize| {
        let files = ModelFiles::from_dir(&fixture("tiny_random/gpt2-vocab")).unwrap();
        let base = LoadedModel::load(files.clone(), &Device::flex()).unwrap();
        let data = std::fs::read(fixture("data/capitals.jsonl")).unwrap();
        let saved = RefCell::new(Vec::new());
        let mut save = |ck: Checkpoint| saved.borrow_mut().push(ck);
        let out = pollster::block_on(run_job_checkpointed(
            files,
            &base,
            &Backend::cpu(),
            DatasetFile {
                name: "capitals.jsonl",
                bytes: &data,
            },
            &config,
            "tiny-gpt2-vocab",
            Some(Checkpointing {
                resume,
                every: 0,
                save: &mut save,
            }),
            |e| match e {
                JobEvent::Step(p) if p.step == stop_at => Control::Stop,
                _ => Control::Continue,
            },
        ))
        .expect("the job runs");
        (out, saved.into_inner())
    };
    let (straight, saved) = job(None, 0);
    // `checkpoint_every` of the job config: 3, 6, 9 of 10 steps.
    assert_eq!(saved.iter().map(|c| c.step).collect::<Vec<_>>(), [3, 6, 9]);
    let (stopped, saved) = job(None, 5);
    assert!(stopped.summary.cancelled);
    assert_eq!(saved.iter().map(|c| c.step).collect::<Vec<_>>(), [3, 5]);
    let ck = Checkpoint::from_bytes(&saved[1].to_bytes()).unwrap();
    let (resumed, _) = job(Some(ck), 0);
    assert_eq!(
        (resumed.summary.steps, resumed.summary.cancelled),
        (10, false)
    );
    assert_eq!(resumed.summary.losses, straight.summary.losses);
    assert_eq!(resumed.before.unwrap().loss, straight.before.unwrap().loss);
    assert_eq!(resumed.after.unwrap().loss, straight.after.unwrap().loss);
}
