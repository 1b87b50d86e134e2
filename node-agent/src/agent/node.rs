//! This node: its underlay as found in the kernel, and its NetworkNode registration.

use std::net::IpAddr;

use anyhow::Context as _;
use ipnet::IpNet;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use weft_api::NetworkNode;

use crate::kernel::Kernel;

use super::config::{Config, MANAGER};

/// The underlay as found on the node.
#[derive(Clone, Debug)]
pub(super) struct Underlay {
    pub(super) interface: Option<String>,
    pub(super) address: IpAddr,
    pub(super) mtu: u32,
}

pub(super) async fn find_underlay(kernel: &Kernel, cfg: &Config) -> anyhow::Result<Underlay> {
    let interface = match &cfg.underlay_interface {
        Some(i) => Some(i.clone()),
        None => kernel.default_route_interface().await?,
    };
    let info = match &interface {
        Some(name) => kernel.interface(name).await?,
        None => None,
    };
    if interface.is_some() && info.is_none() {
        anyhow::bail!("underlay interface {:?} does not exist", interface);
    }
    let address = match (cfg.underlay_address, &info) {
        (Some(a), _) => a,
        (None, Some(i)) => i
            .addresses
            .iter()
            .map(|n: &IpNet| n.addr())
            .find(|a| a.is_ipv4())
            .or_else(|| i.addresses.first().map(|n| n.addr()))
            .with_context(|| {
                format!(
                    "underlay interface {:?} has no address; set --underlay-address",
                    interface
                )
            })?,
        (None, None) => anyhow::bail!(
            "no default route to find the underlay: set --underlay-interface or --underlay-address"
        ),
    };
    let mtu = info.as_ref().and_then(|i| i.mtu).unwrap_or(1500);
    Ok(Underlay {
        interface,
        address,
        mtu,
    })
}

/// Create or update this node's NetworkNode spec and labels.
pub(super) async fn register(
    client: &Client,
    cfg: &Config,
    underlay: &Underlay,
    caps: &weft_api::Capabilities,
    wireguard: Option<&weft_api::WireguardIdentity>,
) -> kube::Result<()> {
    let api: Api<NetworkNode> = Api::all(client.clone());
    let patch = json!({
        "apiVersion": "weft.dev/v1alpha1",
        "kind": "NetworkNode",
        "metadata": {"name": cfg.node_name, "labels": cfg.labels},
        "spec": {
            "underlayAddress": underlay.address.to_string(),
            "underlayInterface": underlay.interface,
            "underlayMtu": underlay.mtu,
            "capabilities": caps,
            "wireguard": wireguard,
        },
    });
    api.patch(
        &cfg.node_name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}
