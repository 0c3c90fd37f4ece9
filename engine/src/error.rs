//! Typed errors, one enum per operation, and the umbrella [`Error`] they all convert into.

use crate::model::error::{EventError, OperationError, ParseIdError};
use crate::model::ids::{AuthorId, SpaceId};

/// A case command that cannot be carried out against the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// No case has this id (or id prefix).
    #[error("no case {0}")]
    UnknownCase(String),
    /// The id prefix matches several cases.
    #[error("case id prefix {0} is ambiguous")]
    AmbiguousCase(String),
    /// The case has no such entry.
    #[error("case has no entry {0}")]
    UnknownEntry(String),
    /// The command would change nothing or needs fields.
    #[error("{0}")]
    Invalid(&'static str),
    /// The operation is not valid.
    #[error(transparent)]
    Operation(#[from] OperationError),
    /// The store is catching up with a peer in bulk (its views lag until it ends): commands wait until
    /// the case views are rebuilt, so no write is planned against stale views.
    #[error("catching up with a peer ({0} events not yet in the case views): try again in a moment")]
    CatchingUp(u64),
}

/// A failure to open a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// RocksDB could not open the directory (locked by another process, damaged, no permission).
    #[error("cannot open the log store: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// The store was written by a newer casesync.
    #[error("the store has format version {found}, this casesync reads up to {supported}: upgrade casesync")]
    FormatTooNew {
        /// Version found on disk.
        found: u32,
        /// Newest version this build reads.
        supported: u32,
    },
    /// The store has column families this build does not know: written by a newer casesync.
    /// Nothing was opened or changed.
    #[error("the store has column families this casesync does not know ({0}): it was written by a newer casesync; upgrade casesync")]
    UnknownColumnFamilies(String),
    /// Stored state is inconsistent and cannot be used as it is.
    #[error("the store is damaged: {0} (run `replay-tool verify` or `replay-tool salvage`)")]
    Damaged(String),
    /// Filesystem error around the store (identity files, directories).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// A failure to read or write the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// RocksDB failed.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// An earlier write failed; the store refuses writes until it is reopened.
    #[error("the store refused a write after an earlier write failed; reopen it")]
    Poisoned,
    /// A stored record does not decode or verify.
    #[error("corrupt record in space {space}, author {}, seq {seq}: {reason}", author.device_id())]
    Corrupt {
        /// Space of the record.
        space: SpaceId,
        /// Author of the record.
        author: AuthorId,
        /// Seq of the record (0 for non-event records).
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// A file the store writes beside RocksDB's own (a bulk fold's spill files) failed.
    #[error("i/o error in the store's directory: {0}")]
    Io(std::io::Error),
}

/// Why a local append was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The event would be too large or malformed.
    #[error(transparent)]
    Event(#[from] EventError),
    /// A peer holds events of this device beyond the local head: writing now would fork the
    /// device's own chain.
    #[error("this device's own events up to seq {remote} exist elsewhere but only {local} are here: sync with a peer before writing (or continue as a new device)")]
    Fenced {
        /// Local head seq.
        local: u64,
        /// Highest seq seen elsewhere.
        remote: u64,
    },
    /// Nothing to append.
    #[error("empty append")]
    Empty,
}

/// The umbrella error of the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// See [`ParseIdError`].
    #[error(transparent)]
    ParseId(#[from] ParseIdError),
    /// See [`EventError`].
    #[error(transparent)]
    Event(#[from] EventError),
    /// See [`OperationError`].
    #[error(transparent)]
    Operation(#[from] OperationError),
    /// See [`CommandError`].
    #[error(transparent)]
    Command(#[from] CommandError),
    /// See [`OpenError`].
    #[error(transparent)]
    Open(#[from] OpenError),
    /// See [`StoreError`].
    #[error(transparent)]
    Store(#[from] StoreError),
    /// See [`AppendError`].
    #[error(transparent)]
    Append(#[from] AppendError),
}
