//! Chat templates (Jinja, as models ship them) rendered over messages. The input is the
//! template source; each NUL-separated piece after it is a message, `role:content` or just
//! content with roles alternating user/assistant. The source is also tried as a
//! tokenizer_config.json carrying the template.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webtune::data::{ChatTemplate, Message};
use webtune_fuzz::{check, split_nul};

fuzz_target!(|data: &[u8]| {
    let (source, pieces) = split_nul(data);
    let source = String::from_utf8_lossy(source);
    let mut messages: Vec<Message> = pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let piece = String::from_utf8_lossy(piece);
            match piece.split_once(':') {
                Some((role, content)) if role.len() <= 16 => Message::new(role, content),
                _ => Message::new(if i % 2 == 0 { "user" } else { "assistant" }, &piece),
            }
        })
        .collect();
    // Seed files are bare templates: render them over a short conversation, as the
    // seed replay in tests/hostile.rs does.
    if messages.is_empty() {
        messages = vec![Message::new("user", "hi"), Message::new("assistant", "yo")];
    }
    let generation = pieces.len() % 2 == 0;
    check(data.len(), || {
        let t = ChatTemplate::new(&source, "<s>", "</s>")?;
        t.render(&messages, generation)
    });
    check(data.len(), || {
        match ChatTemplate::from_tokenizer_config(source.as_bytes())? {
            Some(t) => t.render(&messages, generation).map(|s| s.len()),
            None => Ok(0),
        }
    });
});
