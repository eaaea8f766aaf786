//! Shared helpers: where things are, running programs, and installing what the tasks need.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The Rust target the page's module is compiled for.
pub const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Debian's browser, driven by playwright-core in the browser tests. We never download
/// a browser: Debian's build is the one the project supports and CI has.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The oldest Node.js with everything the tooling uses (`node --test --test-concurrency`,
/// playwright-core's `engines` field).
const MIN_NODE_MAJOR: u32 = 20;

/// The repository root: xtask lives in `<root>/xtask`.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask's manifest directory has a parent")
        .to_path_buf()
}

/// A `cargo` command for the same toolchain that runs xtask (cargo sets `$CARGO` for
/// `cargo run`), working in the repository root.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root());
    cmd
}

/// The rustup toolchain of the nightly-only work: the threaded wasm module (`-Z build-std`) and
/// the cargo-fuzz targets.
pub const NIGHTLY: &str = "nightly";

/// A `cargo +nightly` command working in the repository root: the rustup proxy, not `$CARGO`
/// (the stable cargo running xtask), and without the `RUSTUP_TOOLCHAIN` rustup set for xtask's
/// own toolchain, so `+nightly` wins.
pub fn nightly_cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg(format!("+{NIGHTLY}"))
        .current_dir(repo_root())
        .env_remove("RUSTUP_TOOLCHAIN");
    cmd
}

/// Runs `cmd` with the terminal as its stdout/stderr so progress shows, failing on a
/// non-zero exit status.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = describe(cmd);
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout; stderr still goes to the terminal.
pub fn output(cmd: &mut Command) -> Result<String> {
    let shown = describe(cmd);
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !out.status.success() {
        bail!("`{shown}` failed ({})", out.status);
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{shown}` printed non-UTF-8 output"))
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `program` can be started at all (`NotFound` is the only answer we act on).
fn is_installed(program: &str, version_arg: &str) -> bool {
    Command::new(program)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// `cargo metadata` for the workspace alone (no dependencies).
fn workspace_metadata() -> Result<serde_json::Value> {
    let json = output(cargo().args(["metadata", "--format-version", "1", "--no-deps"]))?;
    serde_json::from_str(&json).context("could not parse `cargo metadata` output")
}

/// Cargo's target directory, honouring `CARGO_TARGET_DIR` and `build.target-dir` (CI
/// keeps it outside the clone), as cargo itself reports it.
pub fn target_dir() -> Result<PathBuf> {
    let meta = workspace_metadata()?;
    let dir = meta["target_directory"]
        .as_str()
        .context("`cargo metadata` output has no target_directory")?;
    Ok(PathBuf::from(dir))
}

/// The names of the workspace's packages.
pub fn workspace_packages() -> Result<Vec<String>> {
    let meta = workspace_metadata()?;
    let packages = meta["packages"]
        .as_array()
        .context("`cargo metadata` output has no packages")?;
    packages
        .iter()
        .map(|p| {
            p["name"]
                .as_str()
                .map(str::to_owned)
                .context("a package in `cargo metadata` output has no name")
        })
        .collect()
}

/// Installs the wasm32 standard library through rustup when the active toolchain lacks it.
pub fn ensure_wasm_target() -> Result<()> {
    if !is_installed("rustup", "--version") {
        // Without rustup the toolchain comes from elsewhere (a distribution, a container
        // image); the sysroot tells us whether the target's standard library is there.
        let sysroot = output(Command::new("rustc").args(["--print", "sysroot"]))?;
        let lib = Path::new(sysroot.trim())
            .join("lib/rustlib")
            .join(WASM_TARGET);
        if lib.is_dir() {
            return Ok(());
        }
        bail!(
            "the Rust target {WASM_TARGET} is not installed and rustup was not found; \
             install rustup (https://rustup.rs) or add the {WASM_TARGET} standard library \
             to your toolchain"
        );
    }
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if installed.lines().any(|line| line.trim() == WASM_TARGET) {
        return Ok(());
    }
    println!("xtask: installing the Rust target {WASM_TARGET}");
    run(Command::new("rustup").args(["target", "add", WASM_TARGET]))
}

/// Installs the npm dev packages (wasm-opt, playwright-core, uPlot) from
/// `package-lock.json` when `node_modules` is missing or older than the lock file.
pub fn ensure_npm_deps() -> Result<()> {
    ensure_node()?;
    let root = repo_root();
    let lock = root.join("package-lock.json");
    // npm writes this file last on every install, so its age is the install's age.
    let installed = root.join("node_modules/.package-lock.json");
    let lock_time = fs::metadata(&lock)
        .and_then(|m| m.modified())
        .with_context(|| format!("cannot read {}", lock.display()))?;
    let up_to_date = fs::metadata(&installed)
        .and_then(|m| m.modified())
        .is_ok_and(|installed_time| installed_time >= lock_time);
    if up_to_date {
        return Ok(());
    }
    println!("xtask: installing npm dev packages (npm ci)");
    run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&root))
}

/// Fails with install advice unless `node` (version 20 or newer) and `npm` are present.
fn ensure_node() -> Result<()> {
    let advice =
        format!("install Node.js {MIN_NODE_MAJOR}+ (https://nodejs.org), which includes npm");
    let version = Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    let Some(version) = version else {
        bail!("`node` was not found: {advice}");
    };
    let major = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|major| major.parse::<u32>().ok());
    if major.is_none_or(|major| major < MIN_NODE_MAJOR) {
        bail!("Node.js {version} is too old: {advice}");
    }
    if !is_installed("npm", "--version") {
        bail!("`npm` was not found: {advice}");
    }
    Ok(())
}

/// Installs Debian's chromium when it is missing and we are root; otherwise explains how.
pub fn ensure_chromium() -> Result<()> {
    if Path::new(CHROMIUM).exists() {
        return Ok(());
    }
    let uid = output(Command::new("id").arg("-u")).context("could not find the user id")?;
    if uid.trim() != "0" {
        bail!(
            "the browser tests need Debian's chromium at {CHROMIUM}; install it with \
             `sudo apt-get install chromium`"
        );
    }
    println!("xtask: installing Debian's chromium (apt-get)");
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "chromium"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    if !Path::new(CHROMIUM).exists() {
        bail!("apt-get installed chromium but {CHROMIUM} does not exist");
    }
    Ok(())
}

/// `bytes` in decimal megabytes, for size reports.
pub fn megabytes(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}
