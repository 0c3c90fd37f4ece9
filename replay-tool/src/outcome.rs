//! What a command hands back to `main`: a JSON report, the same for people, and the exit code.

/// Everything worked and nothing is damaged.
pub const EXIT_OK: i32 = 0;
/// The command could not run (bad argument value, I/O error, store in use, ...).
pub const EXIT_ERROR: i32 = 1;
/// Usage error: an unknown flag or command, a missing argument (clap's own code, kept explicit).
pub const EXIT_USAGE: i32 = 2;
/// Damage found: verify failed, import refused a truncated or tampered backup, export met a
/// broken chain, or salvage lost events.
pub const EXIT_DAMAGED: i32 = 3;

/// `verify`: no damage, but the stored views lag the log (an interrupted bulk catch-up or
/// rebuild); the next open of the node, or `replay-tool rebuild`, rebuilds them.
pub const EXIT_VIEWS_BEHIND: i32 = 4;

/// The exit codes, for `--help`.
pub const EXIT_CODES_HELP: &str = "Exit codes:
  0  ok
  1  the command could not run (bad argument value, I/O error, store in use by casesync, ...)
  2  usage error
  3  damage found: verify failed, import refused a truncated or tampered backup (nothing stored),
     export met a broken chain, or salvage could not recover every event
  4  verify found no damage, but the views lag the log (an interrupted bulk catch-up or rebuild):
     the next start of the node, or `replay-tool rebuild`, rebuilds them";

/// A finished command.
pub struct Outcome {
    /// The exit code.
    pub code: i32,
    /// The `--json` report.
    pub json: serde_json::Value,
    /// The report for people.
    pub text: String,
}

impl Outcome {
    /// An outcome with exit code 0 when `ok`, else [`EXIT_DAMAGED`].
    pub fn new(ok: bool, mut json: serde_json::Value, text: String) -> Outcome {
        if let Some(object) = json.as_object_mut() {
            object.insert("ok".into(), ok.into());
        }
        Outcome { code: if ok { EXIT_OK } else { EXIT_DAMAGED }, json, text }
    }
}

/// Events per second, rounded.
pub fn rate(events: u64, seconds: f64) -> u64 {
    if seconds > 0.0 {
        (events as f64 / seconds).round() as u64
    } else {
        0
    }
}

/// An error that means damage (exit code [`EXIT_DAMAGED`]) rather than a failure to run.
#[derive(Debug)]
pub struct Damage(pub String);

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Damage {}
