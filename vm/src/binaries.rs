//! The test executables the plan names, from cargo itself: `cargo test --workspace --no-run`
//! is what `cargo nextest run --workspace` builds, so under nextest it only checks that they
//! are fresh (a second or two), and elsewhere it builds what the VM is to run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Every integration test executable of the workspace by nextest's binary id
/// (`weft-agent::kernel`).
pub fn test_executables(workspace: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    // What cargo sets for the test it runs: build scripts that watch these (ring's does)
    // would rebuild, and everything above them.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_EXE_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_MANIFEST_LINKS",
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "OUT_DIR",
            ]
            .contains(&key.as_ref())
        {
            cmd.env_remove(key.as_ref());
        }
    }
    let out = cmd
        .args(["test", "--workspace", "--no-run", "--message-format=json"])
        .current_dir(workspace)
        .output()
        .with_context(|| format!("running {} test --no-run", cargo.to_string_lossy()))?;
    if !out.status.success() {
        bail!(
            "`cargo test --workspace --no-run` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut found = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let is_test = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if msg["reason"] != "compiler-artifact" || !is_test {
            continue;
        }
        let (Some(exe), Some(target), Some(package)) = (
            msg["executable"].as_str(),
            msg["target"]["name"].as_str(),
            msg["manifest_path"].as_str().and_then(package_name),
        ) else {
            continue;
        };
        found.insert(format!("{package}::{target}"), PathBuf::from(exe));
    }
    Ok(found)
}

/// The package name in a manifest (`name = "weft-agent"` under `[package]`).
fn package_name(manifest: &str) -> Option<String> {
    let text = std::fs::read_to_string(manifest).ok()?;
    let package = text.split("[package]").nth(1)?;
    package.lines().find_map(|l| {
        let value = l.trim().strip_prefix("name")?.trim().strip_prefix('=')?;
        Some(value.trim().trim_matches('"').to_string())
    })
}
