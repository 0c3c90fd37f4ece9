//! Reading the events of a possibly damaged store, tolerating errors: through [`Store`] when it
//! opens, else through RocksDB directly (read-only with paranoid checks off, and as a last resort
//! a repaired copy). Every unreadable record is reported with the author and seq it hides.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use casesync_engine::codec::keys::{
    author_key, be_u64, event_key, parse_event_key, prefix_end, ALL_CFS, CF_EVENTS, CF_HEADS, CF_MEMBERS,
};
use casesync_engine::model::event::SignedEvent;
use casesync_engine::model::ids::{AuthorId, EventId, SpaceId};
use casesync_engine::model::limits::SIGNATURE_BYTES;
use casesync_engine::model::vector_clock::Head;
use casesync_engine::model::vector_clock::VersionVector;
use casesync_engine::store::Store;
use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, DB};

/// One item of a tolerant scan, per space and author in seq order.
#[derive(Debug)]
pub enum Scanned {
    /// A record: the stored value (signature then event bytes).
    Event {
        /// The space in the key.
        space: SpaceId,
        /// The author in the key.
        author: AuthorId,
        /// The seq in the key.
        seq: u64,
        /// The stored value.
        stored: Vec<u8>,
    },
    /// Reading failed at this seq of this chain; the rest of the chain is skipped.
    Unreadable {
        /// The space.
        space: SpaceId,
        /// The author.
        author: AuthorId,
        /// The first seq that could not be read.
        seq: u64,
        /// What the storage said.
        reason: String,
    },
    /// Reading failed where no key could be attributed.
    UnreadableRegion {
        /// What the storage said.
        reason: String,
    },
}

/// How the events were reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// The store opened normally.
    Store,
    /// RocksDB opened read-only with paranoid checks off.
    ReadOnly,
    /// RocksDB opened only after `RepairDB` on a copy.
    RepairedCopy,
}

/// A source of events.
#[allow(clippy::large_enum_variant)] // One per run of the tool: boxing would buy nothing.
pub enum Source {
    /// An open store.
    Store(Store),
    /// RocksDB opened directly.
    Raw {
        /// The database.
        db: DB,
        /// How it was opened.
        access: Access,
    },
}

fn raw_options() -> Options {
    let mut options = casesync_engine::storage::families::direct_open_options();
    options.set_paranoid_checks(false);
    options.set_skip_stats_update_on_db_open(true);
    options
}

/// The column families to open: those the manifest lists (a repaired copy may lack empty ones),
/// else every one the store creates.
fn existing_cfs(path: &Path) -> Vec<String> {
    if let Ok(listed) = DB::list_cf(&raw_options(), path) {
        return listed;
    }
    let mut names: BTreeSet<String> = ALL_CFS.iter().map(|s| s.to_string()).collect();
    names.insert("default".into());
    names.into_iter().collect()
}

/// The families to open, each with the options the store gives it (the `case_parts` family's merge
/// operator).
fn descriptors(path: &Path) -> Vec<ColumnFamilyDescriptor> {
    existing_cfs(path)
        .into_iter()
        .map(|name| {
            let options = casesync_engine::storage::families::column_family_options(&name);
            ColumnFamilyDescriptor::new(name, options)
        })
        .collect()
}

/// Opens RocksDB read-only with paranoid checks off; if that fails and `work` is given, copies
/// the files into `work`, runs RocksDB's repair on the copy and opens that (the original is
/// never written).
pub fn open_raw(path: &Path, work: Option<&Path>) -> anyhow::Result<Source> {
    let read_only = DB::open_cf_descriptors_read_only(&raw_options(), path, descriptors(path), false);
    let first_error = match read_only {
        Ok(db) => return Ok(Source::Raw { db, access: Access::ReadOnly }),
        Err(e) => e,
    };
    let Some(work) = work else {
        return Err(first_error).context("RocksDB cannot open the store even read-only");
    };
    tracing::warn!(error = %first_error, "read-only open failed: repairing a copy");
    open_repaired(path, work)
}

/// Copies the files of a store into `work`, runs RocksDB's repair on the copy (which drops what
/// it cannot read and rebuilds the manifest from the files that remain) and opens the copy.
pub fn open_repaired(path: &Path, work: &Path) -> anyhow::Result<Source> {
    let copy = work.join("repair-copy");
    if copy.exists() {
        std::fs::remove_dir_all(&copy).with_context(|| format!("clearing {}", copy.display()))?;
    }
    copy_dir(path, &copy)?;
    let mut options = raw_options();
    options.create_if_missing(false);
    DB::repair(&options, &copy).context("RocksDB repair of the copy failed")?;
    let db = DB::open_cf_descriptors_read_only(&raw_options(), &copy, descriptors(&copy), false)
        .context("the repaired copy does not open")?;
    Ok(Source::Raw { db, access: Access::RepairedCopy })
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() && entry.file_name() != "LOCK" {
            let target: PathBuf = to.join(entry.file_name());
            if let Err(e) = std::fs::copy(entry.path(), &target) {
                tracing::warn!(file = %entry.path().display(), error = %e, "file not copied for repair");
            }
        }
    }
    Ok(())
}

impl Source {
    /// How the events are reached.
    pub fn access(&self) -> Access {
        match self {
            Source::Store(_) => Access::Store,
            Source::Raw { access, .. } => *access,
        }
    }

    /// Heads as recorded (those that read). Problems are returned as text.
    pub fn heads(&self) -> (BTreeMap<(SpaceId, AuthorId), Head>, Vec<String>) {
        let mut heads = BTreeMap::new();
        let mut problems = Vec::new();
        match self {
            Source::Store(store) => {
                for space in store.spaces() {
                    for (author, _) in store.vector(&space).iter() {
                        if let Some(head) = store.head(&space, author) {
                            heads.insert((space, *author), head);
                        }
                    }
                }
            }
            Source::Raw { db, .. } => {
                let Some(cf) = db.cf_handle(CF_HEADS) else {
                    problems.push("no heads column family".into());
                    return (heads, problems);
                };
                for item in db.iterator_cf(cf, IteratorMode::Start) {
                    match item {
                        Ok((key, value)) if key.len() == 48 && value.len() == 40 => {
                            let (Ok(space), Ok(author), Some(seq), Ok(link)) = (
                                SpaceId::from_slice(&key[..16]),
                                AuthorId::from_slice(&key[16..]),
                                be_u64(&value[..8]),
                                EventId::from_slice(&value[8..]),
                            ) else {
                                continue;
                            };
                            heads.insert((space, author), Head { seq, link });
                        }
                        Ok(_) => problems.push("a head record is malformed".into()),
                        Err(e) => {
                            problems.push(format!("heads unreadable: {e}"));
                            break;
                        }
                    }
                }
            }
        }
        (heads, problems)
    }

    /// Known device names (those that read).
    pub fn members(&self) -> Vec<(SpaceId, AuthorId, String)> {
        let mut out = Vec::new();
        match self {
            Source::Store(store) => {
                for space in store.spaces() {
                    if let Ok(members) = store.members(&space) {
                        out.extend(members.into_iter().map(|(a, n)| (space, a, n)));
                    }
                }
            }
            Source::Raw { db, .. } => {
                let Some(cf) = db.cf_handle(CF_MEMBERS) else { return out };
                for item in db.iterator_cf(cf, IteratorMode::Start) {
                    let Ok((key, value)) = item else { break };
                    if let (Ok(space), Ok(author)) = (
                        SpaceId::from_slice(key.get(..16).unwrap_or(&[])),
                        AuthorId::from_slice(key.get(16..).unwrap_or(&[])),
                    ) {
                        out.push((space, author, String::from_utf8_lossy(&value).into_owned()));
                    }
                }
            }
        }
        out
    }

    /// Visits every readable event record, per space and author in key order. After a read
    /// error the rest of that author's chain is skipped and reported as unreadable.
    pub fn scan(&self, visit: &mut dyn FnMut(Scanned) -> anyhow::Result<()>) -> anyhow::Result<()> {
        match self {
            Source::Store(store) => scan_store(store, visit),
            Source::Raw { db, .. } => {
                let (heads, _) = self.heads();
                scan_raw(db, &heads, visit)
            }
        }
    }
}

fn scan_store(store: &Store, visit: &mut dyn FnMut(Scanned) -> anyhow::Result<()>) -> anyhow::Result<()> {
    for space in store.spaces() {
        let vector = store.vector(&space);
        for (author, _) in vector.iter() {
            // Everything of the other authors counts as held: only this author's chain streams.
            let mut have: VersionVector = vector.clone();
            have.set(*author, 0);
            let mut expected = 1;
            for item in store.events_after(&space, &have) {
                match item {
                    Ok((_, seq, message)) => {
                        let mut stored = Vec::with_capacity(SIGNATURE_BYTES + message.event.len());
                        stored.extend_from_slice(&message.signature);
                        stored.extend_from_slice(&message.event);
                        visit(Scanned::Event { space, author: *author, seq, stored })?;
                        expected = seq + 1;
                    }
                    Err(e) => {
                        visit(Scanned::Unreadable { space, author: *author, seq: expected, reason: e.to_string() })?;
                        break;
                    }
                }
            }
        }
    }
    Ok(())
}

fn scan_raw(
    db: &DB,
    heads: &BTreeMap<(SpaceId, AuthorId), Head>,
    visit: &mut dyn FnMut(Scanned) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let Some(cf) = db.cf_handle(CF_EVENTS) else {
        visit(Scanned::UnreadableRegion { reason: "no events column family".into() })?;
        return Ok(());
    };
    // 1. Discover the chains and how far each reaches: the heads, plus every key an iterator
    //    can still reach. After a read error, resume past the chain it happened in (or at the
    //    next known chain).
    let mut chains: BTreeMap<(SpaceId, AuthorId), u64> = heads.iter().map(|(k, h)| (*k, h.seq)).collect();
    let mut discovery_errors = Vec::new();
    let mut start: Vec<u8> = Vec::new();
    loop {
        let mut last: Option<(SpaceId, AuthorId)> = None;
        let mut failure = None;
        for item in db.iterator_cf(cf, IteratorMode::From(&start, rocksdb::Direction::Forward)) {
            match item {
                Ok((key, _)) => {
                    let Some((space, author, seq)) = parse_event_key(&key) else { continue };
                    let end = chains.entry((space, author)).or_insert(seq);
                    *end = (*end).max(seq);
                    last = Some((space, author));
                }
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        let Some(reason) = failure else { break };
        discovery_errors.push(reason);
        let next = match last {
            Some((space, author)) => prefix_end(&author_key(&space, &author)),
            None => {
                let after = chains.keys().map(|(s, a)| author_key(s, a).to_vec()).find(|prefix| *prefix > start);
                match after {
                    Some(prefix) => prefix,
                    None => break,
                }
            }
        };
        if next <= start {
            break;
        }
        start = next;
    }
    // 2. Walk every chain by point reads, which only touch the files whose key range covers
    //    each key: a broken file hides only its own keys.
    let mut any_chain_failed = false;
    for ((space, author), end) in &chains {
        for seq in 1.. {
            match db.get_cf(cf, event_key(space, author, seq)) {
                Ok(Some(stored)) => visit(Scanned::Event { space: *space, author: *author, seq, stored })?,
                Ok(None) => {
                    if seq <= *end {
                        any_chain_failed = true;
                        let reason = "missing".to_string();
                        visit(Scanned::Unreadable { space: *space, author: *author, seq, reason })?;
                    }
                    break;
                }
                Err(e) => {
                    any_chain_failed = true;
                    visit(Scanned::Unreadable { space: *space, author: *author, seq, reason: e.to_string() })?;
                    break;
                }
            }
        }
    }
    // Read errors no chain accounts for: damage whose chain cannot be named.
    if !any_chain_failed {
        for reason in discovery_errors {
            visit(Scanned::UnreadableRegion { reason })?;
        }
    }
    Ok(())
}

/// Decodes a scanned record into an event whose header matches its key.
pub fn decode_record(author: &AuthorId, seq: u64, stored: &[u8]) -> Result<SignedEvent, String> {
    let event = SignedEvent::from_stored(stored).map_err(|e| e.to_string())?;
    if event.header.author != *author || event.header.seq != seq {
        return Err("the record's header names another author or seq than its key".into());
    }
    Ok(event)
}
