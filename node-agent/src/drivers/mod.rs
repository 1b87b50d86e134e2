//! One file per network driver, behind one trait ([`Driver`]) that covers the driver's
//! whole life on a node: the network's own kernel objects and what each endpoint gets (its
//! address space, its link in the sandbox, whether the node routes it). Adding a driver is
//! a file here and a line in [`driver_for`].
//!
//! [`contract`] holds what drivers are given and answer, [`common`] what several drivers
//! read the same way; this module is the registry. Driver files import from those two (and
//! from each other), never from here, so nothing points back up.

pub mod bridge;
pub mod common;
pub mod contract;
pub mod host;
pub mod ipvlan;
pub mod macvlan;
pub mod none;
pub mod overlay;
mod parent;
#[cfg(test)]
pub(crate) mod testutil;

pub use common::{MIN_MTU, gateway_addresses};
pub use contract::*;

/// The driver of a network: the one place that names every driver.
pub fn driver_for(driver: weft_api::Driver) -> &'static dyn Driver {
    match driver {
        weft_api::Driver::Bridge => &bridge::Bridge,
        weft_api::Driver::Overlay => &overlay::Overlay,
        weft_api::Driver::Macvlan => &macvlan::Macvlan,
        weft_api::Driver::Ipvlan => &ipvlan::Ipvlan,
        weft_api::Driver::Host => &host::Host,
        weft_api::Driver::None => &none::NoneDriver,
    }
}

/// The driver of `net`.
pub fn of(net: &NetworkInput) -> &'static dyn Driver {
    driver_for(net.spec.driver)
}
