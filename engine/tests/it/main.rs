//! Engine integration tests: one binary, one module per subject.

mod crash;
mod format;
mod group_commit;
mod ingest;
mod merge;
mod support;
