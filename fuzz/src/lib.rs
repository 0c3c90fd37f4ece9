//! What the fuzz targets share: the scratch store the writing targets use, in a temporary
//! directory, replaced by a new one every [`INPUTS_PER_STORE`] inputs so that a long run's store
//! (every input lands its events in a space of its own) does not grow without end.

use std::sync::Mutex;

use casesync_engine::fuzz_targets::ScratchStore;

/// Inputs run against one store before it is replaced.
pub const INPUTS_PER_STORE: u64 = 20_000;

struct Scratch {
    store: ScratchStore,
    inputs: u64,
    // Dropped after the store (fields drop in order): RocksDB is closed before its files go.
    _dir: tempfile::TempDir,
}

static SCRATCH: Mutex<Option<Scratch>> = Mutex::new(None);

/// Runs `body` with the current scratch store.
pub fn with_scratch<T>(body: impl FnOnce(&ScratchStore) -> T) -> T {
    let mut held = SCRATCH.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if held.as_ref().is_none_or(|scratch| scratch.inputs >= INPUTS_PER_STORE) {
        *held = None;
        let dir = tempfile::tempdir().expect("a temporary directory for the store");
        let store = ScratchStore::open(dir.path()).expect("a store in a new temporary directory");
        *held = Some(Scratch { store, inputs: 0, _dir: dir });
    }
    let scratch = held.as_mut().expect("a scratch store was just made");
    scratch.inputs += 1;
    body(&scratch.store)
}
