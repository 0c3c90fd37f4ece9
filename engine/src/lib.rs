//! casesync's engine: the whole product as a library, without networking.
//!
//! Every add, change, delete and archive of a case becomes a signed event (ed25519 over the
//! blake3 hash of its exact bytes), hash-chained per device, appended to a RocksDB log
//! ([`store::Store`]). Nodes summarise what they hold as [`model::vector_clock::VersionVector`]s
//! and exchange the ranges the other lacks ([`store::Store::events_after`],
//! [`store::Store::ingest`]). Projections fold events into case views with a merge that loses no
//! write ([`model::merge`]).
//!
//! The engine never opens a socket, reads the clock or spawns a task (a rebuild reads the log on a
//! scoped thread, joined before it returns): time and randomness come in as arguments, so two
//! stores can sync inside one plain test:
//!
//! ```
//! use casesync_engine::commands::Command;
//! use casesync_engine::model::{ids::{CaseId, SpaceId}, operation::FieldValue, signing::DeviceKey};
//! use casesync_engine::store::{Store, StoreOptions};
//! let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
//! let a = Store::open(dir_a.path(), StoreOptions::compatible())?;
//! let b = Store::open(dir_b.path(), StoreOptions::compatible())?;
//! let space = SpaceId([1; 16]);
//! let office = DeviceKey::from_secret([7; 32]);
//! let case = CaseId([2; 16]);
//! a.execute(&space, &office, 1_000, Command::CreateCase {
//!     id: case, fields: vec![("name".into(), FieldValue::Text("Ann".into()))] })?;
//! // B asks for what it lacks; A streams it; B ingests.
//! let missing: Vec<_> = a.events_after(&space, &b.vector(&space))
//!     .map(|r| r.map(|(_, _, e)| e)).collect::<Result<_, _>>()?;
//! b.ingest(&space, missing)?;
//! assert_eq!(a.state_hash(&space)?, b.state_hash(&space)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

// The layers, each importing only the ones above it in this list (the `tidy` crate's test
// keeps it so): the model, pure; its codecs; storage (RocksDB); the log and the projections, side by
// side and unaware of each other; the writer that commits them together; commands; and the
// store, the public face that delegates to all of them.
// 0
pub mod error;
pub mod model;
// 1
pub mod codec;
// 2
pub mod identity;
pub mod storage;
// 3
pub mod log;
pub mod projection;
// 4
pub(crate) mod writer;
// 5
pub mod commands;
// 6
pub mod store;
// 7: what the tests of every crate share
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
// 8: the fuzz targets' bodies, replayed by the tests too
#[cfg(any(test, feature = "testkit"))]
pub mod fuzz_targets;

pub use error::Error;
