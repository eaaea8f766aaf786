//! GGUF: header, metadata of every type (strings, nested arrays, declared counts), tensor infos
//! and offsets, the config, tokenizer and chat template built from the metadata, every tensor
//! read (dequantised), and a whole model load when the file parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webtune::backend::Backend;
use webtune::io::gguf::{self, GgufFile, GgufHeader};
use webtune::io::hf::ModelFiles;
use webtune::io::tokenizer::Tokenizer;
use webtune::models::loaded::LoadedModel;
use webtune_fuzz::check;

const NAME: &str = "model.gguf";

fuzz_target!(|data: &[u8]| {
    let parsed = check(data.len(), || {
        let header = GgufHeader::parse(NAME, data)?;
        let _ = gguf::hf_config(NAME, &header, data);
        let _ = gguf::chat_template(&header);
        if let Ok(Some(json)) = gguf::tokenizer_json(NAME, &header) {
            let _ = Tokenizer::from_bytes(json.to_string().as_bytes());
        }
        let f = GgufFile::parse(NAME, data.to_vec())?;
        let _ = (f.num_values(), f.dtype_names().count());
        let names: Vec<String> = f.hf_names().map(str::to_string).collect();
        for name in names {
            let _ = f.read_f32(&name);
        }
        let raw: Vec<String> = f.header.tensors.keys().cloned().collect();
        for name in raw {
            let _ = f.read_raw(&name);
        }
        Ok(())
    });
    // Loading builds the model from the metadata (sizes, heads, vocabulary) and checks every
    // tensor against it; only worth its cost once the file parses at all.
    if parsed.is_some() {
        check(data.len(), || {
            let mut files = ModelFiles::new();
            files.insert(NAME, data.to_vec());
            LoadedModel::load(files, &Backend::cpu().inference).map(|m| m.info.parameters)
        });
    }
});
