//! Incremental (live) sync: B follows A; the harness creates cases on A through its local case
//! API at a fixed rate and watches B's case API. Latency is from sending the create on A to the
//! change showing in B's projection (B's `Watch` stream), matched by case id.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use casesync_proto::v1 as pb;
use tokio::runtime::Runtime;
use tokio::sync::{Mutex, Semaphore};

use crate::harness::Harness;
use crate::probe::{self, cases_client};
use crate::report::{quantile, ProcessReport, ScenarioReport};
use crate::scenario::catch_up::check_agree;

/// Parameters.
#[derive(Clone, Copy, Debug)]
pub struct IncrementalOptions {
    /// Creates per second.
    pub rate: u64,
    /// For how long.
    pub seconds: u64,
}

/// Creates in flight at most.
const IN_FLIGHT_MAX: usize = 256;

/// Runs the scenario.
pub fn run(h: &mut Harness, runtime: &Runtime, o: IncrementalOptions) -> anyhow::Result<ScenarioReport> {
    let mut report = ScenarioReport::new("incremental", format!("rate={}/s seconds={}", o.rate, o.seconds));
    let a = h.node("incremental", "a", false, None)?;
    let b = h.node("incremental", "b", false, None)?;
    h.introduce(&a, &b)?;
    let node_a = h.bins.serve(&a.dir, "node-a", &[], false)?;
    let node_b = h.bins.serve(&b.dir, "node-b", &[node_a.sync_url()], false)?;
    let total = o.rate * o.seconds;
    let (a_api, b_api) = (node_a.api_url(), node_b.api_url());
    let (a_before, b_before) = (node_a.guard.usage()?, node_b.guard.usage()?);

    let outcome = runtime.block_on(async move {
        // Wait (bounded) until B's live session with A is up.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = probe::status(&b_api).await?;
            if status.peers.iter().any(|p| p.state == "connected") {
                break;
            }
            if Instant::now() > deadline {
                bail!("B did not connect to A within 30 s: {:?}", status.peers);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut watch = cases_client(&b_api).await?.watch(pb::WatchRequest {}).await?.into_inner();
        let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let watcher = {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut count = 0u64;
                while count < total {
                    match watch.message().await {
                        Ok(Some(change)) => {
                            seen.lock().await.insert(change.case_id, Instant::now());
                            count += 1;
                        }
                        _ => break,
                    }
                }
                count
            })
        };
        let client = cases_client(&a_api).await?;
        let limit = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
        let sent: Arc<Mutex<Vec<(String, Instant, Instant)>>> = Arc::default();
        let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / o.rate.max(1)));
        let mut tasks = Vec::with_capacity(total as usize);
        let load_started = Instant::now();
        for i in 0..total {
            ticker.tick().await;
            let permit = limit.clone().acquire_owned().await?;
            let (mut client, sent) = (client.clone(), sent.clone());
            tasks.push(tokio::spawn(async move {
                let request = pb::CreateCaseRequest {
                    fields: vec![pb::NamedValue {
                        name: "name".into(),
                        value: Some(pb::Value { kind: Some(pb::value::Kind::Text(format!("live case {i:08}"))) }),
                    }],
                };
                let t0 = Instant::now();
                let view = client.create_case(request).await;
                let t1 = Instant::now();
                drop(permit);
                let view = view.map_err(|s| anyhow!("create_case: {}", s.message()))?.into_inner();
                sent.lock().await.push((view.case_id, t0, t1));
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        let load_secs = load_started.elapsed().as_secs_f64();
        let watched = tokio::time::timeout(Duration::from_secs(60), watcher)
            .await
            .map_err(|_| anyhow!("B did not show every change within 60 s"))??;
        let sent = std::mem::take(&mut *sent.lock().await);
        let seen = std::mem::take(&mut *seen.lock().await);
        let status_a = probe::status(&a_api).await?;
        let status_b = probe::status(&b_api).await?;
        anyhow::Ok((sent, seen, watched, load_secs, status_a, status_b))
    });
    let (sent, seen, watched, load_secs, status_a, status_b) = outcome?;
    let usages = [("node-a", node_a.guard.usage()?.since(a_before)), ("node-b", node_b.guard.usage()?.since(b_before))];
    node_a.guard.stop(Duration::from_secs(10))?;
    node_b.guard.stop(Duration::from_secs(10))?;

    let mut latencies = Vec::with_capacity(sent.len());
    let mut acks = Vec::with_capacity(sent.len());
    for (case, t0, t1) in &sent {
        let Some(visible) = seen.get(case) else { bail!("case {case} never showed on B") };
        latencies.push(visible.saturating_duration_since(*t0).as_secs_f64() * 1e3);
        acks.push((*t1 - *t0).as_secs_f64() * 1e3);
    }
    latencies.sort_by(f64::total_cmp);
    acks.sort_by(f64::total_cmp);
    report.metric("events", sent.len() as f64, "ev");
    report.metric("watched_on_b", watched as f64, "ev");
    report.metric("offered_rate_achieved", sent.len() as f64 / load_secs, "ev/s");
    report.metric("latency_p50_ms", quantile(&latencies, 0.50), "ms");
    report.metric("latency_p99_ms", quantile(&latencies, 0.99), "ms");
    report.metric("latency_max_ms", quantile(&latencies, 1.0), "ms");
    report.metric("a_local_append_p50_ms", quantile(&acks, 0.50), "ms");
    report.metric("a_local_append_p99_ms", quantile(&acks, 0.99), "ms");
    for (name, usage) in usages {
        report.processes.push(ProcessReport::new(name, usage));
    }
    check_agree(&mut report, total + h.membership_events(), &status_a, &status_b)?;
    Ok(report)
}
