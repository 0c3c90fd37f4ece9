//! Every size limit of the engine in one place. Names end with their unit.

/// Largest encoded `Event` (header and body), in bytes. Checked when building and when ingesting.
pub const EVENT_BYTES_MAX: usize = 1024 * 1024;
/// Size of an ed25519 signature, in bytes.
pub const SIGNATURE_BYTES: usize = 64;
/// Most events in one batch that is sent, ingested or appended.
pub const BATCH_EVENTS_MAX: usize = 1024;
/// Most bytes of events in one batch (a single event larger than this still travels alone).
pub const BATCH_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Most fields written by one operation.
pub const FIELDS_PER_OP_MAX: usize = 256;
/// Longest field name, in bytes.
pub const FIELD_NAME_BYTES_MAX: usize = 128;
/// Most dots one write may name as superseded (or as seen).
pub const DOTS_PER_WRITE_MAX: usize = 4096;
/// Longest human device name, in bytes.
pub const DEVICE_NAME_BYTES_MAX: usize = 64;
/// Most data key wraps in one membership event (one per recipient).
pub const KEY_WRAPS_PER_EVENT_MAX: usize = 4096;
/// Most events kept as evidence of one author's forks in one space.
pub const FORK_EVIDENCE_PER_AUTHOR_MAX: usize = 16;
/// Most authors in one page of a version vector sent between nodes (`Heads` replies, `Pull`
/// requests that list the authors they want): about 650 KB, whatever the number of authors.
pub const VECTOR_PAGE_AUTHORS_MAX: usize = 16_384;
