//! The `casesync` binary end to end: init, case commands with and without a daemon, --json,
//! clear errors for bad input, and the demo.

use crate::support::casesync;

fn json(output: &std::process::Output) -> serde_json::Value {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn case_commands_work_on_the_data_dir_and_speak_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let init = json(&casesync(&data, &["init", "--name", "office", "--json"]));
    assert_eq!(init["device_name"], "office");
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700, "only the owner may read the data dir");
        assert_eq!(mode(&data.join("device.key")), 0o600);
    }
    let created = json(&casesync(&data, &["case", "add", "name=Anna Berg", "born=date:1980-02-01", "--json"]));
    let id = created["case_id"].as_str().unwrap().to_string();
    let prefix = &id[..8];
    json(&casesync(&data, &["case", "set", prefix, "phone=555", "--json"]));
    let entry = json(&casesync(&data, &["entry", "add", prefix, "note=first session", "--json"]));
    assert_eq!(entry["entries"].as_array().unwrap().len(), 1);
    let entry_id = entry["entries"][0]["entry_id"].as_str().unwrap().to_string();
    // An entry removed by mistake comes back, as a deleted case does.
    let removed = json(&casesync(&data, &["entry", "remove", prefix, &entry_id, "--json"]));
    assert!(removed["entries"].as_array().unwrap().is_empty(), "{removed}");
    let restored = json(&casesync(&data, &["entry", "restore", prefix, &entry_id, "--json"]));
    assert_eq!(restored["entries"][0]["entry_id"], entry_id.as_str());
    assert_eq!(restored["entries"][0]["status"], "present");
    json(&casesync(&data, &["case", "archive", prefix, "--json"]));
    let list = json(&casesync(&data, &["case", "list", "--status", "archived", "--json"]));
    assert_eq!(list["cases"].as_array().unwrap().len(), 1);
    let history = json(&casesync(&data, &["case", "history", prefix, "--json"]));
    let ops: Vec<&str> =
        history["items"].as_array().unwrap().iter().map(|i| i["operation"].as_str().unwrap()).collect();
    assert_eq!(ops, vec!["create", "set", "entry-add", "entry-remove", "entry-restore", "archive"]);
    // Values in the history as in a case's JSON (docs/case-json.md).
    assert_eq!(history["items"][1]["fields"], serde_json::json!({"phone": {"text": "555"}}));
    assert_eq!(history["items"][0]["fields"]["born"], serde_json::json!({"date": "1980-02-01"}));
    assert_eq!(history["items"][0]["entry_id"], serde_json::Value::Null);
    let conflicts = json(&casesync(&data, &["case", "conflicts", "--json"]));
    assert_eq!(conflicts, serde_json::json!({"conflicts": []}));
    // No fence: the device writes on; clearing none changes nothing.
    let fence = json(&casesync(&data, &["fence", "--json"]));
    assert_eq!(fence["blocks_writes"], false, "{fence}");
    // The space's founding event, its first data key and six case changes.
    assert_eq!(fence["local_seq"], 8, "{fence}");
    let cleared = json(&casesync(&data, &["fence", "--clear", "--json"]));
    assert_eq!(cleared["cleared_seq"], 0, "{cleared}");
    let text = casesync(&data, &["fence"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("no fence: this device writes at seq 9"));
    let status = json(&casesync(&data, &["status", "--json"]));
    assert_eq!(status["events"], 8);
    assert_eq!(status["role"], "admin", "the founder");

    // Bad input: clear errors, non-zero exit, nothing changed.
    for args in [
        vec!["case", "set", prefix, "no-equals-sign"],
        vec!["case", "add", "born=date:2023-02-30"],
        vec!["case", "show", "zzzz"],
        vec!["case", "restore", prefix],
        vec!["entry", "remove", prefix, "not-hex"],
        vec!["entry", "restore", prefix, &entry_id],
    ] {
        let out = casesync(&data, &args);
        assert!(!out.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    let status = json(&casesync(&data, &["status", "--json"]));
    assert_eq!(status["events"], 8);
}

#[test]
fn the_demo_converges() {
    let dir = tempfile::tempdir().unwrap();
    let out = casesync(dir.path(), &["demo"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().last().unwrap();
    assert!(last.starts_with("converged: "), "{last}");
    // 9 case events; the rest is membership: the founding, grants, data key shares, a
    // revocation and the key's rotation, an invitation and an admission.
    let events: u64 = last.rsplit_once("nodes, ").and_then(|(_, n)| n.strip_suffix(" events)")?.parse().ok()).unwrap();
    assert!(events > 17, "{last}");
    assert!(stdout.contains("relay can open 0 of the 9 sealed case events it holds"), "{stdout}");
    assert!(stdout.contains("under a new data key the laptop never receives"), "{stdout}");
    assert!(stdout.contains("the tablet joins with the code through the relay"), "{stdout}");
    assert!(stdout.contains("assistant (reader) tried to add a case: refused"), "{stdout}");
    assert!(stdout.contains("the relay refused the reader's event, signed and sent anyway"), "{stdout}");
    assert!(stdout.contains("the relay refuses it: device"), "{stdout}");
    assert!(stdout.contains("conflict kept, both values shown: field phone"));
}

#[test]
fn devices_are_granted_listed_and_revoked_with_who_and_when() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, other) = (dir.path().join("office"), dir.path().join("laptop"));
    let init = json(&casesync(&admin, &["init", "--name", "office", "--json"]));
    let joined =
        json(&casesync(&other, &["init", "--name", "laptop", "--space", init["space"].as_str().unwrap(), "--json"]));
    let key = joined["device_key"].as_str().unwrap();
    let list = json(&casesync(
        &admin,
        &["device", "grant", key, "--role", "reader", "--name", "jan", "--until", "2027-01-15", "--json"],
    ));
    let jan = list["devices"].as_array().unwrap().iter().find(|d| d["device_key"] == key).unwrap().clone();
    assert_eq!(jan["granted_role"], "reader", "{jan}");
    assert_eq!(jan["granted_by"], init["device"], "{jan}");
    assert_eq!(jan["until_ms"], 1_800_057_600_000u64, "{jan}");
    let founder = &list["devices"][0];
    assert_eq!((founder["founder"].as_bool(), founder["role"].as_str()), (Some(true), Some("admin")));
    let text = casesync(&admin, &["device", "list"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("reader granted by") && text.contains("until 2027-01-16 00:00:00"), "{text}");
    let list = json(&casesync(&admin, &["device", "revoke", key, "--json"]));
    let jan = list["devices"].as_array().unwrap().iter().find(|d| d["device_key"] == key).unwrap().clone();
    assert_eq!((jan["revoked"].as_bool(), jan["role"].as_str()), (Some(true), Some("")), "{jan}");
    // Bad input: a clear error, nothing stored.
    let bad = casesync(&admin, &["device", "grant", key, "--role", "owner"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected admin, writer, reader or relay"));
    let status = json(&casesync(&other, &["status", "--json"]));
    assert_eq!(status["role"], "", "{status}");
    // It never synced: its own store holds no grant of it.
    assert!(status["role_refusal"].as_str().unwrap().contains("not a member"), "{status}");
    let bad = casesync(&admin, &["device", "grant", key, "--until", "next week"]);
    assert_eq!(bad.status.code(), Some(2));
    // A device that is not an admin cannot grant.
    let refused = casesync(&other, &["device", "grant", init["device_key"].as_str().unwrap(), "--role", "reader"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not a member"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn a_node_holds_several_spaces_selected_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (office, colleague) = (dir.path().join("office"), dir.path().join("colleague"));
    let own = json(&casesync(&office, &["init", "--name", "office", "--json"]));
    let theirs = json(&casesync(&colleague, &["init", "--name", "colleague", "--json"]));
    let space_b = theirs["space"].as_str().unwrap();
    json(&casesync(&office, &["space", "add", "jan", "--id", space_b, "--json"]));
    json(&casesync(&office, &["case", "add", "name=Anna", "--json"]));
    // The office is not (yet) a member of the colleague's space: a write there is refused.
    let refused = casesync(&office, &["--space", "jan", "case", "add", "name=Bernd"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not a member"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let list = casesync(&office, &["--space", "jan", "case", "list"]);
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "space jan");
    let main = casesync(&office, &["case", "list"]);
    let main = String::from_utf8_lossy(&main.stdout);
    assert!(main.starts_with("space main\n") && main.contains("Anna"), "{main}");
    let spaces = json(&casesync(&office, &["space", "list", "--json"]));
    let rows = spaces["spaces"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{spaces}");
    assert_eq!(
        (rows[0]["name"].as_str(), rows[0]["space"].as_str(), rows[0]["role"].as_str()),
        (Some("main"), own["space"].as_str(), Some("admin"))
    );
    assert_eq!(
        (rows[1]["name"].as_str(), rows[1]["space"].as_str(), rows[1]["role"].as_str()),
        (Some("jan"), Some(space_b), Some(""))
    );
    // Bad input: an unknown space name, the same space twice.
    let unknown = casesync(&office, &["--space", "nosuch", "case", "list"]);
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no space named \"nosuch\""),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    let twice = casesync(&office, &["space", "add", "again", "--id", space_b]);
    assert!(String::from_utf8_lossy(&twice.stderr).contains("already"), "{}", String::from_utf8_lossy(&twice.stderr));
}
