//! One event as a peer sends it (`SignedEvent` message bytes, or the stored record form): decoded
//! through `SignedEvent::from_peer` and the in-place header reader, checked against prost, its
//! signature and chain verified. See `casesync_engine::fuzz_targets::event_from_peer`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Refusals are the expected outcome; only a panic (a broken invariant) is a finding.
    let _refused = casesync_engine::fuzz_targets::event_from_peer(data);
});
