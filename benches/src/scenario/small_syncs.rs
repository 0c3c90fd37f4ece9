//! Many small syncs: each round appends a few events on A (through its case API, untimed) and
//! then asks B, which has no live session, to "sync now" with A (timed): the fixed cost of one
//! sync (connect, hello, heads, push, pull, one durable ingest).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use casesync_proto::v1 as pb;
use tokio::runtime::Runtime;

use crate::harness::Harness;
use crate::probe::{self, cases_client};
use crate::report::{quantile, ProcessReport, ScenarioReport};
use crate::scenario::catch_up::check_agree;

/// Parameters.
#[derive(Clone, Copy, Debug)]
pub struct SmallSyncOptions {
    /// Rounds.
    pub rounds: u64,
    /// Events appended on A per round.
    pub per_round: u64,
}

/// Runs the scenario.
pub fn run(h: &mut Harness, runtime: &Runtime, o: SmallSyncOptions) -> anyhow::Result<ScenarioReport> {
    let mut report = ScenarioReport::new("small-syncs", format!("rounds={} per_round={}", o.rounds, o.per_round));
    let a = h.node("small-syncs", "a", false, None)?;
    let b = h.node("small-syncs", "b", false, None)?;
    h.introduce(&a, &b)?;
    let node_a = h.bins.serve(&a.dir, "node-a", &[], false)?;
    let node_b = h.bins.serve(&b.dir, "node-b", &[], false)?;
    let (a_api, b_api, a_url) = (node_a.api_url(), node_b.api_url(), node_a.sync_url());
    let (a_before, b_before) = (node_a.guard.usage()?, node_b.guard.usage()?);
    let outcome = runtime.block_on(async move {
        let (mut a_client, mut b_client) = (cases_client(&a_api).await?, cases_client(&b_api).await?);
        let mut syncs = Vec::with_capacity(o.rounds as usize);
        let mut appends = Vec::with_capacity(o.rounds as usize);
        let mut sync_total = Duration::ZERO;
        for round in 0..o.rounds {
            let t0 = Instant::now();
            for i in 0..o.per_round {
                let value = pb::Value { kind: Some(pb::value::Kind::Text(format!("round {round} case {i}"))) };
                let request =
                    pb::CreateCaseRequest { fields: vec![pb::NamedValue { name: "name".into(), value: Some(value) }] };
                a_client.create_case(request).await.map_err(|s| anyhow!("create_case: {}", s.message()))?;
            }
            appends.push(t0.elapsed().as_secs_f64() * 1e3);
            let t1 = Instant::now();
            let reply = tokio::time::timeout(
                Duration::from_secs(30),
                b_client.sync_now(pb::SyncNowRequest { peer: a_url.clone() }),
            )
            .await
            .map_err(|_| anyhow!("sync now took over 30 s"))?
            .map_err(|s| anyhow!("sync now: {}", s.message()))?
            .into_inner();
            let took = t1.elapsed();
            sync_total += took;
            syncs.push(took.as_secs_f64() * 1e3);
            let result = reply.results.first().ok_or_else(|| anyhow!("sync now returned no result"))?;
            if !result.error.is_empty() || result.received != o.per_round {
                bail!("round {round}: received {} of {} ({})", result.received, o.per_round, result.error);
            }
        }
        let status_a = probe::status(&a_api).await?;
        let status_b = probe::status(&b_api).await?;
        anyhow::Ok((syncs, appends, sync_total, status_a, status_b))
    });
    let (mut syncs, mut appends, sync_total, status_a, status_b) = outcome?;
    let usages = [("node-a", node_a.guard.usage()?.since(a_before)), ("node-b", node_b.guard.usage()?.since(b_before))];
    node_a.guard.stop(Duration::from_secs(10))?;
    node_b.guard.stop(Duration::from_secs(10))?;
    syncs.sort_by(f64::total_cmp);
    appends.sort_by(f64::total_cmp);
    report.metric("sync_mean_ms", sync_total.as_secs_f64() * 1e3 / o.rounds.max(1) as f64, "ms");
    report.metric("sync_p50_ms", quantile(&syncs, 0.5), "ms");
    report.metric("sync_p99_ms", quantile(&syncs, 0.99), "ms");
    report.metric("sync_max_ms", quantile(&syncs, 1.0), "ms");
    report.metric("syncs_per_s", o.rounds as f64 / sync_total.as_secs_f64().max(1e-9), "sync/s");
    report.metric("a_append_round_p50_ms", quantile(&appends, 0.5), "ms");
    for (name, usage) in usages {
        report.processes.push(ProcessReport::new(name, usage));
    }
    check_agree(&mut report, o.rounds * o.per_round + h.membership_events(), &status_a, &status_b)?;
    Ok(report)
}
