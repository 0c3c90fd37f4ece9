//! Crash test: a child process appends in a loop and reports each acknowledged seq; it is killed
//! with SIGKILL at random moments. After each kill the store must reopen, every chain must verify,
//! and every acknowledged seq must be present.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use bytes::Bytes;
use casesync_engine::model::event::{BodyEncoding, SignedEvent};
use casesync_engine::model::ids::EventId;

use crate::support::*;

/// Set (to a store's directory) only in the child process a crash test spawns of itself.
const CHILD_ENV: &str = "CASESYNC_CRASH_CHILD_DIR";

/// The child's part of [`sigkill_at_random_moments_loses_nothing_acknowledged`]: appends batches
/// of events and reports each acknowledged seq until it is killed.
fn append_until_killed(dir: &Path) -> ! {
    let store = open(dir);
    let key = device(9);
    let mut stdout = std::io::stdout();
    for round in 0u64.. {
        let size = 1 + (round % 7) as usize * 13;
        let bodies = (0..size).map(|i| (BodyEncoding::Sealed, Bytes::from(vec![i as u8; 200]))).collect();
        let (events, _) = store.append(&SPACE, &key, round, bodies).unwrap();
        let last = events.last().unwrap().header.seq;
        writeln!(stdout, "ack {last}").unwrap();
        stdout.flush().unwrap();
    }
    unreachable!("appends until killed")
}

/// Runs itself again as a child process (with [`CHILD_ENV`] set: see
/// [`append_until_killed`]) and kills the child at random moments.
#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    const TEST: &str = "crash::sigkill_at_random_moments_loses_nothing_acknowledged";
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        append_until_killed(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SeededRng::from_env("CRASH_SEED", 0x5eed_cafe);
    let mut acknowledged = 0u64;
    for kill in 0..20 {
        let acks_before_kill = 1 + rng.below(40);
        let last_ack = run_child_and_kill(TEST, CHILD_ENV, dir.path(), acks_before_kill, kill);
        acknowledged = acknowledged.max(last_ack);

        let store = open(dir.path());
        let head = store.vector(&SPACE).get(&device(9).author());
        assert!(head >= acknowledged, "kill {kill}: acknowledged seq {acknowledged} lost (head {head})");
        let mut prev = EventId::ZERO;
        let mut count = 0;
        for item in store.events_after(&SPACE, &Default::default()) {
            let (_, seq, message) = item.unwrap();
            let event = SignedEvent::from_wire(message).unwrap();
            assert_eq!(event.header.seq, seq);
            assert_eq!(event.header.prev, prev, "kill {kill}: chain broken at seq {seq}");
            event.verify_signature().unwrap();
            prev = event.link;
            count += 1;
        }
        assert_eq!(count, head);
    }
}

/// Set (to a directory holding `source` and `target` stores) only in the child process the bulk
/// crash test spawns of itself.
const BULK_CHILD_ENV: &str = "CASESYNC_BULK_CRASH_CHILD_DIR";

/// A source store with `cases` cases, each created and then changed by two devices in turn.
fn busy_source(dir: &Path, cases: u8) {
    use casesync_engine::commands::Command;
    use casesync_engine::model::ids::CaseId;
    use casesync_engine::model::operation::FieldValue;
    let store = open(dir);
    let keys = [device(1), device(2)];
    for round in 0..12u8 {
        for n in 0..cases {
            let key = &keys[usize::from(n.wrapping_add(round)) % 2];
            let case = CaseId([n; 16]);
            let command = if round == 0 {
                Command::CreateCase { id: case, fields: vec![] }
            } else {
                let field = format!("f{}", round % 3);
                Command::SetFields { case, fields: vec![(field, FieldValue::Text(format!("{round}-{n}")))] }
            };
            store.execute(&SPACE, key, u64::from(round) * 1000 + u64::from(n), command).unwrap();
        }
    }
}

/// The child's part of [`sigkill_during_a_bulk_catch_up_leaves_views_equal_to_the_log`]: a bulk
/// catch-up from `source` into `target` in batches of 9, holding 4 cases (so deltas are spilled
/// all the time), reporting the events held after each batch; then waits to be killed without
/// ending the catch-up.
fn catch_up_in_bulk_until_killed(dir: &Path) -> ! {
    let source = open(&dir.join("source"));
    let target = open(&dir.join("target"));
    target.begin_bulk_catch_up_holding(4, false);
    let events: Vec<_> = source.events_after(&SPACE, &target.vector(&SPACE)).map(|r| r.unwrap().2).collect();
    let mut stdout = std::io::stdout();
    for batch in events.chunks(9) {
        let report = target.ingest(&SPACE, batch.to_vec()).unwrap();
        assert!(report.rejected.is_empty());
        writeln!(stdout, "ack {}", target.vector(&SPACE).total()).unwrap();
        stdout.flush().unwrap();
    }
    writeln!(stdout, "caught up").unwrap();
    stdout.flush().unwrap();
    loop {
        std::thread::park();
    }
}

/// A bulk catch-up writes its spilled deltas without the WAL; killed at any moment, the store
/// must reopen with every acknowledged event and views equal to a fresh fold of its log (the
/// lagging watermark makes the open rebuild them), and finishing the catch-up afterwards must
/// give the source's state hash.
///
/// Runs itself again as a child process (with [`BULK_CHILD_ENV`] set: see
/// [`catch_up_in_bulk_until_killed`]) and kills the child at random moments.
#[test]
fn sigkill_during_a_bulk_catch_up_leaves_views_equal_to_the_log() {
    use casesync_engine::model::state_hash::StateHasher;
    const TEST: &str = "crash::sigkill_during_a_bulk_catch_up_leaves_views_equal_to_the_log";
    if let Ok(dir) = std::env::var(BULK_CHILD_ENV) {
        catch_up_in_bulk_until_killed(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    busy_source(&dir.path().join("source"), 60);
    let source_hash = open(&dir.path().join("source")).state_hash(&SPACE).unwrap();
    let mut rng = SeededRng::from_env("CRASH_SEED", 0xb01c_cafe);
    for kill in 0..4 {
        if dir.path().join("target").exists() {
            std::fs::remove_dir_all(dir.path().join("target")).unwrap();
        }
        let acks_before_kill = 1 + rng.below(70); // the log is 720 events: 80 batches
        let acknowledged = run_child_and_kill(TEST, BULK_CHILD_ENV, dir.path(), acks_before_kill, kill);

        let target = open(&dir.path().join("target"));
        let held = target.vector(&SPACE).total();
        assert!(held >= acknowledged, "kill {kill}: {acknowledged} events acknowledged, {held} stored");
        assert_eq!(target.projections_behind(&SPACE).unwrap(), 0, "kill {kill}: the open completes the views");
        let fresh = StateHasher::of(&target.fold_log(&SPACE, |_| true).unwrap().into_sorted_cases());
        assert_eq!(target.state_hash(&SPACE).unwrap(), fresh, "kill {kill}: views differ from the log");

        // Finish the catch-up in bulk again: the source's views.
        let source = open(&dir.path().join("source"));
        target.begin_bulk_catch_up_holding(4, false);
        let rest: Vec<_> = source.events_after(&SPACE, &target.vector(&SPACE)).map(|r| r.unwrap().2).collect();
        for batch in rest.chunks(9) {
            assert!(target.ingest(&SPACE, batch.to_vec()).unwrap().rejected.is_empty());
        }
        assert_eq!(target.end_bulk_catch_up().unwrap(), 0, "kill {kill}: no rebuild needed");
        assert_eq!(target.state_hash(&SPACE).unwrap(), source_hash, "kill {kill}");
    }
}

/// Runs the test `test` of this binary again as a child process with `env` set to `dir` (so it
/// plays its child's part), reads its "ack N" lines until `acks` of them came, kills it with
/// SIGKILL and returns the last N.
fn run_child_and_kill(test: &str, env: &str, dir: &Path, acks: u64, kill: u32) -> u64 {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (mut seen, mut last) = (0, 0u64);
    for line in BufReader::new(stdout).lines() {
        if let Some(n) = line.unwrap().strip_prefix("ack ") {
            last = n.trim().parse().unwrap();
            seen += 1;
            if seen >= acks {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL on unix
    child.wait().unwrap();
    assert!(seen >= acks, "child {kill} stopped early");
    last
}
