//! Every request message of the `Sync` and `Cases` gRPC services (the first byte picks which):
//! decoded with prost, then converted as the node converts it, and the command it asks for run
//! against a store in a temporary directory. See `casesync_engine::fuzz_targets::grpc_request`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _refused = casesync_fuzz::with_scratch(|scratch| casesync_engine::fuzz_targets::grpc_request(scratch, data));
});
