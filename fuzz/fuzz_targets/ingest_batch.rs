//! A batch ingest into a store in a temporary directory: valid signed chains cut, reordered,
//! repeated and mutated as the input says, and raw events from the input. See
//! `casesync_engine::fuzz_targets::ingest_batch`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _refused = casesync_fuzz::with_scratch(|scratch| casesync_engine::fuzz_targets::ingest_batch(scratch, data));
});
