//! What a worker process sees and how baton ends it: descriptors, environment, drain deadline,
//! crash restarts, shutdown.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// A worker holds exactly 0, 1, 2 and the passed socket; LISTEN_PID is its own pid; fd 3 is the
/// very socket baton listens on; stdin is /dev/null.
#[test]
fn worker_gets_exactly_the_sockets_and_its_own_listen_pid() {
    let _g = serial();
    // `sleep` opens nothing itself, so its descriptor table is exactly what baton passed
    let baton = Baton::start("fds", |port, ctl| {
        format!(
            r#"command = ["/bin/sleep", "1000"]
instances = 2
control = "{}"
[sockets]
http = "127.0.0.1:{port}"
[readiness]
kind = "delay"
delay = "50ms"
"#,
            ctl.display()
        )
    });
    let status = baton.status().expect("status");
    let listen_fd = status["sockets"][0]["fd"].as_i64().expect("socket fd") as i32;
    let baton_sock = fd_target(baton.pid(), listen_fd);
    assert!(baton_sock.starts_with("socket:["), "{baton_sock}");
    for pid in baton.serving_pids() {
        assert_eq!(fds(pid), vec![0, 1, 2, 3], "descriptors of worker {pid}");
        assert_eq!(
            fd_target(pid, 3),
            baton_sock,
            "fd 3 is baton's listening socket"
        );
        assert_eq!(fd_target(pid, 0), "/dev/null");
        assert_eq!(env_of(pid, "LISTEN_PID"), Some(pid.to_string()));
        assert_eq!(env_of(pid, "LISTEN_FDS").as_deref(), Some("1"));
        assert_eq!(env_of(pid, "LISTEN_FDNAMES").as_deref(), Some("http"));
        assert_eq!(env_of(pid, "BATON_GENERATION").as_deref(), Some("1"));
        assert!(env_of(pid, "NOTIFY_SOCKET").is_some_and(|p| p.starts_with('/')));
        // own process group, signal mask empty (SigBlk) and nothing ignored (SigIgn)
        let st = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let field = |k: &str| {
            st.lines()
                .find(|l| l.starts_with(k))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
                .unwrap_or_default()
        };
        assert_eq!(
            field("SigBlk:"),
            "0000000000000000",
            "blocked signals of {pid}"
        );
        assert_eq!(
            field("SigIgn:"),
            "0000000000000000",
            "ignored signals of {pid}"
        );
        const PGRP: usize = 5;
        assert_eq!(
            stat_number(pid, PGRP),
            i64::from(pid),
            "worker leads its own process group"
        );
    }
    let instances: Vec<String> = baton
        .serving_pids()
        .iter()
        .map(|p| env_of(*p, "BATON_INSTANCE").unwrap_or_default())
        .collect();
    let mut sorted = instances.clone();
    sorted.sort();
    assert_eq!(sorted, vec!["0", "1"]);
}

/// With an http check, the worker also gets its private probe socket, named in LISTEN_FDNAMES.
#[test]
fn http_check_adds_a_private_probe_socket() {
    let _g = serial();
    let baton = Baton::start("probe-fd", |port, ctl| {
        hello_config(
            port,
            ctl,
            1,
            "",
            "[readiness]\nkind = \"http\"\npath = \"/healthz\"\n",
        )
    });
    let pid = baton.serving_pids()[0];
    assert_eq!(env_of(pid, "LISTEN_FDS").as_deref(), Some("2"));
    assert_eq!(
        env_of(pid, "LISTEN_FDNAMES").as_deref(),
        Some("http:baton-probe")
    );
    assert_eq!(env_of(pid, "LISTEN_PID"), Some(pid.to_string()));
}

/// A worker that ignores SIGTERM is SIGKILLed at the drain deadline (±250 ms) and leaves no
/// zombie.
#[test]
fn sigterm_ignoring_worker_is_killed_at_the_deadline() {
    let _g = serial();
    let baton = Baton::start("ignore-term", |port, ctl| {
        hello_config(
            port,
            ctl,
            1,
            "",
            "[env]\nHELLO_FAIL = \"ignore-sigterm\"\n\n[drain]\ntimeout = \"1s\"\n",
        )
    });
    let old = baton.serving_pids()[0];
    let text = baton.config_text();
    baton.write_config(&text.replace("HELLO_FAIL = \"ignore-sigterm\"", ""));
    let (ok, out, _) = baton.reload();
    let signalled = Instant::now(); // the reply comes right after SIGTERM went out
    assert!(ok, "{out}");
    // still alive (ignoring SIGTERM) for most of the deadline
    std::thread::sleep(Duration::from_millis(700));
    assert!(pid_exists(old), "worker died before the drain deadline");
    wait_for("old worker gone", Duration::from_secs(3), || {
        !pid_exists(old)
    });
    let gone = signalled.elapsed();
    assert!(
        gone >= Duration::from_millis(750) && gone <= Duration::from_millis(1250),
        "killed after {gone:?}, deadline 1s"
    );
    // the pid leaves /proc when baton reaps it, a moment before baton logs the exit
    let exited = format!("worker {old} (generation 1, instance 0) exited: signal SIGKILL");
    wait_for("the exit logged", Duration::from_secs(3), || {
        baton.log_text().contains(&exited)
    });
    let log = baton.log_text();
    assert!(
        log.contains("did not exit within the drain timeout"),
        "{log}"
    );
    assert!(
        log.contains("; killed at the drain deadline, 1s after SIGTERM"),
        "{log}"
    );
    assert_eq!(children_of(baton.pid()).len(), 1, "no zombie left behind");
}

/// A helper process that a worker started (same process group) does not outlive the worker.
#[test]
fn helpers_left_by_a_worker_are_killed() {
    let _g = serial();
    let hello = example_bin("hello");
    let baton = Baton::start("helpers", |port, ctl| {
        format!(
            r#"command = ["/bin/sh", "-c", "sleep 1000 & exec {}"]
instances = 1
control = "{}"
[sockets]
http = "127.0.0.1:{port}"
[drain]
timeout = "3s"
"#,
            hello.display(),
            ctl.display()
        )
    });
    let worker = baton.serving_pids()[0];
    let helper = children_of(worker);
    assert_eq!(helper.len(), 1, "the background sleep");
    let (ok, out, _) = baton.reload();
    assert!(ok, "{out}");
    wait_for("worker and its helper gone", Duration::from_secs(5), || {
        !pid_exists(worker) && !pid_exists(helper[0])
    });
}

/// A crashed worker of the serving generation is restarted; its sibling is untouched.
#[test]
fn crashed_worker_is_restarted_with_backoff() {
    let _g = serial();
    let baton = Baton::start("crash", |port, ctl| hello_config(port, ctl, 2, "", ""));
    let pids = baton.serving_pids();
    signal(pids[0], "KILL");
    wait_for("replacement ready", Duration::from_secs(10), || {
        baton.status().is_some_and(|s| {
            let w = &s["generations"][0]["workers"];
            w.as_array().is_some_and(|ws| {
                ws.iter().all(|w| w["state"] == "ready") && ws.iter().any(|w| w["restarts"] == 1)
            })
        })
    });
    let now = baton.serving_pids();
    assert!(now.contains(&pids[1]), "sibling untouched");
    assert!(!now.contains(&pids[0]));
    assert!(!pid_exists(pids[0]));
    let s = baton.status().expect("status");
    let crashed = s["generations"][0]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["restarts"] == 1)
        .cloned()
        .unwrap();
    assert!(
        crashed["last_exit"]
            .as_str()
            .unwrap_or("")
            .contains("SIGKILL"),
        "{crashed}"
    );
}

/// A worker that keeps crashing is restarted with growing delays and shows as a crash loop.
#[test]
fn crash_loop_backs_off_and_shows_in_status() {
    let _g = serial();
    // ready, then dead 50 ms later, every time
    let baton = Baton::spawn("crash-loop", |port, ctl| {
        hello_config(
            port,
            ctl,
            1,
            "",
            "[env]\nHELLO_FAIL = \"crash-after-ready\"\nHELLO_CRASH_AFTER_MS = \"50\"\n\n[restart]\nbackoff_initial = \"50ms\"\nbackoff_max = \"1s\"\n",
        )
    });
    let t0 = Instant::now();
    wait_for("crash loop in status", Duration::from_secs(15), || {
        baton.status().is_some_and(|s| {
            s["generations"][0]["workers"][0]["state"] == "crash-loop"
                && s["generations"][0]["workers"][0]["restarts"].as_u64() >= Some(5)
        })
    });
    // five restarts took at least 50 + 100 + 200 + 400 ms of backoff
    assert!(
        t0.elapsed() >= Duration::from_millis(750),
        "{:?}",
        t0.elapsed()
    );
    assert!(baton.log_text().contains("(crash loop)"));
    let (text, _) = (
        String::from_utf8(
            std::process::Command::new(baton_bin())
                .args(["status", "--control"])
                .arg(&baton.control)
                .output()
                .expect("status")
                .stdout,
        )
        .expect("utf8"),
        (),
    );
    assert!(text.contains("crash-loop"), "{text}");
}

/// SIGTERM to baton drains: an in-flight request completes, every worker exits, baton exits 0.
#[test]
fn shutdown_drains_in_flight_requests() {
    let _g = serial();
    let mut baton = Baton::start("shutdown", |port, ctl| {
        hello_config(port, ctl, 2, "", "[drain]\ntimeout = \"10s\"\n")
    });
    let pids = baton.serving_pids();
    let port = baton.port;
    let slow = std::thread::spawn(move || http_get(port, "/slow?ms=1500", Duration::from_secs(10)));
    // wait until the request is in flight: a worker has an accepted connection
    wait_for("slow request accepted", Duration::from_secs(5), || {
        pids.iter().any(|p| fd_count(*p) > 6)
    });
    let st = baton.stop();
    assert!(st.success(), "baton exit status {st:?}");
    let (code, body) = slow.join().expect("thread").expect("slow request");
    assert_eq!(code, 200, "{body}");
    for p in pids {
        assert!(!pid_exists(p), "worker {p} outlived baton");
    }
    assert!(!baton.control.exists(), "control socket removed");
}

/// The exit line of each retired worker says how long it drained (stop signal to exit), and
/// the generation's last line gives the slowest drain: an app that cuts its requests short on
/// SIGTERM shows as one that "drains" in no time.
#[test]
fn retired_workers_report_their_drain_time() {
    let _g = serial();
    let baton = Baton::start("drain-time", |port, ctl| {
        hello_config(port, ctl, 1, "", "[drain]\ntimeout = \"10s\"\n")
    });
    let pid = baton.serving_pids()[0];
    let port = baton.port;
    let slow = std::thread::spawn(move || http_get(port, "/slow?ms=700", Duration::from_secs(10)));
    wait_for("slow request accepted", Duration::from_secs(5), || {
        fd_count(pid) > 5
    });
    let (ok, out, _) = baton.reload();
    assert!(ok, "{out}");
    let (code, _) = slow.join().expect("thread").expect("slow request");
    assert_eq!(code, 200);
    wait_for("generation 1 gone", Duration::from_secs(5), || {
        baton.log_text().contains("generation 1 has exited")
    });
    let log = baton.log_text();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("worker {pid} (generation 1, instance 0) exited")))
        .unwrap_or_else(|| panic!("no exit line for {pid}: {log}"));
    let ms: u64 = line
        .split("drained in ")
        .nth(1)
        .and_then(|r| r.split("ms after SIGTERM").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no drain time in ms: {line}"));
    assert!((300..900).contains(&ms), "drained in {ms} ms: {line}");
    assert!(line.contains(&format!("baton_drain_ms={ms}")), "{line}");
    assert!(
        log.lines()
            .any(|l| l.contains("generation 1 has exited (slowest drain ")),
        "{log}"
    );
}

/// A worker killed by SIGSYS (a system call refused by a seccomp filter, e.g. a unit's
/// `SystemCallFilter=`) is reported with that likely cause, in the log and in the reason the
/// failed start gives.
#[test]
fn a_worker_killed_by_sigsys_is_reported_with_its_likely_cause() {
    let _g = serial();
    let mut baton = Baton::spawn("sigsys", |port, ctl| {
        format!(
            r#"command = ["/bin/sh", "-c", "kill -SYS $$"]
control = "{}"

[sockets]
http = "127.0.0.1:{port}"
"#,
            ctl.display()
        )
    });
    let st = baton.wait_exit(Duration::from_secs(10));
    assert!(!st.success());
    let log = baton.log_text();
    assert!(
        log.contains("signal SIGSYS after")
            && log.contains("most likely the unit's SystemCallFilter="),
        "{log}"
    );
}

/// A first generation that cannot start makes `baton run` fail (systemd sees the start fail).
#[test]
fn failing_first_generation_exits_non_zero() {
    let _g = serial();
    let mut baton = Baton::spawn("first-fails", |port, ctl| {
        hello_config(
            port,
            ctl,
            2,
            "",
            "[env]\nHELLO_FAIL = \"exit-at-start\"\n[readiness]\ntimeout = \"5s\"\n",
        )
    });
    let st = baton.wait_exit(Duration::from_secs(10));
    assert_eq!(st.code(), Some(1));
    assert!(baton.log_text().contains("exited before it was ready"));
}

/// READY=1 sent by a descendant of the worker (here `systemd-notify`, run by the worker's shell
/// before it execs the app) counts for that worker; the descriptor systemd-notify sends with
/// BARRIER=1 is closed at once, so it does not hang.
#[test]
fn readiness_from_a_descendant_via_systemd_notify() {
    let _g = serial();
    let t0 = Instant::now();
    let baton = Baton::start("sd-notify", |port, ctl| {
        format!(
            r#"command = ["/bin/sh", "-c", "systemd-notify --ready --status=from-a-child && exec sleep 1000"]
instances = 1
control = "{}"
[sockets]
http = "127.0.0.1:{port}"
[readiness]
kind = "notify"
timeout = "10s"
"#,
            ctl.display()
        )
    });
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    let s = baton.status().expect("status");
    assert_eq!(s["generations"][0]["workers"][0]["status"], "from-a-child");
}

/// A datagram from a process that is not a worker is ignored and logged.
#[test]
fn notifications_from_strangers_are_ignored() {
    let _g = serial();
    let baton = Baton::spawn("stranger", |port, ctl| {
        hello_config(
            port,
            ctl,
            1,
            "",
            "[env]\nHELLO_FAIL = \"never-ready\"\n[readiness]\ntimeout = \"20s\"\n",
        )
    });
    let notify = baton.control.with_extension("notify");
    wait_for("worker started", Duration::from_secs(5), || {
        baton
            .status()
            .is_some_and(|s| s["generations"][0]["workers"][0]["pid"].is_i64())
    });
    let sock = std::os::unix::net::UnixDatagram::unbound().expect("socket");
    sock.send_to(b"READY=1\nSTATUS=forged", &notify)
        .expect("send to notify socket");
    wait_for("stranger logged", Duration::from_secs(5), || {
        baton.log_text().contains("which is not a worker, ignored")
    });
    let s = baton.status().expect("status");
    assert_eq!(s["state"], "booting");
    assert_eq!(s["generations"][0]["workers"][0]["state"], "starting");
}

/// A numeric field of /proc/PID/stat (see `stat_field`).
/// The nice value's field in /proc/PID/stat.
const NICE: usize = 19;

fn stat_number(pid: i32, n: usize) -> i64 {
    stat_field(pid, n)
        .unwrap_or_else(|| panic!("field {n} of /proc/{pid}/stat"))
        .parse()
        .expect("number")
}

/// baton may run at a higher priority (`Nice=-10` in its unit) so that busy workers cannot
/// starve its event loop; its workers still start at nice 0.
#[test]
fn workers_do_not_inherit_batons_priority() {
    let _g = serial();
    let baton = Baton::spawn_with(&["nice", "-n", "-10"], "nice", |port, ctl| {
        hello_config(port, ctl, 2, "", "")
    });
    baton.wait_serving(Duration::from_secs(10));
    assert_eq!(stat_number(baton.pid(), NICE), -10);
    for pid in baton.serving_pids() {
        assert_eq!(stat_number(pid, NICE), 0, "worker {pid}");
    }
}

/// An admin may give baton a real-time policy; its workers still run under SCHED_OTHER.
#[test]
fn workers_do_not_inherit_a_realtime_policy() {
    let _g = serial();
    let baton = Baton::spawn_with(&["chrt", "--fifo", "10"], "rt", |port, ctl| {
        hello_config(port, ctl, 2, "", "")
    });
    baton.wait_serving(Duration::from_secs(10));
    const POLICY: usize = 41;
    const RT_PRIORITY: usize = 40;
    assert_eq!(stat_number(baton.pid(), POLICY), 1, "baton runs SCHED_FIFO");
    assert_eq!(stat_number(baton.pid(), RT_PRIORITY), 10);
    for pid in baton.serving_pids() {
        assert_eq!(stat_number(pid, POLICY), 0, "worker {pid}: SCHED_OTHER");
        assert_eq!(stat_number(pid, RT_PRIORITY), 0, "worker {pid}");
    }
}

/// The one worker of `held_config`, and the `sleep` it started, once both exist.
fn held_worker(baton: &Baton) -> (i32, i32) {
    let mut worker = 0;
    wait_for("the starting worker", Duration::from_secs(10), || {
        worker = baton
            .status()
            .and_then(|s| s["generations"][0]["workers"][0]["pid"].as_i64())
            .unwrap_or(0) as i32;
        worker > 0
    });
    let mut sleep = 0;
    wait_for("the worker's sleep child", Duration::from_secs(10), || {
        sleep = children_of(worker).first().copied().unwrap_or(0);
        sleep > 0
    });
    (worker, sleep)
}

/// One worker that starts a `sleep` (in its process group), then waits on `fifo` before it
/// execs the example worker, which sends READY=1; `readiness_extra` goes into `[readiness]`.
fn held_config(
    fifo: &std::path::Path,
    readiness_extra: &str,
) -> impl FnOnce(u16, &std::path::Path) -> String {
    let script = format!(
        "sleep 60 & read go < {}; exec {}",
        fifo.display(),
        example_bin("hello").display()
    );
    let top = readiness_extra.to_string();
    move |port, ctl| {
        format!(
            r#"command = ["/bin/sh", "-c", "{script}"]
control = "{}"
[sockets]
http = "127.0.0.1:{port}"
[readiness]
kind = "notify"
{top}
"#,
            ctl.display()
        )
    }
}

fn release(fifo: &std::path::Path) {
    std::fs::write(fifo, "go\n").expect("write the fifo");
}

fn mkfifo(path: &std::path::Path) {
    let st = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo");
    assert!(st.success());
}

/// A starting worker runs at `readiness.startup_nice` (here 10; off by default), its whole process group
/// included, so that a new generation's start-up takes the CPU the serving one leaves idle;
/// once ready, all of it runs at nice 0.
#[test]
fn workers_start_at_the_startup_nice_until_ready() {
    let _g = serial();
    let dir = scratch("startup-nice-fifo");
    let fifo = dir.join("go");
    mkfifo(&fifo);
    let baton = Baton::spawn("startup-nice", held_config(&fifo, "startup_nice = 10"));
    let (worker, sleep) = held_worker(&baton);
    assert_eq!(stat_number(worker, NICE), 10, "starting worker");
    assert_eq!(
        stat_number(sleep, NICE),
        10,
        "what the starting worker started"
    );
    release(&fifo);
    baton.wait_serving(Duration::from_secs(10));
    assert_eq!(baton.serving_pids(), vec![worker]);
    assert_eq!(stat_number(worker, NICE), 0, "ready worker");
    assert_eq!(stat_number(sleep, NICE), 0, "what the ready worker started");
}

/// Without the right to give the priority back (no CAP_SYS_NICE, RLIMIT_NICE 0), baton
/// starts workers at their running nice rather than leave them at the startup one; and by
/// default (`startup_nice = 0`) they start there anyway.
#[test]
fn workers_start_at_their_running_nice_when_baton_could_not_give_it_back() {
    let _g = serial();
    for (name, prefix, top) in [
        (
            "no-cap-sys-nice",
            &[
                "setpriv",
                "--inh-caps=-sys_nice",
                "--bounding-set=-sys_nice",
            ][..],
            "startup_nice = 10",
        ),
        ("startup-nice-default", &[][..], ""),
    ] {
        let dir = scratch(&format!("{name}-fifo"));
        let fifo = dir.join("go");
        mkfifo(&fifo);
        let baton = Baton::spawn_with(prefix, name, held_config(&fifo, top));
        let (worker, sleep) = held_worker(&baton);
        assert_eq!(stat_number(worker, NICE), 0, "{name}: starting worker");
        assert_eq!(stat_number(sleep, NICE), 0, "{name}: its child");
        release(&fifo);
        baton.wait_serving(Duration::from_secs(10));
        assert_eq!(stat_number(worker, NICE), 0, "{name}: ready worker");
    }
}

/// A worker still not ready after half its readiness timeout continues at its running priority
/// (on a saturated host the startup nice must not be what makes a reload miss its timeout).
#[test]
fn a_slow_starter_gets_its_priority_back_at_half_the_readiness_timeout() {
    let _g = serial();
    let dir = scratch("startup-nice-slow-fifo");
    let fifo = dir.join("go");
    mkfifo(&fifo);
    let t0 = Instant::now();
    let baton = Baton::spawn(
        "startup-nice-slow",
        held_config(&fifo, "timeout = \"4s\"\nstartup_nice = 10"),
    );
    let (worker, sleep) = held_worker(&baton);
    assert_eq!(stat_number(worker, NICE), 10, "starting worker");
    wait_for("the priority given back", Duration::from_secs(3), || {
        stat_number(worker, NICE) == 0 && stat_number(sleep, NICE) == 0
    });
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "given back after {:?}",
        t0.elapsed()
    );
    assert!(
        baton.log_text().contains("half its readiness timeout"),
        "{}",
        baton.log_text()
    );
    // still held, so still starting; then it becomes ready and serves
    release(&fifo);
    baton.wait_serving(Duration::from_secs(10));
    assert_eq!(baton.serving_pids(), vec![worker]);
}

/// A generation told to stop while another one serves drains at `drain.nice` (here 10, set for one worker), so
/// its drain and exit yield the CPU to the serving workers; when baton itself stops, its
/// workers drain at their running priority.
#[test]
fn a_replaced_generation_drains_at_the_drain_nice() {
    let _g = serial();
    // workers that ignore SIGTERM stay alive (draining) until the 3 s deadline
    let baton = Baton::start("drain-nice", |port, ctl| {
        hello_config(
            port,
            ctl,
            1,
            "",
            "[env]\nHELLO_FAIL = \"ignore-sigterm\"\n\n[drain]\ntimeout = \"3s\"\nnice = 10\n",
        )
    });
    let old = baton.serving_pids()[0];
    assert_eq!(stat_number(old, NICE), 0, "serving worker");
    let (ok, out, _) = baton.reload();
    assert!(ok, "{out}");
    let new = baton.serving_pids()[0];
    assert_ne!(new, old);
    assert!(pid_exists(old), "the old worker drains until its deadline");
    assert_eq!(
        stat_number(old, NICE),
        10,
        "draining worker of the replaced generation"
    );
    assert_eq!(stat_number(new, NICE), 0, "serving worker");
    assert!(baton.log_text().contains("at nice 10, SIGKILL after 3s"));
    signal(baton.pid(), "TERM");
    wait_for("baton stopping", Duration::from_secs(5), || {
        baton.log_text().contains("(baton is stopping)")
    });
    assert!(pid_exists(new), "the last worker drains until its deadline");
    assert_eq!(
        stat_number(new, NICE),
        0,
        "draining worker when baton stops"
    );
}

/// Without a `drain.nice`, a replaced generation drains at nice 10 when it has more workers
/// than baton has CPUs (their exits would otherwise queue in front of the serving workers), and
/// at its running priority when it has at most one per CPU.
#[test]
fn by_default_only_a_generation_with_more_workers_than_cpus_drains_at_nice_10() {
    let _g = serial();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    for (instances, want) in [(cpus + 1, 10), (1, 0)] {
        // workers that ignore SIGTERM stay alive (draining) until the 3 s deadline
        let mut baton = Baton::start("drain-nice-default", |port, ctl| {
            hello_config(
                port,
                ctl,
                instances,
                "",
                "[env]\nHELLO_FAIL = \"ignore-sigterm\"\n\n[drain]\ntimeout = \"3s\"\n",
            )
        });
        let old = baton.serving_pids();
        assert_eq!(old.len(), instances as usize);
        let (ok, out, _) = baton.reload();
        assert!(ok, "{out}");
        for pid in &old {
            assert!(
                pid_exists(*pid),
                "old worker {pid} drains until its deadline"
            );
            assert_eq!(
                stat_number(*pid, NICE),
                want,
                "draining worker of a replaced generation of {instances} on {cpus} CPUs"
            );
        }
        for pid in baton.serving_pids() {
            assert_eq!(stat_number(pid, NICE), 0, "serving worker");
        }
        baton.stop();
    }
}
