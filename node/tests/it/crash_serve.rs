//! SIGKILL of the real `casesync serve` process, and of `replay-tool import`, at random moments:
//! while several `casesync` clients write through the daemon's local API, while it receives a
//! peer's events, during a bulk catch-up, and during an import. After each kill the store
//! reopens, `replay-tool verify` passes, every write a client was told succeeded is there, and
//! the interrupted sync or import completes on the next try with the peer's state hash.
//!
//! A moment is a seeded random delay after a signal the process gives (a line on its stderr),
//! bounded by how long the interrupted work takes; the seed is printed (`CRASH_SERVE_SEED`
//! replays it). The data dirs live in `/dev/shm` where there is one: a SIGKILL loses what the
//! process had not handed to the kernel, whatever the medium, and the kills are what is tested.
//! `replay-tool` is the binary of the same build, beside `casesync`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use casesync_engine::commands::Command;
use casesync_engine::model::ids::CaseId;
use casesync_engine::model::membership::Role;
use casesync_engine::model::operation::FieldValue;
use casesync_engine::testkit::{copy_dir, SeededRng};
use casesync_node::Node;
use serde_json::Value;

use crate::support::*;

/// The events the peer holds before the kills start: enough for a bulk catch-up (10,000 and
/// more than the receiver holds).
const BULK_EVENTS: u64 = 10_100;

/// The events the peer writes after that, which an incoming sync brings (fewer than a bulk
/// catch-up needs).
const SYNC_EVENTS: u64 = 9_500;

/// A running `casesync serve` (or `replay-tool import`) and the lines of its stderr; killed with
/// SIGKILL when dropped.
struct Victim {
    child: Child,
    lines: Receiver<String>,
}

impl Victim {
    fn spawn(mut command: Process) -> Victim {
        let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Victim { child, lines }
    }

    /// Waits (bounded) for a line containing `needle`: the start signal.
    fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(line) => seen.push(line),
                Err(error) => {
                    panic!("no line with {needle:?} within the deadline ({error:?}) in:\n{}", seen.join("\n"))
                }
            }
        }
    }

    /// Kills the process `delay` from now (its lines read meanwhile); whether it had ended by
    /// itself before.
    fn kill_after(mut self, delay: Duration) -> bool {
        let at = Instant::now() + delay;
        loop {
            match self.lines.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let ended = self.child.try_wait().unwrap().is_some();
        // `Child::kill` is SIGKILL on Unix.
        let _ = self.child.kill();
        self.child.wait().unwrap();
        ended
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `casesync serve` on `data`, syncing with `peers`, its info lines on stderr.
fn serve(data: &Path, peers: &[&str]) -> Victim {
    let mut command = Process::new(env!("CARGO_BIN_EXE_casesync"));
    command.env("CASESYNC_PIN", TEST_PIN).env("CASESYNC_LOG", "casesync_node=info").arg("--data").arg(data);
    command.args(["serve", "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"]);
    for peer in peers {
        command.args(["--peer", peer]);
    }
    let victim = Victim::spawn(command);
    victim.wait_for("serving peers on");
    victim
}

/// `replay-tool` of this build.
fn replay_tool() -> Process {
    let path = Path::new(env!("CARGO_BIN_EXE_casesync")).with_file_name("replay-tool");
    assert!(path.exists(), "{} is missing: build it first (cargo build -p replay-tool)", path.display());
    let mut command = Process::new(path);
    command.env("CASESYNC_PIN", TEST_PIN).arg("--json");
    command
}

/// `replay-tool verify` passes: exit 0, every chain intact and the views equal to a fresh
/// replay; or, after a kill during a bulk catch-up or an import (with `lagging`), exit 4: no
/// damage, and views that say they lag the log (the next open rebuilds them). Returns its report of the space (`events`, `projections`, ...).
fn verify(data: &Path, lagging: bool, context: &str) -> Value {
    let out = replay_tool().arg("verify").arg("--data").arg(data).output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let space = report["spaces"][0].clone();
    assert_eq!(report["ok"], true, "{context}: verify {report:#} {stderr}");
    assert_eq!(space["faults"], serde_json::json!([]), "{context}: {report:#}");
    match (out.status.code(), lagging) {
        (Some(0), _) => assert_eq!(space["projections"]["equal"], true, "{context}: {report:#}"),
        (Some(4), true) => assert_eq!(space["projections"]["lagging"], true, "{context}: {report:#}"),
        (code, _) => panic!("{context}: verify exit {code:?}: {report:#} {stderr}"),
    }
    space
}

fn json(out: &std::process::Output, context: &str) -> Value {
    assert!(out.status.success(), "{context}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A directory for the data dirs: in `/dev/shm` where there is one.
fn scratch_dir() -> tempfile::TempDir {
    match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    }
}

/// The state hash and events of a data dir, opened in-process (no daemon on it).
fn state_of(data: &Path) -> (String, u64) {
    let opened = casesync_node::data_dir::open(data, false).unwrap();
    (opened.store.state_hash(&opened.space).unwrap(), opened.store.vector(&opened.space).total())
}

/// `count` more case events by the peer, from four threads (their commands share commits).
fn peer_writes(node: &Node, first: u64, count: u64) {
    let shared = node.shared();
    std::thread::scope(|scope| {
        for thread in 0..4 {
            scope.spawn(move || {
                for n in (first + thread..first + count).step_by(4) {
                    let case = CaseId(*blake3::hash(&n.to_le_bytes()).as_bytes().first_chunk().unwrap());
                    let fields = vec![("name".into(), FieldValue::Text(format!("client {n}")))];
                    let command = Command::CreateCase { id: case, fields };
                    shared.store.execute(&shared.space, &shared.identity.key, 1_000 + n, command).unwrap();
                }
            });
        }
    });
}

/// Where a kill fell in the work it interrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Moment {
    /// Nothing of the work was done yet.
    Before,
    /// Some of it was done, not all.
    During,
    /// All of it was done.
    After,
}

/// Random kill moments: a seeded delay below a bound that follows the length of the work (a
/// kill after its end lowers the bound, one before its start raises it), so that most kills
/// fall during the work on a fast machine and on a slow one alike.
struct Moments {
    bound_ms: u64,
}

impl Moments {
    fn next(&self, rng: &mut SeededRng) -> Duration {
        Duration::from_millis(rng.below(self.bound_ms.max(1)))
    }

    fn learn(&mut self, moment: Moment) {
        match moment {
            Moment::Before => self.bound_ms = self.bound_ms * 3 / 2 + 1,
            Moment::During => {}
            Moment::After => self.bound_ms = (self.bound_ms * 2 / 3).max(5),
        }
    }
}

/// What the kills of one scenario did.
#[derive(Default, Debug)]
struct Kills {
    kills: u32,
    before: u32,
    /// Kills that caught the work under way.
    during: u32,
    after: u32,
    acknowledged: u64,
}

impl Kills {
    fn count(&mut self, moment: Moment) {
        self.kills += 1;
        match moment {
            Moment::Before => self.before += 1,
            Moment::During => self.during += 1,
            Moment::After => self.after += 1,
        }
    }
}

fn moment(before: u64, after_kill: u64, whole: u64) -> Moment {
    match after_kill {
        n if n <= before => Moment::Before,
        n if n >= whole => Moment::After,
        _ => Moment::During,
    }
}

/// Several clients write through the daemon's local API (`casesync case add` and `case set`,
/// each a process) until it is killed; every write that returned success is in the store after
/// the kill.
fn kill_during_local_writes(data: &Path, rng: &mut SeededRng, rounds: u32) -> Kills {
    let mut kills = Kills::default();
    for round in 0..rounds {
        let daemon = serve(data, &[]);
        let stop = AtomicBool::new(false);
        let acked: Mutex<Vec<(String, String, String)>> = Mutex::new(Vec::new());
        let delay = Duration::from_millis(100 + rng.below(900));
        let ended = std::thread::scope(|scope| {
            for client in 0..3 {
                let (stop, acked) = (&stop, &acked);
                scope.spawn(move || {
                    let mut own: Option<String> = None;
                    for n in 0.. {
                        if stop.load(Ordering::Acquire) {
                            return;
                        }
                        let (field, value) = (format!("f{n}"), format!("{round}-{client}-{n}"));
                        let args: Vec<String> = match &own {
                            Some(case) if n % 2 == 1 => vec!["set".into(), case.clone(), format!("{field}={value}")],
                            _ => vec!["add".into(), format!("name={value}")],
                        };
                        let mut args: Vec<&str> =
                            std::iter::once("case").chain(args.iter().map(String::as_str)).collect();
                        args.push("--json");
                        let out = casesync(data, &args);
                        if !out.status.success() {
                            continue;
                        }
                        let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
                        let case = reply["case_id"].as_str().unwrap().to_string();
                        let field = if args[1] == "add" { "name".to_string() } else { field };
                        acked.lock().unwrap().push((case.clone(), field, value));
                        own = Some(case);
                    }
                });
            }
            let ended = daemon.kill_after(delay);
            stop.store(true, Ordering::Release);
            ended
        });
        assert!(!ended, "round {round}: the daemon ended by itself");
        let context = format!("local writes, kill {round} after {delay:?}");
        verify(data, false, &context);
        let opened = casesync_node::data_dir::open(data, false).unwrap();
        let acked = acked.into_inner().unwrap();
        for (case, field, value) in &acked {
            let view = opened.store.case_view(&opened.space, &CaseId::from_hex(case).unwrap()).unwrap();
            let stored = view.as_ref().and_then(|v| v.field(field)).cloned();
            assert_eq!(stored, Some(FieldValue::Text(value.clone())), "{context}: acknowledged {field}={value} lost");
        }
        kills.count(if acked.is_empty() { Moment::Before } else { Moment::During });
        kills.acknowledged += acked.len() as u64;
    }
    kills
}

/// The receiver `data` runs `casesync serve` with the peer at `url` and is killed `delay` after
/// `signal` (or after it says it serves); then it verifies, the next try (`casesync sync`)
/// completes, and it ends with the peer's state hash.
fn kill_during_sync(
    data: &Path,
    url: &str,
    peer: &Node,
    signal: Option<&str>,
    delay: Duration,
    context: &str,
) -> Moment {
    let (held_before, target) = (state_of(data).1, peer.shared().store.vector(&peer.shared().space).total());
    let daemon = serve(data, &[url]);
    if let Some(signal) = signal {
        daemon.wait_for(signal);
    }
    assert!(!daemon.kill_after(delay), "{context}: the daemon ended by itself");
    let report = verify(data, true, context);
    let (held, lagging) = (report["events"].as_u64().unwrap(), report["projections"]["lagging"] == true);
    let next_try = json(&casesync(data, &["sync", "--peer", url, "--json"]), context);
    assert_eq!(next_try["results"][0]["error"], "", "{context}: {next_try}");
    let (hash, events) = state_of(data);
    assert_eq!(events, target, "{context}: the next try brings every event");
    assert_eq!(hash, state_hash(peer), "{context}: the peer's state hash");
    match lagging {
        // A bulk catch-up whose end (the views) the kill prevented.
        true => Moment::During,
        false => moment(held_before, held, target),
    }
}

/// Replaces the data dir `target` with a copy of `base` (taken from the same path, so that it
/// is the same device, not a copy that continues as a new one).
fn restore(base: &Path, target: &Path) {
    if target.exists() {
        std::fs::remove_dir_all(target).unwrap();
    }
    copy_dir(base, target);
}

/// `replay-tool import` of `backup` into `target` (restored from `base`) killed `delay` after it
/// starts; then the store verifies, still holds its own case, and the next import ends with
/// `expected` as its state hash.
fn kill_during_import(
    base: &Path,
    target: &Path,
    backup: &Path,
    own: CaseId,
    delay: Duration,
    expected: &str,
) -> Moment {
    let context = format!("import killed after {delay:?}");
    restore(base, target);
    let held_before = state_of(target).1;
    let mut command = replay_tool();
    command.arg("import").arg("--data").arg(target).arg(backup);
    let ended = Victim::spawn(command).kill_after(delay);
    let held = verify(target, true, &context)["events"].as_u64().unwrap();
    let opened = casesync_node::data_dir::open(target, false).unwrap();
    assert!(opened.store.case_view(&opened.space, &own).unwrap().is_some(), "{context}: the store's own case");
    drop(opened);
    let again = replay_tool().arg("import").arg("--data").arg(target).arg(backup).output().unwrap();
    let report = json(&again, &context);
    assert_eq!(report["state_hash"], expected, "{context}: {report}");
    let whole = report["vector"].as_object().map(|v| v.values().filter_map(Value::as_u64).sum()).unwrap_or(0);
    assert_eq!(verify(target, false, &context)["projections"]["replayed_hash"], expected, "{context}");
    if ended {
        return Moment::After;
    }
    moment(held_before, held, whole)
}

#[test]
fn sigkill_of_serve_and_import_at_random_moments_loses_nothing_acknowledged() {
    use_test_pin();
    let started = Instant::now();
    let mut rng = SeededRng::from_env("CRASH_SERVE_SEED", 0x0c4a_5e5e);
    let root = scratch_dir();
    let roles = [("office", Role::Admin), ("laptop", Role::Writer), ("tablet", Role::Writer), ("desk", Role::Writer)];
    let dirs = casesync_node::demo::create_devices(root.path(), &roles).unwrap();
    let [office, laptop, tablet, desk]: [PathBuf; 4] = dirs.try_into().unwrap();
    let pristine = root.path().join("tablet-pristine");
    copy_dir(&tablet, &pristine);

    // The peer's events, and a backup of them, before its node starts.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let peer = runtime.block_on(start(&office, vec![]));
    peer_writes(&peer, 0, BULK_EVENTS);
    runtime.block_on(peer.shutdown());
    let backup = root.path().join("office.backup");
    let export = replay_tool().arg("export").arg("--data").arg(&office).arg("--out").arg(&backup).output().unwrap();
    json(&export, "export");
    let peer = runtime.block_on(start(&office, vec![]));
    let url = peer.sync_url();
    println!("setup: {:?}", started.elapsed());

    // 1. Local writes by three clients.
    let phase = Instant::now();
    let local = kill_during_local_writes(&desk, &mut rng, 14);
    println!("local writes: {local:?} in {:?}", phase.elapsed());

    // 2. Incoming syncs of a few thousand events, each from the receiver's state after a first
    // full sync (not killed).
    let phase = Instant::now();
    json(&casesync(&laptop, &["sync", "--peer", &url, "--json"]), "first sync");
    let synced = root.path().join("laptop-synced");
    copy_dir(&laptop, &synced);
    peer_writes(&peer, BULK_EVENTS, SYNC_EVENTS);
    let (mut sync, mut moments) = (Kills::default(), Moments { bound_ms: 300 });
    for round in 0..14 {
        restore(&synced, &laptop);
        let delay = moments.next(&mut rng);
        let context = format!("sync, kill {round} after {delay:?}");
        let moment = kill_during_sync(&laptop, &url, &peer, None, delay, &context);
        moments.learn(moment);
        sync.count(moment);
    }
    println!("incoming syncs: {sync:?} in {:?}", phase.elapsed());

    // 3. Bulk catch-ups, each from the receiver's first state.
    let phase = Instant::now();
    let (mut bulk, mut moments) = (Kills::default(), Moments { bound_ms: 2_000 });
    for round in 0..12 {
        restore(&pristine, &tablet);
        let delay = moments.next(&mut rng);
        let context = format!("bulk catch-up, kill {round} after {delay:?}");
        let moment = kill_during_sync(&tablet, &url, &peer, Some("catching up in bulk"), delay, &context);
        moments.learn(moment);
        bulk.count(moment);
    }
    println!("bulk catch-ups: {bulk:?} in {:?}", phase.elapsed());
    runtime.block_on(peer.shutdown());

    // 4. Imports of the backup into a store with a case of its own.
    let phase = Instant::now();
    restore(&pristine, &tablet);
    let own = casesync(&tablet, &["case", "add", "name=own", "--json"]);
    let own = CaseId::from_hex(json(&own, "own case")["case_id"].as_str().unwrap()).unwrap();
    let base = root.path().join("tablet-own");
    copy_dir(&tablet, &base);
    let whole = Instant::now();
    let report = json(&replay_tool().arg("import").arg("--data").arg(&tablet).arg(&backup).output().unwrap(), "import");
    let (duration, expected) = (whole.elapsed(), report["state_hash"].as_str().unwrap().to_string());
    let (mut import, mut moments) = (Kills::default(), Moments { bound_ms: duration.as_millis() as u64 });
    for _ in 0..12 {
        let delay = moments.next(&mut rng);
        let moment = kill_during_import(&base, &tablet, &backup, own, delay, &expected);
        moments.learn(moment);
        import.count(moment);
    }
    println!("imports ({duration:?} each without a kill): {import:?} in {:?}", phase.elapsed());

    let total = local.kills + sync.kills + bulk.kills + import.kills;
    println!("{total} kills in {:?}", started.elapsed());
    assert!(total >= 50);
    assert!(local.acknowledged > 0, "clients were told their writes succeeded");
    for (name, kills) in [("local writes", &local), ("bulk", &bulk)] {
        assert!(kills.during > 0, "{name}: no kill caught the work under way: {kills:?}");
    }
    // A sync or an import lands in a few commits only (batches are joined while one is
    // written): a kill between two of them is rarer, but some kills must come before its end.
    for (name, kills) in [("syncs", &sync), ("imports", &import)] {
        assert!(kills.after < kills.kills, "{name}: every kill came after the work ended: {kills:?}");
    }
}
