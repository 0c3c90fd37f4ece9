//! The five floods a hostile member sends a target node, each until it is told to stop, its cap
//! is reached or its deadline passes, whichever comes first.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use casesync_engine::model::event::SignedEvent;
use casesync_engine::model::ids::{AuthorId, EventId, SpaceId};
use casesync_engine::model::limits::{EVENT_BYTES_MAX, FIELDS_PER_OP_MAX};
use casesync_engine::model::operation::{FieldWrite, Operation};
use casesync_proto::v1 as pb;
use casesync_proto::v1::sync_client::SyncClient;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::member::{batch, client_as, filler, hostile_case, hostile_key, new_field, Chain, Refusals};

/// Which flood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flood {
    /// Events near `EVENT_BYTES_MAX` on many concurrent Push streams, one key each.
    LargeEvents,
    /// Events setting 256 new field names each, all in one case.
    Fields,
    /// Many signed events at seqs the author already used, each followed by more.
    Forks,
    /// Full batches of events the target holds, pushed again and again.
    Replays,
    /// TCP connections opened and held without a TLS handshake, past the node's limit.
    Connections,
}

impl Flood {
    /// Every flood, in the order they run.
    pub const ALL: [Flood; 5] = [Flood::LargeEvents, Flood::Fields, Flood::Forks, Flood::Replays, Flood::Connections];

    /// Its name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Flood::LargeEvents => "large-events",
            Flood::Fields => "fields",
            Flood::Forks => "forks",
            Flood::Replays => "replays",
            Flood::Connections => "connections",
        }
    }

    /// Hostile keys it writes with.
    pub fn keys(self, sizes: &FloodSizes) -> Vec<usize> {
        match self {
            Flood::LargeEvents => (0..sizes.large_streams).collect(),
            Flood::Fields | Flood::Forks | Flood::Replays => vec![0],
            Flood::Connections => Vec::new(),
        }
    }
}

/// How much each flood may send at most.
#[derive(Clone, Copy, Debug)]
pub struct FloodSizes {
    /// Concurrent Push streams of large events (one hostile key each).
    pub large_streams: usize,
    /// Large events per stream.
    pub large_events_per_stream: u64,
    /// Events of 256 new fields each.
    pub field_events: u64,
    /// Pushes of a forked event (each followed by three events on the fork).
    pub forks: u64,
    /// Batches of 1024 events pushed once, then replayed.
    pub replay_batches: usize,
    /// Concurrent replaying streams.
    pub replay_streams: usize,
    /// Replays of every batch per stream.
    pub replay_rounds: u64,
    /// TCP connections held open.
    pub connections: usize,
}

impl FloodSizes {
    /// The measured sizes, or small ones for tests.
    pub fn new(quick: bool) -> FloodSizes {
        if quick {
            FloodSizes {
                large_streams: 4,
                large_events_per_stream: 3,
                field_events: 16,
                forks: 40,
                replay_batches: 2,
                replay_streams: 2,
                replay_rounds: 4,
                connections: 300,
            }
        } else {
            FloodSizes {
                large_streams: 32,
                large_events_per_stream: 16,
                field_events: 2048,
                forks: 2000,
                replay_batches: 8,
                replay_streams: 8,
                replay_rounds: 500,
                connections: 512,
            }
        }
    }
}

/// Shared between a flood's tasks and the scenario: when to stop, and how far it got.
#[derive(Default)]
pub struct Control {
    stop: AtomicBool,
    /// Batches handed to a stream (or connections opened).
    under_way: AtomicU64,
    outcome: Mutex<FloodOutcome>,
}

impl Control {
    /// Tells every task of the flood to stop after what it is sending.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    fn stopped(&self, deadline: Instant) -> bool {
        self.stop.load(Ordering::SeqCst) || Instant::now() > deadline
    }

    /// Batches sent (or connections opened) so far.
    pub fn under_way(&self) -> u64 {
        self.under_way.load(Ordering::SeqCst)
    }

    fn add(&self, f: impl FnOnce(&mut FloodOutcome)) {
        f(&mut self.outcome.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn sent(&self, events: &[SignedEvent]) {
        let bytes = events.iter().map(|e| (e.bytes.len() + e.signature.len()) as u64).sum::<u64>();
        self.add(|o| {
            o.events_sent += events.len() as u64;
            o.bytes_sent += bytes;
        });
        self.under_way.fetch_add(1, Ordering::SeqCst);
    }

    fn answered(&self, answer: Result<pb::PushReply, tonic::Status>) {
        self.add(|o| {
            o.pushes += 1;
            match answer {
                Ok(reply) => {
                    o.accepted += reply.accepted;
                    o.duplicates += reply.duplicates;
                }
                Err(status) => o.refusals.note(&status),
            }
        });
    }
}

/// What a flood sent and how the target answered.
#[derive(Clone, Debug, Default)]
pub struct FloodOutcome {
    /// Events sent.
    pub events_sent: u64,
    /// Their bytes (events and signatures).
    pub bytes_sent: u64,
    /// Push calls made.
    pub pushes: u64,
    /// Events the target's replies counted as accepted.
    pub accepted: u64,
    /// Events the target's replies counted as already held.
    pub duplicates: u64,
    /// Refused calls and connections that failed.
    pub refusals: Refusals,
    /// TCP connections opened.
    pub connections_opened: u64,
    /// Connections the target closed within a second.
    pub connections_closed_at_once: u64,
    /// Connections the target closed later (the handshake timeout).
    pub connections_closed_later: u64,
    /// Connections open at once, at most.
    pub connections_held_max: u64,
    /// From start to the end of its last task.
    pub seconds: f64,
}

/// Runs `flood` against the node at `url` until `control` says stop, its caps are reached or
/// `deadline` passes; returns what it did.
pub async fn run(
    flood: Flood,
    url: String,
    space: SpaceId,
    sizes: FloodSizes,
    control: Arc<Control>,
    deadline: Instant,
) -> FloodOutcome {
    let started = Instant::now();
    let result = match flood {
        Flood::LargeEvents => large_events(&url, space, sizes, &control, deadline).await,
        Flood::Fields => fields(&url, space, sizes, &control, deadline).await,
        Flood::Forks => forks(&url, space, sizes, &control, deadline).await,
        Flood::Replays => replays(&url, space, sizes, &control, deadline).await,
        Flood::Connections => {
            connections(&url, sizes, &control, deadline).await;
            Ok(())
        }
    };
    if let Err(error) = result {
        control.add(|o| o.refusals.note(&tonic::Status::unknown(format!("{error:#}"))));
    }
    let mut outcome = control.outcome.lock().unwrap_or_else(|p| p.into_inner()).clone();
    outcome.seconds = started.elapsed().as_secs_f64();
    outcome
}

/// One Push call streaming what `make` returns (on a blocking thread) until it returns `None`.
async fn push_made(
    mut client: SyncClient<Channel>,
    control: Arc<Control>,
    mut make: impl FnMut() -> anyhow::Result<Option<Vec<SignedEvent>>> + Send + 'static,
) {
    let (tx, rx) = mpsc::channel::<pb::EventBatch>(2);
    let maker = {
        let control = control.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            while let Some(events) = make()? {
                control.sent(&events);
                if tx.blocking_send(batch(&events)).is_err() {
                    break;
                }
            }
            Ok(())
        })
    };
    let answer = client.push(tonic::Request::new(ReceiverStream::new(rx))).await.map(|r| r.into_inner());
    control.answered(answer);
    match maker.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => control.add(|o| o.refusals.note(&tonic::Status::internal(format!("{error:#}")))),
        Err(error) => control.add(|o| o.refusals.note(&tonic::Status::internal(error.to_string()))),
    }
}

/// Largest text a large event carries: the rest of `EVENT_BYTES_MAX` holds the header, the
/// operation's framing and the seal.
const LARGE_TEXT_BYTES: usize = EVENT_BYTES_MAX - 1024;
/// Large events per message: as many as the node's sync message limit takes (2 MiB and 64 KiB).
const LARGE_EVENTS_PER_BATCH: u64 = 2;

async fn large_events(
    url: &str,
    space: SpaceId,
    sizes: FloodSizes,
    control: &Arc<Control>,
    deadline: Instant,
) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for index in 0..sizes.large_streams {
        let key = hostile_key(index);
        let client = client_as(url, &key).await?;
        let control_made = control.clone();
        let mut chain = Chain::new(key, space);
        let per_stream = sizes.large_events_per_stream;
        let make = move || -> anyhow::Result<Option<Vec<SignedEvent>>> {
            if chain.seq >= per_stream || control_made.stopped(deadline) {
                return Ok(None);
            }
            let count = LARGE_EVENTS_PER_BATCH.min(per_stream - chain.seq);
            let mut events = Vec::new();
            for _ in 0..count {
                let case = hostile_case(chain.key(), chain.seq);
                let text = filler(
                    &[chain.author().as_bytes().as_slice(), &chain.seq.to_be_bytes()].concat(),
                    LARGE_TEXT_BYTES,
                );
                let operation =
                    Operation::CreateCase { case, fields: std::iter::once(new_field("blob".into(), text)).collect() };
                events.push(chain.next(&operation)?);
            }
            Ok(Some(events))
        };
        tasks.push(tokio::spawn(push_made(client, control.clone(), make)));
    }
    for task in tasks {
        task.await?;
    }
    Ok(())
}

/// Events per message of the field flood (about 1 MiB).
const FIELD_EVENTS_PER_BATCH: u64 = 64;

async fn fields(
    url: &str,
    space: SpaceId,
    sizes: FloodSizes,
    control: &Arc<Control>,
    deadline: Instant,
) -> anyhow::Result<()> {
    let key = hostile_key(0);
    let client = client_as(url, &key).await?;
    let control_made = control.clone();
    let mut chain = Chain::new(key, space);
    let case = hostile_case(chain.key(), 0);
    let total = sizes.field_events;
    let make = move || -> anyhow::Result<Option<Vec<SignedEvent>>> {
        if chain.seq >= total || control_made.stopped(deadline) {
            return Ok(None);
        }
        let count = FIELD_EVENTS_PER_BATCH.min(total - chain.seq);
        let mut events = Vec::new();
        for _ in 0..count {
            let first = chain.seq * FIELDS_PER_OP_MAX as u64;
            let fields: Vec<FieldWrite> = (first..first + FIELDS_PER_OP_MAX as u64)
                .map(|n| new_field(format!("hostile-field-{n:010}"), format!("{n:016x}")))
                .collect();
            let operation = if chain.seq == 0 {
                Operation::CreateCase { case, fields: fields.into_iter().collect() }
            } else {
                Operation::SetFields { case, fields: fields.into_iter().collect() }
            };
            events.push(chain.next(&operation)?);
        }
        Ok(Some(events))
    };
    push_made(client, control.clone(), make).await;
    Ok(())
}

/// The genuine chain a forking author pushes first.
pub const FORK_CHAIN_EVENTS: u64 = 8;
/// Events on each fork (the forked event and those that follow it).
const FORK_RUN_EVENTS: u64 = 4;
/// Genuine events pushed after the forks.
const AFTER_FORK_EVENTS: u64 = 64;
/// Concurrent connections pushing forks.
const FORK_WORKERS: u64 = 4;

fn small_create(chain: &Chain, case: u64, text_bytes: usize) -> Operation {
    let seed = [chain.author().as_bytes().as_slice(), &case.to_be_bytes()].concat();
    Operation::CreateCase {
        case: hostile_case(chain.key(), case),
        fields: std::iter::once(new_field("name".into(), filler(&seed, text_bytes))).collect(),
    }
}

/// Pushes `batches` in one call and notes the answer.
async fn push_batches(client: &mut SyncClient<Channel>, control: &Control, batches: Vec<Vec<SignedEvent>>) {
    for events in &batches {
        control.sent(events);
    }
    let stream = tokio_stream::iter(batches.iter().map(|b| batch(b)).collect::<Vec<_>>());
    control.answered(client.push(tonic::Request::new(stream)).await.map(|r| r.into_inner()));
}

async fn forks(
    url: &str,
    space: SpaceId,
    sizes: FloodSizes,
    control: &Arc<Control>,
    deadline: Instant,
) -> anyhow::Result<()> {
    let key = hostile_key(0);
    let mut chain = Chain::new(key.clone(), space);
    let mut links = vec![EventId::ZERO];
    let mut genuine = Vec::new();
    for n in 0..FORK_CHAIN_EVENTS {
        genuine.push(chain.next(&small_create(&chain, n, 120))?);
        links.push(chain.prev);
    }
    let mut client = client_as(url, &key).await?;
    push_batches(&mut client, control, vec![genuine]).await;
    let links = Arc::new(links);
    let mut tasks = Vec::new();
    for worker in 0..FORK_WORKERS {
        let (key, links, control) = (key.clone(), links.clone(), control.clone());
        let mut client = client_as(url, &key).await?;
        tasks.push(tokio::spawn(async move {
            let mut variant = worker;
            while variant < sizes.forks && !control.stopped(deadline) {
                // A fork at seq 1..=8 (after the genuine event before it), then events on it.
                let seq = 1 + variant % FORK_CHAIN_EVENTS;
                let mut fork = Chain::new(key.clone(), space);
                (fork.seq, fork.prev) = (seq - 1, links[(seq - 1) as usize]);
                let events: anyhow::Result<Vec<SignedEvent>> = (0..FORK_RUN_EVENTS)
                    .map(|n| fork.next(&small_create(&fork, 1_000_000 + variant * FORK_RUN_EVENTS + n, 4096)))
                    .collect();
                push_batches(&mut client, &control, vec![events?]).await;
                variant += FORK_WORKERS;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    // Then the genuine chain goes on: the author is quarantined, so these wait.
    let after: anyhow::Result<Vec<SignedEvent>> =
        (0..AFTER_FORK_EVENTS).map(|n| chain.next(&small_create(&chain, FORK_CHAIN_EVENTS + n, 120))).collect();
    push_batches(&mut client, control, vec![after?]).await;
    Ok(())
}

/// Events per replayed batch (a full batch).
const REPLAY_BATCH_EVENTS: usize = 1024;

async fn replays(
    url: &str,
    space: SpaceId,
    sizes: FloodSizes,
    control: &Arc<Control>,
    deadline: Instant,
) -> anyhow::Result<()> {
    let key = hostile_key(0);
    let mut chain = Chain::new(key.clone(), space);
    let mut batches = Vec::new();
    for b in 0..sizes.replay_batches {
        let events: anyhow::Result<Vec<SignedEvent>> = (0..REPLAY_BATCH_EVENTS)
            .map(|n| chain.next(&small_create(&chain, (b * REPLAY_BATCH_EVENTS + n) as u64, 120)))
            .collect();
        batches.push(events?);
    }
    let mut client = client_as(url, &key).await?;
    push_batches(&mut client, control, batches.clone()).await;
    let batches = Arc::new(batches);
    let mut tasks = Vec::new();
    for _ in 0..sizes.replay_streams {
        let (batches, control) = (batches.clone(), control.clone());
        let mut client = client_as(url, &key).await?;
        tasks.push(tokio::spawn(async move {
            let mut round = 0;
            while round < sizes.replay_rounds && !control.stopped(deadline) {
                push_batches(&mut client, &control, batches.as_ref().clone()).await;
                round += 1;
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    Ok(())
}

/// Pause before a closed connection is opened again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

async fn connections(url: &str, sizes: FloodSizes, control: &Arc<Control>, deadline: Instant) {
    let address = url.trim_start_matches("http://").trim_start_matches("https://").to_string();
    let held = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..sizes.connections {
        let (address, control, held) = (address.clone(), control.clone(), held.clone());
        tasks.push(tokio::spawn(async move {
            while !control.stopped(deadline) {
                let Ok(mut tcp) = tokio::net::TcpStream::connect(&address).await else {
                    control.add(|o| o.refusals.note(&tonic::Status::unavailable("TCP connect failed")));
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                };
                let opened = Instant::now();
                let now_held = held.fetch_add(1, Ordering::SeqCst) + 1;
                control.add(|o| {
                    o.connections_opened += 1;
                    o.connections_held_max = o.connections_held_max.max(now_held);
                });
                control.under_way.fetch_add(1, Ordering::SeqCst);
                // Held, silent, until the target closes it or the flood ends (checked every
                // 100 ms, and never past the deadline).
                let mut closed = false;
                while !closed && !control.stopped(deadline) {
                    let mut byte = [0u8; 1];
                    let read = tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut byte)).await;
                    closed = matches!(read, Ok(Ok(0) | Err(_)));
                }
                held.fetch_sub(1, Ordering::SeqCst);
                if closed {
                    let at_once = opened.elapsed() < Duration::from_secs(1);
                    control.add(|o| {
                        if at_once {
                            o.connections_closed_at_once += 1;
                        } else {
                            o.connections_closed_later += 1;
                        }
                    });
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// Hostile authors of `flood` (whose events the target's heads count as the flood's).
pub fn authors(flood: Flood, sizes: &FloodSizes) -> Vec<AuthorId> {
    flood.keys(sizes).into_iter().map(|i| hostile_key(i).author()).collect()
}
