//! `casesync demo`: a relay and three devices on 127.0.0.1 show offline edits on two devices,
//! even to the same case, merging with nothing lost, and every node converging.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use casesync_engine::commands::Command;
use casesync_engine::model::ids::{AuthorId, CaseId, SpaceId};
use casesync_engine::model::membership::{NewGrant, Role};
use casesync_engine::model::operation::{FieldValue, StatusChange};
use casesync_engine::model::views::CaseView;
use casesync_engine::projection::queries::CaseFilter;
use rand::RngCore;
use serde::Serialize;

mod rights;

use crate::data_dir;
use crate::node::{Node, NodeConfig};
use crate::output::{case_text, json};
use crate::shared::{now_ms, Shared};
use crate::views_pb;

/// How long the demo waits for nodes to converge.
pub(crate) const CONVERGE_DEADLINE: Duration = Duration::from_secs(20);

fn text(s: &str) -> FieldValue {
    FieldValue::Text(s.to_string())
}

pub(crate) fn random_case() -> CaseId {
    let mut id = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut id);
    CaseId(id)
}

/// Runs a case command as the node's device, on the blocking pool, and wakes live streams.
pub async fn edit(shared: &Arc<Shared>, command: Command) -> anyhow::Result<CaseView> {
    let s = shared.clone();
    let (view, next) = tokio::task::spawn_blocking(move || {
        s.store
            .execute(&s.space, &s.identity.key, now_ms(), command)
            .map(|(_, view, summary)| (view, summary.next_position))
    })
    .await??;
    shared.notify(next);
    Ok(view)
}

/// Waits until every node holds the same events and shows them in its case views, polling with
/// a deadline.
pub async fn wait_converged(nodes: &[&Arc<Shared>], deadline: Duration) -> anyhow::Result<()> {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let first = nodes[0].store.vector(&nodes[0].space);
        // Same events everywhere, and every case view includes them (a bulk catch-up rebuilds
        // its views after the last event arrived).
        let views_current = |n: &Arc<Shared>| n.store.projections_behind(&n.space).is_ok_and(|behind| behind == 0);
        if nodes.iter().all(|n| n.store.vector(&n.space) == first && views_current(n)) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= until {
            bail!("nodes did not converge within {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[derive(Serialize)]
struct DemoDevice {
    name: String,
    device: String,
    events: u64,
    state_hash: String,
    cases: Vec<CaseView>,
}

#[derive(Serialize)]
struct DemoReport {
    devices: Vec<DemoDevice>,
    relay_events: u64,
    relay_holds_same_events: bool,
    converged: bool,
    state_hash: String,
}

/// Creates data dirs under `root`, one per `(name, role)`, all in one new space: the first
/// admin founds it and grants every other device its role (a `relay` device runs as a relay),
/// and each starts with the space's membership events (as if it had synced once). Blocking.
pub fn create_devices(root: &Path, devices: &[(&str, Role)]) -> anyhow::Result<Vec<PathBuf>> {
    let dirs: Vec<PathBuf> = devices.iter().map(|(n, _)| root.join(n)).collect();
    let founder =
        devices.iter().position(|(_, role)| *role == Role::Admin).context("a space is founded by an admin device")?;
    let space = data_dir::init(&dirs[founder], devices[founder].0, None, false, None)?.space;
    let space = SpaceId::from_hex(&space)?;
    let mut others = Vec::new();
    for (index, (dir, (name, role))) in dirs.iter().zip(devices).enumerate() {
        if index != founder {
            let report = data_dir::init(dir, name, Some(space), *role == Role::Relay, None)?;
            others.push((dir, AuthorId::from_hex(&report.device_key)?, *name, *role));
        }
    }
    let admin = data_dir::open(&dirs[founder], false)?;
    for (_, device, name, role) in &others {
        let grant = NewGrant { device: *device, role: *role, name: name.to_string(), until_ms: None };
        admin.store.grant(&space, &admin.identity.key, now_ms(), grant)?;
        admin.store.add_member(&space, device, name)?;
    }
    // The space's data key, wrapped for every device granted to read or write (not the relay).
    admin.store.maintain_keys(&space, &admin.identity.key, now_ms(), crate::shared::fresh_secret())?;
    let membership: Vec<_> = admin.store.events_after(&space, &Default::default()).collect::<Result<_, _>>()?;
    let membership: Vec<_> = membership.into_iter().map(|(_, _, event)| event).collect();
    for (dir, ..) in &others {
        let opened = data_dir::open(dir, false)?;
        opened.store.ingest(&space, membership.clone())?;
    }
    Ok(dirs)
}

/// How many sealed case events a store holds, and how many of them it can open.
fn relay_reads(store: &casesync_engine::store::Store, space: &SpaceId) -> anyhow::Result<(u64, u64)> {
    let keys = store.keys();
    let (mut sealed, mut opened) = (0, 0);
    for item in store.events_after(space, &Default::default()) {
        let event = casesync_engine::model::event::SignedEvent::from_wire(item?.2)?;
        if event.header.encoding == casesync_engine::model::event::BodyEncoding::Sealed {
            sealed += 1;
            opened += u64::from(casesync_engine::projection::operation_of(&event, &keys).is_some());
        }
    }
    Ok((sealed, opened))
}

/// The PIN the demo seals device keys under when `CASESYNC_PIN` is not set.
pub const DEMO_PIN: &str = "2468-demo";

/// Runs the demo; fails (non-zero exit) if any two devices differ.
pub async fn run(keep: Option<PathBuf>, as_json: bool) -> anyhow::Result<()> {
    let temp = tempfile::tempdir().context("creating a temporary directory")?;
    let root = keep.unwrap_or_else(|| temp.path().to_path_buf());
    let say = |line: &str| {
        if !as_json {
            println!("{line}");
        }
    };
    // Every device key is sealed under the practice PIN: `CASESYNC_PIN` when set, else the
    // demo's own, printed so that a kept data dir can be opened afterwards.
    match std::env::var(crate::pin::PIN_ENV) {
        Ok(_) => say("practice PIN: from CASESYNC_PIN"),
        Err(_) => {
            crate::pin::use_for_process(DEMO_PIN, casesync_engine::identity::KdfCost::STANDARD);
            say(&format!("practice PIN: {DEMO_PIN} (the demo's; set CASESYNC_PIN to choose one)"));
        }
    }
    let dirs = tokio::task::spawn_blocking({
        let root = root.clone();
        move || {
            create_devices(
                &root,
                &[
                    ("relay", Role::Relay),
                    ("office", Role::Admin),
                    ("home", Role::Writer),
                    ("laptop", Role::Writer),
                    ("assistant", Role::Reader),
                ],
            )
        }
    })
    .await??;
    let [relay_dir, office_dir, home_dir, laptop_dir, assistant_dir] =
        [&dirs[0], &dirs[1], &dirs[2], &dirs[3], &dirs[4]];

    let mut relay_config = NodeConfig::new(relay_dir);
    relay_config.relay = true;
    let relay = Node::start(relay_config).await?;
    let mut office_config = NodeConfig::new(office_dir);
    office_config.peers = vec![relay.sync_url()];
    let office = Node::start(office_config).await?;
    let mut laptop_config = NodeConfig::new(laptop_dir);
    laptop_config.peers = vec![relay.sync_url()];
    let laptop = Node::start(laptop_config.clone()).await?;
    let mut assistant_config = NodeConfig::new(assistant_dir);
    assistant_config.peers = vec![relay.sync_url()];
    let assistant = Node::start(assistant_config).await?;
    let mut home_config = NodeConfig::new(home_dir);
    home_config.peers = vec![office.sync_url()];
    let home = Node::start(home_config.clone()).await?;
    say(&format!("relay  {}  (stores and forwards)", relay.sync_url()));
    say(&format!("office {}  -> relay", office.sync_url()));
    say(&format!("laptop {}  -> relay", laptop.sync_url()));
    say(&format!("home   {}  -> office", home.sync_url()));
    say(&format!("assistant {}  -> relay (a reader)", assistant.sync_url()));

    // A few cases at the office, synced everywhere.
    let anna = random_case();
    let jan = random_case();
    let maria = random_case();
    let o = office.shared().clone();
    edit(
        &o,
        Command::CreateCase {
            id: anna,
            fields: vec![("name".into(), text("Anna Berg")), ("phone".into(), text("030 1111"))],
        },
    )
    .await?;
    edit(
        &o,
        Command::CreateCase {
            id: jan,
            fields: vec![("name".into(), text("Jan Kowalski")), ("court".into(), text("AG Mitte"))],
        },
    )
    .await?;
    edit(
        &o,
        Command::CreateCase {
            id: maria,
            fields: vec![("name".into(), text("Maria Schmidt")), ("therapy".into(), text("weekly"))],
        },
    )
    .await?;
    wait_converged(
        &[office.shared(), relay.shared(), laptop.shared(), home.shared(), assistant.shared()],
        CONVERGE_DEADLINE,
    )
    .await?;
    say("\n3 cases created at the office; every node has them");

    // Home goes offline; both sides keep working.
    home.shutdown().await;
    say("home is offline");
    let home_offline = tokio::task::spawn_blocking({
        let home_dir = home_dir.clone();
        move || data_dir::open(&home_dir, false)
    })
    .await??;
    let home_edit = |command: Command| {
        let (store, space, key) = (home_offline.store.clone(), home_offline.space, home_offline.identity.key.clone());
        async move {
            let view =
                tokio::task::spawn_blocking(move || store.execute(&space, &key, now_ms(), command).map(|(_, v, _)| v))
                    .await??;
            anyhow::Ok(view)
        }
    };
    edit(&o, Command::SetFields { case: anna, fields: vec![("phone".into(), text("030 2222 (office)"))] }).await?;
    home_edit(Command::SetFields { case: anna, fields: vec![("phone".into(), text("0171 3333 (home)"))] }).await?;
    home_edit(Command::SetFields { case: anna, fields: vec![("address".into(), text("Lindenstr. 5"))] }).await?;
    say("office set Anna's phone; home, offline, set Anna's phone too and her address");
    edit(&o, Command::ChangeStatus { case: jan, change: StatusChange::Archive }).await?;
    home_edit(Command::ChangeStatus { case: maria, change: StatusChange::Delete }).await?;
    say("office archived Jan's case; home deleted Maria's case");
    edit(
        laptop.shared(),
        Command::AddEntry {
            case: anna,
            entry: casesync_engine::model::ids::EntryId(random_case().0),
            fields: vec![("note".into(), text("first session, 50 min"))],
        },
    )
    .await?;
    say("laptop added a session note to Anna's case");
    drop(home_offline);

    // Home reconnects.
    let home = Node::start(home_config).await?;
    say("home is back online\n");
    let all = [office.shared(), home.shared(), laptop.shared(), relay.shared(), assistant.shared()];
    wait_converged(&all, CONVERGE_DEADLINE).await?;

    // Rights: a reader cannot write; a revoked laptop is shut out.
    rights::reader_refused(assistant.shared(), &[("the relay", relay.shared()), ("the office", &o)], &say).await?;
    let laptop = rights::laptop_revoked(&o, laptop, laptop_config, &say, anna).await?;
    let tablet = rights::tablet_joins(&o, &relay.sync_url(), &root.join("tablet"), &say).await?;
    let all = [office.shared(), home.shared(), relay.shared(), assistant.shared(), tablet.shared()];
    wait_converged(&all, CONVERGE_DEADLINE).await?;
    say("");

    let mut report = DemoReport {
        devices: Vec::new(),
        relay_events: 0,
        relay_holds_same_events: false,
        converged: false,
        state_hash: String::new(),
    };
    for (name, node) in [("office", &office), ("home", &home), ("assistant", &assistant), ("tablet", &tablet)] {
        let shared = node.shared().clone();
        let (cases, hash) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            Ok((
                shared.store.list_cases(&shared.space, &CaseFilter::default())?,
                shared.store.state_hash(&shared.space)?,
            ))
        })
        .await??;
        let events = node.shared().store.vector(&node.shared().space).total();
        say(&format!("== {name} ({}): {events} events, state {hash}", node.shared().identity.author().device_id()));
        for view in &cases {
            say(case_text(&views_pb::case(view)).trim_end());
        }
        report.devices.push(DemoDevice {
            name: name.into(),
            device: node.shared().identity.author().device_id(),
            events,
            state_hash: hash,
            cases,
        });
    }
    let conflicts = office.shared().store.conflicts(&office.shared().space, Some(&anna))?;
    for c in &conflicts {
        let values: Vec<String> = c.versions.iter().map(|v| format!("{:?} ({})", v.value, v.device)).collect();
        say(&format!("\nconflict kept, both values shown: field {} = {}", c.field, values.join(" | ")));
    }
    let office_vector = office.shared().store.vector(&office.shared().space);
    let relay_vector = relay.shared().store.vector(&relay.shared().space);
    report.relay_events = relay_vector.total();
    report.relay_holds_same_events = relay_vector == office_vector;
    say(&format!(
        "relay holds {} events: {}",
        report.relay_events,
        if report.relay_holds_same_events { "the same as every device" } else { "DIFFERENT from the devices" }
    ));
    let relay_store = relay.shared().store.clone();
    let relay_space = relay.shared().space;
    let (sealed, opened) = tokio::task::spawn_blocking(move || relay_reads(&relay_store, &relay_space)).await??;
    say(&format!("relay can open {opened} of the {sealed} sealed case events it holds: it has no data key"));
    let first = report.devices[0].state_hash.clone();
    report.converged = report.relay_holds_same_events
        && report.devices.iter().all(|d| d.state_hash == first && d.events == report.devices[0].events);
    report.state_hash = first.clone();

    // Shutdown waits until nothing else holds a node's store: let go of ours first.
    drop(o);
    for node in [office, home, laptop, assistant, tablet, relay] {
        node.shutdown().await;
    }
    if as_json {
        json(&report)?;
    }
    if !report.converged {
        for d in &report.devices {
            eprintln!("{}: {} events, state {}", d.name, d.events, d.state_hash);
        }
        bail!("devices differ");
    }
    if !as_json {
        println!("converged: {} ({} nodes, {} events)", first, report.devices.len(), report.devices[0].events);
    }
    Ok(())
}
