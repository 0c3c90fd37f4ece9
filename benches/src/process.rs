//! Child processes: a guard that stops its process on drop, and per-process CPU seconds and peak
//! RSS read from `/proc` while the process still runs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

/// CPU time and memory of one process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct ProcUsage {
    /// User plus system CPU seconds so far.
    pub cpu_seconds: f64,
    /// Peak resident set size (VmHWM), bytes.
    pub peak_rss_bytes: u64,
}

impl ProcUsage {
    /// Reads the usage of a running process. Fails once it has exited and been reaped.
    pub fn of(pid: u32) -> anyhow::Result<ProcUsage> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/PID/status")?;
        let peak_kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/PID/stat")?;
        // Fields after the command name (which may hold spaces) start at field 3 (state).
        let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let cpu_ticks = ticks(11) + ticks(12);
        Ok(ProcUsage { cpu_seconds: cpu_ticks as f64 / clock_ticks(), peak_rss_bytes: peak_kib * 1024 })
    }

    /// CPU seconds spent since `before` (peak RSS stays the overall peak).
    pub fn since(self, before: ProcUsage) -> ProcUsage {
        ProcUsage { cpu_seconds: (self.cpu_seconds - before.cpu_seconds).max(0.0), ..self }
    }
}

/// Resets a running process's peak RSS (VmHWM) to its current RSS (Linux `clear_refs`, value 5),
/// so that a later reading is the peak from now on.
pub fn reset_peak_rss(pid: u32) -> anyhow::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").context("writing /proc/PID/clear_refs")
}

fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// A running child process that is stopped (SIGINT, then SIGKILL) when the guard drops, so a
/// failing scenario never leaves daemons behind.
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl ChildGuard {
    /// Spawns `command` with stdout and stderr going to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> anyhow::Result<ChildGuard> {
        let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        Ok(ChildGuard { name: name.to_string(), child: Some(child), log: log.to_path_buf() })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Usage so far.
    pub fn usage(&self) -> anyhow::Result<ProcUsage> {
        ProcUsage::of(self.pid())
    }

    /// Fails (with the end of the log) if the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                bail!("{} exited early ({status}); log:\n{}", self.name, self.log_tail());
            }
        }
        Ok(())
    }

    /// The last lines of the process's output.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Reads the usage, then stops the process: SIGINT, up to `grace` to exit, then SIGKILL.
    pub fn stop(mut self, grace: Duration) -> anyhow::Result<ProcUsage> {
        let usage = self.usage();
        self.shutdown(grace);
        usage
    }

    /// Waits for the process to exit by itself (bounded), sampling its usage every 10 ms; returns
    /// the exit success, the last sample and the wall time.
    pub fn wait_sampling(mut self, timeout: Duration) -> anyhow::Result<(bool, ProcUsage, Duration)> {
        let started = Instant::now();
        let mut last = ProcUsage::default();
        let Some(child) = self.child.as_mut() else { bail!("{} was already stopped", self.name) };
        loop {
            // A zombie has no VmHWM line: keep the highest values seen while it ran.
            if let Ok(usage) = ProcUsage::of(child.id()) {
                last = ProcUsage {
                    cpu_seconds: usage.cpu_seconds.max(last.cpu_seconds),
                    peak_rss_bytes: usage.peak_rss_bytes.max(last.peak_rss_bytes),
                };
            }
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok((status.success(), last, started.elapsed()));
            }
            if started.elapsed() > timeout {
                bail!("{} did not finish within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn shutdown(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else { return };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.shutdown(Duration::from_secs(3));
    }
}
