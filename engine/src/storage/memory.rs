//! The memory a store may use for its caches and buffers: set by configuration, never grown by
//! the data. RocksDB's block cache (data, index and filter blocks of every family), its memtables
//! (all families together), a bulk fold's case states (a node's catch-up, a rebuild, an import)
//! and the events a node has received and not yet ingested each have a bound; what a node holds
//! besides them (connections, spill buffers, the process itself) is bounded by the sync limits,
//! not here.

/// One MiB.
const MIB: usize = 1 << 20;

/// The bounds a store keeps its caches and buffers within, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryBudget {
    /// RocksDB's block cache, shared by every column family.
    pub block_cache_bytes: usize,
    /// Every memtable together (RocksDB flushes the largest past it).
    pub memtables_bytes: usize,
    /// The estimated memory of the case states a bulk fold holds before it writes the least
    /// recently touched out.
    pub fold_bytes: usize,
    /// Events received from peers and not yet ingested, over all streams of a space (past it a
    /// stream reads no more until ingests free room: HTTP/2 flow control holds the peer back).
    pub received_bytes: usize,
}

/// Refused budgets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    /// Below what a store needs to work at all.
    #[error("a memory budget of {mib} MiB is below the least a store works with ({} MiB)", MemoryBudget::MIB_MIN)]
    TooSmall {
        /// The budget asked for.
        mib: usize,
    },
    /// More than this machine could address.
    #[error("a memory budget of {mib} MiB is too large")]
    TooLarge {
        /// The budget asked for.
        mib: usize,
    },
}

impl Default for MemoryBudget {
    /// [`MemoryBudget::DEFAULT_MIB`], shared as [`MemoryBudget::within_mib`] shares it. Unit tests
    /// fold within 256 KiB, so that small workloads reach the bound.
    fn default() -> Self {
        let mut budget = MemoryBudget::shared(MemoryBudget::DEFAULT_MIB * MIB);
        if cfg!(test) {
            budget.fold_bytes = 256 * 1024;
        }
        budget
    }
}

impl MemoryBudget {
    /// The least total budget, in MiB.
    pub const MIB_MIN: usize = 24;

    /// The default total budget, in MiB: 16 for each bound. Measured with the full sync of 10M
    /// and 1M events, 8 authors (BENCHMARKS.md, "Growth"): with 64, node B peaked at 258 MiB at
    /// 10M (227k events/s) and 219 at 1M (255k); with 48, at 244 and 242 MiB at 10M (222k, 188k),
    /// but the 1M sync lost a quarter of its rate (196k, 208k against 277k-286k before the
    /// budget: the fold held too few of the cases an author's chain cycles over, and node A's
    /// cache too few index blocks); with 160, 345 MiB at 10M for no speed. A catch-up writes and
    /// barely reads, so a larger cache or larger memtables buy nothing.
    pub const DEFAULT_MIB: usize = 64;

    /// A total of `mib` MiB, a quarter to each bound.
    pub fn within_mib(mib: usize) -> Result<MemoryBudget, BudgetError> {
        if mib < Self::MIB_MIN {
            return Err(BudgetError::TooSmall { mib });
        }
        let total = mib.checked_mul(MIB).filter(|total| *total <= isize::MAX as usize / 2);
        Ok(MemoryBudget::shared(total.ok_or(BudgetError::TooLarge { mib })?))
    }

    fn shared(total: usize) -> MemoryBudget {
        let quarter = total / 4;
        MemoryBudget {
            block_cache_bytes: quarter,
            memtables_bytes: quarter,
            fold_bytes: quarter,
            received_bytes: quarter,
        }
    }

    /// [`MemoryBudget::DEFAULT_MIB`] for a store that receives no events from peers (operators'
    /// tools: a rebuild, an import, an export): the quarter for received events goes to the fold,
    /// which then holds more of the cases an author's chain cycles over. A rebuild of 1M events
    /// (8 authors, 12.5k cases a chain) took 3.2-4.1 s with 32 MiB against 3.6-4.4 s with 16
    /// (BENCHMARKS.md, "Memory bounds"). Unit tests fold within 256 KiB, as by default.
    pub fn offline() -> MemoryBudget {
        let mut budget = MemoryBudget::without_peers(MemoryBudget::shared(MemoryBudget::DEFAULT_MIB * MIB));
        if cfg!(test) {
            budget.fold_bytes = 256 * 1024;
        }
        budget
    }

    /// `budget` with its room for received events given to the fold.
    fn without_peers(mut budget: MemoryBudget) -> MemoryBudget {
        budget.fold_bytes += budget.received_bytes;
        budget.received_bytes = 0;
        budget
    }

    /// One family's memtable size: a quarter of the memtables' budget, at most `usual` (what the
    /// family is tuned for), at least 1 MiB.
    pub(crate) fn family_memtable_bytes(&self, usual: usize) -> usize {
        (self.memtables_bytes / 4).clamp(MIB, usual.max(MIB))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_total_is_shared_in_quarters_and_small_or_huge_totals_are_refused() {
        assert_eq!(MemoryBudget::within_mib(MemoryBudget::DEFAULT_MIB).unwrap().received_bytes, 16 * MIB);
        let budget = MemoryBudget::within_mib(160).unwrap();
        let total = budget.block_cache_bytes + budget.memtables_bytes + budget.fold_bytes + budget.received_bytes;
        assert_eq!(total, 160 * MIB);
        assert_eq!(budget.block_cache_bytes, 40 * MIB);
        assert_eq!(budget.received_bytes, 40 * MIB);
        assert_eq!(MemoryBudget::within_mib(8), Err(BudgetError::TooSmall { mib: 8 }));
        assert!(matches!(MemoryBudget::within_mib(usize::MAX), Err(BudgetError::TooLarge { .. })));
        let small = MemoryBudget::within_mib(MemoryBudget::MIB_MIN).unwrap();
        assert_eq!(small.family_memtable_bytes(16 * MIB), MIB + MIB / 2);
        assert_eq!(budget.family_memtable_bytes(16 * MIB), 10 * MIB);
        assert_eq!(budget.family_memtable_bytes(2 * MIB), 2 * MIB);
    }

    #[test]
    fn an_offline_store_gives_the_received_events_share_to_the_fold() {
        let default = MemoryBudget::shared(MemoryBudget::DEFAULT_MIB * MIB);
        let offline = MemoryBudget::without_peers(default);
        assert_eq!(offline.received_bytes, 0);
        assert_eq!(offline.fold_bytes, 32 * MIB);
        assert_eq!(offline.block_cache_bytes, default.block_cache_bytes);
        assert_eq!(offline.memtables_bytes, default.memtables_bytes);
        // In unit tests the fold stays small, as by default.
        assert_eq!(MemoryBudget::offline().received_bytes, 0);
        assert_eq!(MemoryBudget::offline().fold_bytes, MemoryBudget::default().fold_bytes);
    }
}
