//! Who may attach what. A `ContainerEndpoint` names its sandbox by path, and whoever may
//! create endpoints in one Kubernetes namespace must not reach beyond it:
//! - the node's own network namespace (the one the agent programs, `--netns`, and the
//!   agent's own) is never a sandbox, through either door — compared by the nsfs identity
//!   (`st_dev`, `st_ino`), so no other path to it gets through;
//! - a hand-written endpoint's sandbox lies in the directory of named namespaces
//!   (`--sandbox-dir`, `/var/run/netns`), after symlinks and `..` are resolved; `/proc`
//!   paths (any process's namespace, the node's included) are refused outright;
//! - a sandbox the CNI plugin attached for one namespace is not attached by a
//!   hand-written endpoint of another.
//!
//! The CNI door is the runtime's (root on the node, choosing the sandbox itself); only the
//! node's own namespace is refused there.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Component, Path, PathBuf};

use super::{Attachment, EndpointId, EndpointRequest};
use crate::drivers::{Problem, Reason};

/// Where named network namespaces live (`ip netns add`, CNI runtimes).
pub const DEFAULT_SANDBOX_DIR: &str = "/var/run/netns";

/// A network namespace's identity: the nsfs inode its path resolves to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NsId {
    dev: u64,
    ino: u64,
}

impl NsId {
    pub fn of(path: &Path) -> io::Result<NsId> {
        let meta = std::fs::metadata(path)?;
        Ok(NsId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// The node's rules for sandboxes.
#[derive(Clone, Debug)]
pub struct SandboxPolicy {
    /// Hand-written endpoints' sandboxes must lie here (resolved).
    sandbox_dir: PathBuf,
    /// The node's own namespaces: never a sandbox.
    node_namespaces: Vec<NsId>,
}

impl Default for SandboxPolicy {
    fn default() -> Self {
        SandboxPolicy {
            sandbox_dir: PathBuf::from(DEFAULT_SANDBOX_DIR),
            node_namespaces: Vec::new(),
        }
    }
}

impl SandboxPolicy {
    /// The policy of this node: `netns` is the namespace the agent programs (if not its own).
    pub fn for_node(netns: Option<&Path>, sandbox_dir: &Path) -> io::Result<Self> {
        let mut node_namespaces = vec![NsId::of(Path::new("/proc/self/ns/net"))?];
        if let Some(netns) = netns {
            node_namespaces.push(NsId::of(netns)?);
        }
        Ok(SandboxPolicy {
            sandbox_dir: resolve(sandbox_dir),
            node_namespaces,
        })
    }

    /// Both doors: the node's own namespace is never a sandbox.
    pub fn refuse_node_namespace(&self, sandbox: &str) -> Result<(), Problem> {
        match NsId::of(Path::new(sandbox)) {
            Ok(id) if self.node_namespaces.contains(&id) => Err(not_allowed(format!(
                "sandbox {sandbox} is the node's own network namespace"
            ))),
            _ => Ok(()),
        }
    }

    /// A host network's endpoint (which changes nothing, see
    /// [`crate::drivers::EndpointShape::SharesNode`]): its sandbox must be the node's own
    /// namespace — a container in another namespace does not share the node's.
    pub fn authorize_node_sharing(&self, req: &EndpointRequest) -> Result<(), Problem> {
        match NsId::of(Path::new(&req.sandbox)) {
            Ok(id) if self.node_namespaces.contains(&id) => Ok(()),
            _ => Err(not_allowed(format!(
                "network {} is a host network: its endpoints share the node's network namespace, and sandbox {} is not it;                  run the container in the node's namespace (docker/podman --network host, hostNetwork: true) and name that,                  or use a none network for a namespace with loopback only",
                req.network, req.sandbox
            ))),
        }
    }

    /// The ContainerEndpoint door: a hand-written request, against what is attached.
    pub fn authorize(
        &self,
        req: &EndpointRequest,
        attachments: &BTreeMap<EndpointId, Attachment>,
    ) -> Result<(), Problem> {
        let sandbox = req.sandbox.as_str();
        let path = Path::new(sandbox);
        if !path.is_absolute() {
            return Err(not_allowed(format!(
                "sandbox {sandbox:?} is not an absolute path"
            )));
        }
        let in_proc = || {
            not_allowed(format!(
                "sandbox {sandbox} is a /proc path; hand-written endpoints name a namespace in {}",
                self.sandbox_dir.display()
            ))
        };
        if lexical(path).starts_with("/proc") {
            return Err(in_proc());
        }
        let resolved = match std::fs::canonicalize(path) {
            Ok(resolved) => resolved,
            // Not there (yet): judged by where it would be; attaching says SandboxMissing.
            Err(_) if std::fs::symlink_metadata(path).is_err() => resolve(path),
            // There, but not a file path (a link into /proc/PID/ns, say).
            Err(e) => {
                return Err(not_allowed(format!(
                    "sandbox {sandbox} does not resolve to a file of {} ({e})",
                    self.sandbox_dir.display()
                )));
            }
        };
        if resolved.starts_with("/proc") {
            return Err(in_proc());
        }
        if !resolved.starts_with(&self.sandbox_dir) {
            return Err(not_allowed(format!(
                "sandbox {sandbox} (resolved: {}) is outside {}, the node's directory of named namespaces",
                resolved.display(),
                self.sandbox_dir.display()
            )));
        }
        self.refuse_node_namespace(sandbox)?;
        let theirs = attachments.values().find(|a| {
            a.cni.is_some() && a.id.namespace != req.id.namespace && same_sandbox(&a.sandbox, path)
        });
        if let Some(theirs) = theirs {
            return Err(not_allowed(format!(
                "sandbox {sandbox} belongs to a pod of namespace {}; an endpoint of namespace {} cannot attach it",
                theirs.id.namespace, req.id.namespace
            )));
        }
        Ok(())
    }
}

fn not_allowed(message: String) -> Problem {
    Problem::new(Reason::SandboxNotAllowed, message)
}

/// The same namespace: the same nsfs inode, or (either missing) the same resolved path.
fn same_sandbox(attached: &str, asked: &Path) -> bool {
    let attached = Path::new(attached);
    match (NsId::of(attached), NsId::of(asked)) {
        (Ok(a), Ok(b)) => a == b,
        _ => resolve(attached) == resolve(asked),
    }
}

/// Symlinks and `..` resolved; for a path that does not exist (yet), its deepest existing
/// ancestor resolved and the rest appended (`/var/run/netns/new` → `/run/netns/new`).
fn resolve(path: &Path) -> PathBuf {
    let path = lexical(path);
    let mut rest = Vec::new();
    let mut at = path.as_path();
    loop {
        if let Ok(mut real) = std::fs::canonicalize(at) {
            real.extend(rest.iter().rev());
            return real;
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                at = parent;
            }
            _ => return path,
        }
    }
}

/// `.` and `..` taken out without looking at the file system.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_takes_dots_out() {
        assert_eq!(
            lexical(Path::new("/var/run/netns/../../../proc/1/ns/net")),
            PathBuf::from("/proc/1/ns/net")
        );
        assert_eq!(
            lexical(Path::new("/var/run/netns/./a/../b")),
            PathBuf::from("/var/run/netns/b")
        );
        assert_eq!(lexical(Path::new("/../..")), PathBuf::from("/"));
    }

    #[test]
    fn a_missing_path_resolves_through_its_existing_ancestors() {
        let dir = std::env::temp_dir().join(format!("weft-resolve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let link = dir.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/proc", &link).expect("symlink");
        let real_dir = std::fs::canonicalize(&dir).expect("canonical");
        assert_eq!(resolve(&dir.join("not-yet")), real_dir.join("not-yet"));
        assert_eq!(
            resolve(&link.join("no-such-pid/ns/net")),
            PathBuf::from("/proc/no-such-pid/ns/net")
        );
        let _ = std::fs::remove_file(&link);
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn the_agents_own_namespace_is_refused_by_any_path() {
        let policy = SandboxPolicy::for_node(None, Path::new(DEFAULT_SANDBOX_DIR))
            .expect("policy of this process");
        for path in ["/proc/self/ns/net", "/proc/thread-self/ns/net"] {
            let refused = policy.refuse_node_namespace(path).expect_err(path);
            assert_eq!(refused.reason, Reason::SandboxNotAllowed);
        }
        let pid = format!("/proc/{}/ns/net", std::process::id());
        assert!(policy.refuse_node_namespace(&pid).is_err());
        // A path that names no namespace is not the node's (SandboxMissing comes later).
        assert!(policy.refuse_node_namespace("/nonexistent/ns").is_ok());
    }
}
