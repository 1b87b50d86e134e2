//! Sandboxes that no longer exist. A container removed without a CNI DEL reaching the agent
//! (`podman rm -f` while the agent is down; libcni before 1.2 never sends GC) leaves its
//! endpoint behind, holding an address, host ports and their DNAT rules.
//!
//! "Gone" must be certain: `statfs(2)` on the sandbox path says it does not exist (ENOENT),
//! or the path is no longer on nsfs (the empty mount point a bind mount leaves once
//! unmounted). Any other error (EACCES, ELOOP, EIO, ENOMEM…) says nothing and changes
//! nothing. Then:
//! - while a sandbox is gone its published ports get no DNAT rules (the node refuses a
//!   connection at once instead of forwarding it to nobody), but keep their claims;
//! - an endpoint the CNI plugin made is released after the grace period, exactly as a CNI
//!   GC would release it: interface, address, ports, journal record, ContainerEndpoint;
//! - a hand-written endpoint is never released: its address and port claims wait for the
//!   namespace to come back (see ARCHITECTURE.md, Endpoints).
//!
//! Found by a timed probe of every endpoint's sandbox path (a `statfs` each, no namespace
//! entered), run at once when an attach fails with `SandboxMissing`, and at each deadline
//! (the loop is in [`super::release`]; this file is the pure part and the probe).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use super::EndpointId;

/// How long a CNI endpoint's sandbox must stay gone before the endpoint is released
/// (`--gone-sandbox-grace`).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// How often every sandbox path is looked at when nothing else asks for it.
pub const PROBE_PERIOD: Duration = Duration::from_secs(2);

/// `NSFS_MAGIC` from `linux/magic.h`: the filesystem of namespace files.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// What a sandbox path says about its namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Presence {
    /// A namespace file.
    Present,
    /// Certainly gone, and why.
    Gone(&'static str),
    /// Cannot tell (an error that is not ENOENT): treated as present.
    Unknown(String),
}

/// Look at `path` without entering it.
pub fn presence(path: &Path) -> Presence {
    classify(filesystem_of(path))
}

/// The pure decision, from `statfs`'s answer (the filesystem's magic number or the error).
pub fn classify(fs: std::io::Result<i64>) -> Presence {
    match fs {
        Ok(NSFS_MAGIC) => Presence::Present,
        Ok(_) => Presence::Gone("is not a network namespace any more"),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Presence::Gone("does not exist"),
        Err(e) => Presence::Unknown(e.to_string()),
    }
}

fn filesystem_of(path: &Path) -> std::io::Result<i64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `statfs` is a plain C struct of integers, valid when all zero.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated string and `buf` a struct statfs to fill.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut buf) };
    if rc == 0 {
        #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
        Ok(buf.f_type as i64)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A sandbox first seen gone at `since` (the path is kept: an id reused by a new sandbox
/// does not inherit it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Gone {
    pub sandbox: String,
    pub since: Instant,
}

/// One probe's outcome: what changed and what is due.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Round {
    /// Some sandbox went or came back: the pass must re-plan publish rules and re-attach.
    pub changed: Vec<EndpointId>,
    /// CNI endpoints gone for the whole grace period: release them.
    pub due: Vec<EndpointId>,
    /// The earliest deadline still to come.
    pub next: Option<Instant>,
}

/// Pure: fold one probe of every endpoint (`id → (sandbox, made by CNI, presence)`) into
/// the gone map.
pub(super) fn fold_round(
    gone: &mut BTreeMap<EndpointId, Gone>,
    probed: &BTreeMap<EndpointId, (String, bool, Presence)>,
    grace: Duration,
    now: Instant,
) -> Round {
    let mut round = Round::default();
    // Endpoints that left meanwhile.
    gone.retain(|id, g| probed.get(id).is_some_and(|(s, _, _)| *s == g.sandbox));
    for (id, (sandbox, cni, presence)) in probed {
        let since = match presence {
            Presence::Gone(_) => {
                let g = gone.entry(id.clone()).or_insert_with(|| {
                    round.changed.push(id.clone());
                    Gone {
                        sandbox: sandbox.clone(),
                        since: now,
                    }
                });
                g.since
            }
            Presence::Present | Presence::Unknown(_) => {
                if gone.remove(id).is_some() {
                    round.changed.push(id.clone());
                }
                continue;
            }
        };
        if !cni {
            continue;
        }
        let deadline = since + grace;
        if deadline <= now {
            round.due.push(id.clone());
        } else {
            round.next = Some(round.next.map_or(deadline, |n: Instant| n.min(deadline)));
        }
    }
    round
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> EndpointId {
        EndpointId {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn err(code: i32) -> std::io::Result<i64> {
        Err(std::io::Error::from_raw_os_error(code))
    }

    #[test]
    fn only_enoent_or_another_filesystem_means_gone() {
        assert_eq!(classify(Ok(NSFS_MAGIC)), Presence::Present);
        assert!(matches!(classify(err(libc::ENOENT)), Presence::Gone(_)));
        // tmpfs: the mount point left behind by an unmounted bind mount.
        assert!(matches!(classify(Ok(0x0102_1994)), Presence::Gone(_)));
        for transient in [
            libc::EACCES,
            libc::ELOOP,
            libc::EIO,
            libc::ENOMEM,
            libc::EMFILE,
            libc::EINTR,
        ] {
            assert!(
                matches!(classify(err(transient)), Presence::Unknown(_)),
                "errno {transient} is not certain"
            );
        }
    }

    #[test]
    fn the_probe_reads_real_paths() {
        assert_eq!(presence(Path::new("/proc/self/ns/net")), Presence::Present);
        assert!(matches!(
            presence(Path::new("/proc/self/no-such-namespace")),
            Presence::Gone(_)
        ));
        assert!(matches!(presence(Path::new("/proc")), Presence::Gone(_)));
    }

    #[test]
    fn a_cni_endpoint_is_due_after_the_grace_and_a_hand_written_one_never() {
        let grace = Duration::from_secs(5);
        let t0 = Instant::now();
        let gone = || Presence::Gone("does not exist");
        let mut map = BTreeMap::new();
        let probed: BTreeMap<_, _> = [
            (id("cni"), ("/run/netns/a".to_string(), true, gone())),
            (id("manual"), ("/run/netns/b".to_string(), false, gone())),
            (
                id("alive"),
                ("/run/netns/c".to_string(), true, Presence::Present),
            ),
        ]
        .into();
        let r = fold_round(&mut map, &probed, grace, t0);
        assert_eq!(r.changed, vec![id("cni"), id("manual")]);
        assert!(r.due.is_empty());
        assert_eq!(r.next, Some(t0 + grace));
        // Seen gone again later: the first sighting counts.
        let r = fold_round(&mut map, &probed, grace, t0 + Duration::from_secs(3));
        assert!(r.changed.is_empty() && r.due.is_empty());
        let r = fold_round(&mut map, &probed, grace, t0 + grace);
        assert_eq!(r.due, vec![id("cni")]);
        assert_eq!(r.next, None);
    }

    #[test]
    fn an_unknown_answer_or_a_new_sandbox_starts_the_grace_again() {
        let grace = Duration::from_secs(5);
        let t0 = Instant::now();
        let mut map = BTreeMap::new();
        let probe = |sandbox: &str, p: Presence| -> BTreeMap<_, _> {
            [(id("cni"), (sandbox.to_string(), true, p))].into()
        };
        fold_round(&mut map, &probe("/a", Presence::Gone("x")), grace, t0);
        // A transient error in between: not gone, so the grace starts over.
        let r = fold_round(
            &mut map,
            &probe("/a", Presence::Unknown("ELOOP".into())),
            grace,
            t0 + Duration::from_secs(4),
        );
        assert_eq!(r.changed, vec![id("cni")]);
        let r = fold_round(
            &mut map,
            &probe("/a", Presence::Gone("x")),
            grace,
            t0 + Duration::from_secs(6),
        );
        assert!(r.due.is_empty(), "the grace restarted at 6 s");
        // The same endpoint now names another sandbox (a new ADD): its own grace.
        let r = fold_round(
            &mut map,
            &probe("/b", Presence::Gone("x")),
            grace,
            t0 + Duration::from_secs(12),
        );
        assert!(r.due.is_empty());
        assert_eq!(map[&id("cni")].sandbox, "/b");
    }
}
