//! One simulated host: a real node (`Node::start` on its data dir, the sync server, a task per
//! peer) on turmoil's network, taking case commands through its own local API (`CaseService`,
//! as the CLI calls it in-process) from the simulation's orders. A crash drops the host's
//! runtime with everything on it; a restart opens the same data dir again.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use casesync_engine::model::ids::AuthorId;
use casesync_engine::model::membership::Role;
use casesync_engine::store::Store;
use casesync_node::case_service::CaseService;
use casesync_node::shared::Shared;
use casesync_node::transport::Transport;
use casesync_node::{Node, NodeConfig};
use casesync_proto::v1 as pb;
use casesync_proto::v1::cases_server::Cases;
use tokio::sync::mpsc;
use tonic::Request;

use super::network::SimNetwork;

/// The port every host's sync server listens on.
pub const SYNC_PORT: u16 = 7000;
/// How long (simulated) a restart retries opening a data dir a crashed run still holds.
const REOPEN_DEADLINE: Duration = Duration::from_secs(30);

/// A case command, as the local API takes it.
#[derive(Clone, Debug)]
pub enum Order {
    Create { name: String },
    Set { case: String, field: String, value: String },
    Archive { case: String },
    Delete { case: String },
    AddEntry { case: String, note: String },
}

/// What became of an order.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub node: usize,
    pub order: &'static str,
    /// The author's head after the acknowledgement, or the refusal's gRPC code.
    pub result: Result<(AuthorId, u64), tonic::Code>,
}

/// What every host writes to and the simulation reads.
#[derive(Default)]
pub struct Ledger {
    pub outcomes: Vec<Outcome>,
    /// Case ids created (acknowledged), in order.
    pub cases: Vec<String>,
}

/// One host's fixed settings and its live handles.
pub struct Host {
    pub index: usize,
    pub name: String,
    pub role: Role,
    pub dir: PathBuf,
    pub peers: Vec<String>,
    pub pull_every: Option<Duration>,
    pub network: Arc<SimNetwork>,
    pub ledger: Arc<Mutex<Ledger>>,
    /// Orders to the running node (replaced at each start).
    inbox: Mutex<Option<mpsc::UnboundedSender<Order>>>,
    /// The running node's shared state (the simulation reads its store between steps).
    shared: Mutex<Weak<Shared>>,
    /// The running (or last) node's store: open until every handle on it is gone.
    store: Mutex<Weak<Store>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Host {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        index: usize,
        name: &str,
        role: Role,
        dir: PathBuf,
        peers: Vec<String>,
        pull_every: Option<Duration>,
        network: Arc<SimNetwork>,
        ledger: Arc<Mutex<Ledger>>,
    ) -> Host {
        Host {
            index,
            name: name.to_string(),
            role,
            dir,
            peers,
            pull_every,
            network,
            ledger,
            inbox: Mutex::new(None),
            shared: Mutex::new(Weak::new()),
            store: Mutex::new(Weak::new()),
        }
    }

    /// Hands an order to the running node; false when it is down (the order is lost, like a
    /// command typed into a crashed machine).
    pub fn order(&self, order: Order) -> bool {
        lock(&self.inbox).as_ref().is_some_and(|inbox| inbox.send(order).is_ok())
    }

    /// The running node's shared state, if it runs.
    pub fn shared(&self) -> Option<Arc<Shared>> {
        lock(&self.shared).upgrade()
    }

    /// Whether a store of this host's is still open (a crashed run's ingest thread may hold it
    /// for the job it is finishing).
    pub fn store_open(&self) -> bool {
        lock(&self.store).strong_count() > 0
    }

    /// Forgets the crashed run's handles.
    pub fn crashed(&self) {
        *lock(&self.inbox) = None;
    }

    /// The host's software: start the node, then carry out orders until the host crashes.
    pub async fn serve(self: Arc<Self>) -> turmoil::Result {
        let node = self.start().await?;
        let (tx, mut orders) = mpsc::unbounded_channel();
        *lock(&self.shared) = Arc::downgrade(node.shared());
        *lock(&self.store) = Arc::downgrade(&node.shared().store);
        *lock(&self.inbox) = Some(tx);
        let cases = CaseService::new(node.shared().clone());
        while let Some(order) = orders.recv().await {
            let name = kind(&order);
            let result = run(&cases, order).await;
            let result = match result {
                Ok(view) => {
                    let shared = node.shared();
                    let me = shared.identity.author();
                    let head = shared.store.head(&shared.space, &me).map_or(0, |h| h.seq);
                    if name == "create" {
                        lock(&self.ledger).cases.push(view.case_id);
                    }
                    Ok((me, head))
                }
                Err(status) => Err(status.code()),
            };
            lock(&self.ledger).outcomes.push(Outcome { node: self.index, order: name, result });
        }
        Ok(())
    }

    /// Starts the node, retrying (within a simulated deadline) while a crashed run still holds
    /// the data dir.
    async fn start(&self) -> turmoil::Result<Node> {
        let deadline = tokio::time::Instant::now() + REOPEN_DEADLINE;
        loop {
            let mut config = NodeConfig::new(&self.dir);
            config.listen = format!("0.0.0.0:{SYNC_PORT}");
            config.peers = self.peers.clone();
            config.pull_every = self.pull_every;
            config.relay = self.role == Role::Relay;
            config.transport = Transport::Other(self.network.clone());
            match Node::start(config).await {
                Ok(node) => return Ok(node),
                Err(error) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(host = %self.name, error = %format!("{error:#}"), "the node did not start yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => return Err(format!("{} did not start: {error:#}", self.name).into()),
            }
        }
    }
}

fn kind(order: &Order) -> &'static str {
    match order {
        Order::Create { .. } => "create",
        Order::Set { .. } => "set",
        Order::Archive { .. } => "archive",
        Order::Delete { .. } => "delete",
        Order::AddEntry { .. } => "entry",
    }
}

fn text(name: &str, value: &str) -> pb::NamedValue {
    pb::NamedValue {
        name: name.to_string(),
        value: Some(pb::Value { kind: Some(pb::value::Kind::Text(value.to_string())) }),
    }
}

async fn run(cases: &CaseService, order: Order) -> Result<pb::CaseView, tonic::Status> {
    let reply = match order {
        Order::Create { name } => {
            cases.create_case(Request::new(pb::CreateCaseRequest { fields: vec![text("name", &name)] }))
        }
        Order::Set { case, field, value } => {
            cases.set_fields(Request::new(pb::SetFieldsRequest { case_id: case, fields: vec![text(&field, &value)] }))
        }
        Order::Archive { case } => cases.archive_case(Request::new(pb::CaseRef { case_id: case })),
        Order::Delete { case } => cases.delete_case(Request::new(pb::CaseRef { case_id: case })),
        Order::AddEntry { case, note } => cases.add_entry(Request::new(pb::EntryRequest {
            case_id: case,
            entry_id: String::new(),
            fields: vec![text("note", &note)],
        })),
    };
    Ok(reply.await?.into_inner())
}
