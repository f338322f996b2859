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
    // said before anything is made (a new user's trial: "nothing was done", but releases/
    // and the lock file were there)
    assert!(!root.join("releases").exists(), "{err}");
    assert!(!root.join(".deploy.lock").exists(), "{err}");
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
        Site::with_releases_at(name, root_name, None, releases, current)
    }

    /// As [`Site::new`], with `releases` a symlink to `<dir>/<target>` (releases on another
    /// disk) when `target` is given: `root/releases -> ../<target>`.
    fn with_releases_at(
        name: &str,
        root_name: &str,
        target: Option<&str>,
        releases: &[&str],
        current: &str,
    ) -> Site {
        let dir = scratch(name);
        let root = dir.join(root_name);
        if let Some(t) = target {
            std::fs::create_dir_all(dir.join(t)).unwrap();
            std::fs::create_dir_all(&root).unwrap();
            std::os::unix::fs::symlink(format!("../{t}"), root.join("releases")).unwrap();
        }
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
                    // the digest of the config's text: `load` drops a record whose is not
                    "config_digest": baton::history::digest(""), "config": "",
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
        self.deploy_keep(&keep.to_string())
    }

    /// [`Site::deploy`], which must succeed: the release `current` points at now, and the
    /// script's log.
    fn deploy_ok(&self, keep: u32) -> (String, String) {
        let out = self.deploy(keep);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        (self.current(), err)
    }

    /// deploy.sh `--keep KEEP` (as given) of a release that builds and reloads (`true`).
    fn deploy_keep(&self, keep: &str) -> std::process::Output {
        Command::new("sh")
            .arg(deploy_sh())
            .args(["--service", "api", "--root"])
            .arg(&self.root)
            .arg("--config")
            .arg(&self.config)
            .args(["--keep", keep, "--reload-cmd", "true", "--", "true"])
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
    let (new, err) = site.deploy_ok(2);
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
    let (new, err) = site.deploy_ok(1);
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
    let (new, err) = site.deploy_ok(1);
    assert_eq!(
        site.releases(),
        [STAMPS[0], STAMPS[3], new.as_str()],
        "{err}"
    );
}

/// `releases/` a symlink (releases on another disk; a new user's trial: pruning compared
/// `root/releases/NAME` with the resolved paths the history names, and deleted every release
/// the history names, `current` among them): every comparison is between resolved paths.
#[test]
fn a_symlinked_releases_dir_keeps_what_the_history_names_and_current() {
    let site = Site::with_releases_at(
        "deploy-linked",
        "api",
        Some("bigdisk/releases"),
        &STAMPS[..4],
        STAMPS[3],
    );
    // the history names the resolved paths, under bigdisk/
    assert!(site.release(STAMPS[0]).contains("/bigdisk/releases/"));
    site.history(&[(STAMPS[0], true), (STAMPS[1], false), (STAMPS[3], true)]);
    let (new, err) = site.deploy_ok(1);
    assert_eq!(
        site.releases(),
        [STAMPS[0], STAMPS[3], new.as_str()],
        "{err}"
    );
    assert!(site.root.join("releases").is_symlink());
    assert!(site
        .root
        .join("current")
        .join("..")
        .join(STAMPS[3])
        .join("KEEP")
        .exists());
}

/// A root whose resolved path has a newline (a new user's trial: `baton history --releases`
/// names one path per line, and the script pruned the releases the history names), or whose
/// `releases/` resolves to one: refused before anything is done (exit 2), saying why.
#[test]
fn a_root_or_releases_dir_with_a_newline_is_refused_before_anything_is_done() {
    let nl_root = Site::new("deploy-nl-root", "api\nroot", &STAMPS[..3], STAMPS[2]);
    let nl_releases = Site::with_releases_at(
        "deploy-nl-releases",
        "api",
        Some("big\ndisk/releases"),
        &STAMPS[..3],
        STAMPS[2],
    );
    for site in [&nl_root, &nl_releases] {
        site.history(&[(STAMPS[0], true), (STAMPS[2], true)]);
        let out = site.deploy(1);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("has a newline or another control character")
                && err.contains("Nothing was done"),
            "{err}"
        );
        assert_eq!(site.releases(), &STAMPS[..3], "{err}");
        assert_eq!(site.current(), STAMPS[2]);
        assert!(!site.root.join(".deploy.lock").exists(), "{err}");
    }
}

/// `--keep` takes 1 to 10000 (a new user's trial: 20 digits printed `[: Illegal number`).
#[test]
fn keep_takes_a_number_from_1_to_10000() {
    let site = Site::new("deploy-keep", "api", &STAMPS[..2], STAMPS[1]);
    site.history(&[(STAMPS[1], true)]);
    for bad in ["99999999999999999999", "10001", "0", "-1", "1e3", ""] {
        let out = site.deploy_keep(bad);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--keep {bad:?}: {err}");
        assert!(
            err.contains(&format!(
                "--keep takes a number from 1 to 10000, not '{bad}'"
            )) && !err.contains("Illegal"),
            "--keep {bad:?}: {err}"
        );
    }
    assert_eq!(site.releases(), &STAMPS[..2], "nothing was made");
    let out = site.deploy_keep("10000");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(site.releases().len(), 3);
}

/// The release of a failed deploy (its `.deploy-failed`; a new user's trial: it counted
/// toward `--keep` and pushed a good release out) does not count toward `--keep`, and the
/// next good deploy prunes it.
#[test]
fn a_failed_deploys_release_does_not_count_toward_keep() {
    let site = Site::new("deploy-failed-count", "api", &STAMPS[..3], STAMPS[1]);
    std::fs::write(
        site.root
            .join("releases")
            .join(STAMPS[2])
            .join(".deploy-failed"),
        "the build failed\n",
    )
    .unwrap();
    site.history(&[(STAMPS[1], true)]);
    let (new, err) = site.deploy_ok(3);
    assert_eq!(
        site.releases(),
        [STAMPS[0], STAMPS[1], new.as_str()],
        "{err}"
    );
}

/// A failed build leaves its release marked `.deploy-failed`, saying why.
#[test]
fn a_failed_build_marks_its_release() {
    let root = scratch("deploy-buildmark");
    let out = deploy(&root, &["sh", "-c", "touch half-built; exit 4"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let made: Vec<_> = std::fs::read_dir(root.join("releases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(made.len(), 1);
    let why = std::fs::read_to_string(made[0].join(".deploy-failed")).unwrap();
    assert!(why.contains("the build failed (exit status 4)"), "{why}");
}

/// The pid in `file`, once a process wrote it there (a background process of a build).
fn pid_in(file: &std::path::Path) -> i32 {
    let mut pid = 0;
    wait_for(
        "the background process's pid",
        Duration::from_secs(10),
        || {
            pid = std::fs::read_to_string(file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            pid > 0
        },
    );
    pid
}

/// A build (or a reload command) that leaves a process behind (a new user's trial: it held the
/// lock, fd 9, and every later deploy was refused): the next deploy runs.
#[test]
fn a_process_the_build_or_the_reload_leaves_behind_does_not_hold_the_lock() {
    let dir = scratch("deploy-leftover");
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let run = |reload: &str, build: &str| {
        Command::new("sh")
            .arg(deploy_sh())
            .args(["--service", "x", "--root"])
            .arg(&root)
            .args(["--reload-cmd", reload, "--", "sh", "-c", build])
            .env("BATON", "false")
            .env("PIDS", &dir)
            .output()
            .unwrap()
    };
    let leave =
        |name: &str| format!("sleep 60 </dev/null >/dev/null 2>&1 & echo $! > \"$PIDS/{name}\"");
    // the processes left behind are killed however the test ends
    struct Leftovers(Vec<i32>);
    impl Drop for Leftovers {
        fn drop(&mut self) {
            for pid in &self.0 {
                signal(*pid, "KILL");
            }
        }
    }
    let mut left = Leftovers(Vec::new());
    let out = run("true", &leave("build.pid"));
    left.0.push(pid_in(&dir.join("build.pid")));
    let mut err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    let out = run(&leave("reload.pid"), "true");
    err += &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the lock is free after a build left a process: {err}"
    );
    left.0.push(pid_in(&dir.join("reload.pid")));
    let out = run("true", "true");
    err += &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the lock is free after a reload left a process: {err}"
    );
    assert!(!err.contains("another deploy"), "{err}");
    for pid in &left.0 {
        assert!(pid_exists(*pid), "the process left behind still runs");
    }
}

/// `--reload-cmd '"$BATON" reload …'` (a new user's trial: `baton reload` with baton not on
/// `PATH`): the script exports `BATON`, `baton` when it was not set.
#[test]
fn a_reload_command_may_run_baton_as_dollar_baton() {
    let dir = scratch("deploy-dollar-baton");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("baton");
    std::fs::write(
        &fake,
        "#!/bin/sh\ncase $1 in reload) echo \"fake baton reload $*\";; history) ;; *) exit 3;; esac\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let out = Command::new("sh")
        .arg(deploy_sh())
        .args(["--service", "x", "--root"])
        .arg(&root)
        .args([
            "--reload-cmd",
            "\"$BATON\" reload --config x.toml",
            "--",
            "true",
        ])
        .env_remove("BATON")
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("fake baton reload reload --config x.toml"),
        "{err}"
    );
}

/// A reload command that fails with no baton to ask (a new user's trial: the script printed
/// no reason it could stand by): `current` pointed back, and the log says baton does not
/// answer, with the command's own output and exit status.
#[test]
fn a_failed_reload_with_no_baton_answering_says_so() {
    let root = scratch("deploy-silent");
    std::fs::create_dir_all(root.join("releases/1")).unwrap();
    std::os::unix::fs::symlink("releases/1", root.join("current")).unwrap();
    let out = Command::new("sh")
        .arg(deploy_sh())
        .args(["--service", "x", "--root"])
        .arg(&root)
        .args([
            "--reload-cmd",
            "echo cannot reach it >&2; exit 5",
            "--",
            "true",
        ])
        .env("BATON", "false")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("FAILED: the reload command failed (exit status 5: cannot reach it), and baton does not answer"),
        "{err}"
    );
    assert!(err.contains("current pointed back -> releases/1"), "{err}");
    assert_eq!(
        std::fs::read_link(root.join("current")).unwrap(),
        std::path::Path::new("releases/1")
    );
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
        let text = releases_config(port, ctl, &run_current(&r.current()), 2, "", "");
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
            // baton is not on PATH: the command runs "$BATON", which the script exports
            .arg(format!(
                "\"$BATON\" reload --config '{}'",
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
    let names = || release_names(&r);
    let current = || current_name(&r);
    let serves = |mark: &str| serves_alone(&baton, mark, Duration::from_secs(8));

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
    assert!(
        err.contains("FAILED: the reload failed: last reload: FAILED"),
        "baton's reason: {err}"
    );
    assert_eq!(current(), good1);
    serves("good1");
    let listed = names();
    assert_eq!(listed.len(), 3, "the failed release is left: {listed:?}");
    let broken = listed
        .iter()
        .find(|n| *n != FIRST && **n != good1)
        .unwrap()
        .clone();
    let why = std::fs::read_to_string(r.dir.join("releases").join(&broken).join(".deploy-failed"))
        .expect("the failed release is marked");
    assert!(why.contains("rolled back"), "{why}");

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

/// A reload command that fails is judged by what baton serves once its rollout has ended (a
/// new user's trial: `baton reload --timeout 1s` gave up on an app that takes 3 s to start;
/// the script pointed `current` back and printed the previous reload's `last reload: ok` as
/// the reason, while baton went on and served the new release), with `releases/` a symlink
/// (releases on another disk: baton names the resolved paths) and the reload command running
/// `"$BATON"` (baton is not on `PATH`):
/// 1. a release that takes 3 s to start: the command gives up after 1 s; baton serves the new
///    release, so it is deployed (exit 0, `current` kept, the log says so);
/// 2. a reload command that cannot run (`not found`): nothing was tried; `current` pointed
///    back, exit 1 with the command's own output and exit status, not a stale reason;
/// 3. a release whose workers fail after 2 s, the command giving up after 1 s: baton rolls it
///    back; `current` pointed back, exit 1 with baton's reason (its last reload tried the new
///    release);
/// 4. a good release: the two failed ones (`.deploy-failed`) are pruned, what served is kept.
#[test]
fn a_failed_reload_command_is_judged_by_what_baton_serves() {
    let _g = serial();
    const FIRST: &str = "20000101-000001";
    let mut layout = None;
    let baton = Baton::start("deploy-judged", |port, ctl| {
        let dir = ctl.parent().expect("scratch dir");
        let root = dir.join("srv");
        std::fs::create_dir_all(dir.join("bigdisk/releases")).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink("../bigdisk/releases", root.join("releases")).unwrap();
        let r = Releases::new(&root);
        r.add(FIRST, true);
        r.point(FIRST);
        let text = releases_config(port, ctl, &run_current(&r.current()), 2, "", "");
        layout = Some(r);
        text
    });
    let r = layout.expect("layout");
    let cfg = baton.config.display().to_string();
    let deploy = |reload: &str, build: &str, args: &[&str]| {
        let out = Command::new("sh")
            .arg(deploy_sh())
            .args(["--service", "api", "--keep", "1", "--root"])
            .arg(&r.dir)
            .args([
                "--config",
                &cfg,
                "--reload-cmd",
                reload,
                "--",
                "sh",
                "-c",
                build,
            ])
            .args(args)
            .env("BATON", baton_bin())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), err)
    };
    let names = || release_names(&r);
    let current = || current_name(&r);
    let serves = |mark: &str| serves_alone(&baton, mark, Duration::from_secs(15));
    let failed_mark = |name: &str| {
        std::fs::read_to_string(r.dir.join("releases").join(name).join(".deploy-failed"))
            .unwrap_or_default()
    };
    let hello = example_bin("hello").display().to_string();
    // run.sh: sleep $2 seconds, then answer with mark $1 (hello) or exit 1 (`fail`)
    const RUN_SH: &str = r#"if [ "$1" = fail ]; then last='exit 1'; else last="export HELLO_MARK=$1; exec $0"; fi
printf '#!/bin/sh\nsleep %s\n%s\n' "$2" "$last" > run.sh && chmod 755 run.sh"#;
    let giving_up = format!("\"$BATON\" reload --timeout 1s --config '{cfg}'");

    // 1. the app takes 3 s to start; the reload command gives up after 1 s
    let (code, err) = deploy(&giving_up, RUN_SH, &[&hello, "slow", "3"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("no outcome after 1s"),
        "the command's own output: {err}"
    );
    assert!(
        err.contains(
            "the reload command failed (exit status 1), but baton serves the new release: deployed"
        ),
        "{err}"
    );
    let slow = current();
    assert!(slow.starts_with("20") && slow != FIRST, "{slow}");
    assert_eq!(failed_mark(&slow), "");
    serves("slow");

    // 2. the reload command cannot run
    let (code, err) = deploy(
        &format!("no-such-baton reload --config '{cfg}'"),
        RUN_SH,
        &[&hello, "unreached", "0"],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("FAILED: the reload command failed (exit status 127): ")
            && err.contains("not found"),
        "{err}"
    );
    assert!(!err.contains("last reload: ok"), "no stale reason: {err}");
    assert!(
        err.contains(&format!("current pointed back -> releases/{slow}")),
        "{err}"
    );
    assert_eq!(current(), slow);
    let unreached = names()
        .into_iter()
        .find(|n| n != FIRST && *n != slow)
        .expect("the failed release is left");
    assert!(
        failed_mark(&unreached).contains("exit status 127"),
        "{}",
        failed_mark(&unreached)
    );
    serves("slow");

    // 3. the workers fail after 2 s; the reload command gives up after 1 s
    let (code, err) = deploy(&giving_up, RUN_SH, &[&hello, "fail", "2"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("FAILED: the reload failed: last reload: FAILED")
            && err.contains("exited before it was ready"),
        "baton's reason: {err}"
    );
    assert!(
        err.contains(&format!("current pointed back -> releases/{slow}")),
        "{err}"
    );
    assert_eq!(current(), slow);
    let broken = names()
        .into_iter()
        .find(|n| n != FIRST && *n != slow && *n != unreached)
        .expect("the failed release is left");
    assert!(
        failed_mark(&broken).contains("rolled back"),
        "{}",
        failed_mark(&broken)
    );
    serves("slow");

    // 4. a good release: the failed releases are pruned (they do not count toward --keep 1),
    //    the ones that served are kept
    let (code, err) = deploy(
        &format!("\"$BATON\" reload --config '{cfg}'"),
        RUN_SH,
        &[&hello, "good", "0"],
    );
    assert_eq!(code, Some(0), "{err}");
    let good = current();
    serves("good");
    let mut want = vec![FIRST, slow.as_str(), good.as_str()];
    want.sort();
    assert_eq!(names(), want, "{err}");
}

/// Whether a process still runs (a zombie no longer does: nothing may reap it here).
fn runs(pid: i32) -> bool {
    !matches!(pid_state(pid), None | Some('Z') | Some('X'))
}

/// The new release of a deploy of `root` whose previous one is `releases/1`.
fn the_new_release(root: &std::path::Path) -> std::path::PathBuf {
    let made: Vec<_> = std::fs::read_dir(root.join("releases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with("1"))
        .collect();
    assert_eq!(made.len(), 1, "{made:?}");
    made[0].clone()
}

/// A deploy interrupted (SIGTERM from a cancelled CI job, Ctrl-C's SIGINT) during the build or
/// the reload (a new user's trial: killed during the reload, it left `current` on the new
/// release, no log line, no `.deploy-failed`): it stops the child and what it started, points
/// `current` back when it was flipped, marks the release, says so (and to ask `baton status`:
/// baton may go on), releases the lock and exits 128 + the signal.
#[test]
fn an_interrupted_deploy_points_current_back_marks_the_release_and_stops_its_children() {
    for (stage, sig, code) in [
        ("reload", "TERM", 143),
        ("reload", "INT", 130),
        ("build", "TERM", 143),
        ("build", "HUP", 129),
    ] {
        let dir = scratch(&format!("deploy-interrupted-{stage}-{sig}"));
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("releases/1")).unwrap();
        std::os::unix::fs::symlink("releases/1", root.join("current")).unwrap();
        // the child leaves a process of its own running, and waits for it
        let busy = "sleep 60 & echo $! > \"$PIDS/busy.pid\"; echo busy; wait";
        let (reload, build) = if stage == "reload" {
            (busy, "true")
        } else {
            ("true", busy)
        };
        let log = dir.join("stderr");
        let mut deploy = Command::new("sh")
            .arg(deploy_sh())
            .args(["--service", "x", "--root"])
            .arg(&root)
            .args(["--reload-cmd", reload, "--", "sh", "-c", build])
            .env("BATON", "false")
            .env("PIDS", &dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let busy_pid = pid_in(&dir.join("busy.pid"));
        let new = the_new_release(&root);
        let flipped = std::fs::read_link(root.join("current")).unwrap();
        if stage == "reload" {
            assert!(new.ends_with(&flipped), "{flipped:?}");
        } else {
            assert_eq!(flipped, std::path::Path::new("releases/1"));
        }
        signal(deploy.id() as i32, sig);
        let mut status = None;
        wait_for("the deploy to exit", Duration::from_secs(15), || {
            status = deploy.try_wait().unwrap();
            status.is_some()
        });
        let err = std::fs::read_to_string(&log).unwrap();
        assert_eq!(status.unwrap().code(), Some(code), "{stage} {sig}: {err}");
        assert!(
            err.contains(&format!("INTERRUPTED (SIG{sig}) during the {stage}")),
            "{err}"
        );
        assert_eq!(
            std::fs::read_link(root.join("current")).unwrap(),
            std::path::Path::new("releases/1"),
            "{err}"
        );
        let why = std::fs::read_to_string(new.join(".deploy-failed")).expect("marked");
        assert!(why.contains(&format!("interrupted (SIG{sig})")), "{why}");
        if stage == "reload" {
            assert!(
                err.contains("current pointed back -> releases/1")
                    && err.contains("baton may still be rolling the release out")
                    && err.contains("false status --config"),
                "{err}"
            );
        }
        wait_for(
            "the child's own process to be stopped",
            Duration::from_secs(10),
            || !runs(busy_pid),
        );
        // nothing left behind: the lock is free, no temporary link
        let free = Command::new("flock")
            .args(["-n"])
            .arg(root.join(".deploy.lock"))
            .arg("true")
            .status()
            .unwrap();
        assert!(free.success(), "the lock is free: {err}");
        let mut names: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [".deploy.lock", "current", "releases"], "{err}");
    }
}

/// A leftover `ROOT/current.tmp`, a directory or a file (a new user's trial: the flip failed
/// with a bare `mv: cannot overwrite non-directory`, a link left inside `current.tmp`, the
/// release not marked) is not in the way: the deploy goes on and leaves it as it was.
#[test]
fn a_leftover_current_tmp_is_not_in_the_way() {
    for kind in ["dir", "file"] {
        let root = scratch(&format!("deploy-current-tmp-{kind}"));
        std::fs::create_dir_all(root.join("releases/1")).unwrap();
        std::os::unix::fs::symlink("releases/1", root.join("current")).unwrap();
        let tmp = root.join("current.tmp");
        if kind == "dir" {
            std::fs::create_dir(&tmp).unwrap();
        } else {
            std::fs::write(&tmp, "mine\n").unwrap();
        }
        let out = deploy(&root, &["true"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{kind}: {err}");
        let new = the_new_release(&root);
        assert!(new.ends_with(std::fs::read_link(root.join("current")).unwrap()));
        if kind == "dir" {
            assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "{err}");
        } else {
            assert_eq!(std::fs::read_to_string(&tmp).unwrap(), "mine\n");
        }
    }
}

/// A flip that fails (`current` made a directory meanwhile; the temporary link's own name,
/// `current.tmp.PID`, taken by a directory) goes through the failure path: exit 1, the reason
/// said, `current` unchanged, the release marked, no temporary link left.
#[test]
fn a_failed_flip_is_a_failed_deploy() {
    for case in ["current", "tmp"] {
        let root = scratch(&format!("deploy-flip-{case}"));
        std::fs::create_dir_all(root.join("releases/1")).unwrap();
        std::os::unix::fs::symlink("releases/1", root.join("current")).unwrap();
        // the build runs as the script's child (its $PPID): RELEASE_DIR is ROOT/releases/STAMP
        let build = if case == "current" {
            r#"rm "$RELEASE_DIR/../../current" && mkdir "$RELEASE_DIR/../../current""#
        } else {
            r#"mkdir "$RELEASE_DIR/../../current.tmp.$PPID""#
        };
        let child = Command::new("sh")
            .arg(deploy_sh())
            .args(["--service", "x", "--root"])
            .arg(&root)
            .args(["--reload-cmd", "true", "--", "sh", "-c", build])
            .env("BATON", "false")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{case}: {err}");
        assert!(
            err.contains("FAILED: current could not be pointed at releases/"),
            "{err}"
        );
        let new = the_new_release(&root);
        let why = std::fs::read_to_string(new.join(".deploy-failed")).expect("marked");
        assert!(why.contains("current could not be pointed at it"), "{why}");
        let mut names: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        if case == "current" {
            assert!(root.join("current").is_dir(), "{err}");
            assert_eq!(names, [".deploy.lock", "current", "releases"], "{err}");
        } else {
            let tmp = format!("current.tmp.{pid}");
            assert!(
                err.contains(&format!("{tmp} is in the way and is not a symlink")),
                "{err}"
            );
            assert_eq!(
                std::fs::read_link(root.join("current")).unwrap(),
                std::path::Path::new("releases/1")
            );
            assert_eq!(
                names,
                [".deploy.lock", "current", tmp.as_str(), "releases"],
                "{err}"
            );
        }
    }
}

/// The names in `releases/`, sorted.
fn release_names(r: &Releases) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(r.dir.join("releases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

/// The release `current` points at, by name.
fn current_name(r: &Releases) -> String {
    std::fs::read_link(r.current())
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("releases/")
        .to_string()
}

/// One generation is left (within `timeout`), and its answers carry `mark`.
fn serves_alone(baton: &Baton, mark: &str, timeout: Duration) {
    wait_for("one generation left", timeout, || {
        baton
            .status()
            .is_some_and(|s| s["generations"].as_array().map(Vec::len) == Some(1))
    });
    for _ in 0..5 {
        let (code, body) = http_get(baton.port, "/", Duration::from_secs(5)).expect("GET /");
        assert_eq!(code, 200, "{body}");
        assert!(body.ends_with(&format!(" mark {mark}\n")), "{body:?}");
    }
}
