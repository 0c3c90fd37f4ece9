//! Invitations: a code from an admin enrols a new computer through the relay while the admin is
//! off; a code works once, expires, and a wrong one is a clear error.

use casesync_node::invite;
use casesync_node::shared::now_ms;
use casesync_proto::v1 as pb;

use crate::support::*;

fn request(role: &str, via: &str, expires_in_ms: u64) -> pb::InviteRequest {
    pb::InviteRequest { role: role.into(), until_ms: 0, expires_in_ms, via: via.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_computer_joins_with_a_code_while_the_admin_is_off_and_the_code_works_once() {
    let c = cluster(&["relay", "office"]).await;
    let relay = start(&c.dirs[0], vec![]).await;
    let office = start(&c.dirs[1], vec![relay.sync_url()]).await;
    create(&office, case(1), "Anna").await;
    let reply = invite::create(office.shared().clone(), request("writer", &relay.sync_url(), 0)).await.unwrap();
    assert_eq!(reply.delivered_to, vec![relay.sync_url()]);
    converge(&[&relay, &office]).await;
    let hash = state_hash(&office);
    office.shutdown().await;

    // The admin is off: the relay holds the invitation and judges the admission.
    let laptop = c._root.path().join("laptop");
    let joined = casesync_node::join::join(&laptop, &reply.code, "laptop", None).await.unwrap();
    assert_eq!(joined.role, "writer");
    assert_eq!(joined.state_hash, hash, "the new computer ends with the same state");
    // It writes, and the relay takes its writes.
    let laptop = start(&laptop, vec![relay.sync_url()]).await;
    create(&laptop, case(2), "Jan").await;
    converge(&[&laptop, &relay]).await;

    // The same code again, on another computer: refused, clearly.
    let other = c._root.path().join("other");
    let reused = casesync_node::join::join(&other, &reply.code, "other", None).await.unwrap_err();
    assert!(format!("{reused:#}").contains("used already"), "{reused:#}");
    // A damaged code.
    let wrong =
        casesync_node::join::join(&other, &reply.code.replace("csi1.", "csi1.A"), "other", None).await.unwrap_err();
    assert!(format!("{wrong:#}").contains("invitation code"), "{wrong:#}");
    // A code for an invitation the relay never saw (made by a device that is not an admin is
    // refused at once; here: the same space, an invented secret).
    let mut invented = invite::InviteCode::decode(&reply.code).unwrap();
    invented.secret = [7; 16];
    let unknown = casesync_node::join::join(&other, &invented.encode(), "other", None).await.unwrap_err();
    assert!(format!("{unknown:#}").contains("no such invitation"), "{unknown:#}");
    for n in [laptop, relay] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_code_and_a_non_admin_invitation_are_refused() {
    let c = cluster(&["office", "home"]).await;
    let office = start(&c.dirs[0], vec![]).await;
    let home = start(&c.dirs[1], vec![office.sync_url()]).await;
    converge(&[&office, &home]).await;
    // A writer cannot invite.
    let refused = invite::create(home.shared().clone(), request("writer", &office.sync_url(), 0)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    // A code usable for 1 ms.
    let reply = invite::create(office.shared().clone(), request("reader", &office.sync_url(), 1)).await.unwrap();
    let until = std::time::Instant::now() + DEADLINE;
    while now_ms() <= reply.expires_ms {
        assert!(std::time::Instant::now() < until);
        tokio::task::yield_now().await;
    }
    let late = casesync_node::join::join(&c._root.path().join("late"), &reply.code, "late", None).await.unwrap_err();
    assert!(format!("{late:#}").contains("expired"), "{late:#}");
    for n in [home, office] {
        n.shutdown().await;
    }
}
