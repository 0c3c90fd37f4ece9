//! The daemon's life across a failed write.
//!
//! A write that fails (a full disk, a failing device) poisons the store: it refuses every write
//! until it is opened again, and the open finds what was committed and nothing else. Waiting for
//! an operator to restart the daemon would leave the practice's device refusing every change in
//! the meantime, so [`serve`] watches the node's stores, and when one is poisoned it stops the
//! node, then starts it again, at growing intervals, until its stores open (the disk has room
//! again). Acknowledged writes are never at stake: a command is acknowledged only once its
//! write is durable.

use std::future::Future;
use std::time::Duration;

use crate::node::{Node, NodeConfig};

/// How often the node's stores are checked for a failed write.
pub const POISON_CHECK_EVERY: Duration = Duration::from_millis(500);
/// The first pause before the node starts again.
const FIRST_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause between two tries.
const PAUSE_MAX: Duration = Duration::from_secs(60);
/// How long the node tries to start again before it gives up with an error.
pub const RESTART_WAIT_MAX: Duration = Duration::from_secs(24 * 3600);

/// Runs a node of `config` until `stop` completes, starting it again after a failed write
/// poisoned one of its stores (module docs). `started` sees every node started.
pub async fn serve(
    config: NodeConfig,
    stop: impl Future<Output = ()>,
    mut started: impl FnMut(&Node),
) -> anyhow::Result<()> {
    let mut node = Node::start(config.clone()).await?;
    started(&node);
    tokio::pin!(stop);
    loop {
        let mut check = tokio::time::interval(POISON_CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let poisoned = loop {
            tokio::select! {
                () = &mut stop => break false,
                _ = check.tick() => if node.poisoned() { break true },
            }
        };
        node.shutdown().await;
        if !poisoned {
            return Ok(());
        }
        tracing::error!(
            "a write failed and the store refuses writes until it is opened again: the node stops, and starts again once the store opens (free space on the data dir's disk if it is full)"
        );
        node = match start_again(&config, &mut stop).await? {
            Some(node) => node,
            None => return Ok(()),
        };
        tracing::warn!("the node started again after a failed write");
        started(&node);
    }
}

/// Starts the node again, pausing longer after each failure, until it starts and its stores take
/// a write, `stop` completes (`None`), or [`RESTART_WAIT_MAX`] has passed (an error).
async fn start_again(
    config: &NodeConfig,
    stop: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> anyhow::Result<Option<Node>> {
    let give_up = tokio::time::Instant::now() + RESTART_WAIT_MAX;
    let mut pause = FIRST_PAUSE;
    loop {
        tokio::select! {
            () = stop.as_mut() => return Ok(None),
            () = tokio::time::sleep(pause) => {}
        }
        // An open writes little, so it may work on a disk that is still full: the node counts
        // as started once its stores took a durable write.
        let error = match Node::start(config.clone()).await {
            Ok(node) => match node.check_writable().await {
                Ok(()) => return Ok(Some(node)),
                Err(error) => {
                    node.shutdown().await;
                    error
                }
            },
            Err(error) => error,
        };
        if tokio::time::Instant::now() >= give_up {
            return Err(error.context(format!(
                "the node could not start again within {} h of a failed write",
                RESTART_WAIT_MAX.as_secs() / 3600
            )));
        }
        tracing::warn!(error = %format!("{error:#}"), retry_in_s = pause.as_secs(), "the node cannot start yet");
        pause = (pause * 2).min(PAUSE_MAX);
    }
}
