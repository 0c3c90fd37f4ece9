//! Resident memory per case state held by a delta fold (what bounds a bulk catch-up's and an
//! import's in-memory fold) for the benchmark workload: folds `events` events over
//! `events / 10` cases and reports the growth of the process's resident set per case.
//!
//! cargo run --release -p casesync-benches --example case_state_memory -- [EVENTS]

use casesync_benches::workload::{self, WorkloadSpec};
use casesync_engine::model::ids::SpaceId;
use casesync_engine::projection::fold::Fold;

fn resident_kib() -> anyhow::Result<i64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
    Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
}

fn main() -> anyhow::Result<()> {
    let events: u64 = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(160_000);
    let batches = workload::generate_batches(WorkloadSpec::new(events, 8), SpaceId([2; 16]))?;
    let before = resident_kib()?;
    let mut fold = Fold::deltas();
    for event in batches.iter().flatten() {
        let _ = fold.apply(event, |_| Ok::<_, std::convert::Infallible>(None));
    }
    let grown = resident_kib()? - before;
    let cases = fold.case_count().max(1) as i64;
    println!("{events} events, {cases} cases: {} bytes resident per case state", grown * 1024 / cases);
    Ok(())
}
