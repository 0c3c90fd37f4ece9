//! Unknown peers, and malformed, oversized and forged messages: refused with a clear status,
//! nothing stored, and the node keeps serving.

use bytes::Bytes;
use casesync_engine::model::event::SignedEvent;
use casesync_engine::model::ids::AuthorId;
use casesync_engine::model::limits::BATCH_EVENTS_MAX;
use casesync_engine::model::signing::DeviceKey;
use casesync_engine::testkit::{chain_with_bodies, wire};
use casesync_node::Node;
use casesync_proto::v1 as pb;
use casesync_proto::v1::sync_client::SyncClient;
use tonic::transport::Channel;
use tonic::{Code, Request};

use crate::support::*;

async fn client(node: &Node, key: &DeviceKey) -> SyncClient<Channel> {
    sync_client_as(node, key).await.unwrap()
}

/// `count` events by `key` in the node's space, each with a body of `body_bytes` bytes.
fn events_by(key: &DeviceKey, node: &Node, count: u64, body_bytes: usize) -> Vec<SignedEvent> {
    chain_with_bodies(key, node.shared().space, count, |_| Bytes::from(vec![7u8; body_bytes]))
}

async fn push(node: &Node, key: &DeviceKey, events: Vec<pb::SignedEvent>) -> Result<pb::PushReply, tonic::Status> {
    let batch = pb::EventBatch { events };
    let stream = tokio_stream::iter(vec![batch]);
    client(node, key).await.push(Request::new(stream)).await.map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_unauthenticated_peers_are_refused() {
    let c = cluster(&["office"]).await;
    let office = start(&c.dirs[0], vec![]).await;
    let space = Bytes::copy_from_slice(office.shared().space.as_bytes());
    // No device certificate: the TLS handshake itself is refused, nothing reaches the service.
    let anonymous = casesync_node::tls::anonymous_client_config().unwrap();
    let refused = match casesync_node::sync_client::connect_peer(&office.sync_url(), anonymous).await {
        Ok(channel) => {
            SyncClient::new(channel).heads(pb::HeadsRequest { space: space.clone(), ..Default::default() }).await.err()
        }
        Err(_) => None,
    };
    assert!(refused.is_none_or(|status| status.code() != Code::Ok));
    // A device the space does not know: authenticated by its key, refused by the membership.
    let stranger = DeviceKey::from_secret([99; 32]);
    let status = client(&office, &stranger)
        .await
        .heads(pb::HeadsRequest { space: space.clone(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("may not sync in this space"), "{status:?}");
    let pull = pb::PullRequest { space, have: None, follow: false, listed: false };
    let status = client(&office, &stranger).await.pull(pull).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    office.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_is_not_a_member_is_refused_before_its_request_body_is_read() {
    let c = cluster(&["office"]).await;
    let office = start(&c.dirs[0], vec![]).await;
    let stranger = DeviceKey::from_secret([98; 32]);
    // A body past the message limit: read first, it would be refused as too large; the door
    // refuses the device before reading it.
    let huge = Bytes::from(vec![1u8; 5 * 1024 * 1024]);
    let status = client(&office, &stranger)
        .await
        .heads(pb::HeadsRequest { space: huge.clone(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let pull = pb::PullRequest { space: huge.clone(), have: None, follow: false, listed: false };
    assert_eq!(client(&office, &stranger).await.pull(pull).await.unwrap_err().code(), Code::PermissionDenied);
    // Join is open to devices that are not members yet, with small bodies only.
    let join = pb::JoinRequest { space: Bytes::from(vec![2u8; 128 * 1024]), admit: None };
    let status = client(&office, &stranger).await.join(join).await.unwrap_err();
    assert!(![Code::Ok, Code::PermissionDenied].contains(&status.code()), "{status:?}");
    assert_ne!(status.code(), Code::InvalidArgument, "cut by size before its space was read: {status:?}");
    let join = pb::JoinRequest { space: Bytes::copy_from_slice(office.shared().space.as_bytes()), admit: None };
    let status = client(&office, &stranger).await.join(join).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "a small Join reaches the service: {status:?}");
    // So is Introduce (a device granted after this node last heard from its admin), cut alike.
    let introduce = pb::IntroduceRequest { space: Bytes::from(vec![2u8; 128 * 1024]), ..Default::default() };
    let status = client(&office, &stranger).await.introduce(introduce).await.unwrap_err();
    assert!(![Code::Ok, Code::PermissionDenied].contains(&status.code()), "{status:?}");
    assert_ne!(status.code(), Code::InvalidArgument, "cut by size before its space was read: {status:?}");
    let space = Bytes::copy_from_slice(office.shared().space.as_bytes());
    let introduce = pb::IntroduceRequest { space, author: Bytes::from_static(&[1; 32]), events: Vec::new() };
    let status = client(&office, &stranger).await.introduce(introduce).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "only an admin's chain introduces: {status:?}");
    // The node keeps serving its members.
    let me = identity(&c.dirs[0]).key;
    let space = Bytes::copy_from_slice(office.shared().space.as_bytes());
    client(&office, &me).await.heads(pb::HeadsRequest { space, ..Default::default() }).await.unwrap();
    office.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_malformed_and_oversized_pushes_store_nothing() {
    let c = cluster(&["office", "home"]).await;
    let office = start(&c.dirs[0], vec![]).await;
    // Home's key is known to the office; use it to push crafted events.
    let home = crate::support::identity(&c.dirs[1]).key;
    let honest = events_by(&home, &office, 3, 100);

    // Malformed bytes.
    let junk = pb::SignedEvent { event: Bytes::from_static(b"\x0a\x99garbage"), signature: Bytes::from(vec![0u8; 64]) };
    let status = push(&office, &home, vec![junk]).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // A gap: seq 3 without 1..2.
    let status = push(&office, &home, wire(&honest[2..])).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("gap: expected seq 1, got 3"), "{status:?}");

    // Bad signature on an event that would otherwise start the chain.
    let mut bad_first = honest[0].to_wire();
    let mut sig = bad_first.signature.to_vec();
    sig[0] ^= 0x80;
    bad_first.signature = Bytes::from(sig);
    let status = push(&office, &home, vec![bad_first]).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("seq 1 refused"), "{status:?}");

    // Too many events in one batch.
    let many = events_by(&home, &office, BATCH_EVENTS_MAX as u64 + 1, 10);
    let status = push(&office, &home, wire(&many)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // A message over the size limit: refused by the server's decoder.
    let huge = events_by(&home, &office, 6, 900_000);
    let status = push(&office, &home, wire(&huge)).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("message length too large"), "{status:?}");

    assert_eq!(events(&office), 0, "nothing was stored");

    // Forged: an event that continues the stored chain exactly (seq 3 after the stored 1..2,
    // prev = link of seq 2) in home's name, with a body home never wrote, signed by another key.
    // It passes every chain check and is refused by the signature check alone.
    let reply = push(&office, &home, wire(&honest[..2])).await.unwrap();
    assert_eq!(reply.accepted, 2);
    let forger = DeviceKey::from_secret([66; 32]);
    let forged =
        SignedEvent::build(&forger, &honest[2].header, Bytes::from_static(b"a body home never wrote")).unwrap();
    assert_eq!((forged.header.author, forged.header.prev), (home.author(), honest[1].link));
    let status = push(&office, &home, wire(&[forged])).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("seq 3 refused: bad signature"), "{status:?}");
    assert_eq!(events(&office), 2, "the forged event was not stored");

    // The node keeps serving: the honest event lands.
    let reply = push(&office, &home, wire(&honest)).await.unwrap();
    assert_eq!((reply.accepted, reply.duplicates), (1, 2));
    assert_eq!(events(&office), 3);
    office.shutdown().await;
}

/// A peer that claims, in a pull's `have` or in its heads, that this device's own chain reaches
/// seq 2^64-1 sends no evidence: no fence rises, and the device goes on writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_about_this_devices_chain_without_its_events_changes_nothing() {
    let c = cluster(&["office", "home"]).await;
    let office = start(&c.dirs[0], vec![]).await;
    create(&office, case(1), "Anna").await;
    let home = crate::support::identity(&c.dirs[1]).key;
    let me = office.shared().identity.author();
    let claim: casesync_engine::model::vector_clock::VersionVector = [(me, u64::MAX)].into_iter().collect();
    let pull = pb::PullRequest {
        space: Bytes::copy_from_slice(office.shared().space.as_bytes()),
        have: Some(casesync_engine::codec::wire::vector_to_pb(&claim)),
        follow: false,
        listed: false,
    };
    let mut stream = client(&office, &home).await.pull(pull).await.unwrap().into_inner();
    while stream.message().await.unwrap().is_some() {}
    assert_eq!(office.shared().store.fence(&office.shared().space, &me), 0);
    set(&office, case(1), "phone", "030-1").await;
    // Its founding event, its first data key, the grant of home, the key shared with home, the
    // case, the change.
    assert_eq!(office.shared().store.vector(&office.shared().space).get(&me), 6);
    office.shutdown().await;
}

/// One member forks its chain: each side reaches a different node, the longer one the office.
/// When home pulls from the office, the forking author's next events do not continue the chain
/// home holds and are refused, kept as evidence of the fork, and the author is quarantined;
/// every other author's events in the same stream still land, though the forking author's range
/// comes first; `status` names the refused and the forked author. The session itself succeeds,
/// both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forking_author_is_refused_alone_and_every_other_author_still_syncs() {
    let c = cluster(&["office", "home", "mallory", "carol"]).await;
    let office = start(&c.dirs[0], vec![]).await;
    let home = start(&c.dirs[1], vec![]).await;
    let (mut forking, mut honest) = (identity(&c.dirs[2]).key, identity(&c.dirs[3]).key);
    // The forking author sorts first: a sender streams its range before the honest one's.
    if forking.author() > honest.author() {
        std::mem::swap(&mut forking, &mut honest);
    }
    let space = office.shared().space;
    let one_side = chain_with_bodies(&forking, space, 3, |_| Bytes::from_static(b"one side"));
    let other_side = chain_with_bodies(&forking, space, 5, |_| Bytes::from_static(b"the other side"));
    let honest_events = chain_with_bodies(&honest, space, 5, |_| Bytes::from_static(b"honest"));
    push(&home, &forking, wire(&one_side)).await.unwrap();
    push(&office, &forking, wire(&other_side)).await.unwrap();
    push(&office, &honest, wire(&honest_events)).await.unwrap();

    let counts =
        casesync_node::sync_client::sync_once(home.shared().clone(), &office.sync_url(), |_, _| {}).await.unwrap();
    assert_eq!(counts.received, 5);
    let held = |node: &casesync_node::Node, author: AuthorId| node.shared().store.vector(&space).get(&author);
    assert_eq!((held(&home, honest.author()), held(&home, forking.author())), (5, 3));
    let refused = home.shared().refused_authors();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!((refused[0].author, refused[0].seq), (forking.author(), 4));
    assert!(refused[0].reason.contains("broken chain"), "{}", refused[0].reason);
    let status = casesync_node::case_service::node_status(home.shared(), true).unwrap();
    assert_eq!(status.refused.len(), 1);
    assert_eq!(status.refused[0].device, forking.author().device_id());
    assert_eq!(status.refused[0].peer, office.shared().identity.author().device_id());
    // The refused event is signed by the forking author against the chain home holds: kept as
    // evidence, and the author quarantined until an admin decides.
    assert_eq!(status.forked.len(), 1, "{:?}", status.forked);
    assert_eq!(status.forked[0].device, forking.author().device_id());
    assert_eq!((status.forked[0].first_seq, status.forked[0].evidence), (4, 1));
    assert!(status.forked[0].quarantined);
    let text = casesync_node::output::status_text(&status);
    assert!(
        text.contains(&format!("forked  {}  signed two chains from seq 4", forking.author().device_id())),
        "{text}"
    );
    assert!(office.shared().refused_authors().is_empty());
    // The next session goes the same way: nothing stops, nothing more is refused than that run.
    let again =
        casesync_node::sync_client::sync_once(home.shared().clone(), &office.sync_url(), |_, _| {}).await.unwrap();
    assert_eq!(again.received, 0);
    assert_eq!(home.shared().refused_authors()[0].times, 2, "one refusal a session");
    let status = casesync_node::case_service::node_status(home.shared(), true).unwrap();
    assert_eq!(status.forked[0].evidence, 1, "the same event again is no new evidence");
    // The other way: the office pushes the forking author's run (refused by home, which goes on
    // with the stream) and the honest author's next events (stored).
    let more = chain_with_bodies(&honest, space, 8, |_| Bytes::from_static(b"honest"));
    push(&office, &honest, wire(&more)).await.unwrap();
    let pushed =
        casesync_node::sync_client::sync_once(office.shared().clone(), &home.sync_url(), |_, _| {}).await.unwrap();
    assert_eq!(pushed.sent, 3);
    assert_eq!(held(&home, honest.author()), 8);
    assert_eq!(home.shared().refused_authors()[0].times, 3);
    office.shutdown().await;
    home.shutdown().await;
}

async fn push_batches(node: &Node, key: &DeviceKey, batches: Vec<pb::EventBatch>) -> pb::PushReply {
    client(node, key).await.push(Request::new(tokio_stream::iter(batches))).await.unwrap().into_inner()
}

/// A member that replays, in full batches, what the node already holds (a flood of nothing new)
/// never switches it into a bulk catch-up: only batches of new events count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_replaying_what_a_node_holds_never_holds_it_in_bulk() {
    let c = cluster(&["office", "home"]).await;
    let office = start(&c.dirs[0], vec![]).await;
    let home = crate::support::identity(&c.dirs[1]).key;
    let events = events_by(&home, &office, 12 * BATCH_EVENTS_MAX as u64, 10);
    let batches: Vec<pb::EventBatch> =
        events.chunks(BATCH_EVENTS_MAX).map(|chunk| pb::EventBatch { events: wire(chunk) }).collect();
    let first = push_batches(&office, &home, batches.clone()).await;
    assert_eq!(first.accepted, events.len() as u64);
    let floods = office.shared().bulk_catch_ups();
    assert_eq!(floods, 1, "twelve full batches of new events are a flood");
    let replay = push_batches(&office, &home, batches).await;
    assert_eq!((replay.accepted, replay.duplicates), (0, events.len() as u64));
    assert_eq!(office.shared().bulk_catch_ups(), floods, "a replay is no flood");
    office.shutdown().await;
}

/// A local command during a bulk catch-up waits for its end instead of being refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_during_a_bulk_catch_up_waits_for_its_end() {
    use casesync_node::bulk_catch_up::BulkCatchUp;
    use casesync_proto::v1::cases_server::Cases;
    let c = cluster(&["office"]).await;
    let office = start(&c.dirs[0], vec![]).await;
    let shared = office.shared().clone();
    let bulk = BulkCatchUp::start_on_ingest_thread(&shared).await.unwrap();
    let service = casesync_node::case_service::CaseService::new(shared.clone());
    let request = pb::CreateCaseRequest {
        fields: vec![pb::NamedValue {
            name: "name".into(),
            value: Some(pb::Value { kind: Some(pb::value::Kind::Text("waited".into())) }),
        }],
    };
    let mut command = tokio::spawn(async move { service.create_case(Request::new(request)).await });
    // Still waiting while the catch-up runs (refused at once before).
    let early = tokio::time::timeout(std::time::Duration::from_millis(300), &mut command).await;
    assert!(early.is_err(), "the command did not wait: {early:?}");
    bulk.finish().await.unwrap();
    let view = command.await.unwrap().unwrap().into_inner();
    assert!(!view.case_id.is_empty());
    office.shutdown().await;
}

/// Past its bound a sync listener holds no more connections (a flood of connections holds no
/// more descriptors and tasks than that): a new one displaces the oldest still in its handshake,
/// so silent connections cannot keep a device out, and is closed at once when every slot holds
/// a connection that completed its handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connections_is_bounded() {
    use casesync_node::tls;
    use tokio::io::AsyncReadExt;
    use tokio_stream::StreamExt;
    let cert = tls::DeviceCert::new(&DeviceKey::from_secret([5; 32])).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut accepted = tls::incoming_at_most(listener, tls::server_config(&cert).unwrap(), 1);
    let closed =
        |read: Result<std::io::Result<usize>, tokio::time::error::Elapsed>| matches!(read, Ok(Ok(0)) | Ok(Err(_)));
    // A silent connection takes the only slot; the next displaces it (it never completes its
    // handshake), and is displaced in turn by a device that does.
    let mut first = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let _second = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), first.read(&mut [0u8; 1])).await;
    assert!(closed(read), "the oldest silent connection was not displaced");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let config = tls::client_config(&cert, std::sync::Arc::new(|_| Ok(())), seen).unwrap();
    let dialer = tls::Dialer { config, ca: None };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let _client = loop {
        match tls::dial("127.0.0.1", port, &dialer).await {
            Ok(client) => break client,
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(%error, "the slot is not free yet");
                tokio::task::yield_now().await;
            }
            Err(error) => panic!("a device found no slot among silent connections: {error}"),
        }
    };
    let established = accepted.next().await.unwrap();
    assert!(established.is_ok());
    // The slot is held by a connection that completed its handshake: past the bound a new
    // connection is closed at once.
    let mut late = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), late.read(&mut [0u8; 1])).await;
    assert!(closed(read), "a connection past the bound was not closed");
    drop(established);
}

/// A device opening more streams of a kind than it may hold loses its oldest one of that kind
/// (`RESOURCE_EXHAUSTED`), not the node its memory; the others, and other kinds, go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_past_its_streams_loses_its_oldest() {
    use casesync_node::device_streams::{StreamKind, STREAMS_PER_DEVICE_MAX};
    let c = cluster(&["office", "home"]).await;
    let office = start(&c.dirs[0], vec![]).await;
    let home = crate::support::identity(&c.dirs[1]).key;
    let device = home.author();
    let space = Bytes::copy_from_slice(office.shared().space.as_bytes());
    let client = client(&office, &home).await;

    // Following pulls: each stays open until the node ends it.
    let mut pulls = Vec::new();
    for _ in 0..=STREAMS_PER_DEVICE_MAX {
        let request = pb::PullRequest { space: space.clone(), have: None, follow: true, listed: false };
        pulls.push(client.clone().pull(request).await.unwrap().into_inner());
    }
    let ended = tokio::time::timeout(DEADLINE, async {
        loop {
            match pulls[0].message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ended.unwrap_err().code(), Code::ResourceExhausted, "the oldest pull ends");
    assert_eq!(office.shared().streams.count(&device, StreamKind::Pull), STREAMS_PER_DEVICE_MAX);

    // Pushes that send nothing yet: each stays open until its sender ends it.
    let mut senders = Vec::new();
    let mut replies = Vec::new();
    for _ in 0..=STREAMS_PER_DEVICE_MAX {
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::EventBatch>(1);
        let mut push_client = client.clone();
        replies.push(tokio::spawn(async move {
            push_client.push(Request::new(tokio_stream::wrappers::ReceiverStream::new(rx))).await
        }));
        senders.push(tx);
        // In order: the first opened is the oldest.
        let opened = tokio::time::timeout(DEADLINE, async {
            while office.shared().streams.count(&device, StreamKind::Push) < senders.len().min(STREAMS_PER_DEVICE_MAX) {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        });
        opened.await.unwrap();
    }
    let oldest = tokio::time::timeout(DEADLINE, replies.remove(0)).await.unwrap().unwrap();
    assert_eq!(oldest.unwrap_err().code(), Code::ResourceExhausted, "the oldest push ends");
    // The newest push still lands what it sends.
    let written = events_by(&home, &office, 3, 10);
    senders.last().unwrap().send(pb::EventBatch { events: wire(&written) }).await.unwrap();
    drop(senders);
    let newest = tokio::time::timeout(DEADLINE, replies.pop().unwrap()).await.unwrap().unwrap().unwrap();
    assert_eq!(newest.into_inner().accepted, 3);
    assert_eq!(events(&office), 3);
    office.shutdown().await;
}
