//! Node integration tests: real nodes, real RocksDB dirs, real gRPC on 127.0.0.1 port 0.

mod cli;
mod cli_defects;
mod crash_serve;
mod disk_full;
mod invitations;
mod paging;
mod public_relay;
mod refusals;
mod rights;
mod sealing;
mod spaces;
mod support;
mod topologies;
mod turmoil_sim;
