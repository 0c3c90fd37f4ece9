//! What a user can type: the `casesync` command line's arguments, subcommands and their help.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// casesync: offline-first case sync for small practices.
#[derive(Parser, Debug)]
#[command(name = "casesync", version, about)]
pub struct Cli {
    /// The node's data dir (default: $XDG_DATA_HOME/casesync or ~/.local/share/casesync).
    #[arg(long, global = true, env = "CASESYNC_DATA")]
    pub data: Option<PathBuf>,
    /// Print results as JSON (one document per line) for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    /// The space to work in, by its name on this node (`casesync space list`); default: the
    /// node's first. With `init`: the id (hex) of an existing space to join.
    #[arg(long, global = true, env = "CASESYNC_SPACE")]
    pub space: Option<String>,
    #[command(subcommand)]
    pub command: Commands,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Commands {
    /// Create a node's data dir: device key, config, and a new space (or join one with --space).
    Init(InitArgs),
    /// Run the daemon: serve peers and local applications, sync with peers live.
    Serve(ServeArgs),
    /// This node and its peers: connected, syncing, offline; last sync; events waiting.
    Status,
    /// Sync now with one peer (or every configured peer), both directions, then exit.
    Sync {
        /// Peer URL, like http://192.0.2.1:7000 (default: every peer in casesync.toml).
        #[arg(long)]
        peer: Option<String>,
    },
    /// The space's devices: list, grant a role, revoke.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Invite a new device (admins only): prints a one-time code for `casesync join`.
    Invite {
        /// writer (cases), reader (reads only), admin, relay.
        #[arg(long, default_value = "writer")]
        role: String,
        /// The grant it gives ends then: a date (its whole day, UTC) or a time.
        #[arg(long, value_parser = parse_until)]
        until: Option<u64>,
        /// The code is usable for this long (like 30m, 24h, 7d; at most 30 days).
        #[arg(long, default_value = "24h")]
        expires: String,
        /// Where the new device connects (default: the first configured peer).
        #[arg(long)]
        via: Option<String>,
    },
    /// The spaces this node holds: each one's name, id and this device's role in it.
    #[command(subcommand)]
    Space(SpaceCommand),
    /// Enrol this computer with a code from `casesync invite`, and fetch the whole space.
    Join {
        /// The code.
        code: String,
        /// This device's name, shown in history and audit.
        #[arg(long, default_value = "casesync-device")]
        name: String,
        /// On a node that holds a space already: the name of the space it joins (a colleague's
        /// practice it covers).
        #[arg(long = "as")]
        space_name: Option<String>,
    },
    /// This device's self-fork fence: shown, or cleared with --clear.
    ///
    /// When a peer shows (with the signed events) that it holds this device's own events beyond
    /// the local head (a computer restored from an old copy), local writes wait until a sync has
    /// fetched them: a write before would reuse their seqs and fork this device's chain. Clear
    /// the fence only if those events are lost for good: if they still exist anywhere, every
    /// other device refuses this device's writes from the forked seq on.
    Fence {
        /// Remove the fence and let this device write again.
        #[arg(long)]
        clear: bool,
    },
    /// Cases: add, change, delete, archive, restore, show, list, history, conflicts.
    #[command(subcommand)]
    Case(CaseCommand),
    /// Entries of a case (session notes, appointments, documents' metadata).
    #[command(subcommand)]
    Entry(EntryCommand),
    /// The practice PIN the device key is sealed under: change it.
    #[command(subcommand)]
    Pin(PinCommand),
    /// Run a relay and three devices on this machine, edit offline on two, and show they converge.
    Demo {
        /// Keep the demo's data dirs here instead of a temporary directory.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
}

/// `casesync init`.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// This device's name, shown in history and audit ("office", "laptop").
    #[arg(long, default_value = "casesync-device")]
    pub name: String,
    /// Make this node a relay: it stores and forwards events, holds no case views.
    #[arg(long)]
    pub relay: bool,
    /// Address to serve peers on, saved in casesync.toml.
    #[arg(long)]
    pub listen: Option<String>,
}

/// `casesync serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to serve peers on (default from casesync.toml, else 127.0.0.1:7000).
    #[arg(long, env = "CASESYNC_LISTEN")]
    pub listen: Option<String>,
    /// Loopback address of the local case API (default: a free port, written to daemon.json).
    #[arg(long, env = "CASESYNC_API", default_value = "127.0.0.1:0")]
    pub api: String,
    /// Peer to sync with (repeatable; added to those in casesync.toml).
    #[arg(long = "peer")]
    pub peers: Vec<String>,
    /// Also check each peer's heads on this schedule (like 30s, 5m).
    #[arg(long, env = "CASESYNC_PULL_EVERY")]
    pub pull_every: Option<String>,
    /// Store and forward only.
    #[arg(long)]
    pub relay: bool,
    /// Keep the store's caches and buffers (block cache, memtables, bulk fold) within this many
    /// MiB (at least 24; default from casesync.toml's memory_mib, else 64). Lower may be slower,
    /// never wrong.
    #[arg(long, env = "CASESYNC_MEMORY_MIB")]
    pub memory_mib: Option<usize>,
}

/// `casesync space ...`.
#[derive(Subcommand, Debug)]
pub enum PinCommand {
    /// Seal the device key under a new PIN: the current one from CASESYNC_PIN, CASESYNC_PIN_FILE
    /// or the terminal, the new one from CASESYNC_NEW_PIN or the terminal (asked twice). Stop
    /// the daemon first; other devices keep their own PIN.
    Change,
}

/// `casesync space ...`.
#[derive(Subcommand, Debug)]
pub enum SpaceCommand {
    /// Every space: name, id, this device's role, events held.
    List,
    /// Hold and sync one more space (a relay's further practice; a space to be granted in).
    Add {
        /// Its name on this node.
        name: String,
        /// The space id (hex).
        #[arg(long = "id")]
        id: String,
        /// A peer to sync it with (repeatable).
        #[arg(long = "peer")]
        peers: Vec<String>,
    },
}

/// `casesync device ...`.
#[derive(Subcommand, Debug)]
pub enum DeviceCommand {
    /// This device's id and key (give the key to the other devices).
    Show,
    /// Give a device a role in the space (admins only): a signed event every node, the relay
    /// included, enforces.
    #[command(alias = "add")]
    Grant {
        /// The device's key (hex), from its `casesync device show`.
        key: String,
        /// admin (cases and membership), writer (cases), reader (reads only), relay (forwards).
        #[arg(long, default_value = "writer")]
        role: String,
        /// A name for it.
        #[arg(long, default_value = "")]
        name: String,
        /// The grant ends then: a date (the whole day counts, UTC) like 2027-01-15, or a time
        /// like 2027-01-15T18:00:00Z (a colleague covering until a date).
        #[arg(long, value_parser = parse_until)]
        until: Option<u64>,
    },
    /// Shut a device out (admins only): its events beyond those this node holds never count,
    /// and it can no longer sync with any node.
    Revoke {
        /// The device's key (hex).
        key: String,
    },
    /// The space's devices: role, who granted it and when, revocations.
    List,
}

/// `casesync case ...`.
#[derive(Subcommand, Debug)]
pub enum CaseCommand {
    /// Create a case: `case add name=Ann phone=555 born=date:1980-02-01`.
    Add {
        /// FIELD=VALUE pairs; VALUE may be typed: int:, dec:, bool:, date:, hex:, text:.
        fields: Vec<String>,
    },
    /// Set fields of a case.
    Set {
        /// Case id or a unique prefix (4+ hex digits).
        case: String,
        /// FIELD=VALUE pairs.
        #[arg(required = true)]
        fields: Vec<String>,
    },
    /// Delete a case (restore brings it back).
    Delete {
        /// Case id or prefix.
        case: String,
    },
    /// Archive a case.
    Archive {
        /// Case id or prefix.
        case: String,
    },
    /// Unarchive a case.
    Unarchive {
        /// Case id or prefix.
        case: String,
    },
    /// Restore a deleted case with every field.
    Restore {
        /// Case id or prefix.
        case: String,
    },
    /// Show a case, with conflicts.
    Show {
        /// Case id or prefix.
        case: String,
    },
    /// List cases.
    List {
        /// Only active, archived or deleted cases.
        #[arg(long)]
        status: Option<String>,
        /// Only cases with conflicts.
        #[arg(long)]
        conflicts: bool,
        /// Only cases whose field equals a value: FIELD=VALUE.
        #[arg(long = "where")]
        filter: Option<String>,
    },
    /// Every change of a case: when, which device, what.
    History {
        /// Case id or prefix.
        case: String,
    },
    /// Conflicts (of one case, or all).
    Conflicts {
        /// Case id or prefix.
        case: Option<String>,
    },
}

/// `casesync entry ...`.
#[derive(Subcommand, Debug)]
pub enum EntryCommand {
    /// Add an entry to a case.
    Add {
        /// Case id or prefix.
        case: String,
        /// FIELD=VALUE pairs.
        fields: Vec<String>,
    },
    /// Update an entry's fields.
    Update {
        /// Case id or prefix.
        case: String,
        /// Entry id (hex).
        entry: String,
        /// FIELD=VALUE pairs.
        #[arg(required = true)]
        fields: Vec<String>,
    },
    /// Remove an entry.
    Remove {
        /// Case id or prefix.
        case: String,
        /// Entry id (hex).
        entry: String,
    },
    /// Bring a removed entry back.
    Restore {
        /// Case id or prefix.
        case: String,
        /// Entry id (hex).
        entry: String,
    },
}

/// `--until`: a date (its whole day, UTC) or a time, as ms since the epoch.
pub fn parse_until(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let end = if let Ok(date) = text.parse::<jiff::civil::Date>() {
        date.tomorrow()
            .and_then(|next| jiff::tz::Offset::UTC.to_timestamp(next.to_datetime(jiff::civil::Time::midnight())))
    } else {
        text.parse::<jiff::Timestamp>()
    };
    let end = end.map_err(|_| format!("{text:?} is not a date (2027-01-15) or a time (2027-01-15T18:00:00Z)"))?;
    u64::try_from(end.as_millisecond()).map_err(|_| format!("{text:?} is before 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_takes_a_whole_day_or_a_time_and_refuses_the_rest() {
        assert_eq!(parse_until("2027-01-15").unwrap(), 1_800_057_600_000);
        assert_eq!(parse_until("2027-01-15T18:00:00Z").unwrap(), 1_800_036_000_000);
        for bad in ["tomorrow", "2027-02-30", "", "1969-01-01"] {
            assert!(parse_until(bad).is_err(), "{bad}");
        }
    }
}
