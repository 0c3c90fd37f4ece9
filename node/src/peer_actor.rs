//! One task per configured peer: keep a live session up, reconnect with bounded exponential
//! backoff, wake early on "sync now", stop on shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::shared::{PeerState, Shared};
use crate::sync_client::live_session;

/// First retry delay.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The peers to run tasks for: each address once, in first-seen order, spelled the same way
/// (without surrounding spaces or trailing slashes, scheme and host in lowercase), so one peer
/// named twice (in `casesync.toml` and with `--peer`, or as `http://Office:7000/` and
/// `http://office:7000`) gets one task.
pub fn distinct_peers(peers: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut distinct: Vec<String> = Vec::new();
    for peer in peers {
        let peer = normalize_peer(&peer);
        if !distinct.contains(&peer) {
            distinct.push(peer);
        }
    }
    distinct
}

/// A peer address in one spelling for trivially equal ones: trimmed, without trailing slashes,
/// the scheme and host (everything before the path) in ASCII lowercase.
fn normalize_peer(peer: &str) -> String {
    let peer = peer.trim().trim_end_matches('/');
    let authority_start = peer.find("://").map_or(0, |i| i + 3);
    let path_start = peer[authority_start..].find('/').map_or(peer.len(), |i| authority_start + i);
    let (origin, path) = peer.split_at(path_start);
    format!("{}{path}", origin.to_ascii_lowercase())
}

/// Runs until `shutdown` turns true. The peer is registered (`Shared::add_peer`) by the caller,
/// which hands over its wake signal.
pub async fn run_peer(
    shared: Arc<Shared>,
    url: String,
    wake: Arc<Notify>,
    pull_every: Option<Duration>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let started = tokio::time::Instant::now();
        let result = live_session(shared.clone(), &url, pull_every, &mut shutdown).await;
        if *shutdown.borrow() {
            return;
        }
        let error = match result {
            Ok(()) => "session ended".to_string(),
            Err(e) => format!("{e:#}"),
        };
        tracing::info!(peer = %url, error = %error, retry_in_ms = backoff.as_millis() as u64, "peer offline");
        shared.update_peer(&url, |info| {
            info.state = PeerState::Offline;
            info.last_error = error;
        });
        if started.elapsed() > Duration::from_secs(10) {
            backoff = BACKOFF_MIN;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = wake.notified() => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::distinct_peers;

    fn distinct(peers: &[&str]) -> Vec<String> {
        distinct_peers(peers.iter().map(|p| p.to_string()))
    }

    #[test]
    fn each_peer_once_in_first_seen_order() {
        assert_eq!(distinct(&["http://a:1", "http://b:1", "http://a:1"]), ["http://a:1", "http://b:1"]);
        assert_eq!(distinct(&["http://b:1", "http://a:1", "http://b:1", "http://a:1"]), ["http://b:1", "http://a:1"]);
    }

    #[test]
    fn trivially_equal_spellings_are_one_peer() {
        assert_eq!(
            distinct(&["http://Office:7000/", " http://office:7000", "HTTP://OFFICE:7000//"]),
            ["http://office:7000"]
        );
        // The path keeps its case; only the scheme and host are case-insensitive.
        assert_eq!(distinct(&["http://h:1/Relay/", "http://H:1/Relay"]), ["http://h:1/Relay"]);
        assert_eq!(distinct(&["http://h:1/a", "http://h:1/A"]), ["http://h:1/a", "http://h:1/A"]);
    }

    #[test]
    fn odd_input_does_not_panic() {
        assert_eq!(distinct(&["", "/", "://", "é://Ä/ö/"]), ["", ":", "é://Ä/ö"]);
    }
}
