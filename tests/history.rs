//! The history of generations and `baton rollback` (issue 16, items 2 and 3), with real
//! processes: the releases layout (`releases/<name>`, `current` flipped), the example worker
//! whose answers carry its release's mark. A rollback under load fails no request and serves
//! the earlier release (the recorded one, not what `current` points at); `--to N`; a rollback
//! whose release directory is gone, or with no earlier good generation, fails with the reason
//! and touches nothing; the history survives a restart of `baton run`; a corrupt history file
//! or an unusable state directory is a warning, never a failure, and so is a full disk. A FIFO
//! or symlink at the history's path blocks nothing; a second corrupt file does not overwrite
//! the first kept aside; crafted records (a wrapping generation number, a relative release)
//! are dropped; another config's generations (one state directory for two configs of one file
//! name) are never rolled back to; the replaced generation says so while it drains;
//! `--releases` lists only releases still there. A history file another user may write, or a
//! state directory others may write to, is not read (a crafted record never runs); a record
//! whose digest is not its config's, or that does not parse, is dropped and the others kept.
//! An fsync of the history that takes seconds holds neither a reload's answer nor a drain
//! deadline (an `LD_PRELOAD` library slows baton's fsyncs).

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use common::*;

/// baton on release `1`, with `2` deployed next to it (both good).
fn start(name: &str) -> (Baton, Releases) {
    let mut layout = None;
    let baton = Baton::start(name, |port, ctl| {
        let r = Releases::new(ctl.parent().expect("scratch dir"));
        r.add("1", true);
        r.add("2", true);
        r.point("1");
        // each rollout lasts at least `stable` under the load (the example worker is ready
        // in ms)
        let text = releases_config(
            port,
            ctl,
            &run_current(&r.current()),
            2,
            "stable  = \"300ms\"\n",
            "",
        );
        layout = Some(r);
        text
    });
    (baton, layout.expect("layout"))
}

/// `baton history --json`'s generations, oldest first.
fn history(baton: &Baton) -> Vec<Value> {
    let (ok, out, err) = baton.client(&["history", "--json"]);
    assert!(ok, "baton history: {err}");
    let v: Value = serde_json::from_str(&out).expect("history JSON");
    v["generations"].as_array().expect("generations").clone()
}

/// (generation, kind, outcome, release) of each entry.
fn summary(h: &[Value]) -> Vec<(u64, String, String, String)> {
    h.iter()
        .map(|r| {
            (
                r["generation"].as_u64().unwrap(),
                r["kind"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
                r["release"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Every answer comes from release `mark` (once the generation before has drained: a
/// draining worker that was woken still accepts what is queued).
fn answers_carry(baton: &Baton, mark: &str) {
    for _ in 0..10 {
        let (code, body) = http_get(baton.port, "/", Duration::from_secs(5)).expect("GET /");
        assert_eq!(code, 200, "{body}");
        assert!(
            body.ends_with(&format!(" mark {mark}\n")),
            "answered from another release than {mark}: {body:?}"
        );
    }
}

/// Only the serving generation is left (the one before has drained).
fn wait_alone(baton: &Baton) {
    wait_for(
        "the previous generation gone",
        Duration::from_secs(8),
        || {
            baton
                .status()
                .is_some_and(|s| s["generations"].as_array().map(Vec::len) == Some(1))
        },
    );
}

/// `baton rollback` under load: no request fails, the earlier release serves (the one
/// recorded: `current` still points at the newer one), `--to N` picks the generation, and the
/// history has each rollback with the generation it started again. Then the release of the
/// default target is deleted: the rollback fails with that reason and nothing is touched.
#[test]
fn rollback_under_load_serves_the_previous_release_and_is_in_the_history() {
    let _g = serial();
    let (baton, r) = start("rb-load");
    let (r1, r2) = (r.path("1"), r.path("2"));
    r.point("2");
    let (ok, out, _) = baton.reload();
    assert!(ok, "{out}");
    wait_alone(&baton);
    answers_carry(&baton, "2");

    let mut keep = Load::start(baton.port, "keepalive", 3, 300);
    let mut close = Load::start(baton.port, "close", 3, 200);
    // each load reaches each generation: it waits for an answer from it (the count of pids
    // below depended on timing, and once saw one generation only)
    let reached = |loads: [&mut Load; 2]| {
        let pids = baton.serving_pids();
        for l in loads {
            l.wait_answered_by(&pids, Duration::from_secs(10));
        }
    };
    reached([&mut keep, &mut close]);
    let (ok, out, err) = baton.client(&["rollback"]);
    assert!(ok, "rollback failed: {out}{err}");
    assert!(
        err.contains("rolling back to generation 1: release ") && err.contains(&r1),
        "the progress line says what starts again: {err}"
    );
    assert!(
        out.starts_with(&format!("rollback: generation 3 serving release {r1}")),
        "{out}"
    );
    assert_eq!(baton.serving_generation(), 3);
    wait_alone(&baton);
    answers_carry(&baton, "1");
    reached([&mut keep, &mut close]);

    let (ok, out, err) = baton.client(&["rollback", "--to", "2", "--json"]);
    assert!(ok, "rollback --to 2 failed: {out}{err}");
    let reply: Value = serde_json::from_str(&out).expect("JSON reply");
    assert_eq!(reply["generation"], 4);
    let message = reply["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("rollback: generation 4 serving"),
        "{message}"
    );
    assert_eq!(reply["release"], r2.as_str());
    wait_alone(&baton);
    answers_carry(&baton, "2");
    reached([&mut keep, &mut close]);
    for load in [keep, close] {
        let s = load.stop();
        // two rollouts of at least `stable` each ran under the load
        assert_no_failures(&s, 100);
        let pids = s["pids"].as_object().map_or(0, |p| p.len());
        assert!(pids >= 3, "the load saw one generation only: {s}");
    }

    let h = history(&baton);
    let s = |g, k: &str, o: &str, r: &str| (g, k.to_string(), o.to_string(), r.to_string());
    assert_eq!(
        summary(&h),
        [
            s(1, "start", "replaced", &r1),
            s(2, "reload", "replaced", &r2),
            s(3, "rollback", "replaced", &r1),
            s(4, "rollback", "serving", &r2),
        ]
    );
    assert_eq!(h[2]["rollback_to"], 1);
    assert_eq!(h[3]["rollback_to"], 2);
    // the same config file each time: one digest, its text kept
    assert!(h
        .iter()
        .all(|r| r["config_digest"] == h[0]["config_digest"]));
    assert_eq!(h[0]["config"].as_str(), Some(baton.config_text().as_str()));
    for r in &h {
        assert!(r["started_ms"].as_u64().unwrap() <= r["swapped_ms"].as_u64().unwrap());
    }
    assert!(h[0]["ended_ms"].as_u64().unwrap() >= h[1]["swapped_ms"].as_u64().unwrap());
    assert_eq!(h[0]["reason"], "replaced by generation 2");
    let (ok, text, _) = baton.client(&["history"]);
    assert!(ok);
    assert!(
        text.contains("rollback to 1") && text.contains("rollback to 2"),
        "{text}"
    );
    assert!(
        text.lines().nth(1).is_some_and(|l| l.starts_with("4 ")),
        "newest first: {text}"
    );

    // the default target now is generation 3 (release 1, the last one before 4 with another
    // release): deleted, as a deploy script's pruning would
    let serving = baton.serving_pids();
    fs::remove_dir_all(r.dir.join("releases/1")).expect("rm release 1");
    let (ok, out, err) = baton.client(&["rollback"]);
    assert!(!ok, "a rollback to a deleted release succeeded: {out}");
    assert!(
        err.contains("cannot roll back to generation 3")
            && err.contains(&format!("the release directory {r1} does not exist"))
            && err.contains("nothing was started, generation 4 still serving"),
        "{err}"
    );
    assert_eq!(
        baton.serving_pids(),
        serving,
        "the serving generation was touched"
    );
    assert_eq!(baton.serving_generation(), 4);
    let s = baton.status().expect("status");
    assert_eq!(s["generations"].as_array().map(Vec::len), Some(1));
    assert_eq!(history(&baton).len(), 4, "nothing was recorded");
    answers_carry(&baton, "2");
    // `--releases` names only the releases still there (a new user's trial: the pruned one
    // was listed as one a rollback may start again)
    let (ok, out, err) = baton.client(&["history", "--releases"]);
    assert!(ok, "{err}");
    assert_eq!(out, format!("{r2}\n"));
}

/// With no generation before the serving one, or a generation that is not in the history or
/// never served, a rollback says so and starts nothing.
#[test]
fn rollback_with_no_earlier_good_generation_fails_clearly() {
    let _g = serial();
    let (baton, r) = start("rb-none");
    let pids = baton.serving_pids();
    let (ok, out, err) = baton.client(&["rollback"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("rollback failed: no earlier good generation to roll back to"),
        "{err}"
    );
    let (ok, _, err) = baton.client(&["rollback", "--to", "7"]);
    assert!(!ok);
    assert!(err.contains("generation 7 is not in the history"), "{err}");
    let (ok, _, err) = baton.client(&["rollback", "--to", "1"]);
    assert!(!ok);
    assert!(err.contains("generation 1 is the one serving"), "{err}");
    // a broken release: generation 2 failed, and it cannot be rolled back to
    r.add("3", false);
    r.point("3");
    let (ok, out, _) = baton.reload();
    assert!(!ok, "{out}");
    let (ok, _, err) = baton.client(&["rollback", "--to", "2"]);
    assert!(!ok);
    assert!(
        err.contains("generation 2 never served (it failed: "),
        "{err}"
    );
    assert_eq!(baton.serving_pids(), pids);
    let h = history(&baton);
    assert_eq!(h.len(), 2);
    assert_eq!(h[1]["outcome"], "failed");
    assert!(
        h[1]["reason"].as_str().unwrap().contains("exited"),
        "{:?}",
        h[1]
    );
}

/// The history is in the state directory: baton stopped and started again lists the earlier
/// run's generations, and a rollback after the restart starts the earlier release again.
#[test]
fn history_survives_a_restart_of_baton_run() {
    let _g = serial();
    let (mut baton, r) = start("rb-restart");
    let (r1, r2) = (r.path("1"), r.path("2"));
    r.point("2");
    let (ok, out, _) = baton.reload();
    assert!(ok, "{out}");
    let run1 = history(&baton)[0]["run"].as_u64().unwrap();
    baton.restart();
    let h = history(&baton);
    let s = |g, k: &str, o: &str, r: &str| (g, k.to_string(), o.to_string(), r.to_string());
    assert_eq!(
        summary(&h),
        [
            s(1, "start", "replaced", &r1),
            s(2, "reload", "stopped", &r2),
            // numbers go on across runs: one number, one generation
            s(3, "start", "serving", &r2),
        ]
    );
    assert_eq!(h[1]["run"].as_u64(), Some(run1));
    assert_eq!(h[1]["reason"], "baton stopped");
    assert!(h[2]["run"].as_u64().unwrap() > run1);
    let log = baton.log_text();
    assert!(
        log.contains(&format!(
            "history {}: 2 generation(s)",
            baton.dir.join("state/history.json").display()
        )),
        "{log}"
    );
    // the generation before the serving one with another release: the earlier run's first
    let (ok, out, err) = baton.client(&["rollback"]);
    assert!(ok, "{out}{err}");
    assert!(
        err.contains("rolling back to generation 1 (of baton's run started "),
        "{err}"
    );
    wait_alone(&baton);
    answers_carry(&baton, "1");
    let (ok, text, _) = baton.client(&["history"]);
    assert!(ok);
    assert!(
        text.contains("(run "),
        "an earlier run's generations say so: {text}"
    );
    // with baton stopped, `baton history --config` reads the file (a new user's trial: the
    // history was out of reach just when baton was down)
    assert!(baton.stop().success());
    let out = Command::new(baton_bin())
        .args(["history", "--json", "--config"])
        .arg(&baton.config)
        .arg("--control")
        .arg(&baton.control)
        .env("STATE_DIRECTORY", baton.dir.join("state"))
        .output()
        .expect("baton history");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("no baton answers") && err.contains("history.json"),
        "{err}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["generations"].as_array().map(Vec::len), Some(4), "{v}");
    // --releases from the file too: those that served, newest first, each once
    let releases = |extra: &[&str]| {
        Command::new(baton_bin())
            .args(["history", "--releases", "--config"])
            .arg(&baton.config)
            .args(extra)
            .env("STATE_DIRECTORY", baton.dir.join("state"))
            .output()
            .expect("baton history --releases")
    };
    let out = releases(&[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{r1}\n{r2}\n")
    );
    // a release whose directory is gone is not listed (from the file too)
    fs::remove_dir_all(r.dir.join("releases/2")).expect("rm release 2");
    let out = releases(&[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{r1}\n"));
    let out = releases(&["--json"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--releases conflicts with --json: {out:?}"
    );
}

/// What becomes of a history file baton cannot use.
enum After {
    /// A regular file: kept aside under this name, and a good history written.
    Aside(&'static str),
    /// No regular file: replaced by the history written at the next change.
    Replaced,
    /// Nothing can be written (a directory there, or no state directory).
    Unwritable,
}

/// What is at the history's path, or the state directory, before baton starts.
fn corrupt_history_case(name: &str, prepare: impl FnOnce(&Path), warning: &str, after: After) {
    let _g = serial();
    let mut state = None;
    let baton = Baton::start(name, |port, ctl| {
        let dir = ctl.parent().expect("scratch dir").join("state");
        prepare(&dir);
        state = Some(dir);
        hello_config(port, ctl, 1, "", "")
    });
    let file = state.expect("state dir").join("history.json");
    let log = baton.log_text();
    assert!(
        log.contains(&format!("history {}: {warning}", file.display()))
            && log.contains("it is ignored"),
        "no warning with the path and the reason: {log}"
    );
    let (ok, out, _) = baton.reload();
    assert!(ok, "{out}");
    assert_eq!(baton.serving_generation(), 2);
    assert_eq!(history(&baton).len(), 2, "kept in memory all the same");
    let log = baton.log_text();
    let written = || {
        let v: Value = serde_json::from_slice(&fs::read(&file).expect("history")).unwrap();
        assert_eq!(v["generations"].as_array().map(Vec::len), None);
        assert_eq!(v["records"].as_array().map(Vec::len), Some(2));
    };
    if let After::Aside(name) = after {
        // kept aside (a new user's trial: it was written over, and the rollback targets it
        // named were lost), and a good one written
        let aside = file.with_file_name(name);
        assert!(aside.is_file(), "{} kept: {log}", aside.display());
        assert!(
            log.contains(&format!("kept as {}", aside.display())),
            "{log}"
        );
        written();
    } else if let After::Replaced = after {
        // what the warning says happens (a new user's trial: it said "nothing is written
        // there", and a regular history.json replaced the symlink)
        assert!(
            log.contains("holds no history to keep aside; it is replaced by a regular file"),
            "{log}"
        );
        assert!(fs::symlink_metadata(&file).expect("history").is_file());
        written();
    } else {
        assert!(
            log.contains(&format!("cannot write the history {}", file.display()))
                && log.contains("baton goes on serving"),
            "{log}"
        );
        // and `baton history` says so (a new user's trial: it named the file as if kept there)
        let (ok, text, _) = baton.client(&["history"]);
        assert!(ok);
        assert!(
            text.contains(&format!(
                "kept in memory: {} cannot be written: ",
                file.display()
            )),
            "{text}"
        );
    }
    let (code, _) = http_get(baton.port, "/", Duration::from_secs(5)).expect("GET /");
    assert_eq!(code, 200);
}

#[test]
fn a_garbage_history_file_is_reported_and_ignored() {
    corrupt_history_case(
        "hist-garbage",
        |d| {
            fs::create_dir_all(d).unwrap();
            fs::write(d.join("history.json"), b"\x00\xffnot json at all").unwrap();
        },
        "it is not a history file",
        After::Aside("history.json.corrupt"),
    );
}

#[test]
fn a_second_corrupt_history_file_does_not_overwrite_the_first() {
    // a new user's trial: the second corrupt history was renamed over the first one
    corrupt_history_case(
        "hist-second",
        |d| {
            fs::create_dir_all(d).unwrap();
            fs::write(d.join("history.json.corrupt"), "the first").unwrap();
            fs::write(d.join("history.json"), b"\x00\xffnot json at all").unwrap();
        },
        "it is not a history file",
        After::Aside("history.json.corrupt.1"),
    );
}

#[test]
fn a_fifo_in_place_of_the_history_file_is_reported_and_ignored() {
    // a new user's trial: `baton run` blocked forever in open() before it served, deaf to
    // SIGTERM
    corrupt_history_case(
        "hist-fifo",
        |d| {
            fs::create_dir_all(d).unwrap();
            let made = Command::new("mkfifo").arg(d.join("history.json")).status();
            assert!(made.expect("mkfifo").success());
        },
        "it is not a regular file: a FIFO",
        After::Replaced,
    );
}

#[test]
fn a_symlink_to_a_device_in_place_of_the_history_file_is_reported_and_replaced() {
    corrupt_history_case(
        "hist-symlink",
        |d| {
            fs::create_dir_all(d).unwrap();
            std::os::unix::fs::symlink("/dev/zero", d.join("history.json")).unwrap();
        },
        "it is not a regular file: a symbolic link",
        After::Replaced,
    );
}

/// `baton history --config` with no baton running and a FIFO at the history's path: it says
/// so at once (a new user's trial: it blocked in open() forever).
#[test]
fn history_from_a_fifo_does_not_hang() {
    let dir = scratch("hist-fifo-client");
    let state = dir.join("state");
    fs::create_dir_all(&state).unwrap();
    let made = Command::new("mkfifo")
        .arg(state.join("history.json"))
        .status();
    assert!(made.expect("mkfifo").success());
    let config = dir.join("baton.toml");
    fs::write(
        &config,
        hello_config(free_port(), &dir.join("ctl.sock"), 1, "", ""),
    )
    .unwrap();
    let mut child = Command::new(baton_bin())
        .args(["history", "--config"])
        .arg(&config)
        .env("STATE_DIRECTORY", &state)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("baton history");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("baton history blocked on the FIFO");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(
        err.contains("history.json: it is not a regular file: a FIFO"),
        "{err}"
    );
    let _ = fs::remove_dir_all(dir);
}

/// A crafted history: a generation number at the top of u64, a relative release, a
/// generation of -1 (which does not parse as a record) and a digest that is not its config's.
/// Those records are dropped with a warning each and the others kept (a new user's trial: the
/// next generations were 0 and 1, "releases/v1" was taken from baton's working directory at a
/// rollback, and one generation of -1 made the whole file "not a history file"), and numbers
/// go on from the highest valid one.
#[test]
fn crafted_records_are_dropped_and_numbers_do_not_wrap() {
    let _g = serial();
    let record_of = |g: &str, release: &str, config: &str, digest: &str| {
        format!(
            r#"{{"generation":{g},"run":1000,"kind":"reload","release":"{release}","config_digest":"{digest}","config":"{config}","started_ms":1000,"swapped_ms":1001,"ended_ms":1002,"outcome":"replaced"}}"#
        )
    };
    let x = baton::history::digest("x");
    let record = |g: &str, release: &str| record_of(g, release, "x", &x);
    let baton = Baton::start("hist-crafted", |port, ctl| {
        let state = ctl.parent().expect("scratch dir").join("state");
        fs::create_dir_all(&state).unwrap();
        let records = [
            record("3", "/srv/api/releases/v3"),
            record("18446744073709551615", "/srv/api/releases/v9"),
            record("4", "releases/v1"),
            record("-1", "/srv/api/releases/v0"),
            // the digest of "x", copied onto another config
            record_of("50", "/usr/bin", "y", &x),
        ];
        let text = format!(r#"{{"version":1,"records":[{}]}}"#, records.join(","));
        fs::write(state.join("history.json"), text).unwrap();
        hello_config(port, ctl, 1, "", "")
    });
    assert_eq!(baton.serving_generation(), 4, "one past the valid 3");
    let (ok, out, _) = baton.reload();
    assert!(ok, "{out}");
    assert_eq!(baton.serving_generation(), 5);
    let log = baton.log_text();
    assert!(
        log.contains("a record (generation 18446744073709551615, run started ")
            && log.contains("its generation number is not between 1 and 9007199254740992"),
        "{log}"
    );
    assert!(
        log.contains(r#"its release "releases/v1" is not an absolute path"#),
        "{log}"
    );
    assert!(
        log.contains(
            "the record at index 3 (counting from 0) is dropped: it does not parse as a \
             record: invalid value: integer `-1`, expected u64"
        ),
        "{log}"
    );
    assert!(
        log.contains("a record (generation 50, run started ")
            && log.contains(&format!(
                "its config digest \"{x}\" is not the digest of its config ({})",
                baton::history::digest("y")
            )),
        "{log}"
    );
    assert!(!log.contains("it is ignored"), "the file was used: {log}");
    assert!(!baton.dir.join("state/history.json.corrupt").exists());
    let (ok, _, err) = baton.client(&["rollback", "--to", "50"]);
    assert!(!ok);
    assert!(err.contains("generation 50 is not in the history"), "{err}");
    let gens: Vec<u64> = history(&baton)
        .iter()
        .map(|r| r["generation"].as_u64().unwrap())
        .collect();
    // the crafted 4 (of the earlier run) is gone: the 4 is this run's
    assert_eq!(gens, [3, 4, 5]);
    assert!(history(&baton)
        .iter()
        .all(|r| r["release"].as_str().is_some_and(|p| p.starts_with('/'))));
}

/// The uid of `nobody`, to own a file of another user (root only).
const NOBODY: u32 = 65534;

/// A record of generation 50 that a rollback would start: release /usr/bin, and a config whose
/// command writes `marker` before it runs the app, with the digest of `benign` (the config
/// baton runs) copied onto it.
fn injected(port: u16, ctl: &Path, marker: &Path, benign: &str) -> Value {
    let evil = hello_config(port, ctl, 1, "", "").replacen(
        "command   = [\"",
        &format!(
            "command   = [\"/bin/sh\", \"-c\", \"id > {} ; exec \\\"$0\\\"\", \"",
            marker.display()
        ),
        1,
    );
    serde_json::json!({
        "generation": 50, "run": 1000, "kind": "reload", "release": "/usr/bin",
        "config_digest": baton::history::digest(benign), "config": evil,
        "started_ms": 1000, "swapped_ms": 1001, "ended_ms": 1002, "outcome": "replaced",
    })
}

/// A history file of another user's (nobody's; when not root, baton's own), mode 0666, with a
/// crafted record (a new user's trial: it was loaded without a word, and `baton rollback --to
/// 50` as root ran the injected command, its banner showing the copied digest). It is not
/// read, nor kept aside (it is not baton's), and the rollback is refused.
#[test]
fn a_history_file_another_user_may_write_is_not_trusted() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let _g = serial();
    let root = baton::sys::euid() == 0;
    let mut paths = None;
    let baton = Baton::start("hist-foreign", |port, ctl| {
        let dir = ctl.parent().expect("scratch dir");
        let (state, marker) = (dir.join("state"), dir.join("pwn"));
        fs::create_dir_all(&state).unwrap();
        let benign = hello_config(port, ctl, 1, "", "");
        let text = serde_json::json!({
            "version": 1,
            "records": [injected(port, ctl, &marker, &benign)],
        });
        let file = state.join("history.json");
        fs::write(&file, text.to_string()).unwrap();
        if root {
            std::os::unix::fs::chown(&file, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
        paths = Some((file, marker));
        benign
    });
    let (file, marker) = paths.expect("paths");
    let log = baton.log_text();
    let why = match root {
        true => format!("it is owned by uid {NOBODY}, not by baton's uid 0"),
        false => "it is writable by group and others (mode 0666)".to_string(),
    };
    assert!(
        log.contains(&format!("history {}: {why}", file.display()))
            && log.contains("another user could have crafted it; not read")
            && log.contains("starting with an empty history"),
        "{log}"
    );
    assert_eq!(baton.serving_generation(), 1, "numbers went on from it");
    let (ok, out, err) = baton.client(&["rollback", "--to", "50"]);
    assert!(!ok, "the crafted generation was started: {out}{err}");
    assert!(err.contains("generation 50 is not in the history"), "{err}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!marker.exists(), "the injected command ran");
    if root {
        // not baton's to keep aside: it stays until the history is next written
        assert!(
            log.contains(&format!(
                "it is not baton's (owned by uid {NOBODY}): it is not kept aside, and is \
                 replaced by baton's own when the history is next written"
            )),
            "{log}"
        );
    }
    assert!(!file.with_file_name("history.json.corrupt").exists());
    // the history written once generation 1 served, and again at a reload, replaced it with
    // baton's own
    let (ok, out, _) = baton.reload();
    assert!(ok, "{out}");
    let m = fs::symlink_metadata(&file).expect("history");
    assert_eq!((m.uid(), m.mode() & 0o777), (baton::sys::euid(), 0o600));
    let gens: Vec<u64> = history(&baton)
        .iter()
        .map(|r| r["generation"].as_u64().unwrap())
        .collect();
    assert_eq!(gens, [1, 2]);
}

/// A state directory others may write to (mode 0777): a good history file in it is not read,
/// nor written, and `baton history` says why (a new user's trial: anyone could put a crafted
/// history there for a rollback to start).
#[test]
fn a_state_directory_others_may_write_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let _g = serial();
    let mut paths = None;
    let baton = Baton::start("hist-open-dir", |port, ctl| {
        let dir = ctl.parent().expect("scratch dir");
        let state = dir.join("state");
        fs::create_dir_all(&state).unwrap();
        let benign = hello_config(port, ctl, 1, "", "");
        let record = serde_json::json!({
            "generation": 7, "run": 1000, "kind": "reload",
            "release": dir.display().to_string(),
            "config_digest": baton::history::digest(&benign), "config": benign,
            "started_ms": 1000, "swapped_ms": 1001, "ended_ms": 1002, "outcome": "replaced",
        });
        let text = serde_json::json!({"version": 1, "records": [record]}).to_string();
        let file = state.join("history.json");
        fs::write(&file, &text).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();
        paths = Some((state, file, text));
        benign
    });
    let (state, file, text) = paths.expect("paths");
    let log = baton.log_text();
    assert!(
        log.contains(&format!(
            "the state directory {} is writable by group and others (mode 0777)",
            state.display()
        )) && log.contains(&format!(
            "kept in memory only: {} is neither read nor written",
            file.display()
        )),
        "{log}"
    );
    assert_eq!(baton.serving_generation(), 1, "the file was read");
    let (ok, out, _) = baton.reload();
    assert!(ok, "{out}");
    assert_eq!(history(&baton).len(), 2, "kept in memory");
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        text,
        "the file was written"
    );
    assert_eq!(
        fs::read_dir(&state).unwrap().count(),
        1,
        "nothing else written"
    );
    let (ok, out, _) = baton.client(&["history"]);
    assert!(ok);
    assert!(
        out.contains(&format!(
            "kept in memory: {} cannot be written: baton does not use it: the state directory",
            file.display()
        )),
        "{out}"
    );
    let (ok, _, err) = baton.client(&["rollback", "--to", "7"]);
    assert!(!ok);
    assert!(err.contains("generation 7 is not in the history"), "{err}");
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
}

/// Two configs of one file name share the default state directory, and so a history (a new
/// user's trial: `baton rollback` of /tmp/c2/api.toml started /tmp/c1/api.toml's generation,
/// the other service's app on this service's port, and exited 0). `baton run` warns of the
/// other config's records; a rollback to one is refused naming both files, and the default
/// rollback skips them.
#[test]
fn a_rollback_never_starts_another_configs_generation() {
    let _g = serial();
    let mut first = Baton::start("hist-shared-1", |port, ctl| {
        hello_config(port, ctl, 1, "", "")
    });
    assert!(first.stop().success());
    let shared = first.dir.join("state/history.json");
    let baton = Baton::start("hist-shared-2", |port, ctl| {
        let state = ctl.parent().expect("scratch dir").join("state");
        fs::create_dir_all(&state).unwrap();
        fs::copy(&shared, state.join("history.json")).expect("copy the history");
        hello_config(port, ctl, 1, "", "")
    });
    let (a, b) = (
        first.config.display().to_string(),
        baton.config.display().to_string(),
    );
    assert_ne!(a, b);
    let log = baton.log_text();
    assert!(
        log.contains(&format!(
            "generation(s) 1 ran another config, {a}, not this baton's {b}"
        )) && log.contains("STATE_DIRECTORY"),
        "{log}"
    );
    assert_eq!(baton.serving_generation(), 2);
    let pids = baton.serving_pids();
    let (ok, out, err) = baton.client(&["rollback", "--to", "1"]);
    assert!(!ok, "a rollback started another config's generation: {out}");
    assert!(
        err.contains(&format!(
            "generation 1 ran another config, {a}, not this baton's {b}"
        )) && err.contains("STATE_DIRECTORY"),
        "{err}"
    );
    let (ok, out, err) = baton.client(&["rollback"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("no earlier good generation to roll back to")
            && err.contains(&format!("other configs ({a})")),
        "{err}"
    );
    assert_eq!(baton.serving_pids(), pids, "nothing was started");
    assert_eq!(history(&baton).len(), 2);
}

/// During a drain, one generation serves in the history: the one it replaced says
/// `replaced` from the swap on, its end the swap (a new user's trial: both said `serving`
/// until the old one had exited).
#[test]
fn the_replaced_generation_says_so_while_it_drains() {
    let _g = serial();
    // the workers ignore SIGTERM: the old generation drains until the SIGKILL at 2 s
    let extra = "[env]\nHELLO_FAIL = \"ignore-sigterm\"\n\n[drain]\ntimeout = \"2s\"\n";
    let baton = Baton::start("hist-drain", |port, ctl| {
        hello_config(port, ctl, 1, "", extra)
    });
    let (ok, out, _) = baton.reload();
    assert!(ok, "{out}");
    let s = baton.status().expect("status");
    assert_eq!(
        s["generations"].as_array().map(Vec::len),
        Some(2),
        "generation 1 drains: {s}"
    );
    let h = history(&baton);
    assert_eq!(
        summary(&h)
            .iter()
            .map(|(g, _, o, _)| (*g, o.as_str()))
            .collect::<Vec<_>>(),
        [(1, "replaced"), (2, "serving")]
    );
    assert_eq!(
        h[0]["ended_ms"], h[1]["swapped_ms"],
        "it served until the swap"
    );
    assert_eq!(h[0]["reason"], "replaced by generation 2");
    let (ok, text, _) = baton.client(&["history"]);
    assert!(ok);
    assert_eq!(text.matches("serving").count(), 1, "{text}");
    wait_alone(&baton);
    assert_eq!(history(&baton)[0]["ended_ms"], h[0]["ended_ms"]);
}

#[test]
fn a_truncated_history_file_is_reported_and_ignored() {
    corrupt_history_case(
        "hist-truncated",
        |d| {
            fs::create_dir_all(d).unwrap();
            fs::write(
                d.join("history.json"),
                "{\"version\": 1, \"records\": [{\"generation\": 1, \"ru",
            )
            .unwrap();
        },
        "it is not a history file: EOF while parsing",
        After::Aside("history.json.corrupt"),
    );
}

#[test]
fn a_directory_in_place_of_the_history_file_is_reported_and_ignored() {
    corrupt_history_case(
        "hist-dir",
        |d| fs::create_dir_all(d.join("history.json")).unwrap(),
        "it is a directory, not a file",
        After::Unwritable,
    );
}

#[test]
fn an_unusable_state_directory_is_reported_and_ignored() {
    // a file where the directory should be: nothing can be created under it, even by root
    corrupt_history_case(
        "hist-statefile",
        |d| fs::write(d, "not a directory").unwrap(),
        "cannot open it: Not a directory",
        After::Unwritable,
    );
}

/// A baton from before `history` and `rollback` answers them as bad requests: the client
/// says that it is older, and how to get the new one.
#[test]
fn an_older_baton_that_does_not_know_the_request_is_named() {
    let dir = scratch("old-baton");
    let sock = dir.join("control.sock");
    let listener = UnixListener::bind(&sock).expect("bind");
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (conn, _) = listener.accept().expect("accept");
            let mut line = String::new();
            BufReader::new(&conn).read_line(&mut line).expect("read");
            let op = if line.contains("history") {
                "history"
            } else {
                "rollback"
            };
            // what serde says to a baton that knows only reload and status
            let reply = format!(
                "{{\"error\":\"bad request: unknown variant `{op}`, expected `reload` or \
                 `status` at line 1 column 17\"}}\n"
            );
            (&conn).write_all(reply.as_bytes()).expect("write");
        }
    });
    for args in [&["history"][..], &["rollback", "--to", "1"]] {
        let out = std::process::Command::new(baton_bin())
            .args(args)
            .arg("--control")
            .arg(&sock)
            .output()
            .expect("baton");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains(&format!(
                "baton: {}: the baton at {} does not know this request: it is older than this client",
                args[0],
                sock.display()
            )) && err.contains("systemctl restart"),
            "{err}"
        );
    }
    server.join().unwrap();
    let _ = fs::remove_dir_all(dir);
}

/// A full disk: the state directory is a tmpfs with no space left (in a mount namespace of
/// baton's own). Every write of the history fails: baton says so with the path and the
/// reason, and goes on: it serves, a reload succeeds, and `baton history` has both
/// generations from memory.
#[test]
fn a_full_disk_does_not_break_a_reload() {
    let _g = serial();
    let script = r#"mount -t tmpfs -o size=4k tmpfs "$STATE_DIRECTORY" &&
        head -c 8192 /dev/zero > "$STATE_DIRECTORY/fill" 2>/dev/null; exec "$0" "$@""#;
    let prefix = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
    ];
    let baton = Baton::spawn_with(&prefix, "hist-full", |port, ctl| {
        fs::create_dir_all(ctl.parent().expect("scratch dir").join("state")).unwrap();
        hello_config(port, ctl, 1, "", "")
    });
    baton.wait_serving(Duration::from_secs(20));
    let (ok, out, _) = baton.reload();
    assert!(ok, "{out}");
    assert_eq!(baton.serving_generation(), 2);
    let file = baton.dir.join("state/history.json");
    let log = baton.log_text();
    let failed = format!("cannot write the history {}: ", file.display());
    assert!(
        log.matches(&failed).count() >= 2
            && log.contains("No space left on device")
            && log.contains("baton goes on serving"),
        "{log}"
    );
    assert_eq!(history(&baton).len(), 2);
    let (code, _) = http_get(baton.port, "/", Duration::from_secs(5)).expect("GET /");
    assert_eq!(code, 200);
}

/// A reload whose `[sockets]` changed (a new user's trial: exit 0, and the only word of it was
/// a warning in the log): the reload serves on the sockets baton has, and `baton reload` says
/// on its stderr that the change waits for a restart. A rollback to the config before, whose
/// `[sockets]` differ from the ones baton runs with, says so too.
#[test]
fn a_reload_that_cannot_apply_sockets_says_so_to_its_client() {
    let _g = serial();
    let (baton, r) = start("rb-sockets");
    let text = fs::read_to_string(&baton.config).expect("config");
    let other = free_port();
    let changed = text.replace(
        &format!("127.0.0.1:{}", baton.port),
        &format!("127.0.0.1:{other}"),
    );
    assert_ne!(text, changed);
    fs::write(&baton.config, &changed).expect("write config");
    r.point("2");
    let (ok, out, _) = baton.reload();
    assert!(ok, "{out}");
    assert!(
        out.contains("baton: warning: [sockets] in ") && out.contains("restart baton to apply"),
        "{out}"
    );
    wait_alone(&baton);
    answers_carry(&baton, "2");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", other)).is_err(),
        "nothing listens on the new port before a restart"
    );
    // back to the first config: the change went with the config file, not with baton
    fs::write(&baton.config, &text).expect("write config");
    wait_alone(&baton);
    let (ok, out, err) = baton.client(&["rollback"]);
    assert!(ok, "{out}{err}");
    assert!(
        !err.contains("[sockets]"),
        "generation 1's sockets are baton's: {err}"
    );
    // a rollback to generation 2, whose config names the other port
    wait_alone(&baton);
    let (ok, out, err) = baton.client(&["rollback", "--to", "2"]);
    assert!(ok, "{out}{err}");
    assert!(
        err.contains("baton: warning: [sockets] in generation 2's config differ"),
        "{err}"
    );
    // a restart applies the file, not the history's copy: not said of a rollback
    assert!(!err.contains("restart baton to apply"), "{err}");
    let log = baton.log_text();
    assert!(log.contains("config_sockets_changed"), "{log}");
}

/// An `LD_PRELOAD` library whose `fsync` and `fdatasync` take `SLOW_FSYNC_MS` (a disk under
/// write pressure holds an fsync for seconds), built with gcc into `dir`.
fn slow_fsync_library(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("slow_fsync.c");
    fs::write(
        &src,
        r#"#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>
static void slow(void) {
    const char *ms = getenv("SLOW_FSYNC_MS");
    long n = ms ? atol(ms) : 3000;
    struct timespec t = { n / 1000, (n % 1000) * 1000000L };
    while (nanosleep(&t, &t) != 0) {}
}
int fsync(int fd) {
    slow();
    return ((int (*)(int))dlsym(RTLD_NEXT, "fsync"))(fd);
}
int fdatasync(int fd) {
    slow();
    return ((int (*)(int))dlsym(RTLD_NEXT, "fdatasync"))(fd);
}
"#,
    )
    .expect("write slow_fsync.c");
    let lib = dir.join("slow_fsync.so");
    let out = Command::new("gcc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg("-ldl")
        .output()
        .expect("gcc (tests/setup.sh installs it)");
    assert!(out.status.success(), "gcc: {out:?}");
    lib
}

/// A new user's trial of `baton verify` (builds writing next door): the history's fsync ran in
/// the event loop, so the loop stood still for seconds at each swap: the reload's answer waited
/// for it (8 s with two 3 s fsyncs) and the old worker was killed the moment the loop came back,
/// its drain never given. With every fsync of baton taking 3 s, the reload answers at once and
/// the old worker that ignores SIGTERM is killed at its 1 s deadline, not before.
#[test]
fn a_slow_fsync_of_the_history_holds_neither_the_reload_nor_the_drain_deadline() {
    let _g = serial();
    let dir = scratch("history-slow-fsync-lib");
    let lib = slow_fsync_library(&dir);
    let preload = format!("LD_PRELOAD={}", lib.display());
    let baton = Baton::spawn_with(
        &["env", &preload, "SLOW_FSYNC_MS=3000"],
        "history-slow-fsync",
        |port, ctl| {
            hello_config(
                port,
                ctl,
                1,
                "",
                "[readiness]\nkind = \"notify\"\ntimeout = \"10s\"\n\n\
                 [drain]\ntimeout = \"1s\"\n\n[env]\nHELLO_FAIL = \"ignore-sigterm\"\n",
            )
        },
    );
    baton.wait_serving(Duration::from_secs(20));
    // the library is in baton (its workers get the variable too, and do not fsync)
    let maps = fs::read_to_string(format!("/proc/{}/maps", baton.pid())).expect("maps");
    assert!(maps.contains("slow_fsync.so"), "LD_PRELOAD did not take");
    let old = baton.serving_pids();
    assert_eq!(old.len(), 1);
    let t0 = std::time::Instant::now();
    let (ok, out, took) = baton.reload();
    assert!(ok, "{out}");
    assert!(
        took < Duration::from_secs(2),
        "the reload's answer waited {took:?} (the history's fsync takes 3 s)"
    );
    wait_for("the old worker killed", Duration::from_secs(10), || {
        !pid_exists(old[0]) || pid_state(old[0]) == Some('Z')
    });
    let gone = t0.elapsed();
    assert!(
        gone >= Duration::from_millis(900) && gone < Duration::from_millis(2500),
        "the old worker, which ignores SIGTERM, went {gone:?} after the reload began \
         (drain.timeout 1s)"
    );
    let log = baton.log_text();
    assert!(log.contains("killed"), "{log}");
    let _ = fs::remove_dir_all(&dir);
}
