//! The demo's second act: rights enforced by signatures. A reader's write is refused, by its
//! own node and, when signed and sent anyway, by the relay and the office; a lost laptop is
//! revoked at the office, and what it writes afterwards counts nowhere.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use casesync_engine::codec::wire;
use casesync_engine::commands::Command;
use casesync_engine::model::event::{BodyEncoding, EventHeader, SignedEvent};
use casesync_engine::model::ids::{CaseId, EntryId, EventId};
use casesync_engine::model::operation::{FieldValue, Operation};

use super::{edit, random_case};
use crate::data_dir;
use crate::node::{Node, NodeConfig};
use crate::shared::{now_ms, Shared};

/// A case event the reader signs with its own key, bypassing every check of its node (a
/// modified client).
fn reader_forgery(reader: &Shared) -> anyhow::Result<SignedEvent> {
    let head = reader.store.head(&reader.space, &reader.identity.author());
    let header = EventHeader {
        space: reader.space,
        author: reader.identity.author(),
        seq: head.map_or(1, |h| h.seq + 1),
        prev: head.map_or(EventId::ZERO, |h| h.link),
        hlc: now_ms() << 16,
        encoding: BodyEncoding::Plain,
    };
    let op = Operation::CreateCase { case: random_case(), fields: Default::default() };
    Ok(SignedEvent::build(&reader.identity.key, &header, Bytes::from(wire::encode_operation(&op)))?)
}

/// The reader tries to write, through its node and around it.
pub async fn reader_refused(
    reader: &Arc<Shared>,
    judges: &[(&str, &Arc<Shared>)],
    say: &impl Fn(&str),
) -> anyhow::Result<()> {
    let command =
        Command::CreateCase { id: random_case(), fields: vec![("name".into(), FieldValue::Text("x".into()))] };
    match edit(reader, command).await {
        Ok(_) => bail!("the reader's node let it write"),
        Err(refusal) => say(&format!("assistant (reader) tried to add a case: refused, {refusal}")),
    }
    let forged = reader_forgery(reader)?;
    for (name, judge) in judges {
        let report = judge.store.ingest(&judge.space, vec![forged.to_wire()])?;
        let Some(refusal) = report.rejected.first().filter(|_| report.accepted == 0) else {
            bail!("{name} stored a reader's event");
        };
        say(&format!("{name} refused the reader's event, signed and sent anyway: {}", refusal.reason));
    }
    Ok(())
}

/// Waits until `node`'s first peer reports an error (its connection refused).
async fn refused_by_peer(node: &Node, deadline: Duration) -> anyhow::Result<String> {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some((_, info)) = node.shared().peers().into_iter().find(|(_, i)| !i.last_error.is_empty()) {
            return Ok(info.last_error);
        }
        if tokio::time::Instant::now() >= until {
            bail!("the revoked laptop was not refused within {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The laptop is lost: the office revokes it while it is offline; what it writes then counts
/// nowhere, and its next connection is refused. Returns the laptop node, restarted.
pub async fn laptop_revoked(
    office: &Arc<Shared>,
    laptop: Node,
    config: NodeConfig,
    say: &impl Fn(&str),
    anna: CaseId,
) -> anyhow::Result<Node> {
    let laptop_key = laptop.shared().identity.author();
    laptop.shutdown().await;
    let o = office.clone();
    let rotated = tokio::task::spawn_blocking(move || {
        let before = o.store.sealing_key(&o.space);
        o.store.revoke(&o.space, &o.identity.key, now_ms(), laptop_key)?;
        // A new data key for what is written from now on, wrapped for everyone but the laptop.
        o.maintain_keys();
        Ok::<_, anyhow::Error>(o.store.sealing_key(&o.space) != before)
    })
    .await??;
    office.notify(office.store.next_position());
    say(&format!("\nthe laptop is lost: the office revokes it ({})", laptop_key.device_id()));
    if rotated {
        say("  the office seals what is written next under a new data key the laptop never receives");
    }
    let offline = tokio::task::spawn_blocking({
        let dir = config.data.clone();
        move || data_dir::open(&dir, false)
    })
    .await??;
    tokio::task::spawn_blocking(move || {
        let command = Command::AddEntry {
            case: anna,
            entry: EntryId(random_case().0),
            fields: vec![("note".into(), FieldValue::Text("written on the lost laptop".into()))],
        };
        offline.store.execute(&offline.space, &offline.identity.key, now_ms(), command)
    })
    .await??;
    say("the laptop, offline, adds a note to Anna's case");
    let laptop = Node::start(config).await?;
    let refusal = refused_by_peer(&laptop, super::CONVERGE_DEADLINE).await?;
    // The peer's words, without the status code's.
    let refusal = refusal.split_once("message: \"").map_or(refusal.as_str(), |(_, m)| m.trim_end_matches('"'));
    say(&format!("the laptop comes back online, and the relay refuses it: {refusal}"));
    say("its offline note counts nowhere: no node stores it");
    Ok(laptop)
}

/// The office invites a new computer; it joins through the relay with the one-time code, ends
/// with the same state as everyone, and starts as a node. Returns it.
pub async fn tablet_joins(
    office: &Arc<Shared>,
    relay_url: &str,
    dir: &std::path::Path,
    say: &impl Fn(&str),
) -> anyhow::Result<Node> {
    let request = casesync_proto::v1::InviteRequest {
        role: "writer".into(),
        until_ms: 0,
        expires_in_ms: 0,
        via: relay_url.to_string(),
    };
    let reply = crate::invite::create(office.clone(), request).await.map_err(|s| anyhow::anyhow!("{}", s.message()))?;
    say(&format!("\nthe office invites a tablet as a writer: {}", reply.code));
    let joined = crate::join::join(dir, &reply.code, "tablet", None).await?;
    say(&format!(
        "the tablet joins with the code through the relay: {} events, state {}",
        joined.events, joined.state_hash
    ));
    let mut config = NodeConfig::new(dir);
    config.peers = vec![relay_url.to_string()];
    Node::start(config).await
}
