//! A backup file as `replay-tool import` reads it: header, records and trailer, each event
//! decoded and its chain verified, then imported into a store in a temporary directory. See
//! `casesync_engine::fuzz_targets::backup_file`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _refused = casesync_fuzz::with_scratch(|scratch| casesync_engine::fuzz_targets::backup_file(scratch, data));
});
