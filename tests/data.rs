//! Datasets: every format, schema detection, the validation report (on nasty inputs and on the
//! sample files the page ships), the split, causal and classification batches, chat templates.

use webtune::data::batching::{class_batch, CausalEncoder, CausalOptions};
use webtune::data::split::{split, Holdout};
use webtune::data::{
    inspect, ChatTemplate, Content, Dataset, Example, Format, InspectOptions, Message, Policy,
    Report, Schema, TextMode,
};
use webtune::io::tokenizer::Tokenizer;
use webtune::Code;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn gpt2() -> Tokenizer {
    let bytes = std::fs::read(format!(
        "{ROOT}/tests/fixtures/tokenizers/gpt2/tokenizer.json"
    ))
    .unwrap();
    Tokenizer::from_bytes(&bytes).unwrap()
}

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(format!("{ROOT}/www/samples/{name}")).unwrap()
}

fn read(name: &str, text: &str) -> (Dataset, Report) {
    inspect(name, text.as_bytes(), &InspectOptions::default(), None).unwrap()
}

fn texts(ds: &Dataset) -> Vec<String> {
    ds.examples
        .iter()
        .map(|e| match &e.content {
            Content::Text { text } | Content::Labeled { text, .. } => text.clone(),
            Content::Pair { prompt, completion } => format!("{prompt}|{completion}"),
            Content::SentencePair { anchor, positive } => format!("{anchor}≈{positive}"),
            Content::Chat { messages } => format!("{} messages", messages.len()),
        })
        .collect()
}

fn lines(ds: &Dataset) -> Vec<usize> {
    ds.examples.iter().map(|e| e.loc.line).collect()
}

// ---------------------------------------------------------------- formats

#[test]
fn jsonl_with_crlf_and_blank_lines() {
    let (ds, report) = read(
        "a.jsonl",
        "{\"text\":\"one\"}\r\n\r\n{\"text\":\"two\"}\r\n",
    );
    assert_eq!(report.format, Format::Jsonl);
    assert_eq!(texts(&ds), ["one", "two"]);
    assert_eq!(lines(&ds), [1, 3]);
    assert_eq!(report.blank_lines, 1);
    assert_eq!(report.records, 2);
}

#[test]
fn json_array_of_objects() {
    let (ds, report) = read("a.json", "[\n  {\"prompt\": \"p1\", \"completion\": \"c1\"},\n  {\"prompt\": \"p2\", \"completion\": \"c2\"}\n]");
    assert_eq!(report.format, Format::Json);
    assert_eq!(texts(&ds), ["p1|c1", "p2|c2"]);
    assert_eq!(lines(&ds), [2, 3]);
}

#[test]
fn csv_with_bom_quotes_embedded_newlines_and_crlf() {
    let csv = "\u{feff}text,label\r\n\"Hello, world\",pos\r\n\"a \"\"quoted\"\" word\nacross lines\",neg\r\nplain,pos\r\n";
    let (ds, report) = read("reviews.csv", csv);
    assert_eq!(report.format, Format::Csv);
    assert_eq!(
        report.schema.schema,
        Schema::Classification {
            text: "text".into(),
            label: "label".into()
        }
    );
    assert_eq!(
        texts(&ds),
        ["Hello, world", "a \"quoted\" word\nacross lines", "plain"]
    );
    // Rows count data records; lines are where each starts (the second spans two lines).
    let rows: Vec<_> = ds
        .examples
        .iter()
        .map(|e| (e.loc.row, e.loc.line))
        .collect();
    assert_eq!(rows, [(Some(1), 2), (Some(2), 3), (Some(3), 5)]);
    assert_eq!(report.labels.as_ref().unwrap()["pos"], 2);
}

#[test]
fn csv_row_with_wrong_field_count_is_named() {
    let (ds, report) = read("x.csv", "prompt,completion\na,b\nonly-one\nc,d\n");
    assert_eq!(texts(&ds), ["a|b", "c|d"]);
    assert_eq!(report.skipped_by_reason["wrong_field_count"], 1);
    let issue = &report.issues[0];
    assert_eq!((issue.loc.row, issue.loc.line), (Some(2), 3));
    assert!(
        issue
            .message
            .starts_with("x.csv row 2 (line 3): this row has 1 fields but the header has 2"),
        "{}",
        issue.message
    );
}

#[test]
fn tsv_is_tab_separated() {
    let (ds, report) = read("qa.tsv", "question\tanswer\nWhy, though?\tBecause.\n");
    assert_eq!(report.format, Format::Tsv);
    assert_eq!(texts(&ds), ["Why, though?|Because."]);
}

#[test]
fn text_lines_and_document_mode() {
    let text = "first line\n\nsecond line\r\nthird\n";
    let (ds, report) = read("a.txt", text);
    assert_eq!(report.format, Format::Text);
    assert_eq!(texts(&ds), ["first line", "second line", "third"]);
    assert_eq!(lines(&ds), [1, 3, 4]);
    assert_eq!(report.blank_lines, 1);

    let options = InspectOptions {
        text_mode: TextMode::Document { chunk_chars: 24 },
        ..Default::default()
    };
    let (ds, _) = inspect("a.txt", text.as_bytes(), &options, None).unwrap();
    assert_eq!(texts(&ds), ["first line\n\nsecond line\n", "third\n"]);
    assert_eq!(lines(&ds), [1, 4]);
}

#[test]
fn invalid_utf8_names_byte_offset_and_line() {
    let mut bytes = b"{\"text\": \"ok\"}\n{\"text\": \"caf".to_vec();
    bytes.push(0xE9); // cp1252 é
    bytes.extend_from_slice(b"\"}\n");
    let err = inspect("reviews.jsonl", &bytes, &InspectOptions::default(), None).unwrap_err();
    assert_eq!(err.code, Code::DataInvalid);
    assert_eq!(err.code.as_str(), "data.invalid");
    assert_eq!(err.details["byte_offset"], 28);
    assert_eq!(err.details["line"], 2);
    assert_eq!(err.details["file"], "reviews.jsonl");
    assert!(
        err.message.contains("byte 0xE9 at byte offset 28 (line 2"),
        "{}",
        err.message
    );
}

#[test]
fn empty_file_is_an_error() {
    for name in ["e.jsonl", "e.txt", "e.csv"] {
        let err = inspect(name, b"\n\n", &InspectOptions::default(), None).unwrap_err();
        assert_eq!(err.code, Code::DataInvalid, "{name}");
    }
}

// ---------------------------------------------------------------- validation

const BAD_JSONL: &str = "{\"text\": \"fine\", \"label\": \"a\"}\n{\"text\": \"broken\" \"label\": \"a\"}\n{\"label\": \"b\"}\n{\"text\": \"  \", \"label\": \"b\"}\n{\"text\": \"also fine\", \"label\": \"b\"}\n";

#[test]
fn malformed_line_is_reported_with_its_line_and_a_page_ready_message() {
    let (ds, report) = read("reviews.jsonl", BAD_JSONL);
    assert_eq!(report.records, 5);
    assert_eq!(report.examples, 2);
    assert_eq!(report.skipped, 3);
    assert_eq!(report.skipped_by_reason["malformed_json"], 1);
    assert_eq!(report.skipped_by_reason["missing_field"], 1);
    assert_eq!(report.skipped_by_reason["empty_text"], 1);
    assert_eq!(lines(&ds), [1, 5]);
    let malformed = &report.issues[0];
    assert_eq!(malformed.loc.line, 2);
    assert_eq!(
        malformed.message,
        "reviews.jsonl line 2: malformed JSON at column 19: expected `,` or `}`"
    );
    let missing = &report.issues[1];
    assert_eq!(
        (missing.loc.line, missing.field.as_deref()),
        (3, Some("text"))
    );
    assert_eq!(
        missing.message,
        "reviews.jsonl line 3, field \"text\": the field is missing"
    );
    // The report is JSON for the page, with the location flattened into each issue.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["issues"][0]["line"], 2);
    assert_eq!(json["issues"][0]["file"], "reviews.jsonl");
    assert_eq!(json["issues"][0]["reason"], "malformed_json");
    assert_eq!(json["schema"]["schema"]["kind"], "classification");
    assert_eq!(json["labels"]["a"], 1);
}

#[test]
fn stop_policy_fails_at_the_first_bad_record() {
    // Options come from the page or the CLI as JSON; every field has a default.
    let parsed: InspectOptions = serde_json::from_str("{}").unwrap();
    assert_eq!(parsed, InspectOptions::default());
    let parsed: InspectOptions =
        serde_json::from_str(r#"{"policy": "stop", "causal": {"seq_len": 64}, "text_mode": {"mode": "document", "chunk_chars": 500}}"#)
            .unwrap();
    assert_eq!((parsed.policy, parsed.causal.seq_len), (Policy::Stop, 64));
    assert_eq!(parsed.causal.separator, "\n");
    let options = InspectOptions {
        policy: Policy::Stop,
        ..Default::default()
    };
    let err = inspect("reviews.jsonl", BAD_JSONL.as_bytes(), &options, None).unwrap_err();
    assert_eq!(err.code, Code::DataInvalid);
    assert_eq!(err.details["line"], 2);
    assert_eq!(err.details["reason"], "malformed_json");
    assert_eq!(err.details["file"], "reviews.jsonl");
    let err = inspect(
        "r.jsonl",
        b"{\"text\":\"a\",\"label\":\"x\"}\n{\"text\":\"\",\"label\":\"x\"}\n",
        &options,
        None,
    )
    .unwrap_err();
    assert_eq!(
        (err.details["line"].as_u64(), err.details["field"].as_str()),
        (Some(2), Some("text"))
    );
}

#[test]
fn labels_seen_once_are_warnings_not_skips() {
    let (_, report) = read("l.jsonl", "{\"text\":\"a\",\"label\":\"x\"}\n{\"text\":\"b\",\"label\":\"x\"}\n{\"text\":\"c\",\"label\":\"rare\"}\n");
    assert_eq!(report.examples, 3);
    assert_eq!(report.warnings.len(), 1);
    assert_eq!(report.warnings[0].reason, "label_seen_once");
    assert_eq!(report.warnings[0].loc.line, 3);
    assert_eq!(report.warnings[0].field.as_deref(), Some("label"));
}

#[test]
fn a_10_mb_line_is_far_too_long() {
    let mut text = String::from("{\"text\": \"short\"}\n{\"text\": \"");
    text.push_str(&"ab ".repeat(10 * 1024 * 1024 / 3));
    text.push_str("\"}\n");
    let tok = gpt2();
    let options = InspectOptions {
        causal: CausalOptions {
            seq_len: 64,
            ..Default::default()
        },
        ..Default::default()
    };
    let (ds, report) = inspect("big.jsonl", text.as_bytes(), &options, Some(&tok)).unwrap();
    assert_eq!(ds.examples.len(), 1);
    assert_eq!(report.skipped_by_reason["too_long"], 1);
    assert_eq!(report.issues[0].loc.line, 2);
    assert!(report.issues[0]
        .message
        .contains("more than 8× the sequence length (64)"));
}

#[test]
fn mixed_schemas_and_duplicates_are_counted() {
    let (ds, report) = read(
        "m.jsonl",
        "{\"prompt\":\"p\",\"completion\":\"c\"}\n{\"prompt\":\"p\",\"completion\":\"c\"}\n{\"text\":\"stray\"}\n{\"prompt\":\"q\",\"completion\":\"d\"}\n[1,2]\n\"a bare string\"\n",
    );
    assert!(matches!(
        report.schema.schema,
        Schema::PromptCompletion { .. }
    ));
    assert!(report.schema.detected);
    assert_eq!(ds.examples.len(), 3);
    assert_eq!(report.duplicates, 1);
    assert_eq!(report.skipped_by_reason["missing_field"], 2); // {"text"} and the bare string
    assert_eq!(report.skipped_by_reason["not_an_object"], 1);
    assert_eq!(report.skipped, 3);
    assert_eq!(report.records, report.examples + report.skipped);
}

// ---------------------------------------------------------------- schemas

#[test]
fn each_schema_is_detected_and_can_be_overridden() {
    let cases: [(&str, &str); 9] = [
        ("{\"text\":\"t\"}", "text"),
        ("{\"prompt\":\"p\",\"completion\":\"c\"}", "prompt_completion"),
        ("{\"input\":\"p\",\"output\":\"c\"}", "prompt_completion"),
        ("{\"question\":\"p\",\"answer\":\"c\"}", "prompt_completion"),
        ("{\"prompt\":\"p\",\"response\":\"c\"}", "prompt_completion"),
        ("{\"instruction\":\"i\",\"input\":\"\",\"output\":\"o\"}", "alpaca"),
        ("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"yo\"}]}", "chat"),
        ("{\"sentence\":\"s\",\"label\":1}", "classification"),
        ("{\"text\":\"s\",\"category\":\"c\"}", "classification"),
    ];
    for (line, kind) in cases {
        let (ds, report) = read("s.jsonl", line);
        let json = serde_json::to_value(&report.schema).unwrap();
        assert_eq!(json["schema"]["kind"], kind, "{line}");
        assert_eq!(ds.examples.len(), 1, "{line}: {:?}", report.issues);
    }
    // A numeric label becomes its text.
    let (ds, _) = read("s.jsonl", "{\"sentence\":\"s\",\"label\":1}");
    assert_eq!(ds.examples[0].content.label(), Some("1"));

    // Overriding: treat the prompt alone as plain text.
    let schema: Schema = serde_json::from_str(r#"{"kind":"text","text":"prompt"}"#).unwrap();
    let options = InspectOptions {
        schema: Some(schema.clone()),
        ..Default::default()
    };
    let (ds, report) = inspect(
        "s.jsonl",
        b"{\"prompt\":\"p\",\"completion\":\"c\"}",
        &options,
        None,
    )
    .unwrap();
    assert!(!report.schema.detected);
    assert_eq!(report.schema.schema, schema);
    assert_eq!(texts(&ds), ["p"]);

    let err = inspect("s.jsonl", b"{\"foo\":1}", &InspectOptions::default(), None).unwrap_err();
    assert_eq!(err.details["reason"], "unknown_schema");
    assert!(err.message.contains("fields: foo"), "{}", err.message);
}

// ---------------------------------------------------------------- sample files

#[test]
fn report_on_the_polarity_sample() {
    let tok = gpt2();
    let bytes = sample("pang_lee_polarity_200.jsonl");
    let options = InspectOptions {
        causal: CausalOptions {
            seq_len: 32,
            ..Default::default()
        },
        ..Default::default()
    };
    let (ds, report) =
        inspect("pang_lee_polarity_200.jsonl", &bytes, &options, Some(&tok)).unwrap();
    assert_eq!(
        (report.records, report.examples, report.skipped),
        (200, 200, 0)
    );
    let labels = report.labels.as_ref().unwrap();
    assert_eq!((labels["neg"], labels["pos"]), (100, 100));
    assert_eq!(ds.labels.as_ref().unwrap().labels, ["neg", "pos"]);
    // Token statistics agree with tokenizing each text directly.
    let mut lengths: Vec<usize> = ds
        .examples
        .iter()
        .map(|e| match &e.content {
            Content::Labeled { text, .. } => tok.encode(text).unwrap().len(),
            _ => unreachable!(),
        })
        .collect();
    lengths.sort();
    let t = report.tokens.as_ref().unwrap();
    assert_eq!((t.min, t.max), (lengths[0], lengths[199]));
    assert_eq!(t.median, lengths[99]);
    assert_eq!(t.p95, lengths[189]);
    assert_eq!(t.truncated, lengths.iter().filter(|&&l| l > 32).count());
    assert_eq!(t.total, lengths.iter().sum::<usize>() as u64);
    assert_eq!(t.histogram.iter().map(|b| b.count).sum::<usize>(), 200);
    assert!(t.min <= t.median && t.median <= t.p95 && t.p95 <= t.max);
}

#[test]
fn report_on_the_qa_sample() {
    let tok = gpt2();
    let bytes = sample("chatterbot_english_qa.jsonl");
    let (ds, report) = inspect(
        "chatterbot_english_qa.jsonl",
        &bytes,
        &InspectOptions::default(),
        Some(&tok),
    )
    .unwrap();
    assert_eq!(
        report.schema.schema,
        Schema::PromptCompletion {
            prompt: "prompt".into(),
            completion: "response".into()
        }
    );
    // The upstream corpus has a trivia entry split into single characters (lines 930–1240):
    // 28 of its records have a blank prompt or response and are reported, not dropped silently.
    assert_eq!(
        (report.records, report.examples, report.skipped),
        (1257, 1229, 28)
    );
    assert_eq!(report.skipped_by_reason["empty_text"], 28);
    assert_eq!(report.issues[0].loc.line, 931);
    assert_eq!(report.issues[0].field.as_deref(), Some("response"));
    assert_eq!(
        report.duplicates, 0,
        "the sample is unique prompt/response pairs"
    );
    assert_eq!(ds.examples[0].loc.line, 1);
    let t = report.tokens.as_ref().unwrap();
    // prompt + "\n" + response + <|endoftext|>, counted independently of the encoder.
    let mut lengths: Vec<usize> = ds
        .examples
        .iter()
        .map(|e| match &e.content {
            Content::Pair { prompt, completion } => {
                tok.encode(&format!("{prompt}\n")).unwrap().len()
                    + tok.encode_with(completion, false).unwrap().len()
                    + 1
            }
            _ => unreachable!(),
        })
        .collect();
    lengths.sort();
    assert_eq!((t.min, t.max), (lengths[0], lengths[lengths.len() - 1]));
    assert_eq!(t.truncated, lengths.iter().filter(|&&l| l > 257).count());
    assert!(t.truncated > 0 && t.min >= 3, "{t:?}");
}

#[test]
fn report_on_the_shakespeare_sample() {
    let bytes = sample("shakespeare_excerpt.txt");
    let text = std::str::from_utf8(&bytes).unwrap();
    let non_blank = text.lines().filter(|l| !l.trim().is_empty()).count();
    let blank = text.lines().filter(|l| l.trim().is_empty()).count();

    // A play is continuous text: detected, and read as one document in chunks of about one
    // row (3 characters per token of the sequence length) that together hold every line.
    let (ds, report) = read("shakespeare_excerpt.txt", text);
    assert_eq!(report.format, Format::Text);
    let choice = report
        .text_mode
        .as_ref()
        .expect("a text file says how it was read");
    let chunk = 3 * InspectOptions::default().causal.seq_len;
    assert_eq!(choice.mode, TextMode::Document { chunk_chars: chunk });
    assert!(choice.detected);
    assert!(
        choice.reason.starts_with("continuous text ("),
        "{}",
        choice.reason
    );
    assert!(ds.document);
    assert_eq!(texts(&ds).concat(), text);
    assert!(ds.examples.iter().all(|e| match &e.content {
        Content::Text { text } => text.chars().count() <= chunk,
        _ => false,
    }));
    assert_eq!(report.examples, ds.examples.len());
    assert!(report.examples > 100, "{} chunks", report.examples);

    // One example per line when asked.
    let options = InspectOptions {
        text_mode: TextMode::Lines,
        ..Default::default()
    };
    let (ds, report) = inspect("shakespeare_excerpt.txt", &bytes, &options, None).unwrap();
    assert_eq!(report.examples, non_blank);
    assert_eq!(report.blank_lines, blank);
    assert_eq!(report.skipped, 0);
    assert_eq!(texts(&ds)[0], "A Midsummer Night's Dream");
    assert!(!ds.document);
    assert!(!report.text_mode.unwrap().detected);
}

#[test]
fn lines_that_stand_alone_are_examples_and_running_text_is_a_document() {
    // Sentences, one per line: each line ends a sentence.
    let sentences: String = (0..30)
        .map(|i| format!("Sentence number {i} is complete on its own line.\n"))
        .collect();
    let (ds, report) = read("sentences.txt", &sentences);
    let choice = report.text_mode.unwrap();
    assert_eq!((choice.mode, choice.detected), (TextMode::Lines, true));
    assert!(
        choice.reason.contains("0% end mid-sentence"),
        "{}",
        choice.reason
    );
    assert_eq!(ds.examples.len(), 30);
    assert!(!ds.document);

    // Prose wrapped at a fixed width: lines break mid-sentence and continue in lower case.
    let prose = "It was the best of times, it was the worst of times, it was the age of \
                 wisdom, it was the age of foolishness, it was the epoch of belief, it was the \
                 epoch of incredulity, it was the season of Light, it was the season of \
                 Darkness. "
        .repeat(8);
    let wrapped: String = prose
        .as_bytes()
        .chunks(60)
        .map(|c| format!("{}\n", String::from_utf8_lossy(c)))
        .collect();
    let (ds, report) = read("prose.txt", &wrapped);
    assert!(matches!(
        report.text_mode.unwrap().mode,
        TextMode::Document { .. }
    ));
    assert!(ds.document);

    // Too few lines to judge: one per line.
    let (ds, report) = read("short.txt", "a line, unfinished\nanother one\n");
    assert_eq!(report.text_mode.unwrap().mode, TextMode::Lines);
    assert_eq!(ds.examples.len(), 2);
}

// ---------------------------------------------------------------- split

fn labeled(n_pos: usize, n_neg: usize) -> Dataset {
    let mut s = String::new();
    for i in 0..n_pos {
        s.push_str(&format!("{{\"text\":\"good {i}\",\"label\":\"pos\"}}\n"));
    }
    for i in 0..n_neg {
        s.push_str(&format!("{{\"text\":\"bad {i}\",\"label\":\"neg\"}}\n"));
    }
    read("l.jsonl", &s).0
}

#[test]
fn split_is_deterministic_and_stratified() {
    let ds = labeled(80, 20);
    let a = split(&ds, Holdout::Fraction(0.2), 7).unwrap();
    let b = split(&ds, Holdout::Fraction(0.2), 7).unwrap();
    let c = split(&ds, Holdout::Fraction(0.2), 8).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.validation, c.validation);
    assert!(a.stratified);
    assert_eq!((a.train.len(), a.validation.len()), (80, 20));
    let pos = a
        .validation
        .iter()
        .filter(|&&i| ds.examples[i].content.label() == Some("pos"))
        .count();
    assert_eq!((pos, 20 - pos), (16, 4), "label proportions kept");
    let mut all: Vec<usize> = a.train.iter().chain(&a.validation).copied().collect();
    all.sort();
    assert_eq!(all, (0..100).collect::<Vec<_>>());

    let by_count = split(&ds, Holdout::Count(10), 7).unwrap();
    assert_eq!(by_count.validation.len(), 10);
    assert!(split(&ds, Holdout::Fraction(1.5), 7).is_err());
}

#[test]
fn duplicates_never_straddle_the_split() {
    let mut s = String::new();
    for i in 0..30 {
        s.push_str(&format!("{{\"text\":\"t{}\"}}\n", i % 10));
    }
    let ds = read("d.txt.jsonl", &s).0;
    let sp = split(&ds, Holdout::Fraction(0.3), 1).unwrap();
    assert_eq!(sp.duplicates, 20);
    assert!(!sp.stratified);
    assert_eq!(sp.validation.len(), 9, "3 groups of 3");
    for &v in &sp.validation {
        assert!(sp
            .train
            .iter()
            .all(|&t| ds.examples[t].content != ds.examples[v].content));
    }
}

// ---------------------------------------------------------------- causal batches

fn example(content: Content) -> Example {
    let (ds, _) = read("x.jsonl", "{\"text\":\"x\"}");
    Example {
        loc: ds.examples[0].loc.clone(),
        content,
    }
}

#[test]
fn prompt_is_masked_completion_counts_padding_is_masked() {
    let tok = gpt2();
    let enc = CausalEncoder::new(
        &tok,
        None,
        CausalOptions {
            seq_len: 16,
            ..Default::default()
        },
    );
    let eos = enc.eos_id().unwrap();
    assert_eq!(eos, 50256);
    let e = example(Content::Pair {
        prompt: "Hello world".into(),
        completion: "Hi there".into(),
    });
    let prompt_ids = tok.encode("Hello world\n").unwrap();
    let completion_ids = tok.encode_with("Hi there", false).unwrap();
    let (p, c) = (prompt_ids.len(), completion_ids.len() + 1); // + EOS
    let b = enc.batch(&[&e]).unwrap();
    assert_eq!((b.batch_size, b.seq_len), (1, 16));
    // A long seq_len does not pad a short pair further than its batch needs: the same row.
    let wide = CausalEncoder::new(
        &tok,
        None,
        CausalOptions {
            seq_len: 128,
            ..Default::default()
        },
    );
    assert_eq!(wide.batch(&[&e]).unwrap(), b);
    let n = p + c;
    for t in 0..16 {
        // Target t is token t+1: it counts iff it is a completion token (or the EOS).
        let expect = if t + 1 >= p && t + 1 < n { 1.0 } else { 0.0 };
        assert_eq!(b.loss_mask[t], expect, "position {t}");
    }
    assert_eq!(b.counted(), c);
    assert_eq!(
        &b.inputs[..p],
        prompt_ids
            .iter()
            .map(|&i| i as i64)
            .collect::<Vec<_>>()
            .as_slice()
    );
    assert_eq!(b.targets[n - 2], eos as i64);
    assert!(b.inputs[n..].iter().all(|&i| i == eos as i64), "padding");

    // Truncation keeps the beginning: seq_len 4 leaves only the first completion token(s).
    let short = CausalEncoder::new(
        &tok,
        None,
        CausalOptions {
            seq_len: 4,
            ..Default::default()
        },
    );
    let b = short.batch(&[&e]).unwrap();
    assert_eq!(b.inputs.len(), 4);
    assert_eq!(b.counted(), (5usize).saturating_sub(p));
}

#[test]
fn plain_texts_are_packed_with_eos_between() {
    let tok = gpt2();
    let enc = CausalEncoder::new(
        &tok,
        None,
        CausalOptions {
            seq_len: 4,
            ..Default::default()
        },
    );
    let texts = ["one two three", "four five", "six"];
    let examples: Vec<Example> = texts
        .iter()
        .map(|t| {
            example(Content::Text {
                text: t.to_string(),
            })
        })
        .collect();
    let refs: Vec<&Example> = examples.iter().collect();
    let mut stream: Vec<i64> = Vec::new();
    for t in texts {
        stream.extend(tok.encode(t).unwrap().iter().map(|&i| i as i64));
        stream.push(50256);
    }
    assert_eq!(stream.len(), 9);
    // Rows of 4 inputs + 1 target overlap by one token: 8 targets need 2 rows.
    let batches = enc.packed(&refs, 1).unwrap();
    assert_eq!(batches.len(), 2);
    let n = stream.len() - 1;
    let inputs: Vec<i64> = batches.iter().flat_map(|b| b.inputs.clone()).collect();
    let targets: Vec<i64> = batches.iter().flat_map(|b| b.targets.clone()).collect();
    let mask: Vec<f32> = batches.iter().flat_map(|b| b.loss_mask.clone()).collect();
    assert_eq!(&inputs[..n], &stream[..n]);
    assert_eq!(&targets[..n], &stream[1..]);
    assert_eq!(stream[3], 50256, "EOS between the first and second text");
    assert!(
        mask[..n].iter().all(|&m| m == 1.0),
        "every real target counts once"
    );
    assert!(mask[n..].iter().all(|&m| m == 0.0), "padding is masked");

    // Packed prompts stay masked: the flags travel with the tokens.
    let pair = example(Content::Pair {
        prompt: "Q".into(),
        completion: "A".into(),
    });
    let b = enc.packed(&[&pair], 4).unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(
        b[0].counted(),
        2,
        "A and EOS count; Q and the separator do not"
    );
}

// ---------------------------------------------------------------- classification batches

#[test]
fn classification_batches_carry_ids_masks_and_label_ids() {
    let tok = gpt2();
    let ds = labeled(2, 1);
    let labels = ds.labels.clone().unwrap();
    assert_eq!(labels.labels, ["neg", "pos"]);
    assert_eq!(
        serde_json::to_string(&labels).unwrap(),
        r#"{"labels":["neg","pos"]}"#
    );
    let refs: Vec<&Example> = ds.examples.iter().collect();
    let b = class_batch(&tok, &labels, &refs, 4, 0).unwrap();
    assert_eq!(b.labels, [1, 1, 0]);
    let good0 = tok.encode("good 0").unwrap();
    assert_eq!(
        &b.input_ids[..good0.len()],
        good0
            .iter()
            .map(|&i| i as i64)
            .collect::<Vec<_>>()
            .as_slice()
    );
    let expected: Vec<i64> = (0..4).map(|t| (t < good0.len()) as i64).collect();
    assert_eq!(&b.attention_mask[..4], expected.as_slice());
    assert_eq!(b.input_ids.len(), 12);
}

// ---------------------------------------------------------------- chat templates

const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

#[test]
fn smollm2_chat_template_renders_chatml() {
    let t = ChatTemplate::new(SMOLLM2_TEMPLATE, "<|im_start|>", "<|im_end|>").unwrap();
    let q = [Message::new("user", "What is the capital of France?")];
    assert_eq!(
        t.render(&q, true).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    );
    let with_system = [
        Message::new("system", "Be brief."),
        Message::new("user", "Hi"),
        Message::new("assistant", "Hello!"),
    ];
    assert_eq!(
        t.render(&with_system, false).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
    );
    // The template as tokenizer_config.json carries it.
    let config = serde_json::json!({ "chat_template": SMOLLM2_TEMPLATE, "bos_token": "<|im_start|>", "eos_token": "<|im_end|>" });
    let from_config = ChatTemplate::from_tokenizer_config(config.to_string().as_bytes())
        .unwrap()
        .unwrap();
    assert_eq!(
        from_config.render(&q, true).unwrap(),
        t.render(&q, true).unwrap()
    );
}

#[test]
fn only_assistant_tokens_count_in_chat_batches() {
    let tok = gpt2();
    let t = ChatTemplate::new(SMOLLM2_TEMPLATE, "", "<|im_end|>").unwrap();
    let messages = vec![
        Message::new("user", "Hi"),
        Message::new("assistant", "Hello there!"),
        Message::new("user", "Bye"),
        Message::new("assistant", "Goodbye."),
    ];
    let (ids, assistant) = t.encode(&tok, &messages).unwrap();
    let full = t.render(&messages, false).unwrap();
    assert_eq!(ids, tok.encode_with(&full, false).unwrap());
    // Decoding the marked tokens gives back the assistant turns with their end markers.
    let mut spans = Vec::new();
    let mut current = Vec::new();
    for (i, &a) in assistant.iter().enumerate() {
        if a {
            current.push(ids[i]);
        } else if !current.is_empty() {
            spans.push(tok.decode(&std::mem::take(&mut current)).unwrap());
        }
    }
    if !current.is_empty() {
        spans.push(tok.decode(&current).unwrap());
    }
    assert_eq!(spans, ["Hello there!<|im_end|>\n", "Goodbye.<|im_end|>\n"]);

    // Through inspect and the batcher: the counted targets are exactly the assistant tokens.
    let line = serde_json::json!({ "messages": messages }).to_string();
    let options = InspectOptions {
        chat_template: Some(SMOLLM2_TEMPLATE.into()),
        causal: CausalOptions {
            seq_len: 128,
            ..Default::default()
        },
        ..Default::default()
    };
    let (ds, report) = inspect("chat.jsonl", line.as_bytes(), &options, Some(&tok)).unwrap();
    assert_eq!(report.chat_template.as_deref(), Some("model"));
    assert_eq!(report.tokens.as_ref().unwrap().max, ids.len());
    let enc = CausalEncoder::new(&tok, Some(&t), options.causal.clone());
    let b = enc.batch(&[&ds.examples[0]]).unwrap();
    assert_eq!(b.counted(), assistant.iter().filter(|&&a| a).count());
}

#[test]
fn reading_reports_progress_from_zero_to_the_whole_file() {
    use std::cell::RefCell;
    use webtune::data::validate::inspect_with_progress;
    let text: String = (0..3000)
        .map(|i| format!("{{\"text\": \"line number {i}\"}}\n"))
        .collect();
    let seen = RefCell::new(Vec::new());
    let record = |p: webtune::data::validate::DataProgress<'_>| {
        assert_eq!((p.file, p.bytes), ("big.jsonl", text.len()));
        seen.borrow_mut().push((p.bytes_done, p.records_done));
    };
    let gpt2 = gpt2();
    let (ds, _) = inspect_with_progress(
        "big.jsonl",
        text.as_bytes(),
        &InspectOptions::default(),
        Some(&gpt2),
        Some(&record),
    )
    .unwrap();
    assert_eq!(ds.examples.len(), 3000);
    let seen = seen.into_inner();
    assert_eq!(seen.first(), Some(&(0, 0)));
    assert_eq!(seen.last(), Some(&(text.len(), 3000)));
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1),
        "{seen:?}"
    );
    // About every hundredth of the file: the start, 100 steps (the last may coincide with the
    // end, which is reported once more), the end.
    assert!((100..=102).contains(&seen.len()), "{}", seen.len());
}

#[test]
fn a_file_over_max_examples_is_checked_in_full_and_a_uniform_sample_kept() {
    // 2000 labelled lines, sorted by label as exports often are, one of them broken.
    let mut text = String::new();
    for i in 0..2000 {
        let label = if i < 1000 { "neg" } else { "pos" };
        if i == 1500 {
            text.push_str("{broken\n");
        } else {
            text.push_str(&format!(
                "{{\"text\": \"review {i}\", \"label\": \"{label}\"}}\n"
            ));
        }
    }
    let options = InspectOptions {
        max_examples: 200,
        ..Default::default()
    };
    let (ds, report) = inspect("sorted.jsonl", text.as_bytes(), &options, None).unwrap();
    assert_eq!(
        (report.records, report.examples, report.skipped),
        (2000, 1999, 1)
    );
    assert_eq!(report.sampled, Some(200));
    assert_eq!(report.issues[0].loc.line, 1501);
    // Counts are over the whole file, not the sample.
    let labels = report.labels.as_ref().unwrap();
    assert_eq!((labels["neg"], labels["pos"]), (1000, 999));
    assert_eq!(ds.examples.len(), 200);
    // Kept in file order, and from all over the file: both labels, both ends.
    let lines: Vec<usize> = ds.examples.iter().map(|e| e.loc.line).collect();
    assert!(lines.windows(2).all(|w| w[0] < w[1]), "{lines:?}");
    let neg = ds
        .examples
        .iter()
        .filter(|e| e.content.label() == Some("neg"))
        .count();
    assert!((60..=140).contains(&neg), "{neg} of 200 negatives");
    assert!(
        lines[0] <= 200 && *lines.last().unwrap() > 1800,
        "{lines:?}"
    );
    // The same file gives the same sample.
    let (again, _) = inspect("sorted.jsonl", text.as_bytes(), &options, None).unwrap();
    assert_eq!(again.examples, ds.examples);
    // Under the cap nothing is sampled.
    let (all, report) = inspect(
        "sorted.jsonl",
        text.as_bytes(),
        &InspectOptions::default(),
        None,
    )
    .unwrap();
    assert_eq!((all.examples.len(), report.sampled), (1999, None));
}

/// A file on disk is streamed in pieces (of 8 MiB) cut at line breaks; what it reads must be
/// exactly what reading the same bytes in memory gives, whatever falls on a piece boundary.
#[test]
fn a_file_streamed_from_disk_reads_as_the_same_bytes_in_memory() {
    use webtune::data::validate::inspect_path;
    let dir = std::env::temp_dir().join(format!("webtune-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // ~20 MB of JSON lines (BOM, CRLF endings, blank lines, a malformed line, duplicates):
    // three pieces, so records, blank lines and line numbers cross two boundaries.
    let mut text = String::from("\u{feff}");
    let mut i = 0;
    while text.len() < 20_000_000 {
        match i % 997 {
            13 => text.push_str("\r\n"),
            500 => text.push_str("{\"text\": broken\r\n"),
            _ => text.push_str(&format!(
                "{{\"text\": \"review number {} with some words to make it longer than short\", \"label\": \"{}\"}}\r\n",
                i % 150_000,
                ["neg", "pos"][i % 2]
            )),
        }
        i += 1;
    }
    let path = dir.join("big.jsonl");
    std::fs::write(&path, &text).unwrap();
    let options = InspectOptions::default();
    let (a, ra) = inspect("big.jsonl", text.as_bytes(), &options, None).unwrap();
    let (b, rb) = inspect_path("big.jsonl", &path, &options, None, None).unwrap();
    assert!(ra.records > 200_000, "{}", ra.records);
    assert!(ra.blank_lines > 200 && ra.skipped > 200 && ra.duplicates > 0);
    assert_eq!(ra.sampled, Some(100_000));
    assert_eq!(ra, rb);
    assert_eq!(a.examples, b.examples);

    // One example per line, as text.
    let lines: String = text.replace("\"text\": ", "").replace(['{', '}'], "");
    let path = dir.join("big.txt");
    std::fs::write(&path, &lines).unwrap();
    let (a, ra) = inspect("big.txt", lines.as_bytes(), &options, None).unwrap();
    let (b, rb) = inspect_path("big.txt", &path, &options, None, None).unwrap();
    assert_eq!(ra.format, Format::Text);
    assert_eq!(ra, rb);
    assert_eq!(a.examples, b.examples);

    // Invalid UTF-8 in the third piece: the same error, naming the same byte, line and column.
    let mut bytes = text.into_bytes();
    let at = bytes.len() - 1000;
    let at = at + bytes[at..].iter().position(|&b| b == b'v').unwrap();
    bytes[at] = 0xFF;
    let path = dir.join("bad.jsonl");
    std::fs::write(&path, &bytes).unwrap();
    let ea = inspect("bad.jsonl", &bytes, &options, None).unwrap_err();
    let eb = inspect_path("bad.jsonl", &path, &options, None, None).unwrap_err();
    assert_eq!(ea.details["byte_offset"], at);
    assert_eq!((ea.message, ea.details), (eb.message, eb.details));

    let err =
        inspect_path("gone.jsonl", &dir.join("gone.jsonl"), &options, None, None).unwrap_err();
    assert_eq!(err.code, Code::DataInvalid);
    assert!(err.message.contains("cannot read"), "{}", err.message);
    let _ = std::fs::remove_dir_all(&dir);
}
