//! The casesync node: the daemon's servers and peer tasks, the CLI's commands and the demo, as a
//! library so tests and benches run real nodes in-process.
//!
//! `node` is the only crate that speaks gRPC. It converts between wire messages and engine calls,
//! runs blocking storage work on tokio's blocking pool, and owns time, sockets and randomness.

// Input, disk and network reach a node everywhere: their failures are typed errors, never panics.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod api_token;
pub mod bulk_catch_up;
pub mod case_service;
pub mod cli;
pub mod config;
pub mod data_dir;
pub mod demo;
pub mod device_streams;
pub mod event_stream;
pub mod freed_memory;
pub mod grpc_status;
pub mod ingest_thread;
pub mod introduce;
pub mod invite;
pub mod join;
pub mod members_only;
pub mod message_room;
pub mod node;
pub mod output;
pub mod peer_actor;
pub mod pin;
pub mod refusals;
pub mod shared;
pub mod supervise;
pub mod sync_client;
pub mod sync_server;
pub mod tls;
pub mod transport;
pub mod views_pb;

pub use node::{Node, NodeConfig};
