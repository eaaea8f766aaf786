//! `cargo xtask test`: the native test suite, then the browser tests against a freshly
//! built page.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::serve::serve_dir;
use crate::util::{self, repo_root, CHROMIUM};
use crate::wasm::build_wasm;
use crate::{prepare_models, Profile};

/// Which parts of the suite to run.
pub struct TestOptions {
    pub native: bool,
    pub browser: bool,
    /// A test-name filter for both `cargo test` and `node --test-name-pattern`.
    pub filter: Option<String>,
}

pub fn test(options: &TestOptions) -> Result<()> {
    let started = Instant::now();
    let root = repo_root();
    let mut ran = Vec::new();

    if options.browser {
        // Install prerequisites before the long builds, so a missing one fails fast.
        util::ensure_wasm_target()?;
        util::ensure_chromium()?;
        util::ensure_npm_deps()?;
        // The page imports the vendored chart library; its types come with it.
        crate::wasm::vendor_js()?;
        typecheck(&root)?;
        ran.push("the page's JavaScript type-checks".to_owned());
    }

    // The default models first: native parity tests read them (all-MiniLM-L6-v2,
    // SmolLM2-135M-Instruct).
    prepare_models()?;

    if options.native {
        // One `cargo test -p` per package rather than `cargo test --workspace`: cargo
        // unifies dependency features across the packages it builds together, and
        // xtask's dependencies switch on features (indexmap/serde, crossbeam-utils/std)
        // that webtune alone does not. A workspace-wide build would therefore compile
        // burn and wgpu a second time, differently from the `cargo build -p webtune`
        // below and from a plain `cargo build`/`cargo test` in the repository root.
        let packages = util::workspace_packages()?;
        for package in &packages {
            let mut cmd = util::cargo();
            cmd.args(["test", "-p", package]);
            // The models are there now (prepare_models above), so a test that finds one
            // missing fails here instead of skipping (as it does in a plain `cargo test`
            // without them): a skip would hide that the real-model parity tests never ran.
            cmd.env("WEBTUNE_REQUIRE_MODELS", "1");
            if let Some(filter) = &options.filter {
                cmd.args(["--", filter]);
            }
            util::run(&mut cmd)?;
        }
        ran.push(format!("native tests passed ({})", packages.join(", ")));
    }

    if options.browser {
        util::run(util::cargo().args(["build", "-p", "webtune", "--bin", "webtune"]))?;
        let cli = util::target_dir()?
            .join("debug")
            .join(format!("webtune{}", std::env::consts::EXE_SUFFIX));
        build_wasm(Profile::Release)?; // also vendors the page's libraries

        let files = e2e_test_files(&root.join("tests/e2e"))?;
        if files.is_empty() {
            println!("xtask: no tests/e2e/**/*.test.mjs files yet; skipping the browser tests");
            ran.push("no browser tests found".to_owned());
        } else {
            let artifacts = root.join("test-artifacts");
            fs::create_dir_all(&artifacts)
                .with_context(|| format!("cannot create {}", artifacts.display()))?;
            let server = serve_dir(&root.join("www"), SocketAddr::from(([127, 0, 0, 1], 0)))?;
            let url = format!("http://{}/", server.addr());
            println!(
                "xtask: serving www/ at {url} for {} browser test file(s)",
                files.len()
            );

            let mut cmd = Command::new("node");
            // One file at a time: each drives its own chromium with a GPU, and parallel
            // browsers make timings and memory use unpredictable.
            cmd.args(["--test", "--test-concurrency=1"]);
            if let Some(filter) = &options.filter {
                cmd.arg(format!("--test-name-pattern={filter}"));
            }
            cmd.args(&files)
                .current_dir(&root)
                .env("WEBTUNE_URL", &url)
                .env("WEBTUNE_CLI", &cli)
                .env("CHROMIUM", CHROMIUM)
                .env("WEBTUNE_ARTIFACTS", &artifacts);
            let result = util::run(&mut cmd);
            drop(server);
            result.context("browser tests failed")?;
            ran.push(format!("browser tests passed ({} file(s))", files.len()));
        }
    }

    println!(
        "xtask test: {} in {:.0} s",
        ran.join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `tsc --noEmit` over the page's JavaScript (tsconfig.json) and its workers
/// (tsconfig.worker.json), with the typescript pinned in package-lock.json: JSDoc types,
/// webtune.d.ts and the worker protocol (www/protocol.d.ts), so a misspelt message field fails
/// here, in seconds, before any build; then webtune.d.ts against webtune.js (tsconfig.api.json).
fn typecheck(root: &Path) -> Result<()> {
    let tsc = |project: &str| {
        println!("xtask: tsc --noEmit -p {project}");
        util::run(
            Command::new("node")
                .arg(root.join("node_modules/typescript/bin/tsc"))
                .args(["--noEmit", "-p", project])
                .current_dir(root),
        )
    };
    for project in ["tsconfig.json", "tsconfig.worker.json"] {
        tsc(project)
            .with_context(|| format!("the page's JavaScript does not type-check ({project})"))?;
    }
    // The package's declarations against its implementation (tests/types/webtune-api.ts): an
    // import of webtune.js resolves to webtune.d.ts, so the check reads a copy under another name.
    let copy = root.join("www/webtune.api-check.tmp.js");
    fs::copy(root.join("www/webtune.js"), &copy)
        .with_context(|| format!("cannot write {}", copy.display()))?;
    let checked = tsc("tsconfig.api.json");
    let _ = fs::remove_file(&copy);
    checked.context("www/webtune.d.ts does not match www/webtune.js (tsconfig.api.json)")
}

/// The browser test files, relative to the repository root and sorted so runs are in a
/// stable order. Listed here rather than passing the directory to `node --test`, whose
/// directory handling differs between Node.js versions.
fn e2e_test_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if dir.is_dir() {
        collect_test_files(dir, &mut files)?;
    }
    files.sort();
    let root = repo_root();
    Ok(files
        .into_iter()
        .map(|f| f.strip_prefix(&root).map(Path::to_path_buf).unwrap_or(f))
        .collect())
}

fn collect_test_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_test_files(&path, files)?;
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".test.mjs"))
        {
            files.push(path);
        }
    }
    Ok(())
}
