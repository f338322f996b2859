//! A generation pins its release (issue 16): the releases layout deploy tools use
//! (`releases/<stamp>`, a `current` symlink flipped atomically), real processes. After a
//! failed reload the serving generation's restarts run *its* release, not the broken one
//! `current` points at; after a good one, the new release's restarts stay on it; the release
//! is in `baton status`, the reload's reply and every log line of the generation.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use common::*;

/// Start baton on release `1` (good), with `2` (broken) and `3` (good) deployed next to it.
fn start(name: &str, instances: u32, top: impl Fn(&Path) -> String) -> (Baton, Releases) {
    let mut layout = None;
    let baton = Baton::start(name, |port, ctl| {
        let dir = ctl.parent().expect("scratch dir");
        let r = Releases::new(dir);
        r.add("1", true);
        r.add("2", false);
        r.add("3", true);
        r.point("1");
        let tail = "\n[restart]\nbackoff_initial = \"100ms\"\n";
        let text = releases_config(port, ctl, &top(&r.current()), instances, "", tail);
        layout = Some(r);
        text
    });
    (baton, layout.expect("layout"))
}

fn generation(status: &Value, g: u64) -> Option<Value> {
    status["generations"]
        .as_array()?
        .iter()
        .find(|x| x["generation"].as_u64() == Some(g))
        .cloned()
}

/// (instance, pid, state, restarts) of generation `g`'s workers.
fn workers(baton: &Baton, g: u64) -> Vec<(u64, i32, String, u64)> {
    let s = baton.status().expect("status");
    let g = generation(&s, g).expect("generation");
    g["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| {
            (
                w["instance"].as_u64().unwrap(),
                w["pid"].as_i64().unwrap_or(0) as i32,
                w["state"].as_str().unwrap_or("").to_string(),
                w["restarts"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// SIGKILL each worker of generation `g` in turn and wait until it was started again and is
/// ready; each restarted worker must run release `mark`.
fn kill_each_and_see_it_restart(baton: &Baton, g: u64, mark: &str) {
    for (instance, pid, _, restarts) in workers(baton, g) {
        signal(pid, "KILL");
        let mut new = 0;
        wait_for(
            &format!("instance {instance} of generation {g} (pid {pid}) restarted and ready"),
            Duration::from_secs(10),
            || {
                let w = workers(baton, g);
                let w = w.iter().find(|w| w.0 == instance).expect("instance");
                new = w.1;
                w.1 != pid && w.1 != 0 && w.2 == "ready"
            },
        );
        assert_eq!(
            env_of(new, "HELLO_MARK").as_deref(),
            Some(mark),
            "instance {instance} restarted from release {mark}"
        );
        let w = workers(baton, g);
        let w = w.iter().find(|w| w.0 == instance).expect("instance");
        assert_eq!(w.3, restarts + 1, "one restart, no crash loop: {w:?}");
    }
    // all ready, none restarting, and every answer from the release
    assert!(workers(baton, g).iter().all(|w| w.2 == "ready"));
    for _ in 0..20 {
        let (code, body) = http_get(baton.port, "/", Duration::from_secs(5)).expect("GET /");
        assert_eq!(code, 200, "{body}");
        assert!(
            body.ends_with(&format!(" mark {mark}\n")),
            "answered from another release: {body:?}"
        );
    }
}

/// Every log line of generation `g` names release `path`.
fn log_lines_name_the_release(baton: &Baton, g: u64, path: &str) {
    let log = baton.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("baton_generation={g}")))
        .collect();
    assert!(lines.len() >= 3, "generation {g} logged: {log}");
    for l in lines {
        assert!(
            l.contains(&format!("baton_release=\"{path}\"")),
            "a line of generation {g} without its release {path}: {l}"
        );
    }
}

/// The scenario: `command = [".../current/run.sh"]`; `current` flipped to a broken
/// release; the reload is rolled back; then generation 1's workers are killed, one by one.
/// They must restart from generation 1's release and serve (before: from the broken one, a
/// crash loop).
fn restarts_after_a_failed_reload(instances: u32) {
    restarts_after_a_failed_reload_of(&format!("pin-failed-{instances}"), instances, |cur| {
        format!("command = [\"{}/run.sh\"]", cur.display())
    });
}

fn restarts_after_a_failed_reload_of(name: &str, instances: u32, top: impl Fn(&Path) -> String) {
    let _g = serial();
    let (baton, r) = start(name, instances, top);
    let (r1, r2) = (r.path("1"), r.path("2"));
    let old = baton.serving_pids();
    r.point("2");
    let (ok, out, _) = baton.reload();
    assert!(!ok, "a broken release rolled out: {out}");
    wait_for("generation 2 gone", Duration::from_secs(6), || {
        baton
            .status()
            .is_some_and(|s| s["generations"].as_array().map(Vec::len) == Some(1))
    });
    assert_eq!(
        baton.serving_pids(),
        old,
        "the serving generation was touched"
    );
    kill_each_and_see_it_restart(&baton, 1, "1");

    // the reply named both releases; status and the log lines name them too
    assert!(
        out.contains(&format!("generation 2 (release {r2}) rolled back"))
            && out.contains("exited before it was ready")
            && out.contains(&format!("generation 1 still serving release {r1}")),
        "{out}"
    );
    let s = baton.status().expect("status");
    assert_eq!(generation(&s, 1).unwrap()["release"], r1.as_str());
    assert_eq!(s["last_reload"]["release"], r1.as_str());
    log_lines_name_the_release(&baton, 1, &r1);
    log_lines_name_the_release(&baton, 2, &r2);
}

#[test]
fn restarts_after_a_failed_reload_run_the_serving_release_1_instance() {
    restarts_after_a_failed_reload(1);
}

#[test]
fn restarts_after_a_failed_reload_run_the_serving_release_2_instances() {
    restarts_after_a_failed_reload(2);
}

#[test]
fn restarts_after_a_failed_reload_run_the_serving_release_3_instances() {
    restarts_after_a_failed_reload(3);
}

/// An interpreter and a script through the link, without `release` (a new user's trial: only
/// `release` pinned arguments, so `node /srv/api/current/server.js` restarted from the broken
/// release): the script's path is pinned, and names the release.
#[test]
fn a_script_argument_through_the_link_is_pinned_without_release() {
    restarts_after_a_failed_reload_of("pin-arg", 2, |cur| {
        format!("command = [\"/bin/sh\", \"{}/run.sh\"]", cur.display())
    });
}

/// A good reload: the new release serves, and its restarts stay on it when `current` moves
/// on (here to a broken release, not reloaded yet). `cwd` is the release, the command
/// relative to it.
#[test]
fn after_a_good_reload_restarts_stay_on_the_new_release() {
    let _g = serial();
    let (baton, r) = start("pin-good", 2, |cur| {
        format!("command = [\"./run.sh\"]\ncwd = \"{}\"", cur.display())
    });
    let r3 = r.path("3");
    r.point("3");
    let reply = baton.reload_json();
    assert_eq!(reply["generation"], 2);
    assert_eq!(reply["release"], r3.as_str(), "{reply}");
    let message = reply["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(&format!("generation 2 serving release {r3} (")),
        "{message}"
    );
    baton.wait_serving(Duration::from_secs(10));
    r.point("2");
    kill_each_and_see_it_restart(&baton, 2, "3");
    let pid = baton.serving_pids()[0];
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/cwd")).expect("cwd"),
        PathBuf::from(&r3),
        "the workers run in the resolved release"
    );
    // the status table names it
    let out = Command::new(baton_bin())
        .args(["status", "--control"])
        .arg(&baton.control)
        .output()
        .expect("baton status");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&format!("generation 2 (serving): release {r3}\n")),
        "{table}"
    );
    log_lines_name_the_release(&baton, 2, &r3);
}

/// `release` names the directory when the command lives elsewhere (`/bin/sh` runs a script
/// under it): the argument under it is rewritten, so restarts after a flip keep the release.
/// When `release` does not resolve, `baton check` says so (an error with `--strict`), and a
/// reload fails with the reason and leaves the serving generation untouched.
#[test]
fn the_release_key_pins_the_arguments_under_it_and_must_resolve() {
    let _g = serial();
    let (baton, r) = start("pin-key", 2, |cur| {
        format!(
            "command = [\"/bin/sh\", \"{cur}/run.sh\"]\nrelease = \"{cur}\"",
            cur = cur.display()
        )
    });
    let r1 = r.path("1");
    let s = baton.status().expect("status");
    assert_eq!(generation(&s, 1).unwrap()["release"], r1.as_str());
    r.point("2");
    kill_each_and_see_it_restart(&baton, 1, "1");

    // `current` gone: check and reload say so
    let old = baton.serving_pids();
    fs::remove_file(r.current()).expect("rm current");
    let check = |strict: bool| {
        let mut c = Command::new(baton_bin());
        c.args(["check", "--config"]).arg(&baton.config);
        if strict {
            c.arg("--strict");
        }
        let out = c.output().expect("baton check");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let why = format!(
        "the release directory {} does not exist",
        r.current().display()
    );
    let (code, text) = check(false);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("warning") && text.contains(&why), "{text}");
    let (code, text) = check(true);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("release") && text.contains(&why), "{text}");
    let (ok, out, dt) = baton.reload();
    assert!(!ok, "{out}");
    assert!(out.contains(&why), "{out}");
    assert!(
        out.contains(&format!("generation 1 still serving release {r1}")),
        "{out}"
    );
    assert!(dt < Duration::from_secs(2), "{dt:?}");
    assert_eq!(baton.serving_pids(), old);
    assert_eq!(baton.serving_generation(), 1);
}

/// The serving generation's release deleted under it (a new user's trial: `baton status` said
/// "serving" alone while no worker lived): its killed workers cannot start again, the status
/// header says none is ready, and each worker's last exit names the missing directory.
#[test]
fn a_deleted_serving_release_shows_in_the_status_header() {
    let _g = serial();
    let (baton, r) = start("pin-deleted", 2, |cur| {
        format!("command = [\"./run.sh\"]\ncwd = \"{}\"", cur.display())
    });
    let r1 = r.path("1");
    let header = || {
        let out = Command::new(baton_bin())
            .args(["status", "--control"])
            .arg(&baton.control)
            .output()
            .expect("baton status");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let table = header();
    assert!(
        table.contains("— serving generation 1 (2/2 ready) —"),
        "{table}"
    );
    fs::remove_dir_all(&r1).expect("rm release 1");
    for (_, pid, ..) in workers(&baton, 1) {
        signal(pid, "KILL");
    }
    let r1_gone = format!("chdir {r1}: No such file");
    wait_for(
        "generation 1's workers fail to start again, for want of their release",
        Duration::from_secs(10),
        || {
            let s = baton.status().expect("status");
            let g = generation(&s, 1).expect("generation 1");
            g["workers"].as_array().unwrap().iter().all(|w| {
                w["state"] != "ready" && w["last_exit"].as_str().unwrap_or("").contains(&r1_gone)
            })
        },
    );
    let table = header();
    assert!(
        table.contains("— serving generation 1 (0/2 ready: none answers) —"),
        "{table}"
    );
}

/// A reload and a rollback never share one rollout (a new user's trial: a reload asked for
/// while a rollback waited exited 0 while its release never ran, and so did a reload queued
/// before a rollback). A rollback asked for while a rollout runs is refused (a second trial:
/// it replaced the generation baton had kept serving when that rollout failed). Behind a
/// drain: a rollback waits, and a reload or a second rollback asked for meanwhile is refused
/// at once with the reason; a rollback asked for while a reload waits is refused too. Each
/// client that is told "ok" got its own release.
#[test]
fn a_reload_and_a_rollback_never_share_a_rollout() {
    let _g = serial();
    let (baton, r) = start("pin-queue", 1, |cur| {
        format!("command = [\"{}/run.sh\"]", cur.display())
    });
    // a release that takes 1.5 s to start, and one that ignores SIGTERM (its drain lasts
    // the whole 3 s deadline): rollouts and drains long enough to ask during
    let release = |name: &str, env: &str, args: &str| {
        let dir = r
            .path("1")
            .replace("/releases/1", &format!("/releases/{name}"));
        fs::create_dir_all(&dir).expect("release");
        fs::write(
            format!("{dir}/run.sh"),
            format!(
                "#!/bin/sh\nexport HELLO_MARK={name} {env}\nexec {} {args}\n",
                example_bin("hello").display()
            ),
        )
        .expect("run.sh");
        Command::new("chmod")
            .args(["755", &format!("{dir}/run.sh")])
            .status()
            .expect("chmod");
        dir
    };
    let slow = release("slow", "HELLO_STARTUP_MS=1500", "");
    release("stubborn", "", "--fail ignore-sigterm");
    let client = |args: &[&str]| {
        Command::new(baton_bin())
            .args(args)
            .arg("--control")
            .arg(&baton.control)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("baton client")
    };
    let text = |c: std::process::Child| {
        let out = c.wait_with_output().expect("client");
        let t = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), t)
    };
    let state_is = |what: &str, state: &str| {
        wait_for(what, Duration::from_secs(5), || {
            baton.status().is_some_and(|s| s["state"] == state)
        })
    };
    let draining = |what: &str| {
        wait_for(what, Duration::from_secs(5), || {
            baton.status().is_some_and(|s| {
                s["generations"]
                    .as_array()
                    .is_some_and(|g| g.iter().any(|g| g["role"] == "retiring"))
            })
        })
    };
    let reload_ok = |name: &str| {
        r.point(name);
        let (ok, out, _) = baton.reload();
        assert!(ok, "{out}");
    };
    // generation 2 on release 3: generation 1 is one to roll back to
    reload_ok("3");

    // 1. during a rollout: a rollback is refused
    r.point("slow");
    let reload = client(&["reload"]);
    state_is("a rollout in progress", "rolling-out");
    let (code, t) = text(client(&["rollback", "--to", "1"]));
    assert_eq!(code, Some(1), "{t}");
    assert!(t.contains("generation 3 is rolling out"), "{t}");
    let (code, t) = text(reload);
    assert_eq!(code, Some(0), "{t}");
    assert!(t.contains(&format!("serving release {slow}")), "{t}");

    // 2. behind a drain: a rollback waits; a reload and a second rollback are refused
    reload_ok("stubborn");
    r.point("3");
    let reload = client(&["reload"]);
    assert_eq!(text(reload).0, Some(0));
    draining("the stubborn generation draining");
    let rollback = client(&["rollback", "--to", "1"]);
    wait_for("the rollback queued", Duration::from_secs(5), || {
        baton.log_text().contains("rollback_requested")
    });
    for args in [&["reload"][..], &["rollback"][..]] {
        let (code, t) = text(client(args));
        assert_eq!(code, Some(1), "{args:?}: {t}");
        assert!(
            t.contains("a rollback to generation 1 is queued: ask again once it has ended"),
            "{args:?}: {t}"
        );
        // a new user's trial: it promised "`baton status` shows it", which it does not
        assert!(!t.contains("baton status"), "{args:?}: {t}");
    }
    let (code, t) = text(rollback);
    assert_eq!(code, Some(0), "{t}");
    assert!(
        t.contains(&format!("serving release {}", r.path("1"))),
        "{t}"
    );

    // 3. a reload waits behind a drain: a rollback asked meanwhile is refused
    reload_ok("stubborn");
    r.point("3");
    assert_eq!(text(client(&["reload"])).0, Some(0));
    draining("the stubborn generation draining again");
    let queued = || baton.log_text().matches("reload queued").count();
    let before = queued();
    let waiting = client(&["reload"]);
    wait_for("the reload queued", Duration::from_secs(5), || {
        queued() > before
    });
    let (code, t) = text(client(&["rollback", "--to", "1"]));
    assert_eq!(code, Some(1), "{t}");
    assert!(t.contains("a reload is queued"), "{t}");
    let (code, t) = text(waiting);
    assert_eq!(code, Some(0), "{t}");
    assert!(
        t.contains(&format!("serving release {}", r.path("3"))),
        "{t}"
    );
}

/// A config with a syntax error (a second trial: `rollback`, `status` and `history --config F`
/// all stopped at the error, though a rollback needs only the history): the clients ask the
/// baton at the file's own `control` line, saying why; without one they say to pass
/// --control.
#[test]
fn clients_reach_baton_through_a_broken_config_by_its_control_line() {
    let _g = serial();
    let (baton, r) = start("pin-broken", 1, |cur| {
        format!("command = [\"{}/run.sh\"]", cur.display())
    });
    r.point("3");
    let (ok, out, _) = baton.reload();
    assert!(ok, "{out}");
    let text = fs::read_to_string(&baton.config).expect("config");
    fs::write(&baton.config, format!("{text}\nbogus = [\n")).expect("break it");
    let run = |args: &[&str]| {
        let out = Command::new(baton_bin())
            .args(args)
            .arg("--config")
            .arg(&baton.config)
            .output()
            .expect("client");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = run(&["status"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("warning: ") && err.contains("(its `control` line)"),
        "{err}"
    );
    let (code, out, err) = run(&["rollback"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(&format!("serving release {}", r.path("1"))),
        "{out}"
    );
    // no control line and no default socket: the error says what to pass
    fs::write(&baton.config, "command = [\"/bin/true\"]\nbogus = [\n").expect("break it");
    let (code, _, err) = run(&["status"]);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("pass --control PATH"), "{err}");
}
