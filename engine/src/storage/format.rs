//! The on-disk format version: checked at every open, upgraded from older versions. See
//! `docs/log-format.md`.

use rocksdb::{WriteBatch, WriteOptions, DB};

use crate::codec::keys::{CF_META, META_FORMAT_VERSION};
use crate::error::OpenError;

/// The on-disk format this build writes and reads. See `docs/log-format.md`.
pub const FORMAT_VERSION: u32 = 6;

/// Checks the format version of an opened database: writes it into a new one, upgrades an older
/// one, refuses a newer one.
pub(crate) fn check(db: &DB) -> Result<(), OpenError> {
    let meta = cf_meta(db)?;
    match db.get_cf(meta, META_FORMAT_VERSION)? {
        None => {
            let mut batch = WriteBatch::default();
            batch.put_cf(meta, META_FORMAT_VERSION, FORMAT_VERSION.to_be_bytes());
            let mut write = WriteOptions::default();
            write.set_sync(true);
            db.write_opt(batch, &write)?;
            Ok(())
        }
        Some(bytes) => {
            let found = <[u8; 4]>::try_from(bytes.as_slice())
                .map(u32::from_be_bytes)
                .map_err(|_| OpenError::Damaged("format version record is not 4 bytes".into()))?;
            if found > FORMAT_VERSION {
                return Err(OpenError::FormatTooNew { found, supported: FORMAT_VERSION });
            }
            if found < FORMAT_VERSION {
                upgrade(db, found)?;
            }
            Ok(())
        }
    }
}

/// Upgrades an older format. Version 1 kept each case's projection as one record; version 2
/// one record per register; version 3 writes those records as merge operands into a new
/// column family (the old one is dropped after this): from 1 and 2 only derived data changed,
/// so the watermarks are dropped (in the synced batch with the new version) and the
/// projections rebuilt from the log. Version 4 writes arrival records per run of events, and
/// version 5 history records of several entries; the readers still read the single-event
/// records before them, so from 3 and 4 only the version moves (an older build refuses the
/// newer version instead of misreading its records).
fn upgrade(db: &DB, found: u32) -> Result<(), OpenError> {
    let mut batch = WriteBatch::default();
    let meta = cf_meta(db)?;
    if found < 6 {
        tracing::info!(from = found, to = FORMAT_VERSION, "upgrading the store format: projections are rebuilt");
        // Before 3 the old projections are in the legacy family (dropped after this) and
        // `case_parts` is new and empty; from 3 the rebuild clears `case_parts` first.
        for item in db.prefix_iterator_cf(meta, b"watermark/") {
            let (key, _) = item?;
            if !key.starts_with(b"watermark/") {
                break;
            }
            batch.delete_cf(meta, key);
        }
    } else {
        tracing::info!(from = found, to = FORMAT_VERSION, "upgrading the store format");
    }
    batch.put_cf(meta, META_FORMAT_VERSION, FORMAT_VERSION.to_be_bytes());
    let mut write = WriteOptions::default();
    write.set_sync(true);
    db.write_opt(batch, &write)?;
    Ok(())
}

fn cf_meta(db: &DB) -> Result<&rocksdb::ColumnFamily, OpenError> {
    db.cf_handle(CF_META).ok_or_else(|| OpenError::Damaged(format!("column family {CF_META} did not open")))
}
