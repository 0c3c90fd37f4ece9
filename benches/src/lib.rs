//! casesync benchmarks: the workload generator and the `sync-bench` harness, which runs real
//! `casesync` processes on 127.0.0.1 and reports throughput, latency, CPU seconds and peak RSS
//! per process next to the raw limits of this machine.

pub mod casesync_bin;
pub mod harness;
pub mod machine;
pub mod membership;
pub mod probe;
pub mod process;
pub mod report;
pub mod scenario;
pub mod signer;
pub mod workload;
