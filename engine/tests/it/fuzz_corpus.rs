//! The fuzz targets' bodies (`casesync_engine::fuzz_targets`) in the ordinary test suite: the
//! committed corpus (`fuzz/corpus/<target>/`, seeds and every regression input) replayed, and
//! seeded random mutations of it, without cargo-fuzz. A body refuses with a typed error or
//! accepts; it never panics (a panic fails the test with the input's seed and file).

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use casesync_engine::fuzz_targets::seeds::{corpus, run, TARGETS};
use casesync_engine::fuzz_targets::{Refused, ScratchStore};

use crate::support::SeededRng;

/// Mutations of the corpus run through each target's body per test run.
const MUTATIONS_PER_TARGET: usize = 5_000;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target)
}

/// Every file of a target's committed corpus, sorted by name.
fn committed(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|e| panic!("fuzz/corpus/{target}: {e}"))
        .map(|entry| {
            let entry = entry.unwrap();
            (entry.file_name().to_string_lossy().into_owned(), std::fs::read(entry.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// With `CASESYNC_WRITE_CORPUS=1`, writes the seeds into `fuzz/corpus/<target>/` first (files the
/// fuzzer added and regression inputs stay). Either way every seed must be committed as made.
#[test]
fn the_committed_corpus_holds_every_seed() {
    let write = std::env::var("CASESYNC_WRITE_CORPUS").is_ok_and(|v| v == "1");
    for target in TARGETS {
        for (name, bytes) in corpus(target) {
            let path = corpus_dir(target).join(format!("seed-{name}"));
            if write {
                std::fs::create_dir_all(corpus_dir(target)).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            }
            let held = std::fs::read(&path).unwrap_or_default();
            assert!(held == bytes, "{} differs from its seed: CASESYNC_WRITE_CORPUS=1 rewrites it", path.display());
        }
    }
}

/// The seeds are valid inputs: each body takes them (the gRPC requests at least decode), so the
/// fuzzer starts from inputs that reach the deep end of each body.
#[test]
fn every_seed_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = ScratchStore::open(dir.path()).unwrap();
    for target in TARGETS {
        for (name, bytes) in corpus(target) {
            let outcome = run(target, &scratch, &bytes);
            if target == "grpc_request" {
                assert!(
                    !matches!(outcome, Err(Refused::Decode(_) | Refused::ShortInput)),
                    "{target}/{name}: {outcome:?}"
                );
            } else {
                assert!(outcome.is_ok(), "{target}/{name}: {outcome:?}");
            }
        }
    }
}

/// Every committed corpus file (seeds, inputs the fuzzer kept, crash regressions) and
/// [`MUTATIONS_PER_TARGET`] seeded mutations of them per target run through the target's body
/// without a panic.
#[test]
fn the_corpus_and_seeded_mutations_of_it_never_panic() {
    let mut rng = SeededRng::from_env("CASESYNC_FUZZ_SEED", 0x5eed_f022);
    for target in TARGETS {
        let dir = tempfile::tempdir().unwrap();
        let scratch = ScratchStore::open(dir.path()).unwrap();
        let files = committed(target);
        assert!(!files.is_empty(), "fuzz/corpus/{target} is empty");
        for (name, bytes) in &files {
            let _outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run(target, &scratch, bytes)))
                .unwrap_or_else(|_| panic!("{target}: corpus file {name} panicked"));
        }
        for round in 0..MUTATIONS_PER_TARGET {
            let (name, bytes) = &files[rng.index(files.len())];
            let other = &files[rng.index(files.len())].1;
            let mutated = mutate(bytes, other, &mut rng);
            let _outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run(target, &scratch, &mutated)))
                .unwrap_or_else(|_| {
                    panic!("{target}: mutation {round} of {name} panicked (seed {}): {mutated:02x?}", rng.seed())
                });
        }
    }
}

/// One to four random edits of `bytes`: bit flips, byte overwrites with interesting values,
/// insertions, deletions, a truncation or a splice of `other`.
fn mutate(bytes: &[u8], other: &[u8], rng: &mut SeededRng) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..=rng.below(4) {
        let at = if out.is_empty() { 0 } else { rng.index(out.len()) };
        match rng.below(7) {
            0 | 1 if !out.is_empty() => out[at] ^= 1 << rng.below(8),
            2 if !out.is_empty() => out[at] = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x0a, 0x12][rng.index(7)],
            3 => out.insert(at, rng.next_u64() as u8),
            4 if !out.is_empty() => {
                let len = rng.index(out.len() - at) + 1;
                out.drain(at..at + len.min(16));
            }
            5 => out.truncate(at),
            _ if !other.is_empty() => {
                let from = rng.index(other.len());
                let len = rng.index(other.len() - from) + 1;
                out.splice(at..at, other[from..from + len.min(64)].iter().copied());
            }
            _ => out.push(rng.next_u64() as u8),
        }
    }
    out
}

/// Found by the `backup_file` target: `BackupReader::next_record` documents that after
/// `BackupRecord::End` every call returns `End` again with the same summary; it returned
/// `Malformed("read past the trailer")` instead.
#[test]
fn a_backup_reader_returns_its_end_again_after_the_end() {
    use casesync_engine::codec::backup_format::{BackupReader, BackupRecord};
    let backup = corpus("backup_file").into_iter().find(|(name, _)| name == "three-chains").unwrap().1;
    let mut reader = BackupReader::new(&backup[..]).unwrap();
    let summary = loop {
        if let BackupRecord::End(summary) = reader.next_record().unwrap() {
            break summary;
        }
    };
    let again = reader.next_record();
    assert!(matches!(&again, Ok(BackupRecord::End(s)) if *s == summary), "after the end: {again:?}");
}
