//! Looking back: point-in-time views against views recorded while the log was built, and the
//! audit trail with its filters.

use casesync_engine::codec::case_json::CaseJson;
use casesync_engine::commands::Command;
use casesync_engine::model::ids::EntryId;
use casesync_engine::model::operation::{FieldValue, StatusChange};
use casesync_engine::projection::queries::CaseFilter;
use serde_json::Value;

use crate::support::*;

fn vector_arg(vector: &casesync_engine::model::vector_clock::VersionVector) -> String {
    vector.iter().map(|(a, s)| format!("{}:{s}", a.to_hex())).collect::<Vec<_>>().join(",")
}

/// A node's case views as `replay-tool at` prints them (`docs/case-json.md`).
fn case_json(node: &Node) -> Value {
    let views = node.store.list_cases(&SPACE, &CaseFilter::default()).unwrap();
    serde_json::to_value(views.iter().map(CaseJson::from).collect::<Vec<_>>()).unwrap()
}

#[test]
fn point_in_time_views_equal_what_the_nodes_showed() {
    let tmp = tempfile::tempdir().unwrap();
    let office = Node::create(&tmp.path().join("office"), 1, "office");
    let laptop = Node::create(&tmp.path().join("laptop"), 2, "laptop");
    // (time, views, hash) recorded on the office after each step; (vector, views) on the laptop.
    let mut office_seen: Vec<(u64, Value, String)> = Vec::new();
    let mut laptop_seen: Vec<(String, Value, String)> = Vec::new();
    let mut t = T0_MS;
    for step in 0..12u32 {
        t += 60_000;
        match step % 4 {
            0 => office.create_case(t, step, &format!("client {step}")),
            1 => office.set(t, step - 1, "phone", "030"),
            2 => {
                laptop.pull(&office);
                laptop.set(t, step - 2, "phone", "040"); // concurrent with the next office edit
                office.set(t + 1, step - 2, "phone", "050");
            }
            _ => {
                office.run(t, Command::ChangeStatus { case: case(step - 3), change: StatusChange::Archive });
                office.pull(&laptop);
                t += 1;
            }
        }
        if step % 4 != 2 {
            // Not while the laptop holds an edit the office has not pulled yet: a time cut
            // includes it, the office did not.
            office_seen.push((t + 1, case_json(&office), office.hash()));
        }
        laptop_seen.push((vector_arg(&laptop.vector()), case_json(&laptop), laptop.hash()));
    }
    office.run(t + 60_000, Command::SetFields { case: case(0), fields: vec![("n".into(), FieldValue::Integer(-1))] });
    let dir = office.close();
    drop(laptop);

    for (time, views, hash) in &office_seen {
        let (code, report) = replay_json(&["at", "--data", s(&dir), "--time", &time.to_string()]);
        assert_eq!(code, 0, "{report:#}");
        assert_eq!(&report["cases"], views, "at {time}");
        assert_eq!(report["state_hash"], hash.as_str());
    }
    for (vector, views, hash) in &laptop_seen {
        let (code, report) = replay_json(&["at", "--data", s(&dir), "--vector", vector]);
        assert_eq!(code, 0, "{report:#}");
        assert_eq!(&report["cases"], views, "at {vector}");
        assert_eq!(report["state_hash"], hash.as_str());
    }
    // Conflicts show in the past too, and the live projections were not touched.
    let (_, report) = replay_json(&["at", "--data", s(&dir), "--time", "2026-11-23T12:11:00Z"]);
    assert!(
        report["cases"].as_array().unwrap().iter().any(|c| !c["conflicts"].as_object().unwrap().is_empty()),
        "{report:#}"
    );
    let (code, report) = replay_json(&["verify", "--data", s(&dir)]);
    assert_eq!(code, 0, "{report:#}");
    let (code, _, stderr) = replay(&["at", "--data", s(&dir), "--time", "yesterday"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("not a time"), "{stderr}");
}

#[test]
fn audit_lists_who_what_when_with_filters() {
    let tmp = tempfile::tempdir().unwrap();
    let office = Node::create(&tmp.path().join("office"), 1, "office");
    let laptop = Node::create(&tmp.path().join("laptop"), 2, "laptop");
    office.store.add_member(&SPACE, &device(2).author(), "laptop").unwrap();
    let day = 86_400_000;
    office.create_case(T0_MS, 1, "Anna");
    office.create_case(T0_MS + 1000, 2, "Bo");
    laptop.pull(&office);
    laptop.set(T0_MS + day, 1, "phone", "030"); // the next day
    laptop.set(T0_MS + day + 1000, 2, "phone", "040");
    office.pull(&laptop);
    office.set(T0_MS + 2 * day, 1, "born", "1980");
    let dir = office.close();
    drop(laptop);

    let (code, all) = replay_json(&["audit", "--data", s(&dir)]);
    assert_eq!(code, 0, "{all:#}");
    let events = all["events"].as_array().unwrap();
    assert_eq!(events.len(), 5);
    let hlcs: Vec<u64> = events.iter().map(|e| e["hlc"].as_u64().unwrap()).collect();
    assert!(hlcs.windows(2).all(|w| w[0] < w[1]), "{hlcs:?}");
    assert_eq!(events[0]["time"], "2026-11-23T12:00:00.000Z");
    assert_eq!(events[0]["operation"], "create");
    assert_eq!(events[0]["device_name"], "office");
    assert_eq!(events[2]["device_name"], "laptop");
    assert_eq!(events[2]["fields"], serde_json::json!(["phone"]));
    assert_eq!(events[0]["event_id"].as_str().unwrap().len(), 64);

    let count = |args: &[&str]| -> usize {
        let mut all = vec!["audit", "--data", s(&dir)];
        all.extend_from_slice(args);
        let (code, report) = replay_json(&all);
        assert_eq!(code, 0, "{args:?}: {report:#}");
        report["count"].as_u64().unwrap() as usize
    };
    assert_eq!(count(&["--device", "laptop"]), 2);
    assert_eq!(count(&["--device", &device(2).author().device_id()]), 2);
    assert_eq!(count(&["--case", &case(1).to_hex()[..8]]), 3);
    assert_eq!(count(&["--since", "2026-11-24"]), 3);
    assert_eq!(count(&["--until", "2026-11-24"]), 4);
    assert_eq!(count(&["--since", "2026-11-24", "--until", "2026-11-24T23:00:00Z", "--device", "laptop"]), 2);
    assert_eq!(count(&["--since", &(T0_MS + 2 * day).to_string()]), 1);

    let (code, text, _) = replay(&["audit", "--data", s(&dir), "--case", &case(2).to_hex()]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[1].contains("(laptop)") && lines[1].contains(" set case") && lines[1].contains("event "), "{text}");
    let (code, _, stderr) = replay(&["audit", "--data", s(&dir), "--device", "nobody"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no device"), "{stderr}");
}

#[test]
fn at_prints_cases_in_the_documented_json_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let office = Node::create(&tmp.path().join("office"), 1, "office");
    let laptop = Node::create(&tmp.path().join("laptop"), 2, "laptop");
    let fields = vec![
        ("name".into(), FieldValue::Text("Anna Berg".into())),
        ("born".into(), FieldValue::Date("1980-02-01".into())),
        ("visits".into(), FieldValue::Integer(3)),
        ("fee".into(), FieldValue::Decimal("12.50".into())),
        ("insured".into(), FieldValue::Bool(true)),
        ("photo".into(), FieldValue::Bytes(vec![0x00, 0xff])),
    ];
    office.run(T0_MS, Command::CreateCase { id: case(1), fields });
    let entry = EntryId([1; 16]);
    let note = vec![("note".into(), FieldValue::Text("first session".into()))];
    office.run(T0_MS + 1000, Command::AddEntry { case: case(1), entry, fields: note });
    office.create_case(T0_MS + 2000, 2, "Bo");
    laptop.pull(&office);
    // Concurrent edits: two phone numbers, and an archive against a delete.
    laptop.set(T0_MS + 3000, 1, "phone", "030-1111");
    laptop.run(T0_MS + 4000, Command::ChangeStatus { case: case(2), change: StatusChange::Archive });
    office.set(T0_MS + 5000, 1, "phone", "030-2222");
    office.run(T0_MS + 6000, Command::ChangeStatus { case: case(2), change: StatusChange::Delete });
    office.pull(&laptop);
    let dir = office.close();
    drop(laptop);

    let (code, report) = replay_json(&["at", "--data", s(&dir), "--time", &(T0_MS + 60_000).to_string()]);
    assert_eq!(code, 0, "{report:#}");
    let cases = report["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2, "{report:#}");
    let hlc = |ms: u64| ms << 16;
    let by = |n: u8, seq: u64, ms: u64, value: Value| {
        let author = device(n).author();
        serde_json::json!({
            "value": value, "author": author.to_hex(), "device": author.device_id(), "seq": seq, "hlc": hlc(ms),
        })
    };
    let mut anna = cases[0].clone();
    let mut phones = anna["conflicts"]["phone"].as_array().unwrap().clone();
    phones.sort_by_key(|v| v["hlc"].as_u64());
    assert_eq!(
        phones,
        [
            by(2, 1, T0_MS + 3000, serde_json::json!({"text": "030-1111"})),
            by(1, 4, T0_MS + 5000, serde_json::json!({"text": "030-2222"}))
        ]
    );
    anna["conflicts"]["phone"] = Value::Null;
    let expected = serde_json::json!({
        "case_id": case(1).to_hex(),
        "status": "active",
        "status_conflict": [],
        "deleted_with_concurrent_changes": false,
        "fields": {
            "name": {"text": "Anna Berg"},
            "born": {"date": "1980-02-01"},
            "visits": {"integer": 3},
            "fee": {"decimal": "12.50"},
            "insured": {"boolean": true},
            "photo": {"blob": "AP8="},
            "phone": {"text": "030-2222"},
        },
        "conflicts": {"phone": null},
        "entries": [{
            "entry_id": entry.to_hex(),
            "status": "present",
            "removed_with_concurrent_changes": false,
            "fields": {"note": {"text": "first session"}},
            "conflicts": {},
        }],
        "updated_hlc": hlc(T0_MS + 5000),
    });
    assert_eq!(anna, expected);

    // A delete wins over a concurrent archive; both status versions are listed.
    let bo = &cases[1];
    assert_eq!(bo["case_id"], case(2).to_hex());
    assert_eq!(bo["status"], "deleted");
    assert_eq!(bo["fields"], serde_json::json!({"name": {"text": "Bo"}, "n": {"integer": 2}}));
    let mut statuses = bo["status_conflict"].as_array().unwrap().clone();
    statuses.sort_by_key(|v| v["hlc"].as_u64());
    assert_eq!(statuses, [by(2, 2, T0_MS + 4000, "archived".into()), by(1, 5, T0_MS + 6000, "deleted".into())]);
}
