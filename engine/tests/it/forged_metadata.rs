//! A member's writes name what they supersede and what they had seen: a hostile member can name
//! versions that do not exist yet. Those claims count only for versions that came before the
//! write (a writer cannot have seen later ones): the honest edits they would have hidden are
//! shown, as conflicts or as changes concurrent with a delete, on every device.

use bytes::Bytes;
use casesync_engine::codec::wire::encode_operation;
use casesync_engine::commands::Command;
use casesync_engine::model::event::BodyEncoding;
use casesync_engine::model::ids::CaseId;
use casesync_engine::model::operation::{smallvec, Dot, FieldWrite, Operation, Status, StatusChange, StatusWrite};
use casesync_engine::model::vector_clock::VersionVector;

use crate::history::*;
use crate::support::*;

const CASE: CaseId = CaseId([3; 16]);

/// Writes `operation` as `device`'s next event at `now_ms`, whatever it names.
fn forge(device: &Device, now_ms: u64, operation: &Operation) {
    let body = Bytes::from(encode_operation(operation));
    device.store.append(&SPACE, &device.key, now_ms, vec![(BodyEncoding::Plain, body)]).unwrap();
}

/// The office, a home PC and a hostile member, each holding the case.
fn three_devices() -> (Device, Device, Device) {
    let (office, home, hostile) = (Device::new(1), Device::new(2), Device::new(9));
    office.run(1_000, Command::CreateCase { id: CASE, fields: vec![("name".into(), text("Ann"))] });
    sync(&office, &home);
    sync(&office, &hostile);
    (office, home, hostile)
}

fn next_dot(device: &Device) -> Dot {
    let author = device.key.author();
    Dot { author, seq: device.store.vector(&SPACE).get(&author) + 1 }
}

fn all_synced(devices: [&Device; 3]) {
    for _ in 0..2 {
        sync(devices[0], devices[1]);
        sync(devices[1], devices[2]);
        sync(devices[0], devices[2]);
    }
}

#[test]
fn a_write_naming_a_future_edit_of_another_device_does_not_hide_it() {
    let (office, home, hostile) = three_devices();
    // The hostile member names the office's next seq as superseded, before it exists.
    let future = next_dot(&office);
    let supersedes = smallvec![future];
    let fields = smallvec![FieldWrite { name: "phone".into(), value: text("forged"), supersedes }];
    forge(&hostile, 2_000, &Operation::SetFields { case: CASE, fields });
    // The office writes that seq later, without having seen the forged write.
    office.run(3_000, Command::SetFields { case: CASE, fields: vec![("phone".into(), text("0176 555"))] });
    assert_eq!(next_dot(&office).seq, future.seq + 1, "the office wrote the named seq");
    all_synced([&office, &home, &hostile]);
    let hash = office.store.state_hash(&SPACE).unwrap();
    for device in [&office, &home, &hostile] {
        let view = device.view(CASE);
        let phone = view.fields.iter().find(|f| f.name == "phone").unwrap();
        let values: Vec<_> = phone.conflict.iter().map(|v| v.value.clone()).collect();
        assert!(values.contains(&text("0176 555")), "the office's edit is hidden: {view:?}");
        assert!(values.contains(&text("forged")));
        assert_eq!(device.store.state_hash(&SPACE).unwrap(), hash);
    }
    // A later honest write that saw both resolves the conflict, as any conflict.
    let view = home.run(4_000, Command::SetFields { case: CASE, fields: vec![("phone".into(), text("0176 555"))] });
    assert!(!view.has_conflicts(), "{view:?}");
}

#[test]
fn a_delete_claiming_to_have_seen_every_future_edit_does_not_bury_them() {
    let (office, home, hostile) = three_devices();
    let status = hostile.view(CASE);
    assert_eq!(status.status, Status::Active);
    let created = Dot { author: office.key.author(), seq: 1 };
    let seen: VersionVector = [(office.key.author(), u64::MAX), (home.key.author(), u64::MAX)].into_iter().collect();
    let write = StatusWrite { supersedes: smallvec![created], seen };
    forge(&hostile, 2_000, &Operation::ChangeStatus { case: CASE, change: StatusChange::Delete, write });
    // The home PC edits the case afterwards, not having seen the delete yet.
    home.run(3_000, Command::SetFields { case: CASE, fields: vec![("phone".into(), text("0176 555"))] });
    all_synced([&office, &home, &hostile]);
    for device in [&office, &home, &hostile] {
        let view = device.view(CASE);
        assert_eq!(view.status, Status::Deleted);
        assert!(view.deleted_with_concurrent_changes, "the later edit is buried: {view:?}");
        assert_eq!(view.field("phone"), Some(&text("0176 555")));
    }
}
