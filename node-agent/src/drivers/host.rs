//! `host`: endpoints share the node's own network namespace (Docker's `--network host`):
//! their sandbox is the node's namespace, and nothing is created or changed, on the node or
//! for an endpoint.

use crate::kernel::EndpointLink;
use crate::model::KernelState;

use super::contract::{
    AddressSpace, Driver, EndpointShape, FirewallIntent, HostSide, NetworkInput, NodeFacts,
    Problem, SandboxLink,
};

/// The host driver.
pub struct Host;

impl Driver for Host {
    fn plan(
        &self,
        net: &NetworkInput,
        _node: &NodeFacts,
        _out: &mut KernelState,
    ) -> Result<FirewallIntent, Problem> {
        Ok(FirewallIntent::none(&net.name))
    }

    fn endpoint_shape(&self) -> EndpointShape {
        EndpointShape::SharesNode
    }

    fn address_space(
        &self,
        _net: &NetworkInput,
        _node: &NodeFacts,
    ) -> Result<Option<AddressSpace>, Problem> {
        Ok(None)
    }

    fn sandbox_link(
        &self,
        net: &NetworkInput,
        _node: &NodeFacts,
        _desired_node: &KernelState,
        _host: &HostSide,
    ) -> Result<SandboxLink, Problem> {
        Ok(SandboxLink {
            link: EndpointLink::LoopbackOnly,
            mtu: super::common::endpoint_mtu(net),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::testutil::*;

    #[test]
    fn creates_nothing() {
        let (state, intent) = plan_one(
            &network("h", weft_api::Driver::Host),
            &node("n1", "192.0.2.1"),
        );
        assert_eq!(intent, Ok(FirewallIntent::none("h")));
        assert_eq!(state, KernelState::default());
    }
}
