//! examples/deploy.sh outside systemd: without a baton, with its history file (baton stopped),
//! and with a real `baton run` and `--reload-cmd` (the end-to-end run under
//! the shipped units is `systemd::the_deploy_script_deploys_a_good_release_and_backs_out_of_a_broken_one`).

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn deploy_sh() -> std::path::PathBuf {
    repo_dir().join("examples/deploy.sh")
}

/// Two deploys of one root at once (a new user's trial: the first one's failure pointed
/// `current` back over the second one's success): the second fails at once, saying so, and
/// touches nothing.
#[test]
fn a_second_deploy_of_the_same_root_waits_for_nothing_and_changes_nothing() {
    let root = scratch("deploy-lock");
    std::fs::create_dir_all(root.join("releases/1")).unwrap();
    std::os::unix::fs::symlink("releases/1", root.join("current")).unwrap();
    let lock = root.join(".deploy.lock");
    // another deploy holds the lock: flock(1) until its stdin closes
    let mut holder = Command::new("flock")
        .arg(&lock)
        .args(["sh", "-c", "echo held; read _"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("flock (util-linux)");
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "held\n");
    let out = Command::new("sh")
        .arg(deploy_sh())
        .args(["--service", "x", "--root"])
        .arg(&root)
        .args(["--reload-cmd", "true", "--", "touch", "built"])
        .output()
        .unwrap();
    drop(holder.stdin.take());
    let _ = holder.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("another deploy of") && err.contains(".deploy.lock"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_link(root.join("current")).unwrap(),
        std::path::Path::new("releases/1")
    );
    let releases: Vec<_> = std::fs::read_dir(root.join("releases")).unwrap().collect();
    assert_eq!(releases.len(), 1, "no release was made");
    // the lock is free again: the same deploy runs (its reload is `true`)
    let out = Command::new("sh")
        .arg(deploy_sh())
        .args(["--service", "x", "--root"])
        .arg(&root)
        .args(["--reload-cmd", "true", "--", "touch", "built"])
        .env("BATON", "false")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn deploy(root: &std::path::Path, build: &[&str]) -> std::process::Output {
    Command::new("sh")
        .arg(deploy_sh())
        .args(["--service", "x", "--root"])
        .arg(root)
        .args(["--reload-cmd", "true", "--"])
        .args(build)
        .env("BATON", "false")
        .output()
        .unwrap()
}

/// A build in place (`current` the app's own directory; a new user's trial: a raw `mv` error,
/// and `current.tmp` left): refused, saying how to move to the releases layout, nothing made.
#[test]
fn a_build_in_place_is_refused_with_the_way_to_the_releases_layout() {
    let root = scratch("deploy-inplace");
    std::fs::create_dir_all(root.join("current")).unwrap();
    let out = deploy(&root, &["true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is a directory, not a symlink") && err.contains("ln -s releases/"),
        "{err}"
    );
    assert!(root.join("current").is_dir() && !root.join("current.tmp").exists());
    assert_eq!(std::fs::read_dir(root.join("releases")).unwrap().count(), 0);
}

/// A failed build says its exit status; `current` is untouched.
#[test]
fn a_failed_build_says_its_exit_status() {
    let root = scratch("deploy-buildfail");
    let out = deploy(&root, &["sh", "-c", "exit 3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("the build failed (exit status 3)"), "{err}");
    assert!(!root.join("current").exists());
}

/// A root whose baton is stopped: `baton history --config` (the script's `--config`) reads the
/// history file in `<dir>/state` (`STATE_DIRECTORY`), which the test writes.
struct Site {
    dir: PathBuf,
    root: PathBuf,
    config: PathBuf,
}

impl Site {
    /// `<dir>/<root_name>/releases/<name>` for each of `releases` (a file `KEEP` in each), and
    /// `current -> releases/<current>`.
    fn new(name: &str, root_name: &str, releases: &[&str], current: &str) -> Site {
        let dir = scratch(name);
        let root = dir.join(root_name);
        for r in releases {
            std::fs::create_dir_all(root.join("releases").join(r)).unwrap();
            std::fs::write(root.join("releases").join(r).join("KEEP"), r).unwrap();
        }
        std::os::unix::fs::symlink(format!("releases/{current}"), root.join("current")).unwrap();
        let config = dir.join("api.toml");
        std::fs::write(
            &config,
            format!(
                "command = [\"/bin/true\"]\ncontrol = \"{}\"\n\n[sockets]\nhttp = \"127.0.0.1:1\"\n",
                dir.join("ctl.sock").display()
            ),
        )
        .unwrap();
        Site { dir, root, config }
    }

    /// The resolved path of release `name`, as baton's history names it.
    fn release(&self, name: &str) -> String {
        let p = self
            .root
            .join("releases")
            .join(name)
            .canonicalize()
            .unwrap();
        p.to_str().unwrap().to_string()
    }

    /// The history file: one generation per (release, served), oldest first.
    fn history(&self, generations: &[(&str, bool)]) {
        let records: Vec<serde_json::Value> = generations
            .iter()
            .enumerate()
            .map(|(i, (release, served))| {
                let g = i as u64 + 1;
                serde_json::json!({
                    "generation": g, "run": 1000, "kind": "reload",
                    "release": self.release(release),
                    "config_digest": "fnv1a64:00", "config": "",
                    "started_ms": 1000 + g * 10,
                    "swapped_ms": if *served { Some(1005 + g * 10) } else { None },
                    "ended_ms": 1009 + g * 10,
                    "outcome": if *served { "replaced" } else { "failed" },
                })
            })
            .collect();
        let state = self.dir.join("state");
        std::fs::create_dir_all(&state).unwrap();
        let file = serde_json::json!({ "version": 1, "records": records });
        std::fs::write(state.join("history.json"), file.to_string()).unwrap();
    }

    /// deploy.sh --keep `keep` of a release that builds and reloads (`true`), with the real
    /// baton for `baton history`.
    fn deploy(&self, keep: u32) -> std::process::Output {
        Command::new("sh")
            .arg(deploy_sh())
            .args(["--service", "api", "--root"])
            .arg(&self.root)
            .arg("--config")
            .arg(&self.config)
            .args([
                "--keep",
                &keep.to_string(),
                "--reload-cmd",
                "true",
                "--",
                "true",
            ])
            .env("BATON", baton_bin())
            .env("STATE_DIRECTORY", self.dir.join("state"))
            .output()
            .unwrap()
    }

    /// The names in releases/, sorted.
    fn releases(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.root.join("releases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The release `current` points at (its name under releases/).
    fn current(&self) -> String {
        let link = std::fs::read_link(self.root.join("current")).unwrap();
        link.to_str()
            .unwrap()
            .trim_start_matches("releases/")
            .to_string()
    }
}

/// The script's own stamps, oldest first.
const STAMPS: [&str; 5] = [
    "20200101-000001",
    "20200101-000002",
    "20200101-000003",
    "20200101-000003-02",
    "20200101-000004",
];

/// Releases made by hand (a new user's trial: `releases/1` sorted as the oldest and was
/// pruned, `releases/old` as the newest and pushed a real release out) are never pruned, and
/// the log says so once; the newest N are counted over the script's own stamps, and those
/// beyond N are pruned except the one the history names.
#[test]
fn hand_made_releases_are_left_alone_and_only_stamps_count_toward_keep() {
    let mut names = vec!["1", "old"];
    names.extend(STAMPS);
    let site = Site::new("deploy-handmade", "api", &names, STAMPS[4]);
    site.history(&[(STAMPS[0], true), (STAMPS[1], false)]);
    let out = site.deploy(2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let new = site.current();
    assert!(
        new.starts_with("20") && !STAMPS.contains(&new.as_str()),
        "{new}"
    );
    let mut want = vec!["1", "old", STAMPS[0], STAMPS[4], new.as_str()];
    want.sort();
    assert_eq!(site.releases(), want, "{err}");
    for hand in ["1", "old"] {
        assert_eq!(
            std::fs::read_to_string(site.root.join("releases").join(hand).join("KEEP")).unwrap(),
            hand,
            "the hand-made release {hand} is untouched"
        );
    }
    assert_eq!(
        err.matches("2 hand-made directories").count(),
        1,
        "said once: {err}"
    );
    for pruned in &STAMPS[1..4] {
        assert!(
            err.contains(&format!(
                "pruning {}/releases/{pruned}\n",
                site.root.canonicalize().unwrap().display()
            )),
            "{err}"
        );
    }
}

/// A release whose path has a `"` and a `\` (JSON escapes them: a new user's trial, the
/// script's grep of `history --json` cut the path short and pruned the release the history
/// names) is kept, and the log names the paths as they are.
#[test]
fn a_release_named_by_the_history_is_kept_whatever_its_path() {
    let site = Site::new("deploy-quoted", "a\"quoted\\root", &STAMPS[..3], STAMPS[2]);
    site.history(&[(STAMPS[0], true), (STAMPS[2], true)]);
    let out = site.deploy(1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let new = site.current();
    assert_eq!(
        site.releases(),
        [STAMPS[0], STAMPS[2], new.as_str()],
        "{err}"
    );
    // said as it is (dash's echo would turn the `\r` of the path into a carriage return)
    let root = site.root.canonicalize().unwrap();
    let line = format!(
        "deploy.sh: pruning {}/releases/{}\n",
        root.display(),
        STAMPS[1]
    );
    assert!(err.contains(&line), "{err}");
}

/// A release that only failed generations ran cannot be rolled back to: beyond the newest N,
/// and neither `current` nor the new one, it is pruned; one that failed once and served later
/// is kept.
#[test]
fn a_release_of_failed_generations_only_is_pruned() {
    let site = Site::new("deploy-failed", "api", &STAMPS[..4], STAMPS[3]);
    site.history(&[
        (STAMPS[0], false),
        (STAMPS[0], true),
        (STAMPS[1], false),
        (STAMPS[2], false),
        (STAMPS[3], true),
        (STAMPS[2], false),
    ]);
    let out = site.deploy(1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let new = site.current();
    assert_eq!(
        site.releases(),
        [STAMPS[0], STAMPS[3], new.as_str()],
        "{err}"
    );
}

/// A config for the releases layout: `command` runs `current/run.sh`.
fn releases_config(port: u16, ctl: &std::path::Path, current: &std::path::Path) -> String {
    format!(
        r#"command   = ["{current}/run.sh"]
instances = 2
control   = "{ctl}"

[sockets]
http = "127.0.0.1:{port}"

[readiness]
kind    = "notify"
timeout = "5s"

[drain]
timeout = "3s"
"#,
        current = current.display(),
        ctl = ctl.display()
    )
}

/// The `--reload-cmd` route outside systemd, end to end with a real `baton run`: a good
/// release (it serves; an old release no generation ran is pruned, the one that served is
/// kept), a broken one (exit 1 with baton's reason, `current` pointed back, the good release
/// still serves, the failed release left: that run prunes nothing), then a good one again,
/// whose pruning removes the failed release (no rollback can start it) and keeps the ones
/// that served.
#[test]
fn the_reload_cmd_route_deploys_backs_out_and_prunes_what_no_rollback_needs() {
    let _g = serial();
    const FIRST: &str = "20000101-000001";
    const UNUSED: &str = "20000101-000000";
    let mut layout = None;
    let baton = Baton::start("deploy-e2e", |port, ctl| {
        let r = Releases::new(ctl.parent().expect("scratch dir"));
        r.add(UNUSED, true);
        r.add(FIRST, true);
        r.point(FIRST);
        let text = releases_config(port, ctl, &r.current());
        layout = Some(r);
        text
    });
    let r = layout.expect("layout");
    // the good build copies a good run.sh (it answers with the release's MARK)
    let template = Releases::new(&baton.dir.join("template"));
    template.add("t", true);
    let template = template.dir.join("releases/t");
    let deploy = |build: &[&str]| {
        let out = Command::new("sh")
            .arg(deploy_sh())
            .args(["--service", "api", "--keep", "1", "--root"])
            .arg(&r.dir)
            .arg("--config")
            .arg(&baton.config)
            .arg("--reload-cmd")
            .arg(format!(
                "'{}' reload --config '{}'",
                baton_bin().display(),
                baton.config.display()
            ))
            .arg("--")
            .args(build)
            .env("BATON", baton_bin())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), err)
    };
    let good = |mark: &str| {
        deploy(&[
            "sh",
            "-c",
            r#"cp "$0/run.sh" . && printf %s "$1" > MARK"#,
            template.to_str().unwrap(),
            mark,
        ])
    };
    let names = || {
        let mut n: Vec<String> = std::fs::read_dir(r.dir.join("releases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };
    let current = || {
        std::fs::read_link(r.current())
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("releases/")
            .to_string()
    };
    let serves = |mark: &str| {
        wait_for("one generation left", Duration::from_secs(8), || {
            baton
                .status()
                .is_some_and(|s| s["generations"].as_array().map(Vec::len) == Some(1))
        });
        for _ in 0..5 {
            let (code, body) = http_get(baton.port, "/", Duration::from_secs(5)).expect("GET /");
            assert_eq!(code, 200, "{body}");
            assert!(body.ends_with(&format!(" mark {mark}\n")), "{body:?}");
        }
    };

    // 1. a good release: it serves; UNUSED (no generation ran it) is pruned, FIRST kept
    let (code, err) = good("good1");
    assert_eq!(code, Some(0), "{err}");
    let good1 = current();
    assert!(good1.starts_with("20") && good1 != FIRST, "{good1}");
    serves("good1");
    assert_eq!(names(), [FIRST, good1.as_str()], "{err}");

    // 2. a broken release: its workers exit at once
    let (code, err) = deploy(&[
        "sh",
        "-c",
        r#"printf '#!/bin/sh\necho broken >&2\nexit 1\n' > run.sh && chmod 755 run.sh"#,
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("exited before it was ready")
            && err.contains(&format!("current pointed back -> releases/{good1}"))
            && err.contains("left for inspection"),
        "{err}"
    );
    assert!(!err.contains("pruning"), "{err}");
    assert_eq!(current(), good1);
    serves("good1");
    let listed = names();
    assert_eq!(listed.len(), 3, "the failed release is left: {listed:?}");
    let broken = listed
        .iter()
        .find(|n| *n != FIRST && **n != good1)
        .unwrap()
        .clone();

    // 3. a good release again: the failed one is pruned, what served is kept
    let (code, err) = good("good2");
    assert_eq!(code, Some(0), "{err}");
    let good2 = current();
    serves("good2");
    let mut want = vec![FIRST, good1.as_str(), good2.as_str()];
    want.sort();
    assert_eq!(names(), want, "{err}");
    assert!(err.contains(&format!("releases/{broken}\n")), "{err}");
    let h = baton.client(&["history", "--releases"]);
    assert!(h.0, "{}", h.2);
    assert_eq!(
        h.1,
        format!(
            "{}\n{}\n{}\n",
            r.path(&good2),
            r.path(&good1),
            r.path(FIRST)
        )
    );
}
