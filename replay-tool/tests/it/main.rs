//! replay-tool's integration tests: the real binary on real data dirs built with the engine API.

mod backup;
mod damage;
mod environment;
mod history;
mod support;
mod usage;
