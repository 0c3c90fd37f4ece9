//! Engine errors and ingest refusals to gRPC statuses, in one place.

use casesync_engine::error::{AppendError, CommandError, StoreError};
use casesync_engine::log::ingest::{RejectReason, Rejection};
use casesync_engine::model::error::EventError;
use casesync_engine::Error;
use tonic::Status;

/// A storage failure.
pub fn store(error: &StoreError) -> Status {
    match error {
        StoreError::Poisoned => Status::unavailable(error.to_string()),
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
        RejectReason::Gap { .. } | RejectReason::Fork { .. } => Status::failed_precondition(message),
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
