//! Damage: values rewritten through RocksDB, flipped SST bytes, a truncated and a deleted SST.
//! verify must name the first bad event and exit 3; salvage must keep what verifies and report
//! exactly what was lost.

use std::path::Path;

use casesync_engine::codec::keys::event_key;
use casesync_engine::store::{Store, StoreOptions};
use serde_json::Value;

use crate::support::*;

/// Rewrites one stored event with a byte flipped near its end (inside the body).
fn corrupt_event(dir: &Path, seq: u64) {
    let db = raw_db(dir);
    let cf = db.cf_handle("events").unwrap();
    let key = event_key(&SPACE, &device(1).author(), seq);
    let mut value = db.get_cf(cf, key).unwrap().unwrap();
    let last = value.len() - 2;
    value[last] ^= 0x01;
    db.put_cf(cf, key, value).unwrap();
}

fn faults(report: &Value) -> Vec<Value> {
    report["spaces"].as_array().unwrap().iter().flat_map(|s| s["faults"].as_array().unwrap().clone()).collect()
}

#[test]
fn verify_names_an_event_rewritten_in_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = busy_node(&tmp.path().join("office"), 10, 2).close();
    corrupt_event(&dir, 12);
    for full in [false, true] {
        let mut args = vec!["verify", "--data", s(&dir)];
        if full {
            args.push("--full");
        }
        let (code, report) = replay_json(&args);
        assert_eq!(code, 3, "{report:#}");
        let faults = faults(&report);
        assert_eq!(faults.len(), 1, "{report:#}");
        assert_eq!(faults[0]["seq"], 12);
        assert_eq!(faults[0]["author"], device(1).author().to_hex().as_str());
        assert_eq!(faults[0]["space"], SPACE.to_hex().as_str());
    }
    let (code, text, _) = replay(&["verify", "--data", s(&dir)]);
    assert_eq!(code, 3);
    assert!(text.contains("FIRST BAD EVENT") && text.contains("seq 12"), "{text}");

    // Salvage keeps 1..11 and reports 12..33 as lost.
    let out = tmp.path().join("salvaged");
    let (code, report) = replay_json(&["salvage", "--data", s(&dir), "--out", s(&out)]);
    assert_eq!(code, 3, "{report:#}");
    let lost = report["lost"].as_array().unwrap();
    assert_eq!(lost.len(), 1, "{report:#}");
    assert_eq!(lost[0]["lost_from"], 12);
    assert_eq!(lost[0]["lost_to"], 33);
    assert_eq!(lost[0]["device_name"], "office");
    assert_eq!(report["recovered_events"], 11);
    // The device lost its own events: its key is not carried over (no self-fork).
    assert!(!out.join("device.key").exists());
    assert!(out.join("casesync.toml").exists());
    let (code, report) = replay_json(&["verify", "--data", s(&out)]);
    assert_eq!(code, 0, "{report:#}");
}

#[test]
fn a_damaged_head_fails_open_and_is_still_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = busy_node(&tmp.path().join("office"), 4, 1).close();
    corrupt_event(&dir, 11); // the head
    assert!(Store::open(&dir.join("db"), StoreOptions { projections: false, ..StoreOptions::compatible() }).is_err());
    let (code, report) = replay_json(&["verify", "--data", s(&dir)]);
    assert_eq!(code, 3, "{report:#}");
    assert!(report["open_error"].as_str().unwrap().contains("damaged"), "{report:#}");
    let faults = faults(&report);
    assert_eq!(faults.len(), 1, "{report:#}");
    assert_eq!(faults[0]["seq"], 11);
}

#[test]
fn a_flipped_sst_byte_is_found_and_salvaged_around() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = busy_node(&tmp.path().join("office"), 40, 5).close();
    let sst = flush_all(&dir);
    let mut bytes = std::fs::read(&sst).unwrap();
    let target = bytes.len() / 3;
    bytes[target] ^= 0x20;
    std::fs::write(&sst, &bytes).unwrap();

    let (code, report) = replay_json(&["verify", "--data", s(&dir)]);
    assert_eq!(code, 3, "{report:#}");
    let faults = faults(&report);
    assert_eq!(faults.len(), 1, "{report:#}");
    let bad = faults[0]["seq"].as_u64().unwrap();
    assert!((2..=243).contains(&bad), "{report:#}");
    assert_eq!(faults[0]["author"], device(1).author().to_hex().as_str());

    let out = tmp.path().join("salvaged");
    let (code, report) = replay_json(&["salvage", "--data", s(&dir), "--out", s(&out)]);
    assert_eq!(code, 3, "{report:#}");
    let lost = report["lost"].as_array().unwrap();
    assert_eq!(lost.len(), 1, "{report:#}");
    assert_eq!(lost[0]["lost_from"].as_u64().unwrap(), bad);
    assert_eq!(lost[0]["lost_to"], 243);
    assert_eq!(report["recovered_events"].as_u64().unwrap(), bad - 1);
    let (code, report) = replay_json(&["verify", "--data", s(&out)]);
    assert_eq!(code, 0, "{report:#}");
}

/// Two flushed generations of events: seq 1..=first in one SST, the rest in another.
fn two_generations(root: &Path) -> (std::path::PathBuf, std::path::PathBuf, u64, u64) {
    let node = busy_node(&root.join("office"), 20, 1);
    let first = node.vector().get(&device(1).author());
    let dir = node.close();
    flush_all(&dir);
    let node = Node {
        store: Store::open(&dir.join("db"), StoreOptions::compatible()).unwrap(),
        dir: dir.clone(),
        key: device(1),
    };
    for n in 0..20 {
        node.set(T0_MS + 1_000_000 + u64::from(n), n, "phone", "second generation");
    }
    let total = node.vector().get(&device(1).author());
    drop(node);
    let second = flush_all(&dir);
    (dir, second, first, total)
}

fn assert_salvage_loses_second_generation(root: &Path, dir: &Path, first: u64, total: u64) {
    let (code, report) = replay_json(&["verify", "--data", s(dir)]);
    assert_eq!(code, 3, "{report:#}");
    let out = root.join("salvaged");
    let (code, report) = replay_json(&["salvage", "--data", s(dir), "--out", s(&out)]);
    assert_eq!(code, 3, "{report:#}");
    let lost = report["lost"].as_array().unwrap();
    assert_eq!(lost.len(), 1, "{report:#}");
    assert_eq!(lost[0]["lost_from"].as_u64().unwrap(), first + 1, "{report:#}");
    assert_eq!(lost[0]["lost_to"].as_u64().unwrap(), total, "{report:#}");
    assert_eq!(report["recovered_events"].as_u64().unwrap(), first);
    let (code, report) = replay_json(&["verify", "--data", s(&out)]);
    assert_eq!(code, 0, "{report:#}");
}

#[test]
fn a_truncated_sst_is_salvaged_around() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, second, first, total) = two_generations(tmp.path());
    let length = std::fs::metadata(&second).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&second).unwrap().set_len(length / 2).unwrap();
    assert_salvage_loses_second_generation(tmp.path(), &dir, first, total);
}

#[test]
fn a_deleted_sst_is_salvaged_around() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, second, first, total) = two_generations(tmp.path());
    std::fs::remove_file(&second).unwrap();
    assert_salvage_loses_second_generation(tmp.path(), &dir, first, total);
}

#[test]
fn export_refuses_a_damaged_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = busy_node(&tmp.path().join("office"), 5, 1).close();
    corrupt_event(&dir, 3);
    let out = tmp.path().join("b.csbackup");
    let (code, report) = replay_json(&["export", "--data", s(&dir), "--out", s(&out)]);
    assert_eq!(code, 3, "{report:#}");
    assert!(!out.exists());
    assert!(!tmp.path().join("b.csbackup.partial").exists());
}

/// A bulk catch-up interrupted before its end (a crash, a kill -9, a full disk) leaves views
/// behind the log and says so with their watermark. That is no damage: verify says the views
/// lag, how they get repaired, and exits 4 (not 3, and it recommends no salvage); the next open
/// rebuilds them, after which verify passes.
#[test]
fn verify_reports_views_behind_the_log_as_lagging_not_as_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let office = busy_node(&tmp.path().join("office"), 10, 2);
    let laptop = Node::create(&tmp.path().join("laptop"), 2, "laptop");
    laptop.store.begin_bulk_catch_up();
    laptop.pull(&office);
    // Ended neither by `end_bulk_catch_up` nor by a clean close of the views: as a crash leaves it.
    let dir = laptop.close();
    for full in [false, true] {
        let mut args = vec!["verify", "--data", s(&dir)];
        if full {
            args.push("--full");
        }
        let (code, report) = replay_json(&args);
        assert_eq!(code, 4, "{report:#}");
        let projections = &report["spaces"][0]["projections"];
        assert_eq!(projections["lagging"], true, "{report:#}");
        assert_eq!(projections["events_behind"], office.vector().total(), "{report:#}");
        assert_eq!(projections["equal_at_watermark"], true, "{report:#}");
        assert!(faults(&report).is_empty(), "{report:#}");
    }
    let (code, text, _) = replay(&["verify", "--data", s(&dir)]);
    assert_eq!(code, 4, "{text}");
    assert!(text.contains("VIEWS BEHIND") && text.contains("rebuilds them"), "{text}");
    assert!(!text.contains("salvage") && !text.contains("DAMAGED"), "{text}");

    // The next open rebuilds the views; then nothing lags.
    drop(Store::open(&dir.join("db"), StoreOptions::compatible()).unwrap());
    let (code, report) = replay_json(&["verify", "--data", s(&dir)]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["spaces"][0]["projections"]["equal"], true, "{report:#}");
}
