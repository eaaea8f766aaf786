//! Chat templates: conversations are formatted with the Jinja template the model ships
//! (`chat_template` in tokenizer_config.json, `chat_template.jinja`, or GGUF's
//! `tokenizer.chat_template`), rendered by minijinja the way transformers renders them
//! (`trim_blocks` and `lstrip_blocks` on, `raise_exception`, `bos_token`/`eos_token`,
//! `add_generation_prompt`, Python string methods such as `.strip()`).
//!
//! Training needs to know which tokens the assistant wrote. Templates carry no such markup, so
//! [`ChatTemplate::encode`] finds the spans by rendering prefixes of the conversation: for each
//! assistant turn `i`, the text up to its header is `render(messages[..i], add_generation_prompt)`
//! and the text through its end is `render(messages[..=i])`. Tokenizing each prefix and taking
//! its longest common prefix with the full conversation's tokens gives the token boundaries
//! (a token that straddles a boundary counts as prompt). This needs templates whose rendering of
//! a prefix is a prefix of the rendering of the whole conversation, which holds for ChatML,
//! Llama, Mistral-style and most others; templates that rewrite earlier turns (e.g. dropping
//! earlier reasoning) get a smaller, still-correct-where-marked, mask.

use minijinja::value::Serde;
use minijinja::{context, Environment, ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Code, Error, Result};
use crate::io::hf::ModelFiles;
use crate::io::tokenizer::Tokenizer;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// The ChatML template webtune uses when a chat dataset meets a model without a template.
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// The work one render may do (minijinja's fuel: about one unit per instruction executed and per
/// 64 bytes created). Templates as models ship them use a few thousand per conversation; a
/// template with nested huge loops or exploding strings fails with `chat_template.invalid` after
/// at most ~a second and a few hundred MB instead of hanging the tab. Recursion (macros, nested
/// includes) is bounded by minijinja itself (500 frames), `range` by its 100 000-item limit.
pub const CHAT_TEMPLATE_FUEL: u64 = 5_000_000;

/// A compiled chat template with the special tokens it may refer to.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    /// Where the template came from (`tokenizer_config.json`, `chat_template.jinja`, `gguf`…);
    /// empty for one given directly.
    origin: String,
    pub bos_token: String,
    pub eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("source_chars", &self.source.len())
            .field("origin", &self.origin)
            .finish()
    }
}

fn template_error(message: String, e: &minijinja::Error) -> Error {
    Error::new(Code::ChatTemplateInvalid, message).with_details(json!({
        "reason": format!("{:?}", e.kind()),
        "line": e.line(),
        "detail": e.detail(),
    }))
}

impl ChatTemplate {
    /// Compiles `source`. `bos_token`/`eos_token` are the strings templates insert (e.g. `<s>`).
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        let mut syntax = minijinja::syntax::SyntaxConfig::builder();
        syntax.trim_blocks(true).lstrip_blocks(true);
        env.set_syntax(
            syntax
                .build()
                .map_err(|e| template_error(format!("chat template syntax: {e}"), &e))?,
        );
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_fuel(Some(CHAT_TEMPLATE_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| template_error(format!("the chat template does not compile: {e}"), &e))?;
        Ok(Self {
            env,
            source: source.to_string(),
            origin: String::new(),
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// Records where the template came from (shown to the user, e.g. in the model's info).
    pub fn with_origin(mut self, origin: &str) -> Self {
        self.origin = origin.to_string();
        self
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The fallback template (ChatML), for models that ship none.
    pub fn chatml() -> Self {
        Self::new(CHATML, "", "<|im_end|>").expect("the built-in ChatML template compiles")
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Reads `chat_template`, `bos_token` and `eos_token` from a tokenizer_config.json. The
    /// template may be a string or a list of `{name, template}` (the one named "default" is
    /// used, as transformers does); the tokens may be strings or `{"content": …}` objects.
    /// `Ok(None)` when the file has no template.
    pub fn from_tokenizer_config(bytes: &[u8]) -> Result<Option<Self>> {
        let config = parse_json("tokenizer_config.json", bytes)?;
        let Some(template) = pick_template("tokenizer_config.json", &config["chat_template"])?
        else {
            return Ok(None);
        };
        let t = Self::new(
            &template,
            &special_token(&config, "bos_token"),
            &special_token(&config, "eos_token"),
        )?;
        Ok(Some(t.with_origin("tokenizer_config.json")))
    }

    /// The chat template of a model, from the first of (transformers' order: a separate
    /// template file overrides the tokenizer config's entry):
    /// 1. `chat_template.jinja` (the template as a file, transformers ≥ 4.43),
    /// 2. `chat_template.json` (`{"chat_template": …}`, the older separate file),
    /// 3. `tokenizer_config.json`'s `chat_template` (string or named list),
    /// 4. a GGUF file's `tokenizer.chat_template` metadata.
    ///
    /// `bos_token`/`eos_token` come from tokenizer_config.json (or special_tokens_map.json), or
    /// from the GGUF vocabulary. `Ok(None)` when the model ships no template; a template that
    /// does not compile is a `chat_template.invalid` error.
    pub fn from_model_files(files: &ModelFiles) -> Result<Option<Self>> {
        let config = files
            .get("tokenizer_config.json")
            .map(|b| parse_json("tokenizer_config.json", b))
            .transpose()?;
        let specials = files
            .get("special_tokens_map.json")
            .and_then(|b| serde_json::from_slice::<Value>(b).ok());
        let token = |key: &str| {
            let from = |v: &Option<Value>| v.as_ref().map(|v| special_token(v, key));
            from(&config)
                .filter(|t| !t.is_empty())
                .or_else(|| from(&specials))
                .unwrap_or_default()
        };
        let compile = |template: &str, origin: &str| {
            Self::new(template, &token("bos_token"), &token("eos_token"))
                .map(|t| Some(t.with_origin(origin)))
        };
        if let Some(bytes) = files.get("chat_template.jinja") {
            let template = std::str::from_utf8(bytes).map_err(|_| {
                Error::new(
                    Code::ChatTemplateInvalid,
                    "chat_template.jinja is not UTF-8 text",
                )
                .with_details(json!({ "file": "chat_template.jinja" }))
            })?;
            return compile(template, "chat_template.jinja");
        }
        if let Some(bytes) = files.get("chat_template.json") {
            let value = parse_json("chat_template.json", bytes)?;
            if let Some(template) = pick_template("chat_template.json", &value["chat_template"])? {
                return compile(&template, "chat_template.json");
            }
        }
        if let Some(config) = &config {
            if let Some(template) =
                pick_template("tokenizer_config.json", &config["chat_template"])?
            {
                return compile(&template, "tokenizer_config.json");
            }
        }
        if let Some(g) = files.gguf_chat_template()? {
            let t = Self::new(&g.template, &g.bos_token, &g.eos_token)?;
            return Ok(Some(t.with_origin("gguf")));
        }
        Ok(None)
    }

    /// The token that ends an assistant turn under this template (ChatML's `<|im_end|>`,
    /// Llama 3's `<|eot_id|>`, Gemma's `<end_of_turn>`…): the first special token the template
    /// writes after an assistant message. Generation in chat mode stops there even when the
    /// model's EOS is another token. `None` when the template writes no special token there
    /// or refuses the probe conversation.
    pub fn end_of_turn(&self, tokenizer: &Tokenizer) -> Option<u32> {
        const PROBE: &str = "WEBTUNE_END_OF_TURN_PROBE";
        let text = self
            .render(
                &[Message::new("user", "hi"), Message::new("assistant", PROBE)],
                false,
            )
            .ok()?;
        let after = &text[text.rfind(PROBE)? + PROBE.len()..];
        let ids = tokenizer.encode_with(after, false).ok()?;
        ids.into_iter().find(|&id| tokenizer.is_special(id))
    }

    /// Renders a conversation; `add_generation_prompt` appends the assistant header so the
    /// model continues as the assistant.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| template_error(format!("chat template: {e}"), &e))?;
        template
            .render(context! {
                messages => Serde(messages),
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| {
                let what = match e.kind() {
                    ErrorKind::InvalidOperation => "the chat template refused the conversation",
                    ErrorKind::OutOfFuel => {
                        "the chat template did too much work (an endless or huge loop?)"
                    }
                    _ => "the chat template failed",
                };
                template_error(
                    format!("{what}: {}", e.detail().unwrap_or(&e.to_string())),
                    &e,
                )
            })
    }

    /// Token ids of the rendered conversation (special tokens come from the template, so the
    /// tokenizer adds none) and, per token, whether the assistant wrote it. See the module
    /// documentation for how the spans are found.
    pub fn encode(
        &self,
        tokenizer: &Tokenizer,
        messages: &[Message],
    ) -> Result<(Vec<u32>, Vec<bool>)> {
        let full = self.render(messages, false)?;
        let ids = tokenizer.encode_with(&full, false)?;
        let mut assistant = vec![false; ids.len()];
        let boundary = |text: &str| -> Result<usize> {
            let prefix = tokenizer.encode_with(text, false)?;
            Ok(prefix.iter().zip(&ids).take_while(|(a, b)| a == b).count())
        };
        for (i, message) in messages.iter().enumerate() {
            if message.role != "assistant" {
                continue;
            }
            let start = boundary(&self.render(&messages[..i], true)?)?;
            let end = boundary(&self.render(&messages[..=i], false)?)?;
            for flag in assistant.iter_mut().take(end).skip(start) {
                *flag = true;
            }
        }
        Ok((ids, assistant))
    }
}

fn parse_json(file: &str, bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::new(
            Code::TokenizerInvalid,
            format!("{file} is not valid JSON: {e}"),
        )
        .with_details(json!({ "file": file }))
    })
}

/// A `chat_template` entry: a string, or a list of `{name, template}` of which transformers
/// renders the one named "default" (a list without one is refused, as transformers does).
fn pick_template(file: &str, value: &Value) -> Result<Option<String>> {
    match value {
        Value::String(s) => Ok(Some(s.clone())),
        Value::Array(list) => {
            let default = list.iter().find(|t| t["name"] == "default");
            match default.and_then(|t| t["template"].as_str()) {
                Some(t) => Ok(Some(t.to_string())),
                None => {
                    let names: Vec<&str> = list.iter().filter_map(|t| t["name"].as_str()).collect();
                    Err(Error::new(
                        Code::ChatTemplateInvalid,
                        format!(
                            "{file} lists chat templates ({}) but none named \"default\" with a \
                             template string",
                            names.join(", ")
                        ),
                    )
                    .with_details(json!({ "file": file, "templates": names })))
                }
            }
        }
        _ => Ok(None),
    }
}

/// A special token of a tokenizer config: a string or an `{"content": …}` object.
fn special_token(config: &Value, key: &str) -> String {
    match &config[key] {
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_exception_becomes_an_error() {
        let t = ChatTemplate::new(
            "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}{% endif %}ok",
            "",
            "",
        )
        .unwrap();
        let err = t
            .render(&[Message::new("assistant", "x")], false)
            .unwrap_err();
        assert_eq!(err.code, Code::ChatTemplateInvalid);
        assert!(
            err.message.contains("first must be user"),
            "{}",
            err.message
        );
        assert_eq!(t.render(&[Message::new("user", "x")], false).unwrap(), "ok");
    }

    #[test]
    fn python_methods_and_trim_blocks_work_like_transformers() {
        let t = ChatTemplate::new(
            "{% for m in messages %}\n{{ bos_token }}[{{ m['content'].strip() }}]\n{% endfor %}{{ eos_token }}",
            "<s>",
            "</s>",
        )
        .unwrap();
        let out = t.render(&[Message::new("user", "  hi  ")], false).unwrap();
        assert_eq!(out, "<s>[hi]\n</s>");
    }

    #[test]
    fn tokenizer_config_template_and_tokens_are_read() {
        let cfg = br#"{"chat_template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}",
                       "bos_token": {"content": "<s>"}, "eos_token": "</s>"}"#;
        let t = ChatTemplate::from_tokenizer_config(cfg).unwrap().unwrap();
        assert_eq!(
            t.render(&[Message::new("user", "x")], false).unwrap(),
            "<s>x</s>"
        );
        assert!(ChatTemplate::from_tokenizer_config(b"{}")
            .unwrap()
            .is_none());
    }
}
