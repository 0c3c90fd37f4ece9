//! Engine errors and ingest refusals to gRPC statuses, in one place.

use casesync_engine::error::{AppendError, CommandError, StorageFault, StoreError};
use casesync_engine::log::ingest::{RejectReason, Rejection};
use casesync_engine::model::error::EventError;
use casesync_engine::Error;
use tonic::Status;

/// What to tell the user when a store write failed because the disk is full.
pub const DISK_FULL: &str = "disk full: free space on the data dir's disk, then try again";

/// A storage failure.
pub fn store(error: &StoreError) -> Status {
    match error {
        StoreError::Poisoned => Status::unavailable(error.to_string()),
        _ if error.fault() == Some(StorageFault::NoSpace) => {
            Status::resource_exhausted(format!("{DISK_FULL} ({error})"))
        }
        _ => Status::internal(format!("storage: {error}")),
    }
}

/// An engine error from a case command.
pub fn engine(error: &Error) -> Status {
    match error {
        Error::Command(CommandError::UnknownCase(_) | CommandError::UnknownEntry(_)) => {
            Status::not_found(error.to_string())
        }
        Error::Command(_) | Error::Operation(_) | Error::ParseId(_) | Error::Event(_) => {
            Status::invalid_argument(error.to_string())
        }
        Error::Append(AppendError::Fenced { .. }) => Status::failed_precondition(error.to_string()),
        Error::Append(AppendError::NotAllowed(_)) => Status::permission_denied(error.to_string()),
        Error::Append(AppendError::Store(e)) | Error::Store(e) => store(e),
        _ => Status::internal(error.to_string()),
    }
}

/// The first refusal of an ingest (the honest runs of the batch have landed already).
pub fn rejection(rejection: &Rejection) -> Status {
    let who = match rejection.author {
        Some(author) => format!("event by {} seq {}", author.device_id(), rejection.seq),
        None => "an event".to_string(),
    };
    let message = format!("{who} refused: {}", rejection.reason);
    match &rejection.reason {
        RejectReason::Event(EventError::BadSignature) => Status::unauthenticated(message),
        RejectReason::Event(EventError::TooLarge { .. }) => Status::resource_exhausted(message),
        RejectReason::Gap { .. } | RejectReason::Fork { .. } | RejectReason::ClockAhead { .. } => {
            Status::failed_precondition(message)
        }
        RejectReason::NotCounted(_) | RejectReason::Quarantined { .. } => Status::permission_denied(message),
        _ => Status::invalid_argument(message),
    }
}

/// A task that did not finish (panicked or was cancelled).
pub fn join(error: tokio::task::JoinError) -> Status {
    Status::internal(format!("internal task failed: {error}"))
}

/// An ingest that did not finish (the node is stopping, or a bug panicked it).
pub fn ingest_thread(error: crate::ingest_thread::IngestThreadError) -> Status {
    match error {
        crate::ingest_thread::IngestThreadError::Stopped => Status::unavailable("node is stopping"),
        crate::ingest_thread::IngestThreadError::Panicked => Status::internal(format!("internal task failed: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk_full() -> StoreError {
        StoreError::Io(std::io::Error::from(std::io::ErrorKind::StorageFull))
    }

    #[test]
    fn a_write_that_found_the_disk_full_says_so() {
        for status in [
            store(&disk_full()),
            engine(&Error::Append(AppendError::Store(disk_full()))),
            engine(&Error::Store(disk_full())),
        ] {
            assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
            assert!(status.message().starts_with("disk full: free space"), "{status:?}");
        }
    }

    #[test]
    fn other_storage_failures_stay_internal() {
        let denied = StoreError::Io(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        let status = store(&denied);
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("disk full"), "{status:?}");
        assert_eq!(store(&StoreError::Poisoned).code(), tonic::Code::Unavailable);
    }
}
