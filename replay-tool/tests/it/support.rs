//! Shared helpers: real data dirs built with the engine API, and running the real binary.

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use casesync_engine::codec::keys::ALL_CFS;
use casesync_engine::commands::Command;
use casesync_engine::model::ids::{CaseId, EntryId, SpaceId};
use casesync_engine::model::operation::{FieldValue, StatusChange};
use casesync_engine::model::signing::DeviceKey;
use casesync_engine::model::vector_clock::VersionVector;
use casesync_engine::projection::queries::CaseFilter;
use casesync_engine::store::{Store, StoreOptions};
pub use casesync_engine::testkit::device;
use serde_json::Value;

pub const SPACE: SpaceId = SpaceId([0x5a; 16]);
/// 2026-11-23T12:00:00Z.
pub const T0_MS: u64 = 1_795_435_200_000;

pub fn case(n: u32) -> CaseId {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&n.to_be_bytes());
    id[15] = 0xcc;
    CaseId(id)
}

/// A node's data dir as `casesync init` lays it out: config, identity, store.
pub struct Node {
    pub dir: PathBuf,
    pub store: Store,
    pub key: DeviceKey,
}

impl Node {
    pub fn create(dir: &Path, n: u8, name: &str) -> Node {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("casesync.toml"), format!("space = \"{}\"\nrelay = false\n", SPACE.to_hex())).unwrap();
        let key = device(n);
        std::fs::write(dir.join("device.key"), key.secret()).unwrap();
        std::fs::write(dir.join("device.name"), name).unwrap();
        let store =
            Store::open(&dir.join("db"), StoreOptions { projections: true, ..StoreOptions::compatible() }).unwrap();
        store.add_member(&SPACE, &key.author(), name).unwrap();
        Node { dir: dir.to_path_buf(), store, key }
    }

    pub fn run(&self, now_ms: u64, command: Command) {
        self.store.execute(&SPACE, &self.key, now_ms, command).unwrap();
    }

    pub fn create_case(&self, now_ms: u64, n: u32, name: &str) {
        let fields = vec![("name".into(), FieldValue::Text(name.into())), ("n".into(), FieldValue::Integer(n as i64))];
        self.run(now_ms, Command::CreateCase { id: case(n), fields });
    }

    pub fn set(&self, now_ms: u64, n: u32, field: &str, value: &str) {
        self.run(
            now_ms,
            Command::SetFields { case: case(n), fields: vec![(field.into(), FieldValue::Text(value.into()))] },
        );
    }

    pub fn views(&self) -> Value {
        serde_json::to_value(self.store.list_cases(&SPACE, &CaseFilter::default()).unwrap()).unwrap()
    }

    pub fn hash(&self) -> String {
        self.store.state_hash(&SPACE).unwrap()
    }

    pub fn vector(&self) -> VersionVector {
        self.store.vector(&SPACE)
    }

    /// Brings `self` up to date with `other` (what a sync does).
    pub fn pull(&self, other: &Node) {
        let missing: Vec<_> = other
            .store
            .events_after(&SPACE, &self.vector())
            .map(|r| r.map(|(_, _, e)| e))
            .collect::<Result<_, _>>()
            .unwrap();
        let report = self.store.ingest(&SPACE, missing).unwrap();
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    }

    /// Closes the store, leaving the dir.
    pub fn close(self) -> PathBuf {
        self.dir
    }
}

/// A varied log: `cases` cases with edits, an entry, an archive and a delete, by one device.
pub fn busy_node(dir: &Path, cases: u32, edits: u32) -> Node {
    let node = Node::create(dir, 1, "office");
    let mut t = T0_MS;
    for n in 0..cases {
        t += 1000;
        node.create_case(t, n, &format!("client {n}"));
    }
    for round in 0..edits {
        for n in 0..cases {
            t += 1000;
            node.set(t, n, "phone", &format!("030-{round}-{n}"));
        }
    }
    t += 1000;
    node.run(
        t,
        Command::AddEntry {
            case: case(0),
            entry: EntryId([1; 16]),
            fields: vec![("note".into(), FieldValue::Text("first".into()))],
        },
    );
    t += 1000;
    node.run(t, Command::ChangeStatus { case: case(1), change: StatusChange::Archive });
    if cases > 2 {
        t += 1000;
        node.run(t, Command::ChangeStatus { case: case(2), change: StatusChange::Delete });
    }
    node
}

/// The practice PIN of the data dirs these tests make with the node's code.
pub const TEST_PIN: &str = "test pin 2468";

/// This test process's PIN for the node's code, at the cheap cost.
pub fn use_test_pin() {
    casesync_node::pin::use_for_process(TEST_PIN, casesync_engine::identity::KdfCost::FAST_FOR_TESTS);
}

/// Runs the real binary with the test PIN: (exit code, stdout, stderr).
pub fn replay(args: &[&str]) -> (i32, String, String) {
    replay_with_pin(args, Some(TEST_PIN))
}

/// Runs the real binary with `pin` (none: no PIN in its environment).
pub fn replay_with_pin(args: &[&str], pin: Option<&str>) -> (i32, String, String) {
    let mut command = Process::new(env!("CARGO_BIN_EXE_replay-tool"));
    command.env_remove("CASESYNC_PIN").env_remove("CASESYNC_PIN_FILE");
    if let Some(pin) = pin {
        command.env("CASESYNC_PIN", pin);
    }
    let output = command
        .args(args)
        .env("RUST_LOG", std::env::var("REPLAY_TOOL_TEST_LOG").unwrap_or_else(|_| "error".into()))
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs the real binary with `--json`: (exit code, report).
pub fn replay_json(args: &[&str]) -> (i32, Value) {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, stdout, stderr) = replay(&all);
    if !stderr.is_empty() {
        eprintln!("{stderr}");
    }
    let value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): stdout {stdout:?} stderr {stderr:?}"));
    (code, value)
}

pub fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Opens the RocksDB of a closed store directly, with every column family.
pub fn raw_db(dir: &Path) -> rocksdb::DB {
    casesync_engine::storage::families::open_direct(&dir.join("db")).unwrap()
}

/// Flushes every column family of a closed store to SST files (opening may already have flushed
/// the recovered memtables); returns the events SST holding the newest keys.
pub fn flush_all(dir: &Path) -> PathBuf {
    let db = raw_db(dir);
    for name in ALL_CFS {
        db.flush_cf(db.cf_handle(name).unwrap()).unwrap();
    }
    let newest = db
        .live_files()
        .unwrap()
        .into_iter()
        .filter(|f| f.column_family_name == "events")
        .max_by_key(|f| f.end_key.clone())
        .unwrap();
    drop(db);
    let path = dir.join("db").join(newest.name.trim_start_matches('/'));
    assert!(path.exists(), "{}", path.display());
    path
}
