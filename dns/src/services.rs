//! Service names (`ContainerService`), fed beside the endpoints: the service name answers the
//! VIP (`vip` services) or the ready endpoints' addresses (`dnsrr`), and `tasks.<service>`
//! (Docker's name) always the ready endpoints' addresses. Scoped like endpoint names: only
//! sandboxes on the service's network see them.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::{Index, InvalidChange, check_name};

/// One service on one network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Unique key (e.g. `namespace/name`).
    pub id: String,
    pub network: String,
    /// The service's DNS name (its object name).
    pub name: String,
    /// `None` for a `dnsrr` service: the name answers the endpoints.
    #[serde(default)]
    pub vip: Option<IpAddr>,
    /// Addresses of the ready endpoints.
    #[serde(default)]
    pub endpoints: Vec<IpAddr>,
}

pub(crate) fn check_service(s: &Service) -> Result<(), InvalidChange> {
    check_name(&s.name)?;
    check_name(&format!("tasks.{}", s.name))
}

/// Add every service's names to the index (after the endpoints).
pub(crate) fn index_services<'a>(ix: &mut Index, services: impl Iterator<Item = &'a Service>) {
    for s in services {
        let own: &[IpAddr] = match &s.vip {
            Some(vip) => std::slice::from_ref(vip),
            None => &s.endpoints,
        };
        ix.add_names(&s.network, &s.name, own);
        ix.add_names(&s.network, &format!("tasks.{}", s.name), &s.endpoints);
    }
}
