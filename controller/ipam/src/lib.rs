//! Weft's address management as a pure library: no Kubernetes types, no I/O,
//! no async. The controller feeds it what the cluster says and stores what it
//! answers; the node agent does the same for endpoint addresses.
//!
//! - [`SubnetAllocator`]: networks' subnets, explicit (`spec.ipam.subnets`) or
//!   carved from address pools. On overlapping explicit subnets the older
//!   [`Claimant`] wins; carving keeps clear of every allocated or explicitly
//!   requested subnet and of the pool's excluded ranges.
//! - [`VniAllocator`]: VXLAN identifiers of overlay networks.
//! - [`BlockAllocator`]: one address block per node inside a network.
//! - [`AddressAllocator`]: single endpoint addresses inside a block or subnet.
//!
//! All of them are deterministic: the same calls give the same answers, and an
//! allocator rebuilt with `restore` from recorded results answers further calls
//! exactly like the one that produced them. IPv4 and IPv6 are handled alike and
//! never mix: a v4 net never overlaps a v6 net.
//!
//! Nets are taken in canonical form: host bits are cleared (10.0.0.5/24 is
//! 10.0.0.0/24) and repeated entries of one list count once.

mod addresses;
mod blocks;
mod occupancy;
pub mod range;
mod services;
mod subnets;
mod vni;

pub use addresses::{AddressAllocator, AddressError};
pub use blocks::{BlockAllocator, BlockError};
pub use ipnet::IpNet;
pub use range::first_host;
pub use services::service_range;
pub use subnets::{AllocError, Allocation, Claimant, Pool, PoolUsage, Request, SubnetAllocator};
pub use vni::{VNI_AUTO_MIN, VNI_MAX, VniAllocator, VniError};
