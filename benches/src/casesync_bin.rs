//! The real `casesync` binary: finding it, and the CLI calls a scenario needs (init,
//! serve), each bounded in time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::process::ChildGuard;

/// Where the `casesync` (and optionally `replay-tool`) binaries are.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// `casesync`.
    pub casesync: PathBuf,
    /// `replay-tool`, when built.
    pub replay_tool: Option<PathBuf>,
    /// The memory budget every node is started with (`CASESYNC_MEMORY_MIB`), if not the default.
    pub memory_mib: Option<usize>,
}

impl Binaries {
    /// Uses the given paths, or looks next to the current executable (target/<profile>/).
    pub fn locate(casesync: Option<PathBuf>, replay_tool: Option<PathBuf>) -> anyhow::Result<Binaries> {
        let exe = std::env::current_exe().context("finding the current executable")?;
        let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        let casesync = casesync.unwrap_or_else(|| dir.join("casesync"));
        if !casesync.is_file() {
            bail!(
                "no casesync binary at {} (build it first: `cargo build --release -p casesync-node`, or pass --casesync PATH)",
                casesync.display()
            );
        }
        let replay_tool = replay_tool.or_else(|| Some(dir.join("replay-tool"))).filter(|p| is_replay_tool(p));
        Ok(Binaries { casesync, replay_tool, memory_mib: None })
    }

    fn run(&self, data: &Path, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new(&self.casesync)
            .arg("--data")
            .arg(data)
            .args(args)
            .env("CASESYNC_LOG", "warn")
            .env("CASESYNC_PIN", crate::membership::BENCH_PIN)
            .output()
            .with_context(|| format!("running casesync {args:?}"))?;
        if !output.status.success() {
            bail!("casesync {args:?} failed: {}", String::from_utf8_lossy(&output.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `casesync init`; returns the device key and the space.
    pub fn init(&self, data: &Path, name: &str, space: Option<&str>, relay: bool) -> anyhow::Result<InitInfo> {
        let mut args = vec!["--json", "init", "--name", name];
        if let Some(space) = space {
            args.extend(["--space", space]);
        }
        if relay {
            args.push("--relay");
        }
        let out = self.run(data, &args)?;
        serde_json::from_str(out.trim()).with_context(|| format!("casesync init printed {out:?}"))
    }

    /// `casesync serve` on free loopback ports; waits (bounded) for `daemon.json`.
    pub fn serve(&self, data: &Path, name: &str, peers: &[String], relay: bool) -> anyhow::Result<Daemon> {
        let daemon_file = data.join("daemon.json");
        let _ = std::fs::remove_file(&daemon_file);
        let mut command = Command::new(&self.casesync);
        command.arg("--data").arg(data).args(["serve", "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"]);
        for peer in peers {
            command.args(["--peer", peer]);
        }
        if relay {
            command.arg("--relay");
        }
        command.env("CASESYNC_LOG", "warn").env("CASESYNC_PIN", crate::membership::BENCH_PIN);
        if let Some(mib) = self.memory_mib {
            command.env("CASESYNC_MEMORY_MIB", mib.to_string());
        }
        let log = data.with_extension("log");
        let mut guard = ChildGuard::spawn(name, command, &log)?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            guard.check_running()?;
            if let Ok(text) = std::fs::read_to_string(&daemon_file) {
                if let Ok(file) = serde_json::from_str::<DaemonJson>(&text) {
                    if file.pid == guard.pid() {
                        return Ok(Daemon { guard, api: file.api, sync: file.sync, token: file.token });
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("{name} did not write daemon.json within 120 s; log:\n{}", guard.log_tail());
            }
            // Polled often: the catch-up scenarios start their clock when this returns.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Whether `path` is a built `replay-tool` with the commands the harness uses (an old stub build
/// prints no help).
fn is_replay_tool(path: &Path) -> bool {
    path.is_file()
        && Command::new(path)
            .arg("--help")
            .output()
            .map(|o| {
                let help = String::from_utf8_lossy(&o.stdout);
                ["rebuild", "export", "import"].iter().all(|c| help.contains(c))
            })
            .unwrap_or(false)
}

/// What `casesync init --json` prints (the fields used here).
#[derive(Clone, Debug, Deserialize)]
pub struct InitInfo {
    /// Device key (hex).
    pub device_key: String,
    /// Space (hex).
    pub space: String,
}

#[derive(Deserialize)]
struct DaemonJson {
    api: String,
    sync: String,
    pid: u32,
    token: String,
}

/// A running `casesync serve`.
pub struct Daemon {
    /// The process.
    pub guard: ChildGuard,
    /// The local case API address (host:port).
    pub api: String,
    /// The sync address (host:port).
    pub sync: String,
    /// The local case API's token.
    pub token: String,
}

impl Daemon {
    /// The sync URL peers use.
    pub fn sync_url(&self) -> String {
        format!("http://{}", self.sync)
    }

    /// The case API: its URL and token.
    pub fn api_url(&self) -> crate::probe::Api {
        crate::probe::Api { url: format!("http://{}", self.api), token: self.token.clone() }
    }
}

/// Copies the files of a flat directory (a RocksDB directory) into `to`, which must not exist.
/// Table files (`*.sst`), which RocksDB never changes once written, are hard-linked where the
/// file system allows (as a RocksDB checkpoint does): a 10M-event log is copied in a moment and
/// held once on disk. Every other file (manifest, WAL, options) is copied.
pub fn copy_flat_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let target = to.join(entry.file_name());
        let immutable = entry.path().extension().is_some_and(|ext| ext == "sst");
        if immutable && std::fs::hard_link(entry.path(), &target).is_ok() {
            continue;
        }
        std::fs::copy(entry.path(), &target).with_context(|| format!("copying {}", entry.path().display()))?;
    }
    Ok(())
}
