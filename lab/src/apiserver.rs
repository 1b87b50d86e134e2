//! The CRD API server the lab starts when KUBECONFIG is not set.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::Lab;
use crate::checkout::source_checkout;

/// Start an API server with the tools in `<workspace>/../shared/tools/apiserver` (or
/// `WEFT_LAB_APISERVER_TOOLS`); returns its kubeconfig.
pub fn start_apiserver(lab: &Lab, tools: &Path) -> Result<PathBuf> {
    let dir = lab.state_dir.join("apiserver");
    let setup = tools.join("setup.sh");
    let status = Command::new(&setup)
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("running {}", setup.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", setup.display());
    }
    let up = tools.join("up.sh");
    let out = Command::new(&up)
        .arg(&dir)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", up.display()))?;
    if !out.status.success() {
        bail!("{} {} failed ({})", up.display(), dir.display(), out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let kubeconfig = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| PathBuf::from(l.trim()))
        .with_context(|| format!("{} printed no kubeconfig path", up.display()))?;
    if !kubeconfig.is_file() {
        bail!(
            "{} printed {}, which is not a file",
            up.display(),
            kubeconfig.display()
        );
    }
    Ok(kubeconfig)
}

pub fn apiserver_tools() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("WEFT_LAB_APISERVER_TOOLS") {
        return Ok(PathBuf::from(dir));
    }
    let ws = source_checkout().context(
        "KUBECONFIG is not set and this is not a source checkout: set KUBECONFIG to a cluster \
         (kind, k3d, …) or WEFT_LAB_APISERVER_TOOLS to the apiserver tools directory",
    )?;
    let tools = ws.join("../shared/tools/apiserver");
    if !tools.join("up.sh").is_file() {
        bail!(
            "KUBECONFIG is not set and {} has no up.sh: set KUBECONFIG to a cluster (kind, k3d, …) \
             or WEFT_LAB_APISERVER_TOOLS to the apiserver tools directory",
            tools.display()
        );
    }
    tools
        .canonicalize()
        .with_context(|| format!("resolving {}", tools.display()))
}
