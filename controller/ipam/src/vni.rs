//! VXLAN network identifiers for overlay networks.

use std::collections::BTreeMap;

/// Largest VNI: the VXLAN header has 24 bits for it.
pub const VNI_MAX: u32 = 16_777_215;
/// First VNI handed out automatically. Docker's overlay driver starts there
/// too, leaving the low ones for people who pick their VNI by hand.
pub const VNI_AUTO_MIN: u32 = 4096;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VniError {
    #[error("VNI {vni} is already used by network {other}")]
    InUse { vni: u32, other: String },
    #[error("no free VNI left in the range for automatic assignment")]
    Exhausted,
    #[error("VNI {vni} is out of range: a VXLAN network identifier is between 1 and 16777215")]
    OutOfRange { vni: u32 },
}

/// Hands out VNIs: the requested one if free, else the lowest free one of the automatic range.
#[derive(Clone, Debug)]
pub struct VniAllocator {
    lo: u32,
    hi: u32,
    by_network: BTreeMap<String, u32>,
    by_vni: BTreeMap<u32, String>,
    /// No VNI in `lo..lowest_maybe_free` is free. Only a shortcut for the
    /// search: the answer is still "lowest free", whatever the history.
    lowest_maybe_free: u32,
}

impl Default for VniAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl VniAllocator {
    /// Automatic range 4096..=16_777_215.
    pub fn new() -> Self {
        Self::with_range(VNI_AUTO_MIN, VNI_MAX)
    }

    /// Automatic range `lo..=hi`, clamped to 1..=16_777_215 (empty if `lo > hi`).
    pub fn with_range(lo: u32, hi: u32) -> Self {
        let lo = lo.max(1);
        VniAllocator {
            lo,
            hi: hi.min(VNI_MAX),
            by_network: BTreeMap::new(),
            by_vni: BTreeMap::new(),
            lowest_maybe_free: lo,
        }
    }

    /// Loads a recorded VNI (controller restart).
    pub fn restore(&mut self, network: &str, vni: u32) -> Result<(), VniError> {
        self.take(network, vni)
    }

    /// The network's VNI: `requested` if given (and free or already its own),
    /// else the one it has, else the lowest free one of the automatic range.
    pub fn allocate(&mut self, network: &str, requested: Option<u32>) -> Result<u32, VniError> {
        if let Some(vni) = requested {
            self.take(network, vni)?;
            return Ok(vni);
        }
        if let Some(&vni) = self.by_network.get(network) {
            return Ok(vni);
        }
        let vni = self.lowest_free().ok_or(VniError::Exhausted)?;
        self.lowest_maybe_free = vni.saturating_add(1);
        self.take(network, vni)?;
        Ok(vni)
    }

    pub fn release(&mut self, network: &str) {
        if let Some(vni) = self.by_network.remove(network) {
            self.by_vni.remove(&vni);
            self.lowest_maybe_free = self.lowest_maybe_free.min(vni);
        }
    }

    pub fn get(&self, network: &str) -> Option<u32> {
        self.by_network.get(network).copied()
    }

    /// Every network's VNI, by network name.
    pub fn vnis(&self) -> impl Iterator<Item = (&str, u32)> {
        self.by_network
            .iter()
            .map(|(name, &vni)| (name.as_str(), vni))
    }

    /// Gives `vni` to `network`, dropping any other VNI it had.
    fn take(&mut self, network: &str, vni: u32) -> Result<(), VniError> {
        if !(1..=VNI_MAX).contains(&vni) {
            return Err(VniError::OutOfRange { vni });
        }
        match self.by_vni.get(&vni) {
            Some(holder) if holder == network => return Ok(()),
            Some(holder) => {
                return Err(VniError::InUse {
                    vni,
                    other: holder.clone(),
                });
            }
            None => {}
        }
        self.release(network);
        self.by_network.insert(network.to_owned(), vni);
        self.by_vni.insert(vni, network.to_owned());
        Ok(())
    }

    fn lowest_free(&self) -> Option<u32> {
        let mut candidate = self.lowest_maybe_free.max(self.lo);
        // Walk the run of taken VNIs starting at the candidate.
        for (&taken, _) in self.by_vni.range(candidate..) {
            if taken != candidate {
                break;
            }
            candidate = candidate.checked_add(1)?;
        }
        (candidate <= self.hi).then_some(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_lowest_free_and_stable() {
        let mut vnis = VniAllocator::new();
        assert_eq!(vnis.allocate("a", None), Ok(4096));
        assert_eq!(vnis.allocate("b", None), Ok(4097));
        assert_eq!(vnis.allocate("a", None), Ok(4096));
        assert_eq!(vnis.get("b"), Some(4097));
        vnis.release("a");
        assert_eq!(vnis.get("a"), None);
        assert_eq!(vnis.allocate("c", None), Ok(4096));
        assert_eq!(vnis.allocate("d", None), Ok(4098));
    }

    #[test]
    fn requested_is_honoured_even_outside_the_auto_range() {
        let mut vnis = VniAllocator::new();
        assert_eq!(vnis.allocate("a", Some(42)), Ok(42));
        assert_eq!(vnis.allocate("a", Some(42)), Ok(42));
        assert_eq!(vnis.allocate("a", None), Ok(42));
        assert_eq!(vnis.allocate("b", Some(4096)), Ok(4096));
        assert_eq!(vnis.allocate("c", None), Ok(4097));
    }

    #[test]
    fn requested_in_use_names_the_holder() {
        let mut vnis = VniAllocator::new();
        vnis.allocate("a", Some(5000)).unwrap();
        let err = vnis.allocate("b", Some(5000)).unwrap_err();
        assert_eq!(
            err,
            VniError::InUse {
                vni: 5000,
                other: "a".into()
            }
        );
        assert!(err.to_string().contains("network a"));
        assert_eq!(vnis.get("b"), None);
    }

    #[test]
    fn out_of_range() {
        let mut vnis = VniAllocator::new();
        assert_eq!(
            vnis.allocate("a", Some(0)),
            Err(VniError::OutOfRange { vni: 0 })
        );
        assert_eq!(
            vnis.allocate("a", Some(VNI_MAX + 1)),
            Err(VniError::OutOfRange { vni: VNI_MAX + 1 })
        );
        assert_eq!(vnis.allocate("a", Some(VNI_MAX)), Ok(VNI_MAX));
        assert!(vnis.restore("b", 0).is_err());
    }

    #[test]
    fn exhausted() {
        let mut vnis = VniAllocator::with_range(10, 11);
        assert_eq!(vnis.allocate("a", None), Ok(10));
        assert_eq!(vnis.allocate("b", None), Ok(11));
        assert_eq!(vnis.allocate("c", None), Err(VniError::Exhausted));
        vnis.release("a");
        assert_eq!(vnis.allocate("c", None), Ok(10));
        assert_eq!(
            VniAllocator::with_range(5, 4).allocate("a", None),
            Err(VniError::Exhausted)
        );
    }

    #[test]
    fn restore_then_continue_like_the_original() {
        let mut original = VniAllocator::new();
        for name in ["a", "b", "c", "d"] {
            original.allocate(name, None).unwrap();
        }
        original.release("b");
        let mut restarted = VniAllocator::new();
        for (name, vni) in original.vnis().collect::<Vec<_>>().into_iter().rev() {
            restarted.restore(name, vni).unwrap();
        }
        assert_eq!(
            restarted.restore("x", 4096),
            Err(VniError::InUse {
                vni: 4096,
                other: "a".into()
            })
        );
        assert_eq!(original.allocate("e", None), restarted.allocate("e", None));
        assert_eq!(original.allocate("f", None), restarted.allocate("f", None));
        assert_eq!(restarted.get("e"), Some(4097));
    }
}
