//! Engine integration tests: one binary, one module per subject.

mod crash;
mod ingest;
mod merge;
mod support;
