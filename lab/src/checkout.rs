//! What the lab takes from the source checkout it was built from: the daemons (built on the
//! way) and `examples/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The workspace this binary was built from, if it is still there.
pub fn source_checkout() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = dir.canonicalize().ok()?;
    dir.join("Cargo.toml").is_file().then_some(dir)
}

/// Build the daemons (from a source checkout) and find them.
pub fn binaries(no_build: bool) -> Result<(PathBuf, PathBuf)> {
    let checkout = source_checkout();
    let mut built = false;
    if let (false, Some(ws)) = (no_build, &checkout) {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        println!(
            "building weft-agent and weft-controller (release) in {}",
            ws.display()
        );
        let mut build = Command::new(&cargo);
        // What `cargo run` sets for the program it runs: build scripts that watch these
        // (ring's does) would rebuild, and everything above them, whenever the daemons
        // are built from here rather than from a shell — two minutes on every `up`.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_PKG_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_MANIFEST_LINKS",
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "OUT_DIR",
                ]
                .contains(&key.as_ref())
            {
                build.env_remove(key.as_ref());
            }
        }
        let status = build
            .args([
                "build",
                "--release",
                "--bin",
                "weft-agent",
                "--bin",
                "weft-controller",
            ])
            .current_dir(ws)
            .status()
            .with_context(|| format!("running {} build", cargo.to_string_lossy()))?;
        if !status.success() {
            bail!("`cargo build --release` failed ({status})");
        }
        built = true;
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    let release_dir = checkout.map(|ws| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(|t| ws.join(t))
            .unwrap_or_else(|| ws.join("target"))
            .join("release")
    });
    // After a build the release binaries are the fresh ones; otherwise take the ones next to
    // this executable (`cargo test` puts everything in target/debug).
    let dirs: Vec<PathBuf> = if built {
        [release_dir, exe_dir].into_iter().flatten().collect()
    } else {
        [exe_dir, release_dir].into_iter().flatten().collect()
    };
    for dir in &dirs {
        let agent = dir.join("weft-agent");
        let controller = dir.join("weft-controller");
        if agent.is_file() && controller.is_file() {
            let agent = agent
                .canonicalize()
                .with_context(|| format!("resolving {}", agent.display()))?;
            let controller = controller
                .canonicalize()
                .with_context(|| format!("resolving {}", controller.display()))?;
            return Ok((agent, controller));
        }
    }
    let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    bail!(
        "weft-agent and weft-controller not found in {}: build them with \
         `cargo build --release --bin weft-agent --bin weft-controller`",
        looked.join(" or ")
    )
}

pub fn examples_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os("WEFT_LAB_EXAMPLES") {
        Some(d) => PathBuf::from(d),
        None => source_checkout()
            .map(|ws| ws.join("examples"))
            .context("no examples/ directory: set WEFT_LAB_EXAMPLES to one")?,
    };
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    Ok(dir)
}
