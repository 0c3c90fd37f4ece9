//! Generates a large data dir for measuring replay-tool: `events` events of about 300 bytes by
//! one device over `cases` cases (a create, then field writes that supersede the previous one),
//! appended in batches of 1000 with `Store::append`.
//!
//! cargo run --release -p replay-tool --example gen_events -- DIR [EVENTS] [CASES]

use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use casesync_engine::codec::wire;
use casesync_engine::model::event::BodyEncoding;
use casesync_engine::model::ids::{CaseId, SpaceId};
use casesync_engine::model::operation::{smallvec, Dot, FieldValue, FieldWrite, Operation};
use casesync_engine::model::signing::DeviceKey;
use casesync_engine::store::{Store, StoreOptions};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "gen-data".into()));
    let events: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1_000_000);
    let cases: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100_000);
    let space = SpaceId([0x42; 16]);
    let key = DeviceKey::from_secret([0x17; 32]);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("casesync.toml"), format!("space = \"{}\"\nrelay = false\n", space.to_hex()))?;
    std::fs::write(dir.join("device.key"), key.secret())?;
    std::fs::write(dir.join("device.name"), "generator")?;
    let store = Store::open(&dir.join("db"), StoreOptions { projections: true, ..StoreOptions::compatible() })?;
    store.add_member(&space, &key.author(), "generator")?;
    let author = key.author();
    let case_id = |n: u64| {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&n.to_be_bytes());
        id[8..].copy_from_slice(&(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_be_bytes());
        CaseId(id)
    };
    let started = Instant::now();
    let mut seq = store.head(&space, &author).map_or(0, |h| h.seq);
    let mut now_ms = 1_795_435_200_000u64;
    while seq < events {
        let count = (events - seq).min(1000);
        let mut bodies = Vec::with_capacity(count as usize);
        for i in 0..count {
            let this_seq = seq + i + 1;
            let n = (this_seq - 1) % cases;
            let note = format!("session note {this_seq:>10}: {}", "lorem ipsum dolor sit amet ".repeat(5));
            let operation = if this_seq <= cases {
                Operation::CreateCase {
                    case: case_id(n),
                    fields: smallvec![
                        FieldWrite {
                            name: "name".into(),
                            value: FieldValue::Text(format!("client {n}")),
                            supersedes: smallvec![],
                        },
                        FieldWrite { name: "note".into(), value: FieldValue::Text(note), supersedes: smallvec![] },
                    ],
                }
            } else {
                // Supersede the previous write of this case's note (same device, `cases` seqs ago).
                let previous = Dot { author, seq: this_seq - cases };
                Operation::SetFields {
                    case: case_id(n),
                    fields: smallvec![FieldWrite {
                        name: "note".into(),
                        value: FieldValue::Text(note),
                        supersedes: smallvec![previous],
                    }],
                }
            };
            bodies.push((BodyEncoding::Plain, Bytes::from(wire::encode_operation(&operation))));
        }
        now_ms += 1000;
        let (written, _) = store.append(&space, &key, now_ms, bodies)?;
        seq = written.last().map_or(seq, |e| e.header.seq);
        if seq % 100_000 == 0 {
            eprintln!("{seq} events, {:.0} events/s", seq as f64 / started.elapsed().as_secs_f64());
        }
    }
    println!(
        "{{\"events\": {seq}, \"cases\": {cases}, \"seconds\": {:.1}, \"state_hash\": \"{}\"}}",
        started.elapsed().as_secs_f64(),
        store.state_hash(&space)?
    );
    Ok(())
}
