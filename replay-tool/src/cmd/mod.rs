//! One file per subcommand.

pub mod at;
pub mod audit;
pub mod export;
pub mod import;
pub mod rebuild;
pub mod salvage;
pub mod verify;
