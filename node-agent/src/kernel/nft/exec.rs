//! Running nft in the namespace: listing Weft's tables, and writing a pass's changes as one
//! transaction.
//!
//! How a script runs is one choice, [`Backend`], made once per handle at the first
//! transaction that could use the library: libnftables inside the agent's process
//! (`libnft`) when it is installed, else the `nft` program (`program`). Per script only two
//! facts matter: a big script (a cold start's whole table) always goes to a child `nft`,
//! which gives back the memory of parsing it when it exits; and while no event reader runs,
//! the new rules' handles can only come from `nft --echo --handle`, so the child is asked to
//! echo (see [`Executor::transaction`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::kernel::changes::{ApplyReport, Change};
use crate::kernel::error::KernelError;
use crate::kernel::nft::libnft::{self, Session};
use crate::kernel::nft::listing::{echoed_handles, parse_json};
use crate::kernel::nft::own::OwnNft;
use crate::kernel::nft::plan::{AddedRules, tables_after};
use crate::kernel::nft::program;
use crate::kernel::nft::render::{render, render_update};
use crate::model::{NFT_TABLE, NftFamily, NftTable};

/// What the tables hold after an [`Executor::apply`], per family (`None` = gone), when known
/// exactly.
pub(crate) type Written = Option<BTreeMap<NftFamily, Option<NftTable>>>;

/// How this handle's scripts run.
enum Backend {
    /// libnftables in the agent's process (scripts up to `MAX_IN_PROCESS_SCRIPT`).
    Library(Arc<Session>),
    /// Only the `nft` program: the library is missing or its socket cannot be identified.
    Program,
}

/// Where one script goes: the handle's [`Backend`], its size, and whether an event reader
/// hands over the new rules' handles.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    InProcess,
    /// A child `nft`; the event reader reports what it added.
    Child,
    /// A child `nft --echo --handle`: nobody else would tell its new rules' handles.
    ChildEcho,
}

fn route(listening: bool, library: bool, script_len: usize) -> Route {
    match (listening, library) {
        (false, _) => Route::ChildEcho,
        (true, true) if script_len <= libnft::MAX_IN_PROCESS_SCRIPT => Route::InProcess,
        (true, _) => Route::Child,
    }
}

/// Runs nft in one namespace on behalf of one [`Kernel`](crate::kernel::Kernel) handle.
pub(crate) struct Executor {
    ns: Option<PathBuf>,
    own: OwnNft,
    backend: tokio::sync::OnceCell<Backend>,
    /// How many transactions ran in-process.
    in_process: AtomicU64,
}

impl Executor {
    pub(crate) fn new(ns: Option<&Path>) -> Self {
        Executor {
            ns: ns.map(Path::to_path_buf),
            own: OwnNft::default(),
            backend: tokio::sync::OnceCell::new(),
            in_process: AtomicU64::new(0),
        }
    }

    /// The record of this handle's own writes, shared with its event reader.
    pub(crate) fn own(&self) -> &OwnNft {
        &self.own
    }

    /// How many transactions ran through libnftables rather than a child `nft`.
    pub(crate) fn in_process_transactions(&self) -> u64 {
        self.in_process.load(Ordering::Relaxed)
    }

    fn ns(&self) -> Option<&Path> {
        self.ns.as_deref()
    }

    /// The backend, chosen on first use: the library when it opens, else the program.
    async fn backend(&self) -> &Backend {
        self.backend
            .get_or_init(|| async {
                let session = Session::open(self.ns()).await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot open libnftables; running nft instead");
                    None
                });
                match session {
                    Some(s) => {
                        self.own.adopt_session(s.port());
                        Backend::Library(Arc::new(s))
                    }
                    None => Backend::Program,
                }
            })
            .await
    }

    /// Weft's tables as the kernel holds them now (`nft -j list`, both families at once).
    pub(crate) async fn list(&self) -> Result<BTreeMap<NftFamily, NftTable>, KernelError> {
        let (inet, bridge) = futures::join!(
            self.list_family(NftFamily::Inet),
            self.list_family(NftFamily::Bridge)
        );
        let mut out = BTreeMap::new();
        if let Some(t) = inet? {
            out.insert(NftFamily::Inet, t);
        }
        if let Some(t) = bridge? {
            out.insert(NftFamily::Bridge, t);
        }
        Ok(out)
    }

    /// One family's `weft` table; `None` when it does not exist.
    async fn list_family(&self, family: NftFamily) -> Result<Option<NftTable>, KernelError> {
        let args = ["-j", "list", "table", family.as_str(), NFT_TABLE];
        let out = program::run(self.ns(), &args, None, None).await?;
        if !out.ok {
            if out.stderr.contains("No such file or directory") {
                return Ok(None);
            }
            return Err(KernelError::Nft(format!(
                "list table {} {NFT_TABLE}: {}",
                family.as_str(),
                out.stderr
            )));
        }
        parse_json(&out.stdout).map(Some)
    }

    /// Run `script` as one transaction. `Ok(Some(added))`: the handles of the rules it
    /// added; `Ok(None)`: committed, but what it added is not known (list again).
    async fn transaction(&self, script: &str) -> Result<Option<AddedRules>, KernelError> {
        let listening = self.own.listening();
        // The library is opened only once a script could run in it.
        let library = if route(listening, true, script.len()) == Route::InProcess {
            match self.backend().await {
                Backend::Library(session) => Some(session.clone()),
                Backend::Program => None,
            }
        } else {
            None
        };
        let overruns = self.own.overruns();
        match (route(listening, library.is_some(), script.len()), library) {
            (Route::InProcess, Some(session)) => {
                let port = session.port();
                self.own.begin(port);
                let text = script.to_string();
                tokio::task::spawn_blocking(move || session.run(&text))
                    .await
                    .map_err(|e| KernelError::Nft(format!("libnftables: {e}")))??;
                self.in_process.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(script = script.len(), "nft transaction in-process");
                Ok(self.own.added_by(port, overruns).await)
            }
            (Route::ChildEcho, _) => {
                let args = ["-e", "-a", "-f", "-"];
                let out = program::run(self.ns(), &args, Some(script), Some(&self.own)).await?;
                tracing::debug!(
                    script = script.len(),
                    echo = out.stdout.len(),
                    "nft run (echo)"
                );
                if !out.ok {
                    return Err(KernelError::Nft(out.stderr));
                }
                Ok(Some(echoed_handles(&out.stdout)))
            }
            // (`InProcess` without a session cannot happen: `route` was told there is none.)
            (Route::Child, _) | (Route::InProcess, None) => {
                let args = ["-f", "-"];
                let out = program::run(self.ns(), &args, Some(script), Some(&self.own)).await?;
                tracing::debug!(script = script.len(), "nft run");
                if !out.ok {
                    return Err(KernelError::Nft(out.stderr));
                }
                Ok(match out.pid {
                    Some(pid) => self.own.added_by(pid, overruns).await,
                    None => None,
                })
            }
        }
    }

    /// Apply every nft change of a pass in one atomic transaction: the difference from
    /// `observed` when it is known, whole tables otherwise. If that fails (a stale observation,
    /// a bad rule), each change is retried alone as a whole-table replacement, so one bad table
    /// cannot block the others.
    pub(crate) async fn apply(
        &self,
        observed: Option<&BTreeMap<NftFamily, NftTable>>,
        changes: &[&Change],
        report: &mut ApplyReport,
    ) -> Written {
        if changes.is_empty() {
            return Some(BTreeMap::new());
        }
        let script = match observed {
            Some(o) => render_update(changes, o),
            None => render(changes),
        };
        let first = match script {
            // Another writer (a CNI ADD) already made the tables what this pass wanted.
            Ok(script) if script.is_empty() => {
                return tables_after(changes, observed, &AddedRules::new());
            }
            Ok(script) => {
                report.writes += 1;
                self.transaction(&script).await
            }
            Err(e) => {
                report.writes += 1;
                Err(e)
            }
        };
        let error = match first {
            Ok(Some(added)) => return tables_after(changes, observed, &added),
            Ok(None) => return None,
            Err(e) => e,
        };
        if changes.len() == 1 && observed.is_none() {
            report.failed.push(((*changes[0]).clone(), error));
            return None;
        }
        let mut written = BTreeMap::new();
        let mut known = true;
        for change in changes {
            report.writes += 1;
            let alone = match render(&[*change]) {
                Ok(script) => self.transaction(&script).await,
                Err(e) => Err(e),
            };
            match alone.map(|added| tables_after(&[*change], None, &added?)) {
                Ok(Some(t)) => written.extend(t),
                Ok(None) => known = false,
                Err(e) => {
                    known = false;
                    report.failed.push(((*change).clone(), e));
                }
            }
        }
        known.then_some(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small scripts run in-process when the library is there and an event reader reports
    /// the new handles; big ones, or any without the library, go to a child `nft`, which
    /// echoes its handles when no reader runs.
    #[test]
    fn each_script_goes_where_its_handles_can_be_learned() {
        let small = 100;
        let big = libnft::MAX_IN_PROCESS_SCRIPT + 1;
        assert_eq!(route(true, true, small), Route::InProcess);
        assert_eq!(
            route(true, true, libnft::MAX_IN_PROCESS_SCRIPT),
            Route::InProcess
        );
        assert_eq!(route(true, true, big), Route::Child);
        assert_eq!(route(true, false, small), Route::Child);
        assert_eq!(route(false, true, small), Route::ChildEcho);
        assert_eq!(route(false, false, big), Route::ChildEcho);
    }
}
