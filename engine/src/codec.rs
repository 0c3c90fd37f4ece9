//! Codecs: the bytes of what the model defines. Protobuf messages of operations and case parts
//! (`wire`), RocksDB keys (`keys`), metadata records (`meta`), the merge operator RocksDB applies
//! to stored case parts (`merge_operator`) and the portable backup file (`backup_format`).
//! Imports only the model.

pub mod backup_format;
pub mod case_json;
pub mod keys;
pub mod membership;
pub(crate) mod merge_operator;
pub mod meta;
pub mod wire;
