//! Crash test: a child process appends in a loop and reports each acknowledged seq; it is killed
//! with SIGKILL at random moments. After each kill the store must reopen, every chain must verify,
//! and every acknowledged seq must be present.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use bytes::Bytes;
use casesync_engine::model::event::{BodyEncoding, SignedEvent};
use casesync_engine::model::ids::EventId;

use crate::support::*;

const CHILD_ENV: &str = "CASESYNC_CRASH_CHILD_DIR";

/// Runs only as the child (when the parent sets the env var): appends forever.
#[test]
fn child_appends_until_killed() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let store = open(std::path::Path::new(&dir));
    let key = device(9);
    let mut stdout = std::io::stdout();
    for round in 0u64..1_000_000 {
        let size = 1 + (round % 7) as usize * 13;
        let bodies = (0..size).map(|i| (BodyEncoding::Sealed, Bytes::from(vec![i as u8; 200]))).collect();
        let (events, _) = store.append(&SPACE, &key, round, bodies).unwrap();
        let last = events.last().unwrap().header.seq;
        writeln!(stdout, "ack {last}").unwrap();
        stdout.flush().unwrap();
    }
}

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let seed: u64 = std::env::var("CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_cafe);
    println!("crash test seed {seed} (set CRASH_SEED to replay)");
    let mut rng = seed;
    let mut acknowledged = 0u64;
    for kill in 0..20 {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let acks_before_kill = 1 + (rng >> 40) % 40;
        let last_ack =
            run_child_and_kill("crash::child_appends_until_killed", CHILD_ENV, dir.path(), acks_before_kill, kill);
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

const BULK_CHILD_ENV: &str = "CASESYNC_BULK_CRASH_CHILD_DIR";

/// A source store with `cases` cases, each created and then changed by two devices in turn.
fn busy_source(dir: &std::path::Path, cases: u8) {
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

/// Runs only as the child (when the parent sets the env var): a bulk catch-up from `source`
/// into `target` in batches of 9, holding 4 cases (so deltas are spilled all the time), then
/// waits to be killed without ending the catch-up.
#[test]
fn child_catches_up_in_bulk_until_killed() {
    let Ok(dir) = std::env::var(BULK_CHILD_ENV) else { return };
    let dir = std::path::Path::new(&dir);
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
    std::thread::park();
}

/// A bulk catch-up writes its spilled deltas without the WAL; killed at any moment, the store
/// must reopen with every acknowledged event and views equal to a fresh fold of its log (the
/// lagging watermark makes the open rebuild them), and finishing the catch-up afterwards must
/// give the source's state hash.
#[test]
fn sigkill_during_a_bulk_catch_up_leaves_views_equal_to_the_log() {
    use casesync_engine::model::state_hash::StateHasher;
    let dir = tempfile::tempdir().unwrap();
    busy_source(&dir.path().join("source"), 60);
    let source_hash = open(&dir.path().join("source")).state_hash(&SPACE).unwrap();
    let seed: u64 = std::env::var("CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0xb01c_cafe);
    println!("bulk crash test seed {seed} (set CRASH_SEED to replay)");
    let mut rng = seed;
    for kill in 0..4 {
        let _ = std::fs::remove_dir_all(dir.path().join("target"));
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let acks_before_kill = 1 + (rng >> 40) % 70; // the log is 720 events: 80 batches
        let acknowledged = run_child_and_kill(
            "crash::child_catches_up_in_bulk_until_killed",
            BULK_CHILD_ENV,
            dir.path(),
            acks_before_kill,
            kill,
        );

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

/// Runs the child test `test` on `dir`, reads its "ack N" lines until `acks` of them came, kills
/// it with SIGKILL and returns the last N.
fn run_child_and_kill(test: &str, env: &str, dir: &std::path::Path, acks: u64, kill: u32) -> u64 {
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
