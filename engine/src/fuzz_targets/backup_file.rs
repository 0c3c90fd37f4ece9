//! The `backup_file` target: a backup file read as `replay-tool import` reads it. The header,
//! every record and the trailer ([`BackupReader`]); each record decoded and its chain verified
//! from seq 1 ([`ChainVerifier`], one signature per range); then a file that verified is
//! imported into the scratch store in one prepared batch, as the import's storing pass does.

use bytes::Bytes;
use casesync_proto::v1 as pb;

use super::{Refused, ScratchStore};
use crate::codec::backup_format::{BackupReader, BackupRecord};
use crate::log::ingest::PreparedBatch;
use crate::model::event::SignedEvent;
use crate::model::limits::SIGNATURE_BYTES;
use crate::model::verify::{ChainVerifier, SignatureCheck};

/// Most event records one input is read for (the rest is left unread).
const RECORDS_MAX: usize = 4096;

/// See the module documentation.
pub fn backup_file(scratch: &ScratchStore, data: &[u8]) -> Result<(), Refused> {
    let mut reader = BackupReader::new(data)?;
    let header = reader.header().clone();
    let mut verifier = ChainVerifier::new(header.space, SignatureCheck::Range);
    let mut events = Vec::new();
    let summary = loop {
        match reader.next_record()? {
            BackupRecord::Event { offset, stored } => {
                assert!(offset < reader.offset(), "a record's offset lies past what was read");
                let event = SignedEvent::from_stored(&stored)?;
                verifier.push(&event)?;
                // The import's storing pass: the record's two slices as a wire message.
                let stored = Bytes::from(stored);
                events.push(pb::SignedEvent {
                    signature: stored.slice(..SIGNATURE_BYTES),
                    event: stored.slice(SIGNATURE_BYTES..),
                });
                if events.len() >= RECORDS_MAX {
                    return Err(Refused::Request("more records than one input is read for"));
                }
            }
            BackupRecord::End(summary) => break summary,
        }
    };
    assert_eq!(summary.events, events.len() as u64, "the trailer's count and the records read differ");
    assert_eq!(summary.bytes, data.len() as u64, "a verified backup ends before its last byte");
    let chains = verifier.finish();
    if let Some(fault) = chains.faults.into_iter().next() {
        return Err(fault.into());
    }
    assert_eq!(chains.events, events.len() as u64, "the verifier checked other than the file's events");
    let store = scratch.store();
    let before = store.vector(&header.space);
    let report = store.ingest_prepared(PreparedBatch::new(header.space, events))?;
    let after = store.vector(&header.space);
    let grown: u64 = after.iter().map(|(author, seq)| seq - before.get(author)).sum();
    assert_eq!(grown, report.accepted, "the version vector grew by other than the accepted events");
    // What verified from seq 1 lands whole or is refused for the store's own reasons (a fork of
    // what an earlier input stored, a membership judgement): never in pieces nobody signed.
    for (author, seq) in chains.verified.iter().map(|(author, head)| (author, head.seq)) {
        let held = store.head(&header.space, author);
        if held.is_some_and(|held| held.seq == seq) {
            let stored = store.get_event(&header.space, author, seq)?;
            let verified = chains.verified.get(author).map(|head| head.link);
            assert_eq!(stored.map(|e| e.link), verified, "a stored head differs from the file's");
        }
    }
    Ok(())
}
