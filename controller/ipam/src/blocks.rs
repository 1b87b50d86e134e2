//! Per-node address blocks inside one network's space (cluster-scope
//! networks: overlay, macvlan, ipvlan). Each node hands out endpoint addresses
//! from its own block, so nodes never need to coordinate per endpoint.

use std::collections::BTreeMap;

use ipnet::IpNet;

use crate::occupancy::{CidrIndex, Occupancy, lowest_free_block};
use crate::range::{
    Family, Interval, block_count, canonical, canonical_list, contains, host_mask, net_at,
};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("no free address block left for another node: all {capacity} blocks are assigned")]
    Exhausted { capacity: usize },
    #[error("address block {block} overlaps the block of node {other}")]
    Overlap { block: IpNet, other: String },
    #[error("address block {block} is outside the network's subnets")]
    OutsideSpace { block: IpNet },
    #[error(
        "block prefix length /{prefix_len} does not fit the network: a block must fit inside one of its subnets"
    )]
    BadPrefixLength { prefix_len: u8 },
}

/// Assigns one block per node inside one network's space.
#[derive(Clone, Debug)]
pub struct BlockAllocator {
    /// Canonical, duplicates dropped, in the order the network listed them.
    space: Vec<IpNet>,
    block_prefix_len: u8,
    by_node: BTreeMap<String, IpNet>,
    owners: CidrIndex<String>,
    occupied: Occupancy,
}

impl BlockAllocator {
    /// `space`: where blocks are carved (the network's subnets, or its ipRange);
    /// `block_prefix_len`: size of each node's block. An empty space is accepted
    /// (it may grow with [`extend_space`](Self::extend_space)); a non-empty one
    /// must have at least one entry the block fits in.
    pub fn new(space: Vec<IpNet>, block_prefix_len: u8) -> Result<Self, BlockError> {
        let mut space = canonical_list(space);
        // Address order, not arrival order: which block is "lowest" must not depend on the
        // order subnets were added in (a restarted controller rebuilds the space from the
        // network's allocation, whose order may differ from the order it grew in).
        space.sort();
        if !space.is_empty() && !space.iter().any(|net| fits(net, block_prefix_len)) {
            return Err(BlockError::BadPrefixLength {
                prefix_len: block_prefix_len,
            });
        }
        Ok(BlockAllocator {
            space,
            block_prefix_len,
            by_node: BTreeMap::new(),
            owners: CidrIndex::default(),
            occupied: Occupancy::new(),
        })
    }

    /// Loads a recorded block (agent or controller restart). The block may
    /// have another size than today's `block_prefix_len`; it only has to lie
    /// in the space and clear of other nodes' blocks.
    pub fn restore(&mut self, node: &str, block: IpNet) -> Result<(), BlockError> {
        let block = canonical(block);
        if !self.space.iter().any(|net| contains(net, &block)) {
            return Err(BlockError::OutsideSpace { block });
        }
        if let Some((_, other)) = self
            .owners
            .overlapping(&block)
            .into_iter()
            .find(|(_, owner)| owner.as_str() != node)
        {
            return Err(BlockError::Overlap {
                block,
                other: other.clone(),
            });
        }
        self.release(node);
        self.hold(node, block);
        Ok(())
    }

    /// The node's block: the one it has, else the lowest-addressed free aligned one.
    pub fn assign(&mut self, node: &str) -> Result<IpNet, BlockError> {
        if let Some(&block) = self.by_node.get(node) {
            return Ok(block);
        }
        let prefix_len = self.block_prefix_len;
        let found = self
            .space
            .iter()
            .filter(|net| fits(net, prefix_len))
            .find_map(|net| {
                let family = Family::of(net);
                let block = lowest_free_block(
                    Interval::of(net),
                    host_mask(family, prefix_len),
                    &[&self.occupied],
                )?;
                net_at(family, block.start, prefix_len)
            });
        let block = found.ok_or(BlockError::Exhausted {
            capacity: self.capacity(),
        })?;
        self.hold(node, block);
        Ok(block)
    }

    /// The node left: its block goes back.
    pub fn release(&mut self, node: &str) {
        if let Some(block) = self.by_node.remove(node) {
            self.owners.remove(&block);
            self.occupied.remove(Interval::of(&block));
        }
    }

    /// The network grew (subnets appended); existing blocks stay where they are.
    pub fn extend_space(&mut self, more: Vec<IpNet>) {
        for net in canonical_list(more) {
            if !self.space.contains(&net) {
                self.space.push(net);
            }
        }
        self.space.sort();
    }

    /// The node's block, if it has one.
    pub fn block(&self, node: &str) -> Option<IpNet> {
        self.by_node.get(node).copied()
    }

    /// Every node's block, by node name.
    pub fn blocks(&self) -> impl Iterator<Item = (&str, IpNet)> {
        self.by_node
            .iter()
            .map(|(node, &block)| (node.as_str(), block))
    }

    pub fn space(&self) -> &[IpNet] {
        &self.space
    }

    pub fn block_prefix_len(&self) -> u8 {
        self.block_prefix_len
    }

    /// How many blocks fit in total (saturating at `usize::MAX`).
    pub fn capacity(&self) -> usize {
        let fitting: Vec<&IpNet> = self
            .space
            .iter()
            .filter(|net| fits(net, self.block_prefix_len))
            .collect();
        // Entries nested in another entry add no room.
        fitting
            .iter()
            .filter(|net| {
                !fitting
                    .iter()
                    .any(|other| other != *net && contains(other, net))
            })
            .fold(0usize, |sum, net| {
                sum.saturating_add(block_count(net.prefix_len(), self.block_prefix_len))
            })
    }

    fn hold(&mut self, node: &str, block: IpNet) {
        self.by_node.insert(node.to_owned(), block);
        self.owners.insert(block, node.to_owned());
        self.occupied.add(Interval::of(&block));
    }
}

/// Whether a block of `prefix_len` fits inside `net`.
fn fits(net: &IpNet, prefix_len: u8) -> bool {
    net.prefix_len() <= prefix_len && prefix_len <= Family::of(net).bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn assign_is_idempotent_and_lowest_first() {
        let mut blocks = BlockAllocator::new(vec![net("10.1.0.0/24")], 26).unwrap();
        assert_eq!(blocks.capacity(), 4);
        assert_eq!(blocks.assign("n1"), Ok(net("10.1.0.0/26")));
        assert_eq!(blocks.assign("n2"), Ok(net("10.1.0.64/26")));
        assert_eq!(blocks.assign("n1"), Ok(net("10.1.0.0/26")));
        let all: Vec<_> = blocks.blocks().collect();
        assert_eq!(
            all,
            vec![("n1", net("10.1.0.0/26")), ("n2", net("10.1.0.64/26"))]
        );
    }

    #[test]
    fn released_blocks_are_reused_and_exhaustion_reports_capacity() {
        let mut blocks = BlockAllocator::new(vec![net("10.1.0.0/25")], 26).unwrap();
        blocks.assign("n1").unwrap();
        blocks.assign("n2").unwrap();
        assert_eq!(
            blocks.assign("n3"),
            Err(BlockError::Exhausted { capacity: 2 })
        );
        blocks.release("n1");
        assert_eq!(blocks.block("n1"), None);
        assert_eq!(blocks.assign("n3"), Ok(net("10.1.0.0/26")));
    }

    #[test]
    fn restore_checks_overlap_and_space() {
        let mut blocks = BlockAllocator::new(vec![net("10.1.0.0/24")], 26).unwrap();
        blocks.restore("n2", net("10.1.0.64/26")).unwrap();
        assert_eq!(
            blocks.restore("n3", net("10.1.0.64/27")),
            Err(BlockError::Overlap {
                block: net("10.1.0.64/27"),
                other: "n2".into()
            })
        );
        assert_eq!(
            blocks.restore("n3", net("10.2.0.0/26")),
            Err(BlockError::OutsideSpace {
                block: net("10.2.0.0/26")
            })
        );
        // restoring a node again moves it
        blocks.restore("n2", net("10.1.0.128/26")).unwrap();
        assert_eq!(blocks.assign("n1"), Ok(net("10.1.0.0/26")));
        assert_eq!(blocks.assign("n3"), Ok(net("10.1.0.64/26")));
        assert_eq!(blocks.assign("n2"), Ok(net("10.1.0.128/26")));
    }

    #[test]
    fn bad_prefix_length() {
        assert_eq!(
            BlockAllocator::new(vec![net("10.1.0.0/24")], 23).unwrap_err(),
            BlockError::BadPrefixLength { prefix_len: 23 }
        );
        assert!(BlockAllocator::new(vec![net("10.1.0.0/24")], 33).is_err());
        // fits one entry of two: fine, the other is skipped
        let mut blocks =
            BlockAllocator::new(vec![net("10.1.0.0/28"), net("10.2.0.0/24")], 26).unwrap();
        assert_eq!(blocks.capacity(), 4);
        assert_eq!(blocks.assign("n1"), Ok(net("10.2.0.0/26")));
    }

    #[test]
    fn the_order_subnets_arrive_in_does_not_change_which_block_is_next() {
        // Found by the property test: a network that regains an earlier subnet lists its
        // subnets in another order than its block allocator received them. A restarted
        // controller builds the space from the list, so carving must not depend on order.
        let mut grown = BlockAllocator::new(vec![net("10.0.0.0/22")], 24).unwrap();
        grown.extend_space(vec![net("10.0.12.0/22")]);
        let mut rebuilt =
            BlockAllocator::new(vec![net("10.0.12.0/22"), net("10.0.0.0/22")], 24).unwrap();
        assert_eq!(grown.space(), rebuilt.space());
        for node in ["a", "b", "c", "d", "e"] {
            assert_eq!(grown.assign(node), rebuilt.assign(node), "node {node}");
        }
        assert_eq!(grown.block("e"), Some(net("10.0.12.0/24")));
    }

    #[test]
    fn extend_space_adds_room() {
        let mut blocks = BlockAllocator::new(vec![net("10.1.0.0/26")], 26).unwrap();
        blocks.assign("n1").unwrap();
        assert!(blocks.assign("n2").is_err());
        blocks.extend_space(vec![net("10.1.0.0/26"), net("fd00::/120")]);
        assert_eq!(blocks.capacity(), 1);
        blocks.extend_space(vec![net("10.9.0.0/25")]);
        assert_eq!(blocks.capacity(), 3);
        assert_eq!(blocks.assign("n2"), Ok(net("10.9.0.0/26")));
    }

    #[test]
    fn ipv6_blocks() {
        let mut blocks = BlockAllocator::new(vec![net("fd00:1::/64")], 80).unwrap();
        assert_eq!(blocks.capacity(), 65536);
        assert_eq!(blocks.assign("n1"), Ok(net("fd00:1::/80")));
        assert_eq!(blocks.assign("n2"), Ok(net("fd00:1::1:0:0:0/80")));
    }

    #[test]
    fn empty_space_is_exhausted_until_extended() {
        let mut blocks = BlockAllocator::new(Vec::new(), 26).unwrap();
        assert_eq!(
            blocks.assign("n1"),
            Err(BlockError::Exhausted { capacity: 0 })
        );
        blocks.extend_space(vec![net("10.1.0.0/24")]);
        assert_eq!(blocks.assign("n1"), Ok(net("10.1.0.0/26")));
    }
}
