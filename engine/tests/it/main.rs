//! Engine integration tests: one binary, one module per subject.

mod crash;
mod forged_metadata;
mod format;
mod fuzz_corpus;
mod group_commit;
mod history;
mod ingest;
mod membership;
mod merge;
mod mutation_sweep;
mod properties;
mod sealing;
mod simulation;
mod support;
