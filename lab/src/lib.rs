//! `weft-lab`: a Weft playground on one Linux machine. `up` builds the daemons, finds or starts
//! an API server, makes N "nodes" (network namespaces on a shared underlay bridge, each with
//! its own `weft-agent`), one `weft-controller`, applies `examples/` and attaches two
//! "containers" to the overlay network `app`. Everything it creates is recorded in
//! `<state-dir>/state.json` as it goes, so `down` can remove it even after a failed `up`.
//!
//! Names (with the default prefix `weft-lab`): underlay namespace `weft-lab-ul` with bridge
//! `ul0` 192.0.2.1/24; node i is namespace `weft-lab-n<i>` with `eth0` 192.0.2.(10+i)/24 and
//! NetworkNode `lab-node-<i>`; containers are `weft-lab-c1` and `weft-lab-c2`, endpoints
//! `default/c1` and `default/c2`.
//!
//! One file per subcommand (`up`, `status`, `down`); beside them where a lab lives and what it
//! is called (`lab`), its state file (`state`), its daemons (`process`), the objects it applies
//! (`api`), the API server it may start (`apiserver`) and what it takes from the source
//! checkout (`checkout`). The underlay itself is the test harness's (`weft_e2e::topology`), so
//! the lab is the same cluster the e2e tests run.

pub mod api;
pub mod apiserver;
pub mod checkout;
pub mod down;
pub mod lab;
pub mod process;
pub mod state;
pub mod status;
pub mod up;

pub use lab::{Lab, node_name};
pub use process::pid_running;
pub use state::State;

/// Field manager of everything the lab applies.
pub const MANAGER: &str = "weft-lab";
/// Default for `--prefix`.
pub const DEFAULT_PREFIX: &str = "weft-lab";
/// The overlay network the two containers join (from `examples/overlay.yaml`).
pub const NETWORK: &str = "app";
/// Namespace of the lab's ContainerEndpoints.
pub const ENDPOINT_NAMESPACE: &str = "default";
