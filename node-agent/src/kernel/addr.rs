//! Addresses on owned links.
//!
//! Every address on an owned link is Weft's except the ones the kernel makes itself (IPv6
//! link-local and router-advertised ones, marked by `IFA_PROTO`). Weft stamps its own
//! addresses with [`WEFT_RTPROT`] as `IFA_PROTO` too, for people reading `ip -d addr`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressProtocol,
};
use rtnetlink::AddressMessageBuilder;

use crate::kernel::error::{KernelError, already_gone};
use crate::kernel::link::{LinkView, owned_index};
use crate::kernel::netlink::{Netlink, WEFT_RTPROT};
use crate::model::Address;

/// One address as the kernel reports it.
struct RawAddress {
    index: u32,
    net: Option<IpNet>,
    protocol: Option<u8>,
}

fn parse(msg: AddressMessage) -> RawAddress {
    let mut local = None;
    let mut address = None;
    let mut protocol = None;
    for attr in msg.attributes {
        match attr {
            AddressAttribute::Local(a) => local = Some(a),
            AddressAttribute::Address(a) => address = Some(a),
            AddressAttribute::Protocol(p) => protocol = Some(u8::from(p)),
            _ => {}
        }
    }
    // IPv4 puts the interface's own address in IFA_LOCAL (IFA_ADDRESS is the peer on
    // point-to-point links); IPv6 only sends IFA_ADDRESS.
    let net = local
        .or(address)
        .and_then(|ip| IpNet::new(ip, msg.header.prefix_len).ok());
    RawAddress {
        index: msg.header.index,
        net,
        protocol,
    }
}

/// Made by the kernel rather than by anyone's request.
fn kernel_made(raw: &RawAddress, net: &IpNet) -> bool {
    match raw.protocol {
        Some(p) if p == WEFT_RTPROT => false,
        // IFAPROT_KERNEL_LO / _RA / _LL
        Some(1..=3) => true,
        _ => matches!(net.addr(), IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80),
    }
}

fn message(index: u32, net: &IpNet) -> AddressMessage {
    match net.addr() {
        IpAddr::V4(a) => AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(a, net.prefix_len())
            .build(),
        IpAddr::V6(a) => AddressMessageBuilder::<Ipv6Addr>::new()
            .index(index)
            .address(a, net.prefix_len())
            .build(),
    }
}

impl Netlink {
    async fn dump_addresses(&self) -> Result<Vec<RawAddress>, KernelError> {
        self.query_map(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            true,
            || "list addresses".into(),
            |m| match m {
                RouteNetlinkMessage::NewAddress(a) => Some(parse(a)),
                _ => None,
            },
        )
        .await
    }

    pub(crate) async fn observe_addresses(
        &self,
        view: &LinkView,
    ) -> Result<BTreeSet<Address>, KernelError> {
        let mut out = BTreeSet::new();
        for raw in self.dump_addresses().await? {
            let (Some(link), Some(net)) = (view.owned_name(raw.index), raw.net) else {
                continue;
            };
            if !kernel_made(&raw, &net) {
                out.insert(Address {
                    link: link.to_string(),
                    address: net,
                });
            }
        }
        Ok(out)
    }

    /// All addresses of one interface (for `Kernel::interface`).
    pub(crate) async fn addresses_of(&self, index: u32) -> Result<Vec<IpNet>, KernelError> {
        Ok(self
            .dump_addresses()
            .await?
            .into_iter()
            .filter(|a| a.index == index)
            .filter_map(|a| a.net)
            .collect())
    }

    pub(crate) async fn add_address(
        &self,
        a: &Address,
        view: &LinkView,
    ) -> (usize, Result<(), KernelError>) {
        let op = || format!("add address {} dev {}", a.address, a.link);
        let index = match owned_index(view, &a.link, op) {
            Ok(i) => i,
            Err(e) => return (0, Err(e)),
        };
        let mut msg = message(index, &a.address);
        msg.attributes
            .push(AddressAttribute::Protocol(AddressProtocol::from(
                WEFT_RTPROT,
            )));
        if a.address.addr().is_ipv6() {
            // No duplicate address detection: the address is Weft's to give (its allocator
            // is the only one in the subnet), and a tentative address cannot be used for
            // the second or so DAD takes — a just-attached container could not send.
            msg.header.flags = AddressHeaderFlags::Nodad;
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        let r = self
            .ack(
                RouteNetlinkMessage::NewAddress(msg),
                NLM_F_CREATE | NLM_F_REPLACE,
                op,
            )
            .await;
        (1, r)
    }

    pub(crate) async fn delete_address(
        &self,
        a: &Address,
        view: &LinkView,
    ) -> (usize, Result<(), KernelError>) {
        let op = || format!("delete address {} dev {}", a.address, a.link);
        let index = match owned_index(view, &a.link, op) {
            Ok(i) => i,
            Err(e) if already_gone(&e) || matches!(e, KernelError::NoSuchLink { .. }) => {
                return (0, Ok(()));
            }
            Err(e) => return (0, Err(e)),
        };
        match self
            .ack(
                RouteNetlinkMessage::DelAddress(message(index, &a.address)),
                0,
                op,
            )
            .await
        {
            Err(e) if already_gone(&e) => (1, Ok(())),
            r => (1, r),
        }
    }
}
