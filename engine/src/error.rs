//! Typed errors, one enum per operation, and the umbrella [`Error`] they all convert into.

use crate::ids::{AuthorId, SpaceId};

/// An identifier that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseIdError {
    /// The text is not hexadecimal.
    #[error("{kind} is not hex")]
    NotHex {
        /// Which kind of id.
        kind: &'static str,
    },
    /// The id has the wrong length.
    #[error("{kind} must be {expected} bytes, got {got}")]
    Length {
        /// Which kind of id.
        kind: &'static str,
        /// Expected length in bytes.
        expected: usize,
        /// Actual length in bytes.
        got: usize,
    },
}

/// Why a single event is not well formed (independent of any stored state).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The encoded event is larger than [`crate::limits::EVENT_BYTES_MAX`].
    #[error("event is {bytes} bytes, more than the limit of {max}")]
    TooLarge {
        /// Size of the encoded event.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes do not decode, or a header field has the wrong shape.
    #[error("malformed event: {0}")]
    Malformed(&'static str),
    /// The signature does not verify against the author's key.
    #[error("bad signature")]
    BadSignature,
}

/// Why an operation (the body of an event) is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OperationError {
    /// The body does not decode or names no operation.
    #[error("malformed operation: {0}")]
    Malformed(&'static str),
    /// A field name is empty, too long or has control characters.
    #[error("invalid field name {0:?}")]
    FieldName(String),
    /// A value does not fit its type (for example a date that is not YYYY-MM-DD).
    #[error("invalid {kind} value {text:?}")]
    Value {
        /// The value's type.
        kind: &'static str,
        /// The offending text.
        text: String,
    },
    /// Too many fields or dots in one operation.
    #[error("operation too large: {0}")]
    TooLarge(&'static str),
}

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
    /// The store is catching up with a peer in bulk (projections deferred): commands wait until
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
