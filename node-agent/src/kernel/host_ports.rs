//! The host sides of endpoints' veths (alias `weft-ep:…`) as the node's link dump shows
//! them: which bridge each is on and whether it is up. The pass reads them from the dump it
//! makes anyway, so a veth that lost its bridge (the bridge deleted and made again, or the
//! port moved by hand) is re-attached by the pass that a link event wakes, not by the next
//! full check. (One host side looked up alone: `Kernel::host_port`, in `endpoint`.)

use std::collections::BTreeMap;

use crate::kernel::link::LinkView;
use crate::model::ENDPOINT_ALIAS_PREFIX;

/// One host side: the name of its master (`None`: on no bridge) and whether it is up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostPort {
    pub master: Option<String>,
    pub up: bool,
}

/// Every endpoint host side of the namespace, by name.
pub type HostPorts = BTreeMap<String, HostPort>;

/// The endpoint host sides in one link dump (pure).
pub(crate) fn host_ports(view: &LinkView) -> HostPorts {
    view.names()
        .filter_map(|name| view.by_name(name))
        .filter(|raw| {
            raw.alias
                .as_deref()
                .is_some_and(|a| a.starts_with(ENDPOINT_ALIAS_PREFIX))
        })
        .map(|raw| {
            let master = raw.master.and_then(|m| view.name_of(m)).map(str::to_string);
            (raw.name.clone(), HostPort { master, up: raw.up })
        })
        .collect()
}
