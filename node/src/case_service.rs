//! The local case service: applications (and the CLI) create, change and read cases through it.
//! The CLI also calls it in-process when no daemon runs, so both paths share this code.

use std::sync::Arc;

use casesync_engine::codec::wire::value_from_pb;
use casesync_engine::commands::Command;
use casesync_engine::model::hlc;
use casesync_engine::model::ids::{AuthorId, CaseId, EntryId};
use casesync_engine::model::membership::{NewGrant, Role};
use casesync_engine::model::operation::{FieldValue, Status, StatusChange};
use casesync_engine::projection::queries::CaseFilter;
use casesync_proto::v1 as pb;
use casesync_proto::v1::cases_server::Cases;
use rand::RngCore;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status as GrpcStatus};

use crate::grpc_status;
use crate::shared::{now_ms, Shared};
use crate::sync_client::sync_once;
use crate::views_pb;

/// How long a command waits for a bulk catch-up to end before the engine refuses it.
pub const COMMAND_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// The case service of one node.
#[derive(Clone)]
pub struct CaseService {
    shared: Arc<Shared>,
}

fn fields(values: Vec<pb::NamedValue>) -> Result<Vec<(String, FieldValue)>, GrpcStatus> {
    values
        .into_iter()
        .map(|nv| {
            let value = value_from_pb(nv.value.as_ref())
                .map_err(|e| GrpcStatus::invalid_argument(format!("field {:?}: {e}", nv.name)))?;
            Ok((nv.name, value))
        })
        .collect()
}

fn random_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut id);
    id
}

impl CaseService {
    /// A service over the node's shared state.
    pub fn new(shared: Arc<Shared>) -> CaseService {
        CaseService { shared }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared) -> Result<T, GrpcStatus> + Send + 'static,
    ) -> Result<T, GrpcStatus> {
        if self.shared.relay {
            return Err(GrpcStatus::failed_precondition("this node is a relay: it holds no case views"));
        }
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared)).await.map_err(grpc_status::join)?
    }

    fn resolve(shared: &Shared, text: &str) -> Result<CaseId, GrpcStatus> {
        shared.store.resolve_case(&shared.space, text).map_err(|e| grpc_status::engine(&e))
    }

    fn resolve_entry(text: &str) -> Result<EntryId, GrpcStatus> {
        EntryId::from_hex(text).map_err(|e| GrpcStatus::invalid_argument(format!("entry id: {e}")))
    }

    async fn run(
        &self,
        make: impl FnOnce(&Shared) -> Result<Command, GrpcStatus> + Send + 'static,
    ) -> Result<Response<pb::CaseView>, GrpcStatus> {
        // A bulk catch-up defers the views a command is planned against: wait for its end
        // (bounded) rather than refuse; past the bound the engine refuses with how far behind.
        self.shared.wait_out_bulk_catch_ups(COMMAND_WAIT_MAX).await;
        let (view, next) = self
            .blocking(move |shared| {
                let command = make(shared)?;
                let (_, view, summary) = shared
                    .store
                    .execute(&shared.space, &shared.identity.key, now_ms(), command)
                    .map_err(|e| grpc_status::engine(&e))?;
                Ok((view, summary.next_position))
            })
            .await?;
        self.shared.notify(next);
        Ok(Response::new(views_pb::case(&view)))
    }

    async fn status_change(
        &self,
        request: Request<pb::CaseRef>,
        change: StatusChange,
    ) -> Result<Response<pb::CaseView>, GrpcStatus> {
        let text = request.into_inner().case_id;
        self.run(move |shared| Ok(Command::ChangeStatus { case: Self::resolve(shared, &text)?, change })).await
    }
}

/// A device key from its hex form, checked to be an ed25519 key.
fn device_key(text: &str) -> Result<AuthorId, GrpcStatus> {
    let author = AuthorId::from_hex(text).map_err(|e| GrpcStatus::invalid_argument(format!("device key: {e}")))?;
    casesync_engine::model::signing::VerifyingKey::new(&author)
        .map_err(|_| GrpcStatus::invalid_argument("device key is not a valid ed25519 key"))?;
    Ok(author)
}

impl CaseService {
    /// Runs a membership change on the blocking pool, announces it to peers, and returns the
    /// device list after it.
    async fn change_membership(
        &self,
        change: impl FnOnce() -> Result<casesync_engine::model::event::SignedEvent, GrpcStatus> + Send + 'static,
    ) -> Result<Response<pb::DeviceList>, GrpcStatus> {
        let shared = self.shared.clone();
        let list = tokio::task::spawn_blocking(move || {
            change()?;
            shared.notify(shared.store.next_position());
            // A grant shares the keys with the device; a revocation rotates them.
            shared.maintain_keys();
            device_list(&shared)
        })
        .await
        .map_err(grpc_status::join)??;
        Ok(Response::new(list))
    }
}

#[tonic::async_trait]
impl Cases for CaseService {
    async fn grant_device(
        &self,
        request: Request<pb::GrantDeviceRequest>,
    ) -> Result<Response<pb::DeviceList>, GrpcStatus> {
        let message = request.into_inner();
        let author = device_key(&message.device_key)?;
        let role = Role::parse(&message.role).ok_or_else(|| {
            GrpcStatus::invalid_argument(format!("role {:?}: expected admin, writer, reader or relay", message.role))
        })?;
        let name = if message.name.is_empty() { author.device_id() } else { message.name };
        casesync_engine::identity::validate_name(&name).map_err(|e| GrpcStatus::invalid_argument(e.to_string()))?;
        let until = (message.until_ms != 0).then_some(message.until_ms);
        let shared = self.shared.clone();
        self.change_membership(move || {
            shared.store.add_member(&shared.space, &author, &name).map_err(|e| grpc_status::store(&e))?;
            let name = name.clone();
            shared
                .store
                .grant(
                    &shared.space,
                    &shared.identity.key,
                    now_ms(),
                    NewGrant { device: author, role, name, until_ms: until },
                )
                .map_err(|e| grpc_status::engine(&e.into()))
        })
        .await
    }

    async fn invite(&self, request: Request<pb::InviteRequest>) -> Result<Response<pb::InviteReply>, GrpcStatus> {
        crate::invite::create(self.shared.clone(), request.into_inner()).await.map(Response::new)
    }

    async fn revoke_device(
        &self,
        request: Request<pb::RevokeDeviceRequest>,
    ) -> Result<Response<pb::DeviceList>, GrpcStatus> {
        let author = device_key(&request.into_inner().device_key)?;
        let shared = self.shared.clone();
        self.change_membership(move || {
            shared
                .store
                .revoke(&shared.space, &shared.identity.key, now_ms(), author)
                .map_err(|e| grpc_status::engine(&e.into()))
        })
        .await
    }

    async fn list_devices(
        &self,
        _request: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::DeviceList>, GrpcStatus> {
        let shared = self.shared.clone();
        let list = tokio::task::spawn_blocking(move || device_list(&shared)).await.map_err(grpc_status::join)??;
        Ok(Response::new(list))
    }

    async fn fence(&self, request: Request<pb::FenceRequest>) -> Result<Response<pb::FenceReply>, GrpcStatus> {
        let clear = request.into_inner().clear;
        let shared = self.shared.clone();
        let reply = tokio::task::spawn_blocking(move || {
            let (store, space, me) = (&shared.store, &shared.space, shared.identity.author());
            let cleared_seq =
                if clear { store.clear_fence(space, &me).map_err(|e| grpc_status::store(&e))? } else { 0 };
            let local_seq = store.head(space, &me).map_or(0, |h| h.seq);
            let fence_seq = store.fence(space, &me);
            Ok::<_, GrpcStatus>(pb::FenceReply {
                local_seq,
                fence_seq,
                blocks_writes: fence_seq > local_seq,
                cleared_seq,
            })
        })
        .await
        .map_err(grpc_status::join)??;
        Ok(Response::new(reply))
    }

    async fn create_case(&self, request: Request<pb::CreateCaseRequest>) -> Result<Response<pb::CaseView>, GrpcStatus> {
        let fields = fields(request.into_inner().fields)?;
        self.run(move |_| Ok(Command::CreateCase { id: CaseId(random_id()), fields })).await
    }

    async fn set_fields(&self, request: Request<pb::SetFieldsRequest>) -> Result<Response<pb::CaseView>, GrpcStatus> {
        let message = request.into_inner();
        let values = fields(message.fields)?;
        self.run(move |shared| {
            Ok(Command::SetFields { case: Self::resolve(shared, &message.case_id)?, fields: values })
        })
        .await
    }

    async fn delete_case(&self, request: Request<pb::CaseRef>) -> Result<Response<pb::CaseView>, GrpcStatus> {
        self.status_change(request, StatusChange::Delete).await
    }

    async fn archive_case(&self, request: Request<pb::CaseRef>) -> Result<Response<pb::CaseView>, GrpcStatus> {
        self.status_change(request, StatusChange::Archive).await
    }

    async fn unarchive_case(&self, request: Request<pb::CaseRef>) -> Result<Response<pb::CaseView>, GrpcStatus> {
        self.status_change(request, StatusChange::Unarchive).await
    }

    async fn restore_case(&self, request: Request<pb::CaseRef>) -> Result<Response<pb::CaseView>, GrpcStatus> {
        self.status_change(request, StatusChange::Restore).await
    }

    async fn add_entry(&self, request: Request<pb::EntryRequest>) -> Result<Response<pb::CaseView>, GrpcStatus> {
        let message = request.into_inner();
        let values = fields(message.fields)?;
        self.run(move |shared| {
            Ok(Command::AddEntry {
                case: Self::resolve(shared, &message.case_id)?,
                entry: EntryId(random_id()),
                fields: values,
            })
        })
        .await
    }

    async fn update_entry(&self, request: Request<pb::EntryRequest>) -> Result<Response<pb::CaseView>, GrpcStatus> {
        let message = request.into_inner();
        let values = fields(message.fields)?;
        self.run(move |shared| {
            Ok(Command::UpdateEntry {
                case: Self::resolve(shared, &message.case_id)?,
                entry: Self::resolve_entry(&message.entry_id)?,
                fields: values,
            })
        })
        .await
    }

    async fn remove_entry(&self, request: Request<pb::EntryRequest>) -> Result<Response<pb::CaseView>, GrpcStatus> {
        let message = request.into_inner();
        self.run(move |shared| {
            Ok(Command::RemoveEntry {
                case: Self::resolve(shared, &message.case_id)?,
                entry: Self::resolve_entry(&message.entry_id)?,
            })
        })
        .await
    }

    async fn restore_entry(&self, request: Request<pb::EntryRequest>) -> Result<Response<pb::CaseView>, GrpcStatus> {
        let message = request.into_inner();
        self.run(move |shared| {
            Ok(Command::RestoreEntry {
                case: Self::resolve(shared, &message.case_id)?,
                entry: Self::resolve_entry(&message.entry_id)?,
            })
        })
        .await
    }

    async fn get_case(&self, request: Request<pb::CaseRef>) -> Result<Response<pb::CaseView>, GrpcStatus> {
        let text = request.into_inner().case_id;
        let view = self
            .blocking(move |shared| {
                let case = Self::resolve(shared, &text)?;
                shared
                    .store
                    .case_view(&shared.space, &case)
                    .map_err(|e| grpc_status::store(&e))?
                    .ok_or_else(|| GrpcStatus::not_found(format!("no case {text}")))
            })
            .await?;
        Ok(Response::new(views_pb::case(&view)))
    }

    async fn list_cases(&self, request: Request<pb::ListCasesRequest>) -> Result<Response<pb::CaseList>, GrpcStatus> {
        let message = request.into_inner();
        let status = match message.status.as_str() {
            "" => None,
            "active" => Some(Status::Active),
            "archived" => Some(Status::Archived),
            "deleted" => Some(Status::Deleted),
            other => {
                return Err(GrpcStatus::invalid_argument(format!(
                    "unknown status {other:?} (active, archived, deleted)"
                )))
            }
        };
        let filter = CaseFilter {
            status,
            conflicts_only: message.conflicts_only,
            field_equals: (!message.field.is_empty()).then(|| (message.field.clone(), message.equals.clone())),
        };
        let cases = self
            .blocking(move |shared| shared.store.list_cases(&shared.space, &filter).map_err(|e| grpc_status::store(&e)))
            .await?;
        Ok(Response::new(pb::CaseList { cases: cases.iter().map(views_pb::case).collect() }))
    }

    async fn history(&self, request: Request<pb::CaseRef>) -> Result<Response<pb::HistoryReply>, GrpcStatus> {
        let text = request.into_inner().case_id;
        let items = self
            .blocking(move |shared| {
                let case = Self::resolve(shared, &text)?;
                shared.store.history(&shared.space, &case).map_err(|e| grpc_status::store(&e))
            })
            .await?;
        Ok(Response::new(pb::HistoryReply { items: items.iter().map(views_pb::history).collect() }))
    }

    async fn conflicts(
        &self,
        request: Request<pb::ConflictsRequest>,
    ) -> Result<Response<pb::ConflictList>, GrpcStatus> {
        let text = request.into_inner().case_id;
        let conflicts = self
            .blocking(move |shared| {
                let case = if text.is_empty() { None } else { Some(Self::resolve(shared, &text)?) };
                shared.store.conflicts(&shared.space, case.as_ref()).map_err(|e| grpc_status::store(&e))
            })
            .await?;
        Ok(Response::new(pb::ConflictList { conflicts: conflicts.iter().map(views_pb::conflict).collect() }))
    }

    type WatchStream = ReceiverStream<Result<pb::CaseChange, GrpcStatus>>;

    async fn watch(&self, _request: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, GrpcStatus> {
        let (tx, rx) = mpsc::channel(64);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let mut changes = shared.visible.subscribe();
            let mut stopping = shared.stopping.subscribe();
            let mut position = *changes.borrow_and_update();
            loop {
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                    _ = stopping.wait_for(|s| *s) => return,
                }
                let (store, space, from) = (shared.store.clone(), shared.space, position);
                let read = tokio::task::spawn_blocking(move || -> Result<(Vec<pb::CaseChange>, u64), GrpcStatus> {
                    let mut out = Vec::new();
                    let mut next = from;
                    let keys = store.keys();
                    for arrival in store.arrivals_from(from, 10_000).map_err(|e| grpc_status::store(&e))? {
                        next = arrival.position + 1;
                        if arrival.space != space {
                            continue;
                        }
                        let event = store
                            .get_event(&space, &arrival.author, arrival.seq)
                            .map_err(|e| grpc_status::store(&e))?;
                        if let Some(op) =
                            event.as_ref().and_then(|e| casesync_engine::projection::operation_of(e, &keys))
                        {
                            out.push(pb::CaseChange {
                                case_id: op.case().to_hex(),
                                author: arrival.author.to_hex(),
                                seq: arrival.seq,
                                operation: op.name().to_string(),
                            });
                        }
                    }
                    Ok((out, next))
                })
                .await;
                match read {
                    Ok(Ok((items, next))) => {
                        position = next;
                        for item in items {
                            if tx.send(Ok(item)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok(Err(status)) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(grpc_status::join(e))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn status(&self, request: Request<pb::StatusRequest>) -> Result<Response<pb::NodeStatus>, GrpcStatus> {
        let skip_state_hash = request.into_inner().skip_state_hash;
        let shared = self.shared.clone();
        let status = tokio::task::spawn_blocking(move || node_status(&shared, skip_state_hash))
            .await
            .map_err(grpc_status::join)??;
        Ok(Response::new(status))
    }

    async fn sync_now(&self, request: Request<pb::SyncNowRequest>) -> Result<Response<pb::SyncNowReply>, GrpcStatus> {
        let wanted = request.into_inner().peer;
        let urls: Vec<String> = if wanted.is_empty() {
            self.shared.peers().into_iter().map(|(url, _)| url).collect()
        } else {
            vec![wanted]
        };
        let mut results = Vec::new();
        for url in urls {
            let outcome = sync_once(self.shared.clone(), &url, |_, _| {}).await;
            results.push(match outcome {
                Ok(counts) => {
                    pb::PeerSyncResult { peer: url, received: counts.received, sent: counts.sent, error: String::new() }
                }
                Err(e) => pb::PeerSyncResult { peer: url, error: format!("{e:#}"), ..Default::default() },
            });
        }
        Ok(Response::new(pb::SyncNowReply { results }))
    }
}

/// The node's status (blocking: reads the store).
pub fn node_status(shared: &Shared, skip_state_hash: bool) -> Result<pb::NodeStatus, GrpcStatus> {
    let local = shared.store.vector(&shared.space);
    let projections_behind = shared.store.projections_behind(&shared.space).map_err(|e| grpc_status::store(&e))?;
    let state_hash = if shared.relay || skip_state_hash {
        String::new()
    } else {
        shared.store.state_hash(&shared.space).map_err(|e| grpc_status::store(&e))?
    };
    let peers = shared
        .peers()
        .into_iter()
        .map(|(url, info)| {
            let waiting =
                info.device.map(|d| local.missing_in(&shared.known(&d)).iter().map(|r| r.len()).sum()).unwrap_or(0);
            pb::PeerStatus {
                url,
                state: info.state.as_str().to_string(),
                device: info.device.map(|d| d.device_id()).unwrap_or_default(),
                last_sync_ms: info.last_sync_ms,
                events_to_send: waiting,
                last_error: info.last_error,
            }
        })
        .collect::<Vec<_>>();
    let me = shared.identity.author();
    let next = shared.store.head(&shared.space, &me).map_or(0, |h| h.seq) + 1;
    let (role, role_refusal) = match shared.store.membership(&shared.space).may_connect(&me, next, now_ms()) {
        Ok(role) => (role.as_str().to_string(), String::new()),
        Err(refusal) => (String::new(), refusal.to_string()),
    };
    Ok(pb::NodeStatus {
        role,
        role_refusal,
        device: shared.identity.author().device_id(),
        device_name: shared.identity.name.clone(),
        space: shared.space.to_hex(),
        listen: String::new(),
        events: local.total(),
        state_hash,
        peers,
        relay: shared.relay,
        projections_behind,
        refused: shared
            .refused_authors()
            .into_iter()
            .map(|r| pb::RefusedAuthor {
                device: r.author.device_id(),
                seq: r.seq,
                reason: r.reason,
                times: r.times,
                peer: r.peer.device_id(),
                last_ms: r.last_ms,
            })
            .collect(),
        forked: shared
            .store
            .forked_authors(&shared.space)
            .into_iter()
            .map(|f| pb::ForkedDevice {
                device: f.author.device_id(),
                first_seq: f.first_seq,
                evidence: f.pieces as u64,
                quarantined: f.quarantined,
            })
            .collect(),
    })
}

/// The known devices of the node's space (blocking).
pub fn device_list(shared: &Shared) -> Result<pb::DeviceList, GrpcStatus> {
    let me = shared.identity.author();
    let membership = shared.store.membership(&shared.space);
    let heads = shared.store.vector(&shared.space).iter().map(|(a, s)| (*a, *s)).collect();
    let mut devices: Vec<pb::DeviceInfo> = membership
        .devices(now_ms(), &heads)
        .into_iter()
        .map(|entry| {
            let grant = entry.grant.as_ref();
            pb::DeviceInfo {
                device: entry.device.device_id(),
                device_key: entry.device.to_hex(),
                name: entry.name,
                this_device: entry.device == me,
                role: entry.role.map(|r| r.as_str().to_string()).unwrap_or_default(),
                granted_role: grant.map_or(if entry.founder { "admin" } else { "" }, |g| g.role.as_str()).to_string(),
                granted_by: grant.map(|g| g.by.device_id()).unwrap_or_default(),
                granted_at_ms: grant.map_or(0, |g| hlc::millis(g.at_hlc)),
                until_ms: grant.and_then(|g| g.until_ms).unwrap_or(0),
                founder: entry.founder,
                revoked: entry.revoked.is_some(),
                revoked_by: entry.revoked.map(|c| c.by.device_id()).unwrap_or_default(),
                revoked_at_ms: entry.revoked.map_or(0, |c| hlc::millis(c.at_hlc)),
                cut: entry.revoked.map_or(0, |c| c.cut),
            }
        })
        .collect();
    if !devices.iter().any(|d| d.this_device) {
        // Not (yet) a member: shown so its key can be given to an admin.
        devices.push(pb::DeviceInfo {
            device: me.device_id(),
            device_key: me.to_hex(),
            name: shared.identity.name.clone(),
            this_device: true,
            ..pb::DeviceInfo::default()
        });
    }
    Ok(pb::DeviceList { devices })
}
