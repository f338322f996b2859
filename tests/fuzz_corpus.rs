//! The fuzz targets in the suite, without afl (issue 13): every file of the committed corpus
//! (`fuzz/corpus/<target>/`, what afl found and afl-cmin kept) goes through its target, then a
//! bounded, deterministic mutation pass (fixed seed, a fixed number of inputs) runs each target
//! on byte flips, splices and dictionary tokens of those files. The targets and their
//! properties are `fuzz/targets.rs`, the same code the afl harnesses run.
//!
//! A failure names the target and the input (kept under `target/fuzz-failures/`): run it
//! through the afl harness (`fuzz/target/release/<target> < FILE`) or add it to the corpus.

#[path = "common/rng.rs"]
mod rng;
#[path = "../fuzz/targets.rs"]
mod targets;

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rng::Rng;
use targets::{Outcome, Target, TARGETS};

/// The tests of this file run one at a time: the notify target counts the process's open
/// descriptors, which another test opening a file at the same moment would change.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn target(name: &str) -> (Target, &'static [Outcome]) {
    TARGETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, f, o)| (*f, *o))
        .unwrap_or_else(|| panic!("no target {name}"))
}

/// The committed corpus of a target, sorted by file name; never empty.
fn corpus(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "the corpus {} has {} files",
        dir.display(),
        files.len()
    );
    files
}

/// Run one input; on a violated property keep the input and fail naming it.
fn run(name: &str, f: Target, input: &[u8], what: &str) -> Outcome {
    match catch_unwind(AssertUnwindSafe(|| f(input))) {
        Ok(o) => o,
        Err(e) => {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("{name}-{}", what.replace(['/', ' '], "_")));
            let _ = std::fs::write(&file, input);
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "target {name} failed on {what} (input kept in {}): {msg}",
                file.display()
            );
        }
    }
}

/// Every corpus file passes its target, and the corpus reaches every outcome of the target.
fn replay(name: &str) {
    let _one = serial();
    let (f, expected) = target(name);
    let mut seen = BTreeSet::new();
    for (path, bytes) in corpus(name) {
        seen.insert(run(name, f, &bytes, &path.display().to_string()));
    }
    for o in expected {
        assert!(
            seen.contains(o),
            "no file of the {name} corpus is {o:?} (reached: {seen:?})"
        );
    }
}

/// Tokens worth inserting: the edges of every parser.
const TOKENS: &[&[u8]] = &[
    b"\n",
    b"\"",
    b"=",
    b"[",
    b"]",
    b"{",
    b"}",
    b",",
    b"\\u001b",
    b"\\u0000",
    b"\x1b[2J",
    b"\xff",
    b"\xc3",
    b"-1",
    b"0",
    b"1e300",
    b"-0.0",
    b"NaN",
    b"18446744073709551615",
    b"9223372036854775807s",
    b"2d",
    b"1.5s",
    b"null",
    b"true",
    b"\"\"",
    b"[readiness]",
    b"[sockets]",
    b"[env]",
    b"kind = \"http\"",
    b"control = \"/tmp/c.notify\"",
    b"a.b.c.d.e.f.g.h = 1",
    b"READY=1\n",
    b"STATUS=",
    b"MAINPID=",
    b"BARRIER=1",
    b"\"op\":\"reload\"",
    b"\"progress\":",
    b"\"error\":",
    b"\"uptime_s\":",
    b"\"workers\":[]",
];

fn mutate(rng: &mut Rng, corpus: &[(PathBuf, Vec<u8>)]) -> Vec<u8> {
    let mut v = corpus[rng.below(corpus.len())].1.clone();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(7) {
            // flip a bit
            0 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] ^= 1 << rng.below(8);
            }
            // a random byte
            1 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] = rng.next() as u8;
            }
            // delete a range
            2 => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                v.drain(at.min(end)..end);
            }
            // duplicate a range
            3 if !v.is_empty() => {
                let start = rng.below(v.len());
                let end = (start + 1 + rng.below(64)).min(v.len());
                let chunk = v[start..end].to_vec();
                v.splice(at..at, chunk);
            }
            // splice: this file's head, another's tail
            4 => {
                let other = &corpus[rng.below(corpus.len())].1;
                let from = rng.below(other.len() + 1);
                v.truncate(at);
                v.extend_from_slice(&other[from..]);
            }
            // a token
            _ => {
                let t = TOKENS[rng.below(TOKENS.len())];
                v.splice(at..at, t.iter().copied());
            }
        }
    }
    v
}

/// `count` mutations of the corpus (seed fixed per target) through the target.
fn mutations(name: &str, seed: u64, count: usize) {
    let _one = serial();
    let (f, _) = target(name);
    let files = corpus(name);
    let mut rng = Rng(seed);
    let mut outcomes = BTreeSet::new();
    let mut distinct = BTreeSet::new();
    for i in 0..count {
        let input = mutate(&mut rng, &files);
        outcomes.insert(run(
            name,
            f,
            &input,
            &format!("mutation {i} of seed {seed}"),
        ));
        distinct.insert(input);
    }
    // the pass must explore: most inputs new, more than one outcome reached
    assert!(
        distinct.len() > count / 2,
        "{} distinct inputs of {count}",
        distinct.len()
    );
    assert!(outcomes.len() > 1, "{name}: only {outcomes:?}");
}

#[test]
fn config_corpus() {
    replay("config");
}

#[test]
fn notify_corpus() {
    replay("notify");
}

#[test]
fn control_request_corpus() {
    replay("control_request");
}

#[test]
fn client_reply_corpus() {
    replay("client_reply");
}

// The counts take about a second each on the suite's machine (release build).

#[test]
fn config_mutations() {
    mutations("config", 1, 100_000);
}

#[test]
fn notify_mutations() {
    mutations("notify", 2, 10_000);
}

#[test]
fn control_request_mutations() {
    mutations("control_request", 3, 300_000);
}

#[test]
fn client_reply_mutations() {
    mutations("client_reply", 4, 80_000);
}

/// The properties bite: inputs that break them are caught, not waved through.
#[test]
fn the_properties_catch_what_they_promise_to() {
    let _one = serial();
    let caught = |f: &dyn Fn()| catch_unwind(AssertUnwindSafe(f)).is_err();
    // the terminal check of the client target
    let escape = caught(&|| targets::printable("x", "a\u{1b}[2Jb"));
    let newline = caught(&|| targets::printable("x", "a\nb"));
    // the notify model disagrees with a parse of other bytes
    let model = caught(&|| targets::message_against(b"READY=1", b"READY=0"));
    assert!(escape, "an escape sequence passed the terminal check");
    assert!(!newline, "a line end failed the terminal check");
    assert!(model, "the notify model agreed with a wrong parse");
}
