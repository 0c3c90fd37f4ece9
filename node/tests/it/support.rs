//! Starting nodes for tests and waiting on them with deadlines (never sleeping blindly).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use casesync_engine::commands::Command;
use casesync_engine::model::ids::CaseId;
use casesync_engine::model::operation::FieldValue;
use casesync_node::demo::{create_devices, edit, wait_converged};
use casesync_node::shared::Shared;
use casesync_node::{Node, NodeConfig};

pub const DEADLINE: Duration = Duration::from_secs(20);

pub struct Cluster {
    pub _root: tempfile::TempDir,
    pub dirs: Vec<PathBuf>,
}

/// Data dirs for `names` (a name starting with "relay" is a relay), all knowing each other.
pub async fn cluster(names: &[&str]) -> Cluster {
    let root = tempfile::tempdir().unwrap();
    let devices: Vec<(&str, bool)> = names.iter().map(|n| (*n, n.starts_with("relay"))).collect();
    let path = root.path().to_path_buf();
    let owned: Vec<(String, bool)> = devices.iter().map(|(n, r)| (n.to_string(), *r)).collect();
    let dirs = tokio::task::spawn_blocking(move || {
        let borrowed: Vec<(&str, bool)> = owned.iter().map(|(n, r)| (n.as_str(), *r)).collect();
        create_devices(&path, &borrowed)
    })
    .await
    .unwrap()
    .unwrap();
    Cluster { _root: root, dirs }
}

pub async fn start(dir: &PathBuf, peers: Vec<String>) -> Node {
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

pub fn events(node: &Node) -> u64 {
    node.shared().store.vector(&node.shared().space).total()
}
