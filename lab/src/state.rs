//! `<state-dir>/state.json`: everything a lab created, written after every step of `up`, so
//! `down` can remove it even after a failed `up`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::Lab;

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct State {
    pub prefix: String,
    pub nodes: usize,
    /// The KUBECONFIG value the daemons use (absolute paths).
    pub kubeconfig: Option<String>,
    /// Set when the lab started its own API server (so `down` stops only that one).
    pub apiserver: Option<StartedApiServer>,
    /// Network namespaces created, in order.
    pub namespaces: Vec<String>,
    pub processes: Vec<Process>,
    /// Objects applied to the API server, in order.
    pub objects: Vec<ObjectRef>,
    /// `up` finished.
    pub complete: bool,
}

/// An API server started with `<tools>/up.sh <dir>`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct StartedApiServer {
    pub tools: PathBuf,
    pub dir: PathBuf,
}

/// A detached daemon.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Process {
    pub name: String,
    /// The NetworkNode an agent serves.
    pub node: Option<String>,
    pub pid: u32,
    /// Canonical path of the executable, to recognize the process (never kill a reused pid).
    pub binary: PathBuf,
    pub metrics_port: u16,
    pub log: PathBuf,
}

/// One object the lab applied.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl Lab {
    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("state.json")
    }

    /// The state of this lab, if there is one.
    pub fn load(&self) -> Result<Option<State>> {
        let path = self.state_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let state = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a weft-lab state file", path.display()))?;
        Ok(Some(state))
    }

    pub(crate) fn save(&self, state: &State) -> Result<()> {
        let path = self.state_file();
        let tmp = self.state_dir.join("state.json.tmp");
        let text = serde_json::to_string_pretty(state).context("serializing the lab state")?;
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }
}
