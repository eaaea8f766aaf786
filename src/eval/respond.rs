//! A loaded model answering a prompt as the page and the CLI show it: text, token ids or a
//! conversation formatted with the model's chat template; stopping where the model's turn ends
//! (the template's end-of-turn tokens for a chat, the end-of-sequence token otherwise); the reply
//! decoded without the token that closed the turn. [`super::generate`] is the sampling loop.

use serde::Serialize;
use serde_json::Value;

use super::generate::{generate, GenerateOptions};
use crate::data::chat::Message;
use crate::error::{Error, Result};
use crate::models::loaded::LoadedModel;

/// What to continue.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Text(String),
    Ids(Vec<u32>),
    /// A conversation, formatted with the model's chat template.
    Chat {
        messages: Vec<Message>,
        add_generation_prompt: bool,
    },
}

impl Prompt {
    /// A string, `{text}`, `{ids}` or `{chat: [{role, content}], add_generation_prompt?}` (the
    /// conversation may also be given as JSON text).
    pub fn from_json(value: &Value) -> Result<Self> {
        if let Some(text) = value.as_str() {
            return Ok(Self::Text(text.to_string()));
        }
        if let Some(text) = value.get("text").and_then(Value::as_str) {
            return Ok(Self::Text(text.to_string()));
        }
        if let Some(ids) = value.get("ids") {
            let ids = serde_json::from_value(ids.clone())
                .map_err(|_| Error::config("prompt ids must be non-negative integers"))?;
            return Ok(Self::Ids(ids));
        }
        if let Some(chat) = value.get("chat") {
            let add = value.get("add_generation_prompt").and_then(Value::as_bool);
            return Ok(Self::Chat {
                messages: Self::chat_messages(chat)?,
                add_generation_prompt: add.unwrap_or(true),
            });
        }
        Err(Error::config(
            "give the prompt as a string, {text}, {ids} or {chat: [{role, content}]}",
        ))
    }

    /// `[{role, content}]` (or that list as JSON text) → chat messages.
    pub fn chat_messages(value: &Value) -> Result<Vec<Message>> {
        let parsed;
        let value = match value.as_str() {
            Some(text) => {
                parsed = serde_json::from_str::<Value>(text).map_err(|e| {
                    Error::config(format!("the conversation is not valid JSON: {e}"))
                })?;
                &parsed
            }
            None => value,
        };
        serde_json::from_value(value.clone()).map_err(|e| {
            Error::config(format!(
                "a conversation is a list of {{role, content}} messages with string values: {e}"
            ))
        })
    }

    /// The prompt's token ids, its formatted conversation (for a chat) and the options with the
    /// stop tokens filled in: unless `opts` names some or `ignore_eos` is set, a chat turn ends
    /// at the template's end-of-turn tokens and other text at the end-of-sequence token.
    pub fn prepare(
        &self,
        model: &LoadedModel,
        mut opts: GenerateOptions,
        ignore_eos: bool,
    ) -> Result<Prepared> {
        let (ids, chat_prompt) = match self {
            Self::Text(text) => (model.encode(text)?, None),
            Self::Ids(ids) => {
                model.check_ids(ids)?;
                (ids.clone(), None)
            }
            Self::Chat {
                messages,
                add_generation_prompt,
            } => (
                model.chat_ids(messages, *add_generation_prompt)?,
                Some(model.chat_prompt(messages, *add_generation_prompt)?),
            ),
        };
        if opts.stop_tokens.is_empty() && !ignore_eos {
            opts.stop_tokens = match chat_prompt {
                Some(_) => model.chat_stop_tokens(),
                None => model.eos_token_id.into_iter().collect(),
            };
        }
        Ok(Prepared {
            ids,
            chat_prompt,
            opts,
        })
    }
}

/// A prompt ready to generate from.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub ids: Vec<u32>,
    /// The formatted conversation of a chat prompt.
    pub chat_prompt: Option<String>,
    pub opts: GenerateOptions,
}

impl Prepared {
    /// Whether `token` closes a chat turn (it is then left out of the reply's text).
    pub fn ends_turn(&self, token: u32) -> bool {
        self.chat_prompt.is_some() && self.opts.stop_tokens.contains(&token)
    }
}

/// A finished generation.
#[derive(Debug, Clone, Serialize)]
pub struct Reply {
    pub prompt_ids: Vec<u32>,
    /// Every generated token, the one that closed a chat turn included.
    pub generated_ids: Vec<u32>,
    pub chat_prompt: Option<String>,
    /// The reply decoded, without the token that closed a chat turn (none without a tokenizer).
    pub text: Option<String>,
    pub seconds: f64,
    pub tokens_per_s: f64,
    pub use_cache: bool,
}

/// Generate from `prompt` with `model`; `on_token` sees every token as it comes and stops the
/// generation by returning `false`.
pub async fn respond(
    model: &LoadedModel,
    prompt: &Prepared,
    on_token: impl FnMut(u32) -> bool,
) -> Result<Reply> {
    let start = crate::platform::now_ms();
    let tokens = generate(
        model.causal_lm(),
        &model.device,
        &prompt.ids,
        &prompt.opts,
        on_token,
    )
    .await?;
    let seconds = (crate::platform::now_ms() - start) / 1e3;
    let shown = match tokens.split_last() {
        Some((&last, rest)) if prompt.ends_turn(last) => rest,
        _ => &tokens[..],
    };
    let text = match &model.tokenizer {
        Some(tk) => Some(tk.decode(shown)?),
        None => None,
    };
    Ok(Reply {
        prompt_ids: prompt.ids.clone(),
        tokens_per_s: tokens.len() as f64 / seconds.max(1e-9),
        generated_ids: tokens,
        chat_prompt: prompt.chat_prompt.clone(),
        text,
        seconds,
        use_cache: prompt.opts.use_cache,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prompts_read_from_every_accepted_shape() {
        assert_eq!(
            Prompt::from_json(&json!("hi")).unwrap(),
            Prompt::Text("hi".into())
        );
        assert_eq!(
            Prompt::from_json(&json!({"text": "hi"})).unwrap(),
            Prompt::Text("hi".into())
        );
        assert_eq!(
            Prompt::from_json(&json!({"ids": [1, 2]})).unwrap(),
            Prompt::Ids(vec![1, 2])
        );
        let chat = Prompt::Chat {
            messages: vec![Message::new("user", "hello")],
            add_generation_prompt: false,
        };
        let list = json!([{"role": "user", "content": "hello"}]);
        for c in [list.clone(), json!(list.to_string())] {
            let p = json!({"chat": c, "add_generation_prompt": false});
            assert_eq!(Prompt::from_json(&p).unwrap(), chat);
        }
        for bad in [
            json!({"ids": [-1]}),
            json!({"chat": [{"role": "user"}]}),
            json!({"chat": "not json"}),
            json!({}),
            json!(3),
        ] {
            let e = Prompt::from_json(&bad).unwrap_err();
            assert_eq!(e.code, crate::error::Code::ConfigInvalid, "{bad}");
        }
    }
}
