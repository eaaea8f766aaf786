//! config.json (GPT-2, Llama/Qwen2/Mistral, BERT) and model.safetensors.index.json. The input is
//! tried in both roles: as config.json, parsed by every family and then loaded next to the real
//! tiny checkpoint of its architecture (sizes the weights cannot match must be refused before
//! anything is allocated for them); and as the shard index of a real checkpoint whose shards
//! are the real weights and a truncated copy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webtune::backend::Backend;
use webtune::io::hf::{self, ModelFiles};
use webtune::models::bert::BertConfig;
use webtune::models::gpt2::Gpt2Config;
use webtune::models::llama::LlamaConfig;
use webtune::models::loaded::LoadedModel;
use webtune_fuzz::fixtures::CHECKPOINTS;
use webtune_fuzz::{check, split_nul};

const INDEX: &str = "model.safetensors.index.json";

fn load(files: &[(&str, &[u8])]) -> webtune::Result<usize> {
    let mut mf = ModelFiles::new();
    for (name, bytes) in files {
        mf.insert(*name, bytes.to_vec());
    }
    let model = LoadedModel::load(mf, &Backend::cpu().inference)?;
    Ok(model.info.parameters)
}

fuzz_target!(|data: &[u8]| {
    // Anything after a NUL is ignored, so inputs stay JSON-shaped and the two roles agree.
    let (json, _) = split_nul(data);

    // As config.json.
    let arch = check(json.len(), || {
        let mut mf = ModelFiles::new();
        mf.insert("config.json", json.to_vec());
        let config = mf.config()?;
        let _ = Gpt2Config::from_json(&config);
        let _ = LlamaConfig::from_json(&config);
        if let Ok(bert) = BertConfig::from_json(&config) {
            let _ = bert.labels();
        }
        hf::architecture(&config)
    });
    let family = match arch.as_deref() {
        Some("gpt2") => Some(0),
        Some("llama" | "qwen2" | "mistral") => Some(1),
        Some("bert") => Some(2),
        _ => None,
    };
    if let Some(i) = family {
        let (_, _, weights) = CHECKPOINTS[i];
        let files = [("config.json", json), ("model.safetensors", weights)];
        check(json.len() + weights.len(), || load(&files));
    }

    // As the shard index. The checkpoint is picked by length so all three get their turn.
    let (_, config, weights) = CHECKPOINTS[json.len() % CHECKPOINTS.len()];
    let files = [
        ("config.json", config),
        (INDEX, json),
        ("model.safetensors", weights),
        (
            "model-00001-of-00002.safetensors",
            &weights[..weights.len() / 2],
        ),
        ("model-00002-of-00002.safetensors", weights),
    ];
    let input: usize = files.iter().map(|(_, b)| b.len()).sum();
    let sharded = check(input, || {
        let mut mf = ModelFiles::new();
        for (name, bytes) in files {
            mf.insert(name, bytes.to_vec());
        }
        let weights = mf.take_weights()?;
        let _ = (weights.dtypes(), weights.num_values());
        let names: Vec<String> = weights.names().map(str::to_string).collect();
        for name in names {
            if let Some(shape) = weights.shape_of(&name) {
                let _ = weights.read(std::slice::from_ref(&name), &shape);
            }
        }
        Ok(())
    });
    if sharded.is_some() {
        check(input, || load(&files));
    }
});
