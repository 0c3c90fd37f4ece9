//! The `casesync` binary end to end: init, case commands with and without a daemon, --json,
//! clear errors for bad input, and the demo.

use std::process::Command;

fn casesync(data: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_casesync")).arg("--data").arg(data).args(args).output().unwrap()
}

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
    assert_eq!(fence["local_seq"], 6, "{fence}");
    let cleared = json(&casesync(&data, &["fence", "--clear", "--json"]));
    assert_eq!(cleared["cleared_seq"], 0, "{cleared}");
    let text = casesync(&data, &["fence"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("no fence: this device writes at seq 7"));
    let status = json(&casesync(&data, &["status", "--json"]));
    assert_eq!(status["events"], 6);

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
    assert_eq!(status["events"], 6);
}

#[test]
fn the_demo_converges() {
    let dir = tempfile::tempdir().unwrap();
    let out = casesync(dir.path(), &["demo"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().last().unwrap();
    assert!(last.starts_with("converged: "), "{last}");
    assert!(last.ends_with("(3 nodes, 9 events)"), "{last}");
    assert!(stdout.contains("conflict kept, both values shown: field phone"));
}
