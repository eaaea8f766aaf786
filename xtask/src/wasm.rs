//! `cargo xtask build-wasm`: compile webtune for the browser and turn it into `www/pkg` and
//! `www/pkg-threads`.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use flate2::write::GzEncoder;
use flate2::Compression;
use wasm_bindgen_cli_support::Bindgen;

use crate::util::{self, megabytes, repo_root, WASM_TARGET};
use crate::Profile;

/// The wasm-bindgen version xtask's `wasm-bindgen-cli-support` is pinned to in
/// xtask/Cargo.toml. The crate compiled into the module must be the same version.
pub const WASM_BINDGEN_VERSION: &str = "0.2.130";

/// wasm-opt's flag for each wasm target feature name LLVM records in the module's
/// `target_features` section.
const WASM_OPT_FEATURE_FLAGS: &[(&str, &str)] = &[
    ("atomics", "--enable-threads"),
    ("bulk-memory", "--enable-bulk-memory"),
    ("bulk-memory-opt", "--enable-bulk-memory-opt"),
    ("call-indirect-overlong", "--enable-call-indirect-overlong"),
    ("exception-handling", "--enable-exception-handling"),
    ("extended-const", "--enable-extended-const"),
    ("fp16", "--enable-fp16"),
    ("gc", "--enable-gc"),
    ("memory64", "--enable-memory64"),
    ("multimemory", "--enable-multimemory"),
    ("multivalue", "--enable-multivalue"),
    ("mutable-globals", "--enable-mutable-globals"),
    ("nontrapping-fptoint", "--enable-nontrapping-float-to-int"),
    ("reference-types", "--enable-reference-types"),
    ("relaxed-simd", "--enable-relaxed-simd"),
    ("sign-ext", "--enable-sign-ext"),
    ("simd128", "--enable-simd"),
    ("tail-call", "--enable-tail-call"),
    ("wide-arithmetic", "--enable-wide-arithmetic"),
];

/// Bumped whenever the processing after cargo changes, so an old stamp cannot keep
/// stale output around.
const PIPELINE_VERSION: u32 = 2;

/// The generated files the page imports; all must exist to skip regeneration.
const PKG_OUTPUTS: &[&str] = &["webtune.js", "webtune_bg.wasm", "webtune.d.ts"];

/// Linear memory the threaded module may grow to. Shared memory needs a declared maximum
/// (rustc's default is 1 GiB, too small to fine-tune SmolLM2); 4 GiB is all wasm32 can address.
const THREADS_MAX_MEMORY: u64 = 4 << 30;

/// One of the two wasm packages the page can load.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Package {
    /// `www/pkg`: WebGPU and the single-threaded CPU backend; stable Rust; every browser.
    Main,
    /// `www/pkg-threads`: the CPU backend only, its kernels on a rayon pool of Web Workers over
    /// shared memory (needs a cross-origin isolated page); nightly Rust with `+atomics`.
    Threads,
}

impl Package {
    fn dir_name(self) -> &'static str {
        match self {
            Package::Main => "pkg",
            Package::Threads => "pkg-threads",
        }
    }
}

/// Builds `www/pkg`, `www/pkg-threads` (and `www/vendor`) for `profile`, each in full
/// (tests and benchmarks measure both modules; `serve` has its own order, `build_for_serve`).
pub fn build_wasm(profile: Profile) -> Result<()> {
    ensure_build_tools()?;
    build_package(profile, Package::Main)?;
    ensure_threads_toolchain()?;
    build_package(profile, Package::Threads)?;
    vendor_js()
}

/// What every wasm build needs first: the wasm target, the npm packages (wasm-opt among them)
/// and a Cargo.lock whose wasm-bindgen matches xtask's.
fn ensure_build_tools() -> Result<()> {
    util::ensure_wasm_target()?;
    util::ensure_npm_deps()?;
    check_wasm_bindgen_lock(&repo_root().join("Cargo.lock"))
}

/// Installs the nightly toolchain and its standard library sources where missing (rustup).
fn ensure_threads_toolchain() -> Result<()> {
    let has_src = Command::new("rustup")
        .args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            util::NIGHTLY,
        ])
        .output()
        .is_ok_and(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .any(|l| l.trim().starts_with("rust-src"))
        });
    if has_src {
        return Ok(());
    }
    println!(
        "xtask: installing the {} toolchain with rust-src (the threaded wasm \
         module rebuilds the standard library with atomics)",
        util::NIGHTLY
    );
    util::run(Command::new("rustup").args([
        "toolchain",
        "install",
        util::NIGHTLY,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
    .context("the threaded wasm module needs rustup's nightly toolchain with rust-src")
}

/// The cargo command that compiles `package`, and the target dir it writes to.
fn cargo_build(profile: Profile, package: Package) -> Result<(Command, PathBuf)> {
    let mut target_dir = util::target_dir()?;
    let mut cmd = match package {
        Package::Main => util::cargo(),
        Package::Threads => util::nightly_cargo(),
    };
    cmd.args(["build", "--lib", "-p", "webtune", "--target", WASM_TARGET]);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    if package == Package::Threads {
        // Its own target dir: other rustflags and a rebuilt std would otherwise evict the main
        // build's artifacts on every switch.
        target_dir = target_dir.join("wasm-threads");
        cmd.args(["--no-default-features", "--features", "wasm-threads"])
            // std itself must be compiled with atomics for its locks to work across threads.
            .args(["-Z", "build-std=std,panic_abort"])
            // A panic aborts in wasm anyway; build-std has no unwinding runtime for it.
            .args(["--config", "profile.release.panic=\"abort\""])
            .args(["--config", "profile.dev.panic=\"abort\""])
            .arg("--target-dir")
            .arg(&target_dir)
            // wasm-bindgen's thread support wants the memory imported and shared, and the TLS
            // symbols exported; rustc does not ask wasm-ld for them by itself.
            .env(
                "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS",
                format!(
                    "-C target-feature=+atomics,+bulk-memory,+mutable-globals,+simd128 \
                     -C link-arg=--shared-memory -C link-arg=--import-memory \
                     -C link-arg=--max-memory={THREADS_MAX_MEMORY} \
                     -C link-arg=--export=__wasm_init_tls -C link-arg=--export=__tls_size \
                     -C link-arg=--export=__tls_align -C link-arg=--export=__tls_base"
                ),
            );
    }
    Ok((cmd, target_dir))
}

/// Compiles `package` and turns it into `www/<package>` (wasm-bindgen, then wasm-opt for
/// release), skipping what is up to date.
fn build_package(profile: Profile, package: Package) -> Result<()> {
    match publish_package(profile, package)? {
        Some(pending) => pending.optimise(),
        None => Ok(()),
    }
}

/// A package published in `www/` straight from wasm-bindgen: it works, but its module is
/// about twice the size wasm-opt makes it, and it carries no stamp yet, so a build that stops
/// here is redone next time.
pub struct Unoptimised {
    package: Package,
    pkg: PathBuf,
    cache: PathBuf,
    stamp: String,
    features: Vec<&'static str>,
}

impl Unoptimised {
    /// Runs wasm-opt on the published module (replaced in one rename, so a page loading
    /// meanwhile gets one whole file or the other; the JavaScript glue is the same for both),
    /// then stamps the package and keeps a copy in the target dir.
    pub fn optimise(self) -> Result<()> {
        let wasm = self.pkg.join("webtune_bg.wasm");
        wasm_opt(&wasm, &self.features)?;
        println!(
            "  wasm-opt -Oz   www/{}/webtune_bg.wasm {}",
            self.package.dir_name(),
            megabytes(file_size(&wasm)?)
        );
        finish_package(&self.pkg, &self.cache, &self.stamp)
    }
}

/// Compiles `package` and makes `www/<package>` usable: left as it is when up to date,
/// restored from the target dir's copy, or generated by wasm-bindgen. Returns the wasm-opt
/// pass still to run (release builds only). The directory is replaced whole, never written in
/// place, so a page served meanwhile never sees half of it.
fn publish_package(profile: Profile, package: Package) -> Result<Option<Unoptimised>> {
    let root = repo_root();
    let (mut cmd, target_dir) = cargo_build(profile, package)?;
    util::run(&mut cmd)?;

    let raw_path = target_dir
        .join(WASM_TARGET)
        .join(profile.cargo_dir())
        .join("webtune.wasm");
    let raw = fs::read(&raw_path).with_context(|| format!("cannot read {}", raw_path.display()))?;
    check_raw_module(&raw)
        .with_context(|| format!("{} failed the pre-bindgen checks", raw_path.display()))?;

    let pkg = root.join("www").join(package.dir_name());
    let optimise = profile == Profile::Release;
    let stamp = build_stamp(&raw, profile, optimise);

    // A copy of the last output lives in the target dir too: a fresh clone (CI) sharing a
    // target dir then skips wasm-opt, which takes minutes.
    let cache = util::target_dir()?
        .join("webtune-pkg")
        .join(profile.cargo_dir())
        .join(package.dir_name());
    let holds_stamp = |dir: &Path| {
        fs::read_to_string(dir.join(".build-stamp")).is_ok_and(|old| old == stamp)
            && PKG_OUTPUTS.iter().all(|name| dir.join(name).is_file())
    };
    let fresh = tmp_sibling(&pkg, "building");
    if fresh.exists() {
        fs::remove_dir_all(&fresh).with_context(|| format!("cannot clear {}", fresh.display()))?;
    }
    let pending = if holds_stamp(&pkg) {
        println!(
            "xtask: webtune.wasm unchanged, www/{} is up to date",
            package.dir_name()
        );
        println!("  cargo output   {}", megabytes(raw.len() as u64));
        None
    } else if holds_stamp(&cache) {
        println!(
            "xtask: webtune.wasm unchanged, restoring www/{} from {}",
            package.dir_name(),
            cache.display()
        );
        copy_dir(&cache, &fresh)?;
        replace_dir(&fresh, &pkg)?;
        None
    } else {
        // Generated into an empty directory, so files from an older wasm-bindgen (snippets,
        // renamed outputs) cannot linger.
        Bindgen::new()
            .input_path(&raw_path)
            .web(true)?
            .typescript(true)
            // Like the wasm-bindgen CLI: `init()` with no argument loads
            // `webtune_bg.wasm` next to `webtune.js` (the library default omits that).
            .omit_default_module_path(false)
            .generate(&fresh)
            .context("wasm-bindgen failed")?;
        println!("  cargo output   {}", megabytes(raw.len() as u64));
        println!(
            "  wasm-bindgen   {}",
            megabytes(file_size(&fresh.join("webtune_bg.wasm"))?)
        );
        let features = wasm_opt_features(&raw)
            .with_context(|| format!("cannot configure wasm-opt for {}", raw_path.display()))?;
        replace_dir(&fresh, &pkg)?;
        if optimise {
            Some(Unoptimised {
                package,
                pkg: pkg.clone(),
                cache,
                stamp,
                features,
            })
        } else {
            finish_package(&pkg, &cache, &stamp)?;
            None
        }
    };
    let final_wasm = pkg.join("webtune_bg.wasm");
    println!(
        "  www/{}/webtune_bg.wasm {} ({} gzipped){}",
        package.dir_name(),
        megabytes(file_size(&final_wasm)?),
        megabytes(gzip_size(&final_wasm)?),
        if pending.is_some() {
            ", not yet optimised"
        } else {
            ""
        }
    );
    Ok(pending)
}

/// Stamps a finished package and keeps a copy of it in the target dir.
fn finish_package(pkg: &Path, cache: &Path, stamp: &str) -> Result<()> {
    let stamp_path = pkg.join(".build-stamp");
    fs::write(&stamp_path, stamp)
        .with_context(|| format!("cannot write {}", stamp_path.display()))?;
    let fresh = tmp_sibling(cache, "building");
    if fresh.exists() {
        fs::remove_dir_all(&fresh).with_context(|| format!("cannot clear {}", fresh.display()))?;
    }
    copy_dir(pkg, &fresh)?;
    replace_dir(&fresh, cache)
}

/// Puts directory `fresh` in the place of `dir` with renames: `dir` is missing only between
/// two renames, and never half written.
fn replace_dir(fresh: &Path, dir: &Path) -> Result<()> {
    let old = tmp_sibling(dir, "old");
    if old.exists() {
        fs::remove_dir_all(&old).with_context(|| format!("cannot clear {}", old.display()))?;
    }
    if dir.exists() {
        fs::rename(dir, &old).with_context(|| format!("cannot move {} aside", dir.display()))?;
    }
    fs::rename(fresh, dir).with_context(|| format!("cannot move {} into place", dir.display()))?;
    if old.exists() {
        fs::remove_dir_all(&old).with_context(|| format!("cannot remove {}", old.display()))?;
    }
    Ok(())
}

/// What `cargo xtask serve` still builds once the page works.
pub struct ServeBuild {
    pub still_building: Vec<&'static str>,
    pub done: Vec<std::thread::JoinHandle<()>>,
}

/// Builds what the page needs to work (npm packages, vendored libraries, the default models,
/// the main module straight from wasm-bindgen) and starts the rest in the background: wasm-opt
/// of the main module and the threaded CPU module, which the page's worker picks up when it
/// next starts (a reload). On 2 cores this serves a fresh clone's page in about the time of
/// the main module's cargo build, instead of after every step (issue 22).
pub fn build_for_serve(profile: Profile) -> Result<ServeBuild> {
    let root = repo_root();
    ensure_build_tools()?;
    vendor_js()?;
    let main_dir = root.join("www").join(Package::Main.dir_name());
    let stamp_of = |dir: &Path| fs::read_to_string(dir.join(".build-stamp")).ok();
    let stamp_before = stamp_of(&main_dir);
    // Downloads, not computing: they overlap the compile.
    let models = std::thread::spawn(crate::prepare_models);
    let main = publish_package(profile, Package::Main);
    let models = models
        .join()
        .map_err(|_| anyhow::anyhow!("preparing the default models panicked"))?;
    let main = main?;
    models?;

    let threads_dir = root.join("www").join(Package::Threads.dir_name());
    let mut still_building = Vec::new();
    let mut done = Vec::new();
    let main_changed = main.is_some() || stamp_of(&main_dir) != stamp_before;
    if main_changed && threads_dir.exists() {
        // The sources changed since it was built: until its rebuild, the page runs its CPU
        // backend on one thread rather than on a module that may not match the worker.
        fs::remove_dir_all(&threads_dir)
            .with_context(|| format!("cannot remove {}", threads_dir.display()))?;
    }
    if let Some(pending) = main {
        still_building.push("wasm-opt of the main module (the page works meanwhile, its download is about twice as large)");
        done.push(std::thread::spawn(move || match pending.optimise() {
            Ok(()) => println!("xtask: the main module is optimised; reloading the page downloads the smaller one"),
            Err(err) => println!("xtask: warning: wasm-opt of the main module failed ({err:#}); the page keeps the unoptimised module"),
        }));
    }
    still_building.push("the threaded CPU module (until it is ready the CPU backend runs on one thread; reload the page then)");
    done.push(std::thread::spawn(move || {
        match ensure_threads_toolchain().and_then(|()| publish_package(profile, Package::Threads)) {
            Ok(pending) => {
                println!("xtask: the threaded CPU module is ready: reload the page to use it");
                if let Some(Err(err)) = pending.map(Unoptimised::optimise) {
                    println!("xtask: warning: wasm-opt of the threaded module failed ({err:#}); the page keeps the unoptimised one");
                }
            }
            Err(err) => {
                println!("xtask: warning: the threaded CPU module could not be built ({err:#}); the page's CPU backend will run on one thread");
                let _ = fs::remove_dir_all(&threads_dir);
            }
        }
    }));
    Ok(ServeBuild {
        still_building,
        done,
    })
}

/// Copies the page's third-party libraries from `node_modules` into `www/vendor`, so
/// the page loads them from its own origin (its CSP allows no other). Expects the npm
/// packages installed, as `build_wasm` does first.
pub fn vendor_js() -> Result<()> {
    let root = repo_root();
    let copies = [
        ("uplot/dist/uPlot.esm.js", "uplot/uPlot.esm.js"),
        ("uplot/dist/uPlot.min.css", "uplot/uPlot.min.css"),
        ("uplot/LICENSE", "uplot/LICENSE"),
        // Its types, named so that `tsc` reads them for uPlot.esm.js instead of checking the
        // library's own JavaScript (see typecheck in test_all.rs).
        ("uplot/dist/uPlot.d.ts", "uplot/uPlot.esm.d.ts"),
    ];
    for (from, to) in copies {
        let from = root.join("node_modules").join(from);
        let to = root.join("www/vendor").join(to);
        fs::create_dir_all(to.parent().expect("vendor paths have a parent"))?;
        fs::copy(&from, &to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

/// Fails unless every `wasm-bindgen` in `Cargo.lock` is the version xtask generates
/// glue for: a mismatch builds fine and then breaks in the browser.
fn check_wasm_bindgen_lock(lock_path: &Path) -> Result<()> {
    let lock = fs::read_to_string(lock_path)
        .with_context(|| format!("cannot read {}", lock_path.display()))?;
    let versions = locked_versions(&lock, "wasm-bindgen");
    ensure!(
        !versions.is_empty(),
        "{} has no wasm-bindgen package; is webtune's wasm dependency missing?",
        lock_path.display()
    );
    if let Some(other) = versions.iter().find(|v| *v != WASM_BINDGEN_VERSION) {
        bail!(
            "Cargo.lock has wasm-bindgen {other} but xtask was built with \
             wasm-bindgen-cli-support {WASM_BINDGEN_VERSION}; pin both to one version \
             (`cargo update -p wasm-bindgen --precise <v>` and the `=<v>` requirement plus \
             WASM_BINDGEN_VERSION in xtask)"
        );
    }
    Ok(())
}

/// The versions of package `name` in the text of a Cargo.lock (`name` is always
/// followed by `version` in a `[[package]]` entry).
fn locked_versions(lock: &str, name: &str) -> Vec<String> {
    let name_line = format!("name = \"{name}\"");
    let mut lines = lock.lines().map(str::trim);
    let mut versions = Vec::new();
    while let Some(line) = lines.next() {
        if line != name_line {
            continue;
        }
        if let Some(version) = lines
            .next()
            .and_then(|l| l.strip_prefix("version = \""))
            .and_then(|l| l.strip_suffix('"'))
        {
            versions.push(version.to_owned());
        }
    }
    versions
}

/// Checks the module exactly as cargo wrote it, before wasm-bindgen rewrites it.
fn check_raw_module(wasm: &[u8]) -> Result<()> {
    let sections = custom_sections(wasm)?;
    // Function names live in the "name" section; without it the check below would pass
    // whatever the module contains.
    let Some(names) = sections.iter().find(|s| s.name == "name") else {
        bail!(
            "the module has no \"name\" custom section, so the command_export check cannot \
             run; do not strip webtune.wasm (profile `strip` setting)"
        );
    };
    if contains(&wasm[names.range.clone()], b"command_export") {
        bail!(
            "the module has `command_export` wrapper functions: wasm-ld wraps every export \
             to re-run static constructors when nothing calls them. The crate must call \
             `__wasm_call_ctors()` once from its `#[wasm_bindgen(start)]` function, \
             otherwise every export re-runs static constructors (measured 18x slower steps)"
        );
    }
    Ok(())
}

/// The wasm-opt `--enable-*` flags for the wasm features the module was compiled with,
/// read from its `target_features` section. wasm-opt would also read the section itself
/// (wasm-bindgen keeps it), but naming the features keeps the optimiser from depending on
/// a section wasm-bindgen may one day drop, and fails loudly on a feature this table
/// does not know instead of letting wasm-opt guess.
fn wasm_opt_features(wasm: &[u8]) -> Result<Vec<&'static str>> {
    let sections = custom_sections(wasm)?;
    let Some(features) = sections.iter().find(|s| s.name == "target_features") else {
        bail!("the module has no \"target_features\" custom section");
    };
    wasm_opt_flags(&wasm[features.range.clone()])
}

/// Maps a `target_features` section payload to wasm-opt flags.
fn wasm_opt_flags(payload: &[u8]) -> Result<Vec<&'static str>> {
    let mut pos = 0;
    let count = read_leb_u32(payload, &mut pos)?;
    let mut flags = Vec::new();
    for _ in 0..count {
        let prefix = *payload
            .get(pos)
            .context("truncated target_features section")?;
        pos += 1;
        let len = read_leb_u32(payload, &mut pos)? as usize;
        let name = payload
            .get(pos..pos + len)
            .context("truncated target_features section")?;
        pos += len;
        let name = String::from_utf8_lossy(name);
        // `+` used, `=` required (older LLVM); `-` means "must not be enabled".
        if prefix == b'-' {
            continue;
        }
        let Some((_, flag)) = WASM_OPT_FEATURE_FLAGS.iter().find(|(f, _)| *f == name) else {
            bail!(
                "the module uses the wasm feature `{name}`, which xtask has no wasm-opt flag \
                 for; add it to WASM_OPT_FEATURE_FLAGS (see `wasm-opt --help`)"
            );
        };
        flags.push(*flag);
    }
    Ok(flags)
}

/// A custom section: its name and where its payload (after the name) lies in the module.
struct CustomSection {
    name: String,
    range: std::ops::Range<usize>,
}

/// Lists the custom sections of a wasm binary, reading only section headers.
fn custom_sections(wasm: &[u8]) -> Result<Vec<CustomSection>> {
    ensure!(
        wasm.len() >= 8 && wasm[..4] == *b"\0asm",
        "not a WebAssembly binary (bad magic number)"
    );
    ensure!(
        wasm[4..8] == [1, 0, 0, 0],
        "unsupported WebAssembly binary version {:?}",
        &wasm[4..8]
    );
    let mut sections = Vec::new();
    let mut pos = 8;
    while pos < wasm.len() {
        let id = wasm[pos];
        pos += 1;
        let size = read_leb_u32(wasm, &mut pos)? as usize;
        let end = pos
            .checked_add(size)
            .filter(|&end| end <= wasm.len())
            .context("a section runs past the end of the module")?;
        if id == 0 {
            let mut name_pos = pos;
            let name_len = read_leb_u32(wasm, &mut name_pos)? as usize;
            let name_end = name_pos
                .checked_add(name_len)
                .filter(|&e| e <= end)
                .context("a custom section's name runs past the section")?;
            let name = String::from_utf8_lossy(&wasm[name_pos..name_end]).into_owned();
            sections.push(CustomSection {
                name,
                range: name_end..end,
            });
        }
        pos = end;
    }
    Ok(sections)
}

/// Reads an unsigned LEB128 u32 at `*pos`, advancing it.
fn read_leb_u32(bytes: &[u8], pos: &mut usize) -> Result<u32> {
    let mut value: u32 = 0;
    for shift in (0..35).step_by(7) {
        let byte = *bytes.get(*pos).context("truncated LEB128 number")?;
        *pos += 1;
        value |= u32::from(byte & 0x7f)
            .checked_shl(shift)
            .context("LEB128 number too large")?;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    bail!("LEB128 number too long")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What the outputs in `www/pkg` were made from: the exact cargo output and how it was
/// processed. Not a security hash; it only has to change when the inputs do.
fn build_stamp(raw: &[u8], profile: Profile, optimise: bool) -> String {
    let mut hasher = DefaultHasher::new();
    raw.hash(&mut hasher);
    profile.hash(&mut hasher);
    optimise.hash(&mut hasher);
    WASM_BINDGEN_VERSION.hash(&mut hasher);
    PIPELINE_VERSION.hash(&mut hasher);
    format!("{:016x} {} bytes\n", hasher.finish(), raw.len())
}

/// Shrinks `wasm` in place with binaryen's wasm-opt from npm, enabling the wasm
/// `features` the module was compiled with. Debian's binaryen is deliberately not used:
/// its modules are rejected by Chromium.
fn wasm_opt(wasm: &Path, features: &[&str]) -> Result<()> {
    let root = repo_root();
    let tool = root.join("node_modules/binaryen/bin/wasm-opt");
    ensure!(
        tool.is_file(),
        "{} is missing; run `npm ci` in {}",
        tool.display(),
        root.display()
    );
    let tmp = tmp_sibling(wasm, "opt");
    // This npm build of wasm-opt is itself wasm and single-threaded: several minutes
    // for webtune.
    println!("xtask: wasm-opt -Oz (takes minutes)");
    let result = util::run(
        Command::new("node")
            .arg(&tool)
            .arg("-Oz")
            .args(features)
            .arg(wasm)
            .arg("-o")
            .arg(&tmp),
    );
    if let Err(err) = result {
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    fs::rename(&tmp, wasm).with_context(|| format!("cannot replace {}", wasm.display()))
}

/// Recursive copy of a directory of generated files.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("cannot list {}", from.display()))? {
        let path = entry?.path();
        let target = to.join(path.file_name().unwrap_or_default());
        if path.is_dir() {
            copy_dir(&path, &target)?;
        } else {
            fs::copy(&path, &target).with_context(|| {
                format!("cannot copy {} to {}", path.display(), target.display())
            })?;
        }
    }
    Ok(())
}

fn tmp_sibling(path: &Path, tag: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{tag}.tmp"));
    path.with_file_name(name)
}

fn file_size(path: &Path) -> Result<u64> {
    Ok(fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len())
}

/// The size of `path` after gzip at the default level: roughly what a browser downloads.
pub(crate) fn gzip_size(path: &Path) -> Result<u64> {
    let mut file =
        fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut encoder = GzEncoder::new(ByteCounter(0), Compression::default());
    io::copy(&mut file, &mut encoder)?;
    Ok(encoder.finish()?.0)
}

/// A writer that only counts what is written to it.
struct ByteCounter(u64);

impl Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leb(mut n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    fn custom(name: &str, payload: &[u8]) -> Vec<u8> {
        let mut body = leb(name.len());
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(payload);
        let mut section = vec![0];
        section.extend(leb(body.len()));
        section.extend(body);
        section
    }

    fn module(sections: &[Vec<u8>]) -> Vec<u8> {
        let mut wasm = b"\0asm\x01\0\0\0".to_vec();
        // An empty type section, so non-custom sections are skipped too.
        wasm.extend([1, 1, 0]);
        for s in sections {
            wasm.extend(s);
        }
        wasm
    }

    #[test]
    fn finds_custom_sections() {
        let long = vec![b'x'; 300]; // needs a two-byte size
        let wasm = module(&[custom("producers", &long), custom("name", b"\x01abc")]);
        let sections = custom_sections(&wasm).unwrap();
        let names: Vec<_> = sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["producers", "name"]);
        assert_eq!(&wasm[sections[1].range.clone()], b"\x01abc");
    }

    #[test]
    fn rejects_truncated_modules() {
        let mut wasm = module(&[custom("name", b"abc")]);
        wasm.pop();
        assert!(custom_sections(&wasm).is_err());
        assert!(custom_sections(b"\0asm").is_err());
        assert!(custom_sections(b"not wasm at all").is_err());
    }

    /// A `target_features` payload as LLVM writes it.
    fn features(list: &[(u8, &str)]) -> Vec<u8> {
        let mut payload = leb(list.len());
        for (prefix, name) in list {
            payload.push(*prefix);
            payload.extend(leb(name.len()));
            payload.extend_from_slice(name.as_bytes());
        }
        payload
    }

    #[test]
    fn raw_module_checks() {
        let good = module(&[custom("name", b"webtune::start")]);
        check_raw_module(&good).unwrap();

        let wrapped = module(&[custom("name", b"train_step.command_export")]);
        let err = check_raw_module(&wrapped).unwrap_err().to_string();
        assert!(err.contains("__wasm_call_ctors"), "{err}");

        let stripped = module(&[custom("producers", b"")]);
        let err = check_raw_module(&stripped).unwrap_err().to_string();
        assert!(err.contains("cannot run"), "{err}");
    }

    #[test]
    fn finds_target_features() {
        let simd = features(&[(b'+', "simd128"), (b'+', "sign-ext")]);
        let wasm = module(&[custom("name", b""), custom("target_features", &simd)]);
        assert_eq!(
            wasm_opt_features(&wasm).unwrap(),
            ["--enable-simd", "--enable-sign-ext"]
        );
        assert!(wasm_opt_features(&module(&[custom("name", b"")])).is_err());
    }

    #[test]
    fn maps_target_features() {
        // What Rust 1.95's wasm32-unknown-unknown output for webtune lists.
        let rust = features(&[
            (b'+', "bulk-memory"),
            (b'+', "bulk-memory-opt"),
            (b'+', "call-indirect-overlong"),
            (b'+', "multivalue"),
            (b'+', "mutable-globals"),
            (b'+', "nontrapping-fptoint"),
            (b'+', "reference-types"),
            (b'+', "sign-ext"),
            (b'+', "simd128"),
            (b'-', "atomics"),
        ]);
        assert_eq!(
            wasm_opt_flags(&rust).unwrap(),
            [
                "--enable-bulk-memory",
                "--enable-bulk-memory-opt",
                "--enable-call-indirect-overlong",
                "--enable-multivalue",
                "--enable-mutable-globals",
                "--enable-nontrapping-float-to-int",
                "--enable-reference-types",
                "--enable-sign-ext",
                "--enable-simd",
            ]
        );
        let err = wasm_opt_flags(&features(&[(b'+', "teleport")])).unwrap_err();
        assert!(err.to_string().contains("teleport"), "{err}");
        assert!(wasm_opt_flags(&[1, b'+', 9, b'x']).is_err());
    }

    #[test]
    fn reads_locked_versions() {
        let lock = "[[package]]\nname = \"wasm-bindgen\"\nversion = \"0.2.130\"\n\
                    source = \"registry\"\n\n[[package]]\nname = \"wasm-bindgen-shared\"\n\
                    version = \"0.2.130\"\n";
        assert_eq!(locked_versions(lock, "wasm-bindgen"), ["0.2.130"]);
        assert!(locked_versions(lock, "burn").is_empty());
    }

    /// The constant must match the `=x.y.z` requirement that actually selects the crate.
    #[test]
    fn version_constant_matches_manifest() {
        let manifest = include_str!("../Cargo.toml");
        let line = manifest
            .lines()
            .find(|l| l.starts_with("wasm-bindgen-cli-support"))
            .expect("xtask depends on wasm-bindgen-cli-support");
        assert!(
            line.contains(&format!("\"={WASM_BINDGEN_VERSION}\"")),
            "xtask/Cargo.toml has `{line}` but WASM_BINDGEN_VERSION is {WASM_BINDGEN_VERSION}"
        );
    }

    #[test]
    fn stamp_depends_on_every_input() {
        let a = build_stamp(b"abc", Profile::Release, true);
        assert_eq!(a, build_stamp(b"abc", Profile::Release, true));
        assert_ne!(a, build_stamp(b"abd", Profile::Release, true));
        assert_ne!(a, build_stamp(b"abc", Profile::Dev, true));
        assert_ne!(a, build_stamp(b"abc", Profile::Release, false));
    }

    #[test]
    fn replaces_directories_whole() {
        let root = std::env::temp_dir().join(format!("xtask-replace-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let dir = root.join("pkg");
        let write = |d: &Path, name: &str, text: &str| {
            fs::create_dir_all(d).unwrap();
            fs::write(d.join(name), text).unwrap();
        };
        // Into a place that does not exist yet.
        let fresh = tmp_sibling(&dir, "building");
        write(&fresh, "webtune.js", "one");
        replace_dir(&fresh, &dir).unwrap();
        assert_eq!(fs::read_to_string(dir.join("webtune.js")).unwrap(), "one");
        // Over an older package: nothing of it lingers, and no temporary directory is left.
        write(&dir, "stale.js", "old");
        write(&fresh, "webtune.js", "two");
        replace_dir(&fresh, &dir).unwrap();
        assert_eq!(fs::read_to_string(dir.join("webtune.js")).unwrap(), "two");
        assert!(!dir.join("stale.js").exists());
        let left: Vec<_> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("pkg")]);
        fs::remove_dir_all(&root).unwrap();
    }
}
