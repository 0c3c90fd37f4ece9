//! A batch ingest into a store in a temporary directory: valid signed chains cut, reordered,
//! repeated and mutated as the input says, and raw events from the input. See
//! `casesync_engine::fuzz_targets::ingest_batch`.
#![no_main]

use std::sync::OnceLock;

use casesync_engine::fuzz_targets::ScratchStore;
use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static ScratchStore {
    static SCRATCH: OnceLock<(tempfile::TempDir, ScratchStore)> = OnceLock::new();
    &SCRATCH
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("a temporary directory for the store");
            let store = ScratchStore::open(dir.path()).expect("a store in a new temporary directory");
            (dir, store)
        })
        .1
}

fuzz_target!(|data: &[u8]| {
    let _refused = casesync_engine::fuzz_targets::ingest_batch(scratch(), data);
});
