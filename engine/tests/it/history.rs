//! Random concurrent histories: devices, each with its own store, run random commands offline
//! (case adds, field sets, deletes, archives, restores, entries) and sync with each other in
//! random pairs, so concurrent writes to one field, deletes concurrent with changes and the like
//! come up all the time. Steps are small numbers, so proptest shrinks a failing history well.

use casesync_engine::commands::Command;
use casesync_engine::model::ids::{CaseId, EntryId, SpaceId};
use casesync_engine::model::operation::{FieldValue, Status, StatusChange};
use casesync_engine::model::signing::DeviceKey;
use casesync_engine::model::views::CaseView;
use casesync_engine::store::Store;
use proptest::prelude::*;

use crate::support::*;

/// A device: its own store in a temp dir, and its key.
pub struct Device {
    _dir: tempfile::TempDir,
    pub store: Store,
    pub key: DeviceKey,
}

impl Device {
    pub fn new(n: u8) -> Device {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        Device { _dir: dir, store, key: device(n) }
    }

    pub fn run(&self, now: u64, command: Command) -> CaseView {
        self.store.execute(&SPACE, &self.key, now, command).unwrap().1
    }

    pub fn view(&self, case: CaseId) -> CaseView {
        self.store.case_view(&SPACE, &case).unwrap().unwrap()
    }

    /// One-way sync: `self` receives what it lacks from `other`.
    pub fn pull_from(&self, other: &Device) {
        let missing: Vec<_> =
            other.store.events_after(&SPACE, &self.store.vector(&SPACE)).map(|r| r.unwrap().2).collect();
        let report = self.store.ingest(&SPACE, missing).unwrap();
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    }
}

/// Two-way sync.
pub fn sync(a: &Device, b: &Device) {
    a.pull_from(b);
    b.pull_from(a);
}

pub fn text(s: &str) -> FieldValue {
    FieldValue::Text(s.into())
}

/// One step of a history: a device runs a command (which one is decided against its current
/// state, see [`command_for`]), or two devices sync.
#[derive(Clone, Debug)]
pub enum Step {
    Op { device: usize, kind: u8, case: u8, field: u8, value: u8 },
    Sync { a: usize, b: usize },
}

/// A step among `devices` devices touching cases `0..cases`.
pub fn step(devices: usize, cases: u8) -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..devices, 0u8..10, 0u8..cases, 0u8..3, any::<u8>())
            .prop_map(|(device, kind, case, field, value)| Step::Op { device, kind, case, field, value }),
        1 => (0..devices, 0..devices).prop_map(|(a, b)| Step::Sync { a, b }),
    ]
}

/// A number of devices in `devices` and a history of `len` steps among them, touching cases
/// `0..cases` (three fields each).
pub fn history(
    devices: std::ops::RangeInclusive<usize>,
    len: std::ops::Range<usize>,
    cases: u8,
) -> impl Strategy<Value = (usize, Vec<Step>)> {
    devices.prop_flat_map(move |n| (Just(n), proptest::collection::vec(step(n, cases), len.clone())))
}

/// The command a device runs for an `Op` step, given what its store holds: a case it does not
/// know yet is created; otherwise `kind` picks a field set (most often: the same few fields on
/// the same few cases, so concurrent writes to one field are common), an archive or unarchive,
/// a delete or restore, an entry added, updated or removed. `None` when the pick does not apply.
pub fn command_for(store: &Store, kind: u8, case: u8, field: u8, value: u8) -> Option<Command> {
    command_in(store, &SPACE, kind, case, field, value)
}

/// [`command_for`] in `space`.
pub fn command_in(store: &Store, space: &SpaceId, kind: u8, case: u8, field: u8, value: u8) -> Option<Command> {
    let case_id = CaseId([case + 1; 16]);
    let exists = store.case_view(space, &case_id).unwrap();
    let entry = EntryId([field + 1; 16]);
    let name = format!("f{field}");
    let val = text(&format!("v{value}"));
    let Some(view) = exists else {
        return Some(Command::CreateCase { id: case_id, fields: vec![(name, val)] });
    };
    let has_entry = store.case_state(space, &case_id).unwrap().unwrap().entries.contains_key(&entry);
    Some(match kind {
        0..=3 => Command::SetFields { case: case_id, fields: vec![(name, val)] },
        4 if view.status == Status::Active => Command::ChangeStatus { case: case_id, change: StatusChange::Archive },
        4 if view.status == Status::Archived => {
            Command::ChangeStatus { case: case_id, change: StatusChange::Unarchive }
        }
        5 if view.status != Status::Deleted => Command::ChangeStatus { case: case_id, change: StatusChange::Delete },
        5 => Command::ChangeStatus { case: case_id, change: StatusChange::Restore },
        6 | 7 if !has_entry => Command::AddEntry { case: case_id, entry, fields: vec![("note".into(), val)] },
        6 | 7 => Command::UpdateEntry { case: case_id, entry, fields: vec![("note".into(), val)] },
        8 if has_entry => Command::RemoveEntry { case: case_id, entry },
        _ => return None,
    })
}

/// `n` devices (keys 1..=n) that have run `steps`, then healed: everyone synced with everyone,
/// so each holds every event.
pub fn play(n: usize, steps: &[Step]) -> Vec<Device> {
    let devices: Vec<Device> = (0..n).map(|i| Device::new(i as u8 + 1)).collect();
    for (t, s) in steps.iter().enumerate() {
        match *s {
            Step::Op { device, kind, case, field, value } => {
                let d = &devices[device];
                if let Some(command) = command_for(&d.store, kind, case, field, value) {
                    d.store.execute(&SPACE, &d.key, 100 + t as u64, command).unwrap();
                }
            }
            Step::Sync { a, b } if a != b => sync(&devices[a], &devices[b]),
            Step::Sync { .. } => {}
        }
    }
    for a in 0..n {
        for b in 0..n {
            if a != b {
                devices[a].pull_from(&devices[b]);
            }
        }
    }
    devices
}
