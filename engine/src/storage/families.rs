//! Column families as a store opens them: the `case_parts` merge operator, compression, table
//! format, filters and memtable sizes; and the direct opens tools and tests use.

use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};

use crate::codec::keys::*;
use crate::codec::merge_operator;
use crate::error::OpenError;
use crate::storage::memory::MemoryBudget;

/// L0 files of the `case_parts` family that start a compaction (RocksDB's default is 4; its
/// slowdown trigger, 20, stays above it). Measured with the full-sync benchmark together with
/// uncompressed events: node B 10.4-10.9 -> 8.4 CPU s for 1M events.
pub const CASE_PARTS_L0_FILES_TO_COMPACT: i32 = 12;

/// L0 files of a projection family past which RocksDB slows (stops) writes: far above the
/// default 20 (36), since a bulk fold ingests its spills as L0 files at once.
pub const PROJECTION_L0_FILES_SLOWDOWN: i32 = 400;
/// See [`PROJECTION_L0_FILES_SLOWDOWN`].
pub const PROJECTION_L0_FILES_STOP: i32 = 1000;

/// Data block size of the `events` family (RocksDB's default is 4 KiB).
pub const EVENTS_BLOCK_BYTES: usize = 16 * 1024;
/// Index keys of the `events` family between two full keys (RocksDB's default is 1: every key
/// whole).
pub const EVENTS_INDEX_RESTART_INTERVAL: i32 = 16;

/// Column family options any direct open of a store's RocksDB (tools, tests) must use: the
/// `case_parts` family needs its merge operator. Without it RocksDB cannot read, flush or compact the
/// case records, and replaying the WAL at open stops at the first batch with a merge (silently
/// dropping every later write), so never open a store with plain options.
pub fn column_family_options(name: &str) -> Options {
    let mut options = Options::default();
    if name == CF_CASES {
        options.set_merge_operator_associative(merge_operator::CASE_PART_MERGE, merge_operator::merge_case_part);
    }
    options
}

/// A column family's options as a store opens it: [`column_family_options`] plus compression,
/// table format, filters and memtable sizes. The SST files a bulk load writes itself use the
/// same (`cache`: none), so they read like the files RocksDB writes.
pub(crate) fn tuned_family_options(name: &str, cache: Option<&rocksdb::Cache>, memory: &MemoryBudget) -> Options {
    let mut cf_options = column_family_options(name);
    // Events are not compressed: each holds a signature, hashes and (once bodies are
    // sealed) ciphertext, which LZ4 barely shrinks (16 MiB memtables flushed to 11 MiB
    // files) while it was the largest share of every flush of a bulk catch-up.
    cf_options.set_compression_type(if name == CF_EVENTS {
        rocksdb::DBCompressionType::None
    } else {
        rocksdb::DBCompressionType::Lz4
    });
    if name == CF_CASES {
        // Case parts have random keys, so every flushed file overlaps all the others and
        // each L0 -> L1 compaction rewrites the whole family (through the merge operator).
        // Compacting 12 files at a time instead of 4 rewrites it a third as often; a case
        // read still touches one file per L0 file only where its prefix Bloom filter says so.
        cf_options.set_level_zero_file_num_compaction_trigger(CASE_PARTS_L0_FILES_TO_COMPACT);
    }
    if matches!(name, CF_CASES | CF_CASE_EVENTS) {
        // A bulk fold ingests its spills as L0 files all at once (one per 4096 cases it wrote
        // out: 25 for 1M events, 250 for 10M). RocksDB's write stalls for many L0 files (20
        // slow down, 36 stop) apply to the whole database, so they would hold up every write
        // until the compaction after the ingest is done; these families are small merge
        // operands otherwise, and reads skip files by their Bloom filters. Past these, writes
        // still wait for compactions.
        cf_options.set_level_zero_slowdown_writes_trigger(PROJECTION_L0_FILES_SLOWDOWN);
        cf_options.set_level_zero_stop_writes_trigger(PROJECTION_L0_FILES_STOP);
    }
    let mut table = rocksdb::BlockBasedOptions::default();
    if let Some(cache) = cache {
        table.set_block_cache(cache);
        // Index and filter blocks of the projection families live in the block cache, charged to
        // its bound, instead of beside it in every open table's reader, where they grow with the
        // data; high priority: evicted after the data blocks they point to. Not the events': a
        // sync reads long ranges of them without filling the cache, and every iterator would
        // then load and parse whole index blocks again (a relay sync of 1M events: 51k events/s
        // instead of 180k).
        if name != CF_EVENTS {
            table.set_cache_index_and_filter_blocks(true);
            table.set_cache_index_and_filter_blocks_with_high_priority(true);
        }
    }
    if name == CF_EVENTS {
        // Events are read in ranges of an author's chain, rarely one by one, so their blocks
        // can be large; and the index beside the cache (above) then holds a key per 16 KiB,
        // prefix-compressed in runs of 16 keys (consecutive keys share space and author). With
        // 4 KiB blocks and a full key each, a 10M-event log's index took 66 MiB of a node's
        // memory.
        table.set_block_size(EVENTS_BLOCK_BYTES);
        table.set_index_block_restart_interval(EVENTS_INDEX_RESTART_INTERVAL);
    }
    if name == CF_CASES {
        // A case is read as all records under space(16) case(16): a prefix Bloom filter
        // lets that seek skip every file without the case (most reads are of cases in
        // no or one file). Iterators across cases must ask for total order.
        table.set_bloom_filter(10.0, false);
        table.set_whole_key_filtering(false);
        cf_options.set_prefix_extractor(rocksdb::SliceTransform::create_fixed_prefix(CASE_PREFIX_BYTES));
        cf_options.set_memtable_prefix_bloom_ratio(0.05);
    }
    cf_options.set_block_based_table_factory(&table);
    let big = matches!(name, CF_EVENTS | CF_CASES | CF_CASE_EVENTS | CF_ARRIVAL);
    cf_options.set_write_buffer_size(memory.family_memtable_bytes(if big { 16 << 20 } else { 2 << 20 }));
    cf_options.set_max_write_buffer_number(2);
    cf_options
}

/// Database options for a direct open or a repair: with the `cases` merge operator as the
/// default for every family (only merge records call it).
pub fn direct_open_options() -> Options {
    column_family_options(CF_CASES)
}

/// Opens a closed store's RocksDB directly, read-write, with every column family and its options
/// (tools and tests that need to reach below the [`Store`] API).
pub fn open_direct(path: &Path) -> Result<DB, rocksdb::Error> {
    let descriptors = ALL_CFS.iter().map(|name| ColumnFamilyDescriptor::new(*name, column_family_options(name)));
    DB::open_cf_descriptors(&direct_open_options(), path, descriptors)
}

/// Checks the column families of an existing store before opening it: a family this build
/// does not know means a newer format, whose records it must not replay.
pub(crate) fn known_families(path: &Path) -> Result<Vec<String>, OpenError> {
    let Ok(listed) = DB::list_cf(&Options::default(), path) else {
        return Ok(Vec::new()); // No store yet (or no manifest): open creates or reports it.
    };
    let unknown: Vec<&str> = listed
        .iter()
        .map(String::as_str)
        .filter(|name| *name != "default" && *name != CF_CASES_LEGACY && !ALL_CFS.contains(name))
        .collect();
    if !unknown.is_empty() {
        return Err(OpenError::UnknownColumnFamilies(unknown.join(", ")));
    }
    Ok(listed)
}
