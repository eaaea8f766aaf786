//! Pausing and resuming a training run between two steps ([`Control::Pause`]): a paused and
//! resumed run is the uninterrupted run (same per-step losses, bit for bit), and stopping while
//! paused ends it as a cancel does — for the causal job (GPT-2 with its real vocabulary) and the
//! classification loop (the tiny BERT); checkpoints of the loops and of the jobs, where one test
//! continues a stopped job of every task (causal, classification, sentence embeddings).

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
use webtune::train::causal_job::{CausalJob, JobOutput};
use webtune::train::classify::{train_classifier, ClassifierModel, HeadConfig};
use webtune::train::control::Control;
use webtune::train::finetune::{FinetuneConfig, Method};
use webtune::train::job::{run_job, DataSource, DatasetFile, JobConfig, JobContext, JobEvent};
use webtune::train::trainer::RunOptions;

mod common;
use common::{fixture, pairs_jsonl, sentiment_jsonl, sentiment_model};

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
        &CausalJob,
        &JobContext {
            files: &files,
            base: &base,
            backend: &Backend::cpu(),
            config,
            base_name: "tiny-gpt2-vocab",
        },
        DatasetFile {
            name: "capitals.jsonl",
            source: DataSource::Bytes(&data),
        },
        None,
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
        let evals = |s: &webtune::train::causal::FinetuneSummary| {
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
        RunOptions::default().on_step(|p| on_step(p.step)),
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
    use webtune::train::causal::{finetune, FinetuneSummary};
    use webtune::train::causal_job::prepare_data;
    use webtune::train::checkpoint::{Checkpoint, Checkpointing};
    use webtune::train::finetune::TrainableModel;
    use webtune::Code;

    fn data(config: &JobConfig) -> (Vec<TokenBatch>, Vec<TokenBatch>) {
        let files = ModelFiles::from_dir(&fixture("tiny_random/gpt2-vocab")).unwrap();
        let base = LoadedModel::load(files, &Device::flex()).unwrap();
        let bytes = std::fs::read(fixture("data/capitals.jsonl")).unwrap();
        let d = prepare_data(
            &base,
            None,
            DatasetFile {
                name: "capitals.jsonl",
                source: DataSource::Bytes(&bytes),
            },
            config,
        )
        .unwrap();
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
        let out = pollster::block_on(finetune(
            &mut model,
            &backend,
            &batches.0,
            &batches.1,
            config,
            RunOptions::default()
                .checkpointing(Some(Checkpointing {
                    resume,
                    every,
                    save: Box::new(&mut save),
                }))
                .on_step(|p| on_step(p.step)),
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
    // Without dropout, and with the model's and LoRA's dropout on: each step's masks are drawn
    // from (seed, step), so the resumed run draws the uninterrupted run's masks.
    for dropout in [false, true] {
        let mut config = causal_config("lora");
        config.checkpoint_every = 3;
        if dropout {
            config.train.model_dropout = true;
            config.train.lora_dropout = 0.1;
        }
        stopped_job_continues(&config, dropout);
    }
}

fn stopped_job_continues(config: &JobConfig, dropout: bool) {
    use std::cell::RefCell;
    use webtune::train::checkpoint::{Checkpoint, Checkpointing};

    let job = |resume: Option<Checkpoint>, stop_at: usize| {
        let files = ModelFiles::from_dir(&fixture("tiny_random/gpt2-vocab")).unwrap();
        let base = LoadedModel::load(files.clone(), &Device::flex()).unwrap();
        let data = std::fs::read(fixture("data/capitals.jsonl")).unwrap();
        let saved = RefCell::new(Vec::new());
        let mut save = |ck: Checkpoint| saved.borrow_mut().push(ck);
        let out = pollster::block_on(run_job(
            &CausalJob,
            &JobContext {
                files: &files,
                base: &base,
                backend: &Backend::cpu(),
                config,
                base_name: "tiny-gpt2-vocab",
            },
            DatasetFile {
                name: "capitals.jsonl",
                source: DataSource::Bytes(&data),
            },
            Some(Checkpointing {
                resume,
                every: 0,
                save: Box::new(&mut save),
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
    assert_eq!(
        resumed.summary.losses, straight.summary.losses,
        "dropout {dropout}"
    );
    assert_eq!(resumed.before.unwrap().loss, straight.before.unwrap().loss);
    assert_eq!(
        resumed.after.unwrap().loss,
        straight.after.unwrap().loss,
        "dropout {dropout}"
    );
    if dropout {
        // The masks do change the run: otherwise this would prove nothing about them.
        let mut plain = config.clone();
        plain.train.model_dropout = false;
        plain.train.lora_dropout = 0.0;
        let undropped = causal_job(&plain, |_| Control::Continue);
        assert_ne!(undropped.summary.losses, straight.summary.losses);
    }
}

// ---------------------------------------------------------------------------------------------
// Classification checkpoints (the tiny BERT): the trainable weights (LoRA factors or the whole
// encoder) and the head, AdamW's state, the batch order and the head-dropout generator, so a
// resumed classification run is the uninterrupted one; a checkpoint of the other kind of run
// (causal ↔ classification) or of another labelling, head, dataset or configuration is refused.

mod class_checkpoints {
    use super::*;
    use std::cell::RefCell;
    use webtune::train::causal::finetune;
    use webtune::train::causal_job::prepare_data;
    use webtune::train::checkpoint::{Checkpoint, Checkpointing};
    use webtune::train::classify::{predict, train_classifier, ClassEvalPoint, ClassifySummary};
    use webtune::train::finetune::TrainableModel;
    use webtune::train::{run_task, JobResult};
    use webtune::{Code, Error};

    fn class_config(method: Method) -> FinetuneConfig {
        FinetuneConfig {
            method,
            lora_r: 4,
            lora_alpha: 8.0,
            lora_targets: vec!["query".into(), "value".into()],
            lr: 5e-3,
            steps: Some(10),
            warmup: 2,
            grad_accum: 2,
            weight_decay: 0.01,
            eval_every: 3,
            seed: 9,
            ..FinetuneConfig::default()
        }
    }

    /// Head dropout on: the resumed run must draw the uninterrupted run's masks.
    const HEAD: HeadConfig = HeadConfig {
        pooling: Pooling::Mean,
        dropout: 0.1,
    };

    fn fresh(config: &FinetuneConfig, labels: &[&str], head: HeadConfig) -> ClassifierModel {
        let backend = Backend::cpu();
        let files = ModelFiles::from_dir(&fixture("tiny_random/bert")).expect("fixture");
        let loaded = LoadedModel::load(files, &backend.device).unwrap();
        let labels = LabelMap::from_labels(labels.iter().copied());
        ClassifierModel::prepare(loaded.family, labels, config, head).unwrap()
    }

    struct Run {
        out: webtune::Result<ClassifySummary>,
        saved: Vec<Checkpoint>,
        /// Logits of the first training batch after the run.
        logits: Vec<Vec<f32>>,
    }

    fn run_with(
        config: &FinetuneConfig,
        labels: &[&str],
        head: HeadConfig,
        batches: &[ClassBatch],
        resume: Option<Checkpoint>,
        every: usize,
        on_step: impl FnMut(usize) -> Control,
    ) -> Run {
        let backend = Backend::cpu();
        let mut model = fresh(config, labels, head);
        let saved = RefCell::new(Vec::new());
        let mut save = |ck: Checkpoint| saved.borrow_mut().push(ck);
        let mut on_step = on_step;
        let out = pollster::block_on(train_classifier(
            &mut model,
            &backend,
            batches,
            &batches[..2],
            config,
            RunOptions::default()
                .checkpointing(Some(Checkpointing {
                    resume,
                    every,
                    save: Box::new(&mut save),
                }))
                .on_step(|p| on_step(p.step)),
        ));
        let logits = pollster::block_on(predict(&model, &batches[0])).unwrap();
        Run {
            out,
            saved: saved.into_inner(),
            logits,
        }
    }

    fn run(
        config: &FinetuneConfig,
        resume: Option<Checkpoint>,
        every: usize,
        on_step: impl FnMut(usize) -> Control,
    ) -> Run {
        run_with(
            config,
            &["a", "b", "c"],
            HEAD,
            &class_batches(),
            resume,
            every,
            on_step,
        )
    }

    fn reason(e: &Error) -> &str {
        e.details["reason"].as_str().unwrap_or("")
    }

    fn evals(s: &ClassifySummary) -> Vec<ClassEvalPoint> {
        s.eval.clone()
    }

    #[test]
    fn a_classifier_resumed_from_a_checkpoint_equals_the_uninterrupted_one() {
        for method in [Method::Lora, Method::Full] {
            let config = class_config(method);
            let straight = run(&config, None, 4, |_| Control::Continue);
            let summary = straight.out.unwrap();
            assert_eq!((summary.steps, summary.cancelled), (10, false));
            // Every 4 steps, never at the end.
            let steps: Vec<usize> = straight.saved.iter().map(|c| c.step).collect();
            assert_eq!(steps, [4, 8], "{method:?}");
            let ck = &straight.saved[0];
            assert_eq!(ck.task, "classification");
            assert_eq!(ck.losses, summary.losses[..4]);
            assert_eq!(ck.consumed, 8);
            // The head is in the checkpoint, LoRA or not, and it was trained.
            let head_of = |ck: &Checkpoint| {
                ck.params
                    .iter()
                    .find(|p| p.path == "classifier.weight")
                    .expect("the head is saved")
                    .values
                    .clone()
            };
            assert!(ck.params.iter().any(|p| p.path == "classifier.bias"));
            assert_ne!(head_of(ck), head_of(&straight.saved[1]));
            if method == Method::Lora {
                assert!(ck.params.iter().any(|p| p.path.ends_with("lora.a")));
                assert!(!ck.params.iter().any(|p| p.path == "word_embeddings.weight"));
            }
            let bytes = ck.to_bytes();
            let values: usize = ck.params.iter().map(|p| p.values.len()).sum();
            eprintln!(
                "classification {method:?}: checkpoint at step 4: {} bytes ({} parameters, \
                 {values} values; optimizer {} bytes)",
                bytes.len(),
                ck.params.len(),
                ck.optimizer.len()
            );
            let back = Checkpoint::from_bytes(&bytes).unwrap();
            assert_eq!(back.params, ck.params);
            assert_eq!(back.optimizer, ck.optimizer);
            assert_eq!(back.state, ck.state);

            // Continued in a freshly loaded model (new parameter ids, a freshly drawn head).
            let resumed = run(&config, Some(back.clone()), 4, |_| Control::Continue);
            let later: Vec<usize> = resumed.saved.iter().map(|c| c.step).collect();
            assert_eq!(later, [8]);
            let r = resumed.out.unwrap();
            assert_eq!((r.steps, r.cancelled), (10, false));
            assert_eq!(r.losses, summary.losses, "{method:?}: per-step losses");
            assert_eq!(r.grad_norms, summary.grad_norms, "{method:?}: grad norms");
            assert_eq!(r.lrs, summary.lrs);
            assert_eq!(evals(&r), evals(&summary), "{method:?}: validation points");
            assert_eq!(resumed.logits, straight.logits, "{method:?}: final logits");
            // The checkpoint saved later by the resumed run is the uninterrupted run's.
            assert_eq!(resumed.saved[0].params, straight.saved[1].params);
            assert_eq!(resumed.saved[0].state, straight.saved[1].state);

            // The resumed run trains the checkpoint's head: another head there changes the
            // losses from the first resumed step on.
            let mut tampered = back;
            for p in &mut tampered.params {
                if p.path == "classifier.weight" {
                    p.values.iter_mut().for_each(|v| *v *= -1.0);
                }
            }
            let t = run(&config, Some(tampered), 0, |_| Control::Continue)
                .out
                .unwrap();
            assert_eq!(t.losses[..4], summary.losses[..4]);
            assert_ne!(t.losses[4], summary.losses[4], "{method:?}: head ignored?");
        }
    }

    #[test]
    fn a_classifier_checkpoint_is_refused_by_another_run() {
        let config = class_config(Method::Lora);
        let straight = run(&config, None, 4, |_| Control::Continue);
        let ck = straight.saved[0].clone();
        let refused = |r: Run| r.out.expect_err("refused");

        let mut other = config.clone();
        other.lr *= 2.0;
        let e = refused(run(&other, Some(ck.clone()), 0, |_| Control::Continue));
        assert_eq!((e.code, reason(&e)), (Code::ConfigInvalid, "config"));

        let batches = class_batches();
        let e = refused(run_with(
            &config,
            &["x", "y", "z"],
            HEAD,
            &batches,
            Some(ck.clone()),
            0,
            |_| Control::Continue,
        ));
        assert_eq!((e.code, reason(&e)), (Code::ConfigInvalid, "labels"));

        let cls = HeadConfig {
            pooling: Pooling::Cls,
            ..HEAD
        };
        let e = refused(run_with(
            &config,
            &["a", "b", "c"],
            cls,
            &batches,
            Some(ck.clone()),
            0,
            |_| Control::Continue,
        ));
        assert_eq!((e.code, reason(&e)), (Code::ConfigInvalid, "head"));

        let e = refused(run_with(
            &config,
            &["a", "b", "c"],
            HEAD,
            &batches[..5],
            Some(ck.clone()),
            0,
            |_| Control::Continue,
        ));
        assert_eq!((e.code, reason(&e)), (Code::ConfigInvalid, "data"));

        let mut at_end = ck.clone();
        at_end.step = 10;
        let e = refused(run(&config, Some(at_end), 0, |_| Control::Continue));
        assert_eq!(reason(&e), "step");

        let mut forged = ck.clone();
        forged.consumed = usize::MAX;
        let e = refused(run(&config, Some(forged), 0, |_| Control::Continue));
        assert_eq!(reason(&e), "inconsistent");

        // Full fine-tuning's checkpoint does not continue a LoRA run (nor the reverse).
        let full = class_config(Method::Full);
        let e = refused(run(&full, Some(ck), 0, |_| Control::Continue));
        assert_eq!(e.code, Code::ConfigInvalid);
    }

    // -------------------------------------------------------------- the job, as the page runs it

    fn job_config(method: &str) -> JobConfig {
        JobConfig::from_json(&format!(
            r#"{{"batch_size": 8, "validation_fraction": 0.25, "checkpoint_every": 5,
                "train": {{"method": "{method}", "lr": 0.01, "steps": 14, "seed": 5,
                          "warmup": 2, "grad_accum": 2, "weight_decay": 0.01,
                          "lora_targets": ["all-linear"]}}}}"#
        ))
        .expect("valid config")
    }

    /// The three jobs the page runs: the tiny GPT-2 on the capitals, the tiny BERT on labelled
    /// reviews (classification) and on sentence pairs (embeddings).
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Kind {
        Causal,
        Classification,
        Embedding,
    }

    fn task(
        kind: Kind,
        config: &JobConfig,
        resume: Option<Checkpoint>,
        mut on_step: impl FnMut(usize) -> Control,
    ) -> (webtune::Result<JobResult>, Vec<Checkpoint>) {
        let (files, base, name, data) = match kind {
            Kind::Causal => {
                let files = ModelFiles::from_dir(&fixture("tiny_random/gpt2-vocab")).unwrap();
                let base = LoadedModel::load(files.clone(), &Device::flex()).unwrap();
                let data = std::fs::read(fixture("data/capitals.jsonl")).unwrap();
                (files, base, "capitals.jsonl", data)
            }
            Kind::Classification => {
                let (files, base) = sentiment_model();
                let data = sentiment_jsonl(96).into_bytes();
                (files, base, "reviews.jsonl", data)
            }
            Kind::Embedding => {
                let (files, base) = sentiment_model();
                (files, base, "pairs.jsonl", pairs_jsonl(96).into_bytes())
            }
        };
        let saved = RefCell::new(Vec::new());
        let mut save = |ck: Checkpoint| saved.borrow_mut().push(ck);
        let out = pollster::block_on(run_task(
            &files,
            &base,
            &Backend::cpu(),
            DatasetFile {
                name,
                source: DataSource::Bytes(&data),
            },
            config,
            "tiny",
            Some(Checkpointing {
                resume,
                every: 0,
                save: Box::new(&mut save),
            }),
            |e| match e {
                JobEvent::Step(p) => on_step(p.step),
                JobEvent::Phase { .. } => Control::Continue,
            },
        ));
        (out, saved.into_inner())
    }

    /// A job's result as the page gets it, without timings (they differ between runs).
    fn untimed(r: &JobResult) -> serde_json::Value {
        fn strip(v: &mut serde_json::Value) {
            match v {
                serde_json::Value::Object(m) => {
                    for key in [
                        "seconds",
                        "first_step_ms",
                        "median_step_ms",
                        "tokens_per_s",
                        "examples_per_s",
                        "peak_memory_bytes",
                        "samples",
                    ] {
                        m.remove(key);
                    }
                    m.values_mut().for_each(strip);
                }
                serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
                _ => {}
            }
        }
        let mut v = serde_json::to_value(r).unwrap();
        strip(&mut v);
        v
    }

    /// One test over every task (the causal LM, the classifier, sentence embeddings): a job
    /// paused and stopped (the tab closing), then continued from its checkpoint in a new job,
    /// ends as the uninterrupted job — losses, validation points, before/after and the export.
    #[test]
    fn a_paused_job_of_every_task_continues_from_its_checkpoint() {
        for kind in [Kind::Causal, Kind::Classification, Kind::Embedding] {
            for method in ["lora", "full"] {
                let what = format!("{kind:?} {method}");
                let config = job_config(method);
                let (straight, saved) = task(kind, &config, None, |_| Control::Continue);
                let straight = straight.expect("the job runs");
                let steps: Vec<usize> = saved.iter().map(|c| c.step).collect();
                assert_eq!(steps, [5, 10], "{what}: checkpoint_every of the job config");

                // Paused at step 7, then the tab closes (Stop while paused): a checkpoint at 7.
                let seen = Rc::new(Cell::new(0));
                let (stopped, saved) = task(kind, &config, None, |step| {
                    if step == 7 {
                        pause(false, &seen)
                    } else {
                        Control::Continue
                    }
                });
                let stopped = untimed(&stopped.expect("the stopped job still ends"));
                assert_eq!(seen.get(), 4, "{what}: the pause was awaited");
                assert_eq!(stopped["summary"]["steps"], 7, "{what}");
                assert_eq!(stopped["summary"]["cancelled"], true, "{what}");
                let steps: Vec<usize> = saved.iter().map(|c| c.step).collect();
                assert_eq!(steps, [5, 7], "{what}");
                let bytes = saved[1].to_bytes();
                eprintln!("{what} job: checkpoint {} bytes", bytes.len());
                let ck = Checkpoint::from_bytes(&bytes).unwrap();

                let (resumed, later) = task(kind, &config, Some(ck), |_| Control::Continue);
                let resumed = resumed.expect("the job continues");
                let steps: Vec<usize> = later.iter().map(|c| c.step).collect();
                assert_eq!(steps, [10], "{what}");
                let (a, b) = (untimed(&straight), untimed(&resumed));
                assert_eq!(a["task"], b["task"]);
                assert_eq!(b["summary"]["steps"], 14, "{what}");
                assert_eq!(b["summary"]["cancelled"], false, "{what}");
                for key in ["losses", "grad_norms", "eval"] {
                    assert_eq!(a["summary"][key], b["summary"][key], "{what}: {key}");
                }
                for key in ["before", "after", "comparison", "changed_total"] {
                    assert_eq!(a[key], b[key], "{what}: {key}");
                }
                // Training did something, so the equalities above say something.
                assert_ne!(a["before"], a["after"], "{what}");
                let weights = |r: &JobResult| {
                    pollster::block_on(r.export().read("merged/model.safetensors"))
                        .expect("exported")
                };
                assert!(weights(&straight) == weights(&resumed), "{what}: export");
            }
        }
    }

    #[test]
    fn a_checkpoint_of_the_other_kind_of_job_is_refused() {
        // A causal checkpoint (tiny GPT-2, stopped at step 2) and a classification one.
        let mut causal = causal_config("lora");
        causal.checkpoint_every = 0;
        let (_, saved) = task(Kind::Causal, &causal, None, |s| (s < 2).into());
        let causal_ck = Checkpoint::from_bytes(&saved[0].to_bytes()).unwrap();
        assert_eq!(causal_ck.task, "causal");
        let config = job_config("lora");
        let (_, saved) = task(Kind::Classification, &config, None, |s| (s < 2).into());
        let class_ck = Checkpoint::from_bytes(&saved[0].to_bytes()).unwrap();
        assert_eq!(class_ck.task, "classification");

        // Causal → classification job, with the classification job's own configuration (so
        // only the kind differs), refused before any data is read or any step is taken.
        let mut same = causal_ck.clone();
        same.config = config.train.clone();
        for ck in [causal_ck.clone(), same] {
            let mut steps = 0;
            let (out, saved) = task(Kind::Classification, &config, Some(ck), |_| {
                steps += 1;
                Control::Continue
            });
            let e = out.err().expect("refused");
            assert_eq!((e.code, reason(&e)), (Code::ConfigInvalid, "task"));
            assert!(e.message.contains("causal"), "{}", e.message);
            assert_eq!(e.details["checkpoint_task"], "causal");
            assert_eq!(e.details["task"], "classification");
            assert_eq!((steps, saved.len()), (0, 0));
        }
        // … and at the training loop itself.
        let loop_config = class_config(Method::Lora);
        let mut direct = causal_ck.clone();
        direct.config = loop_config.clone();
        let e = run(&loop_config, Some(direct), 0, |_| Control::Continue)
            .out
            .expect_err("refused");
        assert_eq!((e.code, reason(&e)), (Code::ConfigInvalid, "task"));

        // Classification → causal job, and → the causal loop.
        let (out, _) = task(Kind::Causal, &causal, Some(class_ck.clone()), |_| {
            Control::Continue
        });
        let e = out.err().expect("refused");
        assert_eq!((e.code, reason(&e)), (Code::ConfigInvalid, "task"));
        assert!(e.message.contains("classification"), "{}", e.message);
        let files = ModelFiles::from_dir(&fixture("tiny_random/gpt2-vocab")).unwrap();
        let base = LoadedModel::load(files.clone(), &Device::flex()).unwrap();
        let bytes = std::fs::read(fixture("data/capitals.jsonl")).unwrap();
        let data = prepare_data(
            &base,
            None,
            DatasetFile {
                name: "capitals.jsonl",
                source: DataSource::Bytes(&bytes),
            },
            &causal,
        )
        .unwrap();
        let backend = Backend::cpu();
        let loaded = LoadedModel::load(files, &backend.device).unwrap();
        let mut model = TrainableModel::prepare(loaded.family, &causal.train).unwrap();
        let mut direct = class_ck;
        direct.config = causal.train.clone();
        let mut save = |_: Checkpoint| panic!("nothing to save");
        let e = pollster::block_on(finetune(
            &mut model,
            &backend,
            &data.train_batches,
            &data.eval_batches,
            &causal.train,
            RunOptions::default().checkpointing(Some(Checkpointing {
                resume: Some(direct),
                every: 0,
                save: Box::new(&mut save),
            })),
        ))
        .expect_err("refused");
        assert_eq!((e.code, reason(&e)), (Code::ConfigInvalid, "task"));
    }

    #[test]
    fn the_byte_format_is_versioned_and_validated() {
        let config = class_config(Method::Lora);
        let ck = run(&config, None, 4, |_| Control::Continue).saved[0].clone();
        let bytes = ck.to_bytes();
        assert_eq!(&bytes[..8], b"WTCKPT03");
        let bad = |b: &[u8]| Checkpoint::from_bytes(b).expect_err("refused").code;

        // Earlier and unknown versions are refused by name, as are a truncated file, a flipped
        // bit and a header whose shapes cannot be.
        for version in [b"WTCKPT01", b"WTCKPT02", b"WTCKPT09"] {
            let mut other = bytes.clone();
            other[..8].copy_from_slice(version);
            let e = Checkpoint::from_bytes(&other).err().unwrap();
            assert_eq!(e.code, Code::DataInvalid);
            let name = String::from_utf8_lossy(version);
            assert!(e.message.contains(name.as_ref()), "{}", e.message);
        }
        for cut in [0, 7, 15, 40, bytes.len() / 2, bytes.len() - 1] {
            assert_eq!(bad(&bytes[..cut]), Code::DataInvalid, "cut at {cut}");
        }
        // One flipped bit anywhere (header, weights, optimizer record) is caught.
        for at in [20, bytes.len() / 2, bytes.len() - 9] {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x10;
            assert_eq!(bad(&flipped), Code::DataInvalid, "bit flipped at {at}");
        }
        let mut huge = ck.clone();
        huge.params[0].shape = vec![usize::MAX, 3];
        assert_eq!(bad(&huge.to_bytes()), Code::DataInvalid);

        // A task state that does not read is refused when resuming, before any step.
        let mut odd = ck.clone();
        odd.state = serde_json::json!({ "labels": 3 });
        let odd = Checkpoint::from_bytes(&odd.to_bytes()).unwrap();
        let mut steps = 0;
        let e = run(&config, Some(odd), 0, |_| {
            steps += 1;
            Control::Continue
        })
        .out
        .expect_err("refused");
        assert_eq!(
            (e.code, reason(&e), steps),
            (Code::ConfigInvalid, "inconsistent", 0)
        );
    }
}
