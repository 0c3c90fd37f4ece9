//! Regressions of the CLI and daemon: one task per peer however often it is named.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use casesync_node::config::FileConfig;
use casesync_node::NodeConfig;
use serde_json::Value;

use crate::support::*;

fn casesync(data: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_casesync")).arg("--data").arg(data).args(args).output().unwrap()
}

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
