//! The agent's settings (its flags) and its field manager.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Field manager of everything the agent writes.
pub const MANAGER: &str = "weft-agent";

/// The agent's flags.
#[derive(Clone, Debug)]
pub struct Config {
    pub node_name: String,
    pub netns: Option<PathBuf>,
    /// Hand-written ContainerEndpoints' sandboxes must lie in this directory.
    pub sandbox_dir: PathBuf,
    pub underlay_interface: Option<String>,
    pub underlay_address: Option<IpAddr>,
    /// Labels put on the NetworkNode (what nodeSelectors match).
    pub labels: BTreeMap<String, String>,
    /// Full pass even when nothing was signalled.
    pub resync: Duration,
    /// How often the NetworkNode's heartbeat is refreshed.
    pub heartbeat: Duration,
    /// Where the node's endpoint journal lives.
    pub state_dir: PathBuf,
    /// The CNI plugin's unix socket; `None` = no CNI.
    pub cni_socket: Option<PathBuf>,
    /// How long a CNI endpoint's sandbox must stay gone before the endpoint is released.
    pub gone_sandbox_grace: Duration,
    /// How long CNI DELs must pause before what they took down is deleted.
    pub teardown_quiet: Duration,
    /// Host ports for published ports that name none are chosen from this range.
    pub host_port_range: crate::endpoints::HostPortRange,
    /// The node's weft-dns feed socket; `None` = no names.
    pub dns_feed: Option<PathBuf>,
}
