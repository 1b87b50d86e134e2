//! `none`: endpoints get a network namespace with loopback only. Nothing to create.

use crate::model::KernelState;
use crate::plan::{Driver, FirewallIntent, NetworkInput, NodeFacts, Problem};

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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testutil::*;

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
