//! Star, chain, partition and heal, live push, a cut connection, and the self-fork guard.

use casesync_engine::commands::Command;
use casesync_engine::error::AppendError;
use casesync_engine::model::event::{BodyEncoding, EventHeader, SignedEvent};
use casesync_engine::model::ids::EventId;
use casesync_engine::model::operation::{smallvec, StatusChange};
use casesync_engine::testkit::copy_dir;
use casesync_node::demo::edit;
use casesync_node::{Node, NodeConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_through_a_relay_converges() {
    let c = cluster(&["relay", "office", "home", "laptop"]).await;
    let relay = start(&c.dirs[0], vec![]).await;
    let office = start(&c.dirs[1], vec![relay.sync_url()]).await;
    let home = start(&c.dirs[2], vec![relay.sync_url()]).await;
    let laptop = start(&c.dirs[3], vec![relay.sync_url()]).await;
    create(&office, case(1), "Anna").await;
    create(&home, case(2), "Jan").await;
    create(&laptop, case(3), "Maria").await;
    converge(&[&office, &home, &laptop, &relay]).await;
    let hash = state_hash(&office);
    assert_eq!(state_hash(&home), hash);
    assert_eq!(state_hash(&laptop), hash);
    assert_eq!(events(&relay), 3);
    for n in [office, home, laptop, relay] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_office_relay_laptop_converges_and_live_push_arrives() {
    let c = cluster(&["relay", "office", "laptop"]).await;
    let relay = start(&c.dirs[0], vec![]).await;
    let office = start(&c.dirs[1], vec![relay.sync_url()]).await;
    let laptop = start(&c.dirs[2], vec![relay.sync_url()]).await;
    create(&office, case(1), "Anna").await;
    converge(&[&office, &relay, &laptop]).await;
    // Live push: an edit on the office shows up in the laptop's projection, waited on a signal.
    let mut changes = laptop.shared().changes.subscribe();
    set(&office, case(1), "phone", "555").await;
    let space = laptop.shared().space;
    let seen = tokio::time::timeout(DEADLINE, async {
        loop {
            let view = laptop.shared().store.case_view(&space, &case(1)).unwrap().unwrap();
            if view.field("phone") == Some(&text("555")) {
                return;
            }
            changes.changed().await.unwrap();
        }
    })
    .await;
    assert!(seen.is_ok(), "live push did not arrive within the deadline");
    assert_eq!(state_hash(&office), state_hash(&laptop));
    for n in [office, laptop, relay] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_and_heal_with_concurrent_edits() {
    let c = cluster(&["office", "home"]).await;
    let office = start(&c.dirs[0], vec![]).await;
    let home = start(&c.dirs[1], vec![office.sync_url()]).await;
    create(&office, case(1), "Anna").await;
    create(&office, case(2), "Jan").await;
    converge(&[&office, &home]).await;
    // Partition: home stops; both sides edit.
    home.shutdown().await;
    let home_offline = {
        let dir = c.dirs[1].clone();
        tokio::task::spawn_blocking(move || casesync_node::data_dir::open(&dir, false)).await.unwrap().unwrap()
    };
    let now = casesync_node::shared::now_ms();
    let run = |command| home_offline.store.execute(&home_offline.space, &home_offline.identity.key, now, command);
    run(Command::SetFields { case: case(1), fields: vec![("phone".into(), text("home"))] }).unwrap();
    run(Command::SetFields { case: case(1), fields: vec![("address".into(), text("Elm St"))] }).unwrap();
    run(Command::ChangeStatus { case: case(2), change: StatusChange::Delete }).unwrap();
    drop(home_offline);
    set(&office, case(1), "phone", "office").await;
    set(&office, case(2), "court", "AG").await;
    // Heal.
    let home = start(&c.dirs[1], vec![office.sync_url()]).await;
    converge(&[&office, &home]).await;
    assert_eq!(state_hash(&office), state_hash(&home));
    let space = office.shared().space;
    let anna = office.shared().store.case_view(&space, &case(1)).unwrap().unwrap();
    let phone = anna.fields.iter().find(|f| f.name == "phone").unwrap();
    assert_eq!(phone.conflict.len(), 2, "both phone values are kept");
    assert_eq!(anna.field("address"), Some(&text("Elm St")));
    let jan = office.shared().store.case_view(&space, &case(2)).unwrap().unwrap();
    assert!(jan.deleted_with_concurrent_changes);
    for n in [office, home] {
        n.shutdown().await;
    }
}

/// A TCP proxy that cuts every connection once `cut_after` bytes went from server to client,
/// for the first `cuts` connections; later connections pass through.
async fn cutting_proxy(target: std::net::SocketAddr, cut_after: usize, cuts: usize) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for served in 0..1000 {
            let Ok((mut client, _)) = listener.accept().await else { return };
            let Ok(mut server) = TcpStream::connect(target).await else { return };
            let limit = if served < cuts { cut_after } else { usize::MAX };
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let up = async {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = cr.read(&mut buf).await.unwrap_or(0);
                        if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                let down = async {
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut sent = 0usize;
                    loop {
                        let n = sr.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        let n = n.min(limit.saturating_sub(sent));
                        if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                        sent += n;
                    }
                };
                tokio::select! { _ = up => {}, _ = down => {} }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_mid_stream_resumes_without_loss_or_duplicates() {
    let c = cluster(&["office", "laptop"]).await;
    let office = start(&c.dirs[0], vec![]).await;
    // 3000 events of ~300 bytes: about a megabyte to stream.
    let shared = office.shared().clone();
    tokio::task::spawn_blocking(move || {
        for batch in 0..3u8 {
            let commands: Vec<_> = (0..1000u32).collect();
            for i in commands {
                let id = casesync_engine::model::ids::CaseId([
                    batch,
                    (i >> 8) as u8,
                    i as u8,
                    1,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    7,
                ]);
                let command = Command::CreateCase { id, fields: vec![("note".into(), text(&"x".repeat(200)))] };
                shared.store.execute(&shared.space, &shared.identity.key, 1, command).unwrap();
            }
        }
    })
    .await
    .unwrap();
    let proxy = cutting_proxy(office.sync_addr(), 150_000, 3).await;
    let laptop = start(&c.dirs[1], vec![format!("http://{proxy}")]).await;
    converge(&[&office, &laptop]).await;
    assert_eq!(events(&laptop), 3000);
    assert_eq!(state_hash(&office), state_hash(&laptop));
    // Nothing is stored twice: the arrival index has exactly one record per event.
    let arrivals = laptop.shared().store.arrivals_from(0, 10_000).unwrap();
    let membership = laptop.shared().store.membership(&laptop.shared().space).records().count();
    assert_eq!(arrivals.len(), 3000 + membership);
    for n in [office, laptop] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restored_from_an_old_copy_fetches_its_own_tail_before_writing() {
    let c = cluster(&["office", "home"]).await;
    let office = start(&c.dirs[0], vec![]).await;
    create(&office, case(1), "Anna").await;
    office.shutdown().await;
    // An old backup of the office, taken after 1 event (same machine, same path when restored).
    let backup = tempfile::tempdir().unwrap();
    copy_dir(&c.dirs[0], backup.path());
    let office = start(&c.dirs[0], vec![]).await;
    let home = start(&c.dirs[1], vec![office.sync_url()]).await;
    set(&office, case(1), "phone", "1").await;
    set(&office, case(1), "phone", "2").await;
    converge(&[&office, &home]).await;
    office.shutdown().await;
    std::fs::remove_dir_all(&c.dirs[0]).unwrap();
    copy_dir(backup.path(), &c.dirs[0]);
    // Restored: the office's own chain (its founding, its first data key, the grant of home, the
    // key shared with home, the case) is at seq 5 locally, seq 7 at home.
    let office = start(&c.dirs[0], vec![home.sync_url()]).await;
    converge(&[&office, &home]).await;
    let me = office.shared().identity.author();
    assert_eq!(office.shared().store.vector(&office.shared().space).get(&me), 7);
    // The next write continues the chain at seq 8: no fork, home accepts it.
    set(&office, case(1), "phone", "3").await;
    converge(&[&office, &home]).await;
    assert_eq!(home.shared().store.vector(&home.shared().space).get(&me), 8);
    assert!(home.shared().store.forks(&home.shared().space).unwrap().is_empty());
    for n in [office, home] {
        n.shutdown().await;
    }
}

/// An event of `key`'s chain at `seq`, signed (its prev names nothing stored: evidence that the
/// chain reaches `seq` somewhere, not an event that could be stored here).
fn evidence(node: &Node, key: &casesync_engine::model::signing::DeviceKey, seq: u64) -> SignedEvent {
    let header = EventHeader {
        space: node.shared().space,
        author: key.author(),
        seq,
        prev: EventId([9; 32]),
        hlc: 1 << 16,
        encoding: BodyEncoding::Plain,
    };
    SignedEvent::build(key, &header, bytes::Bytes::from_static(b"body")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_writes_wait_while_a_peer_holds_a_newer_own_tail() {
    let c = cluster(&["office"]).await;
    let office = start(&c.dirs[0], vec![]).await;
    create(&office, case(1), "Anna").await;
    let shared = office.shared().clone();
    let me = shared.identity.author();
    assert!(shared.store.raise_fence(&shared.space, &evidence(&office, &shared.identity.key, 5)).unwrap());
    let refused = shared.store.execute(
        &shared.space,
        &shared.identity.key,
        1,
        Command::SetFields { case: case(1), fields: vec![("phone".into(), text("x"))] },
    );
    assert!(matches!(refused, Err(casesync_engine::Error::Append(AppendError::Fenced { local: 3, remote: 5 }))));
    let via_node = edit(&shared, Command::SetFields { case: case(1), fields: vec![("phone".into(), text("x"))] }).await;
    assert!(via_node.unwrap_err().to_string().contains("sync with a peer"));
    // The operator's way out: the fence is cleared and the device writes again.
    assert_eq!(shared.store.clear_fence(&shared.space, &me).unwrap(), 5);
    edit(&shared, Command::SetFields { case: case(1), fields: vec![("phone".into(), text("y"))] }).await.unwrap();
    office.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_without_evidence_raises_no_fence() {
    let c = cluster(&["office"]).await;
    let office = start(&c.dirs[0], vec![]).await;
    create(&office, case(1), "Anna").await;
    let shared = office.shared().clone();
    // An event claimed to be the office's, signed by another key: refused, nothing changes.
    let mut forged = evidence(&office, &casesync_engine::model::signing::DeviceKey::from_secret([42; 32]), u64::MAX);
    forged.header.author = shared.identity.author();
    assert!(shared.store.raise_fence(&shared.space, &forged).is_err());
    assert_eq!(shared.store.fence(&shared.space, &shared.identity.author()), 0);
    edit(&shared, Command::SetFields { case: case(1), fields: vec![("phone".into(), text("x"))] }).await.unwrap();
    office.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_data_dir_continues_as_a_new_device() {
    let c = cluster(&["office"]).await;
    let office = start(&c.dirs[0], vec![]).await;
    let original = office.shared().identity.author();
    office.shutdown().await;
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&c.dirs[0], copy.path());
    let copied = start(&copy.path().to_path_buf(), vec![]).await;
    assert_ne!(copied.shared().identity.author(), original);
    copied.shutdown().await;
    // The original stays who it was.
    let office = start(&c.dirs[0], vec![]).await;
    assert_eq!(office.shared().identity.author(), original);
    office.shutdown().await;
}

/// Bodies creating cases `from..to` (one "name" field each).
fn create_bodies(from: u64, to: u64) -> Vec<(casesync_engine::model::event::BodyEncoding, bytes::Bytes)> {
    (from..to)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&i.to_be_bytes());
            let op = casesync_engine::model::operation::Operation::CreateCase {
                case: casesync_engine::model::ids::CaseId(id),
                fields: smallvec![casesync_engine::model::operation::FieldWrite {
                    name: "name".into(),
                    value: text(&format!("client {i}")),
                    supersedes: smallvec![],
                }],
            };
            let body = bytes::Bytes::from(casesync_engine::codec::wire::encode_operation(&op));
            (casesync_engine::model::event::BodyEncoding::Plain, body)
        })
        .collect()
}

/// The views are current and equal on both nodes, hold `cases` cases, and writing works (the
/// laptop creates case `new`).
async fn views_complete_and_writable(office: &Node, laptop: &Node, cases: u64, new: u8) {
    converge(&[office, laptop]).await;
    let store = &laptop.shared().store;
    assert_eq!(store.projections_behind(&laptop.shared().space).unwrap(), 0);
    assert_eq!(state_hash(laptop), state_hash(office));
    assert_eq!(store.list_cases(&laptop.shared().space, &Default::default()).unwrap().len() as u64, cases);
    // Writing works again once the views are current.
    create(laptop, case(new), "Anna").await;
    converge(&[office, laptop]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_device_far_behind_catches_up_in_bulk_with_the_same_views() {
    let c = cluster(&["office", "laptop"]).await;
    // The office already holds more than the bulk threshold (written offline, 1000 per append).
    let count = casesync_node::bulk_catch_up::BULK_CATCH_UP_EVENTS_MIN + 500;
    {
        let dir = c.dirs[0].clone();
        tokio::task::spawn_blocking(move || {
            let office = casesync_node::data_dir::open(&dir, false).unwrap();
            let mut n = 0u64;
            while n < count {
                let bodies = create_bodies(n, count.min(n + 1000));
                n += bodies.len() as u64;
                office.store.append(&office.space, &office.identity.key, 1_700_000_000_000, bodies).unwrap();
            }
        })
        .await
        .unwrap();
    }
    let office = start(&c.dirs[0], vec![]).await;
    let laptop = start(&c.dirs[1], vec![office.sync_url()]).await;
    views_complete_and_writable(&office, &laptop, count, 1).await;
    assert_eq!(laptop.shared().bulk_catch_ups(), 1);
    for n in [office, laptop] {
        n.shutdown().await;
    }
}

/// Appends `count` case creations at once on a running node and announces them.
async fn store_a_backlog(node: &Node, from: u64, count: u64) {
    let shared = node.shared().clone();
    tokio::task::spawn_blocking(move || {
        let bodies = create_bodies(from, from + count);
        let (_, commit) = shared.store.append(&shared.space, &shared.identity.key, 1_700_000_000_000, bodies).unwrap();
        shared.notify(commit.next_position);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_on_a_live_connection_is_caught_up_in_bulk_with_the_same_views() {
    let c = cluster(&["office", "laptop"]).await;
    let office = start(&c.dirs[0], vec![]).await;
    let laptop = start(&c.dirs[1], vec![office.sync_url()]).await;
    // The laptop is live and current: an edit at the office arrives by push.
    create(&office, case(2), "Berta").await;
    converge(&[&office, &laptop]).await;
    // Then the office stores a backlog at once (as a relay does when another device uploads):
    // more full batches in a row than the flood threshold, ending on a full batch (only the
    // caught-up marker says it ended).
    let batch = casesync_engine::model::limits::BATCH_EVENTS_MAX as u64;
    let count = batch * u64::from(casesync_node::bulk_catch_up::FLOOD_FULL_BATCHES + 2);
    store_a_backlog(&office, 100, count).await;
    views_complete_and_writable(&office, &laptop, count + 1, 1).await;
    assert_eq!(laptop.shared().bulk_catch_ups(), 1, "the flood the laptop pulled was caught up in bulk");
    // The same the other way: the laptop's backlog reaches the office through the laptop's push.
    store_a_backlog(&laptop, 100 + count, count + 10).await;
    views_complete_and_writable(&laptop, &office, 2 * count + 10 + 2, 3).await;
    assert_eq!(office.shared().bulk_catch_ups(), 1, "the flood pushed to the office was caught up in bulk");
    for n in [office, laptop] {
        n.shutdown().await;
    }
}

/// A node started with the least memory budget syncs as any other (slower, never wrong); a budget
/// below it is refused at start with a clear error, the data dir untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_least_memory_budget_converges_and_a_smaller_one_is_refused() {
    let c = cluster(&["office", "laptop"]).await;
    let office = start(&c.dirs[0], vec![]).await;
    for n in 1..=40u8 {
        create(&office, case(n), &format!("client {n}")).await;
        set(&office, case(n), "notes", &"x".repeat(200)).await;
    }
    let mut too_small = NodeConfig::new(&c.dirs[1]);
    too_small.memory_mib = Some(casesync_engine::storage::memory::MemoryBudget::MIB_MIN - 1);
    let refused = Node::start(too_small).await.err().expect("a budget below the least is refused");
    assert!(format!("{refused:#}").contains("memory budget"), "{refused:#}");
    let mut least = NodeConfig::new(&c.dirs[1]);
    least.peers = vec![office.sync_url()];
    least.memory_mib = Some(casesync_engine::storage::memory::MemoryBudget::MIB_MIN);
    let laptop = Node::start(least).await.unwrap();
    converge(&[&office, &laptop]).await;
    assert_eq!(state_hash(&laptop), state_hash(&office));
    assert_eq!(events(&laptop), 80);
    for n in [office, laptop] {
        n.shutdown().await;
    }
}
