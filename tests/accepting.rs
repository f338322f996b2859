//! `readiness.kind = "accepting"`: a worker is ready once its process tree waits for
//! connections on every passed socket, as /proc shows it. No app change, no probe socket, no
//! READY=1: apps that take fd 3 and send nothing (uvicorn `--fd 3`, Node `listen({fd: 3})`, a
//! Go `FileListener`) get a real readiness check. Each way a server waits is tried with
//! `tests/apps/waiter.py`, which serves fd 3 only.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn waiter_config(
    port: u16,
    ctl: &std::path::Path,
    mode: &str,
    instances: u32,
    extra: &str,
) -> String {
    format!(
        r#"command = ["python3", "{app}", "{mode}"]
instances = {instances}
control = "{ctl}"

[sockets]
http = "127.0.0.1:{port}"

{extra}
"#,
        app = repo_dir().join("tests/apps/waiter.py").display(),
        ctl = ctl.display()
    )
}

/// Every way of waiting is seen, the worker is declared ready only after its (slow) start-up,
/// and a reload swaps to workers that answer.
#[test]
fn every_way_of_waiting_for_connections_counts_as_ready() {
    let _g = serial();
    let n = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    for (mode, instances) in [
        ("accept", 1),
        ("select", n),
        ("poll", n + 1),
        ("epoll", n + 1),
    ] {
        let baton = Baton::start(&format!("accepting-{mode}"), |port, ctl| {
            waiter_config(
                port,
                ctl,
                mode,
                instances,
                "[env]\nWAITER_STARTUP_MS = \"400\"\n\n[readiness]\nkind = \"accepting\"\ntimeout = \"10s\"\n",
            )
        });
        let old = baton.serving_pids();
        assert_eq!(old.len(), instances as usize, "{mode}");
        let (code, body) = http_get(baton.port, "/", Duration::from_secs(10)).expect("GET");
        assert_eq!(code, 200, "{mode}: {body}");
        let r = baton.reload_json();
        assert_eq!(r["ok"], true, "{mode}: {r}");
        // ready only once it waited: after its 400 ms start-up, not at its spawn
        let slowest = r["slowest_start_us"].as_u64().expect("slowest_start_us");
        assert!(
            slowest >= 400_000,
            "{mode}: ready after {slowest} us, before its start-up ended"
        );
        let new = baton.serving_pids();
        assert!(new.iter().all(|p| !old.contains(p)), "{mode}");
        wait_for(
            &format!("{mode}: a new worker answers"),
            Duration::from_secs(5),
            || {
                http_get(baton.port, "/", Duration::from_secs(10))
                    .is_ok_and(|(_, b)| new.iter().any(|p| b.trim() == format!("ok {p}")))
            },
        );
        assert!(
            baton.log_text().contains("ready (readiness check passed)"),
            "{mode}: {}",
            baton.log_text()
        );
    }
}

/// An app that holds its socket but never waits on it is not ready: the reload fails with the
/// socket it never waited on, and the serving generation stays.
#[test]
fn an_app_that_never_waits_on_its_socket_is_not_ready() {
    let _g = serial();
    let baton = Baton::start("accepting-none", |port, ctl| {
        waiter_config(
            port,
            ctl,
            "epoll",
            2,
            "[readiness]\nkind = \"accepting\"\ntimeout = \"1s\"\n",
        )
    });
    let old = baton.serving_pids();
    baton.write_config(&baton.config_text().replace("\"epoll\"", "\"none\""));
    let t0 = Instant::now();
    let (ok, out, _) = baton.reload();
    assert!(!ok, "{out}");
    assert!(
        out.contains("not ready after 1s (last check: no process of the worker's tree waits for connections on `http` (fd 3))"),
        "{out}"
    );
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(baton.serving_pids(), old);
}

/// `kind = "http"` with an app that serves only fd 3: the probe goes to the private socket (fd
/// 4), which the app never accepts on. The reason says exactly that, and what to use instead.
#[test]
fn an_http_probe_on_an_app_that_serves_only_fd_3_says_why_it_fails() {
    let _g = serial();
    let mut baton = Baton::spawn("probe-fd4", |port, ctl| {
        waiter_config(
            port,
            ctl,
            "epoll",
            1,
            "[readiness]\nkind = \"http\"\ninterval = \"100ms\"\nprobe_timeout = \"200ms\"\ntimeout = \"1s\"\n",
        )
    });
    let st = baton.wait_exit(Duration::from_secs(10));
    assert!(!st.success());
    let log = baton.log_text();
    assert!(
        log.contains(
            "the probe socket `baton-probe` (fd 4) was never accepted on: this app serves only `http` (fd 3); readiness.kind = \"accepting\" needs no probe socket"
        ),
        "{log}"
    );
}
