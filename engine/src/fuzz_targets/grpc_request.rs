//! The `grpc_request` target: every request message of the `Sync` and `Cases` services
//! (`sync.proto`, `cases.proto`). The first byte picks the call ([`REQUEST_KINDS`]); the rest is
//! decoded with prost and converted as the node converts it (`node/src/sync_server.rs`,
//! `case_service.rs`, `invite.rs`, `introduce.rs`): ids, version vectors, values, roles and names through the
//! engine's public conversions, events through [`SignedEvent::from_peer`]. What converts is then
//! asked of the scratch store, in a space named after the input's hash that holds one case with
//! one entry: commands executed, queries answered, pushed batches ingested.

use bytes::Bytes;
use casesync_proto::v1 as pb;
use prost::Message;

use super::input::Input;
use super::{encoded, Refused, ScratchStore};
use crate::codec::membership::decode_membership;
use crate::codec::wire::{value_from_pb, vector_from_pb, vector_to_pb};
use crate::commands::Command;
use crate::log::ingest::PreparedBatch;
use crate::model::event::{BodyEncoding, SignedEvent};
use crate::model::ids::{AuthorId, CaseId, EntryId, SpaceId};
use crate::model::membership::{MembershipOp, NewGrant, Role};
use crate::model::operation::{FieldValue, Status, StatusChange};
use crate::model::signing::VerifyingKey;
use crate::model::vector_clock::VersionVector;
use crate::projection::queries::CaseFilter;
use crate::store::Store;
use crate::testkit::device;

/// The calls, by the first byte of an input (modulo their count).
pub const REQUEST_KINDS: [&str; 28] = [
    "Sync.Hello",
    "Sync.Heads",
    "Sync.Pull",
    "Sync.Push",
    "Sync.Join",
    "Cases.CreateCase",
    "Cases.SetFields",
    "Cases.DeleteCase",
    "Cases.ArchiveCase",
    "Cases.UnarchiveCase",
    "Cases.RestoreCase",
    "Cases.GetCase",
    "Cases.History",
    "Cases.AddEntry",
    "Cases.UpdateEntry",
    "Cases.RemoveEntry",
    "Cases.RestoreEntry",
    "Cases.ListCases",
    "Cases.Conflicts",
    "Cases.Watch",
    "Cases.Status",
    "Cases.SyncNow",
    "Cases.GrantDevice",
    "Cases.RevokeDevice",
    "Cases.Invite",
    "Cases.ListDevices",
    "Cases.Fence",
    "Sync.Introduce",
];

/// The case (and entry) every input's space holds before its request.
const CASE: CaseId = CaseId([0x11; 16]);
const ENTRY: EntryId = EntryId([0x22; 16]);
/// The clock of the scratch store's commands.
const NOW_MS: u64 = 1_700_000_000_000;
/// Most events a `Pull` reads back.
const PULL_EVENTS_MAX: usize = 64;

/// See the module documentation.
pub fn grpc_request(scratch: &ScratchStore, data: &[u8]) -> Result<(), Refused> {
    let mut input = Input::new(data);
    let kind = input.index(REQUEST_KINDS.len()).ok_or(Refused::ShortInput)?;
    let body = input.take(data.len());
    let store = scratch.store();
    let hash = blake3::hash(data);
    let mut id = [0u8; 16];
    id.copy_from_slice(&hash.as_bytes()[..16]);
    let space = SpaceId(id);
    match REQUEST_KINDS[kind] {
        "Sync.Hello" => pb::HelloRequest::decode(body).map(drop)?,
        "Sync.Heads" => {
            let message = pb::HeadsRequest::decode(body)?;
            let asked = SpaceId::from_slice(&message.space)?;
            let heads = vector_to_pb(&store.vector(&asked));
            assert_eq!(vector_from_pb(&heads).ok(), Some(store.vector(&asked)), "a version vector's round trip");
        }
        "Sync.Pull" => {
            let message = pb::PullRequest::decode(body)?;
            let asked = SpaceId::from_slice(&message.space)?;
            let have = vector_from_pb(&message.have.unwrap_or_default())?;
            for event in store.events_after(&asked, &have).take(PULL_EVENTS_MAX) {
                let (author, seq, _) = event?;
                assert!(seq > have.get(&author), "a pull sent an event the caller holds");
            }
        }
        "Sync.Push" => {
            let message = pb::EventBatch::decode(body)?;
            let report = store.ingest_prepared(PreparedBatch::new(space, message.events))?;
            // Nothing in an input is signed for a space named after the input's own hash.
            assert_eq!(report.accepted, 0, "a push whose events nobody signed was stored");
        }
        "Sync.Join" => {
            let message = pb::JoinRequest::decode(body)?;
            let asked = SpaceId::from_slice(&message.space)?;
            let admit = message.admit.ok_or(Refused::Request("the request carries no admission"))?;
            let event = SignedEvent::from_peer(admit)?;
            if event.header.encoding != BodyEncoding::Membership {
                return Err(Refused::Request("the request carries no admission"));
            }
            let MembershipOp::Admit { invite, .. } = decode_membership(&event.body)? else {
                return Err(Refused::Request("the request carries no admission"));
            };
            let _state = store.membership(&asked).invite_state(&invite, NOW_MS);
            event.verify_signature()?;
        }
        "Sync.Introduce" => {
            let message = pb::IntroduceRequest::decode(body)?;
            let _asked = SpaceId::from_slice(&message.space)?;
            let author = AuthorId::from_slice(&message.author)?;
            let _role = store.membership(&space).role_at(&author, 1, NOW_MS << 16);
            let report = store.ingest_prepared(PreparedBatch::received(space, message.events, NOW_MS))?;
            // Nothing in an input is signed for a space named after the input's own hash.
            assert_eq!(report.accepted, 0, "an introduction whose events nobody signed was stored");
        }
        "Cases.CreateCase" => {
            let message = pb::CreateCaseRequest::decode(body)?;
            let id = CaseId(hash.as_bytes()[16..].try_into().unwrap_or_default());
            execute(store, &space, Command::CreateCase { id, fields: fields(message.fields)? })?;
        }
        "Cases.SetFields" => {
            let message = pb::SetFieldsRequest::decode(body)?;
            let values = fields(message.fields)?;
            let case = resolve(store, &space, &message.case_id)?;
            execute(store, &space, Command::SetFields { case, fields: values })?;
        }
        call @ ("Cases.DeleteCase" | "Cases.ArchiveCase" | "Cases.UnarchiveCase" | "Cases.RestoreCase") => {
            let change = match call {
                "Cases.DeleteCase" => StatusChange::Delete,
                "Cases.ArchiveCase" => StatusChange::Archive,
                "Cases.UnarchiveCase" => StatusChange::Unarchive,
                _ => StatusChange::Restore,
            };
            let message = pb::CaseRef::decode(body)?;
            let case = resolve(store, &space, &message.case_id)?;
            execute(store, &space, Command::ChangeStatus { case, change })?;
        }
        "Cases.GetCase" => {
            let message = pb::CaseRef::decode(body)?;
            let case = resolve(store, &space, &message.case_id)?;
            store.case_view(&space, &case)?.ok_or(Refused::Request("no such case"))?;
        }
        "Cases.History" => {
            let message = pb::CaseRef::decode(body)?;
            let case = resolve(store, &space, &message.case_id)?;
            store.history(&space, &case)?;
        }
        call @ ("Cases.AddEntry" | "Cases.UpdateEntry" | "Cases.RemoveEntry" | "Cases.RestoreEntry") => {
            let message = pb::EntryRequest::decode(body)?;
            let values = fields(message.fields)?;
            let case = resolve(store, &space, &message.case_id)?;
            let command = match call {
                "Cases.AddEntry" => {
                    let entry = EntryId(hash.as_bytes()[16..].try_into().unwrap_or_default());
                    Command::AddEntry { case, entry, fields: values }
                }
                "Cases.UpdateEntry" => {
                    Command::UpdateEntry { case, entry: EntryId::from_hex(&message.entry_id)?, fields: values }
                }
                "Cases.RemoveEntry" => Command::RemoveEntry { case, entry: EntryId::from_hex(&message.entry_id)? },
                _ => Command::RestoreEntry { case, entry: EntryId::from_hex(&message.entry_id)? },
            };
            execute(store, &space, command)?;
        }
        "Cases.ListCases" => {
            let message = pb::ListCasesRequest::decode(body)?;
            let status = match message.status.as_str() {
                "" => None,
                "active" => Some(Status::Active),
                "archived" => Some(Status::Archived),
                "deleted" => Some(Status::Deleted),
                _ => return Err(Refused::Request("unknown status")),
            };
            let field_equals = (!message.field.is_empty()).then(|| (message.field.clone(), message.equals.clone()));
            let filter = CaseFilter { status, conflicts_only: message.conflicts_only, field_equals };
            prepare(store, &space)?;
            store.list_cases(&space, &filter)?;
        }
        "Cases.Conflicts" => {
            let message = pb::ConflictsRequest::decode(body)?;
            let case = if message.case_id.is_empty() { None } else { Some(resolve(store, &space, &message.case_id)?) };
            store.conflicts(&space, case.as_ref())?;
        }
        "Cases.Watch" => pb::WatchRequest::decode(body).map(drop)?,
        "Cases.Status" => pb::StatusRequest::decode(body).map(drop)?,
        "Cases.SyncNow" => pb::SyncNowRequest::decode(body).map(drop)?,
        "Cases.GrantDevice" => {
            let message = pb::GrantDeviceRequest::decode(body)?;
            let author = device_key(&message.device_key)?;
            let role = Role::parse(&message.role).ok_or(Refused::Request("unknown role"))?;
            let name = if message.name.is_empty() { author.device_id() } else { message.name };
            crate::identity::validate_name(&name)?;
            let until_ms = (message.until_ms != 0).then_some(message.until_ms);
            store.add_member(&space, &author, &name)?;
            let grant = NewGrant { device: author, role, name, until_ms };
            store.grant(&space, &device(1), NOW_MS, grant).map_err(crate::Error::from)?;
        }
        "Cases.RevokeDevice" => {
            let message = pb::RevokeDeviceRequest::decode(body)?;
            let author = device_key(&message.device_key)?;
            store.revoke(&space, &device(1), NOW_MS, author).map_err(crate::Error::from)?;
        }
        "Cases.Invite" => {
            let message = pb::InviteRequest::decode(body)?;
            let role = Role::parse(&message.role).ok_or(Refused::Request("unknown role"))?;
            let expires_in_ms = match message.expires_in_ms {
                0 => 24 * 3_600_000,
                ms if ms > 30 * 24 * 3_600_000 => return Err(Refused::Request("an invitation for over 30 days")),
                ms => ms,
            };
            let until_ms = (message.until_ms != 0).then_some(message.until_ms);
            let op = MembershipOp::Invite {
                key: device(4).author(),
                role,
                expires_ms: NOW_MS.saturating_add(expires_in_ms),
                until_ms,
            };
            store.change_membership(&space, &device(1), NOW_MS, &op).map_err(crate::Error::from)?;
        }
        "Cases.ListDevices" => pb::ListDevicesRequest::decode(body).map(drop)?,
        _ => {
            let message = pb::FenceRequest::decode(body)?;
            if message.clear {
                store.clear_fence(&space, &device(1).author())?;
            }
            store.fence(&space, &device(1).author());
        }
    }
    Ok(())
}

/// The case and entry every request's space holds before it is asked.
fn prepare(store: &Store, space: &SpaceId) -> Result<(), Refused> {
    if store.head(space, &device(1).author()).is_none() {
        let fields = vec![("name".to_string(), FieldValue::Text("Ann".into()))];
        execute(store, space, Command::CreateCase { id: CASE, fields: fields.clone() })?;
        execute(store, space, Command::AddEntry { case: CASE, entry: ENTRY, fields })?;
    }
    Ok(())
}

/// The case a request names (hex, or a prefix of it), after [`prepare`].
fn resolve(store: &Store, space: &SpaceId, text: &str) -> Result<CaseId, Refused> {
    prepare(store, space)?;
    Ok(store.resolve_case(space, text)?)
}

/// Runs a command as device 1; what the view it returns shows must be the store's.
fn execute(store: &Store, space: &SpaceId, command: Command) -> Result<(), Refused> {
    let (event, view, _) = store.execute(space, &device(1), NOW_MS, command)?;
    assert_eq!(store.head(space, &event.header.author).map(|h| h.seq), Some(event.header.seq), "a command's event");
    let case = store.case_view(space, &CaseId::from_hex(&view.case_id)?)?;
    assert_eq!(case.as_ref(), Some(&view), "a command's view differs from the stored one");
    Ok(())
}

/// A request's named values as the node converts them.
fn fields(values: Vec<pb::NamedValue>) -> Result<Vec<(String, FieldValue)>, Refused> {
    values.into_iter().map(|nv| Ok((nv.name, value_from_pb(nv.value.as_ref())?))).collect()
}

/// A device key from its hex form, checked to be an ed25519 key.
fn device_key(text: &str) -> Result<AuthorId, Refused> {
    let author = AuthorId::from_hex(text)?;
    VerifyingKey::new(&author)?;
    Ok(author)
}

/// A valid request of every kind, for the seed corpus: (file name, the kind byte and message).
pub(super) fn request_seeds() -> Vec<(String, Vec<u8>)> {
    let space = Bytes::copy_from_slice(&[0x5a; 16]);
    let case_id = CASE.to_hex();
    let entry_id = ENTRY.to_hex();
    let value = |text: &str| Some(pb::Value { kind: Some(pb::value::Kind::Text(text.into())) });
    let named = vec![
        pb::NamedValue { name: "name".into(), value: value("Ann") },
        pb::NamedValue {
            name: "born".into(),
            value: Some(pb::Value { kind: Some(pb::value::Kind::Date("1990-01-31".into())) }),
        },
    ];
    let mut have = VersionVector::new();
    have.set(device(1).author(), 2);
    let admit = super::seeds::admit_event(SpaceId([0x5a; 16]));
    let event = super::seeds::plain_chain(&device(1), SpaceId([0x5a; 16]), 2, 0);
    let key = device(2).author().to_hex();
    let messages: Vec<Bytes> = vec![
        encoded(&pb::HelloRequest {}),
        encoded(&pb::HeadsRequest { space: space.clone(), ..Default::default() }),
        encoded(&pb::PullRequest {
            space: space.clone(),
            have: Some(vector_to_pb(&have)),
            follow: true,
            listed: false,
        }),
        encoded(&pb::EventBatch { events: event.iter().map(SignedEvent::to_wire).collect() }),
        encoded(&pb::JoinRequest { space: space.clone(), admit: Some(admit.to_wire()) }),
        encoded(&pb::CreateCaseRequest { fields: named.clone() }),
        encoded(&pb::SetFieldsRequest { case_id: case_id.clone(), fields: named.clone() }),
        encoded(&pb::CaseRef { case_id: case_id.clone() }),
        encoded(&pb::CaseRef { case_id: case_id.clone() }),
        encoded(&pb::CaseRef { case_id: case_id.clone() }),
        encoded(&pb::CaseRef { case_id: case_id.clone() }),
        encoded(&pb::CaseRef { case_id: case_id[..6].to_string() }),
        encoded(&pb::CaseRef { case_id: case_id.clone() }),
        encoded(&pb::EntryRequest { case_id: case_id.clone(), entry_id: String::new(), fields: named.clone() }),
        encoded(&pb::EntryRequest { case_id: case_id.clone(), entry_id: entry_id.clone(), fields: named }),
        encoded(&pb::EntryRequest { case_id: case_id.clone(), entry_id: entry_id.clone(), fields: Vec::new() }),
        encoded(&pb::EntryRequest { case_id: case_id.clone(), entry_id, fields: Vec::new() }),
        encoded(&pb::ListCasesRequest {
            status: "active".into(),
            conflicts_only: false,
            field: "name".into(),
            equals: "Ann".into(),
        }),
        encoded(&pb::ConflictsRequest { case_id }),
        encoded(&pb::WatchRequest {}),
        encoded(&pb::StatusRequest { skip_state_hash: true }),
        encoded(&pb::SyncNowRequest { peer: "https://relay.example:7700".into() }),
        encoded(&pb::GrantDeviceRequest {
            device_key: key.clone(),
            name: "laptop".into(),
            role: "writer".into(),
            until_ms: 0,
        }),
        encoded(&pb::RevokeDeviceRequest { device_key: key }),
        encoded(&pb::InviteRequest {
            role: "reader".into(),
            until_ms: 0,
            expires_in_ms: 3_600_000,
            via: "https://relay.example:7700".into(),
        }),
        encoded(&pb::ListDevicesRequest {}),
        encoded(&pb::FenceRequest { clear: true }),
        encoded(&pb::IntroduceRequest {
            space: space.clone(),
            author: Bytes::copy_from_slice(device(1).author().as_bytes()),
            events: event.iter().map(SignedEvent::to_wire).collect(),
        }),
    ];
    messages
        .into_iter()
        .enumerate()
        .map(|(kind, message)| {
            let name = REQUEST_KINDS[kind].replace('.', "-").to_lowercase();
            (format!("{kind:02}-{name}"), [&[kind as u8][..], &message].concat())
        })
        .collect()
}
