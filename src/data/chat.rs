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
    pub bos_token: String,
    pub eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("source_chars", &self.source.len())
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
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
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
    /// used); the tokens may be strings or `{"content": …}` objects. `Ok(None)` when the file
    /// has no template.
    pub fn from_tokenizer_config(bytes: &[u8]) -> Result<Option<Self>> {
        let config: Value = serde_json::from_slice(bytes).map_err(|e| {
            Error::new(
                Code::TokenizerInvalid,
                format!("tokenizer_config.json is not valid JSON: {e}"),
            )
            .with_details(json!({ "file": "tokenizer_config.json" }))
        })?;
        let template = match &config["chat_template"] {
            Value::String(s) => Some(s.clone()),
            Value::Array(list) => list
                .iter()
                .find(|t| t["name"] == "default")
                .or_else(|| list.first())
                .and_then(|t| t["template"].as_str())
                .map(str::to_string),
            _ => None,
        };
        let token = |key: &str| match &config[key] {
            Value::String(s) => s.clone(),
            Value::Object(o) => o
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            _ => String::new(),
        };
        template
            .map(|t| Self::new(&t, &token("bos_token"), &token("eos_token")))
            .transpose()
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
