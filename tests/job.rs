//! A whole fine-tuning job (the path the page and `webtune train` take): dataset file in,
//! validation split, LoRA training, before/after evaluation, samples, export that loads back.

use burn::tensor::Device;
use webtune::backend::Backend;
use webtune::eval::uncertainty::{wilson, Outcome};
use webtune::io::hf::ModelFiles;
use webtune::models::loaded::LoadedModel;
use webtune::train::causal_job::CausalJob;
use webtune::train::job::{
    run_job, DataSource, DatasetFile, HeldOut, JobConfig, JobContext, JobEvent,
};
use webtune::Code;

mod common;
use common::{fixture, sentiment_jsonl, sentiment_model};

/// The tiny random GPT-2 with the real GPT-2 vocabulary and tokenizer.
fn model() -> (ModelFiles, LoadedModel) {
    let files = ModelFiles::from_dir(&fixture("tiny_random/gpt2-vocab")).expect("fixture");
    let base = LoadedModel::load(files.clone(), &Device::flex()).expect("loads");
    (files, base)
}

fn config(method: &str, lr: f64, steps: usize) -> JobConfig {
    JobConfig::from_json(&format!(
        r#"{{"batch_size": 8, "validation_fraction": 0.2, "samples": 2, "sample_tokens": 8,
            "data": {{"causal": {{"seq_len": 32}}}},
            "train": {{"method": "{method}", "lora_r": 8, "lora_alpha": 16,
                      "lora_targets": ["all-linear"], "lr": {lr}, "steps": {steps},
                      "warmup": 2, "seed": 7}}}}"#
    ))
    .expect("valid config")
}

/// Run a job on the capitals dataset.
fn capitals_job(
    config: &JobConfig,
    on_event: impl FnMut(JobEvent) -> bool,
) -> (LoadedModel, webtune::train::causal_job::JobOutput) {
    let (files, base) = model();
    let data = std::fs::read(fixture("data/capitals.jsonl")).unwrap();
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
        None,
        on_event,
    ))
    .expect("the job runs");
    (base, out)
}

#[test]
fn full_fine_tuning_learns_the_answer_template() {
    let (_, out) = capitals_job(&config("full", 0.01, 40), |_| true);
    let (before, after) = (out.before.unwrap(), out.after.unwrap());
    // The answers follow one template ("The capital of X is Y."): even a random tiny model
    // learns most of it in 40 steps (measured: 10.80 → 5.90).
    assert!(
        after.loss < 0.7 * before.loss,
        "held-out loss {} → {}",
        before.loss,
        after.loss
    );
    assert!(!out.files.iter().any(|f| f.starts_with("adapter/")));
}

#[test]
fn lora_job_lowers_held_out_loss_and_exports_a_model_that_loads() {
    let mut phases = Vec::new();
    let mut steps = 0;
    let (base, out) = capitals_job(&config("lora", 0.05, 40), |event| {
        match event {
            JobEvent::Phase { phase, .. } => phases.push(phase),
            JobEvent::Step(p) => {
                let tokens = p.tokens_per_s.is_some() && p.examples_per_s.is_none();
                assert!(tokens, "a causal LM reports token steps");
                steps += 1
            }
        }
        true
    });

    assert_eq!(out.report.examples, 40);
    assert_eq!(out.train_examples + out.validation_examples, 40);
    assert_eq!(out.validation_examples, 8);
    assert_eq!(steps, 40);
    assert_eq!(out.summary.steps, 40);
    for phase in ["data", "samples", "training", "export"] {
        assert!(
            phases.contains(&phase),
            "phase {phase} reported: {phases:?}"
        );
    }
    let (before, after) = (out.before.unwrap(), out.after.unwrap());
    // LoRA cannot touch this random model's tied 16-wide embeddings, so it moves the loss
    // only a little here (measured 10.80 → 10.67); full fine-tuning is held to more below.
    assert!(
        after.loss < before.loss,
        "held-out loss {} → {}",
        before.loss,
        after.loss
    );
    // Every held-out example scored (fewer than the budget allows), each one row: the
    // comparison resamples those 8 rows, and its outcome follows its interval.
    assert_eq!(
        out.held_out,
        HeldOut {
            examples: 8,
            scored: 8,
            returned_to_training: 0
        }
    );
    let c = out.comparison.expect("a comparison with intervals");
    assert_eq!((c.units, before.row_losses.len()), (8, 8));
    assert_eq!(
        before.row_tokens.iter().sum::<u32>() as usize,
        before.tokens
    );
    let rows: f64 = before.row_losses.iter().map(|&l| l as f64).sum();
    assert!((rows / before.tokens as f64 - before.loss as f64).abs() < 1e-5);
    assert!((c.loss_before.value - before.loss as f64).abs() < 1e-5);
    let change = after.loss as f64 / before.loss as f64 - 1.0;
    assert!((c.loss_change.value - change).abs() < 1e-5);
    let interval = c.loss_change.interval.expect("8 rows give an interval");
    assert!(interval.contains(c.loss_change.value), "{interval:?}");
    let expected = if interval.high < 0.0 {
        Outcome::Better
    } else if interval.low > 0.0 {
        Outcome::Worse
    } else {
        Outcome::Same
    };
    assert_eq!(c.loss_change.outcome, expected);
    assert_eq!(out.samples.len(), 2);
    for s in &out.samples {
        assert!(
            s.prompt.starts_with("What is the capital of"),
            "{}",
            s.prompt
        );
        assert!(s.reference.starts_with("The capital of"));
    }
    assert!(out.files.contains(&"merged/model.safetensors".to_string()));
    assert!(out.files.contains(&"merged/tokenizer.json".to_string()));
    assert!(out
        .files
        .contains(&"adapter/adapter_model.safetensors".to_string()));

    // The export is a complete model: it loads, and gives the tuned model's logits.
    let mut merged = ModelFiles::new();
    for (name, bytes) in pollster::block_on(out.export.read_all()).unwrap() {
        if let Some(file) = name.strip_prefix("merged/") {
            merged.insert(file, bytes);
        }
    }
    let reloaded = LoadedModel::load(merged, &Device::flex()).expect("export loads");
    assert!(reloaded.tokenizer.is_some());
    let tuned = out.tuned.as_ref().unwrap();
    let ids = base.encode("What is the capital of Peru?\n").unwrap();
    let a = pollster::block_on(reloaded.logits(&ids)).unwrap();
    let b = pollster::block_on(tuned.logits(&ids)).unwrap();
    let base_logits = pollster::block_on(base.logits(&ids)).unwrap();
    let diff = |x: &[Vec<f32>], y: &[Vec<f32>]| {
        x.iter()
            .flatten()
            .zip(y.iter().flatten())
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max)
    };
    assert!(diff(&a, &b) < 1e-5);
    assert!(diff(&a, &base_logits) > 1e-2, "training changed the model");
}

#[test]
fn datasets_the_model_cannot_learn_from_are_refused_clearly() {
    let (files, base) = model();
    let run_with = |config: &JobConfig, name: &str, bytes: &[u8]| {
        pollster::block_on(run_job(
            &CausalJob,
            &JobContext {
                files: &files.clone(),
                base: &base,
                backend: &Backend::cpu(),
                config,
                base_name: "tiny",
            },
            DatasetFile {
                name,
                source: DataSource::Bytes(bytes),
            },
            None,
            |_| true,
        ))
        .err()
        .expect("refused")
    };
    let run = |name: &str, bytes: &[u8]| run_with(&config("lora", 0.01, 2), name, bytes);
    let err = run(
        "reviews.jsonl",
        b"{\"text\": \"good\", \"label\": \"pos\"}\n{\"text\": \"bad\", \"label\": \"neg\"}\n",
    );
    assert_eq!(err.code, Code::DataInvalid);
    assert!(err.message.contains("classification"), "{}", err.message);

    let err = run("one.jsonl", b"{\"text\": \"just one example\"}\n");
    assert_eq!(err.code, Code::DataInvalid);

    // Too few examples because a record was skipped: the error says which and why (a tenth of
    // 4 examples holds none out).
    let small = b"{\"text\": \"one example\"}\n{\"text\": \"two\"}\n{\"text\": \"three\"}\n{\"text\": broken\n{\"text\": \"five\"}\n";
    let mut tenth = config("lora", 0.01, 2);
    tenth.validation_fraction = Some(0.1);
    let err = run_with(&tenth, "small.jsonl", small);
    assert_eq!(err.code, Code::DataInvalid);
    assert!(
        err.message
            .contains("the split left 4 training and 0 validation examples")
            && err
                .message
                .contains("1 record was skipped: small.jsonl line 4: malformed JSON"),
        "{}",
        err.message
    );
    // The default share holds out at least one example of so small a file (a quarter, aiming
    // at MIN_HELD_OUT), so the same file trains.
    let mut auto = config("lora", 0.01, 2);
    auto.validation_fraction = None;
    let out = pollster::block_on(run_job(
        &CausalJob,
        &JobContext {
            files: &files.clone(),
            base: &base,
            backend: &Backend::cpu(),
            config: &auto,
            base_name: "tiny",
        },
        DatasetFile {
            name: "small.jsonl",
            source: DataSource::Bytes(small),
        },
        None,
        |_| true,
    ))
    .expect("the default share leaves something to score");
    assert_eq!((out.train_examples, out.held_out.examples), (3, 1));
    let err = run("two.jsonl", b"{\"text\": \"only this\"}\n[1, 2]\n");
    assert!(
        err.message.contains("has 1 usable example(s)")
            && err
                .message
                .contains("1 record was skipped: two.jsonl line 2"),
        "{}",
        err.message
    );

    let mut stop = config("lora", 0.01, 2);
    stop.data.policy = serde_json::from_str("\"stop\"").unwrap();
    let err = pollster::block_on(run_job(
        &CausalJob,
        &JobContext { files: &files.clone(), base: &base, backend: &Backend::cpu(), config: &stop, base_name: "tiny" },
        DatasetFile {
            name: "qa.jsonl",
            source: DataSource::Bytes(b"{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"c\", \"completion\": \"d\"}\n{\"prompt\": broken\n"),
        },
        None,
        |_| true,
    ))
    .err()
    .expect("stops at the broken line");
    assert_eq!(err.code, Code::DataInvalid);
    assert!(err.message.contains("line 3"), "{}", err.message);

    // A model without a tokenizer cannot read text.
    let tiny = ModelFiles::from_dir(&fixture("tiny_random/gpt2")).unwrap();
    let no_tok = LoadedModel::load(tiny.clone(), &Device::flex()).unwrap();
    let err = pollster::block_on(run_job(
        &CausalJob,
        &JobContext {
            files: &tiny,
            base: &no_tok,
            backend: &Backend::cpu(),
            config: &config("lora", 0.01, 2),
            base_name: "tiny",
        },
        DatasetFile {
            name: "capitals.jsonl",
            source: DataSource::Bytes(&std::fs::read(fixture("data/capitals.jsonl")).unwrap()),
        },
        None,
        |_| true,
    ))
    .err()
    .expect("refused");
    assert_eq!(err.code, Code::ModelMissingFile);
}

// ---------------------------------------------------------------- classification jobs

fn class_config(method: &str) -> JobConfig {
    JobConfig::from_json(&format!(
        r#"{{"batch_size": 8, "validation_fraction": 0.25,
            "train": {{"method": "{method}", "lr": 0.01, "steps": 40, "seed": 5, "warmup": 2,
                      "lora_targets": ["all-linear"]}}}}"#
    ))
    .expect("valid config")
}

#[test]
fn a_classification_job_learns_the_labels_and_reports_what_changed() {
    use webtune::train::classify_job::{eval_class_file, evaluate_classification};
    use webtune::train::{run_task, JobResult};
    let (files, base) = sentiment_model();
    let data = sentiment_jsonl(80);
    let config = class_config("lora");
    let (mut steps, mut phases) = (0, Vec::new());
    let result = pollster::block_on(run_task(
        &files,
        &base,
        &Backend::cpu(),
        DatasetFile {
            name: "reviews.jsonl",
            source: DataSource::Bytes(data.as_bytes()),
        },
        &config,
        "tiny-bert",
        None,
        |e| {
            match e {
                JobEvent::Step(p) => {
                    let examples = p.examples_per_s.is_some() && p.tokens_per_s.is_none();
                    assert!(examples, "a classifier reports classification steps");
                    steps += 1
                }
                JobEvent::Phase { phase, .. } => phases.push(phase),
            }
            true
        },
    ))
    .expect("the job runs");
    let JobResult::Classification(mut out) = result else {
        panic!("an encoder runs a classification job");
    };
    assert_eq!(steps, 40);
    assert!(
        phases.contains(&"memory") && phases.contains(&"export"),
        "{phases:?}"
    );
    assert_eq!(out.labels, ["neg", "pos"]);
    assert!(!out.head_from_checkpoint);
    assert_eq!(out.validation_examples, 20);
    let (before, after) = (&out.before, &out.after);
    // Intervals: Wilson for the accuracies, a paired bootstrap for the change, which decides.
    let c = out.comparison.expect("a comparison with intervals");
    assert_eq!(c.examples, 20);
    let right = |m: &webtune::eval::metrics::ClassMetrics| (m.accuracy * 20.0).round() as usize;
    assert_eq!(c.accuracy_before.interval, wilson(right(before), 20));
    assert_eq!(c.accuracy_after.interval, wilson(right(after), 20));
    assert!((c.accuracy_change.value - (after.accuracy - before.accuracy)).abs() < 1e-12);
    assert!((c.macro_f1_after.value - after.macro_f1).abs() < 1e-12);
    let interval = c
        .accuracy_change
        .interval
        .expect("20 examples give an interval");
    assert!(interval.contains(c.accuracy_change.value));
    if interval.low > 0.0 {
        assert_eq!(c.accuracy_change.outcome, Outcome::Better);
    }
    assert_eq!((before.examples, after.examples), (20, 20));
    for m in [before, after] {
        let counted: usize = m.confusion_matrix.iter().flatten().sum();
        assert_eq!(counted, 20);
        let right: usize = (0..2).map(|c| m.confusion_matrix[c][c]).sum();
        assert_eq!(m.accuracy, right as f64 / 20.0);
        assert_eq!(m.per_class.iter().map(|c| c.support).sum::<usize>(), 20);
    }
    // The opinion words decide the label: the tiny encoder learns it (measured 0.45 → 1.0).
    assert!(
        after.accuracy >= 0.9,
        "accuracy {} → {}",
        before.accuracy,
        after.accuracy
    );
    assert!(after.loss < before.loss);
    assert_eq!(out.changed_total, out.changed.len());
    assert!(out.fixed + out.broken <= out.changed_total);
    let flipped = out.changed.iter().filter(|c| c.status == "fixed").count();
    assert_eq!(flipped, out.fixed);
    assert!(out.memory.total > out.memory.weights);
    // "Before" is reproducible on its own: the base encoder with the head the job drew.
    let (_, base_again) = pollster::block_on(evaluate_classification(
        &base,
        DatasetFile {
            name: "reviews.jsonl",
            source: DataSource::Bytes(data.as_bytes()),
        },
        &config,
    ))
    .unwrap();
    assert!(
        (base_again.loss - before.loss).abs() < 1e-6,
        "{} vs {}",
        base_again.loss,
        before.loss
    );
    assert_eq!(base_again.confusion_matrix, before.confusion_matrix);
    // The export loads as a classifier with the labels and the pooling it was trained with, and
    // scores the held-out split as the job's "after" did.
    let tuned = out.tuned.take().expect("the tuned model");
    assert_eq!(
        tuned.info.labels.as_deref(),
        Some(&["neg".to_string(), "pos".to_string()][..])
    );
    assert_eq!(
        tuned.info.pooling,
        Some(webtune::models::bert::Pooling::Mean)
    );
    let (_, again) = pollster::block_on(evaluate_classification(
        &tuned,
        DatasetFile {
            name: "reviews.jsonl",
            source: DataSource::Bytes(data.as_bytes()),
        },
        &config,
    ))
    .unwrap();
    assert_eq!(again.confusion_matrix, after.confusion_matrix);
    assert!(
        (again.loss - after.loss).abs() < 1e-4,
        "{} vs {}",
        again.loss,
        after.loss
    );
    let names = out.export.names();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert!(
        names.contains(&"merged/tokenizer.json") && names.contains(&"merged/config.json"),
        "{names:?}"
    );
    let whole = pollster::block_on(eval_class_file(
        &tuned,
        "reviews.jsonl",
        data.as_bytes(),
        &config,
    ))
    .unwrap();
    assert_eq!(whole["examples"], 80);
    assert!(whole["eval"]["accuracy"].as_f64().unwrap() >= 0.9);
    // A typed sentence through the loaded classifier.
    let logits =
        pollster::block_on(tuned.classify("the film was really wonderful and fun")).unwrap();
    assert!(
        logits[1] > logits[0],
        "a positive review is classified pos: {logits:?}"
    );
}

#[test]
fn tasks_refuse_data_of_the_other_kind_with_a_clear_error() {
    use webtune::train::run_task;
    let (files, base) = sentiment_model();
    let text = "{\"text\": \"the film was good\"}\n{\"text\": \"the plot was dull\"}\n";
    let err = pollster::block_on(run_task(
        &files,
        &base,
        &Backend::cpu(),
        DatasetFile {
            name: "plain.jsonl",
            source: DataSource::Bytes(text.as_bytes()),
        },
        &class_config("full"),
        "tiny-bert",
        None,
        |_| true,
    ))
    .err()
    .expect("an encoder needs labels");
    assert_eq!(err.code, Code::DataInvalid);
    assert!(err.message.contains("no labels"), "{}", err.message);
    let (files, base) = model();
    let labelled = sentiment_jsonl(10);
    let err = pollster::block_on(run_task(
        &files,
        &base,
        &Backend::cpu(),
        DatasetFile {
            name: "reviews.jsonl",
            source: DataSource::Bytes(labelled.as_bytes()),
        },
        &config("lora", 0.01, 2),
        "tiny-gpt2-vocab",
        None,
        |_| true,
    ))
    .err()
    .expect("a causal LM does not classify");
    assert_eq!(err.code, Code::DataInvalid);
    assert!(
        err.message.contains("classification dataset"),
        "{}",
        err.message
    );
}

/// The validation file and the training file as one `DatasetFiles`.
fn with_validation<'a>(
    train: (&'a str, &'a [u8]),
    validation: (&'a str, &'a [u8]),
) -> webtune::train::job::DatasetFiles<'a> {
    webtune::train::job::DatasetFiles {
        train: DatasetFile {
            name: train.0,
            source: DataSource::Bytes(train.1),
        },
        validation: Some(DatasetFile {
            name: validation.0,
            source: DataSource::Bytes(validation.1),
        }),
        progress: None,
    }
}

#[test]
fn held_out_examples_beyond_validation_max_go_back_to_training() {
    use webtune::train::causal_job::prepare_data;
    let (_, base) = model();
    let data = std::fs::read(fixture("data/capitals.jsonl")).unwrap();
    let file = DatasetFile {
        name: "capitals.jsonl",
        source: DataSource::Bytes(&data),
    };
    let mut capped = config("lora", 0.01, 2);
    capped.validation_max = Some(3);
    let split = prepare_data(&base, None, file, &capped).unwrap();
    assert_eq!(
        split.held_out,
        HeldOut {
            examples: 8,
            scored: 3,
            returned_to_training: 5
        }
    );
    assert_eq!((split.train.len(), split.validation.len()), (37, 3));
    let mut all: Vec<usize> = split
        .train
        .iter()
        .chain(&split.validation)
        .copied()
        .collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..40).collect::<Vec<_>>(),
        "every example once, on one side"
    );
    // The scored three are a draw among the eight held out, not the first three of them.
    let whole = prepare_data(&base, None, file, &config("lora", 0.01, 2)).unwrap();
    assert_eq!(whole.validation.len(), 8, "by default all 8 are scored");
    assert!(split
        .validation
        .iter()
        .all(|i| whole.validation.contains(i)));

    // The rest of a separate validation file is left unscored, never trained on.
    let lines: Vec<String> = String::from_utf8(data.clone())
        .unwrap()
        .lines()
        .map(|l| format!("{l}\n"))
        .collect();
    let (train, validation) = (lines[..30].concat(), lines[30..].concat());
    let files = with_validation(
        ("train.jsonl", train.as_bytes()),
        ("valid.jsonl", validation.as_bytes()),
    );
    let split = prepare_data(&base, None, files, &capped).unwrap();
    assert_eq!((split.train.len(), split.validation.len()), (30, 3));
    assert_eq!(
        split.held_out,
        HeldOut {
            examples: 10,
            scored: 3,
            returned_to_training: 0
        }
    );
}

#[test]
fn a_play_is_one_document_packed_without_end_of_text_between_its_chunks() {
    use webtune::train::causal_job::prepare_data;
    let (_, base) = model();
    let eos = base.eos_token_id.expect("GPT-2 has an end-of-text token") as i64;
    let verse = "Now, fair Hippolyta, our nuptial hour\nDraws on apace; four happy days bring in\n\
                 Another moon: but, O, methinks, how slow\nThis old moon wanes! she lingers my desires,\n";
    // Numbered, so that no two chunks are identical (duplicates stay on one side of a split).
    let play: String = (0..20)
        .map(|i| format!("Scene {i}, and so it goes on,\n{verse}"))
        .collect();
    let file = DatasetFile {
        name: "play.txt",
        source: DataSource::Bytes(play.as_bytes()),
    };
    let data = prepare_data(&base, None, file, &config("lora", 0.01, 2)).unwrap();
    assert!(data.dataset.document, "{:?}", data.report.text_mode);
    assert!(data.train.len() > 1 && !data.validation.is_empty());
    // (Padding may reuse the token's id; it is never a target that counts.)
    let counted_eos = |batches: &[webtune::data::TokenBatch]| {
        batches
            .iter()
            .flat_map(|b| b.targets.iter().zip(&b.loss_mask))
            .filter(|&(&t, &m)| t == eos && m > 0.0)
            .count()
    };
    assert_eq!(
        counted_eos(&data.train_batches) + counted_eos(&data.eval_batches),
        0
    );

    // Lines that stand alone each end with the token, as before.
    let mut lines = config("lora", 0.01, 2);
    lines.data.text_mode = webtune::data::TextMode::Lines;
    let data = prepare_data(&base, None, file, &lines).unwrap();
    assert!(!data.dataset.document);
    assert!(counted_eos(&data.train_batches) > 0);
}

#[test]
fn a_separate_validation_file_is_the_held_out_set_and_never_trained_on() {
    use webtune::train::causal_job::prepare_data;
    let (_, base) = model();
    let all = std::fs::read_to_string(fixture("data/capitals.jsonl")).unwrap();
    let lines: Vec<&str> = all.lines().collect();
    // Training: the first 30 pairs plus two that are also in the validation file.
    let train: String = lines[..30]
        .iter()
        .chain(&lines[30..32])
        .map(|l| format!("{l}\n"))
        .collect();
    let validation: String = lines[30..].iter().map(|l| format!("{l}\n")).collect();
    let data = prepare_data(
        &base,
        None,
        with_validation(
            ("train.jsonl", train.as_bytes()),
            ("valid.jsonl", validation.as_bytes()),
        ),
        &config("lora", 0.01, 2),
    )
    .expect("both files read");
    assert_eq!(data.overlap_removed, 2);
    assert_eq!((data.train.len(), data.validation.len()), (30, 10));
    let report = data
        .validation_report
        .as_ref()
        .expect("the validation file's report");
    assert_eq!((report.file.as_str(), report.examples), ("valid.jsonl", 10));
    for &i in &data.validation {
        assert_eq!(&*data.dataset.examples[i].loc.file, "valid.jsonl");
    }
    for &i in &data.train {
        let example = &data.dataset.examples[i];
        assert_eq!(&*example.loc.file, "train.jsonl");
        assert!(data
            .validation
            .iter()
            .all(|&v| data.dataset.examples[v].content != example.content));
    }
    // The whole validation file is scored (10 examples, batches of 8), not a share of it.
    let rows: usize = data.eval_batches.iter().map(|b| b.batch_size).sum();
    assert_eq!(rows, 10);
    // Every training example also in the validation file: nothing is left to train on.
    let err = prepare_data(
        &base,
        None,
        with_validation(
            ("train.jsonl", validation.as_bytes()),
            ("valid.jsonl", validation.as_bytes()),
        ),
        &config("lora", 0.01, 2),
    )
    .err()
    .expect("no training examples left");
    assert_eq!(err.code, Code::DataInvalid);
    assert!(
        err.message.contains("0 training")
            && err.message.contains("10 training example(s) were dropped"),
        "{}",
        err.message
    );
}

#[test]
fn a_validation_file_must_match_the_training_file() {
    use webtune::train::causal_job::prepare_data;
    use webtune::train::classify_job::prepare_class_data;
    let (_, bert) = sentiment_model();
    let train = sentiment_jsonl(20);
    let class_cfg = class_config("lora");
    // A label the training file never has.
    let odd = "{\"text\": \"the film was fine\", \"label\": \"neutral\"}\n\
               {\"text\": \"the film was good\", \"label\": \"pos\"}\n";
    let err = prepare_class_data(
        &bert,
        with_validation(
            ("train.jsonl", train.as_bytes()),
            ("valid.jsonl", odd.as_bytes()),
        ),
        &class_cfg,
    )
    .err()
    .expect("an unknown label is refused");
    assert_eq!(err.code, Code::DataInvalid);
    assert!(
        err.message.contains("valid.jsonl") && err.message.contains("neutral"),
        "{}",
        err.message
    );
    // A validation file without labels, for a classifier.
    let plain = "{\"text\": \"the film was fine\"}\n";
    let err = prepare_class_data(
        &bert,
        with_validation(
            ("train.jsonl", train.as_bytes()),
            ("valid.jsonl", plain.as_bytes()),
        ),
        &class_cfg,
    )
    .err()
    .expect("a validation file without labels is refused");
    assert!(
        err.message.contains("valid.jsonl has no labels"),
        "{}",
        err.message
    );
    // And a labelled validation file for a causal LM.
    let (_, gpt2) = model();
    let capitals = std::fs::read(fixture("data/capitals.jsonl")).unwrap();
    let err = prepare_data(
        &gpt2,
        None,
        with_validation(
            ("capitals.jsonl", &capitals),
            ("valid.jsonl", train.as_bytes()),
        ),
        &config("lora", 0.01, 2),
    )
    .err()
    .expect("a labelled validation file is refused for a causal LM");
    assert!(
        err.message
            .contains("valid.jsonl is a classification dataset"),
        "{}",
        err.message
    );
}

#[test]
fn a_classification_job_evaluates_on_the_validation_file() {
    use webtune::train::{run_task, JobResult};
    let (files, base) = sentiment_model();
    // A 400-example validation file: scored whole by default (the evaluation budget of this
    // small encoder is far larger), not the first 64 as before.
    let data = sentiment_jsonl(448);
    let lines: Vec<&str> = data.lines().collect();
    let train: String = lines[..48].iter().map(|l| format!("{l}\n")).collect();
    let validation: String = lines[48..].iter().map(|l| format!("{l}\n")).collect();
    let mut config = class_config("lora");
    config.train.steps = Some(4);
    let mut reading = String::new();
    let result = pollster::block_on(run_task(
        &files,
        &base,
        &Backend::cpu(),
        with_validation(
            ("train.jsonl", train.as_bytes()),
            ("valid.jsonl", validation.as_bytes()),
        ),
        &config,
        "tiny-bert",
        None,
        |e| {
            if let JobEvent::Phase {
                phase: "data",
                message,
            } = e
            {
                reading = message;
            }
            true
        },
    ))
    .expect("the job runs");
    let JobResult::Classification(out) = result else {
        panic!("an encoder runs a classification job");
    };
    assert!(reading.contains("valid.jsonl"), "{reading}");
    let report = out
        .validation_report
        .as_ref()
        .expect("the validation report");
    assert_eq!(report.examples, 400);
    // Duplicate texts in the generated reviews may overlap across the two files.
    assert_eq!(out.train_examples + out.overlap_removed, 48);
    assert_eq!(out.validation_examples, 400);
    assert_eq!((out.before.examples, out.after.examples), (400, 400));
    assert_eq!(
        out.held_out,
        HeldOut {
            examples: 400,
            scored: 400,
            returned_to_training: 0
        }
    );
    assert_eq!(out.comparison.expect("intervals").examples, 400);
    let json = serde_json::to_value(&out).unwrap();
    assert_eq!(json["validation_report"]["file"], "valid.jsonl");
}

#[test]
fn the_merged_export_can_be_half_precision() {
    use webtune::io::safetensors::{SafeTensorsFile, StoreDtype};
    let mut config = config("lora", 0.01, 2);
    let (_, f32_run) = capitals_job(&config, |_| true);
    config.export_dtype = StoreDtype::F16;
    let (_, f16_run) = capitals_job(&config, |_| true);
    let file = |out: &webtune::train::causal_job::JobOutput, name: &str| {
        pollster::block_on(out.export.read(name)).unwrap()
    };
    let full = SafeTensorsFile::parse("f32", file(&f32_run, "merged/model.safetensors")).unwrap();
    let half = SafeTensorsFile::parse("f16", file(&f16_run, "merged/model.safetensors")).unwrap();
    let (full_bytes, half_bytes) = (
        file(&f32_run, "merged/model.safetensors").len(),
        file(&f16_run, "merged/model.safetensors").len(),
    );
    assert!(
        half_bytes * 2 < full_bytes + 4096,
        "{half_bytes} vs {full_bytes}"
    );
    // Same tensors, each the f32 export's values rounded to f16 (same seed, same training).
    assert_eq!(
        full.tensors.keys().collect::<Vec<_>>(),
        half.tensors.keys().collect::<Vec<_>>()
    );
    for name in full.tensors.keys() {
        let (a, shape_a) = full.read_f32(name).unwrap();
        let (b, shape_b) = half.read_f32(name).unwrap();
        assert_eq!(shape_a, shape_b);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(half::f16::from_f32(*x).to_f32(), *y, "{name}");
        }
    }
    let config_json: serde_json::Value =
        serde_json::from_slice(&file(&f16_run, "merged/config.json")).unwrap();
    assert_eq!(config_json["torch_dtype"], "float16");
    // The adapter stays f32, and the half-precision folder loads as a model again.
    assert_eq!(
        file(&f32_run, "adapter/adapter_model.safetensors"),
        file(&f16_run, "adapter/adapter_model.safetensors")
    );
    let mut merged = ModelFiles::new();
    for (n, b) in pollster::block_on(f16_run.export.read_all()).unwrap() {
        if let Some(f) = n.strip_prefix("merged/") {
            merged.insert(f.to_owned(), b);
        }
    }
    LoadedModel::load(merged, &Device::flex()).expect("the f16 export loads");
    // What the job evaluated is the same either way: the page's model keeps f32.
    assert_eq!(f32_run.after.unwrap().loss, f16_run.after.unwrap().loss);
}

/// `inspect_data` (the page's dataset panel, `webtune data`): both tasks preview their first
/// examples as the model sees them and size the job against the backend's room.
#[test]
fn inspecting_data_previews_examples_and_sizes_the_job() {
    use webtune::train::memory::MemoryLimits;
    use webtune::train::{inspect_data, Room};
    let (files, base) = model();
    let capitals = std::fs::read(fixture("data/capitals.jsonl")).unwrap();
    let file = || DatasetFile {
        name: "capitals.jsonl",
        source: DataSource::Bytes(&capitals),
    };
    let config = config("lora", 1e-3, 4);
    let out = inspect_data(&base, Some(&files), file(), &config, Room::default()).unwrap();
    assert_eq!(out["task"], "causal");
    let preview = out["preview"].as_array().unwrap();
    assert_eq!(preview.len(), 3);
    for row in preview {
        let tokens = row["tokens"].as_array().unwrap();
        let counts: Vec<bool> = tokens
            .iter()
            .map(|t| t["counts"].as_bool().unwrap())
            .collect();
        // A prompt/completion pair: the first token is never a target, the prompt does not
        // count, the completion does.
        assert!(!counts[0] && counts.contains(&true) && counts.contains(&false));
        let text: String = tokens.iter().map(|t| t["text"].as_str().unwrap()).collect();
        assert!(!text.trim().is_empty());
    }
    assert!(out["memory"]["weights"].as_u64().unwrap() > 0);
    assert!(out["memory_problem"].is_null());
    assert_eq!(out["total_steps"], 4);
    // A room too small for the job: said before it starts.
    let tight = Room {
        kept_files: 0,
        limits: MemoryLimits {
            total: Some(1 << 20),
            buffer: None,
        },
    };
    let out = inspect_data(&base, Some(&files), file(), &config, tight).unwrap();
    let problem = out["memory_problem"].as_str().unwrap();
    assert!(problem.contains("GiB"), "{problem}");

    // A classifier's preview names each example's label and counts every real token.
    let (files, base) = sentiment_model();
    let data = sentiment_jsonl(40);
    let file = DatasetFile {
        name: "sentiment.jsonl",
        source: DataSource::Bytes(data.as_bytes()),
    };
    let out = inspect_data(&base, Some(&files), file, &config, Room::default()).unwrap();
    assert_eq!(out["task"], "classification");
    assert_eq!(out["labels"], serde_json::json!(["neg", "pos"]));
    for row in out["preview"].as_array().unwrap() {
        assert!(["neg", "pos"].contains(&row["label"].as_str().unwrap()));
        let tokens = row["tokens"].as_array().unwrap();
        assert!(!tokens.is_empty() && tokens.iter().all(|t| t["counts"] == true));
    }
}
