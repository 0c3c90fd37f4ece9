//! The case states a bulk fold writes out (a rebuild, an import's bulk load, a node's bulk
//! catch-up), built into SST files of their own and ingested into the store in one step.
//!
//! Each spill is a run of case states in case id order, so its parts and history records come out
//! in key order: exactly what an SST file needs. Writing them as files skips what the memtable
//! path paid per record: the write batch's copy, the skip-list insert, and the flush that read
//! the memtable back and called the merge operator for every part. The files are written into a
//! directory inside the store ([`SPILL_DIR`]), moved into RocksDB by
//! [`SpillFiles::ingest`] (a few renames and one manifest write: the records become visible and
//! durable together), and the directory is removed. A crash before the ingest leaves only files
//! that nothing refers to: [`remove_stale`] clears them at the next open, and the projections'
//! watermark, which only moves after the ingest, makes that open rebuild.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rocksdb::{Options, SstFileWriter};

use super::fold::HeldCase;
use super::incremental::note_written;
use super::written_digests::WrittenDigests;
use crate::codec::keys::{CF_CASES, CF_CASE_EVENTS};
use crate::codec::merge_operator::join_case_part_values;
use crate::codec::wire;
use crate::error::StoreError;
use crate::model::ids::{AuthorId, SpaceId};
use crate::storage::families::tuned_family_options;
use crate::storage::memory::MemoryBudget;
use crate::storage::Db;

/// The directory, inside a store's, where spill files wait for their ingest.
pub(crate) const SPILL_DIR: &str = "spill-files";

/// Tells apart the spill directories of one process (a rebuild during a bulk catch-up has its own).
static NEXT_SPILL_DIR: AtomicU64 = AtomicU64::new(0);

/// Removes spill files a crash left behind (nothing refers to them: their ingest never ran).
pub(crate) fn remove_stale(store_path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(store_path.join(SPILL_DIR)) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// The SST files of one bulk fold's spills, not yet ingested. Several threads may write spills
/// at once (each into files of its own): merge operands join in any order, and history records
/// of different spills never share a key, so the order of the files does not matter.
pub(crate) struct SpillFiles {
    space: SpaceId,
    dir: PathBuf,
    parts_options: Options,
    history_options: Options,
    /// Numbers the files.
    next_file: AtomicU64,
    /// Written files of `case_parts` and of `case_events`.
    written: Mutex<(Vec<PathBuf>, Vec<PathBuf>)>,
}

/// Cases a spill writer warms at a time before writing them out ([`HeldCase::warm`]).
const WARM_AHEAD_CASES: usize = 8;

impl SpillFiles {
    /// Starts the spill files of a bulk fold of `space` into `store` (creating their directory).
    pub(crate) fn new(db: &Db, space: &SpaceId) -> Result<SpillFiles, StoreError> {
        let number = NEXT_SPILL_DIR.fetch_add(1, Ordering::Relaxed);
        let dir = db.path().join(SPILL_DIR).join(format!("{}-{number}", space.short()));
        std::fs::create_dir_all(&dir).map_err(StoreError::Io)?;
        Ok(SpillFiles {
            space: *space,
            dir,
            parts_options: spill_options(CF_CASES),
            history_options: spill_options(CF_CASE_EVENTS),
            next_file: AtomicU64::new(0),
            written: Mutex::new((Vec::new(), Vec::new())),
        })
    }

    /// Encodes one spill (case states, as [`super::Fold`] gives them out) into `gathered`: each
    /// non-empty part as a merge operand, each case's history in records of up to
    /// `HISTORY_ENTRIES_PER_RECORD` events; notes each case encoded in `digests`, if given.
    /// Whenever `gathered` passes [`GATHERED_BYTES_MAX`] it is written out, so a large spill (a
    /// fold's last: every case it held) is never held twice, and each case is dropped once
    /// encoded.
    fn gather(
        &self,
        gathered: &mut Gathered,
        cases: Vec<HeldCase>,
        mut digests: Option<&mut WrittenDigests>,
    ) -> Result<(), StoreError> {
        let mut buffers = wire::PartBuffers::default();
        let mut cases = cases.into_iter();
        loop {
            let run: Vec<HeldCase> = cases.by_ref().take(WARM_AHEAD_CASES).collect();
            if run.is_empty() {
                return Ok(());
            }
            std::hint::black_box(run.iter().map(HeldCase::warm).fold(0usize, usize::wrapping_add));
            for held in run {
                let state = &held.state;
                let staged = wire::for_each_case_part(&self.space, state, &mut buffers, |key, value| {
                    gathered.push(Family::Parts, key, value)
                })?;
                for (key, value) in held.history_records(&self.space) {
                    gathered.push(Family::History, &key, &value)?;
                }
                note_written(digests.as_deref_mut(), state, staged);
                if gathered.len_bytes() >= GATHERED_BYTES_MAX {
                    self.write_gathered(gathered)?;
                }
            }
        }
    }

    /// Writes what `gathered` holds as one file per family, in key order, and empties it. Parts
    /// of one case gathered from several spills are joined into one operand first (as the merge
    /// operator would join them); history records never share a key.
    fn write_gathered(&self, gathered: &mut Gathered) -> Result<(), StoreError> {
        if gathered.is_empty() {
            return Ok(());
        }
        let number = self.next_file.fetch_add(1, Ordering::Relaxed);
        let parts_path = self.dir.join(format!("parts-{number:06}.sst"));
        let history_path = self.dir.join(format!("history-{number:06}.sst"));
        let mut parts = SstFileWriter::create(&self.parts_options);
        parts.open(&parts_path)?;
        let mut history = SstFileWriter::create(&self.history_options);
        history.open(&history_path)?;
        let parts_written = gathered.write_joined(Family::Parts, |key, values| match values {
            [value] => Ok(parts.merge(key, value)?),
            _ => {
                let joined = join_case_part_values(key, values.iter().copied()).ok_or_else(|| StoreError::Corrupt {
                    space: self.space,
                    author: AuthorId::default(),
                    seq: 0,
                    reason: format!("a spilled case part did not decode (key {})", hex::encode(key)),
                })?;
                Ok(parts.merge(key, joined)?)
            }
        })?;
        let history_written = gathered.write_joined(Family::History, |key, values| {
            for value in values {
                history.put(key, value)?;
            }
            Ok(())
        })?;
        gathered.clear();
        let parts = finish(parts, parts_written, parts_path)?;
        let history = finish(history, history_written, history_path)?;
        let mut written = self.written.lock().unwrap_or_else(|poison| poison.into_inner());
        written.0.extend(parts);
        written.1.extend(history);
        Ok(())
    }

    /// Moves every file written into `store`, each family's files in one ingest.
    pub(crate) fn ingest(self, db: &Db) -> Result<(), StoreError> {
        let (parts, history) = std::mem::take(&mut *self.written.lock().unwrap_or_else(|poison| poison.into_inner()));
        for (family, files) in [(CF_CASES, parts), (CF_CASE_EVENTS, history)] {
            if !files.is_empty() {
                db.ingest_files(family, files)?;
            }
        }
        Ok(())
    }
}

/// A family's options for its spill files: as the store opens it, but uncompressed. A spill is
/// read back soon, by the compaction that joins the spills (which compresses what it writes);
/// LZ4 was the largest share of the spill writers' time (a rebuild of 1M events: 1.88-2.10 s
/// uncompressed, 1.96-2.30 s with LZ4, interleaved).
fn spill_options(family: &str) -> Options {
    let mut options = tuned_family_options(family, None, &MemoryBudget::default());
    options.set_compression_type(rocksdb::DBCompressionType::None);
    options
}

/// Ends an SST file: finished and returned if it holds anything, else removed (RocksDB cannot
/// finish an empty file).
fn finish(mut writer: SstFileWriter<'_>, written: bool, path: PathBuf) -> Result<Option<PathBuf>, StoreError> {
    if written {
        writer.finish()?;
        prefetch(&path);
        Ok(Some(path))
    } else {
        drop(writer);
        std::fs::remove_file(&path).map_err(StoreError::Io)?;
        Ok(None)
    }
}

/// Encoded bytes of spills a writer gathers before it writes them out as one file per family:
/// a bulk fold that writes nearly every event out on its own (authors cycling over far more cases
/// than it holds) spilled thousands of files of half a MiB at 10M events, and the compaction that
/// joined them after the ingest merged all of them at once, its cost per record growing with
/// their number. Gathered, a 10M-event catch-up writes a few hundred.
pub(crate) const GATHERED_BYTES_MAX: usize = if cfg!(test) { 512 } else { 4 << 20 };

/// The family a gathered record goes to.
#[derive(Clone, Copy)]
enum Family {
    Parts,
    History,
}

/// Records of several spills, keys and values back to back in one buffer, not yet in key order.
/// Its buffer is allocated once at its bound (and grows only by the last case pushed past it):
/// grown by doubling, it would hold twice the bound from the first write on.
struct Gathered {
    bytes: Vec<u8>,
    parts: Vec<Record>,
    history: Vec<Record>,
}

/// Where one gathered record's key and value are in [`Gathered::bytes`].
#[derive(Clone, Copy)]
struct Record {
    at: usize,
    key_len: u32,
    value_len: u32,
}

impl Default for Gathered {
    fn default() -> Self {
        Gathered { bytes: Vec::with_capacity(GATHERED_BYTES_MAX + (64 << 10)), parts: Vec::new(), history: Vec::new() }
    }
}

impl Gathered {
    fn push(&mut self, family: Family, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let too_large = || StoreError::Io(std::io::Error::other("a spilled record is over 4 GiB"));
        let record = Record {
            at: self.bytes.len(),
            key_len: u32::try_from(key.len()).map_err(|_| too_large())?,
            value_len: u32::try_from(value.len()).map_err(|_| too_large())?,
        };
        self.bytes.extend_from_slice(key);
        self.bytes.extend_from_slice(value);
        match family {
            Family::Parts => self.parts.push(record),
            Family::History => self.history.push(record),
        }
        Ok(())
    }

    fn len_bytes(&self) -> usize {
        self.bytes.len()
    }

    fn is_empty(&self) -> bool {
        self.parts.is_empty() && self.history.is_empty()
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.parts.clear();
        self.history.clear();
    }

    /// Sorts a family's records by key and hands `write` each key with every value gathered
    /// under it; whether there was any.
    fn write_joined(
        &mut self,
        family: Family,
        mut write: impl FnMut(&[u8], &[&[u8]]) -> Result<(), StoreError>,
    ) -> Result<bool, StoreError> {
        let bytes = &self.bytes;
        let records = match family {
            Family::Parts => &mut self.parts,
            Family::History => &mut self.history,
        };
        let key = |record: &Record| &bytes[record.at..record.at + record.key_len as usize];
        let value = |record: &Record| {
            let start = record.at + record.key_len as usize;
            &bytes[start..start + record.value_len as usize]
        };
        records.sort_unstable_by(|a, b| key(a).cmp(key(b)));
        let mut values: Vec<&[u8]> = Vec::new();
        for same in records.chunk_by(|a, b| key(a) == key(b)) {
            values.clear();
            values.extend(same.iter().map(value));
            if let Some(first) = same.first() {
                write(key(first), &values)?;
            }
        }
        Ok(!records.is_empty())
    }
}

/// Asks the kernel to read a finished file back into the page cache, in the background.
/// RocksDB's `SstFileWriter` drops a file's pages from the cache as it writes it, so the ingest at
/// a fold's end read every file's footer and index back from the disk, one file after the other
/// (0.13-0.16 s of a 1.4 s rebuild of 1M events); read ahead while the fold goes on, they are in
/// the cache by then (0.03 s). The compaction after the ingest reads the files whole anyway.
#[cfg(target_os = "linux")]
fn prefetch(path: &Path) {
    if let Ok(file) = std::fs::File::open(path) {
        let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::WillNeed);
    }
}

/// Elsewhere the ingest reads the files back as it needs them.
#[cfg(not(target_os = "linux"))]
fn prefetch(_path: &Path) {}

impl Drop for SpillFiles {
    fn drop(&mut self) {
        // Ingested files were moved into the store; files of a failed fold are not wanted.
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), %error, "could not remove spill files");
            }
        }
    }
}

/// Threads that write a bulk fold's spills: the fold hands each spill on and goes on folding
/// while it is encoded and written. They live as long as the fold (a rebuild, or a bulk catch-up
/// across many ingests) and are joined by [`SpillWriters::finish`], or when dropped. The last
/// spill of a fold (every case still held: a sixth of all cases in a rebuild of 1M events) is
/// handed on in halves, so both write at once.
pub(crate) struct SpillWriters {
    /// Shared with the writer threads (taken back by [`SpillWriters::finish`]).
    files: Option<Arc<SpillFiles>>,
    spills: Option<SyncSender<Spill>>,
    threads: Vec<JoinHandle<Result<Option<WrittenDigests>, StoreError>>>,
}

/// One spill handed to a writer: case states in case id order, and whether the writer writes
/// what it gathered out once they are in it.
struct Spill {
    cases: Vec<HeldCase>,
    write_out: bool,
}

/// Writer threads of one bulk fold.
const SPILL_WRITERS: usize = 2;

/// Spills handed on and not yet taken by a writer (each of up to 4096 case states: a few MiB).
const SPILLS_QUEUED: usize = 1;

/// Takes spills off a queue shared by several writers and hands each to `write`, until the queue
/// is closed or `write` fails. The lock is held only while waiting for the next spill, so the
/// writers write at once. (Not `while let Ok(cases) = queue.lock()...recv()`: the guard, a
/// temporary of the condition, would live through the body and let one writer work at a time.)
fn take_each<T>(
    queue: &Mutex<Receiver<T>>,
    mut write: impl FnMut(T) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    loop {
        let next = queue.lock().unwrap_or_else(|poison| poison.into_inner()).recv();
        let Ok(spill) = next else { return Ok(()) };
        write(spill)?;
    }
}

impl SpillWriters {
    /// Starts the writers of `files`; each notes the digests of the cases it writes when
    /// `digests` is set.
    pub(crate) fn start(files: SpillFiles, digests: bool) -> Result<SpillWriters, StoreError> {
        let files = Arc::new(files);
        let (spills, spilled) = sync_channel::<Spill>(SPILLS_QUEUED);
        let spilled = Arc::new(Mutex::new(spilled));
        let mut writers = SpillWriters { files: Some(files.clone()), spills: Some(spills), threads: Vec::new() };
        for n in 0..SPILL_WRITERS {
            let (files, spilled) = (files.clone(), spilled.clone());
            let thread = std::thread::Builder::new().name(format!("casesync-spill-{n}")).spawn(move || {
                let mut digests = digests.then(WrittenDigests::new);
                let mut gathered = Gathered::default();
                take_each(&spilled, |spill| {
                    files.gather(&mut gathered, spill.cases, digests.as_mut())?;
                    match spill.write_out {
                        true => files.write_gathered(&mut gathered),
                        false => Ok(()),
                    }
                })?;
                files.write_gathered(&mut gathered)?;
                Ok(digests)
            });
            writers.threads.push(thread.map_err(StoreError::Io)?);
        }
        Ok(writers)
    }

    /// Hands a spill (case states in case id order) to the writers, waiting while they are busy
    /// with the ones before. Fails only if every writer stopped (its error comes from
    /// [`SpillWriters::finish`]).
    pub(crate) fn spill(&self, cases: Vec<HeldCase>) -> Result<(), StoreError> {
        self.hand_on(Spill { cases, write_out: false })
    }

    /// Hands on a spill of cases no later spill shares a key with (a rebuild's range of case
    /// ids, folded whole): the writer that takes it writes out what it gathered once the spill
    /// is in it, so its files and those of the next range, gathered by the other writer, never
    /// overlap, and RocksDB places them without a compaction.
    pub(crate) fn spill_ending_keys(&self, cases: Vec<HeldCase>) -> Result<(), StoreError> {
        self.hand_on(Spill { cases, write_out: true })
    }

    fn hand_on(&self, spill: Spill) -> Result<(), StoreError> {
        if spill.cases.is_empty() {
            return Ok(());
        }
        match &self.spills {
            Some(spills) if spills.send(spill).is_ok() => Ok(()),
            _ => Err(StoreError::Poisoned),
        }
    }

    /// Hands the last spill on in two halves (one for each writer), waits until everything is
    /// written, and returns the files with the digests the writers noted (when they took them).
    /// The first error a writer met, if any.
    pub(crate) fn finish(
        mut self,
        mut last: Vec<HeldCase>,
    ) -> Result<(SpillFiles, Option<WrittenDigests>), StoreError> {
        let second = last.split_off(last.len() / 2);
        let handed = self.spill(last).and_then(|()| self.spill(second));
        let digests = self.join()?;
        handed?;
        // Every writer thread ended, so this is the last handle of the files.
        let files = self.files.take().and_then(|files| Arc::try_unwrap(files).ok());
        Ok((files.ok_or(StoreError::Poisoned)?, digests))
    }

    /// Closes the queue and joins every writer: the digests they noted, or the first error.
    fn join(&mut self) -> Result<Option<WrittenDigests>, StoreError> {
        self.spills = None;
        let mut all: Result<Option<WrittenDigests>, StoreError> = Ok(None);
        for thread in self.threads.drain(..) {
            let written = thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            all = match (all, written) {
                (Err(error), _) | (Ok(_), Err(error)) => Err(error),
                (Ok(None), Ok(written)) => Ok(written),
                (Ok(Some(mut noted)), Ok(written)) => {
                    if let Some(written) = written {
                        noted.extend(written);
                    }
                    Ok(Some(noted))
                }
            };
        }
        all
    }
}

impl Drop for SpillWriters {
    fn drop(&mut self) {
        // A fold given up (failed, or dropped for a rebuild): its writers end with the queue.
        if !self.threads.is_empty() {
            let _ = self.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::sync_channel;
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::Duration;

    use super::{take_each, Family, Gathered};

    /// Records gathered from several spills come out in key order, each key once with every
    /// value gathered under it, and each family apart.
    #[test]
    fn gathered_records_come_out_sorted_with_equal_keys_together() {
        let mut gathered = Gathered::default();
        for (key, value) in [("c", "3"), ("a", "1"), ("b", "2"), ("a", "4")] {
            gathered.push(Family::Parts, key.as_bytes(), value.as_bytes()).unwrap();
        }
        gathered.push(Family::History, b"z", b"9").unwrap();
        let mut parts = Vec::new();
        let any = gathered
            .write_joined(Family::Parts, |key, values| {
                let mut values: Vec<&[u8]> = values.to_vec();
                values.sort();
                parts.push((key.to_vec(), values.iter().map(|v| v.to_vec()).collect::<Vec<_>>()));
                Ok(())
            })
            .unwrap();
        assert!(any);
        let expected: Vec<(Vec<u8>, Vec<Vec<u8>>)> = vec![
            (b"a".to_vec(), vec![b"1".to_vec(), b"4".to_vec()]),
            (b"b".to_vec(), vec![b"2".to_vec()]),
            (b"c".to_vec(), vec![b"3".to_vec()]),
        ];
        assert_eq!(parts, expected);
        let mut history = Vec::new();
        gathered
            .write_joined(Family::History, |key, values| {
                history.push((key.to_vec(), values.len()));
                Ok(())
            })
            .unwrap();
        assert_eq!(history, vec![(b"z".to_vec(), 1)]);
        gathered.clear();
        assert!(gathered.is_empty());
        assert!(!gathered.write_joined(Family::Parts, |_, _| Ok(())).unwrap());
    }

    /// Two writers on one queue each hold a spill at the same time: each, on taking one, waits
    /// (bounded) until two have been taken. Writers that took turns would never both hold one:
    /// the first would give up waiting, and the other would take none.
    #[test]
    fn writers_on_one_queue_write_at_once() {
        let (spills, queue) = sync_channel::<u32>(2);
        let queue = Arc::new(Mutex::new(queue));
        let taken = Arc::new((Mutex::new(0usize), Condvar::new()));
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let (queue, taken) = (queue.clone(), taken.clone());
                std::thread::spawn(move || {
                    let mut saw_both = false;
                    take_each(&queue, |_| {
                        let (count, changed) = &*taken;
                        let mut count = count.lock().unwrap_or_else(|poison| poison.into_inner());
                        *count += 1;
                        changed.notify_all();
                        let (count, _) = changed
                            .wait_timeout_while(count, Duration::from_secs(20), |count| *count < 2)
                            .unwrap_or_else(|poison| poison.into_inner());
                        saw_both |= *count >= 2;
                        Ok(())
                    })
                    .map(|()| saw_both)
                })
            })
            .collect();
        spills.send(1).unwrap();
        spills.send(2).unwrap();
        drop(spills);
        for writer in writers {
            assert!(writer.join().unwrap().unwrap(), "a writer held a spill alone: the writers took turns");
        }
    }
}
