//! Shared helpers: stores in temp dirs, devices, events, deterministic seeds.

use bytes::Bytes;
use casesync_engine::model::event::{BodyEncoding, EventHeader, SignedEvent};
use casesync_engine::model::ids::{EventId, SpaceId};
use casesync_engine::model::signing::DeviceKey;
use casesync_engine::store::{Store, StoreOptions};
use casesync_proto::v1 as pb;

pub const SPACE: SpaceId = SpaceId([0x5a; 16]);

pub fn device(n: u8) -> DeviceKey {
    DeviceKey::from_secret([n; 32])
}

pub fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, StoreOptions::default()).unwrap()
}

/// A chain of `count` signed events by `key`, seq 1.., with opaque bodies.
pub fn chain(key: &DeviceKey, count: u64) -> Vec<SignedEvent> {
    let mut prev = EventId::ZERO;
    (1..=count)
        .map(|seq| {
            let header = EventHeader {
                space: SPACE,
                author: key.author(),
                seq,
                prev,
                hlc: seq << 16,
                encoding: BodyEncoding::Sealed,
            };
            let event = SignedEvent::build(key, &header, Bytes::from(format!("body {seq}"))).unwrap();
            prev = event.link;
            event
        })
        .collect()
}

pub fn wire(events: &[SignedEvent]) -> Vec<pb::SignedEvent> {
    events.iter().map(SignedEvent::to_wire).collect()
}

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
