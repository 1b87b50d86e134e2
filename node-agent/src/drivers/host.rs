//! `host`: endpoints share the node's own network namespace. Nothing to create.

use crate::model::KernelState;
use crate::plan::{Driver, FirewallIntent, NetworkInput, NodeFacts, Problem};

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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testutil::*;

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
