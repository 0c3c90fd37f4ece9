//! The scenarios: each sets up its nodes (untimed), measures one thing and checks that the nodes
//! agree (event counts and state hashes).

pub mod catch_up;
pub mod growth;
pub mod hostile;
pub mod incremental;
pub mod limits;
pub mod replay;
pub mod small_syncs;
pub mod spaces;
