//! The model: what events, operations, registers and cases are, and the merge that folds them.
//! Pure: no RocksDB, no I/O, no clock; every function here is testable in microseconds.
//! Nothing in this layer imports from the layers above it (`codec`, `storage`, `log`,
//! `projection`, `store`, `commands`).

pub mod error;
pub mod event;
pub mod field_map;
pub mod hlc;
pub mod ids;
pub mod limits;
pub mod membership;
pub mod merge;
pub mod operation;
pub(crate) mod plain_fields;
pub mod sealing;
pub mod signing;
pub mod state_hash;
pub(crate) mod stream_hash;
pub mod vector_clock;
pub mod verify;
pub mod views;
