//! Typed errors, one enum per operation, and the umbrella [`Error`] they all convert into.
//! [`StorageFault`] says what a storage failure means for the operator's next step.

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
    /// The space's bodies are sealed and this device holds none of its data keys (or is locked):
    /// an admin's node shares the key with it when they next sync.
    #[error("this device holds no data key of the space yet (locked, or an admin's node has not shared it): unlock with the PIN, or sync with an admin's device")]
    NoDataKey,
    /// A body could not be sealed.
    #[error(transparent)]
    Seal(#[from] crate::model::sealing::SealError),
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
    /// The store opened, but bringing its projections up to date (a catch-up fold) failed.
    #[error("bringing the case views up to date failed: {0}")]
    CatchUp(#[source] StoreError),
}

impl OpenError {
    /// What the failure means for the operator, when it is a storage failure; `None` for the
    /// failures this build diagnoses itself (format too new, unknown column families).
    pub fn fault(&self) -> Option<StorageFault> {
        match self {
            OpenError::Rocks(e) => Some(StorageFault::of_rocksdb(e)),
            OpenError::Damaged(_) => Some(StorageFault::Corruption),
            OpenError::Io(e) => Some(StorageFault::of_io(e)),
            OpenError::CatchUp(e) => e.fault(),
            OpenError::FormatTooNew { .. } | OpenError::UnknownColumnFamilies(_) => None,
        }
    }
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

impl StoreError {
    /// What the failure means for the operator; `None` for a store poisoned by an earlier
    /// failure (that failure was reported with its own fault).
    pub fn fault(&self) -> Option<StorageFault> {
        match self {
            StoreError::Rocks(e) => Some(StorageFault::of_rocksdb(e)),
            StoreError::Corrupt { .. } => Some(StorageFault::Corruption),
            StoreError::Io(e) => Some(StorageFault::of_io(e)),
            StoreError::Poisoned => None,
        }
    }
}

/// What a storage failure means for the operator's next step: salvage, free space, or fix the
/// environment. Read from RocksDB's status code (`rocksdb::Error::kind`), never from words of
/// its message, except for the one sub-case below that the code does not carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageFault {
    /// Stored data is damaged (a checksum mismatch, a truncated or missing table file, a record
    /// that does not decode): `replay-tool verify` names it, `replay-tool salvage` recovers.
    Corruption,
    /// The disk (or the space RocksDB may use) is full: nothing is damaged; free space and retry.
    NoSpace,
    /// A file or directory the store expected is missing. In a store that exists, a file its
    /// manifest names is gone, which is damage; elsewhere (a directory removed under a running
    /// process) it may not be.
    MissingFile,
    /// Any other I/O failure: permission denied, a read-only file system, the store locked by
    /// another process, a failing device.
    Io,
    /// Anything else RocksDB reports (busy, invalid argument, aborted, ...).
    Other,
}

impl StorageFault {
    /// The fault of a RocksDB error.
    pub fn of_rocksdb(error: &rocksdb::Error) -> StorageFault {
        StorageFault::of_status(error.kind(), error.as_ref())
    }

    /// The fault of RocksDB's status code and its status text.
    ///
    /// A full disk is `IOError` with the sub-code `kNoSpace` (`kSpaceLimit` when RocksDB's own
    /// space limit is reached), a missing file `IOError` with `kPathNotFound`. The C API hands
    /// over only the status as text, and the crate parses the code from it (`kind()`), not the
    /// sub-code; RocksDB's `Status::ToString` writes the sub-code's fixed text right after the
    /// code's ("IO error: No space left on device: While appending to file: ..."), so the
    /// sub-code is read from there and nowhere else (a path or errno text later in the message
    /// decides nothing). The rest of `IOError` (permission, lock, device) has no sub-code and
    /// needs the same next step from the operator, fixing the environment, not the data.
    fn of_status(kind: rocksdb::ErrorKind, message: &str) -> StorageFault {
        // `msgs[]` in RocksDB's util/status.cc.
        const NO_SPACE_SUBCODES: [&str; 2] = ["No space left on device", "Space limit reached"];
        const PATH_NOT_FOUND_SUBCODE: &str = "No such file or directory";
        match kind {
            rocksdb::ErrorKind::Corruption => StorageFault::Corruption,
            rocksdb::ErrorKind::IOError => {
                let subcode = message.split_once(": ").map_or("", |(_, rest)| rest);
                if NO_SPACE_SUBCODES.iter().any(|text| subcode.starts_with(text)) {
                    StorageFault::NoSpace
                } else if subcode.starts_with(PATH_NOT_FOUND_SUBCODE) {
                    StorageFault::MissingFile
                } else {
                    StorageFault::Io
                }
            }
            _ => StorageFault::Other,
        }
    }

    /// The fault of a file-system error around the store (by its `ErrorKind`, not its text).
    pub fn of_io(error: &std::io::Error) -> StorageFault {
        match error.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => StorageFault::NoSpace,
            std::io::ErrorKind::NotFound => StorageFault::MissingFile,
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => StorageFault::Corruption,
            _ => StorageFault::Io,
        }
    }
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
    /// The space's membership does not let this device write that (it is a reader, revoked,
    /// expired, not yet a member, or not an admin for a membership change).
    #[error("not allowed: {0}")]
    NotAllowed(#[from] crate::model::membership::Refusal),
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

impl Error {
    /// What a storage failure underneath this error means for the operator (`None` when the
    /// error is not a storage failure).
    pub fn fault(&self) -> Option<StorageFault> {
        match self {
            Error::Open(e) => e.fault(),
            Error::Store(e) | Error::Append(AppendError::Store(e)) => e.fault(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocksdb::ErrorKind;

    /// Status texts as RocksDB 11's `Status::ToString` writes them.
    #[test]
    fn faults_from_rocksdb_statuses() {
        let cases = [
            (
                ErrorKind::IOError,
                "IO error: No space left on device: While appending to file: /d/db/000012.log: No space left on device",
                StorageFault::NoSpace,
            ),
            (ErrorKind::IOError, "IO error: Space limit reached: Max allowed space was reached", StorageFault::NoSpace),
            (ErrorKind::IOError, "IO error: While open a file for appending: /d/db/LOCK: Permission denied", StorageFault::Io),
            (ErrorKind::IOError, "IO error: While lock file: /d/db/LOCK: Resource temporarily unavailable", StorageFault::Io),
            (
                ErrorKind::IOError,
                "IO error: No such file or directory: While opening a file for sequentially reading: /d/db/MANIFEST-000005: No such file or directory",
                StorageFault::MissingFile,
            ),
            // Words of a path or an errno text elsewhere in the message decide nothing.
            (ErrorKind::IOError, "IO error: While appending to file: /No space left on device/x: Input/output error", StorageFault::Io),
            (ErrorKind::Corruption, "Corruption: block checksum mismatch: stored = 1, computed = 2", StorageFault::Corruption),
            (ErrorKind::Corruption, "Corruption: IO error: No space left on device: while reading", StorageFault::Corruption),
            (ErrorKind::InvalidArgument, "Invalid argument: /d/db/CURRENT: does not exist (create_if_missing is false)", StorageFault::Other),
            (ErrorKind::Busy, "Resource busy: ", StorageFault::Other),
        ];
        for (kind, message, fault) in cases {
            assert_eq!(StorageFault::of_status(kind, message), fault, "{message}");
        }
    }

    #[test]
    fn faults_from_io_errors_by_kind() {
        use std::io::{Error as IoError, ErrorKind as IoKind};
        assert_eq!(StorageFault::of_io(&IoError::from(IoKind::StorageFull)), StorageFault::NoSpace);
        assert_eq!(StorageFault::of_io(&IoError::from_raw_os_error(28)), StorageFault::NoSpace, "ENOSPC");
        assert_eq!(StorageFault::of_io(&IoError::from(IoKind::PermissionDenied)), StorageFault::Io);
        assert_eq!(StorageFault::of_io(&IoError::from(IoKind::InvalidData)), StorageFault::Corruption);
    }

    #[test]
    fn faults_reach_the_umbrella_error() {
        let full = StoreError::Io(std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert_eq!(Error::from(AppendError::from(full)).fault(), Some(StorageFault::NoSpace));
        let caught_up = OpenError::CatchUp(StoreError::Io(std::io::Error::from(std::io::ErrorKind::StorageFull)));
        assert_eq!(caught_up.fault(), Some(StorageFault::NoSpace));
        assert_eq!(OpenError::Damaged("x".into()).fault(), Some(StorageFault::Corruption));
        assert_eq!(Error::from(StoreError::Poisoned).fault(), None);
        assert_eq!(Error::from(CommandError::Invalid("x")).fault(), None);
    }
}
