//! One task per configured peer: keep a live session up, reconnect with bounded exponential
//! backoff, wake early on "sync now", stop on shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::shared::{PeerState, Shared};
use crate::sync_client::live_session;

/// First retry delay.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Runs until `shutdown` turns true.
pub async fn run_peer(
    shared: Arc<Shared>,
    url: String,
    pull_every: Option<Duration>,
    mut shutdown: watch::Receiver<bool>,
) {
    let wake = shared.add_peer(&url);
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
