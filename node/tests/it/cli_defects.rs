//! Regressions of the CLI and daemon: one task per peer however often it is named, no panic on
//! any string the daemon returns, the case JSON schema of `docs/case-json.md`, and server
//! reflection in both protocol versions.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use casesync_engine::codec::case_json::CaseJson;
use casesync_engine::model::ids::SpaceId;
use casesync_engine::model::signing::DeviceKey;
use casesync_engine::projection::queries::CaseFilter;
use casesync_engine::store::{Store, StoreOptions};
use casesync_node::config::FileConfig;
use casesync_node::output::{case_row, case_text, conflict_text, history_line, short_id};
use casesync_node::NodeConfig;
use casesync_proto::v1 as pb;
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::support::*;

fn json_out(output: &std::process::Output) -> Value {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Kills the daemon when the test ends, passed or failed.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `casesync serve` and waits (bounded) until it says it serves.
fn serve(data: &Path, args: &[&str]) -> Daemon {
    let mut child = Command::new(env!("CARGO_BIN_EXE_casesync"))
        .env("CASESYNC_PIN", crate::support::TEST_PIN)
        .arg("--data")
        .arg(data)
        .args(["serve", "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let daemon = Daemon(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    loop {
        let line = rx.recv_timeout(DEADLINE).expect("casesync serve did not start");
        if line.contains("serving peers on") {
            return daemon;
        }
    }
}

#[test]
fn serve_runs_one_task_per_peer_however_often_it_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    json_out(&casesync(&data, &["init", "--name", "office", "--json"]));
    // Nothing listens on these: the peers stay offline, which is all this test needs.
    let (a, b) = ("http://127.0.0.1:9", "http://127.0.0.2:9");
    let mut config = FileConfig::load(&data).unwrap();
    config.peers = vec![a.to_string(), b.to_string()];
    config.save(&data).unwrap();

    // `a` again, not next to its first mention, and as a trivially different spelling.
    let daemon = serve(&data, &["--peer", "http://127.0.0.3:9", "--peer", a, "--peer", "HTTP://127.0.0.1:9/"]);
    let status = json_out(&casesync(&data, &["status", "--json"]));
    drop(daemon);
    let urls: Vec<&str> = status["peers"].as_array().unwrap().iter().map(|p| p["url"].as_str().unwrap()).collect();
    assert_eq!(urls, [a, b, "http://127.0.0.3:9"], "{status:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_runs_one_task_per_peer() {
    let cluster = cluster(&["office"]).await;
    let mut config = NodeConfig::new(&cluster.dirs[0]);
    config.peers = ["http://127.0.0.1:9", "http://127.0.0.2:9", "http://127.0.0.1:9", "http://127.0.0.1:9/"]
        .map(String::from)
        .to_vec();
    let node = casesync_node::Node::start(config).await.unwrap();
    let peers: Vec<String> = node.shared().peers().into_iter().map(|(url, _)| url).collect();
    node.shutdown().await;
    assert_eq!(peers, ["http://127.0.0.1:9", "http://127.0.0.2:9"]);
}

fn value(kind: pb::value::Kind) -> Option<pb::Value> {
    Some(pb::Value { kind: Some(kind) })
}

fn version(device: &str) -> pb::VersionView {
    pb::VersionView {
        value: value(pb::value::Kind::Text("x".into())),
        status: String::new(),
        author: device.into(),
        device: device.into(),
        seq: 1,
        hlc: u64::MAX,
    }
}

/// A case view, history item and conflict with every id set to `id`.
fn messages(id: &str) -> (pb::CaseView, pb::HistoryItem, pb::ConflictItem) {
    let field = pb::FieldView {
        name: id.into(),
        value: value(pb::value::Kind::Text(id.into())),
        conflict: vec![version(id), version(id)],
    };
    let view = pb::CaseView {
        case_id: id.into(),
        status: id.into(),
        status_conflict: vec![version(id)],
        deleted_with_concurrent_changes: true,
        fields: vec![field.clone()],
        entries: vec![pb::EntryView {
            entry_id: id.into(),
            status: id.into(),
            removed_with_concurrent_changes: true,
            fields: vec![field],
        }],
        updated_hlc: u64::MAX,
    };
    let item = pb::HistoryItem {
        event_id: id.into(),
        hlc: u64::MAX,
        author: id.into(),
        device: id.into(),
        device_name: id.into(),
        seq: 1,
        operation: id.into(),
        entry_id: id.into(),
        fields: vec![pb::NamedValue {
            name: id.into(),
            value: value(pb::value::Kind::Blob(id.as_bytes().to_vec().into())),
        }],
        note: id.into(),
    };
    let conflict =
        pb::ConflictItem { case_id: id.into(), entry_id: id.into(), field: id.into(), versions: vec![version(id)] };
    (view, item, conflict)
}

#[test]
fn short_and_non_ascii_ids_from_the_daemon_are_printed_whole_or_cut_at_characters() {
    for id in ["", "a", "0123456", "ä", "äääääääääääääääää", "0123456é89", "012345678901234\u{1F600}x"]
    {
        let (view, item, conflict) = messages(id);
        let short = short_id(id, 8);
        assert!(id.starts_with(short));
        assert_eq!(short.chars().count(), id.chars().count().min(8));
        assert!(case_row(&view).starts_with(short), "{id:?}");
        assert!(case_text(&view).contains(id), "{id:?}");
        assert!(history_line(&item).ends_with(&format!("event {}", short_id(id, 16))), "{id:?}");
        let place = if id.is_empty() { String::new() } else { format!(" entry {short}") };
        assert!(conflict_text(&conflict).starts_with(&format!("case {short}{place} field {id}:")), "{id:?}");
    }
}

proptest! {
    #[test]
    fn printing_any_daemon_strings_never_panics(id in any::<String>(), chars in 0usize..40) {
        let short = short_id(&id, chars);
        prop_assert!(id.starts_with(short));
        let (view, item, conflict) = messages(&id);
        prop_assert!(case_row(&view).contains(short_id(&id, 8)));
        prop_assert!(case_text(&view).contains(&id));
        prop_assert!(history_line(&item).contains(short_id(&id, 16)));
        prop_assert!(conflict_text(&conflict).contains(short_id(&id, 8)));
    }
}

#[test]
fn case_show_and_list_print_the_documented_case_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    json_out(&casesync(&data, &["init", "--name", "office", "--json"]));
    let typed = [
        "name=Anna Berg",
        "born=date:1980-02-01",
        "visits=int:3",
        "fee=dec:12.50",
        "insured=bool:true",
        "photo=hex:00ff",
    ];
    let created = json_out(&casesync(&data, &[&["case", "add"], &typed[..], &["--json"]].concat()));
    let id = created["case_id"].as_str().unwrap().to_string();
    json_out(&casesync(&data, &["entry", "add", &id[..8], "note=first session", "--json"]));
    let shown = json_out(&casesync(&data, &["case", "show", &id[..8], "--json"]));

    let entry_id = shown["entries"][0]["entry_id"].as_str().unwrap();
    let hlc = shown["updated_hlc"].as_u64().unwrap();
    let expected = json!({
        "case_id": id,
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
        },
        "conflicts": {},
        "entries": [{
            "entry_id": entry_id,
            "status": "present",
            "removed_with_concurrent_changes": false,
            "fields": {"note": {"text": "first session"}},
            "conflicts": {},
        }],
        "updated_hlc": hlc,
    });
    assert_eq!(shown, expected);
    assert!(hlc > 0);
    assert_eq!(created["fields"], expected["fields"], "every command that prints a case uses the schema");

    let list = json_out(&casesync(&data, &["case", "list", "--json"]));
    assert_eq!(list, json!({ "cases": [expected] }));

    // The same case folded by the engine (the replay tool's path) prints the same document.
    let space = SpaceId::from_hex(&FileConfig::load(&data).unwrap().space).unwrap();
    let store =
        Store::open(&data.join("db"), StoreOptions { projections: true, ..StoreOptions::compatible() }).unwrap();
    let views = store.list_cases(&space, &CaseFilter::default()).unwrap();
    let folded: Vec<Value> = views.iter().map(|v| serde_json::to_value(CaseJson::from(v)).unwrap()).collect();
    assert_eq!(folded, [expected]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services_in_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};

    let cluster = cluster(&["office"]).await;
    let node = start(&cluster.dirs[0], Vec::new()).await;
    for (url, service) in
        [(node.sync_url(), "casesync.v1.Sync"), (format!("http://{}", node.api_addr()), "casesync.v1.Cases")]
    {
        // The sync service speaks TLS between device keys (any device may ask what it serves);
        // the local API plain HTTP/2 on loopback.
        let channel = if service == "casesync.v1.Sync" {
            let cert = casesync_node::tls::DeviceCert::new(&DeviceKey::from_secret([5; 32])).unwrap();
            let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
            let config = casesync_node::tls::client_config(&cert, std::sync::Arc::new(|_| Ok(())), seen).unwrap();
            casesync_node::sync_client::connect_peer(&url, config).await.unwrap()
        } else {
            casesync_node::sync_client::connect(&url).await.unwrap()
        };

        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
        };
        let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
        let mut replies = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
        let reply = replies.message().await.unwrap().unwrap();
        let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) = reply.message_response
        else {
            panic!("v1 at {url}: not a service list: {reply:?}");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.iter().any(|n| n == service), "v1 at {url}: {names:?}");

        let request = v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
        };
        let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
        let mut replies = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
        let reply = replies.message().await.unwrap().unwrap();
        let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            reply.message_response
        else {
            panic!("v1alpha at {url}: not a service list: {reply:?}");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.iter().any(|n| n == service), "v1alpha at {url}: {names:?}");
    }
    node.shutdown().await;
}

/// A data dir in use by a running `casesync serve`: a second daemon on it says so (asked of
/// RocksDB's lock, not read from an error message) and changes nothing.
#[test]
fn a_second_daemon_on_a_data_dir_in_use_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("office");
    json_out(&casesync(&data, &["init", "--name", "office", "--json"]));
    let _first = serve(&data, &[]);
    let second = casesync(&data, &["serve", "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"]);
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("in use by another casesync process"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The local API answers only calls that carry the token a daemon writes, at each start, into
/// its data dir's `daemon.json` (0600 in a 0700 dir): another local user or process without it
/// can neither read nor change cases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_api_needs_the_token_only_the_data_dirs_owner_can_read() {
    use casesync_proto::v1::cases_client::CasesClient;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("office");
    json_out(&casesync(&data, &["init", "--name", "office", "--json"]));
    let _daemon = serve(&data, &[]);
    let daemon: Value = serde_json::from_slice(&std::fs::read(data.join("daemon.json")).unwrap()).unwrap();
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("daemon.json")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let url = format!("http://{}", daemon["api"].as_str().unwrap());
    let channel = casesync_node::sync_client::connect(&url).await.unwrap();
    let refused = CasesClient::new(channel.clone()).list_cases(pb::ListCasesRequest::default()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let wrong = casesync_node::api_token::WithToken::new(&"0".repeat(64)).unwrap();
    let refused = CasesClient::with_interceptor(channel.clone(), wrong).status(pb::StatusRequest::default()).await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::Unauthenticated);
    let token = casesync_node::api_token::WithToken::new(daemon["token"].as_str().unwrap()).unwrap();
    let list = CasesClient::with_interceptor(channel, token).list_cases(pb::ListCasesRequest::default()).await;
    assert!(list.unwrap().into_inner().cases.is_empty());
    // The CLI finds the token where the daemon wrote it.
    let created = json_out(&casesync(&data, &["case", "add", "name=Anna", "--json"]));
    assert!(created["case_id"].is_string());
}

/// `casesync sync` beside a running daemon goes through it (with its token) and syncs the space
/// `--space` names; without a daemon it opens the data dir itself.
#[test]
fn sync_now_goes_through_the_daemon_or_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (office, laptop) = (dir.path().join("office"), dir.path().join("laptop"));
    let init = json_out(&casesync(&office, &["init", "--name", "office", "--json"]));
    let joined = json_out(&casesync(
        &laptop,
        &["init", "--name", "laptop", "--space", init["space"].as_str().unwrap(), "--json"],
    ));
    json_out(&casesync(&office, &["device", "grant", joined["device_key"].as_str().unwrap(), "--json"]));
    json_out(&casesync(&office, &["case", "add", "name=Anna", "--json"]));
    let _office = serve(&office, &[]);
    let office_daemon: Value = serde_json::from_slice(&std::fs::read(office.join("daemon.json")).unwrap()).unwrap();
    let url = format!("http://{}", office_daemon["sync"].as_str().unwrap());
    // No daemon on the laptop: in-process.
    let synced = json_out(&casesync(&laptop, &["sync", "--peer", &url, "--json"]));
    assert_eq!(synced["results"][0]["error"], "", "{synced}");
    let listed = json_out(&casesync(&laptop, &["case", "list", "--json"]));
    assert_eq!(listed["cases"].as_array().unwrap().len(), 1, "{listed}");
    // With its daemon running: through it.
    let _laptop = serve(&laptop, &[]);
    let synced = json_out(&casesync(&laptop, &["sync", "--peer", &url, "--json"]));
    assert_eq!(synced["results"][0]["error"], "", "{synced}");
    let unknown = casesync(&laptop, &["--space", "nosuch", "sync", "--peer", &url]);
    assert!(!unknown.status.success());
}
