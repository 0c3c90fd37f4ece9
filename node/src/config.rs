//! Node configuration: `casesync.toml` in the data dir, overridden by flags and environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use directories::ProjectDirs;
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
    /// The store's caches and buffers (block cache, memtables, bulk fold) within this many MiB
    /// (at least 24; default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<usize>,
    /// A CA-issued certificate chain (PEM) this node presents to peers instead of its device
    /// certificate: a relay reachable from the internet under its host name. With `tls_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Root certificates (PEM) trusted beside the web's for relays behind a CA-issued
    /// certificate (a practice's own CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_roots: Option<PathBuf>,
    /// The name of `space` on this node (default `main`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Further spaces this node holds and syncs (a colleague's practice it covers; a relay's
    /// other practices), each with its own peers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spaces: Vec<SpaceConfig>,
}

/// Another space a node holds, beside its first.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SpaceConfig {
    /// Its name on this node (`--space NAME`).
    pub name: String,
    /// The space id, hex.
    pub space: String,
    /// Peers to sync it with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
}

/// The name of a node's first space when its config names none.
pub const FIRST_SPACE_NAME: &str = "main";

/// One space of a node: its name, id and peers from the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpace {
    /// Its name on this node.
    pub name: String,
    /// The space.
    pub space: casesync_engine::model::ids::SpaceId,
    /// Its peers from the config (the first space's: `peers`).
    pub peers: Vec<String>,
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

    /// Every space of the node, the first (`space`) first; names are unique.
    pub fn node_spaces(&self) -> anyhow::Result<Vec<NodeSpace>> {
        use casesync_engine::model::ids::SpaceId;
        let first = SpaceId::from_hex(&self.space).context("casesync.toml has a malformed space")?;
        let mut out = vec![NodeSpace {
            name: self.name.clone().unwrap_or_else(|| FIRST_SPACE_NAME.to_string()),
            space: first,
            peers: self.peers.clone(),
        }];
        for extra in &self.spaces {
            let space = SpaceId::from_hex(&extra.space)
                .with_context(|| format!("casesync.toml: space {:?} has a malformed id", extra.name))?;
            if out.iter().any(|s| s.name == extra.name || s.space == space) {
                anyhow::bail!("casesync.toml names space {:?} ({}) twice", extra.name, extra.space);
            }
            out.push(NodeSpace { name: extra.name.clone(), space, peers: extra.peers.clone() });
        }
        Ok(out)
    }

    /// Writes the config of a data dir.
    pub fn save(&self, data: &Path) -> anyhow::Result<()> {
        let path = data.join(CONFIG_FILE);
        let text = toml::to_string_pretty(self).context("encoding the config")?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }
}

/// The default data dir: the platform's data directory for casesync (Linux: `$XDG_DATA_HOME/casesync`,
/// else `~/.local/share/casesync`; macOS: `~/Library/Application Support/casesync`; Windows:
/// `%APPDATA%\casesync\data`), else `casesync-data` in the working directory when there is no home
/// directory. `$CASESYNC_DATA` and `--data` override it (`cli.rs`).
pub fn default_data_dir() -> PathBuf {
    // `directories` rather than reading the variables here: it follows each platform's convention
    // (and the XDG rule that a relative `$XDG_DATA_HOME` is ignored), where the hand-written lookup
    // knew only Linux's.
    ProjectDirs::from("", "", "casesync")
        .map(|dirs| dirs.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from("casesync-data"))
}

/// Parses durations like `500ms`, `30s`, `5m`, `1h`, `1h 30m` (humantime's units), or plain seconds.
/// A duration too large to represent is an error.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let seconds: u64 = text.parse().with_context(|| format!("{text:?} seconds is too long a duration"))?;
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text).with_context(|| format!("{text:?} is not a duration (like 30s, 5m, 1h)"))
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
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration(" 1h 30m ").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn a_duration_too_large_is_an_error_not_an_overflow() {
        // u64::MAX / 60 + 1 minutes: more seconds than a u64 holds.
        for text in ["307445734561825861m", "5124095576030432h", "18446744073709551616", "99999999999999999999999s"] {
            let error = parse_duration(text).expect_err(text);
            assert!(format!("{error:#}").contains(text), "{text}: {error:#}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_default_data_dir_follows_xdg() {
        // Read, not set: changing the environment races with other threads of the test binary
        // (RocksDB's included) that read it.
        let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) else { return };
        let expected = match std::env::var_os("XDG_DATA_HOME").map(PathBuf::from) {
            // The XDG Base Directory spec: a relative path is ignored.
            Some(dir) if dir.is_absolute() => dir.join("casesync"),
            _ => PathBuf::from(home).join(".local/share/casesync"),
        };
        assert_eq!(default_data_dir(), expected);
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
