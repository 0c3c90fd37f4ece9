//! Case projections: the views of each space's cases, folded from its log. Events are folded into
//! merge operands in the write batch that stores them (`incremental`); a bulk catch-up folds
//! many batches in memory and writes its cases out as SST files (`bulk_catch_up`,
//! `spill_files`); a rebuild folds the whole log the same way (`rebuild`); `queries` reads the
//! views, and a watermark per space says which events they hold. Imports the model, the codecs
//! and storage, never the log's state or the store.

pub(crate) mod bulk_catch_up;
pub(crate) mod case_ranges;
pub mod fold;
pub mod history;
pub(crate) mod incremental;
pub(crate) mod missed_keys;
pub mod queries;
pub(crate) mod rebuild;
pub(crate) mod spill_files;
pub(crate) mod stored_events;
pub(crate) mod written_digests;

use crate::codec::wire;
use crate::model::event::{BodyEncoding, EventHeader, SignedEvent};
use crate::model::operation::Operation;
use crate::model::sealing::KeySet;

/// Decodes an event's operation, if it has a readable and valid one: a plain body, or a sealed
/// one that opens with `keys`. Events whose body is invalid stay in the log but change no
/// projection (the same on every node); a sealed body under a key not held is noted in `keys`
/// (`KeySet::take_missed`), so the views are folded again once it arrives.
pub fn operation_of(event: &SignedEvent, keys: &KeySet) -> Option<Operation> {
    operation_in(&event.header, &event.body, keys)
}

pub(crate) fn operation_in(header: &EventHeader, body: &[u8], keys: &KeySet) -> Option<Operation> {
    let opened;
    let body = match header.encoding {
        BodyEncoding::Plain => body,
        BodyEncoding::Sealed => match keys.open(header, body) {
            Ok(plain) => {
                opened = plain;
                &opened[..]
            }
            Err(error) => {
                tracing::debug!(author = %header.author.device_id(), seq = header.seq, %error, "sealed body not opened");
                return None;
            }
        },
        BodyEncoding::Membership => return None,
    };
    match wire::decode_operation(body) {
        Ok(op) => Some(op),
        Err(error) => {
            tracing::debug!(author = %header.author.device_id(), seq = header.seq, %error, "event body ignored by projections");
            None
        }
    }
}
