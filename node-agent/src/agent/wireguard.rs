//! This node's WireGuard identity for encrypted overlays: its private keys, made here and
//! kept in `<state dir>` (0600; they never leave the node), the links' keys and peers,
//! converged after each apply while the plan has a link, and key rotation. The public keys
//! the kernel derives are published in the node's `NetworkNode` spec.
//!
//! **Rotation** (design in ARCHITECTURE.md, "Key rotation"), asked for by setting the
//! annotation [`ROTATE_ANNOTATION`] on the node's `NetworkNode` to a new value: the next key
//! is made in the other key slot, whose link, port and tunnel address are its own, and
//! published as `next`; peers configure it beside the current one and acknowledge it. When
//! every peer has, the tunnel route moves to the new link (the node now sends with the new
//! key, and still receives with the old) and the new key is published as the current one,
//! the old one as `retiring`; peers move their VXLAN entries to the new address and drop the
//! old key. When no peer acknowledges the old key any more, its key file and link go.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use kube::ResourceExt as _;
use serde::{Deserialize, Serialize};
use weft_api::{NetworkNode, WireguardIdentity, WireguardKey};

use crate::drivers::wireguard::{
    PeerWireguard, Slots, decode_key, encode_key, link, other, port, tunnel_address,
};
use crate::kernel::{Kernel, WireguardConfig, WireguardPeerConfig};

/// The annotation on a node's `NetworkNode` that asks for a key rotation: each new value
/// (e.g. a timestamp) asks for one.
pub(super) const ROTATE_ANNOTATION: &str = "weft.dev/rotate-wireguard-key";

/// Where a rotation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) enum Phase {
    /// One key, in the active slot.
    Steady,
    /// The other slot holds the next key; peers are configuring it.
    Introducing,
    /// The active slot holds the new key and sends; the other slot's old key still
    /// receives until no peer sends to it.
    Retiring,
}

/// The rotation's state, kept in `<state dir>/wireguard.state` across restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Rotation {
    /// The slot whose key sends (0 or 1).
    pub active: usize,
    pub phase: Phase,
    /// The last value of [`ROTATE_ANNOTATION`] acted on; `None` before the first pass, which
    /// adopts the current one (a new node does not rotate the key it has just made).
    pub handled: Option<String>,
}

impl Default for Rotation {
    fn default() -> Self {
        Self {
            active: 0,
            phase: Phase::Steady,
            handled: None,
        }
    }
}

impl Rotation {
    pub(super) fn slots(&self) -> Slots {
        Slots {
            active: self.active & 1,
            rotating: self.phase != Phase::Steady,
        }
    }
}

/// The rotation's next state, if it moves (pure). `request`: the annotation's value;
/// `other_key`: the public key of the slot that is not active (the next key while
/// introducing, the old one while retiring); `peers`: every other node's identity.
pub(super) fn step(
    state: &Rotation,
    request: Option<&str>,
    other_key: Option<[u8; 32]>,
    peers: &[PeerWireguard],
) -> Option<Rotation> {
    match state.phase {
        Phase::Steady => {
            let request = request.unwrap_or_default();
            match &state.handled {
                None => Some(Rotation {
                    handled: Some(request.to_string()),
                    ..state.clone()
                }),
                Some(h) if h != request => Some(Rotation {
                    phase: Phase::Introducing,
                    handled: Some(request.to_string()),
                    ..state.clone()
                }),
                Some(_) => None,
            }
        }
        Phase::Introducing => {
            let next = other_key?;
            peers
                .iter()
                .all(|p| p.acknowledged.contains(&next))
                .then(|| Rotation {
                    active: other(state.active),
                    phase: Phase::Retiring,
                    handled: state.handled.clone(),
                })
        }
        Phase::Retiring => {
            let old = other_key?;
            peers
                .iter()
                .all(|p| !p.acknowledged.contains(&old))
                .then(|| Rotation {
                    phase: Phase::Steady,
                    ..state.clone()
                })
        }
    }
}

/// What this node acknowledges: every key of every rotating peer it has configured
/// (`configured`: its links' peers).
pub(super) fn acknowledged(
    identities: &[(String, std::net::IpAddr, PeerWireguard)],
    configured: &[WireguardPeerConfig],
) -> Vec<String> {
    let mut out: Vec<String> = identities
        .iter()
        .filter(|(_, _, p)| p.rotating())
        .flat_map(|(_, _, p)| p.keys())
        .filter(|k| configured.iter().any(|c| c.public_key == k.public_key))
        .map(|k| encode_key(&k.public_key))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The node's keys, what the kernel made of them, the rotation, and what the API has.
#[derive(Debug, Default)]
pub(super) struct Identity {
    rotation: Rotation,
    /// Whether `rotation` is in its file yet.
    stored: bool,
    /// Why the rotation's file could not be read. Until it can (it is read again before
    /// every pass), WireGuard is left as the kernel has it, nothing is written over the
    /// file, and every encrypted network reports this (fail closed) — a bad file is not
    /// worth a crash loop that takes the node's other networks down with it.
    unreadable: Option<String>,
    private_keys: [Option<[u8; 32]>; 2],
    public_keys: [Option<[u8; 32]>; 2],
    /// What this node's NetworkNode spec says (what `register` last wrote).
    pub(super) published: Option<WireguardIdentity>,
}

/// The file of the rotation's state.
fn state_path(state_dir: &Path) -> PathBuf {
    state_dir.join("wireguard.state")
}

/// The file of key slot `slot`'s private key (slot 0's is the one Weft always had).
pub(super) fn key_path(state_dir: &Path, slot: usize) -> PathBuf {
    match slot & 1 {
        0 => state_dir.join("wireguard.key"),
        _ => state_dir.join("wireguard.1.key"),
    }
}

/// Write `text` to `path` through a temporary file (0600), so a crash never leaves half of it.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// The node's private key: read from `path`, or made from the kernel's random source and
/// written there (0600) on first use. Clamped as Curve25519 wants (the kernel stores it so).
pub(super) fn load_or_create_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    match std::fs::read_to_string(path) {
        Ok(text) => decode_key(text.trim()).with_context(|| {
            format!(
                "{} does not hold a WireGuard key (44 characters of base64)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut key))
                .context("reading /dev/urandom")?;
            key[0] &= 248;
            key[31] &= 127;
            key[31] |= 64;
            write_private(path, &format!("{}\n", encode_key(&key)))?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Every other node that published a usable WireGuard identity: name, underlay, identity.
pub(super) fn peer_identities(
    nodes: &[std::sync::Arc<NetworkNode>],
    me: &str,
) -> Vec<(String, std::net::IpAddr, PeerWireguard)> {
    let mut out: Vec<_> = nodes
        .iter()
        .filter(|n| n.name_any() != me && n.metadata.deletion_timestamp.is_none())
        .filter_map(|n| {
            let wg = PeerWireguard::parse(n.spec.wireguard.as_ref()?)?;
            let underlay = n.spec.underlay_address.parse().ok()?;
            Some((n.name_any(), underlay, wg))
        })
        .collect();
    out.sort();
    out
}

/// The peers of this node's links: every key the other nodes offer (the current one, and
/// the next one of a rotating node), each with its own port and tunnel address.
pub(super) fn peers(
    identities: &[(String, std::net::IpAddr, PeerWireguard)],
) -> Vec<WireguardPeerConfig> {
    let mut peers: Vec<(&str, WireguardPeerConfig)> = identities
        .iter()
        .flat_map(|(node, underlay, wg)| {
            wg.keys().map(move |k| {
                (
                    node.as_str(),
                    WireguardPeerConfig {
                        public_key: k.public_key,
                        endpoint: SocketAddr::new(*underlay, k.port),
                        address: k.address,
                    },
                )
            })
        })
        .collect();
    // Two nodes claiming one key or one tunnel address: neither gets it (WireGuard would
    // send the address to only one of them).
    let dup = |a: &WireguardPeerConfig, b: &WireguardPeerConfig| {
        a.public_key == b.public_key || a.address == b.address
    };
    let all = peers.clone();
    peers.retain(|(node, p)| !all.iter().any(|(n, q)| n != node && dup(p, q)));
    let mut out: Vec<WireguardPeerConfig> = peers.into_iter().map(|(_, p)| p).collect();
    out.sort();
    out
}

/// The rotation's state from its file: `(state, whether the file exists)`.
fn read_state(state_dir: &Path) -> anyhow::Result<(Rotation, bool)> {
    let path = state_path(state_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let rotation: Rotation = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not a WireGuard rotation state; restore it, or delete it and the key files to start with new keys",
                    path.display()
                )
            })?;
            Ok((rotation, true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((Rotation::default(), false)),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The slots the key files on disk say exist, for when the rotation's file cannot be read:
/// one key is that slot, steady; both are a rotation (which one sends is unknown, so both
/// links stay).
fn inferred_rotation(state_dir: &Path) -> Rotation {
    let has = |slot| key_path(state_dir, slot).exists();
    match (has(0), has(1)) {
        (false, true) => Rotation {
            active: 1,
            ..Rotation::default()
        },
        (true, true) => Rotation {
            phase: Phase::Introducing,
            ..Rotation::default()
        },
        _ => Rotation::default(),
    }
}

impl Identity {
    /// Before the first configuration: the rotation's state from its file (none yet: slot
    /// 0, steady) and what the API holds from an earlier run. A file that cannot be read is
    /// reported, not fatal (see `unreadable`).
    pub(super) fn load(state_dir: &Path, published: Option<WireguardIdentity>) -> Self {
        let mut id = Self {
            published,
            ..Self::default()
        };
        id.read(state_dir);
        id
    }

    /// Read the rotation's file again if it could not be read before (each pass, before
    /// it plans); returns whether that changed the key slots the plan must have.
    pub(super) fn reread(&mut self, state_dir: &Path) -> bool {
        if self.unreadable.is_none() {
            return false;
        }
        let before = self.slots();
        self.read(state_dir);
        self.slots() != before
    }

    fn read(&mut self, state_dir: &Path) {
        match read_state(state_dir) {
            Ok((rotation, stored)) => {
                if self.unreadable.take().is_some() {
                    tracing::info!("WireGuard rotation state readable again");
                }
                self.rotation = rotation;
                self.stored = stored;
            }
            Err(e) => {
                let why = format!("{e:#}");
                if self.unreadable.as_ref() != Some(&why) {
                    tracing::error!(error = %why, "WireGuard left as it is");
                }
                // Keep every link a key file says exists: removing the one that carries
                // the traffic would not make anything safer.
                self.rotation = inferred_rotation(state_dir);
                self.unreadable = Some(why);
            }
        }
    }

    /// The key slots the plan must have.
    pub(super) fn slots(&self) -> Slots {
        self.rotation.slots()
    }

    fn private_key(&mut self, state_dir: &Path, slot: usize) -> anyhow::Result<[u8; 32]> {
        if let Some(k) = self.private_keys[slot] {
            return Ok(k);
        }
        let k = load_or_create_key(&key_path(state_dir, slot))?;
        self.private_keys[slot] = Some(k);
        Ok(k)
    }

    /// Configure the links of the slots the plan had (keys, ports, peers), then move the
    /// rotation on if it can. Returns the identity to publish (of the configured state) and
    /// whether the rotation moved (the plan changes: another pass is due). `nodes` must be
    /// the snapshot the pass planned its FDB entries from, and `applied` whether they are in
    /// the kernel: an acknowledgement tells a rotating peer that this node no longer sends
    /// to its old key, so it is only changed when that is true.
    pub(super) async fn converge(
        &mut self,
        kernel: &Kernel,
        state_dir: &Path,
        node: &str,
        nodes: &[std::sync::Arc<NetworkNode>],
        applied: bool,
    ) -> anyhow::Result<(WireguardIdentity, bool)> {
        if let Some(why) = &self.unreadable {
            anyhow::bail!("{why}");
        }
        let identities = peer_identities(nodes, node);
        let peers = peers(&identities);
        let slots = self.rotation.slots();
        for slot in slots.present() {
            let private_key = self.private_key(state_dir, slot)?;
            let config = WireguardConfig {
                private_key,
                public_key: self.public_keys[slot],
                port: port(slot),
                peers: peers.clone(),
            };
            let (public_key, writes) = kernel
                .configure_wireguard(link(slot), config)
                .await
                .with_context(|| format!("configuring {}", link(slot)))?;
            if writes > 0 {
                tracing::info!(link = link(slot), writes, "WireGuard configured");
            }
            self.public_keys[slot] = Some(public_key);
        }
        let active = slots.active;
        let spare = other(active);
        let public = |slot: usize| self.public_keys[slot].map(|k| encode_key(&k));
        let identity = WireguardIdentity {
            public_key: public(active).context("the active key has no public key")?,
            port: i32::from(port(active)),
            address: tunnel_address(node, active).to_string(),
            next: match self.rotation.phase {
                Phase::Introducing => public(spare).map(|k| WireguardKey {
                    public_key: k,
                    port: i32::from(port(spare)),
                    address: tunnel_address(node, spare).to_string(),
                }),
                _ => None,
            },
            retiring: match self.rotation.phase {
                Phase::Retiring => public(spare),
                _ => None,
            },
            acknowledged: if applied {
                acknowledged(&identities, &peers)
            } else {
                self.published
                    .as_ref()
                    .map(|p| p.acknowledged.clone())
                    .unwrap_or_default()
            },
        };

        let request = nodes
            .iter()
            .find(|n| n.name_any() == node)
            .and_then(|n| n.annotations().get(ROTATE_ANNOTATION).cloned());
        let others: Vec<PeerWireguard> = identities.into_iter().map(|(_, _, p)| p).collect();
        let other_key = slots.rotating.then(|| self.public_keys[spare]).flatten();
        let moved = match step(&self.rotation, request.as_deref(), other_key, &others) {
            Some(next) => {
                let moved = self.rotation.slots() != next.slots();
                self.advance(state_dir, next)?;
                moved
            }
            None => false,
        };
        if !self.stored {
            self.store(state_dir)?;
        }
        Ok((identity, moved))
    }

    /// Enter `next`: a fresh key for a new rotation, the old key's file gone after one.
    fn advance(&mut self, state_dir: &Path, next: Rotation) -> anyhow::Result<()> {
        let spare = other(next.active);
        let forget = |id: &mut Self| -> anyhow::Result<()> {
            let path = key_path(state_dir, spare);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
            }
            id.private_keys[spare] = None;
            id.public_keys[spare] = None;
            Ok(())
        };
        let from = self.rotation.phase;
        // A key left over from an interrupted rotation is never reused.
        if (from, next.phase) == (Phase::Steady, Phase::Introducing) {
            forget(self)?;
        }
        self.rotation = next;
        self.store(state_dir)?;
        if (from, self.rotation.phase) == (Phase::Retiring, Phase::Steady) {
            forget(self)?;
        }
        if from != self.rotation.phase {
            tracing::info!(phase = ?self.rotation.phase, active = link(self.rotation.active), "WireGuard key rotation");
        }
        Ok(())
    }

    fn store(&mut self, state_dir: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string(&self.rotation)?;
        write_private(&state_path(state_dir), &text)?;
        self.stored = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::wireguard::PeerKey;

    #[test]
    fn the_key_is_made_once_clamped_and_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        for slot in [0, 1] {
            let path = key_path(dir.path(), slot);
            let key = load_or_create_key(&path).expect("made");
            assert_eq!(key[0] & 7, 0);
            assert_eq!(key[31] & 0xc0, 0x40);
            let mode = std::fs::metadata(&path).expect("file").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            assert_eq!(load_or_create_key(&path).expect("read back"), key);
            std::fs::write(&path, "not a key\n").expect("write");
            assert!(load_or_create_key(&path).is_err());
        }
        assert_ne!(key_path(dir.path(), 0), key_path(dir.path(), 1));
    }

    fn node(
        name: &str,
        underlay: &str,
        identity: Option<WireguardIdentity>,
    ) -> std::sync::Arc<NetworkNode> {
        let mut n = NetworkNode::new(
            name,
            weft_api::NetworkNodeSpec {
                underlay_address: underlay.into(),
                underlay_interface: None,
                underlay_mtu: None,
                capabilities: Default::default(),
                wireguard: identity,
            },
        );
        n.metadata.name = Some(name.into());
        std::sync::Arc::new(n)
    }

    fn identity(key: u8, addr: &str) -> WireguardIdentity {
        WireguardIdentity {
            public_key: encode_key(&[key; 32]),
            port: 51871,
            address: addr.into(),
            next: None,
            retiring: None,
            acknowledged: Vec::new(),
        }
    }

    #[test]
    fn peers_are_the_other_keyed_nodes_and_never_a_duplicate() {
        let nodes = vec![
            node("me", "192.0.2.1", Some(identity(1, "fd77:6566:7400::1"))),
            node("n2", "192.0.2.2", Some(identity(2, "fd77:6566:7400::2"))),
            node("n3", "192.0.2.3", Some(identity(3, "fd77:6566:7400::3"))),
            node("copy", "192.0.2.4", Some(identity(3, "fd77:6566:7400::4"))),
            node("plain", "192.0.2.9", None),
        ];
        let got = peers(&peer_identities(&nodes, "me"));
        assert_eq!(
            got,
            vec![WireguardPeerConfig {
                public_key: [2; 32],
                endpoint: "192.0.2.2:51871".parse().unwrap(),
                address: "fd77:6566:7400::2".parse().unwrap(),
            }]
        );
    }

    #[test]
    fn a_rotating_peer_is_configured_with_both_keys_and_acknowledged() {
        let mut rotating = identity(2, "fd77:6566:7400::2");
        rotating.next = Some(WireguardKey {
            public_key: encode_key(&[4; 32]),
            port: 51872,
            address: "fd77:6566:7400::3".into(),
        });
        let nodes = vec![
            node("n2", "192.0.2.2", Some(rotating)),
            node("n5", "192.0.2.5", Some(identity(5, "fd77:6566:7400::5"))),
        ];
        let ids = peer_identities(&nodes, "me");
        let got: Vec<_> = peers(&ids)
            .into_iter()
            .map(|p| {
                (
                    p.public_key[0],
                    p.endpoint.to_string(),
                    p.address.to_string(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (2, "192.0.2.2:51871".into(), "fd77:6566:7400::2".into()),
                (4, "192.0.2.2:51872".into(), "fd77:6566:7400::3".into()),
                (5, "192.0.2.5:51871".into(), "fd77:6566:7400::5".into()),
            ]
        );
        // Only the rotating peer's keys are acknowledged, and only those configured.
        let configured = peers(&ids);
        assert_eq!(
            acknowledged(&ids, &configured),
            vec![encode_key(&[2; 32]), encode_key(&[4; 32])]
        );
        assert_eq!(
            acknowledged(&ids, &configured[..1]),
            vec![encode_key(&[2; 32])]
        );
    }

    fn peer(acknowledged: &[u8]) -> PeerWireguard {
        PeerWireguard {
            current: PeerKey {
                public_key: [9; 32],
                port: 51871,
                address: "fd77:6566:7400::9".parse().unwrap(),
            },
            next: None,
            retiring: None,
            acknowledged: acknowledged.iter().map(|k| [*k; 32]).collect(),
        }
    }

    #[test]
    fn a_rotation_waits_for_every_peer_at_each_step() {
        let fresh = Rotation::default();
        // A new node adopts the annotation it finds, without rotating.
        let adopted = step(&fresh, Some("t1"), None, &[]).expect("adopted");
        assert_eq!(adopted.phase, Phase::Steady);
        assert_eq!(adopted.handled.as_deref(), Some("t1"));
        assert_eq!(step(&adopted, Some("t1"), None, &[]), None);

        // A new value asks for a rotation.
        let introducing = step(&adopted, Some("t2"), None, &[]).expect("rotating");
        assert_eq!(introducing.phase, Phase::Introducing);
        assert_eq!(introducing.active, 0);
        assert_eq!(
            introducing.slots(),
            Slots {
                active: 0,
                rotating: true
            }
        );
        // The next key (7) is not made yet, or not acknowledged by every peer: wait.
        assert_eq!(step(&introducing, Some("t2"), None, &[peer(&[7])]), None);
        assert_eq!(
            step(
                &introducing,
                Some("t2"),
                Some([7; 32]),
                &[peer(&[7]), peer(&[1])]
            ),
            None
        );
        // Every peer configured it: switch to it; the old key retires.
        let retiring = step(
            &introducing,
            Some("t2"),
            Some([7; 32]),
            &[peer(&[1, 7]), peer(&[7])],
        )
        .expect("switched");
        assert_eq!(retiring.phase, Phase::Retiring);
        assert_eq!(
            retiring.slots(),
            Slots {
                active: 1,
                rotating: true
            }
        );
        // The old key (1) is still acknowledged by a peer: it keeps receiving.
        assert_eq!(
            step(&retiring, Some("t2"), Some([1; 32]), &[peer(&[1, 7])]),
            None
        );
        let done = step(
            &retiring,
            Some("t3"),
            Some([1; 32]),
            &[peer(&[7]), peer(&[])],
        )
        .expect("retired");
        assert_eq!(done.phase, Phase::Steady);
        assert_eq!(
            done.slots(),
            Slots {
                active: 1,
                rotating: false
            }
        );
        // A request made meanwhile starts the next rotation, in the other slot.
        let again = step(&done, Some("t3"), None, &[]).expect("again");
        assert_eq!(again.phase, Phase::Introducing);
        assert_eq!(again.active, 1);
        // No peers: nothing to wait for.
        assert!(step(&again, Some("t3"), Some([8; 32]), &[]).is_some());
    }

    #[test]
    fn the_rotation_state_survives_a_restart_and_bad_state_is_reported_and_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut id = Identity::load(dir.path(), None);
        assert_eq!(id.unreadable, None);
        assert_eq!(id.slots(), Slots::default());
        let introducing = Rotation {
            active: 0,
            phase: Phase::Introducing,
            handled: Some("t".into()),
        };
        // A key left in the spare slot by an interrupted rotation is not reused.
        let stale = load_or_create_key(&key_path(dir.path(), 1)).expect("stale");
        id.advance(dir.path(), introducing.clone())
            .expect("advanced");
        assert!(!key_path(dir.path(), 1).exists());
        let fresh = load_or_create_key(&key_path(dir.path(), 1)).expect("fresh");
        assert_ne!(stale, fresh);
        let again = Identity::load(dir.path(), None);
        assert_eq!(again.rotation, introducing);
        // Switched, then retired: the old slot's key file goes.
        id.advance(
            dir.path(),
            Rotation {
                active: 1,
                phase: Phase::Retiring,
                ..introducing.clone()
            },
        )
        .expect("switched");
        load_or_create_key(&key_path(dir.path(), 0)).expect("old key");
        id.advance(
            dir.path(),
            Rotation {
                active: 1,
                phase: Phase::Steady,
                ..introducing
            },
        )
        .expect("retired");
        assert!(!key_path(dir.path(), 0).exists());
        assert!(key_path(dir.path(), 1).exists());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(state_path(dir.path()))
                .expect("state")
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);

        // A file that cannot be read: reported, the links the key files name kept (here
        // slot 1's alone), the file not written over; read again until it can be.
        std::fs::write(state_path(dir.path()), "{").expect("write");
        let mut broken = Identity::load(dir.path(), None);
        let why = broken.unreadable.clone().expect("reported");
        assert!(why.contains("wireguard.state"), "{why}");
        let only_slot_1 = Slots {
            active: 1,
            rotating: false,
        };
        assert_eq!(broken.slots(), only_slot_1);
        assert!(!broken.reread(dir.path()));
        assert_eq!(
            std::fs::read_to_string(state_path(dir.path())).expect("state"),
            "{"
        );
        load_or_create_key(&key_path(dir.path(), 0)).expect("both keys");
        let both = Identity::load(dir.path(), None);
        assert_eq!(
            both.slots(),
            Slots {
                active: 0,
                rotating: true
            }
        );
        let restored = Rotation {
            active: 1,
            phase: Phase::Retiring,
            handled: Some("t".into()),
        };
        let text = serde_json::to_string(&restored).expect("json");
        std::fs::write(state_path(dir.path()), text).expect("restore");
        assert!(broken.reread(dir.path()), "now rotating: the plan changes");
        assert_eq!(broken.unreadable, None);
        assert_eq!(broken.rotation, restored);
        assert!(!broken.reread(dir.path()));
    }
}
