//! The VM tier: each test here is one of Weft's real-kernel tests run inside Debian 12's stock
//! kernel under QEMU (see `weft_vm`), for what this machine's kernel lacks. The first to run
//! boots the VM once and runs them all; each reports its own guest test's result.

use std::io::Write;

use weft_vm::{GuestTest, Outcome, outcome};

/// The plan: every guest test, in the order the guest runs them, and its host-side test.
macro_rules! vm_tests {
    ($($name:ident => $binary:literal, $test:literal;)*) => {
        const PLAN: &[GuestTest] = &[$(GuestTest { id: stringify!($name), binary: $binary, test: $test }),*];
        $(
            #[test]
            fn $name() {
                check(stringify!($name));
            }
        )*
    };
}

vm_tests! {
    vm_kernel_vlan_when_supported => "weft-agent::kernel", "vlan_when_supported";
    vm_kernel_ipvlan_when_supported => "weft-agent::kernel", "ipvlan_when_supported";
    vm_agent_vlan_sub_interface_is_created_and_owned => "weft-agent::agent", "vlan_sub_interface_is_created_and_owned_where_the_kernel_has_vlan";
    vm_agent_ipvlan_network_is_programmed => "weft-agent::agent", "ipvlan_network_is_programmed_where_the_kernel_has_ipvlan";
    vm_endpoints_ipvlan_endpoints_on_two_nodes => "weft-agent::endpoints", "ipvlan_endpoints_on_two_nodes_where_the_kernel_has_ipvlan";
    vm_s06_macvlan_on_a_vlan_and_ipvlan => "weft-e2e::scenarios", "s06_macvlan_on_a_vlan_and_ipvlan_when_supported";
    vm_agent_the_vlan_examples_are_programmed => "weft-agent::agent", "the_vlan_examples_are_programmed_where_the_kernel_has_vlan";
    vm_agent_vlan_network_waits_for_a_late_parent => "weft-agent::agent", "vlan_network_waits_for_a_late_parent_where_the_kernel_has_vlan";
    vm_endpoints_two_vlans_on_one_parent_are_isolated => "weft-agent::endpoints", "two_vlans_on_one_parent_are_isolated_where_the_kernel_has_vlan";
    vm_endpoints_ipvlan_l3_on_two_nodes => "weft-agent::endpoints", "ipvlan_l3_endpoints_reach_each_other_and_their_node_where_the_kernel_has_ipvlan";
    vm_endpoints_encrypted_overlay_on_two_nodes => "weft-agent::endpoints", "encrypted_overlay_endpoints_on_two_nodes_where_the_kernel_has_wireguard";
    vm_agent_unreadable_wireguard_rotation_file => "weft-agent::agent", "an_unreadable_wireguard_rotation_file_is_reported_not_a_crash_loop";
}

fn check(id: &str) {
    match outcome(PLAN, id) {
        Outcome::Passed { log } => println!("{log}"),
        // The real stderr: libtest hides `eprintln!` of passing tests under `cargo test`.
        Outcome::Skipped { why } => {
            let _ = writeln!(std::io::stderr(), "SKIP: {id}: {why}");
        }
        Outcome::Failed { why, log } => panic!("{id}: {why}\n--- its output in the VM:\n{log}"),
    }
}
