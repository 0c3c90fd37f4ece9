//! A rebuild over more cases than a fold holds, folded one range of case ids at a time.
//!
//! Read in key order (author, seq), a log whose authors each cycle over more cases than a fold
//! holds (16,384) meets every case again only after the fold has written it out: at 10M events,
//! each author cycling over 125k cases, nearly every event went out as a merge operand of its own,
//! which a compaction then joined (a quarter of the rebuild). Here the log is read once and each
//! event's operation is written to the file of the range its case id falls in; the files are then
//! read back one after another, so the fold meets all of a case's events among few other cases and
//! writes the case out once. Ranges are contiguous in case id order, so the files are folded in
//! the order the views are kept in.
//!
//! The files are scratch, in the store's spill directory: a crash leaves them to
//! `spill_files::remove_stale` at the next open, and the projections' watermark, written only
//! after the rebuild, makes that open rebuild again. What is read back is checked as it is
//! decoded (lengths bounded, operations validated); a damaged file fails the rebuild, which
//! then leaves the views lagging, never wrong.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::fold::FOLD_RUN_EVENTS;
use super::spill_files::SPILL_DIR;
use super::stored_events::fold_stored_events;
use crate::codec::wire;
use crate::error::StoreError;
use crate::model::event::{BodyEncoding, EventHeader};
use crate::model::ids::{AuthorId, CaseId, EventId, SpaceId};
use crate::model::limits::EVENT_BYTES_MAX;
use crate::model::membership::Membership;
use crate::model::operation::Operation;
use crate::storage::Db;

/// Fold memory a rebuild counts on each event adding to its case's state, to size the ranges: a
/// field write's slot, name and value and the event's history record come to 400-500 bytes
/// ([`super::fold::Fold::held_bytes`]) in the benchmark's events of 120 bytes of text.
const HELD_BYTES_PER_EVENT: usize = 1024;

/// Events per case range: as many as fit the fold's byte bound at [`HELD_BYTES_PER_EVENT`]
/// (32,768 in a rebuild by `replay-tool`, 16,384 in a node's), so that each range's cases are
/// held until its end and written out once. Logs of at most this many events are folded in one
/// pass.
pub(crate) fn events_per_range(fold_bytes: usize) -> u64 {
    if cfg!(test) {
        32
    } else {
        (fold_bytes / HELD_BYTES_PER_EVENT).clamp(4096, 1 << 17) as u64
    }
}

/// Ranges at most, whatever the log's size: each has a file open with its buffer while the log is
/// read (256 x 32 KiB).
const CASE_RANGES_MAX: usize = 256;

/// The buffer of each range file, written and read.
const FILE_BUFFER_BYTES: usize = 32 << 10;

/// Events the reader of the range files hands on at a time, and batches it may run ahead.
const READ_BATCH_EVENTS: usize = if cfg!(test) { 16 } else { 1024 };
const READ_BATCHES_AHEAD: usize = 4;

/// The bytes of a record before its operation: author, seq, hlc, the operation's length.
const RECORD_HEAD_BYTES: usize = AuthorId::LEN + 8 + 8 + 4;

/// Tells apart the range directories of one process.
static NEXT_RANGES_DIR: AtomicU64 = AtomicU64::new(0);

/// How many case ranges a rebuild of a log of `events` events folds it in, with a fold bound of
/// `fold_bytes` (1: the log is folded as read).
pub(crate) fn ranges_for(events: u64, fold_bytes: usize) -> usize {
    let per_range = events_per_range(fold_bytes);
    usize::try_from(events.div_ceil(per_range)).unwrap_or(usize::MAX).clamp(1, CASE_RANGES_MAX)
}

/// The range of `case` among `ranges`: by its first two bytes, so ranges follow case id order.
fn range_of(case: &CaseId, ranges: usize) -> usize {
    let top = usize::from(u16::from_be_bytes([case.0[0], case.0[1]]));
    (top * ranges) >> 16
}

/// What a fold by case range is handed: a run of events, or the end of a range (no later event
/// touches a case of it).
pub(crate) enum RangeStep<'a> {
    /// Up to [`FOLD_RUN_EVENTS`] headers with their operations (to be taken out).
    Run(&'a mut [(EventHeader, Option<Operation>)]),
    /// Every event of the range was handed on.
    End,
}

/// Folds the stored events of a space (as [`fold_stored_events`] would: the same judge, each
/// case's events in the same order) one range of case ids after another, in `ranges` ranges,
/// each followed by [`RangeStep::End`]. The headers handed on carry the space, author, seq and
/// clock of each event (what a fold reads), not its link; events without an operation (sealed
/// under a key not held, membership, judged out) are not handed on, as they fold to nothing.
pub(crate) fn fold_by_case_range(
    db: &Db,
    space: &SpaceId,
    judge: Option<&Membership>,
    ranges: usize,
    fold: impl FnMut(RangeStep<'_>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let dir = RangesDir::create(db.path(), space)?;
    let mut files = RangeWriters::create(&dir.path, ranges)?;
    fold_stored_events(db, space, judge, |run| {
        for (header, operation) in run.iter() {
            if let Some(operation) = operation {
                files.push(header, operation)?;
            }
        }
        Ok(())
    })?;
    let paths = files.finish()?;
    db.fault_point("rebuild: case ranges")?;
    fold_range_files(space, &paths, fold)
}

/// The directory of one rebuild's range files, removed with them when dropped.
struct RangesDir {
    path: PathBuf,
}

impl RangesDir {
    fn create(store: &Path, space: &SpaceId) -> Result<RangesDir, StoreError> {
        let number = NEXT_RANGES_DIR.fetch_add(1, Ordering::Relaxed);
        let path = store.join(SPILL_DIR).join(format!("{}-case-ranges-{number}", space.short()));
        std::fs::create_dir_all(&path).map_err(StoreError::Io)?;
        Ok(RangesDir { path })
    }
}

impl Drop for RangesDir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.path) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.path.display(), %error, "could not remove a rebuild's case range files");
            }
        }
    }
}

/// The range files being written, one per range.
struct RangeWriters {
    files: Vec<(PathBuf, BufWriter<File>)>,
    /// A reused buffer for each record.
    record: Vec<u8>,
}

impl RangeWriters {
    fn create(dir: &Path, ranges: usize) -> Result<RangeWriters, StoreError> {
        let files = (0..ranges)
            .map(|range| {
                let path = dir.join(format!("range-{range:03}"));
                let file = File::create(&path).map_err(StoreError::Io)?;
                Ok((path, BufWriter::with_capacity(FILE_BUFFER_BYTES, file)))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(RangeWriters { files, record: Vec::new() })
    }

    /// Appends one event's operation to its case's range.
    fn push(&mut self, header: &EventHeader, operation: &Operation) -> Result<(), StoreError> {
        let body = wire::encode_operation(operation);
        let length = u32::try_from(body.len())
            .ok()
            .filter(|length| *length as usize <= EVENT_BYTES_MAX)
            .ok_or_else(|| StoreError::Io(std::io::Error::other("an operation is longer than an event may be")))?;
        self.record.clear();
        self.record.extend_from_slice(header.author.as_bytes());
        self.record.extend_from_slice(&header.seq.to_le_bytes());
        self.record.extend_from_slice(&header.hlc.to_le_bytes());
        self.record.extend_from_slice(&length.to_le_bytes());
        self.record.extend_from_slice(&body);
        let range = range_of(&operation.case(), self.files.len());
        let (_, file) = self.files.get_mut(range).ok_or(StoreError::Poisoned)?; // range < files.len()
        file.write_all(&self.record).map_err(StoreError::Io)
    }

    /// Flushes and closes every file; returns their paths in range order.
    fn finish(self) -> Result<Vec<PathBuf>, StoreError> {
        self.files
            .into_iter()
            .map(|(path, file)| {
                file.into_inner().map_err(|error| StoreError::Io(error.into_error()))?;
                Ok(path)
            })
            .collect()
    }
}

/// What the reader of the range files hands the fold: decoded records, or a range's end.
enum FromFiles {
    Records(Vec<(EventHeader, Option<Operation>)>),
    RangeEnd,
}

/// Reads the range files in order on a thread of its own, decoding each record, while `fold`
/// takes runs of them, and each range's end, on the calling thread.
fn fold_range_files(
    space: &SpaceId,
    paths: &[PathBuf],
    mut fold: impl FnMut(RangeStep<'_>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    std::thread::scope(|scope| {
        let (to_fold, read) = std::sync::mpsc::sync_channel::<FromFiles>(READ_BATCHES_AHEAD);
        let reader = scope.spawn(move || {
            for path in paths {
                let file = File::open(path).map_err(StoreError::Io)?;
                let mut records = RangeReader {
                    space: *space,
                    file: BufReader::with_capacity(FILE_BUFFER_BYTES, file),
                    body: Vec::new(),
                };
                let mut batch = Vec::with_capacity(READ_BATCH_EVENTS);
                loop {
                    let record = records.next_record()?;
                    let end = record.is_none();
                    batch.extend(record);
                    if batch.len() == READ_BATCH_EVENTS || (end && !batch.is_empty()) {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(READ_BATCH_EVENTS));
                        if to_fold.send(FromFiles::Records(full)).is_err() {
                            return Ok(()); // The fold stopped: its error is returned.
                        }
                    }
                    if end {
                        break;
                    }
                }
                if to_fold.send(FromFiles::RangeEnd).is_err() {
                    return Ok(());
                }
            }
            Ok::<_, StoreError>(())
        });
        let folded = read.iter().try_for_each(|read| match read {
            FromFiles::Records(mut batch) => {
                batch.chunks_mut(FOLD_RUN_EVENTS).try_for_each(|run| fold(RangeStep::Run(run)))
            }
            FromFiles::RangeEnd => fold(RangeStep::End),
        });
        drop(read);
        let read = reader.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        folded.and(read)
    })
}

/// The records of one range file.
struct RangeReader {
    space: SpaceId,
    file: BufReader<File>,
    /// The last record's operation, as read (reused).
    body: Vec<u8>,
}

impl RangeReader {
    /// The next record, or `None` at the end of the file (a record cut short is an error).
    fn next_record(&mut self) -> Result<Option<(EventHeader, Option<Operation>)>, StoreError> {
        let mut head = [0u8; RECORD_HEAD_BYTES];
        let mut read = 0;
        while read < head.len() {
            match self.file.read(&mut head[read..]) {
                Ok(0) if read == 0 => return Ok(None),
                Ok(0) => return Err(self.damaged(AuthorId::default(), 0, "a record is cut short")),
                Ok(n) => read += n,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(StoreError::Io(error)),
            }
        }
        let (author, rest) = head.split_at(AuthorId::LEN);
        let (seq, rest) = rest.split_at(8);
        let (hlc, length) = rest.split_at(8);
        let author = AuthorId::from_slice(author).map_err(|_| self.damaged(AuthorId::default(), 0, "no author"))?;
        let seq = u64::from_le_bytes(seq.try_into().unwrap_or_default());
        let hlc = u64::from_le_bytes(hlc.try_into().unwrap_or_default());
        let length = u32::from_le_bytes(length.try_into().unwrap_or_default()) as usize;
        if length > EVENT_BYTES_MAX {
            return Err(self.damaged(author, seq, "an operation is longer than an event may be"));
        }
        self.body.resize(length, 0);
        if let Err(error) = self.file.read_exact(&mut self.body) {
            return Err(match error.kind() {
                std::io::ErrorKind::UnexpectedEof => self.damaged(author, seq, "a record is cut short"),
                _ => StoreError::Io(error),
            });
        }
        let operation =
            wire::decode_operation(&self.body).map_err(|error| self.damaged(author, seq, &error.to_string()))?;
        let header =
            EventHeader { space: self.space, author, seq, prev: EventId::ZERO, hlc, encoding: BodyEncoding::Plain };
        Ok(Some((header, Some(operation))))
    }

    fn damaged(&self, author: AuthorId, seq: u64, why: &str) -> StoreError {
        StoreError::Corrupt { space: self.space, author, seq, reason: format!("a rebuild's case range file: {why}") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_case_id_order_and_cover_every_case() {
        for ranges in [1, 2, 3, 7, 76, 256] {
            let mut last = 0;
            for top in 0..=u16::MAX {
                let [a, b] = top.to_be_bytes();
                let mut id = [0u8; 16];
                id[0] = a;
                id[1] = b;
                let range = range_of(&CaseId(id), ranges);
                assert!(range < ranges && range >= last, "{ranges} ranges, top {top}: range {range} after {last}");
                last = range;
            }
            assert_eq!(last, ranges - 1, "{ranges} ranges: the last case id is in the last range");
        }
    }

    fn header(seq: u64) -> EventHeader {
        let author = AuthorId::from_slice(&[9; AuthorId::LEN]).unwrap();
        EventHeader {
            space: SpaceId([1; 16]),
            author,
            seq,
            prev: EventId::ZERO,
            hlc: 1000 + seq,
            encoding: BodyEncoding::Plain,
        }
    }

    fn records_of(path: &Path) -> Vec<Result<(u64, u64, CaseId), String>> {
        let file = File::open(path).unwrap();
        let mut reader = RangeReader { space: SpaceId([1; 16]), file: BufReader::new(file), body: Vec::new() };
        let mut records = Vec::new();
        loop {
            match reader.next_record() {
                Ok(Some((header, operation))) => {
                    records.push(Ok((header.seq, header.hlc, operation.unwrap().case())));
                }
                Ok(None) => return records,
                Err(error) => {
                    records.push(Err(error.to_string()));
                    return records;
                }
            }
        }
    }

    #[test]
    fn records_come_back_as_written_and_a_damaged_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = RangeWriters::create(dir.path(), 2).unwrap();
        let low = CaseId([0x10; 16]);
        let high = CaseId([0xf0; 16]);
        for (seq, case) in [(1, low), (2, high), (3, low)] {
            files.push(&header(seq), &Operation::CreateCase { case, fields: Default::default() }).unwrap();
        }
        let paths = files.finish().unwrap();
        assert_eq!(records_of(&paths[0]), vec![Ok((1, 1001, low)), Ok((3, 1003, low))]);
        assert_eq!(records_of(&paths[1]), vec![Ok((2, 1002, high))]);
        let whole = std::fs::read(&paths[0]).unwrap();
        // Every cut of the file: whole records back, then an error for the cut one.
        for cut in 0..whole.len() {
            std::fs::write(&paths[0], &whole[..cut]).unwrap();
            let records = records_of(&paths[0]);
            let whole_records = records.iter().filter(|r| r.is_ok()).count();
            let at_boundary = cut == 0 || cut == whole.len() / 2;
            assert_eq!(records.last().is_some_and(|r| r.is_err()), !at_boundary, "cut at {cut}: {records:?}");
            assert!(whole_records <= 1, "cut at {cut}");
        }
        // A length past an event's bound, and an operation that does not decode.
        let mut long = whole.clone();
        long[RECORD_HEAD_BYTES - 4..RECORD_HEAD_BYTES].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut junk = whole.clone();
        junk[RECORD_HEAD_BYTES] ^= 0xff;
        for damaged in [long, junk] {
            std::fs::write(&paths[0], &damaged).unwrap();
            let records = records_of(&paths[0]);
            assert!(
                records.first().is_some_and(|r| r.as_ref().is_err_and(|e| e.contains("case range file"))),
                "{records:?}"
            );
        }
    }

    #[test]
    fn a_log_is_split_only_past_a_range_s_events_and_never_into_more_than_the_bound() {
        let per_range = events_per_range(32 << 20);
        assert_eq!(ranges_for(0, 32 << 20), 1);
        assert_eq!(ranges_for(per_range, 32 << 20), 1);
        assert_eq!(ranges_for(per_range + 1, 32 << 20), 2);
        assert_eq!(ranges_for(u64::MAX, 32 << 20), CASE_RANGES_MAX);
    }
}
