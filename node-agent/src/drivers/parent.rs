//! The parent interface of a macvlan or ipvlan network, and the 802.1Q sub-interface Weft
//! creates on it when the network names a VLAN.

use crate::model::{KernelState, Link, LinkKind, alias_for};
use crate::names;

use super::common::require;
use super::contract::{NetworkInput, NodeFacts, Problem, Reason, not_ready};

/// Linux's interface name limit (IFNAMSIZ − 1).
const IFNAME_MAX: usize = 15;

/// Where the network's interfaces attach on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Parent {
    /// The interface endpoints (and the host shim) are created on.
    pub name: String,
    /// The VLAN sub-interface Weft creates and owns, if any.
    pub vlan_link: Option<Link>,
}

/// Resolve `parent` (plus optional `vlan`) on this node.
///
/// With a VLAN, the sub-interface `parent.VID` is Weft's: created with the network's alias,
/// removed with the network. If a foreign interface of that name already exists, Weft uses
/// it as it is and creates nothing (what Docker does with `-o parent=eth0.10`).
pub(crate) fn resolve(
    net: &NetworkInput,
    node: &NodeFacts,
    parent: &str,
    vlan: Option<i32>,
    mtu: Option<u32>,
) -> Result<Parent, Problem> {
    if !valid_ifname(parent) {
        return Err(Problem::new(
            Reason::InvalidSpec,
            format!(
                "parent {parent:?} of network {} is not a valid interface name",
                net.name
            ),
        ));
    }
    let Some(vid) = vlan else {
        require_present(node, parent)?;
        return Ok(Parent {
            name: parent.to_string(),
            vlan_link: None,
        });
    };
    let id = u16::try_from(vid)
        .ok()
        .filter(|v| (1..=4094).contains(v))
        .ok_or_else(|| {
            Problem::new(
                Reason::InvalidSpec,
                format!(
                    "vlan of network {} is {vid}; an 802.1Q VLAN ID is between 1 and 4094",
                    net.name
                ),
            )
        })?;
    let sub = names::vlan(parent, id);
    if sub.len() > IFNAME_MAX {
        return Err(Problem::new(
            Reason::InvalidSpec,
            format!(
                "the VLAN sub-interface {sub} of network {} is longer than Linux's {IFNAME_MAX}-character limit",
                net.name
            ),
        ));
    }
    if node.interfaces.contains(&sub) {
        return Ok(Parent {
            name: sub,
            vlan_link: None,
        });
    }
    require(node.capabilities.vlan, || {
        format!("this kernel has no 802.1Q VLAN support, needed for {sub}")
    })?;
    require_present(node, parent)?;
    Ok(Parent {
        name: sub.clone(),
        vlan_link: Some(Link {
            name: sub,
            alias: alias_for(&net.name),
            kind: LinkKind::Vlan {
                parent: parent.to_string(),
                id,
            },
            mtu,
            master: None,
            up: true,
            mac: None,
        }),
    })
}

/// The interface an endpoint's child link goes on: `parent`, or `parent.VID` with a VLAN.
/// It must exist on the node or be planned, else the network is not ready for endpoints.
pub(crate) fn for_endpoint(
    net: &NetworkInput,
    node: &NodeFacts,
    desired_node: &KernelState,
    parent: Option<(&str, Option<i32>)>,
) -> Result<String, Problem> {
    let (parent, vlan) = parent.unwrap_or_default();
    let parent = match vlan.and_then(|v| u16::try_from(v).ok()) {
        Some(v) => names::vlan(parent, v),
        None => parent.to_string(),
    };
    if !node.interfaces.contains(&parent) && !desired_node.links.contains_key(&parent) {
        return Err(not_ready(net, node));
    }
    Ok(parent)
}

fn require_present(node: &NodeFacts, parent: &str) -> Result<(), Problem> {
    if node.interfaces.contains(parent) {
        Ok(())
    } else {
        Err(Problem::new(
            Reason::ParentMissing,
            format!(
                "parent interface {parent} does not exist on node {}; the network is programmed as soon as it appears",
                node.node_name
            ),
        ))
    }
}

/// What Linux accepts as an interface name (and the schema's pattern).
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::testutil::*;

    #[test]
    fn plain_parent_must_exist() {
        let n = network("lan", weft_api::Driver::Macvlan);
        let me = node("n1", "192.0.2.1");
        assert_eq!(
            resolve(&n, &me, "eth1", None, None),
            Ok(Parent {
                name: "eth1".into(),
                vlan_link: None
            })
        );
        assert_eq!(
            resolve(&n, &me, "eth9", None, None),
            Err(Problem::new(
                Reason::ParentMissing,
                "parent interface eth9 does not exist on node n1; the network is programmed as soon as it appears"
            ))
        );
    }

    #[test]
    fn vlan_sub_interface_is_created_and_owned() {
        let n = network("lan", weft_api::Driver::Macvlan);
        let me = node("n1", "192.0.2.1");
        let p = resolve(&n, &me, "eth1", Some(10), Some(1400)).expect("resolved");
        assert_eq!(p.name, "eth1.10");
        assert_eq!(
            p.vlan_link,
            Some(Link {
                name: "eth1.10".into(),
                alias: "weft:lan".into(),
                kind: LinkKind::Vlan {
                    parent: "eth1".into(),
                    id: 10
                },
                mtu: Some(1400),
                master: None,
                up: true,
                mac: None,
            })
        );
    }

    #[test]
    fn an_existing_foreign_sub_interface_is_used_as_it_is() {
        let n = network("lan", weft_api::Driver::Macvlan);
        let mut me = node("n1", "192.0.2.1");
        me.interfaces.insert("eth1.10".into());
        me.capabilities.vlan = false;
        let p = resolve(&n, &me, "eth1", Some(10), None).expect("resolved");
        assert_eq!(
            p,
            Parent {
                name: "eth1.10".into(),
                vlan_link: None
            }
        );
    }

    #[test]
    fn vlan_problems() {
        let n = network("lan", weft_api::Driver::Macvlan);
        let mut me = node("n1", "192.0.2.1");
        let reason_of = |r: Result<Parent, Problem>| r.map_err(|p| p.reason);
        assert_eq!(
            reason_of(resolve(&n, &me, "eth1", Some(0), None)),
            Err(Reason::InvalidSpec)
        );
        assert_eq!(
            reason_of(resolve(&n, &me, "eth1", Some(4095), None)),
            Err(Reason::InvalidSpec)
        );
        assert_eq!(
            reason_of(resolve(&n, &me, "enp0s31f6abcde", Some(100), None)),
            Err(Reason::InvalidSpec)
        );
        assert_eq!(
            reason_of(resolve(&n, &me, "eth 1", None, None)),
            Err(Reason::InvalidSpec)
        );
        assert_eq!(
            reason_of(resolve(&n, &me, "", None, None)),
            Err(Reason::InvalidSpec)
        );
        assert_eq!(
            reason_of(resolve(&n, &me, "eth9", Some(10), None)),
            Err(Reason::ParentMissing)
        );
        me.capabilities.vlan = false;
        let err = resolve(&n, &me, "eth1", Some(10), None).expect_err("no 802.1Q");
        assert_eq!(err.reason, Reason::Unsupported);
        assert!(err.message.contains("802.1Q"), "{}", err.message);
    }
}
