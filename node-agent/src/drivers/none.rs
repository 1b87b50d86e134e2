//! `none`: endpoints get a network namespace with loopback only. Nothing to create.

use crate::kernel::EndpointLink;
use crate::model::KernelState;

use super::contract::{
    AddressSpace, Driver, EndpointShape, FirewallIntent, HostSide, NetworkInput, NodeFacts,
    Problem, SandboxLink,
};

/// The none driver (`None` would shadow the prelude's).
pub struct NoneDriver;

impl Driver for NoneDriver {
    fn plan(
        &self,
        net: &NetworkInput,
        _node: &NodeFacts,
        _out: &mut KernelState,
    ) -> Result<FirewallIntent, Problem> {
        Ok(FirewallIntent::none(&net.name))
    }

    fn endpoint_shape(&self) -> EndpointShape {
        EndpointShape::LoopbackOnly
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
            &network("x", weft_api::Driver::None),
            &node("n1", "192.0.2.1"),
        );
        assert_eq!(intent, Ok(FirewallIntent::none("x")));
        assert_eq!(state, KernelState::default());
    }
}
