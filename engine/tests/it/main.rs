//! Engine integration tests: one binary, one module per subject.

mod crash;
mod forged_metadata;
mod format;
mod group_commit;
mod history;
mod ingest;
mod membership;
mod merge;
mod properties;
mod sealing;
mod simulation;
mod support;
