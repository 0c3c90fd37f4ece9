//! Starting nodes for tests and waiting on them with deadlines (never sleeping blindly).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use casesync_engine::commands::Command;
use casesync_engine::model::ids::CaseId;
use casesync_engine::model::membership::Role;
use casesync_engine::model::operation::FieldValue;
use casesync_node::demo::{create_devices, edit, wait_converged};
use casesync_node::shared::Shared;
use casesync_node::{Node, NodeConfig};

pub const DEADLINE: Duration = Duration::from_secs(20);

/// The practice PIN of every data dir the tests make.
pub const TEST_PIN: &str = "test pin 2468";

/// This test process's PIN, at the cheap cost (the real cost is measured in the engine's
/// `kdf_cost`): set before any data dir is made or opened.
pub fn use_test_pin() {
    casesync_node::pin::use_for_process(TEST_PIN, casesync_engine::identity::KdfCost::FAST_FOR_TESTS);
}

/// Runs the `casesync` binary on `data` with the test PIN.
pub fn casesync(data: &std::path::Path, args: &[&str]) -> std::process::Output {
    casesync_with_pin(data, Some(TEST_PIN), args)
}

/// Runs the `casesync` binary on `data` with `pin` (none: no PIN in its environment).
pub fn casesync_with_pin(data: &std::path::Path, pin: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_casesync"));
    command.env_remove("CASESYNC_PIN").env_remove("CASESYNC_PIN_FILE").env_remove("CASESYNC_NEW_PIN");
    if let Some(pin) = pin {
        command.env("CASESYNC_PIN", pin);
    }
    command.arg("--data").arg(data).args(args).output().unwrap()
}

/// The device identity of a data dir, opened with the test PIN.
pub fn identity(dir: &std::path::Path) -> casesync_engine::identity::DeviceIdentity {
    use_test_pin();
    casesync_node::pin::unlock(dir).unwrap().unwrap()
}

pub struct Cluster {
    pub _root: tempfile::TempDir,
    pub dirs: Vec<PathBuf>,
}

/// Data dirs for `names`, all in one space: the first name that is not a relay founds it (admin);
/// a name starting with "relay" is a relay, one starting with "reader" a reader, the others are
/// writers.
pub async fn cluster(names: &[&str]) -> Cluster {
    use_test_pin();
    let root = tempfile::tempdir().unwrap();
    let founder = names.iter().position(|n| !n.starts_with("relay")).unwrap();
    let role = |index: usize, name: &str| match name {
        _ if index == founder => Role::Admin,
        n if n.starts_with("relay") => Role::Relay,
        n if n.starts_with("reader") => Role::Reader,
        _ => Role::Writer,
    };
    let path = root.path().to_path_buf();
    let owned: Vec<(String, Role)> = names.iter().enumerate().map(|(i, n)| (n.to_string(), role(i, n))).collect();
    let dirs = tokio::task::spawn_blocking(move || {
        let borrowed: Vec<(&str, Role)> = owned.iter().map(|(n, r)| (n.as_str(), *r)).collect();
        create_devices(&path, &borrowed)
    })
    .await
    .unwrap()
    .unwrap();
    Cluster { _root: root, dirs }
}

pub async fn start(dir: &PathBuf, peers: Vec<String>) -> Node {
    use_test_pin();
    let mut config = NodeConfig::new(dir);
    config.peers = peers;
    Node::start(config).await.unwrap()
}

pub fn text(s: &str) -> FieldValue {
    FieldValue::Text(s.into())
}

pub fn case(n: u8) -> CaseId {
    CaseId([n; 16])
}

pub async fn create(node: &Node, id: CaseId, name: &str) {
    edit(node.shared(), Command::CreateCase { id, fields: vec![("name".into(), text(name))] }).await.unwrap();
}

pub async fn set(node: &Node, id: CaseId, field: &str, value: &str) {
    edit(node.shared(), Command::SetFields { case: id, fields: vec![(field.into(), text(value))] }).await.unwrap();
}

pub async fn converge(nodes: &[&Node]) {
    let shared: Vec<&Arc<Shared>> = nodes.iter().map(|n| n.shared()).collect();
    wait_converged(&shared, DEADLINE).await.unwrap();
}

pub fn state_hash(node: &Node) -> String {
    node.shared().store.state_hash(&node.shared().space).unwrap()
}

/// Case events held (membership events, the founding and the grants, not counted).
pub fn events(node: &Node) -> u64 {
    let shared = node.shared();
    shared.store.vector(&shared.space).total() - shared.store.membership(&shared.space).records().count() as u64
}

/// A sync client of `node` over TLS as the device `key` (accepting the node's key as it is).
pub async fn sync_client_as(
    node: &Node,
    key: &casesync_engine::model::signing::DeviceKey,
) -> Result<casesync_proto::v1::sync_client::SyncClient<tonic::transport::Channel>, String> {
    let cert = casesync_node::tls::DeviceCert::new(key).unwrap();
    let seen = Arc::new(std::sync::Mutex::new(None));
    let config = casesync_node::tls::client_config(&cert, Arc::new(|_| Ok(())), seen).unwrap();
    let channel =
        casesync_node::sync_client::connect_peer(&node.sync_url(), config).await.map_err(|e| format!("{e:#}"))?;
    Ok(casesync_proto::v1::sync_client::SyncClient::new(channel).max_encoding_message_size(64 * 1024 * 1024))
}
