//! This node's WireGuard identity for encrypted overlays: the private key, made here and
//! kept in `<state dir>/wireguard.key` (0600; it never leaves the node), and the `weft-wg`
//! link's keys and peers, converged after each apply while the plan has the link. The public
//! key the kernel derives is published in the node's `NetworkNode` spec.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use kube::ResourceExt as _;
use weft_api::{NetworkNode, WireguardIdentity};

use crate::drivers::wireguard::{
    DEFAULT_PORT, LINK, PeerWireguard, decode_key, encode_key, tunnel_address,
};
use crate::kernel::{Kernel, WireguardConfig, WireguardPeerConfig};

/// The node's key, what the kernel made of it, and what the API has.
#[derive(Debug, Default)]
pub(super) struct Identity {
    private_key: Option<[u8; 32]>,
    public_key: Option<[u8; 32]>,
    /// What this node's NetworkNode spec says (what `register` last wrote).
    pub(super) published: Option<WireguardIdentity>,
}

/// The file the node's private key lives in.
pub(super) fn key_path(state_dir: &Path) -> PathBuf {
    state_dir.join("wireguard.key")
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
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            // Written to a temporary file first, so a crash never leaves half a key.
            let tmp = path.with_extension("key.tmp");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            writeln!(f, "{}", encode_key(&key))?;
            f.sync_all()?;
            std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Every other node that published a usable WireGuard identity, as a peer of `weft-wg`.
pub(super) fn peers(nodes: &[std::sync::Arc<NetworkNode>], me: &str) -> Vec<WireguardPeerConfig> {
    let mut peers: Vec<WireguardPeerConfig> = nodes
        .iter()
        .filter(|n| n.name_any() != me && n.metadata.deletion_timestamp.is_none())
        .filter_map(|n| {
            let wg = PeerWireguard::parse(n.spec.wireguard.as_ref()?)?;
            let underlay = n.spec.underlay_address.parse().ok()?;
            Some(WireguardPeerConfig {
                public_key: wg.public_key,
                endpoint: SocketAddr::new(underlay, wg.port),
                address: wg.address,
            })
        })
        .collect();
    peers.sort();
    // Two nodes claiming one key or one tunnel address: neither gets it (WireGuard would
    // send the address to only one of them).
    let dup = |a: &WireguardPeerConfig, b: &WireguardPeerConfig| {
        a.public_key == b.public_key || a.address == b.address
    };
    let all = peers.clone();
    peers.retain(|p| all.iter().filter(|q| dup(p, q)).count() == 1);
    peers
}

impl Identity {
    /// Before the first configuration: what the API holds from an earlier run.
    pub(super) fn new(published: Option<WireguardIdentity>) -> Self {
        Self {
            published,
            ..Self::default()
        }
    }

    /// Configure `weft-wg` (key, port, peers); returns the identity to publish.
    pub(super) async fn converge(
        &mut self,
        kernel: &Kernel,
        state_dir: &Path,
        node: &str,
        peers: Vec<WireguardPeerConfig>,
    ) -> anyhow::Result<WireguardIdentity> {
        let private_key = match self.private_key {
            Some(k) => k,
            None => {
                let k = load_or_create_key(&key_path(state_dir))?;
                self.private_key = Some(k);
                k
            }
        };
        let config = WireguardConfig {
            private_key,
            public_key: self.public_key,
            port: DEFAULT_PORT,
            peers,
        };
        let (public_key, writes) = kernel
            .configure_wireguard(LINK, config)
            .await
            .with_context(|| format!("configuring {LINK}"))?;
        if writes > 0 {
            tracing::info!(link = LINK, writes, "WireGuard configured");
        }
        self.public_key = Some(public_key);
        Ok(WireguardIdentity {
            public_key: encode_key(&public_key),
            port: i32::from(DEFAULT_PORT),
            address: tunnel_address(node).to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_clamped_and_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = key_path(dir.path());
        let key = load_or_create_key(&path).expect("made");
        assert_eq!(key[0] & 7, 0);
        assert_eq!(key[31] & 0xc0, 0x40);
        let mode = std::fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_key(&path).expect("read back"), key);
        std::fs::write(&path, "not a key\n").expect("write");
        assert!(load_or_create_key(&path).is_err());
    }

    #[test]
    fn peers_are_the_other_keyed_nodes_and_never_a_duplicate() {
        let node = |name: &str, underlay: &str, key: u8, addr: &str| {
            let mut n = NetworkNode::new(
                name,
                weft_api::NetworkNodeSpec {
                    underlay_address: underlay.into(),
                    underlay_interface: None,
                    underlay_mtu: None,
                    capabilities: Default::default(),
                    wireguard: Some(WireguardIdentity {
                        public_key: encode_key(&[key; 32]),
                        port: 51871,
                        address: addr.into(),
                    }),
                },
            );
            n.metadata.name = Some(name.into());
            std::sync::Arc::new(n)
        };
        let mut plain = node("plain", "192.0.2.9", 9, "fd77:6566:7400::9");
        std::sync::Arc::make_mut(&mut plain).spec.wireguard = None;
        let nodes = vec![
            node("me", "192.0.2.1", 1, "fd77:6566:7400::1"),
            node("n2", "192.0.2.2", 2, "fd77:6566:7400::2"),
            node("n3", "192.0.2.3", 3, "fd77:6566:7400::3"),
            node("copy", "192.0.2.4", 3, "fd77:6566:7400::4"),
            plain,
        ];
        let got = peers(&nodes, "me");
        assert_eq!(
            got,
            vec![WireguardPeerConfig {
                public_key: [2; 32],
                endpoint: "192.0.2.2:51871".parse().unwrap(),
                address: "fd77:6566:7400::2".parse().unwrap(),
            }]
        );
    }
}
