//! Every request message of the `Sync` and `Cases` gRPC services (the first byte picks which):
//! decoded with prost, then converted as the node converts it, and the command it asks for run
//! against a store in a temporary directory. See `casesync_engine::fuzz_targets::grpc_request`.
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
    let _refused = casesync_engine::fuzz_targets::grpc_request(scratch(), data);
});
