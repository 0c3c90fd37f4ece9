//! A full disk under a running node: the write that fails is refused as a full disk, nothing
//! acknowledged is lost, and the node starts again by itself once the disk has room.

use std::sync::{Arc, Weak};
use std::time::Duration;

use casesync_engine::commands::Command;
use casesync_engine::error::StorageFault;
use casesync_engine::testkit::Disk;
use casesync_node::demo::edit;
use casesync_node::shared::Shared;
use casesync_node::NodeConfig;
use tokio::sync::{mpsc, oneshot};

use crate::support::*;

/// Longest a node takes to start again once there is room: its pauses double from 1 s.
const RESTART_DEADLINE: Duration = Duration::from_secs(60);

/// The node a supervisor started, without holding its store open.
async fn next_node(started: &mut mpsc::UnboundedReceiver<Weak<Shared>>, within: Duration) -> Arc<Shared> {
    let weak = tokio::time::timeout(within, started.recv()).await.expect("a node starts in time").unwrap();
    weak.upgrade().expect("the node runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_fills_refuses_the_write_and_starts_again_by_itself_once_there_is_room() {
    let c = cluster(&["office"]).await;
    let disk = Disk::under(&casesync_node::data_dir::db_path(&c.dirs[0]));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let supervisor = tokio::spawn(casesync_node::supervise::serve(
        NodeConfig::new(&c.dirs[0]),
        async move {
            let _ = stopped.await;
        },
        move |node| {
            let _ = started_tx.send(Arc::downgrade(node.shared()));
        },
    ));

    let first = next_node(&mut started, DEADLINE).await;
    let id = case(1);
    edit(&first, Command::CreateCase { id, fields: vec![("name".into(), text("Ada"))] }).await.unwrap();
    edit(&first, Command::SetFields { case: id, fields: vec![("phone".into(), text("0101"))] }).await.unwrap();

    disk.fill();
    let refused =
        edit(&first, Command::SetFields { case: id, fields: vec![("phone".into(), text("0202"))] }).await.unwrap_err();
    let fault = refused.downcast_ref::<casesync_engine::Error>().and_then(casesync_engine::Error::fault);
    assert_eq!(fault, Some(StorageFault::NoSpace), "a full disk says so: {refused:#}");
    drop(first);

    // The node stops and tries to start again, which fails while the disk is full.
    let failed_before = disk.failed();
    let deadline = tokio::time::Instant::now() + RESTART_DEADLINE;
    while disk.failed() <= failed_before {
        assert!(tokio::time::Instant::now() < deadline, "the node tries to start again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(started.try_recv().is_err(), "no node starts on a full disk");

    disk.make_room();
    let second = next_node(&mut started, RESTART_DEADLINE).await;
    let view = second.store.case_view(&second.space, &id).unwrap().expect("the case is there");
    let phone = view.fields.iter().find(|f| f.name == "phone").expect("the acknowledged field is there");
    assert_eq!(phone.value, text("0101"), "the acknowledged write is kept, the refused one absent");
    assert!(phone.conflict.is_empty());
    edit(&second, Command::SetFields { case: id, fields: vec![("phone".into(), text("0303"))] }).await.unwrap();
    drop(second);

    stop.send(()).unwrap();
    tokio::time::timeout(DEADLINE, supervisor).await.unwrap().unwrap().unwrap();
}
