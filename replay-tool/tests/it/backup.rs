//! Export, import, incremental chains, the migration path, and refused backups.

use casesync_engine::model::vector_clock::VersionVector;
use casesync_engine::projection::queries::CaseFilter;
use casesync_engine::store::{Store, StoreOptions};

use crate::support::*;

/// An office node with `cases` cases and `edits` edits each, exported to `b.csbackup` in `tmp`:
/// the node's state hash and vector, and the backup file.
fn exported_office(tmp: &std::path::Path, cases: u32, edits: u32) -> (String, VersionVector, std::path::PathBuf) {
    let node = busy_node(&tmp.join("office"), cases, edits);
    let (hash, vector) = (node.hash(), node.vector());
    let dir = node.close();
    let backup = tmp.join("b.csbackup");
    let (code, report) = replay_json(&["export", "--data", s(&dir), "--out", s(&backup)]);
    assert_eq!(code, 0, "{report:#}");
    (hash, vector, backup)
}

#[test]
fn verify_and_rebuild_on_a_good_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let node = busy_node(&tmp.path().join("office"), 20, 3);
    let hash = node.hash();
    let dir = node.close();
    for full in [false, true] {
        let mut args = vec!["verify", "--data", s(&dir)];
        if full {
            args.push("--full");
        }
        let (code, report) = replay_json(&args);
        assert_eq!(code, 0, "{report:#}");
        assert_eq!(report["ok"], true);
        let space = &report["spaces"][0];
        assert_eq!(space["events"], 20 + 60 + 3);
        assert_eq!(space["faults"].as_array().unwrap().len(), 0);
        assert_eq!(space["projections"]["equal"], true);
        assert_eq!(space["projections"]["replayed_hash"], hash.as_str());
    }
    let (code, text, _) = replay(&["verify", "--data", s(&dir)]);
    assert_eq!(code, 0);
    assert!(text.contains("OK"), "{text}");
    let (code, report) = replay_json(&["rebuild", "--data", s(&dir)]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["state_hash"], hash.as_str());
    assert_eq!(report["events"], 83);
    // The tool leaves the store settled: what the rebuild wrote is compacted before it exits.
    assert_eq!(report["settled"], true, "{report:#}");
    assert!(report["fold_seconds"].as_f64() <= report["seconds"].as_f64(), "{report:#}");
}

#[test]
fn migration_export_import_gives_the_same_state_hash() {
    use_test_pin();
    let tmp = tempfile::tempdir().unwrap();
    // Two devices editing, synced: the old computer holds both chains.
    let office = Node::create(&tmp.path().join("office"), 1, "office");
    let laptop = Node::create(&tmp.path().join("laptop"), 2, "laptop");
    office.store.add_member(&SPACE, &device(2).author(), "laptop").unwrap();
    for n in 0..10 {
        office.create_case(T0_MS + u64::from(n) * 1000, n, "a");
    }
    laptop.pull(&office);
    office.set(T0_MS + 20_000, 3, "phone", "office");
    laptop.set(T0_MS + 20_500, 3, "phone", "laptop"); // concurrent: a conflict
    office.pull(&laptop);
    let hash = office.hash();
    let views = office.views();
    let old = office.close();
    let backup = tmp.path().join("old.csbackup");
    let (code, report) = replay_json(&["export", "--data", s(&old), "--out", s(&backup)]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["events"], 12);
    assert!(!tmp.path().join("old.csbackup.partial").exists());

    // The new computer: an empty dir.
    let new = tmp.path().join("new");
    let (code, report) = replay_json(&["import", "--data", s(&new), s(&backup)]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["accepted"], 12);
    assert_eq!(report["state_hash"], hash.as_str());
    // The tool leaves the store settled, and its time counts the wait.
    assert_eq!(report["settled"], true, "{report:#}");
    assert!(report["settle_seconds"].as_f64().is_some_and(|w| w <= report["seconds"].as_f64().unwrap_or(0.0)));
    let config = std::fs::read_to_string(new.join("casesync.toml")).unwrap();
    assert!(config.contains(&SPACE.to_hex()), "{config}");
    let (code, report) = replay_json(&["verify", "--data", s(&new)]);
    assert_eq!(code, 0, "{report:#}");
    {
        let store = Store::open(&new.join("db"), StoreOptions::compatible()).unwrap();
        assert_eq!(store.state_hash(&SPACE).unwrap(), hash);
        assert_eq!(serde_json::to_value(store.list_cases(&SPACE, &CaseFilter::default()).unwrap()).unwrap(), views);
        assert_eq!(store.member(&SPACE, &device(2).author()).unwrap().as_deref(), Some("laptop"));
    }
    // Storing first and rebuilding once gives the very same result.
    let rebuilt = tmp.path().join("rebuilt");
    let (code, report) = replay_json(&["import", "--data", s(&rebuilt), s(&backup), "--projections", "rebuild"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["projections"], "rebuilt");
    assert_eq!(report["state_hash"], hash.as_str());
    let (code, report) = replay_json(&["verify", "--data", s(&rebuilt)]);
    assert_eq!(code, 0, "{report:#}");
    // So does folding in memory while storing (what `auto` picks for large imports).
    let bulk = tmp.path().join("bulk");
    let (code, report) = replay_json(&["import", "--data", s(&bulk), s(&backup), "--projections", "bulk"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["projections"], "bulk");
    assert_eq!(report["state_hash"], hash.as_str());
    let (code, report) = replay_json(&["verify", "--data", s(&bulk)]);
    assert_eq!(code, 0, "{report:#}");
    // Importing again is harmless.
    let (code, report) = replay_json(&["import", "--data", s(&new), s(&backup)]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["accepted"], 0);
    assert_eq!(report["already_held"], 12);
    assert_eq!(report["state_hash"], hash.as_str());
    // The new computer joins as a new device: its own key, the imported cases. This test's space
    // has no founding event (its log is written without membership), so the node, which judges
    // every write by the space's membership, refuses to write in it, clearly; a founded space's
    // migration is in `a_founded_space_migrates_with_its_membership`.
    {
        let joined = casesync_node::data_dir::init(&new, "newpc", None, false, None).unwrap();
        let node = casesync_node::data_dir::open(&new, false).unwrap();
        let me = node.identity.author();
        assert_eq!(joined.space, SPACE.to_hex());
        assert!(me != device(1).author() && me != device(2).author(), "the new computer has its own key");
        assert_eq!(node.store.state_hash(&SPACE).unwrap(), hash);
        let command = casesync_engine::commands::Command::CreateCase {
            id: casesync_engine::model::ids::CaseId([0xee; 16]),
            fields: vec![],
        };
        let refused = node.store.execute(&SPACE, &node.identity.key, T0_MS + 60_000, command).unwrap_err();
        assert!(refused.to_string().contains("is not a member of this space"), "{refused}");
        assert_eq!(node.store.head(&SPACE, &me), None);
    }
}

#[test]
fn incremental_exports_chain_up() {
    let tmp = tempfile::tempdir().unwrap();
    let node = busy_node(&tmp.path().join("office"), 5, 1);
    let dir = node.dir.clone();
    drop(node);
    let full = tmp.path().join("full.csbackup");
    let (code, first) = replay_json(&["export", "--data", s(&dir), "--out", s(&full)]);
    assert_eq!(code, 0, "{first:#}");
    // More work on the old computer.
    let node = Node {
        store: Store::open(&dir.join("db"), StoreOptions::compatible()).unwrap(),
        dir: dir.clone(),
        key: device(1),
    };
    for n in 0..5 {
        node.set(T0_MS + 100_000 + u64::from(n), n, "phone", "new");
    }
    node.create_case(T0_MS + 200_000, 77, "late");
    let hash = node.hash();
    drop(node);
    let delta = tmp.path().join("delta.csbackup");
    // The vector printed by the first export, as JSON.
    let since = first.to_string();
    let (code, second) = replay_json(&["export", "--data", s(&dir), "--out", s(&delta), "--since", &since]);
    assert_eq!(code, 0, "{second:#}");
    assert_eq!(second["events"], 6);
    // ... and in the text form.
    let text_since: String =
        first["vector"].as_object().unwrap().iter().map(|(a, s)| format!("{a}:{s}")).collect::<Vec<_>>().join(",");
    let delta2 = tmp.path().join("delta2.csbackup");
    let (code, again) = replay_json(&["export", "--data", s(&dir), "--out", s(&delta2), "--since", &text_since]);
    assert_eq!(code, 0);
    assert_eq!(again["blake3"], second["blake3"]);

    // The delta alone cannot be anchored: refused, nothing stored.
    let lone = tmp.path().join("lone");
    let (code, report) = replay_json(&["import", "--data", s(&lone), s(&delta)]);
    assert_eq!(code, 3, "{report:#}");
    assert!(report["error"].as_str().unwrap().contains("import the backup it continues first"), "{report:#}");
    assert!(!lone.join("db").exists());

    let fresh = tmp.path().join("fresh");
    let (code, _) = replay_json(&["import", "--data", s(&fresh), s(&full)]);
    assert_eq!(code, 0);
    let (code, report) = replay_json(&["import", "--data", s(&fresh), s(&delta)]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["accepted"], 6);
    assert_eq!(report["state_hash"], hash.as_str());
}

#[test]
fn an_import_into_a_new_data_dir_replaces_a_crashed_one_and_refuses_a_concurrent_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (hash, _, backup) = exported_office(tmp.path(), 8, 2);
    let new = tmp.path().join("new");
    let staging = new.join("db.importing");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("CURRENT"), b"left by an import that crashed").unwrap();
    {
        // Another import holds the data dir: refused, nothing touched.
        let lock = std::fs::File::open(&new).unwrap();
        lock.try_lock().unwrap();
        let (code, report) = replay_json(&["import", "--data", s(&new), s(&backup)]);
        assert_eq!(code, 1, "{report:#}");
        assert!(report["error"].as_str().unwrap().contains("another import into"), "{report:#}");
        assert!(staging.join("CURRENT").exists());
        assert!(!new.join("db").exists());
    }
    // The staging store of a crashed import was never a store: the next import replaces it.
    let (code, report) = replay_json(&["verify", "--data", s(&new)]);
    assert_ne!(code, 0, "{report:#}");
    let (code, report) = replay_json(&["import", "--data", s(&new), s(&backup)]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["state_hash"], hash.as_str());
    assert!(!staging.exists());
    let (code, report) = replay_json(&["verify", "--data", s(&new)]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["spaces"][0]["projections"]["replayed_hash"], hash.as_str());
    // A `db/` that is not a store is never replaced.
    let odd = tmp.path().join("odd");
    std::fs::create_dir_all(odd.join("db")).unwrap();
    std::fs::write(odd.join("db").join("notes.txt"), b"mine").unwrap();
    let (code, report) = replay_json(&["import", "--data", s(&odd), s(&backup)]);
    assert_eq!(code, 1, "{report:#}");
    assert!(report["error"].as_str().unwrap().contains("holds files but no casesync store"), "{report:#}");
    assert_eq!(std::fs::read(odd.join("db").join("notes.txt")).unwrap(), b"mine");
}

#[test]
fn a_relay_restored_from_a_backup_holds_the_log_without_views() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, vector, backup) = exported_office(tmp.path(), 6, 2);
    // A relay's data dir as `casesync init --relay` writes it, before its store exists.
    let relay = tmp.path().join("relay");
    std::fs::create_dir_all(&relay).unwrap();
    std::fs::write(relay.join("casesync.toml"), format!("space = \"{}\"\nrelay = true\n", SPACE.to_hex())).unwrap();
    let (code, report) = replay_json(&["import", "--data", s(&relay), s(&backup)]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["projections"], "none");
    assert!(report["state_hash"].is_null(), "{report:#}");
    let store =
        Store::open(&relay.join("db"), StoreOptions { projections: false, ..StoreOptions::compatible() }).unwrap();
    assert_eq!(store.vector(&SPACE), vector);
    assert!(std::fs::read_to_string(relay.join("casesync.toml")).unwrap().contains("relay = true"));
}

#[test]
fn tampered_or_truncated_backups_store_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, _, backup) = exported_office(tmp.path(), 8, 2);
    let bytes = std::fs::read(&backup).unwrap();

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", bytes[..bytes.len() * 2 / 3].to_vec(), "truncated"),
        ("no trailer", bytes[..bytes.len() - 41].to_vec(), "truncated"),
        (
            "flipped",
            {
                let mut b = bytes.clone();
                let middle = b.len() / 2;
                b[middle] ^= 0x04;
                b
            },
            "refused, nothing stored",
        ),
        ("not a backup", b"hello".to_vec(), "not a usable backup"),
        (
            "re-hashed after tampering",
            {
                // An attacker who rewrites the trailer: the hash matches, the chain does not.
                let mut b = bytes.clone();
                let middle = b.len() / 2;
                b[middle] ^= 0x04;
                let body = b.len() - 32;
                let hash = blake3::hash(&b[..body]);
                b[body..].copy_from_slice(hash.as_bytes());
                b
            },
            "refused",
        ),
    ];
    for (what, content, expect) in cases {
        let file = tmp.path().join(format!("{what}.csbackup"));
        std::fs::write(&file, &content).unwrap();
        let target = tmp.path().join(format!("target-{}", what.replace(' ', "-")));
        let (code, report) = replay_json(&["import", "--data", s(&target), s(&file)]);
        assert_eq!(code, 3, "{what}: {report:#}");
        let error = report["error"].as_str().unwrap();
        assert!(error.contains(expect), "{what}: {error}");
        assert!(!target.join("db").exists(), "{what}: something was stored");
        assert!(!target.exists(), "{what}: the staging store or the data dir it created is left");
        // Into an existing store: its vector does not move.
        let existing = tmp.path().join(format!("existing-{}", what.replace(' ', "-")));
        let holder = Node::create(&existing, 3, "other");
        let before = holder.vector();
        drop(holder);
        let (code, _) = replay_json(&["import", "--data", s(&existing), s(&file)]);
        assert_eq!(code, 3, "{what}");
        let store = Store::open(&existing.join("db"), StoreOptions::compatible()).unwrap();
        assert_eq!(store.vector(&SPACE), before, "{what}");
    }
}

/// The header of a backup is not signed: a device it names becomes a member of the importing
/// node only if the file holds that device's signed events (anyone could add a name to it).
#[test]
fn an_import_adds_as_members_only_devices_whose_signed_events_it_holds() {
    use casesync_engine::codec::backup_format::{BackupReader, BackupRecord, BackupWriter};
    let tmp = tempfile::tempdir().unwrap();
    let (_, _, backup) = exported_office(tmp.path(), 3, 1);
    // The same events under a header that also names a stranger.
    let mut reader = BackupReader::new(std::fs::File::open(&backup).unwrap()).unwrap();
    let mut header = reader.header().clone();
    let stranger = device(77).author();
    header.members.push((stranger, "stranger".into()));
    let forged = tmp.path().join("named.csbackup");
    let mut writer = BackupWriter::new(std::fs::File::create(&forged).unwrap(), &header).unwrap();
    while let BackupRecord::Event { stored, .. } = reader.next_record().unwrap() {
        writer.event(&stored[..64], &stored[64..]).unwrap();
    }
    writer.finish().unwrap();
    let restored = tmp.path().join("restored");
    let (code, report) = replay_json(&["import", "--data", s(&restored), s(&forged)]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["members_added"], 1, "{report:#}");
    assert_eq!(report["members_not_added"], serde_json::json!([stranger.to_hex()]), "{report:#}");
    let store = Store::open(&restored.join("db"), StoreOptions::compatible()).unwrap();
    assert!(store.member(&SPACE, &stranger).unwrap().is_none());
    assert_eq!(store.member(&SPACE, &device(1).author()).unwrap().as_deref(), Some("office"));
}

/// A founded space's backup carries its membership: restored on a new computer, the founder's
/// grants hold, and a device it granted writes there.
#[test]
fn a_founded_space_migrates_with_its_membership() {
    use casesync_engine::model::membership::{NewGrant, Role};
    use_test_pin();
    let tmp = tempfile::tempdir().unwrap();
    let office_dir = tmp.path().join("office");
    casesync_node::data_dir::init(&office_dir, "office", None, false, None).unwrap();
    let office = casesync_node::data_dir::open(&office_dir, false).unwrap();
    let newpc_dir = tmp.path().join("newpc");
    let joined = casesync_node::data_dir::init(&newpc_dir, "newpc", Some(office.space), false, None).unwrap();
    let newpc = casesync_engine::model::ids::AuthorId::from_hex(&joined.device_key).unwrap();
    let grant = NewGrant { device: newpc, role: Role::Writer, name: "newpc".into(), until_ms: None };
    office.store.grant(&office.space, &office.identity.key, T0_MS, grant).unwrap();
    // The space's data key, wrapped for the new computer's device key too.
    office.store.maintain_keys(&office.space, &office.identity.key, T0_MS, [9; 32]).unwrap();
    let command = casesync_engine::commands::Command::CreateCase {
        id: case(1),
        fields: vec![(
            "kontaktperson".into(),
            casesync_engine::model::operation::FieldValue::Text("Annegret Zwiebelmeier".into()),
        )],
    };
    office.store.execute(&office.space, &office.identity.key, T0_MS + 1, command).unwrap();
    let hash = office.store.state_hash(&office.space).unwrap();
    drop(office);
    let backup = tmp.path().join("office.bin");
    // Exported without the PIN: the backup holds sealed bodies only.
    let (code, stdout, stderr) =
        replay_with_pin(&["export", "--data", s(&office_dir), "--out", s(&backup), "--json"], None);
    assert_eq!(code, 0, "{stdout} {stderr}");
    let bytes = std::fs::read(&backup).unwrap();
    for plain in ["Zwiebelmeier", "kontaktperson"] {
        assert!(!bytes.windows(plain.len()).any(|w| w == plain.as_bytes()), "{plain} in the backup");
    }
    // Verified without the PIN: chains and signatures, bodies not opened; with it, every body.
    let (code, stdout, _) = replay_with_pin(&["verify", "--data", s(&office_dir), "--json"], None);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["spaces"][0]["bodies"], serde_json::json!({"sealed": 1, "opened": null}), "{report:#}");
    let (code, report) = replay_json(&["verify", "--data", s(&office_dir)]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["spaces"][0]["bodies"], serde_json::json!({"sealed": 1, "opened": 1}), "{report:#}");
    assert_eq!(report["spaces"][0]["projections"]["equal"], true, "{report:#}");
    let (code, _, stderr) = replay_with_pin(&["verify", "--data", s(&office_dir)], Some("not the pin"));
    assert_eq!(code, 1, "a wrong PIN is refused: {stderr}");
    assert!(stderr.contains("wrong PIN"), "{stderr}");
    // Restored on the new computer with the PIN: its device key opens the key wrapped for it.
    let (code, report) = replay_json(&["import", "--data", s(&newpc_dir), s(&backup)]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["state_hash"], hash.as_str());
    let node = casesync_node::data_dir::open(&newpc_dir, false).unwrap();
    assert!(node.store.membership(&node.space).is_founded());
    let command = casesync_engine::commands::Command::SetFields {
        case: case(1),
        fields: vec![("phone".into(), casesync_engine::model::operation::FieldValue::Text("555".into()))],
    };
    node.store.execute(&node.space, &node.identity.key, T0_MS + 60_000, command).unwrap();
    assert_eq!(node.store.head(&node.space, &newpc).unwrap().seq, 1);
    drop(node);
    // The audit shows the membership beside the case changes, each event with whether it counts.
    let (code, audit) = replay_json(&["audit", "--data", s(&newpc_dir)]);
    assert_eq!(code, 0, "{audit:#}");
    let events = audit["events"].as_array().unwrap();
    let operations: Vec<&str> = events.iter().map(|e| e["operation"].as_str().unwrap()).collect();
    assert!(operations.iter().any(|o| o.starts_with("membership: found the space")), "{operations:?}");
    assert!(operations.iter().any(|o| o.starts_with("membership: grant writer to")), "{operations:?}");
    assert!(events.iter().all(|e| e["counts"] == true), "{audit:#}");
}
