//! The node's address allocators, one per network, over [`weft_ipam::AddressAllocator`].

use std::collections::HashMap;
use std::net::IpAddr;

use weft_ipam::{AddressAllocator, AddressError};

use crate::drivers::AddressSpace;

/// One allocator per network (by uid), rebuilt when the network's space on this node
/// changes (a new block, an edited range).
#[derive(Default)]
pub struct NodeIpam {
    networks: HashMap<String, (AddressSpace, AddressAllocator)>,
}

impl NodeIpam {
    fn allocator(&mut self, network_uid: &str, space: &AddressSpace) -> &mut AddressAllocator {
        // The service range stays free for VIPs unless an endpoint asks for an address in it.
        let services: Vec<_> = weft_ipam::service_range(&space.subnet)
            .into_iter()
            .collect();
        let fresh = || {
            AddressAllocator::new(space.subnet, space.range, space.reserved.clone())
                .only_on_request(&services)
        };
        let entry = self
            .networks
            .entry(network_uid.to_string())
            .or_insert_with(|| (space.clone(), fresh()));
        if &entry.0 != space {
            // Keep whoever still fits the new space; the others are re-planned by the caller.
            let owners: Vec<(String, IpAddr)> = entry.1.owners().collect();
            let mut next = fresh();
            for (owner, addr) in owners {
                let _ = next.restore(&owner, addr);
            }
            *entry = (space.clone(), next);
        }
        &mut entry.1
    }

    /// The next free address, or `requested` if it is free; an owner that already has an
    /// address keeps it.
    pub fn allocate(
        &mut self,
        network_uid: &str,
        space: &AddressSpace,
        owner: &str,
        requested: Option<IpAddr>,
    ) -> Result<IpAddr, AddressError> {
        let alloc = self.allocator(network_uid, space);
        if let Some(have) = alloc.get(owner) {
            if requested.is_none_or(|r| r == have) {
                return Ok(have);
            }
            alloc.release(owner);
        }
        match requested {
            Some(addr) => alloc.request(owner, addr),
            None => alloc.allocate(owner),
        }
    }

    /// Take back an address found in the journal or a status (on start).
    pub fn restore(
        &mut self,
        network_uid: &str,
        space: &AddressSpace,
        owner: &str,
        addr: IpAddr,
    ) -> Result<(), AddressError> {
        self.allocator(network_uid, space).restore(owner, addr)
    }

    /// Does the owner still hold `addr` in this network?
    pub fn holds(&self, network_uid: &str, owner: &str, addr: IpAddr) -> bool {
        self.networks
            .get(network_uid)
            .is_some_and(|(_, a)| a.get(owner) == Some(addr))
    }

    pub fn release(&mut self, network_uid: &str, owner: &str) {
        if let Some((_, alloc)) = self.networks.get_mut(network_uid) {
            alloc.release(owner);
            if alloc.in_use() == 0 {
                self.networks.remove(network_uid);
            }
        }
    }
}
