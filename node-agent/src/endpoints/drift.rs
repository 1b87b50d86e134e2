//! Drift: an attached endpoint whose kernel objects were changed behind Weft's back — its
//! interface deleted or replaced in the sandbox, an address or route removed there, its
//! host-side veth taken off its bridge or set down. Repairs are event-driven (the node's
//! link events for the host side, [`super::watch`] for the sandbox); what cannot be repaired
//! is reported in the endpoint's `Ready` condition with the drift's reason, so `Ready=True`
//! is only ever said of an endpoint whose objects are in place.
//!
//! Pure: what counts as a drifted host side for the pass, and which reason a failed repair
//! gets from what was found.

use crate::drivers::{self, HostSide, NetworkInput, NodeFacts, Problem, Reason};
use crate::kernel::{EndpointLink, HostPort, SandboxConfig, SandboxInterface};
use crate::model::KernelState;

use super::Attachment;
use super::plan::{host_alias, host_interface};

/// The reasons that say "it was in place and is not any more".
pub fn is_drift(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::InterfaceMissing
            | Reason::AddressMissing
            | Reason::RouteMissing
            | Reason::HostSideDetached
    )
}

/// The bridge a routed endpoint's host side belongs on; `None` when its network is not
/// programmed on the node (then there is nothing to compare with).
fn expected_bridge(
    att: &Attachment,
    net: &NetworkInput,
    facts: &NodeFacts,
    desired_node: &KernelState,
) -> Option<String> {
    let host = HostSide {
        interface: host_interface(&att.id),
        alias: host_alias(&att.id),
    };
    match drivers::of(net)
        .sandbox_link(net, facts, desired_node, &host)
        .ok()?
        .link
    {
        EndpointLink::Veth { bridge, .. } => Some(bridge),
        _ => None,
    }
}

/// Does a routed endpoint's host side need the endpoint repaired: missing, on no bridge or
/// on another one, or down?
pub fn host_side_drifted(
    att: &Attachment,
    net: &NetworkInput,
    facts: &NodeFacts,
    desired_node: &KernelState,
    observed: Option<&HostPort>,
) -> bool {
    let Some(port) = observed else {
        return true;
    };
    match expected_bridge(att, net, facts, desired_node) {
        Some(bridge) => !port.up || port.master.as_deref() != Some(bridge.as_str()),
        None => false,
    }
}

/// The problem of a repair that failed with `failure`, given what was found afterwards: the
/// sandbox's interface (`None`: not there) and, for a veth, the host side (`Some(None)`: no
/// such link). The first missing piece names the reason — the sandbox's interface first (a
/// veth's host side goes with it) — and the message says what is missing, why it could not
/// be put back, and what a person can do.
pub fn repair_problem(
    cfg: &SandboxConfig,
    sandbox: Option<&SandboxInterface>,
    host: Option<Option<&HostPort>>,
    failure: &Problem,
) -> Problem {
    let place = format!("sandbox {}", cfg.sandbox.display());
    let why = &failure.message;
    let Some(iface) = sandbox.filter(|i| i.owned) else {
        let what = if sandbox.is_some() {
            format!(
                "{} in {place} was replaced by an interface that is not Weft's",
                cfg.if_name
            )
        } else {
            format!("{} is gone from {place}", cfg.if_name)
        };
        return Problem::new(
            Reason::InterfaceMissing,
            format!(
                "{what} and could not be made again: {why}; remove whatever took its name, or re-create the endpoint"
            ),
        );
    };
    if let (
        EndpointLink::Veth {
            host: name, bridge, ..
        },
        Some(port),
    ) = (&cfg.link, host)
    {
        let detached = match port {
            None => true,
            Some(p) => !p.up || p.master.as_deref() != Some(bridge.as_str()),
        };
        if detached {
            return Problem::new(
                Reason::HostSideDetached,
                format!(
                    "the host side {name} of {} is not up on bridge {bridge} and could not be put back: {why}; the agent retries on every change — check what moves or deletes interfaces on the node",
                    cfg.if_name
                ),
            );
        }
    }
    if let Some(missing) = cfg.addresses.iter().find(|a| !iface.addresses.contains(a)) {
        return Problem::new(
            Reason::AddressMissing,
            format!(
                "address {missing} was removed from {} in {place} and could not be put back: {why}",
                cfg.if_name
            ),
        );
    }
    if let Some(missing) = cfg.routes.iter().find(|r| !iface.routes.contains(r)) {
        return Problem::new(
            Reason::RouteMissing,
            format!(
                "route {} via {} was removed from {} in {place} and could not be put back: {why}",
                missing.destination,
                missing
                    .gateway
                    .map(|g| g.to_string())
                    .unwrap_or_else(|| "-".into()),
                cfg.if_name
            ),
        );
    }
    failure.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use crate::model::Route;

    fn cfg() -> SandboxConfig {
        SandboxConfig {
            sandbox: PathBuf::from("/run/netns/pod"),
            if_name: "eth0".into(),
            alias: "weft:lan".into(),
            link: EndpointLink::Veth {
                host: "wfe0123456789ab".into(),
                host_alias: "weft-ep:default/a".into(),
                bridge: "wfb-01234567".into(),
                hairpin: false,
            },
            mac: None,
            mtu: None,
            addresses: vec!["10.1.0.2/24".parse().unwrap()],
            routes: vec![Route {
                destination: "0.0.0.0/0".parse().unwrap(),
                gateway: Some("10.1.0.1".parse().unwrap()),
                link: "eth0".into(),
            }],
            replace_default_route: false,
        }
    }

    fn on_bridge() -> HostPort {
        HostPort {
            master: Some("wfb-01234567".into()),
            up: true,
        }
    }

    fn complete(cfg: &SandboxConfig) -> SandboxInterface {
        SandboxInterface {
            mac: None,
            up: true,
            owned: true,
            addresses: cfg.addresses.iter().copied().collect(),
            routes: cfg.routes.iter().cloned().collect(),
        }
    }

    #[test]
    fn a_failed_repair_is_named_by_the_first_missing_piece() {
        let cfg = cfg();
        let failed = Problem::new(Reason::KernelError, "File exists");
        let port = on_bridge();
        let full = complete(&cfg);
        let reason = |iface: Option<&SandboxInterface>, owned: bool, host| {
            let iface = iface.cloned().map(|mut i| {
                i.owned = owned;
                i
            });
            repair_problem(&cfg, iface.as_ref(), host, &failed)
        };
        let detached = HostPort {
            master: None,
            up: true,
        };
        // The interface first: a deleted veth takes its host side along.
        assert_eq!(
            reason(None, false, Some(None)).reason,
            Reason::InterfaceMissing
        );
        let p = reason(Some(&full), true, Some(Some(&detached)));
        assert_eq!(p.reason, Reason::HostSideDetached);
        assert!(p.message.contains("wfe0123456789ab") && p.message.contains("File exists"));
        assert_eq!(
            reason(Some(&full), true, Some(None)).reason,
            Reason::HostSideDetached
        );
        let p = reason(None, false, Some(Some(&port)));
        assert_eq!(p.reason, Reason::InterfaceMissing);
        assert!(
            p.message
                .contains("eth0 is gone from sandbox /run/netns/pod")
        );
        let p = reason(Some(&full), false, Some(Some(&port)));
        assert_eq!(p.reason, Reason::InterfaceMissing);
        assert!(p.message.contains("not Weft's"));
        let mut no_address = full.clone();
        no_address.addresses = BTreeSet::new();
        let p = reason(Some(&no_address), true, Some(Some(&port)));
        assert_eq!(p.reason, Reason::AddressMissing);
        assert!(p.message.contains("10.1.0.2/24"));
        let mut no_route = full.clone();
        no_route.routes = BTreeSet::new();
        assert_eq!(
            reason(Some(&no_route), true, Some(Some(&port))).reason,
            Reason::RouteMissing
        );
        // Everything in place: the failure stays what it was.
        assert_eq!(reason(Some(&full), true, Some(Some(&port))), failed);
        for r in [
            Reason::InterfaceMissing,
            Reason::AddressMissing,
            Reason::RouteMissing,
            Reason::HostSideDetached,
        ] {
            assert!(is_drift(r));
        }
        assert!(!is_drift(Reason::KernelError));
    }

    /// The pass repairs a host side that is missing, on no bridge or another one, or down;
    /// one up on its bridge is left alone, as is one whose network is not programmed.
    #[test]
    fn a_host_side_off_its_bridge_or_down_is_drifted() {
        use crate::drivers::testutil::{allocate, network, node, plan_one};
        use crate::names;
        let mut net = network("web", weft_api::Driver::Bridge);
        allocate(&mut net, &["10.1.0.0/24"], Some("10.1.0.1"));
        let facts = node("n1", "192.0.2.11");
        let (desired, _) = plan_one(&net, &facts);
        let att = Attachment {
            id: super::super::EndpointId {
                namespace: "default".into(),
                name: "a".into(),
            },
            network: "web".into(),
            network_uid: net.uid.clone(),
            sandbox: "/run/netns/a".into(),
            if_name: "eth0".into(),
            address: Some("10.1.0.2/24".parse().unwrap()),
            gateway: Some("10.1.0.1".parse().unwrap()),
            mac: None,
            publish: Vec::new(),
            cni: None,
            since: 0,
            requested_address: None,
            requested_mac: None,
            in_api: true,
            gw_priority: 0,
            replace_default_route: false,
            mirror: None,
            names: Default::default(),
        };
        let bridge = names::bridge("web");
        let port = |master: Option<&str>, up| HostPort {
            master: master.map(String::from),
            up,
        };
        let drifted = |p: Option<&HostPort>| host_side_drifted(&att, &net, &facts, &desired, p);
        assert!(!drifted(Some(&port(Some(&bridge), true))));
        assert!(drifted(None));
        assert!(drifted(Some(&port(None, true))));
        assert!(drifted(Some(&port(Some("wfb-other"), true))));
        assert!(drifted(Some(&port(Some(&bridge), false))));
        // Its network not programmed here (no bridge planned): nothing to compare with.
        let nothing = KernelState::default();
        assert!(!host_side_drifted(
            &att,
            &net,
            &facts,
            &nothing,
            Some(&port(None, true))
        ));
    }
}
