//! Chat templates from every place a model ships one (tokenizer_config.json in both forms,
//! chat_template.jinja, chat_template.json, GGUF metadata), the special tokens passed to them,
//! chat prompts and stop tokens of a loaded model, the CLI's `generate --chat`, and errors for
//! broken templates.
//!
//! Expected strings: `tests/fixtures/reference/chat_templates.json` holds renderings of four
//! real templates (SmolLM2, Llama 3, Mistral, Zephyr) × three conversations made by
//! `tools/reference/chat_templates.py` with jinja2 configured exactly as transformers'
//! `apply_chat_template` configures it (no transformers was installed where it was generated; the
//! script's `--check` compares with transformers itself where it is). The SmolLM2 strings below
//! are the same as that fixture's (asserted).

use burn::tensor::Device;
use webtune::data::{ChatTemplate, Message};
use webtune::io::gguf::GgufHeader;
use webtune::io::hf::ModelFiles;
use webtune::models::loaded::LoadedModel;
use webtune::Code;

mod common;
use common::{default_model, fixture, SMOLLM2_GGUF};

/// SmolLM2-135M-Instruct's template, as its tokenizer_config.json and its GGUF carry it.
const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// What transformers' `apply_chat_template([{"role": "user", "content": "hi"}],
/// tokenize=False, add_generation_prompt=True)` returns with that template.
const SMOLLM2_HI: &str = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n";

/// A template that shows the special tokens it is given, and ends turns with the fixture
/// vocabulary's one control token.
const TOKENS_TEMPLATE: &str = "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}<|endoftext|>{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}{{ eos_token }}";

#[test]
fn templates_render_like_transformers_jinja() {
    let path = fixture("reference/chat_templates.json");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut checked = 0;
    for case in r["cases"].as_array().unwrap() {
        let name = case["template"].as_str().unwrap();
        let t = &r["templates"][name];
        let template = ChatTemplate::new(
            t["source"].as_str().unwrap(),
            t["bos_token"].as_str().unwrap(),
            t["eos_token"].as_str().unwrap(),
        )
        .unwrap();
        let conversation = case["conversation"].as_str().unwrap();
        let messages: Vec<Message> =
            serde_json::from_value(r["conversations"][conversation].clone()).unwrap();
        let add = case["add_generation_prompt"].as_bool().unwrap();
        let what = format!("{name} / {conversation} / add_generation_prompt={add}");
        match (template.render(&messages, add), case.get("text")) {
            (Ok(text), Some(expected)) => assert_eq!(text, expected.as_str().unwrap(), "{what}"),
            (Err(e), None) => {
                assert_eq!(e.code, Code::ChatTemplateInvalid, "{what}");
                let expected = case["error"].as_str().unwrap();
                assert!(e.message.contains(expected), "{what}: {}", e.message);
            }
            (got, expected) => panic!("{what}: got {got:?}, expected {expected:?}"),
        }
        checked += 1;
    }
    assert_eq!(checked, 24);
    // The strings the other tests use are the reference's.
    let smollm2_hi = r["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["template"] == "smollm2"
                && c["conversation"] == "hi"
                && c["add_generation_prompt"] == true
        })
        .unwrap();
    assert_eq!(smollm2_hi["text"], SMOLLM2_HI);
    assert_eq!(r["templates"]["smollm2"]["source"], SMOLLM2_TEMPLATE);
}

fn hi() -> Vec<Message> {
    vec![Message::new("user", "hi")]
}

/// Append string metadata to a GGUF file (after the existing key-values, before the tensor
/// infos). A filler key keeps the header's growth a multiple of the 32-byte alignment, so the
/// tensor data keeps its offsets.
fn with_metadata(gguf: &[u8], entries: &[(&str, &str)]) -> Vec<u8> {
    let header = GgufHeader::parse("x.gguf", gguf).expect("fixture parses");
    assert_eq!(
        header.alignment, 32,
        "the fixture uses the default alignment"
    );
    let kv = |key: &str, value: &str| {
        let mut b = Vec::new();
        b.extend_from_slice(&(key.len() as u64).to_le_bytes());
        b.extend_from_slice(key.as_bytes());
        b.extend_from_slice(&8u32.to_le_bytes());
        b.extend_from_slice(&(value.len() as u64).to_le_bytes());
        b.extend_from_slice(value.as_bytes());
        b
    };
    let mut added: Vec<u8> = entries.iter().flat_map(|(k, v)| kv(k, v)).collect();
    let filler_key = "webtune.test.padding";
    let fixed = kv(filler_key, "").len();
    let pad = (32 - (added.len() + fixed) % 32) % 32;
    added.extend(kv(filler_key, &" ".repeat(pad)));
    assert_eq!(added.len() % 32, 0);
    // magic, version, tensor count, key-value count; the key-values come right after.
    let count = u64::from_le_bytes(gguf[16..24].try_into().unwrap()) + entries.len() as u64 + 1;
    let mut out = gguf[..16].to_vec();
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&added);
    out.extend_from_slice(&gguf[24..]);
    out
}

fn gguf_with_template(template: &str) -> ModelFiles {
    let bytes = std::fs::read(fixture("tiny_gguf/tiny_llama_f32.gguf")).unwrap();
    let mut files = ModelFiles::new();
    files.insert(
        "tiny.gguf",
        with_metadata(&bytes, &[("tokenizer.chat_template", template)]),
    );
    files
}

fn load(files: ModelFiles) -> LoadedModel {
    LoadedModel::load(files, &Device::flex()).expect("model loads")
}

#[test]
fn the_gguf_template_formats_like_transformers() {
    let model = load(gguf_with_template(SMOLLM2_TEMPLATE));
    assert!(model.info.chat.has_chat_template);
    assert_eq!(
        model.info.chat.chat_template_source.as_deref(),
        Some("gguf")
    );
    let template = model.chat().unwrap();
    assert_eq!(template.source(), SMOLLM2_TEMPLATE);
    assert_eq!(model.chat_prompt(&hi(), true).unwrap(), SMOLLM2_HI);
    // Without the generation prompt, the conversation ends after the user's turn.
    assert_eq!(
        model.chat_prompt(&hi(), false).unwrap(),
        SMOLLM2_HI.trim_end_matches("<|im_start|>assistant\n")
    );
    // The info the page gets says so.
    let info = serde_json::to_value(&model.info).unwrap();
    assert_eq!(info["has_chat_template"], true);
    assert_eq!(info["chat_template_source"], "gguf");
    // The weights are untouched by the extra metadata: same logits as the fixture itself.
    let plain = load(ModelFiles::from_dir(&fixture("tiny_gguf/tiny_llama_f32.gguf")).unwrap());
    assert!(!plain.info.chat.has_chat_template);
    let ids = [5, 17, 42, 3];
    let a = pollster::block_on(model.logits(&ids)).unwrap();
    let b = pollster::block_on(plain.logits(&ids)).unwrap();
    assert_eq!(a, b);
}

#[test]
fn gguf_bos_and_eos_reach_the_template_and_stop_generation() {
    let model = load(gguf_with_template(TOKENS_TEMPLATE));
    // The fixture's BOS is id 1 ('"'), EOS id 2 ('#'), as transformers maps them from
    // tokenizer.ggml.{bos,eos}_token_id.
    let t = model.chat().unwrap();
    assert_eq!((t.bos_token.as_str(), t.eos_token.as_str()), ("\"", "#"));
    let text = model.chat_prompt(&hi(), true).unwrap();
    assert_eq!(text, "\"user: hi<|endoftext|>assistant:#");
    // Tokens without a BOS added by the tokenizer: the template wrote it.
    let ids = model.chat_ids(&hi(), true).unwrap();
    assert_eq!(ids.first(), Some(&1));
    assert!(ids.contains(&99), "<|endoftext|> is one token: {ids:?}");
    // The turn ends with the control token <|endoftext|> (99); the model's EOS stops too.
    let tokenizer = model.tokenizer.as_ref().unwrap();
    assert_eq!(t.end_of_turn(tokenizer), Some(99));
    let stops = model.chat_stop_tokens();
    assert!(stops.contains(&2) && stops.contains(&99), "{stops:?}");
}

#[test]
fn the_real_smollm2_gguf_has_its_template() {
    // Present after `cargo xtask models`; skipped (with a note) where it is not, unless
    // WEBTUNE_REQUIRE_MODELS is set.
    let Some(path) = default_model(SMOLLM2_GGUF) else {
        return;
    };
    let files = ModelFiles::from_dir(&path).unwrap();
    let t = ChatTemplate::from_model_files(&files).unwrap().unwrap();
    assert_eq!(t.origin(), "gguf");
    assert_eq!(t.source(), SMOLLM2_TEMPLATE);
    assert_eq!(
        (t.bos_token.as_str(), t.eos_token.as_str()),
        ("<|im_start|>", "<|im_end|>")
    );
    assert_eq!(t.render(&hi(), true).unwrap(), SMOLLM2_HI);
    let tokenizer = files.tokenizer().unwrap().unwrap();
    assert_eq!(t.end_of_turn(&tokenizer), Some(2), "<|im_end|> ends a turn");
    let ids = tokenizer
        .encode_with(&t.render(&hi(), true).unwrap(), false)
        .unwrap();
    assert_eq!(ids[0], 1, "<|im_start|> is one token");
    assert_eq!(
        ids.iter().filter(|&&i| i == 2).count(),
        2,
        "two <|im_end|>: {ids:?}"
    );
}

fn files(entries: &[(&str, &str)]) -> ModelFiles {
    let mut files = ModelFiles::new();
    for (name, text) in entries {
        files.insert(*name, text.as_bytes().to_vec());
    }
    files
}

#[test]
fn templates_come_from_every_file_in_transformers_order() {
    let config = serde_json::json!({
        "chat_template": "config:{{ messages[0].content }}",
        "bos_token": {"content": "<s>", "special": true},
        "eos_token": "</s>",
    })
    .to_string();
    // tokenizer_config.json alone.
    let t = ChatTemplate::from_model_files(&files(&[("tokenizer_config.json", &config)]))
        .unwrap()
        .unwrap();
    assert_eq!(t.origin(), "tokenizer_config.json");
    assert_eq!(t.render(&hi(), false).unwrap(), "config:hi");
    assert_eq!(
        (t.bos_token.as_str(), t.eos_token.as_str()),
        ("<s>", "</s>")
    );

    // chat_template.jinja overrides the config's entry; the tokens still come from the config.
    let jinja = "{{ bos_token }}jinja:{{ messages[0].content }}{{ eos_token }}";
    let t = ChatTemplate::from_model_files(&files(&[
        ("tokenizer_config.json", &config),
        ("chat_template.jinja", jinja),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(t.origin(), "chat_template.jinja");
    assert_eq!(t.render(&hi(), false).unwrap(), "<s>jinja:hi</s>");

    // The older chat_template.json, with tokens from special_tokens_map.json.
    let json_file = serde_json::json!({ "chat_template": "{{ eos_token }}json" }).to_string();
    let specials = serde_json::json!({ "eos_token": {"content": "<|end|>"} }).to_string();
    let t = ChatTemplate::from_model_files(&files(&[
        ("chat_template.json", &json_file),
        ("special_tokens_map.json", &specials),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(t.origin(), "chat_template.json");
    assert_eq!(t.render(&hi(), false).unwrap(), "<|end|>json");

    // The list form: the template named "default".
    let list = serde_json::json!({ "chat_template": [
        {"name": "tool_use", "template": "tools"},
        {"name": "default", "template": "default:{{ messages[0].content }}"},
    ]})
    .to_string();
    let t = ChatTemplate::from_model_files(&files(&[("tokenizer_config.json", &list)]))
        .unwrap()
        .unwrap();
    assert_eq!(t.render(&hi(), false).unwrap(), "default:hi");
    // A list without a default is refused, as transformers refuses it.
    let no_default =
        serde_json::json!({ "chat_template": [{"name": "tool_use", "template": "x"}] }).to_string();
    let err = ChatTemplate::from_model_files(&files(&[("tokenizer_config.json", &no_default)]))
        .unwrap_err();
    assert_eq!(err.code, Code::ChatTemplateInvalid, "{err}");
    assert!(err.message.contains("tool_use"), "{}", err.message);

    // No template anywhere.
    let none = serde_json::json!({ "bos_token": "<s>" }).to_string();
    assert!(
        ChatTemplate::from_model_files(&files(&[("tokenizer_config.json", &none)]))
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_broken_template_is_an_error_never_a_panic() {
    // A template that does not compile: the model still loads, without chat mode.
    let mut model_files = ModelFiles::from_dir(&fixture("tiny_random/llama")).unwrap();
    model_files.insert(
        "chat_template.jinja",
        b"{% for m in messages %}{{ m.content }".to_vec(),
    );
    let model = load(model_files);
    assert!(!model.info.chat.has_chat_template);
    let message = model
        .info
        .chat
        .chat_template_error
        .clone()
        .expect("error kept");
    assert!(message.contains("does not compile"), "{message}");
    let err = model.chat_prompt(&hi(), true).unwrap_err();
    assert_eq!(err.code, Code::ChatTemplateInvalid);

    // A template that compiles but refuses the conversation at render time.
    let model = load(gguf_with_template(
        "{% if messages[0]['role'] != 'system' %}{{ raise_exception('a system message first') }}{% endif %}",
    ));
    let err = model.chat_prompt(&hi(), true).unwrap_err();
    assert_eq!(err.code, Code::ChatTemplateInvalid);
    assert!(
        err.message.contains("a system message first"),
        "{}",
        err.message
    );
    // No end-of-turn token can be found for it, so only the EOS stops generation.
    assert_eq!(model.chat_stop_tokens(), vec![2]);

    // Not UTF-8.
    let err = ChatTemplate::from_model_files(&{
        let mut f = ModelFiles::new();
        f.insert("chat_template.jinja", vec![0xff, 0xfe, b'x']);
        f
    })
    .unwrap_err();
    assert_eq!(err.code, Code::ChatTemplateInvalid);

    // A model without any template has no chat mode.
    let plain = load(ModelFiles::from_dir(&fixture("tiny_random/llama")).unwrap());
    assert_eq!(
        plain.chat_prompt(&hi(), true).unwrap_err().code,
        Code::ConfigInvalid
    );
}

#[test]
fn cli_generate_chat_formats_the_conversation() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chat_cli");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny-chat.gguf");
    let bytes = std::fs::read(fixture("tiny_gguf/tiny_llama_f32.gguf")).unwrap();
    // A short template: the tiny model takes 64 positions.
    std::fs::write(
        &path,
        with_metadata(&bytes, &[("tokenizer.chat_template", TOKENS_TEMPLATE)]),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_webtune"))
            .arg("--json")
            .arg("generate")
            .arg(&path)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let out = run(&["--chat", "hi", "--greedy", "--max-new-tokens", "3"]);
    assert_eq!(out["chat_prompt"], "\"user: hi<|endoftext|>assistant:#");
    let model = load(gguf_with_template(TOKENS_TEMPLATE));
    let ids: Vec<u64> = model
        .chat_ids(&hi(), true)
        .unwrap()
        .into_iter()
        .map(u64::from)
        .collect();
    assert_eq!(out["prompt_ids"], serde_json::json!(ids));
    let out = run(&[
        "--chat",
        "hi",
        "--system",
        "Be brief.",
        "--greedy",
        "--max-new-tokens",
        "1",
    ]);
    assert_eq!(
        out["chat_prompt"],
        "\"system: Be brief.<|endoftext|>user: hi<|endoftext|>assistant:#"
    );
}

#[test]
fn a_job_on_a_gguf_chat_model_exports_its_template() {
    use webtune::backend::Backend;
    use webtune::train::causal_job::CausalJob;
    use webtune::train::job::{run_job, DataSource, DatasetFile, JobConfig, JobContext};

    let files = gguf_with_template(TOKENS_TEMPLATE);
    let base = load(files.clone());
    let rows: String = ["hi", "yo", "ok", "no", "go", "up"]
        .iter()
        .map(|w| {
            format!(
                "{}\n",
                serde_json::json!({ "messages": [
                    { "role": "user", "content": w },
                    { "role": "assistant", "content": format!("{w}!") },
                ]})
            )
        })
        .collect();
    let config = JobConfig::from_json(
        r#"{"batch_size": 2, "validation_fraction": 0.34, "samples": 1, "sample_tokens": 2,
            "data": {"causal": {"seq_len": 32}}, "train": {"steps": 2, "lora_r": 2}}"#,
    )
    .unwrap();
    let out = pollster::block_on(run_job(
        &CausalJob,
        &JobContext {
            files: &files,
            base: &base,
            backend: &Backend::cpu(),
            config: &config,
            base_name: "tiny-chat",
        },
        DatasetFile {
            name: "chat.jsonl",
            source: DataSource::Bytes(rows.as_bytes()),
        },
        None,
        |_| true,
    ))
    .expect("the job runs");
    // The data was formatted with the model's own template (with its BOS/EOS strings)…
    assert_eq!(out.report.chat_template.as_deref(), Some("model"));
    assert_eq!(
        out.samples[0].prompt.chars().next(),
        Some('"'),
        "{}",
        out.samples[0].prompt
    );
    // …and the GGUF base's template travels with the export, so the fine-tuned model chats too.
    let bytes = pollster::block_on(out.export.read("merged/tokenizer_config.json"))
        .expect("a tokenizer_config.json in the export");
    let exported: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(exported["chat_template"], TOKENS_TEMPLATE);
    assert_eq!(exported["bos_token"], "\"");
    assert_eq!(exported["eos_token"], "#");
    // The exported folder, loaded as a model, renders chats as the base does; so does the job's
    // fine-tuned model (the base's template, the trained weights).
    let mut merged = ModelFiles::new();
    for (name, bytes) in pollster::block_on(out.export.read_all()).unwrap() {
        if let Some(file) = name.strip_prefix("merged/") {
            merged.insert(file, bytes);
        }
    }
    let reloaded = LoadedModel::load(merged, &Device::flex()).expect("the export loads");
    assert_eq!(
        reloaded.info.chat.chat_template_source.as_deref(),
        Some("tokenizer_config.json")
    );
    let tuned = out.tuned.expect("the tuned model");
    for model in [&reloaded, &tuned] {
        assert_eq!(
            model.chat_prompt(&hi(), true).unwrap(),
            base.chat_prompt(&hi(), true).unwrap()
        );
    }
}

#[test]
fn completions_end_with_the_token_the_model_stops_at() {
    use webtune::train::causal_job::prepare_data;
    use webtune::train::job::{DataSource, DatasetFile, JobConfig};
    // The tiny model stops at its EOS "#"; its vocabulary also has <|endoftext|> (99), the
    // first end-of-text token the encoder would otherwise pick. A completion that ended with
    // that token would teach the model to answer past where generation stops.
    let files = gguf_with_template(TOKENS_TEMPLATE);
    let base = load(files);
    let stop = base.eos_token_id.expect("the fixture has an EOS") as i64;
    let endoftext = base
        .tokenizer
        .as_ref()
        .unwrap()
        .token_id("<|endoftext|>")
        .unwrap() as i64;
    assert_ne!(stop, endoftext);
    let rows: String = ["hi", "yo", "ok", "no", "go", "up", "on", "by"]
        .iter()
        .map(|w| {
            format!(
                "{}\n",
                serde_json::json!({ "prompt": w, "completion": format!("{w}!") })
            )
        })
        .collect();
    let last_counted_targets = |config: &JobConfig| -> Vec<i64> {
        let file = DatasetFile {
            name: "pairs.jsonl",
            source: DataSource::Bytes(rows.as_bytes()),
        };
        let data = prepare_data(&base, None, file, config).expect("the data is read");
        let mut ends = Vec::new();
        for b in &data.train_batches {
            for r in 0..b.batch_size {
                let row = r * b.seq_len..(r + 1) * b.seq_len;
                let last = row.clone().rev().find(|&t| b.loss_mask[t] > 0.0).unwrap();
                ends.push(b.targets[last]);
            }
        }
        ends
    };
    let mut config = JobConfig::from_json(
        r#"{"batch_size": 4, "validation_fraction": 0.25, "data": {"causal": {"seq_len": 32}}}"#,
    )
    .unwrap();
    let ends = last_counted_targets(&config);
    assert_eq!(ends.len(), 6, "{ends:?}");
    assert!(ends.iter().all(|&t| t == stop), "{ends:?}");
    // Naming the token in the data options still chooses it.
    config.data.causal.eos_token = Some("<|endoftext|>".into());
    let ends = last_counted_targets(&config);
    assert!(ends.iter().all(|&t| t == endoftext), "{ends:?}");
}

#[test]
fn a_chat_reply_stops_at_the_end_of_turn_and_leaves_that_token_out() {
    use webtune::eval::generate::GenerateOptions;
    use webtune::eval::respond::{respond, Prompt};
    let model = load(gguf_with_template(TOKENS_TEMPLATE));
    let greedy = GenerateOptions {
        greedy: true,
        max_new_tokens: 4,
        ..GenerateOptions::default()
    };
    let chat = Prompt::Chat {
        messages: hi(),
        add_generation_prompt: true,
    };
    let text = Prompt::Text("hi".into());
    // Stop tokens: the template's end of turn for a chat, EOS for text, none when ignored,
    // and those given when given.
    let prepared = chat.prepare(&model, greedy.clone(), false).unwrap();
    assert_eq!(prepared.opts.stop_tokens, model.chat_stop_tokens());
    assert_eq!(prepared.ids, model.chat_ids(&hi(), true).unwrap());
    assert_eq!(
        prepared.chat_prompt.as_deref(),
        Some("\"user: hi<|endoftext|>assistant:#")
    );
    let plain = text.prepare(&model, greedy.clone(), false).unwrap();
    assert_eq!(plain.opts.stop_tokens, vec![model.eos_token_id.unwrap()]);
    assert_eq!(plain.chat_prompt, None);
    assert!(chat
        .prepare(&model, greedy.clone(), true)
        .unwrap()
        .opts
        .stop_tokens
        .is_empty());
    // Make the first greedy token of the chat end the turn: the reply then has it in its ids
    // but not in its text; the same stop token in a text prompt stays in the text.
    let free = chat.prepare(&model, greedy.clone(), true).unwrap();
    let first = pollster::block_on(respond(&model, &free, |_| true)).unwrap();
    let t0 = first.generated_ids[0];
    let stop_at_t0 = GenerateOptions {
        stop_tokens: vec![t0],
        ..greedy.clone()
    };
    let turn = chat.prepare(&model, stop_at_t0.clone(), false).unwrap();
    assert!(turn.ends_turn(t0));
    let mut seen = Vec::new();
    let reply = pollster::block_on(respond(&model, &turn, |t| {
        seen.push(t);
        true
    }))
    .unwrap();
    assert_eq!(reply.generated_ids, vec![t0]);
    assert_eq!(seen, vec![t0], "on_token sees the closing token too");
    assert_eq!(reply.text.as_deref(), Some(""));
    let ids = Prompt::Ids(turn.ids.clone())
        .prepare(&model, stop_at_t0, false)
        .unwrap();
    assert!(!ids.ends_turn(t0));
    let reply = pollster::block_on(respond(&model, &ids, |_| true)).unwrap();
    let tokenizer = model.tokenizer.as_ref().unwrap();
    assert_eq!(reply.text.unwrap(), tokenizer.decode(&[t0]).unwrap());
    // on_token returning false stops after that token.
    let stopped = pollster::block_on(respond(&model, &free, |_| false)).unwrap();
    assert_eq!(stopped.generated_ids.len(), 1);
}
