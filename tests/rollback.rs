//! A broken new generation is rolled back; the serving generation is untouched.

mod common;

use std::time::Duration;

use common::*;

/// Start a healthy generation, rewrite the config to a broken release, reload under load, and
/// check: reload fails within the readiness timeout + 1 s with a reason, the old pids are
/// unchanged and answering, no request failed, and the broken generation's pids are gone.
fn rollback_case(name: &str, readiness: &str, broken_env: &str, timeout: Duration, reason: &str) {
    let _g = serial();
    let good = |port: u16, ctl: &std::path::Path| {
        hello_config(
            port,
            ctl,
            2,
            "",
            &format!("{readiness}\n[drain]\ntimeout = \"3s\"\n"),
        )
    };
    let baton = Baton::start(name, good);
    let good_text = baton.config_text();
    let old = baton.serving_pids();
    let keep = Load::start(baton.port, "keepalive", 3, 500);
    let close = Load::start(baton.port, "close", 3, 300);

    baton.write_config(&format!("{good_text}\n[env]\n{broken_env}\n"));
    let (ok, out, dt) = baton.reload();
    assert!(!ok, "reload of a broken release succeeded: {out}");
    assert!(
        out.contains(reason),
        "reload output should say why ({reason:?}): {out}"
    );
    assert!(
        dt <= timeout + Duration::from_secs(1),
        "reload took {dt:?}, readiness timeout {timeout:?}"
    );
    assert_eq!(baton.serving_pids(), old, "serving generation changed");
    assert_eq!(baton.serving_generation(), 1);
    let s = baton.status().expect("status");
    assert_eq!(s["reloads_failed"], 1);
    // the failed generation is retired gently and goes away
    wait_for("broken generation gone", Duration::from_secs(6), || {
        baton
            .status()
            .is_some_and(|s| s["generations"].as_array().map(|g| g.len()) == Some(1))
    });
    for _ in 0..20 {
        let p = answering_pid(baton.port);
        assert!(
            old.contains(&p),
            "answered by {p}, not the old generation {old:?}"
        );
    }
    assert!(old.iter().all(|p| pid_exists(*p)));
    assert_no_failures(&keep.stop(), 5);
    assert_no_failures(&close.stop(), 5);

    // and the next good release still rolls out
    baton.write_config(&good_text);
    let (ok, out, _) = baton.reload();
    assert!(ok, "good reload after a rollback failed: {out}");
    assert_eq!(baton.serving_generation(), 3);
}

#[test]
fn new_generation_exits_at_start() {
    rollback_case(
        "exit-at-start",
        "[readiness]\nkind = \"notify\"\ntimeout = \"5s\"\n",
        "HELLO_FAIL = \"exit-at-start\"",
        Duration::from_secs(5),
        "exited before it was ready",
    );
}

#[test]
fn new_generation_never_ready() {
    rollback_case(
        "never-ready",
        "[readiness]\nkind = \"notify\"\ntimeout = \"2s\"\n",
        "HELLO_FAIL = \"never-ready\"",
        Duration::from_secs(2),
        "not ready after 2s",
    );
}

#[test]
fn new_generation_crashes_after_ready_before_swap() {
    rollback_case(
        "crash-after-ready",
        "[readiness]\nkind = \"notify\"\ntimeout = \"3s\"\nstable = \"1s\"\n",
        "HELLO_FAIL = \"crash-after-ready\"\nHELLO_CRASH_AFTER_MS = \"200\"",
        Duration::from_secs(3),
        "exited after it was ready",
    );
}

/// The old generation answers 200 on the shared port; only the new generation's private probe
/// socket tells the truth.
#[test]
fn new_generation_unhealthy_on_http_check() {
    rollback_case(
        "unhealthy",
        "[readiness]\nkind = \"http\"\npath = \"/healthz\"\ntimeout = \"2s\"\ninterval = \"100ms\"\n",
        "HELLO_FAIL = \"unhealthy\"",
        Duration::from_secs(2),
        "HTTP 503",
    );
}

/// A command that does not exist fails the reload at once, with the reason.
#[test]
fn missing_command_fails_reload() {
    let _g = serial();
    let baton = Baton::start("missing-cmd", |port, ctl| {
        hello_config(port, ctl, 1, "", "")
    });
    let old = baton.serving_pids();
    let text = baton.config_text();
    let hello = example_bin("hello").display().to_string();
    baton.write_config(&text.replace(&hello, "/nonexistent/app"));
    let (ok, out, _) = baton.reload();
    assert!(!ok);
    assert!(out.contains("/nonexistent/app"), "{out}");
    assert_eq!(baton.serving_pids(), old);
}

/// A config error aborts the reload before anything starts; the message names file, line, key.
#[test]
fn bad_config_keeps_the_running_generation() {
    let _g = serial();
    let baton = Baton::start("bad-config", |port, ctl| hello_config(port, ctl, 1, "", ""));
    let old = baton.serving_pids();
    let text = baton.config_text();
    baton.write_config(&format!("{text}\n[drain]\ntimout = \"3s\"\n"));
    let (ok, out, _) = baton.reload();
    assert!(!ok, "{out}");
    assert!(out.contains("baton.toml:"), "file named: {out}");
    assert!(out.contains("drain.timout"), "key named: {out}");
    assert_eq!(baton.serving_pids(), old);
    assert_eq!(baton.serving_generation(), 1);
    assert_eq!(children_of(baton.pid()), old, "nothing was started");
}

/// `exec` readiness: the check command gets the worker's pid; a check that keeps failing rolls
/// the new generation back with its exit status as the reason.
#[test]
fn exec_check_gates_the_swap() {
    let _g = serial();
    let check = |ok: bool| {
        format!(
            "[readiness]\nkind = \"exec\"\nexec = [\"/bin/sh\", \"-c\", \"test -d /proc/$BATON_WORKER_PID && {}\"]\ninterval = \"50ms\"\ntimeout = \"1s\"\n",
            if ok { "true" } else { "exit 7" }
        )
    };
    let baton = Baton::start("exec-check", |port, ctl| {
        hello_config(port, ctl, 2, "", &check(true))
    });
    let old = baton.serving_pids();
    let text = baton.config_text();
    baton.write_config(&text.replace("&& true", "&& exit 7"));
    let (ok, out, _) = baton.reload();
    assert!(!ok, "{out}");
    assert!(out.contains("exec check exit code 7"), "{out}");
    assert_eq!(baton.serving_pids(), old);
    baton.write_config(&text);
    let (ok, out, _) = baton.reload();
    assert!(ok, "{out}");
}

/// `tcp` readiness: the worker must accept a connection on its private probe socket (a bare
/// connect would succeed through the kernel's backlog, since baton created the listener).
#[test]
fn tcp_check_needs_the_new_worker_to_accept() {
    let _g = serial();
    let baton = Baton::start("tcp-check", |port, ctl| {
        hello_config(
            port,
            ctl,
            1,
            "",
            "[readiness]\nkind = \"tcp\"\ninterval = \"50ms\"\nprobe_timeout = \"200ms\"\ntimeout = \"1s\"\n",
        )
    });
    let (ok, out, _) = baton.reload();
    assert!(ok, "{out}");
    assert!(baton.log_text().contains("readiness check passed"));
    let old = baton.serving_pids();
    // a worker that is alive but never accepts (it crashes 5 s later) cannot pass it
    let text = baton.config_text();
    baton.write_config(&format!(
        "{text}\n[env]\nHELLO_FAIL = \"crash-after-ready\"\nHELLO_CRASH_AFTER_MS = \"5000\"\n"
    ));
    let (ok, out, dt) = baton.reload();
    assert!(!ok, "{out}");
    assert!(
        out.contains("the probe socket `baton-probe` (fd 4) was never accepted on: the app waits for connections on none of its sockets yet"),
        "{out}"
    );
    assert!(dt < std::time::Duration::from_secs(2), "{dt:?}");
    assert_eq!(baton.serving_pids(), old);
    // nor does one that exits at start
    baton.write_config(&format!("{text}\n[env]\nHELLO_FAIL = \"exit-at-start\"\n"));
    let (ok, out, _) = baton.reload();
    assert!(!ok, "{out}");
    assert_eq!(baton.serving_pids(), old);
}
