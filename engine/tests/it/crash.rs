//! Crash test: a child process appends in a loop and reports each acknowledged seq; it is killed
//! with SIGKILL at random moments. After each kill the store must reopen, every chain must verify,
//! and every acknowledged seq must be present.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use bytes::Bytes;
use casesync_engine::event::{BodyEncoding, SignedEvent};
use casesync_engine::ids::EventId;

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
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash::child_appends_until_killed", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut seen = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(seq) = line.strip_prefix("ack ") {
                acknowledged = acknowledged.max(seq.trim().parse().unwrap());
                seen += 1;
                if seen >= acks_before_kill {
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL on unix
        child.wait().unwrap();
        assert!(seen >= acks_before_kill, "child {kill} stopped early");

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
