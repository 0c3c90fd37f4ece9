//! Results: per-scenario metrics, per-process usage and the limit each scenario is bound by,
//! printed as a table or as JSON.

use serde::Serialize;

use crate::machine::Machine;
use crate::process::ProcUsage;

/// One measured number.
#[derive(Clone, Debug, Serialize)]
pub struct Metric {
    /// What it is (`events_per_s`, `p99_ms` ...).
    pub name: String,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
}

/// CPU and memory of one process during a scenario.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessReport {
    /// Role (node-a, relay, node-b ...).
    pub name: String,
    /// CPU seconds during the measured part.
    pub cpu_seconds: f64,
    /// Peak RSS over the process's life, MiB.
    pub peak_rss_mib: f64,
}

impl ProcessReport {
    /// From a usage sample.
    pub fn new(name: &str, usage: ProcUsage) -> ProcessReport {
        ProcessReport {
            name: name.to_string(),
            cpu_seconds: usage.cpu_seconds,
            peak_rss_mib: usage.peak_rss_bytes as f64 / (1024.0 * 1024.0),
        }
    }
}

/// The raw limit a scenario is compared with.
#[derive(Clone, Debug, Serialize)]
pub struct Bound {
    /// Which limit.
    pub limit: String,
    /// The limit's value, in the scenario's main unit.
    pub limit_value: f64,
    /// The measured value, same unit.
    pub measured: f64,
    /// measured / limit (for latencies: limit / measured), so 1.0 means at the limit.
    pub fraction: f64,
}

/// One scenario's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioReport {
    /// Scenario name.
    pub name: String,
    /// Parameters, as text.
    pub params: String,
    /// Whether the correctness checks (counts, state hashes) passed.
    pub ok: bool,
    /// Skipped (with a reason in `note`).
    pub skipped: bool,
    /// Anything worth saying.
    pub note: String,
    /// Measured numbers.
    pub metrics: Vec<Metric>,
    /// Per-process usage.
    pub processes: Vec<ProcessReport>,
    /// The limit it is bound by, when known.
    pub bound: Option<Bound>,
}

impl ScenarioReport {
    /// An empty report for `name`.
    pub fn new(name: &str, params: String) -> ScenarioReport {
        ScenarioReport {
            name: name.to_string(),
            params,
            ok: false,
            skipped: false,
            note: String::new(),
            metrics: Vec::new(),
            processes: Vec::new(),
            bound: None,
        }
    }

    /// Adds a metric.
    pub fn metric(&mut self, name: &str, value: f64, unit: &str) {
        self.metrics.push(Metric { name: name.to_string(), value, unit: unit.to_string() });
    }

    /// A metric's value.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.metrics.iter().find(|m| m.name == name).map(|m| m.value)
    }

    /// A failed scenario.
    pub fn failed(name: &str, params: String, error: &anyhow::Error) -> ScenarioReport {
        let mut report = ScenarioReport::new(name, params);
        report.note = format!("FAILED: {error:#}");
        report
    }
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// `git rev-parse --short HEAD` (+dirty).
    pub revision: String,
    /// The machine.
    pub machine: Machine,
    /// The command line.
    pub command: String,
    /// Every scenario, in run order.
    pub scenarios: Vec<ScenarioReport>,
}

impl RunReport {
    /// Human-readable table.
    pub fn to_table(&self) -> String {
        let m = &self.machine;
        let mut out = format!(
            "casesync sync-bench  rev {}  |  {} x {}  |  {:.1} GiB RAM  |  kernel {}\n$ {}\n",
            self.revision, m.cpus, m.cpu_model, m.memory_gib, m.kernel, self.command
        );
        for s in &self.scenarios {
            let state = if s.skipped {
                "SKIPPED"
            } else if s.ok {
                "ok"
            } else {
                "FAILED"
            };
            out.push_str(&format!("\n== {} [{}]  {}\n", s.name, state, s.params));
            if !s.note.is_empty() {
                out.push_str(&format!("   note: {}\n", s.note));
            }
            for metric in &s.metrics {
                out.push_str(&format!("   {:<34} {:>16} {}\n", metric.name, format_value(metric.value), metric.unit));
            }
            for p in &s.processes {
                out.push_str(&format!(
                    "   process {:<26} {:>10.2} cpu-s {:>10.1} MiB peak RSS\n",
                    p.name, p.cpu_seconds, p.peak_rss_mib
                ));
            }
            if let Some(b) = &s.bound {
                out.push_str(&format!(
                    "   bound by {}: limit {} measured {} -> {:.0}% of the limit\n",
                    b.limit,
                    format_value(b.limit_value),
                    format_value(b.measured),
                    b.fraction * 100.0
                ));
            }
        }
        out
    }
}

fn format_value(value: f64) -> String {
    if value.abs() >= 1000.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

/// The `q` quantile (0..=1) of sorted values (nearest rank); 0 when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
