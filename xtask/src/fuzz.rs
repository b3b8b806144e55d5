//! `cargo xtask fuzz`: the cargo-fuzz targets of `fuzz/` (the wire contract, `log-schema`, and the
//! input formats, `log-formats`).
//!
//! cargo-fuzz needs nightly-only compiler flags (`-Zsanitizer=address`, coverage
//! instrumentation). The project's toolchain is stable, so every `cargo fuzz` runs with
//! `RUSTC_BOOTSTRAP=1`, which lets a stable compiler accept them.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, bail};

use crate::{cargo_bin, project_root};

/// Largest input libFuzzer generates: records are small; 4 KiB leaves room for nesting and
/// long strings without slowing the search down.
const MAX_LEN: &str = "-max_len=4096";

/// The JSON and contract vocabulary in `fuzz/json.dict`.
const DICT: &str = "-dict=json.dict";

/// Runs every fuzz target (or only `target`) for `seconds` each; fails if any run fails (a
/// crash, a failed assertion, a timeout or a build error). Crashes are kept in
/// `fuzz/artifacts/<target>/`, new coverage in `fuzz/corpus/<target>/`.
pub fn fuzz(seconds: u64, target: Option<String>) -> anyhow::Result<ExitCode> {
    let dir = project_root().join("fuzz");
    let known = targets(&dir)?;
    let run: Vec<String> = match target {
        Some(t) if known.contains(&t) => vec![t],
        Some(t) => bail!(
            "no fuzz target {t:?}; the targets are: {}",
            known.join(", ")
        ),
        None => known,
    };
    ensure_cargo_fuzz()?;

    let mut failed = Vec::new();
    for t in &run {
        println!("xtask fuzz: {t} for {seconds}s");
        let max_total_time = format!("-max_total_time={seconds}");
        let status = Command::new(cargo_bin())
            .args(["fuzz", "run", t, "--", &max_total_time, MAX_LEN, DICT])
            .current_dir(&dir)
            .env("RUSTC_BOOTSTRAP", "1")
            .status()
            .with_context(|| format!("run cargo fuzz run {t}"))?;
        if status.success() {
            println!("xtask fuzz: {t}: no failure in {seconds}s");
        } else {
            eprintln!(
                "xtask fuzz: {t} failed ({status}); the input is in {}; reproduce with \
                 `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run {t} <file>`, minimise with \
                 `cargo fuzz tmin {t} <file>`",
                dir.join("artifacts").join(t).display()
            );
            failed.push(t.as_str());
        }
    }
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("xtask fuzz: failed: {}", failed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}

/// The targets: one per `fuzz/fuzz_targets/*.rs`, sorted.
fn targets(dir: &Path) -> anyhow::Result<Vec<String>> {
    let src: PathBuf = dir.join("fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(&src)
        .with_context(|| format!("read {}", src.display()))?
        .filter_map(|e| {
            let path = e.ok()?.path();
            (path.extension()? == "rs").then(|| path.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    names.sort();
    if names.is_empty() {
        bail!("no fuzz targets in {}", src.display());
    }
    Ok(names)
}

/// Installs cargo-fuzz from crates.io unless `cargo fuzz` already works.
fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let installed = Command::new(cargo_bin())
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if installed {
        return Ok(());
    }
    println!("xtask fuzz: installing cargo-fuzz (cargo install cargo-fuzz --locked)");
    let status = Command::new(cargo_bin())
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .context("run cargo install cargo-fuzz")?;
    if !status.success() {
        bail!("cargo install cargo-fuzz --locked failed ({status})");
    }
    Ok(())
}
