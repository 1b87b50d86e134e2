//! Where a lab lives (its name prefix and state directory) and what its parts are called.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::DEFAULT_PREFIX;

/// Where a lab lives: its name prefix and its state directory.
#[derive(Clone, Debug)]
pub struct Lab {
    pub prefix: String,
    pub state_dir: PathBuf,
    /// Whether `--state-dir` was given (only to repeat it in printed commands).
    explicit_state_dir: bool,
}

impl Lab {
    pub fn new(prefix: &str, state_dir: Option<PathBuf>) -> Result<Self> {
        let valid = !prefix.is_empty()
            && prefix.len() <= 40
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !prefix.starts_with('-');
        if !valid {
            bail!("--prefix {prefix:?}: use 1 to 40 lowercase letters, digits and '-' (not first)");
        }
        let explicit_state_dir = state_dir.is_some();
        let state_dir = match state_dir {
            Some(dir) => absolute(&dir)?,
            None => PathBuf::from("/var/lib").join(prefix),
        };
        Ok(Self {
            prefix: prefix.to_string(),
            state_dir,
            explicit_state_dir,
        })
    }

    pub fn log_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    pub fn underlay_ns(&self) -> String {
        format!("{}-ul", self.prefix)
    }

    pub fn node_ns(&self, i: usize) -> String {
        format!("{}-n{i}", self.prefix)
    }

    pub fn container_ns(&self, i: usize) -> String {
        format!("{}-c{i}", self.prefix)
    }

    /// Whether `name` is one of the namespaces a lab with this prefix makes.
    pub fn owns_namespace(&self, name: &str) -> bool {
        let Some(rest) = name
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('-'))
        else {
            return false;
        };
        if rest == "ul" {
            return true;
        }
        let mut chars = rest.chars();
        matches!(chars.next(), Some('n' | 'c'))
            && !chars.as_str().is_empty()
            && chars.all(|c| c.is_ascii_digit())
    }

    /// A `weft-lab` command line that reaches this lab (repeats non-default flags).
    pub fn command(&self, sub: &str) -> String {
        let mut cmd = format!("{} {sub}", self_command());
        if self.prefix != DEFAULT_PREFIX {
            cmd.push_str(&format!(" --prefix {}", self.prefix));
        }
        if self.explicit_state_dir {
            cmd.push_str(&format!(" --state-dir {}", self.state_dir.display()));
        }
        cmd
    }
}

/// `weft-lab` if that is what PATH finds, else the full path of this executable.
fn self_command() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "weft-lab".into();
    };
    let on_path = find_in_path("weft-lab")
        .and_then(|p| p.canonicalize().ok())
        .zip(exe.canonicalize().ok())
        .is_some_and(|(a, b)| a == b);
    if on_path {
        "weft-lab".into()
    } else {
        exe.display().to_string()
    }
}

pub fn absolute(path: &Path) -> Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .context("current directory")?
            .join(path))
    }
}

pub fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// The NetworkNode name of node `i`.
pub fn node_name(i: usize) -> String {
    format!("lab-node-{i}")
}
