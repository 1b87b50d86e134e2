//! One vocabulary of reasons for everything Weft reports as not (yet) done: a network on a
//! node (the agent's `NetworkNode` status), an endpoint (its `Ready` condition) and a
//! network's allocation (the controller's `Stalled` condition). The strings are API: tests,
//! kstatus readers and the GitOps health checks match them, so they never change.
//!
//! Each reason knows its kstatus meaning ([`Reason::state`]): `Pending` when Weft waits for
//! something expected to happen by itself, `Failed` when a person has to act. Every mapping
//! from a reason (to a state, to a CNI error code in the agent) is an exhaustive match, so a
//! new reason cannot be forgotten in one of them.

use std::fmt;

use crate::RealizationState;

/// Why something is not as asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    // A network on a node (agent).
    /// The controller has not allocated the network's subnets (or VNI) yet.
    NotAllocated,
    /// The controller has not given this node an address block of the network yet.
    NoBlock,
    /// The macvlan/ipvlan parent interface does not exist on the node (yet).
    ParentMissing,
    /// The node's kernel lacks a feature the network needs.
    Unsupported,
    /// The network is encrypted and this node cannot encrypt (no WireGuard in its kernel, or
    /// its WireGuard link could not be set up): nothing of the network is sent from or to it.
    EncryptionUnavailable,
    /// The spec holds something the schema should have refused.
    InvalidSpec,
    /// The controller's status or allocation holds something unusable.
    InvalidStatus,
    /// Another network on this node already uses the same kernel object.
    Conflict,
    /// A foreign (non-Weft) interface already has the name Weft needs.
    NameInUse,
    /// The node's block has no address left for the host shim.
    NoAddress,
    /// The kernel refused a change.
    KernelError,

    // An endpoint (agent).
    /// The endpoint's network is not programmed on this node (yet).
    NetworkNotReady,
    /// The requested address is taken or reserved.
    AddressInUse,
    /// The requested address is outside what the node hands out.
    OutsideSubnet,
    /// The node's range of the network is full.
    NoFreeAddress,
    /// An earlier endpoint publishes the same host port.
    PortConflict,
    /// The sandbox (network namespace) does not exist.
    SandboxMissing,
    /// The sandbox is not this endpoint's to attach: the node's own namespace, a `/proc`
    /// path, outside the node's directory of named namespaces, or another namespace's pod.
    SandboxNotAllowed,
    /// Another endpoint already has the interface name in the same sandbox.
    InterfaceNameInUse,
    /// The endpoint's interface went from its sandbox (or was replaced by one that is not
    /// Weft's) and could not be made again.
    InterfaceMissing,
    /// An address of the endpoint's interface was removed and could not be put back.
    AddressMissing,
    /// A route of the endpoint (its default route) was removed and could not be put back.
    RouteMissing,
    /// The host side of the endpoint's veth left its bridge (or went down) and could not be
    /// put back.
    HostSideDetached,

    // A network's allocation (controller).
    /// An explicit subnet overlaps an older network's.
    SubnetOverlap,
    /// The pool has no free subnet of the asked size.
    PoolExhausted,
    /// The named pool does not exist.
    PoolNotFound,
    /// No pool is marked default and the network names none.
    NoDefaultPool,
    /// A prefix length does not fit the subnets or the pool.
    BadPrefixLength,
    /// The requested VNI belongs to another network.
    VniInUse,
    /// Every VNI is taken.
    VniExhausted,
    /// More selected nodes than blocks.
    BlocksExhausted,
    /// A node block could not be assigned.
    BlockError,
    /// The controller's own bookkeeping is inconsistent (a bug).
    Internal,
}

impl Reason {
    /// The string the API carries.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::NotAllocated => "NotAllocated",
            Reason::NoBlock => "NoBlock",
            Reason::ParentMissing => "ParentMissing",
            Reason::Unsupported => "Unsupported",
            Reason::EncryptionUnavailable => "EncryptionUnavailable",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::InvalidStatus => "InvalidStatus",
            Reason::Conflict => "Conflict",
            Reason::NameInUse => "NameInUse",
            Reason::NoAddress => "NoAddress",
            Reason::KernelError => "KernelError",
            Reason::NetworkNotReady => "NetworkNotReady",
            Reason::AddressInUse => "AddressInUse",
            Reason::OutsideSubnet => "OutsideSubnet",
            Reason::NoFreeAddress => "NoFreeAddress",
            Reason::PortConflict => "PortConflict",
            Reason::SandboxMissing => "SandboxMissing",
            Reason::SandboxNotAllowed => "SandboxNotAllowed",
            Reason::InterfaceNameInUse => "InterfaceNameInUse",
            Reason::InterfaceMissing => "InterfaceMissing",
            Reason::AddressMissing => "AddressMissing",
            Reason::RouteMissing => "RouteMissing",
            Reason::HostSideDetached => "HostSideDetached",
            Reason::SubnetOverlap => "SubnetOverlap",
            Reason::PoolExhausted => "PoolExhausted",
            Reason::PoolNotFound => "PoolNotFound",
            Reason::NoDefaultPool => "NoDefaultPool",
            Reason::BadPrefixLength => "BadPrefixLength",
            Reason::VniInUse => "VniInUse",
            Reason::VniExhausted => "VniExhausted",
            Reason::BlocksExhausted => "BlocksExhausted",
            Reason::BlockError => "BlockError",
            Reason::Internal => "Internal",
        }
    }

    /// kstatus: `Pending` when what is missing is expected to come by itself (an allocation
    /// by the controller, an interface to appear, a network to be programmed), `Failed` when
    /// a person has to act.
    pub const fn state(self) -> RealizationState {
        match self {
            Reason::NotAllocated
            | Reason::NoBlock
            | Reason::ParentMissing
            | Reason::NetworkNotReady => RealizationState::Pending,
            Reason::Unsupported
            | Reason::EncryptionUnavailable
            | Reason::InvalidSpec
            | Reason::InvalidStatus
            | Reason::Conflict
            | Reason::NameInUse
            | Reason::NoAddress
            | Reason::KernelError
            | Reason::AddressInUse
            | Reason::OutsideSubnet
            | Reason::NoFreeAddress
            | Reason::PortConflict
            | Reason::SandboxMissing
            | Reason::SandboxNotAllowed
            | Reason::InterfaceNameInUse
            | Reason::InterfaceMissing
            | Reason::AddressMissing
            | Reason::RouteMissing
            | Reason::HostSideDetached
            | Reason::SubnetOverlap
            | Reason::PoolExhausted
            | Reason::PoolNotFound
            | Reason::NoDefaultPool
            | Reason::BadPrefixLength
            | Reason::VniInUse
            | Reason::VniExhausted
            | Reason::BlocksExhausted
            | Reason::BlockError
            | Reason::Internal => RealizationState::Failed,
        }
    }

    /// Every reason, for tests and documentation.
    pub const ALL: [Reason; 33] = [
        Reason::NotAllocated,
        Reason::NoBlock,
        Reason::ParentMissing,
        Reason::Unsupported,
        Reason::EncryptionUnavailable,
        Reason::InvalidSpec,
        Reason::InvalidStatus,
        Reason::Conflict,
        Reason::NameInUse,
        Reason::NoAddress,
        Reason::KernelError,
        Reason::NetworkNotReady,
        Reason::AddressInUse,
        Reason::OutsideSubnet,
        Reason::NoFreeAddress,
        Reason::PortConflict,
        Reason::SandboxMissing,
        Reason::SandboxNotAllowed,
        Reason::InterfaceNameInUse,
        Reason::InterfaceMissing,
        Reason::AddressMissing,
        Reason::RouteMissing,
        Reason::HostSideDetached,
        Reason::SubnetOverlap,
        Reason::PoolExhausted,
        Reason::PoolNotFound,
        Reason::NoDefaultPool,
        Reason::BadPrefixLength,
        Reason::VniInUse,
        Reason::VniExhausted,
        Reason::BlocksExhausted,
        Reason::BlockError,
        Reason::Internal,
    ];
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_strings_are_the_variant_names_and_distinct() {
        let strings: std::collections::BTreeSet<&str> =
            Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(strings.len(), Reason::ALL.len());
        for r in Reason::ALL {
            assert_eq!(format!("{r:?}"), r.as_str());
            assert_eq!(r.to_string(), r.as_str());
        }
    }

    #[test]
    fn only_what_comes_by_itself_is_pending() {
        let pending: Vec<Reason> = Reason::ALL
            .into_iter()
            .filter(|r| r.state() == RealizationState::Pending)
            .collect();
        assert_eq!(
            pending,
            vec![
                Reason::NotAllocated,
                Reason::NoBlock,
                Reason::ParentMissing,
                Reason::NetworkNotReady
            ]
        );
    }
}
