//! The `casesync` command line: what each command does (what can be typed: `cli/args.rs`).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use casesync_engine::codec::case_json::{CaseJson, CaseListJson, ConflictListJson, HistoryJson};
use casesync_engine::codec::wire::value_to_pb;
use casesync_engine::model::ids::SpaceId;
use casesync_engine::model::operation::FieldValue;
use casesync_proto::v1 as pb;
use casesync_proto::v1::cases_client::CasesClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::api_token::WithToken;

use crate::config::{default_data_dir, parse_duration, FileConfig, DAEMON_FILE};
use crate::node::{DaemonFile, Node, NodeConfig};
use crate::output::{self, case_row, case_text, json};
use crate::peer_actor::distinct_peers;
use crate::sync_client::sync_once;
use crate::{data_dir, demo};

pub mod args;

use args::{CaseCommand, Cli, Commands, DeviceCommand, EntryCommand, InitArgs, PinCommand, ServeArgs, SpaceCommand};

/// Parses `FIELD=VALUE` arguments.
pub fn parse_fields(args: &[String]) -> anyhow::Result<Vec<pb::NamedValue>> {
    args.iter()
        .map(|arg| {
            let (name, value) = arg.split_once('=').with_context(|| format!("{arg:?} is not FIELD=VALUE"))?;
            let value = FieldValue::parse_typed(value).with_context(|| format!("field {name:?}"))?;
            Ok(pb::NamedValue { name: name.to_string(), value: Some(value_to_pb(&value)) })
        })
        .collect()
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let data = cli.data.clone().unwrap_or_else(default_data_dir);
    match cli.command {
        Commands::Init(args) => init(&data, args, cli.space.as_deref(), cli.json),
        Commands::Space(SpaceCommand::Add { name, id, peers }) => {
            let space = SpaceId::from_hex(&id).context("--id must be a 32-digit hex space id")?;
            data_dir::add_space(&data, &name, space, peers)?;
            if cli.json {
                return json(&serde_json::json!({"name": name, "space": space.to_hex()}));
            }
            println!(
                "this node holds space {} as {name:?} (a running daemon takes it up when restarted)",
                space.to_hex()
            );
            Ok(())
        }
        Commands::Space(SpaceCommand::List) => space_list(&data, cli.json).await,
        Commands::Serve(args) => serve(&data, args).await,
        Commands::Demo { keep } => demo::run(keep, cli.json).await,
        Commands::Pin(PinCommand::Change) => pin_change(&data, cli.json),
        Commands::Sync { peer } => sync(&data, cli.space.as_deref(), peer, cli.json).await,
        Commands::Join { code, name, space_name } => {
            let report = crate::join::join(&data, &code, &name, space_name.as_deref()).await?;
            if cli.json {
                return json(&report);
            }
            println!("joined space {} as {} ({}) via {}", report.space, report.role, report.device, report.via);
            println!("{} events; state {}", report.events, report.state_hash);
            Ok(())
        }
        command => {
            let session = Session::open(&data, cli.space.as_deref()).await?;
            let result = session_command(&session, command, cli.json).await;
            session.close().await;
            result
        }
    }
}

fn init(data: &Path, args: InitArgs, space: Option<&str>, as_json: bool) -> anyhow::Result<()> {
    let space = space.map(SpaceId::from_hex).transpose().context("--space must be a 32-digit hex space id")?;
    let report = data_dir::init(data, &args.name, space, args.relay, args.listen)?;
    if as_json {
        return json(&report);
    }
    println!("{} casesync node in {}", if report.created { "created a" } else { "kept the" }, report.data);
    println!("device      {} ({})", report.device, report.device_name);
    println!("device key  {}", report.device_key);
    println!("space       {}", report.space);
    if report.relay {
        println!("mode        relay (stores and forwards, holds no case views)");
    }
    if space.is_none() {
        println!(
            "next: on each other device `casesync init --space {}`, then here `casesync device grant <its key> --role writer|reader|relay`",
            report.space
        );
    } else {
        println!(
            "next: on an admin device of the space, `casesync device grant {} --role writer|reader`",
            report.device_key
        );
    }
    Ok(())
}

/// `casesync pin change`: the device key sealed under a new PIN.
fn pin_change(data: &Path, as_json: bool) -> anyhow::Result<()> {
    if casesync_engine::storage::held_by_another_process(&data_dir::db_path(data)) {
        bail!("a daemon runs on {}: stop it first (it holds the key unlocked)", data.display());
    }
    if !casesync_engine::identity::DeviceIdentity::exists(data) {
        bail!("{} has no device key (run `casesync init --data {}`)", data.display(), data.display());
    }
    let old = crate::pin::current(&format!("current PIN for {}: ", data.display()))?;
    let new = crate::pin::new_pin()?;
    let identity =
        crate::pin::guarded(data, || casesync_engine::identity::DeviceIdentity::change_pin(data, &old, &new))?;
    if as_json {
        return json(
            &serde_json::json!({"data": data.display().to_string(), "device": identity.author().device_id(), "pin_changed": true}),
        );
    }
    println!("the device key of {} ({}) is sealed under the new PIN", data.display(), identity.author().device_id());
    Ok(())
}

async fn serve(data: &Path, args: ServeArgs) -> anyhow::Result<()> {
    let file = FileConfig::load(data)?;
    // Both lists, as given: `Node::start` runs one task per distinct peer.
    let peers = file.peers.iter().cloned().chain(args.peers).collect();
    let pull_every = args.pull_every.or(file.pull_every.clone()).map(|d| parse_duration(&d)).transpose()?;
    let config = NodeConfig {
        data: data.to_path_buf(),
        listen: args.listen.or(file.listen.clone()).unwrap_or_else(|| "127.0.0.1:7000".into()),
        api: args.api,
        peers,
        pull_every,
        relay: args.relay,
        announce: true,
        transport: Default::default(),
        memory_mib: args.memory_mib,
    };
    // A node whose store a failed write poisoned (a full disk) starts again by itself once the
    // store opens (`supervise`).
    let stop = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot wait for Ctrl-C: stopping");
        }
        eprintln!("stopping");
    };
    crate::supervise::serve(config, stop, |node| {
        eprintln!(
            "casesync {} serving peers on {} (local API {}); Ctrl-C stops",
            node.shared().identity.author().device_id(),
            node.sync_url(),
            node.api_addr()
        );
    })
    .await
}

/// A CLI session: a client to the running daemon, or to a node started in-process on the data
/// dir when no daemon runs.
pub struct Session {
    /// The case API client.
    pub client: ApiClient,
    local: Option<Node>,
    /// The space's name, when the node holds more than one (lists say which space they show).
    pub space_name: Option<String>,
}

/// A client of a node's local case API, sending its token with every call.
pub type ApiClient = CasesClient<InterceptedService<Channel, WithToken>>;

/// A client of the local API at `addr` with `token`.
async fn api_client(addr: &str, token: &str) -> anyhow::Result<ApiClient> {
    let channel = crate::sync_client::connect(&format!("http://{addr}")).await?;
    let token = WithToken::new(token).context("the local API token is not valid text")?;
    Ok(CasesClient::with_interceptor(channel, token))
}

impl Session {
    /// Connects to the daemon of `data`, or opens the data dir in-process; with `space`, to
    /// that space's local API (by its name on this node).
    pub async fn open(data: &Path, space: Option<&str>) -> anyhow::Result<Session> {
        let unknown = |names: Vec<String>| {
            anyhow::anyhow!("this node holds no space named {:?} (it holds: {})", space.unwrap_or(""), names.join(", "))
        };
        if let Ok(text) = std::fs::read_to_string(data.join(DAEMON_FILE)) {
            let daemon: DaemonFile = serde_json::from_str(&text).context("daemon.json is malformed")?;
            let api = match space {
                None => Some(daemon.api.clone()),
                Some(name) => daemon.spaces.iter().find(|s| s.name == name).map(|s| s.api.clone()),
            };
            let Some(api) = api else {
                return Err(unknown(daemon.spaces.iter().map(|s| s.name.clone()).collect()));
            };
            let space_name = (daemon.spaces.len() > 1)
                .then(|| space.map(str::to_string).or_else(|| daemon.spaces.first().map(|s| s.name.clone())))
                .flatten();
            if let Ok(client) = api_client(&api, &daemon.token).await {
                return Ok(Session { client, local: None, space_name });
            }
        }
        let node = Node::start(NodeConfig::new(data)).await?;
        let api = match space {
            None => Some(node.api_addr()),
            Some(name) => node.api_addr_of(name),
        };
        let Some(api) = api else {
            let names = node.space_names();
            node.shutdown().await;
            return Err(unknown(names));
        };
        let client = api_client(&api.to_string(), node.api_token()).await?;
        let names = node.space_names();
        let space_name = (names.len() > 1).then(|| space.map(str::to_string).unwrap_or_else(|| names[0].clone()));
        Ok(Session { client, local: Some(node), space_name })
    }

    /// Stops the in-process node, if any.
    pub async fn close(self) {
        if let Some(node) = self.local {
            node.shutdown().await;
        }
    }
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}

async fn session_command(session: &Session, command: Commands, as_json: bool) -> anyhow::Result<()> {
    let mut client = session.client.clone();
    let show = |view: pb::CaseView| -> anyhow::Result<()> {
        if as_json {
            json(&CaseJson::try_from(&view).context("the daemon sent a malformed case view")?)
        } else {
            print!("{}", case_text(&view));
            Ok(())
        }
    };
    let case_ref = |case: String| pb::CaseRef { case_id: case };
    match command {
        Commands::Status => {
            let status = client.status(pb::StatusRequest::default()).await.map_err(status_error)?.into_inner();
            if as_json {
                return json(&status);
            }
            print!("{}", output::status_text(&status));
            Ok(())
        }
        Commands::Fence { clear } => {
            let reply = client.fence(pb::FenceRequest { clear }).await.map_err(status_error)?.into_inner();
            if as_json {
                return json(&reply);
            }
            println!("{}", output::fence_text(&reply));
            Ok(())
        }
        Commands::Invite { role, until, expires, via } => {
            let expires_in = parse_duration(&expires)?;
            let request = pb::InviteRequest {
                role,
                until_ms: until.unwrap_or(0),
                expires_in_ms: u64::try_from(expires_in.as_millis()).unwrap_or(u64::MAX),
                via: via.unwrap_or_default(),
            };
            let reply = client.invite(request).await.map_err(status_error)?.into_inner();
            if as_json {
                return json(&reply);
            }
            println!("{}", reply.code);
            println!(
                "a one-time code for a new {}: `casesync join <code>` on it, before {}",
                reply.role,
                output::utc(reply.expires_ms)
            );
            if reply.until_ms != 0 {
                println!("its grant ends {}", output::utc(reply.until_ms));
            }
            if reply.delivered_to.is_empty() {
                println!("no peer holds the invitation yet: keep this device on until it syncs with {}", reply.via);
            } else {
                println!("held by {}: it works while this device is off", reply.delivered_to.join(", "));
            }
            Ok(())
        }
        Commands::Device(cmd) => {
            let list = match cmd {
                DeviceCommand::Show => {
                    let status = client.status(pb::StatusRequest::default()).await.map_err(status_error)?.into_inner();
                    let list = client.list_devices(pb::ListDevicesRequest {}).await.map_err(status_error)?.into_inner();
                    let me = list.devices.into_iter().find(|d| d.this_device);
                    if as_json {
                        return json(&me);
                    }
                    if let Some(me) = me {
                        println!(
                            "device      {} ({})\ndevice key  {}\nspace       {}",
                            me.device, me.name, me.device_key, status.space
                        );
                    }
                    return Ok(());
                }
                DeviceCommand::Grant { key, role, name, until } => client
                    .grant_device(pb::GrantDeviceRequest { device_key: key, name, role, until_ms: until.unwrap_or(0) })
                    .await
                    .map_err(status_error)?
                    .into_inner(),
                DeviceCommand::Revoke { key } => client
                    .revoke_device(pb::RevokeDeviceRequest { device_key: key })
                    .await
                    .map_err(status_error)?
                    .into_inner(),
                DeviceCommand::List => {
                    client.list_devices(pb::ListDevicesRequest {}).await.map_err(status_error)?.into_inner()
                }
            };
            if as_json {
                return json(&list);
            }
            for d in &list.devices {
                println!("{}", crate::output::device_line(d));
            }
            Ok(())
        }
        Commands::Case(cmd) => match cmd {
            CaseCommand::Add { fields } => show(
                client
                    .create_case(pb::CreateCaseRequest { fields: parse_fields(&fields)? })
                    .await
                    .map_err(status_error)?
                    .into_inner(),
            ),
            CaseCommand::Set { case, fields } => show(
                client
                    .set_fields(pb::SetFieldsRequest { case_id: case, fields: parse_fields(&fields)? })
                    .await
                    .map_err(status_error)?
                    .into_inner(),
            ),
            CaseCommand::Delete { case } => {
                show(client.delete_case(case_ref(case)).await.map_err(status_error)?.into_inner())
            }
            CaseCommand::Archive { case } => {
                show(client.archive_case(case_ref(case)).await.map_err(status_error)?.into_inner())
            }
            CaseCommand::Unarchive { case } => {
                show(client.unarchive_case(case_ref(case)).await.map_err(status_error)?.into_inner())
            }
            CaseCommand::Restore { case } => {
                show(client.restore_case(case_ref(case)).await.map_err(status_error)?.into_inner())
            }
            CaseCommand::Show { case } => {
                show(client.get_case(case_ref(case)).await.map_err(status_error)?.into_inner())
            }
            CaseCommand::List { status, conflicts, filter } => {
                let (field, equals) = match filter {
                    Some(f) => f
                        .split_once('=')
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                        .context("--where takes FIELD=VALUE")?,
                    None => (String::new(), String::new()),
                };
                let request = pb::ListCasesRequest {
                    status: status.unwrap_or_default(),
                    conflicts_only: conflicts,
                    field,
                    equals,
                };
                let list = client.list_cases(request).await.map_err(status_error)?.into_inner();
                if as_json {
                    return json(&CaseListJson::try_from(&list).context("the daemon sent a malformed case view")?);
                }
                if let Some(name) = &session.space_name {
                    println!("space {name}");
                }
                for view in &list.cases {
                    println!("{}", case_row(view));
                }
                Ok(())
            }
            CaseCommand::History { case } => {
                let history = client.history(case_ref(case)).await.map_err(status_error)?.into_inner();
                if as_json {
                    return json(&HistoryJson::try_from(&history)?);
                }
                for item in &history.items {
                    println!("{}", output::history_line(item));
                }
                Ok(())
            }
            CaseCommand::Conflicts { case } => {
                let list = client
                    .conflicts(pb::ConflictsRequest { case_id: case.unwrap_or_default() })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                if as_json {
                    return json(&ConflictListJson::try_from(&list)?);
                }
                if list.conflicts.is_empty() {
                    println!("no conflicts");
                }
                for c in &list.conflicts {
                    print!("{}", output::conflict_text(c));
                }
                Ok(())
            }
        },
        Commands::Entry(cmd) => {
            let view = match cmd {
                EntryCommand::Add { case, fields } => {
                    client
                        .add_entry(pb::EntryRequest {
                            case_id: case,
                            entry_id: String::new(),
                            fields: parse_fields(&fields)?,
                        })
                        .await
                }
                EntryCommand::Update { case, entry, fields } => {
                    client
                        .update_entry(pb::EntryRequest {
                            case_id: case,
                            entry_id: entry,
                            fields: parse_fields(&fields)?,
                        })
                        .await
                }
                EntryCommand::Remove { case, entry } => {
                    client.remove_entry(pb::EntryRequest { case_id: case, entry_id: entry, fields: Vec::new() }).await
                }
                EntryCommand::Restore { case, entry } => {
                    client.restore_entry(pb::EntryRequest { case_id: case, entry_id: entry, fields: Vec::new() }).await
                }
            };
            show(view.map_err(status_error)?.into_inner())
        }
        Commands::Init(_)
        | Commands::Serve(_)
        | Commands::Demo { .. }
        | Commands::Pin(_)
        | Commands::Sync { .. }
        | Commands::Join { .. }
        | Commands::Space(_) => {
            bail!("internal: command dispatched to the wrong handler")
        }
    }
}

async fn sync(data: &Path, space: Option<&str>, peer: Option<String>, as_json: bool) -> anyhow::Result<()> {
    // Through the daemon when one runs; else in-process with a progress bar.
    if let Ok(text) = std::fs::read_to_string(data.join(DAEMON_FILE)) {
        if let Ok(daemon) = serde_json::from_str::<DaemonFile>(&text) {
            let api = match space {
                None => Some(daemon.api.clone()),
                Some(name) => daemon.spaces.iter().find(|s| s.name == name).map(|s| s.api.clone()),
            };
            if let Some(Ok(mut client)) = match api {
                Some(api) => Some(api_client(&api, &daemon.token).await),
                None => None,
            } {
                let reply = client
                    .sync_now(pb::SyncNowRequest { peer: peer.unwrap_or_default() })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                return report_sync(&reply, as_json);
            }
        }
    }
    let file = FileConfig::load(data)?;
    let spaces = file.node_spaces()?;
    let chosen = match space {
        None => spaces.first(),
        Some(name) => spaces.iter().find(|s| s.name == name),
    };
    let Some(chosen) = chosen.cloned() else {
        bail!("this node holds no space named {:?}", space.unwrap_or(""));
    };
    let peers = match peer {
        Some(p) => vec![p],
        None if chosen.peers.is_empty() => bail!("no peer: pass --peer URL or add peers to casesync.toml"),
        None => distinct_peers(chosen.peers.iter().cloned()),
    };
    let node = Node::start(NodeConfig::new(data)).await?;
    let Some(shared) = node.shared_of(&chosen.name).cloned() else {
        node.shutdown().await;
        bail!("this node holds no space named {:?}", chosen.name);
    };
    let mut results = Vec::new();
    for url in peers {
        shared.add_peer(&url);
        let bar = output::progress_bar(0, &format!("sync {url}"));
        let outcome = tokio::time::timeout(
            Duration::from_secs(3600),
            sync_once(shared.clone(), &url, |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            }),
        )
        .await;
        bar.finish_and_clear();
        results.push(match outcome {
            Ok(Ok(counts)) => {
                pb::PeerSyncResult { peer: url, received: counts.received, sent: counts.sent, error: String::new() }
            }
            Ok(Err(e)) => pb::PeerSyncResult { peer: url, error: format!("{e:#}"), ..Default::default() },
            Err(_) => pb::PeerSyncResult { peer: url, error: "timed out after an hour".into(), ..Default::default() },
        });
    }
    drop(shared);
    node.shutdown().await;
    report_sync(&pb::SyncNowReply { results }, as_json)
}

fn report_sync(reply: &pb::SyncNowReply, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        json(reply)?;
    } else {
        for r in &reply.results {
            if r.error.is_empty() {
                println!("{}: received {}, sent {}", r.peer, r.received, r.sent);
            } else {
                println!("{}: failed: {}", r.peer, r.error);
            }
        }
    }
    if reply.results.iter().any(|r| !r.error.is_empty()) {
        bail!("sync failed with {} peer(s)", reply.results.iter().filter(|r| !r.error.is_empty()).count());
    }
    Ok(())
}

/// `casesync space list`: each space's name, id, this device's role and events held (from the
/// daemon, or the data dir opened in-process).
async fn space_list(data: &Path, as_json: bool) -> anyhow::Result<()> {
    let config = FileConfig::load(data)?;
    let mut rows = Vec::new();
    for space in config.node_spaces()? {
        let session = Session::open(data, Some(&space.name)).await?;
        let status = session.client.clone().status(pb::StatusRequest::default()).await.map_err(status_error);
        session.close().await;
        let status = status?.into_inner();
        rows.push(serde_json::json!({
            "name": space.name,
            "space": status.space,
            "role": status.role,
            "role_refusal": status.role_refusal,
            "events": status.events,
        }));
    }
    if as_json {
        return json(&serde_json::json!({ "spaces": rows }));
    }
    for row in &rows {
        let role = row["role"].as_str().filter(|r| !r.is_empty()).unwrap_or("none");
        println!(
            "{:<16} {}  {:<7} {} events",
            row["name"].as_str().unwrap_or(""),
            row["space"].as_str().unwrap_or(""),
            role,
            row["events"]
        );
    }
    Ok(())
}
