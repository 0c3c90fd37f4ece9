//! The portable backup file (`replay-tool export` / `import`): a header naming the space, the
//! events exactly as stored, and a trailer with the event count and a blake3 over every byte
//! before it. `docs/backup-format.md` draws the same layout byte by byte.
//!
//! Both sides stream: [`BackupWriter`] and [`BackupReader`] hold one record at a time, so a
//! backup of a million events never sits in memory. The trailer proves the file is complete and
//! unchanged; the signatures and hash links inside the events prove who wrote them (see
//! [`crate::model::verify`]).

use std::io::{self, Read, Write};

use crate::model::ids::{AuthorId, SpaceId};
use crate::model::limits::{DEVICE_NAME_BYTES_MAX, EVENT_BYTES_MAX, SIGNATURE_BYTES};
use crate::model::stream_hash::StreamHasher;
use crate::model::vector_clock::VersionVector;

/// The first 8 bytes of every backup file.
pub const MAGIC: [u8; 8] = *b"CSBACKUP";
/// The backup format this build writes and reads.
pub const BACKUP_FORMAT_VERSION: u32 = 1;
/// Tag byte of an event record.
pub const TAG_EVENT: u8 = b'E';
/// Tag byte of the trailer.
pub const TAG_TRAILER: u8 = b'T';
/// Largest event record: a signature and the largest event.
pub const RECORD_BYTES_MAX: usize = SIGNATURE_BYTES + EVENT_BYTES_MAX;
/// Most authors in the header's base vector.
pub const BASE_AUTHORS_MAX: u32 = 1 << 20;
/// Most members in the header.
pub const MEMBERS_MAX: u32 = 1 << 16;

/// Why a backup file cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// Reading or writing the file failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The file does not start with [`MAGIC`].
    #[error("not a casesync backup file (bad magic)")]
    BadMagic,
    /// The file was written by a newer format.
    #[error("backup format version {found}; this build reads up to {supported}")]
    VersionTooNew {
        /// Version in the file.
        found: u32,
        /// Newest version this build reads.
        supported: u32,
    },
    /// The file ends before the trailer (cut off in a copy, or a disk full while writing).
    #[error("the backup is truncated: it ends at byte {offset} inside {inside}")]
    Truncated {
        /// Bytes read before the end.
        offset: u64,
        /// What was being read.
        inside: &'static str,
    },
    /// A header or record field has an impossible value.
    #[error("the backup is damaged at byte {offset}: {reason}")]
    Malformed {
        /// Offset of the bad field.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The trailer's event count differs from the records in the file.
    #[error("the trailer counts {trailer} events but the file holds {found}")]
    CountMismatch {
        /// Count in the trailer.
        trailer: u64,
        /// Records read.
        found: u64,
    },
    /// The trailer's hash differs from the hash of the bytes before it.
    #[error("the backup's checksum does not match its content (trailer {trailer}, computed {computed})")]
    HashMismatch {
        /// Hash in the trailer (hex).
        trailer: String,
        /// Hash of the bytes read (hex).
        computed: String,
    },
    /// Bytes follow the trailer.
    #[error("{0} unexpected bytes follow the trailer")]
    TrailingBytes(u64),
}

/// What the header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupHeader {
    /// Format version of the file.
    pub version: u32,
    /// The space every event belongs to.
    pub space: SpaceId,
    /// What the export assumed the importer already holds (`--since`; empty for a full backup).
    pub base: VersionVector,
    /// Known devices and their names at export time.
    pub members: Vec<(AuthorId, String)>,
}

/// What the trailer says, once verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupSummary {
    /// Event records in the file.
    pub events: u64,
    /// blake3 of every byte before the hash (hex).
    pub blake3: String,
    /// Total size of the file in bytes.
    pub bytes: u64,
}

/// Writes a backup file: header at construction, one record per event, trailer on finish.
pub struct BackupWriter<W: Write> {
    out: W,
    hasher: StreamHasher,
    events: u64,
    bytes: u64,
}

impl<W: Write> BackupWriter<W> {
    /// Writes the header. Member names longer than [`DEVICE_NAME_BYTES_MAX`] are cut.
    pub fn new(out: W, header: &BackupHeader) -> Result<BackupWriter<W>, BackupError> {
        let mut writer = BackupWriter { out, hasher: StreamHasher::new(), events: 0, bytes: 0 };
        writer.put(&MAGIC)?;
        writer.put(&BACKUP_FORMAT_VERSION.to_be_bytes())?;
        writer.put(header.space.as_bytes())?;
        writer.put(&len_u32(header.base.len())?.to_be_bytes())?;
        for (author, seq) in header.base.iter() {
            writer.put(author.as_bytes())?;
            writer.put(&seq.to_be_bytes())?;
        }
        writer.put(&len_u32(header.members.len())?.to_be_bytes())?;
        for (author, name) in &header.members {
            let name = truncate_utf8(name, DEVICE_NAME_BYTES_MAX);
            writer.put(author.as_bytes())?;
            writer.put(&[name.len() as u8])?;
            writer.put(name.as_bytes())?;
        }
        Ok(writer)
    }

    /// Appends one event record: the stored value (signature then event bytes), given as its two
    /// parts so callers need not join them.
    pub fn event(&mut self, signature: &[u8], event: &[u8]) -> Result<(), BackupError> {
        let length = signature.len() + event.len();
        if signature.len() != SIGNATURE_BYTES || length > RECORD_BYTES_MAX {
            return Err(BackupError::Malformed { offset: self.bytes, reason: "event record of impossible size" });
        }
        self.put(&[TAG_EVENT])?;
        self.put(&len_u32(length)?.to_be_bytes())?;
        self.put(signature)?;
        self.put(event)?;
        self.events += 1;
        Ok(())
    }

    /// Event records written so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Writes the trailer, flushes, and returns the summary and the inner writer.
    pub fn finish(mut self) -> Result<(BackupSummary, W), BackupError> {
        self.put(&[TAG_TRAILER])?;
        self.put(&self.events.to_be_bytes())?;
        let hash = self.hasher.finalize();
        self.out.write_all(hash.as_bytes())?;
        self.bytes += 32;
        self.out.flush()?;
        let summary = BackupSummary { events: self.events, blake3: hash.to_hex().to_string(), bytes: self.bytes };
        Ok((summary, self.out))
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), BackupError> {
        self.out.write_all(bytes)?;
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }
}

fn len_u32(n: usize) -> Result<u32, BackupError> {
    u32::try_from(n).map_err(|_| BackupError::Malformed { offset: 0, reason: "a length does not fit in 32 bits" })
}

fn truncate_utf8(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One record read from a backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupRecord {
    /// An event record: the stored value (signature(64) then the event bytes), and the offset
    /// of its tag byte in the file.
    Event {
        /// Offset of the record in the file.
        offset: u64,
        /// Signature followed by the exact event bytes.
        stored: Vec<u8>,
    },
    /// The trailer was reached and verified: the count and hash match.
    End(BackupSummary),
}

/// Reads a backup file record by record, verifying the trailer when it is reached.
pub struct BackupReader<R: Read> {
    input: R,
    hasher: StreamHasher,
    offset: u64,
    events: u64,
    header: BackupHeader,
    done: bool,
}

impl<R: Read> BackupReader<R> {
    /// Reads and checks the header.
    pub fn new(input: R) -> Result<BackupReader<R>, BackupError> {
        let mut reader = BackupReader {
            input,
            hasher: StreamHasher::new(),
            offset: 0,
            events: 0,
            header: BackupHeader {
                version: 0,
                space: SpaceId::default(),
                base: VersionVector::new(),
                members: Vec::new(),
            },
            done: false,
        };
        let mut magic = [0u8; 8];
        reader.take(&mut magic, "the header")?;
        if magic != MAGIC {
            return Err(BackupError::BadMagic);
        }
        let version = reader.u32("the header")?;
        if version > BACKUP_FORMAT_VERSION || version == 0 {
            return Err(BackupError::VersionTooNew { found: version, supported: BACKUP_FORMAT_VERSION });
        }
        let mut space = [0u8; 16];
        reader.take(&mut space, "the header")?;
        let authors = reader.u32("the header")?;
        if authors > BASE_AUTHORS_MAX {
            return Err(BackupError::Malformed { offset: reader.offset - 4, reason: "too many authors in the base" });
        }
        let mut base = VersionVector::new();
        for _ in 0..authors {
            let mut author = [0u8; 32];
            reader.take(&mut author, "the header")?;
            let seq = reader.u64("the header")?;
            base.raise(AuthorId(author), seq);
        }
        let members = reader.u32("the header")?;
        if members > MEMBERS_MAX {
            return Err(BackupError::Malformed { offset: reader.offset - 4, reason: "too many members" });
        }
        let mut member_list = Vec::with_capacity(members as usize);
        for _ in 0..members {
            let mut author = [0u8; 32];
            reader.take(&mut author, "the header")?;
            let mut length = [0u8; 1];
            reader.take(&mut length, "the header")?;
            if usize::from(length[0]) > DEVICE_NAME_BYTES_MAX {
                return Err(BackupError::Malformed { offset: reader.offset - 1, reason: "member name too long" });
            }
            let mut name = vec![0u8; usize::from(length[0])];
            reader.take(&mut name, "the header")?;
            member_list.push((AuthorId(author), String::from_utf8_lossy(&name).into_owned()));
        }
        reader.header = BackupHeader { version, space: SpaceId(space), base, members: member_list };
        Ok(reader)
    }

    /// The header.
    pub fn header(&self) -> &BackupHeader {
        &self.header
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next record. After [`BackupRecord::End`] (which checks count, hash and that nothing
    /// follows), every call returns `End` again with the same summary.
    pub fn next_record(&mut self) -> Result<BackupRecord, BackupError> {
        if self.done {
            return Ok(BackupRecord::End(self.summary()));
        }
        let start = self.offset;
        let mut tag = [0u8; 1];
        self.take(&mut tag, "a record tag")?;
        match tag[0] {
            TAG_EVENT => {
                let length = self.u32("a record length")? as usize;
                if !(SIGNATURE_BYTES..=RECORD_BYTES_MAX).contains(&length) {
                    return Err(BackupError::Malformed {
                        offset: start + 1,
                        reason: "event record of impossible size",
                    });
                }
                let mut stored = vec![0u8; length];
                self.take(&mut stored, "an event record")?;
                self.events += 1;
                Ok(BackupRecord::Event { offset: start, stored })
            }
            TAG_TRAILER => {
                let trailer_count = self.u64("the trailer")?;
                let computed = self.hasher.finalize();
                let mut hash = [0u8; 32];
                self.take_raw(&mut hash, "the trailer")?;
                let trailing = io::copy(&mut self.input, &mut io::sink())?;
                if hash != *computed.as_bytes() {
                    return Err(BackupError::HashMismatch {
                        trailer: hex::encode(hash),
                        computed: computed.to_hex().to_string(),
                    });
                }
                if trailer_count != self.events {
                    return Err(BackupError::CountMismatch { trailer: trailer_count, found: self.events });
                }
                if trailing > 0 {
                    return Err(BackupError::TrailingBytes(trailing));
                }
                self.done = true;
                Ok(BackupRecord::End(self.summary()))
            }
            _ => Err(BackupError::Malformed { offset: start, reason: "unknown record tag" }),
        }
    }

    /// What the file held, once its trailer is read.
    fn summary(&mut self) -> BackupSummary {
        let blake3 = self.hasher.finalize().to_hex().to_string();
        BackupSummary { events: self.events, blake3, bytes: self.offset }
    }

    fn take(&mut self, buf: &mut [u8], inside: &'static str) -> Result<(), BackupError> {
        self.take_raw(buf, inside)?;
        self.hasher.update(buf);
        Ok(())
    }

    fn take_raw(&mut self, buf: &mut [u8], inside: &'static str) -> Result<(), BackupError> {
        if self.done {
            return Err(BackupError::Malformed { offset: self.offset, reason: "read past the trailer" });
        }
        let mut filled = 0;
        while filled < buf.len() {
            match self.input.read(&mut buf[filled..]) {
                Ok(0) => return Err(BackupError::Truncated { offset: self.offset + filled as u64, inside }),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn u32(&mut self, inside: &'static str) -> Result<u32, BackupError> {
        let mut bytes = [0u8; 4];
        self.take(&mut bytes, inside)?;
        Ok(u32::from_be_bytes(bytes))
    }

    fn u64(&mut self, inside: &'static str) -> Result<u64, BackupError> {
        let mut bytes = [0u8; 8];
        self.take(&mut bytes, inside)?;
        Ok(u64::from_be_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<u8>, BackupHeader) {
        let header = BackupHeader {
            version: BACKUP_FORMAT_VERSION,
            space: SpaceId([3; 16]),
            base: [(AuthorId([1; 32]), 5)].into_iter().collect(),
            members: vec![(AuthorId([1; 32]), "office".into())],
        };
        let mut writer = BackupWriter::new(Vec::new(), &header).unwrap();
        writer.event(&[7; 64], b"first").unwrap();
        writer.event(&[8; 64], b"second").unwrap();
        let (summary, bytes) = writer.finish().unwrap();
        assert_eq!(summary.events, 2);
        assert_eq!(summary.bytes, bytes.len() as u64);
        (bytes, header)
    }

    fn read_all(bytes: &[u8]) -> Result<(BackupHeader, Vec<Vec<u8>>, BackupSummary), BackupError> {
        let mut reader = BackupReader::new(bytes)?;
        let header = reader.header().clone();
        let mut events = Vec::new();
        loop {
            match reader.next_record()? {
                BackupRecord::Event { stored, .. } => events.push(stored),
                BackupRecord::End(summary) => return Ok((header, events, summary)),
            }
        }
    }

    #[test]
    fn round_trip() {
        let (bytes, header) = sample();
        let (read_header, events, summary) = read_all(&bytes).unwrap();
        assert_eq!(read_header, header);
        assert_eq!(events.len(), 2);
        assert_eq!(&events[1][64..], b"second");
        assert_eq!(summary.bytes, bytes.len() as u64);
        assert_eq!(summary.blake3, hex::encode(blake3::hash(&bytes[..bytes.len() - 32]).as_bytes()));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let (bytes, _) = sample();
        for cut in 0..bytes.len() {
            assert!(read_all(&bytes[..cut]).is_err(), "a cut at {cut} was not detected");
        }
    }

    #[test]
    fn every_byte_flip_is_an_error() {
        let (bytes, _) = sample();
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x01;
            assert!(read_all(&flipped).is_err(), "a flip at byte {i} was not detected");
        }
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let (mut bytes, _) = sample();
        bytes.push(0);
        assert!(matches!(read_all(&bytes), Err(BackupError::TrailingBytes(1))));
    }
}
