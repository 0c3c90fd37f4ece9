//! Several spaces on one node: a laptop holds its own practice's space and a colleague's it
//! covers, a relay serves both, and each space converges on its own.

use casesync_engine::model::ids::AuthorId;
use casesync_engine::model::membership::{NewGrant, Role};
use casesync_node::data_dir;
use casesync_node::demo::edit;
use casesync_node::shared::now_ms;
use casesync_node::{Node, NodeConfig};

use crate::support::*;

/// `admin_dir`'s device grants `device` `role` in its first space (no daemon running there).
fn grant(admin_dir: &std::path::Path, device: AuthorId, role: Role, name: &str) {
    crate::support::use_test_pin();
    let admin = data_dir::open(admin_dir, false).unwrap();
    let grant = NewGrant { device, role, name: name.into(), until_ms: None };
    admin.store.grant(&admin.space, &admin.identity.key, now_ms(), grant).unwrap();
    let fresh = casesync_node::shared::fresh_secret();
    admin.store.maintain_keys(&admin.space, &admin.identity.key, now_ms(), fresh).unwrap();
}

fn device_of(dir: &std::path::Path) -> AuthorId {
    crate::support::identity(dir).author()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_holds_two_spaces_and_a_relay_serves_both() {
    crate::support::use_test_pin();
    let own = cluster(&["relay", "office"]).await;
    let other = cluster(&["colleague"]).await;
    let (relay_dir, office_dir, colleague_dir) = (&own.dirs[0], &own.dirs[1], &other.dirs[0]);
    let (space_a, space_b) = {
        let a = data_dir::open(office_dir, false).unwrap().space;
        let b = data_dir::open(colleague_dir, false).unwrap().space;
        (a, b)
    };
    // The laptop joins the office's space, and covers the colleague's.
    let laptop_dir = own._root.path().join("laptop");
    data_dir::init(&laptop_dir, "laptop", Some(space_a), false, None).unwrap();
    let laptop_key = device_of(&laptop_dir);
    grant(office_dir, laptop_key, Role::Writer, "laptop");
    grant(colleague_dir, laptop_key, Role::Writer, "laptop");
    // The relay serves the colleague's space too.
    data_dir::add_space(relay_dir, "colleague", space_b, vec![]).unwrap();
    grant(colleague_dir, device_of(relay_dir), Role::Relay, "relay");

    let mut relay_config = NodeConfig::new(relay_dir);
    relay_config.relay = true;
    let relay = Node::start(relay_config).await.unwrap();
    let office = start(office_dir, vec![relay.sync_url()]).await;
    let colleague = start(colleague_dir, vec![relay.sync_url()]).await;
    data_dir::add_space(&laptop_dir, "jan", space_b, vec![relay.sync_url()]).unwrap();
    let laptop = start(&laptop_dir, vec![relay.sync_url()]).await;
    assert_eq!(laptop.space_names(), vec!["main".to_string(), "jan".to_string()]);

    create(&office, case(1), "Anna (office)").await;
    create(&colleague, case(2), "Bernd (colleague)").await;
    let laptop_b = laptop.shared_of("jan").unwrap().clone();
    // The laptop writes in each space once its grant there has reached it through the relay.
    for shared in [laptop.shared(), &laptop_b] {
        let until = std::time::Instant::now() + DEADLINE;
        while shared.may_connect(&laptop_key).map_or(true, |_| !shared.store.membership(&shared.space).is_founded()) {
            assert!(std::time::Instant::now() < until, "the laptop's grant did not arrive");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    let command = casesync_engine::commands::Command::CreateCase {
        id: case(3),
        fields: vec![("name".into(), text("Carla, seen while covering"))],
    };
    edit(&laptop_b, command).await.unwrap();
    create(&laptop, case(4), "Dora (own practice)").await;

    let relay_b = relay.shared_of("colleague").unwrap().clone();
    let a_nodes = [office.shared(), relay.shared(), laptop.shared()];
    let b_nodes = [colleague.shared(), &relay_b, &laptop_b];
    casesync_node::demo::wait_converged(&a_nodes, DEADLINE).await.unwrap();
    casesync_node::demo::wait_converged(&b_nodes, DEADLINE).await.unwrap();
    assert_eq!(laptop.shared().space, space_a);
    assert_eq!(laptop_b.space, space_b);
    assert_eq!(state_hash(&laptop), state_hash(&office));
    assert_eq!(laptop_b.store.state_hash(&space_b).unwrap(), colleague.shared().store.state_hash(&space_b).unwrap());
    // Each space holds only its own cases.
    let b_cases = laptop_b.store.list_cases(&space_b, &Default::default()).unwrap();
    assert_eq!(b_cases.len(), 2);
    assert_eq!(laptop.shared().store.list_cases(&space_a, &Default::default()).unwrap().len(), 2);
    drop((laptop_b, relay_b));
    for n in [laptop, colleague, office, relay] {
        n.shutdown().await;
    }
}
