//! Node configuration: `casesync.toml` in the data dir, overridden by flags and environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// File name of the configuration inside the data dir.
pub const CONFIG_FILE: &str = "casesync.toml";
/// File the running daemon writes with its addresses, so the CLI can find it.
pub const DAEMON_FILE: &str = "daemon.json";

/// What `casesync.toml` holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The space (practice log) this node serves, hex.
    pub space: String,
    /// Address for peers (sync service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Peers to sync with (URLs like http://127.0.0.1:7000).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// Scheduled full sync period, like "30s", "5m".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_every: Option<String>,
    /// Store and forward only: no case views.
    #[serde(default)]
    pub relay: bool,
}

impl FileConfig {
    /// Reads the config of a data dir.
    pub fn load(data: &Path) -> anyhow::Result<FileConfig> {
        let path = data.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("no casesync node in {} (run `casesync init --data {}`)", data.display(), data.display())
        })?;
        toml::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
    }

    /// Writes the config of a data dir.
    pub fn save(&self, data: &Path) -> anyhow::Result<()> {
        let path = data.join(CONFIG_FILE);
        let text = toml::to_string_pretty(self).context("encoding the config")?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }
}

/// The default data dir: `$CASESYNC_DATA`, else `$XDG_DATA_HOME/casesync`, else
/// `~/.local/share/casesync`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("casesync");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/casesync"),
        None => PathBuf::from("casesync-data"),
    }
}

/// Parses durations like `500ms`, `30s`, `5m`, `1h`, or plain seconds.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().with_context(|| format!("{text:?} is not a duration (like 30s, 5m, 1h)"))?;
    let duration = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => bail!("{text:?} has an unknown unit (use ms, s, m or h)"),
    };
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("5 weeks").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn config_round_trip_and_unknown_keys_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = FileConfig { space: "ab".into(), peers: vec!["http://x".into()], ..FileConfig::default() };
        config.save(dir.path()).unwrap();
        assert_eq!(FileConfig::load(dir.path()).unwrap(), config);
        std::fs::write(dir.path().join(CONFIG_FILE), "space = \"ab\"\nbogus = 1\n").unwrap();
        assert!(FileConfig::load(dir.path()).is_err());
    }
}
