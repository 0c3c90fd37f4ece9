//! Rights over real gRPC: readers, strangers and revoked devices are refused by every node, the
//! relay included, and nothing of theirs is stored or relayed.

use std::time::Duration;

use bytes::Bytes;
use casesync_engine::codec::wire;
use casesync_engine::model::event::{BodyEncoding, EventHeader, SignedEvent};
use casesync_engine::model::ids::{AuthorId, EventId};
use casesync_engine::model::operation::Operation;
use casesync_engine::model::signing::DeviceKey;
use casesync_node::shared::now_ms;
use casesync_node::Node;
use casesync_proto::v1 as pb;
use tonic::{Code, Request};

use crate::support::*;

fn key_of(dir: &std::path::Path) -> DeviceKey {
    crate::support::identity(dir).key
}

/// A case event signed by `key` as the next of its chain on `node`, sent around every check of
/// the author's own node.
fn case_event(node: &Node, key: &DeviceKey) -> pb::SignedEvent {
    let shared = node.shared();
    let head = shared.store.head(&shared.space, &key.author());
    let header = EventHeader {
        space: shared.space,
        author: key.author(),
        seq: head.map_or(1, |h| h.seq + 1),
        prev: head.map_or(EventId::ZERO, |h| h.link),
        hlc: now_ms() << 16,
        encoding: BodyEncoding::Plain,
    };
    let op = Operation::CreateCase { case: case(9), fields: Default::default() };
    SignedEvent::build(key, &header, Bytes::from(wire::encode_operation(&op))).unwrap().to_wire()
}

async fn push(node: &Node, key: &DeviceKey, events: Vec<pb::SignedEvent>) -> Result<pb::PushReply, tonic::Status> {
    let stream = tokio_stream::iter(vec![pb::EventBatch { events }]);
    sync_client_as(node, key).await.unwrap().push(Request::new(stream)).await.map(|r| r.into_inner())
}

async fn heads(node: &Node, key: &DeviceKey) -> Result<pb::HeadsReply, tonic::Status> {
    let space = Bytes::copy_from_slice(node.shared().space.as_bytes());
    sync_client_as(node, key)
        .await
        .unwrap()
        .heads(pb::HeadsRequest { space, ..Default::default() })
        .await
        .map(|r| r.into_inner())
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + DEADLINE;
    while !done() {
        assert!(tokio::time::Instant::now() < until, "{what} within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn holds(node: &Node, author: &AuthorId) -> bool {
    node.shared().store.head(&node.shared().space, author).is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_strangers_and_revoked_devices_are_refused_by_every_node_including_the_relay() {
    let c = cluster(&["relay", "office", "reader", "home"]).await;
    let relay = start(&c.dirs[0], vec![]).await;
    let office = start(&c.dirs[1], vec![relay.sync_url()]).await;
    let home = start(&c.dirs[3], vec![relay.sync_url()]).await;
    create(&office, case(1), "Anna").await;
    create(&home, case(2), "Jan").await;
    converge(&[&relay, &office, &home]).await;

    // The reader pulls (it may read)...
    let reader = key_of(&c.dirs[2]);
    assert!(heads(&relay, &reader).await.is_ok());
    // ...but its signed case events, sent by a client that skips every check, are stored by
    // nobody: not the relay, not the office.
    for node in [&relay, &office] {
        let reply = push(node, &reader, vec![case_event(node, &reader)]).await.unwrap();
        assert_eq!(reply.accepted, 0);
        assert!(!holds(node, &reader.author()));
    }
    // A stranger cannot even connect; its events pushed through a member's connection (home
    // relaying them) are refused too.
    let stranger = DeviceKey::from_secret([77; 32]);
    assert_eq!(heads(&relay, &stranger).await.unwrap_err().code(), Code::PermissionDenied);
    let home_key = key_of(&c.dirs[3]);
    let reply = push(&relay, &home_key, vec![case_event(&relay, &stranger)]).await.unwrap();
    assert_eq!(reply.accepted, 0);
    assert!(!holds(&relay, &stranger.author()));

    // The office revokes home; once the relay has the revocation, home is shut out there.
    let o = office.shared().clone();
    let home_id = home_key.author();
    tokio::task::spawn_blocking(move || o.store.revoke(&o.space, &o.identity.key, now_ms(), home_id).unwrap())
        .await
        .unwrap();
    office.shared().notify(office.shared().store.next_position());
    let cut_at_relay = || relay.shared().store.membership(&relay.shared().space).cut(&home_id).is_some();
    wait_for("the relay holds the revocation", cut_at_relay).await;
    let status = heads(&relay, &home_key).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("revoked"), "{status:?}");
    // Its events written after the cut are refused, also pushed through the office.
    let late = case_event(&home, &home_key);
    assert_eq!(push(&relay, &home_key, vec![late.clone()]).await.unwrap_err().code(), Code::PermissionDenied);
    let office_key = key_of(&c.dirs[1]);
    let reply = push(&relay, &office_key, vec![late]).await.unwrap();
    assert_eq!(reply.accepted, 0);
    let cut = relay.shared().store.membership(&relay.shared().space).cut(&home_id).unwrap();
    assert_eq!(relay.shared().store.head(&relay.shared().space, &home_id).map(|h| h.seq), Some(cut));
    for n in [office, home, relay] {
        n.shutdown().await;
    }
}

/// A server whose key is not a member of the space (an impostor at a peer's address, or a
/// machine in the middle with its own key) is refused during the TLS handshake: the client
/// sends it nothing, not even its heads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_not_a_member_is_refused_before_anything_is_sent() {
    let c = cluster(&["office", "home"]).await;
    let office = start(&c.dirs[0], vec![]).await;
    create(&office, case(1), "Anna").await;
    // The impostor serves the same space id, with a key nobody granted.
    let impostor_dir = c._root.path().join("impostor");
    let space = office.shared().space;
    tokio::task::spawn_blocking({
        let dir = impostor_dir.clone();
        move || casesync_node::data_dir::init(&dir, "impostor", Some(space), false, None).unwrap()
    })
    .await
    .unwrap();
    let impostor = start(&impostor_dir, vec![]).await;
    let home = start(&c.dirs[1], vec![impostor.sync_url()]).await;
    let refused = || home.shared().peers().iter().any(|(_, p)| p.last_error.contains("not a member"));
    wait_for("home refuses the impostor", refused).await;
    assert_eq!(impostor.shared().store.vector(&space).total(), 0, "the impostor received nothing");
    // Home still syncs with the real office.
    let sync = casesync_node::sync_client::sync_once(home.shared().clone(), &office.sync_url(), |_, _| {}).await;
    assert!(sync.is_ok(), "{sync:?}");
    for n in [home, impostor, office] {
        n.shutdown().await;
    }
}

/// Identity comes from the TLS handshake alone: a request that names another device in headers
/// (as a captured request of the former header scheme would) is judged as the device that
/// holds the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_naming_another_device_carry_no_authority() {
    let c = cluster(&["office", "home"]).await;
    let office = start(&c.dirs[0], vec![]).await;
    let home = key_of(&c.dirs[1]);
    let stranger = DeviceKey::from_secret([78; 32]);
    let space = Bytes::copy_from_slice(office.shared().space.as_bytes());
    let mut request = Request::new(pb::HeadsRequest { space, ..Default::default() });
    for (name, value) in [("x-casesync-device", home.author().to_hex()), ("x-casesync-sig", "00".repeat(64))] {
        request.metadata_mut().insert(name, value.parse().unwrap());
    }
    let status = sync_client_as(&office, &stranger).await.unwrap().heads(request).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains(&stranger.author().device_id()), "{status:?}");
    office.shutdown().await;
}

/// A revocation that reaches a node after it stored the revoked device's later events: the node
/// folds its views again without them, sends them to nobody, and ends with the admin's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_arriving_late_removes_what_it_cuts_over_grpc() {
    use casesync_node::sync_client::sync_once;
    let c = cluster(&["office", "home", "laptop"]).await;
    let office = start(&c.dirs[0], vec![]).await;
    let home = start(&c.dirs[1], vec![]).await;
    let laptop = start(&c.dirs[2], vec![]).await;
    create(&office, case(1), "Anna").await;
    for node in [&home, &laptop] {
        sync_once(node.shared().clone(), &office.sync_url(), |_, _| {}).await.unwrap();
    }
    // The laptop writes; the office, which has not seen it, revokes the laptop meanwhile.
    create(&laptop, case(2), "written after the cut").await;
    let laptop_id = key_of(&c.dirs[2]).author();
    let o = office.shared().clone();
    tokio::task::spawn_blocking(move || o.store.revoke(&o.space, &o.identity.key, now_ms(), laptop_id).unwrap())
        .await
        .unwrap();
    // Home hears from the laptop first and shows its case...
    sync_once(laptop.shared().clone(), &home.sync_url(), |_, _| {}).await.unwrap();
    let space = home.shared().space;
    assert!(home.shared().store.case_view(&space, &case(2)).unwrap().is_some());
    // ...then from the office: the case is gone, and the two agree.
    sync_once(home.shared().clone(), &office.sync_url(), |_, _| {}).await.unwrap();
    assert!(home.shared().store.case_view(&space, &case(2)).unwrap().is_none());
    assert_eq!(state_hash(&home), state_hash(&office));
    assert!(!holds(&office, &laptop_id), "home sent the office nothing above the cut");
    // The laptop is shut out of the office.
    assert!(sync_once(laptop.shared().clone(), &office.sync_url(), |_, _| {}).await.is_err());
    for n in [laptop, home, office] {
        n.shutdown().await;
    }
}

/// A device granted after a member last heard from the admin: the member holds no grant for it,
/// but the device shows it the admin's chain up to its grant (`Introduce`), and they sync. A
/// laptop offline while the practice changed computers reaches the new one without the admin's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_granted_while_a_member_was_away_introduces_itself_with_its_grant() {
    use casesync_engine::model::membership::{NewGrant, Role};
    use casesync_node::sync_client::sync_once;
    let c = cluster(&["office", "home"]).await;
    let office = start(&c.dirs[0], vec![]).await;
    let home = start(&c.dirs[1], vec![]).await;
    create(&office, case(1), "Anna").await;
    sync_once(home.shared().clone(), &office.sync_url(), |_, _| {}).await.unwrap();
    // Home is away from now on; the office grants a new laptop.
    let laptop_dir = c.dirs[0].parent().unwrap().join("laptop");
    let space = office.shared().space;
    let init_dir = laptop_dir.clone();
    let report = tokio::task::spawn_blocking(move || {
        casesync_node::data_dir::init(&init_dir, "laptop", Some(space), false, None)
    })
    .await
    .unwrap()
    .unwrap();
    let laptop_id = AuthorId::from_hex(&report.device_key).unwrap();
    let o = office.shared().clone();
    tokio::task::spawn_blocking(move || {
        let grant = NewGrant { device: laptop_id, role: Role::Writer, name: "laptop".into(), until_ms: None };
        o.store.grant(&o.space, &o.identity.key, now_ms(), grant).unwrap();
        // The space's data key, wrapped for the laptop too.
        o.maintain_keys();
    })
    .await
    .unwrap();
    let laptop = start(&laptop_dir, vec![]).await;
    sync_once(laptop.shared().clone(), &office.sync_url(), |_, _| {}).await.unwrap();
    create(&laptop, case(2), "written on the laptop").await;
    // Home has never heard of the laptop: the laptop shows its grant, and they sync.
    let before = events(&home);
    sync_once(laptop.shared().clone(), &home.sync_url(), |_, _| {}).await.unwrap();
    assert!(holds(&home, &laptop_id), "home stored the laptop's events");
    assert!(events(&home) > before);
    assert!(home.shared().store.case_view(&space, &case(2)).unwrap().is_some());
    // Only an admin's chain introduces: a run of a writer's chain is refused.
    let writer = key_of(&c.dirs[1]);
    let request = pb::IntroduceRequest {
        space: Bytes::copy_from_slice(space.as_bytes()),
        author: Bytes::copy_from_slice(writer.author().as_bytes()),
        events: Vec::new(),
    };
    let refused = sync_client_as(&office, &writer).await.unwrap().introduce(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // Nor does a run of the admin's chain that carries another device's events along.
    let admin = office.shared().identity.author();
    let held = |node: &Node, author: &AuthorId| node.shared().store.get_event(&space, author, 1).unwrap().unwrap();
    let mixed = pb::IntroduceRequest {
        space: Bytes::copy_from_slice(space.as_bytes()),
        author: Bytes::copy_from_slice(admin.as_bytes()),
        events: vec![held(&office, &admin).to_wire(), held(&home, &laptop_id).to_wire()],
    };
    let refused = sync_client_as(&office, &writer).await.unwrap().introduce(mixed).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    for n in [laptop, home, office] {
        n.shutdown().await;
    }
}
