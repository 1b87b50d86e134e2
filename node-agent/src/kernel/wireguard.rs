//! A WireGuard link's keys, port and peers, through the kernel's `wireguard` generic netlink
//! family (what `wg` does), never by spawning `wg`. The link itself is created like any other
//! (`LinkKind::Wireguard` through rtnetlink); this module only configures it.
//!
//! [`Kernel::configure_wireguard`] is idempotent: it reads the device first and writes only
//! what differs: the private key only when the device's public key is not the one it
//! derives, peers one by one (an unchanged peer keeps its session; replacing all peers would
//! cut every tunnel for a handshake), peers no longer wanted removed.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_generic::GenlMessage;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardMessage, WireguardPeer, WireguardPeerAttribute, WireguardPeerFlags,
};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_GENERIC};

use crate::kernel::error::{KernelError, netlink_error};
use crate::kernel::handle::Kernel;
use crate::kernel::netns;

/// One peer as Weft wants it: its key, where it listens, its tunnel address (its only
/// allowed IP, as a /128).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WireguardPeerConfig {
    pub public_key: [u8; 32],
    pub endpoint: SocketAddr,
    pub address: Ipv6Addr,
}

/// The device as Weft wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireguardConfig {
    /// Clamped (the kernel stores it clamped; an unclamped key would look changed).
    pub private_key: [u8; 32],
    /// The public key `private_key` gives, when known from an earlier configuration: Weft
    /// does no Curve25519 itself, the kernel derives the key and reports it. Unknown (after
    /// a restart), the private key is written once more; the kernel ignores an unchanged
    /// key, so no session is touched.
    pub public_key: Option<[u8; 32]>,
    pub port: u16,
    pub peers: Vec<WireguardPeerConfig>,
}

/// The device as the kernel has it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WireguardDevice {
    pub public_key: Option<[u8; 32]>,
    pub port: u16,
    pub peers: Vec<WireguardPeerConfig>,
}

impl Kernel {
    /// Make link `link` match `config`; returns the device's public key and how many
    /// writes it took (0 when it already matched).
    pub async fn configure_wireguard(
        &self,
        link: &str,
        config: WireguardConfig,
    ) -> Result<([u8; 32], usize), KernelError> {
        let link = link.to_string();
        netns::run_in(self.netns(), move || {
            let socket = GenlSocket::open()?;
            let current = socket.device(&link)?;
            let writes = socket.converge(&link, &current, &config)?;
            let after = if writes == 0 {
                current
            } else {
                socket.device(&link)?
            };
            let key = after.public_key.ok_or_else(|| {
                KernelError::Unexpected(format!("{link} has no public key after configuration"))
            })?;
            Ok((key, writes))
        })
        .await
    }

    /// Read link `link`'s WireGuard configuration.
    pub async fn wireguard_device(&self, link: &str) -> Result<WireguardDevice, KernelError> {
        let link = link.to_string();
        netns::run_in(self.netns(), move || GenlSocket::open()?.device(&link)).await
    }
}

/// A blocking generic netlink socket with the `wireguard` family resolved; lives on a
/// namespace thread for one configuration.
struct GenlSocket {
    socket: Socket,
    family: u16,
    seq: std::cell::Cell<u32>,
}

impl GenlSocket {
    fn open() -> Result<Self, KernelError> {
        let mut socket = Socket::new(NETLINK_GENERIC).map_err(KernelError::socket)?;
        socket.bind_auto().map_err(KernelError::socket)?;
        socket
            .connect(&NetlinkAddr::new(0, 0))
            .map_err(KernelError::socket)?;
        let mut s = GenlSocket {
            socket,
            family: 0,
            seq: std::cell::Cell::new(1),
        };
        s.family = s.resolve_family()?;
        Ok(s)
    }

    fn resolve_family(&self) -> Result<u16, KernelError> {
        let op = || "resolve the wireguard netlink family".to_string();
        let msg = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName("wireguard".into())],
        });
        let replies = self.request(msg, NLM_F_REQUEST | NLM_F_ACK, &op)?;
        replies
            .into_iter()
            .flat_map(|m| m.payload.nlas)
            .find_map(|a| match a {
                GenlCtrlAttrs::FamilyId(id) => Some(id),
                _ => None,
            })
            .ok_or_else(|| KernelError::Unexpected(format!("{}: no family id", op())))
    }

    fn wg(
        &self,
        cmd: WireguardCmd,
        attributes: Vec<WireguardAttribute>,
    ) -> GenlMessage<WireguardMessage> {
        let mut msg = GenlMessage::from_payload(WireguardMessage { cmd, attributes });
        msg.set_resolved_family_id(self.family);
        msg
    }

    fn device(&self, link: &str) -> Result<WireguardDevice, KernelError> {
        let op = || format!("read WireGuard device {link}");
        let msg = self.wg(
            WireguardCmd::GetDevice,
            vec![WireguardAttribute::IfName(link.to_string())],
        );
        let replies = self.request(msg, NLM_F_REQUEST | NLM_F_DUMP, &op)?;
        let mut device = WireguardDevice::default();
        // A device with many peers comes in several messages; each lists some of them.
        for reply in replies {
            for attribute in reply.payload.attributes {
                match attribute {
                    WireguardAttribute::PublicKey(k) => device.public_key = Some(k),
                    WireguardAttribute::ListenPort(p) => device.port = p,
                    WireguardAttribute::Peers(peers) => {
                        device.peers.extend(peers.iter().filter_map(parse_peer))
                    }
                    _ => {}
                }
            }
        }
        device.peers.sort();
        Ok(device)
    }

    /// The writes that take `current` to `config`; returns how many it sent.
    fn converge(
        &self,
        link: &str,
        current: &WireguardDevice,
        config: &WireguardConfig,
    ) -> Result<usize, KernelError> {
        let op = || format!("configure WireGuard device {link}");
        let mut attributes = vec![WireguardAttribute::IfName(link.to_string())];
        if current.public_key.is_none() || current.public_key != config.public_key {
            attributes.push(WireguardAttribute::PrivateKey(config.private_key));
        }
        if current.port != config.port {
            attributes.push(WireguardAttribute::ListenPort(config.port));
        }
        let have: BTreeMap<[u8; 32], &WireguardPeerConfig> =
            current.peers.iter().map(|p| (p.public_key, p)).collect();
        let want: BTreeMap<[u8; 32], &WireguardPeerConfig> =
            config.peers.iter().map(|p| (p.public_key, p)).collect();
        let mut peers = Vec::new();
        for (key, peer) in &want {
            if have.get(key) != Some(peer) {
                peers.push(WireguardPeer(vec![
                    WireguardPeerAttribute::PublicKey(*key),
                    WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
                    WireguardPeerAttribute::Endpoint(peer.endpoint),
                    WireguardPeerAttribute::AllowedIps(vec![WireguardAllowedIp(vec![
                        WireguardAllowedIpAttr::Family(WireguardAddressFamily::Ipv6),
                        WireguardAllowedIpAttr::IpAddr(IpAddr::V6(peer.address)),
                        WireguardAllowedIpAttr::Cidr(128),
                    ])]),
                ]));
            }
        }
        for key in have.keys().filter(|k| !want.contains_key(*k)) {
            peers.push(WireguardPeer(vec![
                WireguardPeerAttribute::PublicKey(*key),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe),
            ]));
        }
        if attributes.len() == 1 && peers.is_empty() {
            return Ok(0);
        }
        tracing::debug!(
            link,
            key = attributes.len() > 1,
            current = ?current.peers,
            wanted = ?config.peers,
            "WireGuard device differs"
        );
        if !peers.is_empty() {
            attributes.push(WireguardAttribute::Peers(peers));
        }
        let msg = self.wg(WireguardCmd::SetDevice, attributes);
        self.request(msg, NLM_F_REQUEST | NLM_F_ACK, &op)?;
        Ok(1)
    }

    /// Send one request and collect its replies (until the ACK or the end of the dump).
    fn request<F>(
        &self,
        msg: GenlMessage<F>,
        flags: u16,
        op: &dyn Fn() -> String,
    ) -> Result<Vec<GenlMessage<F>>, KernelError>
    where
        F: netlink_packet_generic::GenlFamily
            + netlink_packet_core::Emitable
            + netlink_packet_core::ParseableParametrized<[u8], netlink_packet_generic::GenlHeader>
            + std::fmt::Debug,
    {
        let seq = self.seq.get();
        self.seq.set(seq.wrapping_add(1));
        let mut nl = NetlinkMessage::from(msg);
        nl.header.flags = flags;
        nl.header.sequence_number = seq;
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(KernelError::socket)?;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full().map_err(KernelError::socket)?;
            let mut offset = 0;
            while offset < data.len() {
                let reply = NetlinkMessage::<GenlMessage<F>>::deserialize(&data[offset..])
                    .map_err(|e| KernelError::Unexpected(format!("{}: {e}", op())))?;
                let len = reply.header.length as usize;
                if len == 0 {
                    return Err(KernelError::Unexpected(format!("{}: empty message", op())));
                }
                offset += len;
                if reply.header.sequence_number != seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::InnerMessage(m) => {
                        out.push(m);
                        if flags & NLM_F_DUMP == 0 && flags & NLM_F_ACK == 0 {
                            return Ok(out);
                        }
                    }
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        return Err(netlink_error(op(), &e));
                    }
                    NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => return Ok(out),
                    _ => {}
                }
            }
        }
    }
}

fn parse_peer(peer: &WireguardPeer) -> Option<WireguardPeerConfig> {
    let mut key = None;
    let mut endpoint = None;
    let mut address = None;
    for a in &peer.0 {
        match a {
            WireguardPeerAttribute::PublicKey(k) => key = Some(*k),
            WireguardPeerAttribute::Endpoint(e) => endpoint = Some(*e),
            WireguardPeerAttribute::AllowedIps(ips) => {
                for ip in ips {
                    let mut addr = None;
                    let mut cidr = None;
                    for attr in &ip.0 {
                        match attr {
                            WireguardAllowedIpAttr::IpAddr(IpAddr::V6(a)) => addr = Some(*a),
                            WireguardAllowedIpAttr::Cidr(c) => cidr = Some(*c),
                            _ => {}
                        }
                    }
                    if cidr == Some(128) {
                        address = address.or(addr);
                    }
                }
            }
            _ => {}
        }
    }
    Some(WireguardPeerConfig {
        public_key: key?,
        // A peer without an endpoint or address differs from any wanted one: it is rewritten.
        endpoint: endpoint.unwrap_or(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)),
        address: address.unwrap_or(Ipv6Addr::UNSPECIFIED),
    })
}
