//! End-to-end encryption over real nodes: what a relay stores, the practice PIN at the command
//! line, and a store written before sealing.

use std::path::Path;
use std::process::Command;

use casesync_engine::commands::Command as CaseCommand;
use casesync_engine::model::membership::{NewGrant, Role};
use casesync_node::demo::edit;

use crate::support::*;

/// Every byte of every file under `dir`.
fn every_byte(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(every_byte(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.extend(bytes);
        }
    }
    out
}

fn holds(bytes: &[u8], text: &str) -> bool {
    holds_bytes(bytes, text.as_bytes())
}

fn holds_bytes(bytes: &[u8], pattern: &[u8]) -> bool {
    bytes.windows(pattern.len()).any(|w| w == pattern)
}

const SECRETS: [&str; 6] =
    ["Zwiebelmeier", "Quarkstrudel", "mobilfunknummer", "0151-99887766", "Sitzungsprotokoll", "diagnoseschluessel"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_stores_and_forwards_without_one_readable_byte_of_the_cases() {
    let c = cluster(&["relay", "office", "laptop"]).await;
    let relay = start(&c.dirs[0], vec![]).await;
    let office = start(&c.dirs[1], vec![relay.sync_url()]).await;
    let laptop = start(&c.dirs[2], vec![relay.sync_url()]).await;
    let fields = |name: &str| {
        vec![
            ("name".to_string(), text(name)),
            ("mobilfunknummer".to_string(), text("0151-99887766")),
            ("diagnoseschluessel".to_string(), text("F43.2")),
        ]
    };
    edit(office.shared(), CaseCommand::CreateCase { id: case(1), fields: fields("Hildegard Zwiebelmeier") })
        .await
        .unwrap();
    edit(laptop.shared(), CaseCommand::CreateCase { id: case(2), fields: fields("Ottokar Quarkstrudel") })
        .await
        .unwrap();
    converge(&[&relay, &office, &laptop]).await;
    let entry = casesync_engine::model::ids::EntryId([7; 16]);
    let note = vec![("note".to_string(), text("Sitzungsprotokoll: 50 min"))];
    edit(laptop.shared(), CaseCommand::AddEntry { case: case(1), entry, fields: note }).await.unwrap();
    converge(&[&relay, &office, &laptop]).await;
    assert_eq!(state_hash(&office), state_hash(&laptop));
    let view = office.shared().store.case_view(&office.shared().space, &case(1)).unwrap().unwrap();
    assert_eq!(view.entries.len(), 1, "the members read everything");
    assert_eq!(events(&relay), 3);
    // The relay's whole data dir, WAL included, as it runs; then flushed and compacted; then
    // with the node stopped.
    let relay_dir = c.dirs[0].clone();
    for secret in SECRETS {
        assert!(!holds(&every_byte(&relay_dir), secret), "{secret} in the running relay's files");
    }
    relay.shared().store.compact().unwrap();
    for secret in SECRETS {
        assert!(!holds(&every_byte(&relay_dir), secret), "{secret} in the relay's files after a flush");
    }
    for node in [office, laptop, relay] {
        node.shutdown().await;
    }
    let bytes = every_byte(&relay_dir);
    for secret in SECRETS {
        assert!(!holds(&bytes, secret), "{secret} in the stopped relay's files");
    }
    // Nor does any device's key file hold its key in the clear (a member's own views do hold the
    // cases: that is what full-disk encryption is for, docs/encryption.md).
    let key = crate::support::identity(&c.dirs[1]).key.secret();
    assert!(!holds_bytes(&std::fs::read(c.dirs[1].join("device.key")).unwrap(), &key));
}

fn casesync(data: &Path, pin: Option<&str>, args: &[&str]) -> std::process::Output {
    casesync_with_pin(data, pin, args)
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_wrong_or_missing_pin_opens_nothing_and_a_changed_pin_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("office");
    assert!(casesync(&data, Some("1357"), &["init", "--name", "office"]).status.success());
    assert!(casesync(&data, Some("1357"), &["case", "add", "name=Anna Berg"]).status.success());
    let key_file = std::fs::read(data.join("device.key")).unwrap();
    assert!(key_file.starts_with(b"CSKEY"), "the key file is sealed");
    // Wrong, missing, too short: clear refusals, nothing written.
    let wrong = casesync(&data, Some("2468"), &["case", "add", "name=Mallory"]);
    assert!(!wrong.status.success());
    assert!(stderr(&wrong).contains("wrong PIN"), "{}", stderr(&wrong));
    let missing = casesync(&data, None, &["case", "list"]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("protected by the practice PIN"), "{}", stderr(&missing));
    let short = casesync(&data, Some("12"), &["case", "list"]);
    assert!(stderr(&short).contains("at least 4 characters"), "{}", stderr(&short));
    assert_eq!(std::fs::read(data.join("device.key")).unwrap(), key_file, "nothing rewritten");
    // A data dir copied to another place, without the PIN: nothing opens there either.
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    for name in ["device.key", "device.name", "casesync.toml"] {
        std::fs::copy(data.join(name), copy.join(name)).unwrap();
    }
    let stolen = casesync(&copy, Some("0000"), &["status"]);
    assert!(stderr(&stolen).contains("wrong PIN"), "{}", stderr(&stolen));
    // The PIN changes: the old one no longer opens, the new one does, the cases are all there.
    let mut change = Command::new(env!("CARGO_BIN_EXE_casesync"));
    change.env("CASESYNC_PIN", "1357").env("CASESYNC_NEW_PIN", "97531").arg("--data").arg(&data);
    let changed = change.args(["pin", "change", "--json"]).output().unwrap();
    assert!(changed.status.success(), "{}", stderr(&changed));
    assert!(!casesync(&data, Some("1357"), &["case", "list"]).status.success());
    let list = casesync(&data, Some("97531"), &["case", "list", "--json"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list["cases"].as_array().unwrap().len(), 1);
    assert_eq!(list["cases"][0]["fields"]["name"]["text"], "Anna Berg");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_written_before_sealing_opens_syncs_with_sealed_peers_and_converges() {
    use_test_pin();
    // Made by the release before sealing: a founder with two plain cases and a plain key file.
    let root = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plaintext-store-0.1.0.tar.gz");
    let untar = Command::new("tar").arg("xzf").arg(&fixture).arg("-C").arg(root.path()).status().unwrap();
    assert!(untar.success());
    let office_dir = root.path().join("office");
    // The fixture was made on another machine; here it stands for the same computer upgraded.
    let _ = std::fs::remove_file(office_dir.join("instance"));
    assert_eq!(std::fs::metadata(office_dir.join("device.key")).unwrap().len(), 32, "a plain key file");
    let office = start(&office_dir, vec![]).await;
    assert!(std::fs::read(office_dir.join("device.key")).unwrap().starts_with(b"CSKEY"), "sealed at first open");
    let space = office.shared().space;
    assert!(office.shared().store.sealing_key(&space).is_some(), "the founder introduced the space's first key");
    // A new laptop joins the old space: granted at the office, the key shared with it.
    let laptop_dir = root.path().join("laptop");
    let laptop_init = {
        let dir = laptop_dir.clone();
        tokio::task::spawn_blocking(move || casesync_node::data_dir::init(&dir, "laptop", Some(space), false, None))
            .await
            .unwrap()
            .unwrap()
    };
    let laptop_key = casesync_engine::model::ids::AuthorId::from_hex(&laptop_init.device_key).unwrap();
    let shared = office.shared().clone();
    tokio::task::spawn_blocking(move || {
        let grant = NewGrant { device: laptop_key, role: Role::Writer, name: "laptop".into(), until_ms: None };
        shared.store.grant(&shared.space, &shared.identity.key, casesync_node::shared::now_ms(), grant).unwrap();
        assert!(shared.maintain_keys() > 0);
    })
    .await
    .unwrap();
    let laptop = start(&laptop_dir, vec![office.sync_url()]).await;
    converge(&[&office, &laptop]).await;
    create(&laptop, case(3), "Sealed Newcase").await;
    converge(&[&office, &laptop]).await;
    set(&office, case(3), "phone", "555").await;
    converge(&[&office, &laptop]).await;
    assert_eq!(state_hash(&office), state_hash(&laptop));
    let names: Vec<String> = laptop
        .shared()
        .store
        .list_cases(&space, &Default::default())
        .unwrap()
        .iter()
        .filter_map(|c| c.field("name").map(|v| format!("{v:?}")))
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.iter().any(|n| n.contains("Hildegard Oldstore")), "old plain cases read: {names:?}");
    assert!(names.iter().any(|n| n.contains("Sealed Newcase")), "{names:?}");
    for node in [office, laptop] {
        node.shutdown().await;
    }
}
