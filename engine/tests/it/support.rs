//! The space these tests write in, and the engine's shared test support
//! (`casesync_engine::testkit`): devices, chains, seeded random choices.

use casesync_engine::model::ids::{EventId, SpaceId};
use casesync_engine::store::Store;
pub use casesync_engine::testkit::{
    chain, chain_with_junk_signatures, device, interleave_authors, open_store as open, wire, SeededRng,
};

pub const SPACE: SpaceId = SpaceId([0x5a; 16]);

/// Every event of a space as (author, seq, id), in key order.
pub fn dump(store: &Store) -> Vec<(String, u64, String)> {
    store
        .events_after(&SPACE, &Default::default())
        .map(|r| {
            let (author, seq, message) = r.unwrap();
            (author.to_hex(), seq, EventId::of(&message.event).to_hex())
        })
        .collect()
}
