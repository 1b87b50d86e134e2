//! `NetworkNode`: a node as its agent sees it. Name = node name. Spec and status are both
//! written by that node's weft-agent; the controller only reads them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Registration of one node. Labels on this object are what `nodeSelector` matches.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "weft.dev",
    version = "v1alpha1",
    kind = "NetworkNode",
    plural = "networknodes",
    status = "NetworkNodeStatus",
    category = "weft",
    printcolumn = r#"{"name":"Underlay","type":"string","jsonPath":".spec.underlayAddress"}"#,
    printcolumn = r#"{"name":"Interface","type":"string","jsonPath":".spec.underlayInterface"}"#,
    printcolumn = r#"{"name":"Heartbeat","type":"date","jsonPath":".status.heartbeatTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "isIP(self.underlayAddress)",
     "fieldPath": ".underlayAddress", "message": "underlayAddress must be an IP address"}
]))]
pub struct NetworkNodeSpec {
    /// Address other nodes reach this one at (the VXLAN tunnel endpoint).
    #[schemars(length(max = 45))]
    pub underlay_address: String,
    /// Interface that carries the underlay address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 15))]
    pub underlay_interface: Option<String>,
    /// MTU of the underlay interface (overlay MTU = this − 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 576, max = 65535))]
    pub underlay_mtu: Option<i32>,
    /// Kernel features found by probing on this node.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// This node's WireGuard identity for encrypted overlays, once its WireGuard link is set
    /// up. Only the public key travels: the private key never leaves the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard: Option<WireguardIdentity>,
}

/// How other nodes reach this one through WireGuard.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "isIP(self.address) && ip(self.address).family() == 6",
     "fieldPath": ".address", "message": "wireguard.address must be an IPv6 address"}
]))]
pub struct WireguardIdentity {
    /// Curve25519 public key, base64 (44 characters), as `wg` prints it.
    #[schemars(length(min = 44, max = 44))]
    pub public_key: String,
    /// UDP port the node's WireGuard link listens on (at its underlay address).
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// The node's address inside the tunnel (the VXLAN endpoint of encrypted overlays).
    #[schemars(length(max = 45))]
    pub address: String,
    /// During a key rotation: the key this node is introducing. Peers accept it beside the
    /// current one (a second peer, own port and tunnel address) before the node sends with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<WireguardKey>,
    /// During a key rotation: the public key this node no longer sends with, still receiving
    /// until every peer has moved to the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 44, max = 44))]
    pub retiring: Option<String>,
    /// The public keys of rotating peers (those publishing `next` or `retiring`) that this
    /// node has configured: what a rotating node waits for before each step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024), inner(length(min = 44, max = 44)))]
    pub acknowledged: Vec<String>,
}

/// One more WireGuard key of a node (its next generation).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "isIP(self.address) && ip(self.address).family() == 6",
     "fieldPath": ".address", "message": "wireguard.next.address must be an IPv6 address"}
]))]
pub struct WireguardKey {
    /// Curve25519 public key, base64 (44 characters).
    #[schemars(length(min = 44, max = 44))]
    pub public_key: String,
    /// UDP port of the link holding this key.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// The tunnel address this key's generation sends from and receives at.
    #[schemars(length(max = 45))]
    pub address: String,
}

/// Kernel features the agent found by creating a throwaway object of each kind.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    #[serde(default)]
    pub bridge: bool,
    #[serde(default)]
    pub vxlan: bool,
    #[serde(default)]
    pub macvlan: bool,
    #[serde(default)]
    pub ipvlan: bool,
    #[serde(default)]
    pub vlan: bool,
    #[serde(default)]
    pub nftables: bool,
    #[serde(default)]
    pub wireguard: bool,
}

/// What the agent has made of each network on this node.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkNodeStatus {
    /// Last time the agent said it is alive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_time: Option<Time>,
    /// Ready (kstatus).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Networks whose every kernel object is in place on this node, by name. A name stands
    /// for one network: the controller's finalizer holds a deleted network's name until no
    /// node lists it, so a re-created network cannot be taken for the old one.
    // Names, not objects: every network change on the node rewrites this list, and the API
    // server's cost per list entry is ~10× lower for a string (measured on a small machine:
    // a status write with 100 entries 9 → 4 ms, with 1,000 entries 50 → 9 ms).
    #[serde(default)]
    #[schemars(
        length(max = 10000),
        inner(length(max = 253)),
        extend("x-kubernetes-list-type" = "atomic")
    )]
    pub programmed: Vec<String>,
    /// Networks with kernel objects on this node that are not programmed, with why: waiting
    /// (say, for a parent interface), failed, or being removed. An entry disappears only once
    /// the network is programmed or every kernel object of it is gone (the controller's
    /// finalizer waits for that).
    // An atomic list: the node's agent is its only writer.
    #[serde(default)]
    #[schemars(length(max = 10000), extend("x-kubernetes-list-type" = "atomic"))]
    pub not_programmed: Vec<NetworkRealization>,
}

impl NetworkNodeStatus {
    /// The status that reports `entries` (one per network): programmed ones by name.
    pub fn with_networks(mut self, entries: Vec<NetworkRealization>) -> Self {
        let (programmed, not_programmed): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .partition(|e| e.state == RealizationState::Programmed);
        self.programmed = programmed.into_iter().map(|e| e.name).collect();
        self.not_programmed = not_programmed;
        self
    }

    /// What the node reports about network `name` whose uid is `uid`: its state, and the
    /// entry saying why when it is not programmed. An entry about another network of that
    /// name (another uid) does not count; `uid: None` takes any.
    pub fn network(
        &self,
        name: &str,
        uid: Option<&str>,
    ) -> Option<(RealizationState, Option<&NetworkRealization>)> {
        if self.programmed.iter().any(|n| n == name) {
            return Some((RealizationState::Programmed, None));
        }
        self.not_programmed
            .iter()
            .find(|r| {
                r.name == name && (r.uid.is_none() || uid.is_none() || r.uid.as_deref() == uid)
            })
            .map(|r| (r.state, Some(r)))
    }

    /// Every network the node reports, with its state.
    pub fn networks(&self) -> impl Iterator<Item = (&str, RealizationState)> {
        self.programmed
            .iter()
            .map(|n| (n.as_str(), RealizationState::Programmed))
            .chain(
                self.not_programmed
                    .iter()
                    .map(|r| (r.name.as_str(), r.state)),
            )
    }
}

/// Realization of one network on one node.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkRealization {
    /// ContainerNetwork name.
    pub name: String,
    /// metadata.uid of the ContainerNetwork (a re-created network of the same name differs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Generation of the network that was programmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    pub state: RealizationState,
    /// Machine-readable reason, such as ParentMissing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What a person should know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RealizationState {
    /// The kernel matches the network.
    Programmed,
    /// Waiting for something outside Weft (say, the parent interface).
    Pending,
    /// Programming failed; see reason and message.
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, uid: Option<&str>, state: RealizationState) -> NetworkRealization {
        NetworkRealization {
            name: name.into(),
            uid: uid.map(str::to_string),
            observed_generation: Some(1),
            state,
            reason: (state != RealizationState::Programmed).then(|| "ParentMissing".into()),
            message: None,
        }
    }

    #[test]
    fn programmed_networks_go_by_name_the_others_with_their_reason() {
        let status = NetworkNodeStatus::default().with_networks(vec![
            entry("a", Some("u1"), RealizationState::Programmed),
            entry("b", Some("u2"), RealizationState::Pending),
            entry("c", None, RealizationState::Failed),
        ]);
        assert_eq!(status.programmed, ["a"]);
        assert_eq!(status.not_programmed.len(), 2);
        assert_eq!(
            status.network("a", Some("u1")).map(|(s, _)| s),
            Some(RealizationState::Programmed)
        );
        let (state, why) = status.network("b", Some("u2")).expect("b");
        assert_eq!(state, RealizationState::Pending);
        assert_eq!(why.and_then(|e| e.reason.as_deref()), Some("ParentMissing"));
        // An entry about an older network of the same name does not count; one without a
        // uid (being removed) counts for any.
        assert_eq!(status.network("b", Some("u9")), None);
        assert!(status.network("c", Some("u9")).is_some());
        assert_eq!(status.network("d", None), None);
        assert_eq!(status.networks().count(), 3);
        let json = serde_json::to_value(&status).expect("json");
        assert_eq!(json["programmed"], serde_json::json!(["a"]));
    }
}
