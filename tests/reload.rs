//! Generation swaps under load, with real processes: baton, the example worker, the load client.

mod common;

use std::time::{Duration, Instant};

use common::*;

const DRAIN: &str = r#"[drain]
timeout = "5s"
"#;

/// 50 consecutive reloads under keep-alive and connection-per-request load: every reload
/// succeeds, no request fails, each old generation is gone after its drain, and baton does not
/// leak descriptors or children.
#[test]
fn fifty_reloads_under_load_lose_nothing() {
    let _g = serial();
    let baton = Baton::start("fifty", |port, ctl| {
        hello_config(
            port,
            ctl,
            2,
            "",
            &format!("[readiness]\nkind = \"notify\"\ntimeout = \"10s\"\n\n{DRAIN}"),
        )
    });
    let keep = Load::start(baton.port, "keepalive", 4, 800);
    let close = Load::start(baton.port, "close", 4, 400);

    let mut after_first = None;
    // one reload every 100 ms, so that every generation takes real traffic; the old generation
    // drains (the example worker closes keep-alive connections after their next response) and
    // is gone well before its 5 s deadline
    let mut durations = baton.paced_reloads(
        50,
        Duration::from_millis(100),
        Duration::from_secs(7),
        |_| Vec::new(),
        |i| {
            wait_for(
                "only the serving generation in status",
                Duration::from_secs(2),
                || {
                    baton
                        .status()
                        .is_some_and(|s| s["generations"].as_array().map(|g| g.len()) == Some(1))
                },
            );
            // descriptors and children of baton: the same after every reload as after the
            // first (a control connection being closed at this instant may still show: wait
            // for a stable reading, and name every descriptor if it does not come)
            let snapshot = || {
                let fds: Vec<String> = lasting_fds(baton.pid())
                    .into_iter()
                    .map(|fd| format!("{fd}->{}", fd_target(baton.pid(), fd)))
                    .collect();
                (fds, children_of(baton.pid()).len())
            };
            match &after_first {
                None => {
                    let (fds, kids) = snapshot();
                    assert_eq!(kids, 2, "reload {i}: children of baton");
                    after_first = Some((fds.len(), kids, fds));
                }
                Some((nfds, kids, first)) => {
                    let deadline = Instant::now() + Duration::from_secs(2);
                    loop {
                        let (now_fds, now_kids) = snapshot();
                        if now_fds.len() == *nfds && now_kids == *kids {
                            break;
                        }
                        assert!(
                            Instant::now() < deadline,
                            "reload {i}: baton has {} fds and {now_kids} children; after reload 1: {nfds} fds and {kids} children\nnow: {now_fds:?}\nthen: {first:?}",
                            now_fds.len()
                        );
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        },
    );
    let k = keep.stop();
    let c = close.stop();
    assert_no_failures(&k, 2000);
    assert_no_failures(&c, 1000);
    durations.sort();
    eprintln!(
        "50 reloads: median {:?}, max {:?}; keepalive {} ok, close {} ok",
        durations[25], durations[49], k["ok"], c["ok"]
    );
}

/// Reloads that arrive during a rollout are coalesced and never run concurrently: at most two
/// generations are alive at any time, and every waiting client gets an answer.
#[test]
fn concurrent_reloads_are_coalesced() {
    let _g = serial();
    let baton = Baton::start("coalesce", |port, ctl| {
        hello_config(
            port,
            ctl,
            2,
            "",
            "[env]\nHELLO_STARTUP_MS = \"300\"\n\n[readiness]\ntimeout = \"10s\"\n\n[drain]\ntimeout = \"5s\"\n",
        )
    });
    // 1000 req/s: when all five requests coalesce into one rollout, the reloads last only
    // about 0.3 s (HELLO_STARTUP_MS), and at 300 req/s the load then made fewer than the 100
    // requests asserted at the end (94 seen: a flaky test)
    let load = Load::start(baton.port, "keepalive", 2, 1000);
    let handles: Vec<_> = (0..5)
        .map(|_| {
            let cfg = baton.config.clone();
            std::thread::spawn(move || {
                std::process::Command::new(baton_bin())
                    .args(["reload", "--config"])
                    .arg(cfg)
                    .output()
                    .expect("reload")
            })
        })
        .collect();
    let mut max_gens = 0;
    let t0 = Instant::now();
    while handles.iter().any(|h| !h.is_finished()) {
        if let Some(s) = baton.status() {
            max_gens = max_gens.max(s["generations"].as_array().map(|g| g.len()).unwrap_or(0));
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "reloads did not finish"
        );
    }
    for h in handles {
        let out = h.join().expect("thread");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(max_gens <= 2, "saw {max_gens} generations alive at once");
    let gen = baton.serving_generation();
    // 5 requests while generation 1 served: the first rollout takes one or more, the rest
    // coalesce into one more rollout at most... so the generation number grows by 1..=5 but
    // typically 2; the hard guarantee is that nothing ran concurrently.
    assert!((2..=6).contains(&gen), "generation {gen}");
    assert_no_failures(&load.stop(), 100);
}

/// SIGHUP is a reload too.
#[test]
fn sighup_reloads() {
    let _g = serial();
    let baton = Baton::start("sighup", |port, ctl| hello_config(port, ctl, 1, "", DRAIN));
    let old = baton.serving_pids();
    signal(baton.pid(), "HUP");
    wait_for("generation 2 serving", Duration::from_secs(10), || {
        baton.status().is_some_and(|s| s["serving_generation"] == 2)
    });
    wait_for("old worker gone", Duration::from_secs(7), || {
        !pid_exists(old[0])
    });
    assert_ne!(answering_pid(baton.port), old[0]);
}

/// `baton reload --json` reports where the rollout's time went, and the figures agree with
/// the workers' known start-up time (HELLO_STARTUP_MS) and with each other.
#[test]
fn reload_json_reports_the_rollout_timings() {
    let _g = serial();
    let baton = Baton::start("timings", |port, ctl| {
        hello_config(
            port,
            ctl,
            3,
            "",
            "[env]\nHELLO_STARTUP_MS = \"80\"\n\n[readiness]\nkind = \"notify\"\ntimeout = \"10s\"\n",
        )
    });
    let r = baton.reload_json();
    let us = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["generation"], 2, "{r}");
    let (total, slowest) = (us("duration_us"), us("slowest_start_us"));
    let (last_spawn, last_ready) = (us("last_spawn_us"), us("last_ready_us"));
    let first_spawn = us("first_spawn_us");
    assert!(first_spawn <= last_spawn, "{r}");
    // every worker sleeps 80 ms before READY=1
    assert!(slowest >= 80_000, "slowest start-up {slowest} us: {r}");
    assert!(last_ready >= last_spawn + 80_000, "{r}");
    assert!(slowest <= last_ready && last_ready <= total, "{r}");
    // the start-ups, overlaps counted once, cover at least the slowest one
    let app = us("app_starting_us");
    assert!(slowest <= app && app <= last_ready, "{r}");
}

/// When the process started, in clock ticks since boot (field 22 of /proc/PID/stat).
fn start_ticks(pid: i32) -> u64 {
    const STARTTIME: usize = 22;
    stat_field(pid, STARTTIME)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("start time of {pid}"))
}

/// A reload starts at most `readiness.max_starting` new workers at once: the next one when
/// one is ready. Each worker has the whole readiness timeout from its own spawn, so a paced
/// rollout may take longer than one timeout. The first generation, with nothing serving to
/// protect, starts all its workers at once.
#[test]
fn a_reload_starts_at_most_max_starting_workers_at_once() {
    let _g = serial();
    const STARTUP_MS: u64 = 300;
    let baton = Baton::start("max-starting", |port, ctl| {
        hello_config(
            port,
            ctl,
            4,
            "",
            &format!(
                "[env]\nHELLO_STARTUP_MS = \"{STARTUP_MS}\"\n\n[readiness]\nkind = \"notify\"\n\
                 timeout = \"1s\"\nmax_starting = 1\n"
            ),
        )
    });
    let ticks_per_ms = 100.0 / 1000.0; // USER_HZ
    let started = |pids: &[i32]| {
        let mut t: Vec<u64> = pids.iter().map(|p| start_ticks(*p)).collect();
        t.sort();
        t
    };
    // boot: all four within a fraction of one start-up
    let boot = started(&baton.serving_pids());
    assert_eq!(boot.len(), 4);
    assert!(
        ((boot[3] - boot[0]) as f64) < STARTUP_MS as f64 * ticks_per_ms / 2.0,
        "first generation started over {} ticks: {boot:?}",
        boot[3] - boot[0]
    );

    let r = baton.reload_json();
    assert_eq!(r["ok"], true, "{r}");
    let us = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
    // one after the other: four start-ups end to end, longer than the 1 s timeout
    assert!(us("app_starting_us") >= 4 * STARTUP_MS * 1000, "{r}");
    assert!(us("duration_us") > 1_000_000, "{r}");
    assert!(us("slowest_start_us") < 1_000_000, "{r}");
    assert!(us("app_starting_us") <= us("duration_us"), "{r}");
    let next = started(&baton.serving_pids());
    assert_eq!(next.len(), 4);
    for pair in next.windows(2) {
        assert!(
            (pair[1] - pair[0]) as f64 >= (STARTUP_MS as f64 - 20.0) * ticks_per_ms,
            "reload spawned workers {} ticks apart: {next:?}",
            pair[1] - pair[0]
        );
    }
    let log = baton.log_text();
    assert!(
        log.lines().any(|l| l.contains("starting generation 2: 4 x")
            && l.contains(", at most 1 starting at once)")),
        "{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("starting generation 1") && l.contains("at most")),
        "{log}"
    );
}

/// A paced rollout that fails stops where it is: the workers still waiting for their turn are
/// never started, and the reload fails with the late worker's reason.
#[test]
fn a_paced_rollout_that_fails_starts_no_more_workers() {
    let _g = serial();
    let baton = Baton::start("max-starting-fail", |port, ctl| {
        hello_config(
            port,
            ctl,
            3,
            "",
            "[readiness]\nkind = \"notify\"\ntimeout = \"500ms\"\nmax_starting = 1\n",
        )
    });
    let old = baton.serving_pids();
    let text = baton.config_text();
    baton.write_config(&format!("{text}\n[env]\nHELLO_FAIL = \"never-ready\"\n"));
    let (ok, out, _) = baton.reload();
    assert!(!ok, "{out}");
    assert!(out.contains("instance 0 (pid"), "{out}");
    assert!(out.contains("not ready after 500ms"), "{out}");
    let log = baton.log_text();
    let started = log
        .lines()
        .filter(|l| l.contains("started (generation 2,"))
        .count();
    assert_eq!(started, 1, "{log}");
    assert_eq!(baton.serving_pids(), old);
    assert_eq!(baton.serving_generation(), 1);
}

/// The number of CPUs baton may run on (what `readiness.max_starting` defaults to).
fn cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// A paced rollout ends with every readiness kind and with fewer, as many and more workers
/// than `max_starting` (the CPUs): the waiting workers are spawned as the first ones get
/// ready, whatever marks them ready. With `kind = "delay"` and more workers than CPUs, a reload
/// once slept with no deadline after the first batch was ready, and hung until an unrelated
/// event woke the loop.
#[test]
fn a_paced_rollout_ends_with_every_readiness_kind_and_any_worker_count() {
    let _g = serial();
    let kinds = [
        "kind = \"notify\"",
        "kind = \"http\"\ninterval = \"20ms\"",
        "kind = \"tcp\"\ninterval = \"20ms\"",
        "kind = \"exec\"\nexec = [\"/bin/true\"]\ninterval = \"20ms\"",
        "kind = \"delay\"\ndelay = \"100ms\"",
        "kind = \"accepting\"",
    ];
    let n = cpus();
    for kind in kinds {
        for instances in [1, n, n + 1] {
            let what = format!(
                "{} with {instances} instance(s)",
                kind.lines().next().unwrap()
            );
            let baton = Baton::start("pacing-kinds", |port, ctl| {
                hello_config(
                    port,
                    ctl,
                    instances,
                    "",
                    &format!("[readiness]\n{kind}\ntimeout = \"5s\"\n\n{DRAIN}"),
                )
            });
            let old = baton.serving_pids();
            assert_eq!(old.len(), instances as usize, "{what}");
            let t0 = Instant::now();
            let out = std::process::Command::new(baton_bin())
                .args(["reload", "--timeout", "8s", "--config"])
                .arg(&baton.config)
                .output()
                .expect("baton reload");
            let took = t0.elapsed();
            assert!(
                out.status.success(),
                "{what}: reload failed after {took:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(baton.serving_generation(), 2, "{what}");
            let new = baton.serving_pids();
            assert_eq!(new.len(), instances as usize, "{what}");
            assert!(
                new.iter().all(|p| !old.contains(p)),
                "{what}: {old:?} -> {new:?}"
            );
        }
    }
}

/// A reload asked for while the previous generation drains waits for that drain, and says so
/// at once: `baton reload` prints "reload queued: waiting for generation 1 to drain, 3s left at
/// most" before its outcome. A client whose `--timeout` ends meanwhile is told "no outcome
/// after 1s" (not an OS error), and the queued reload still happens once the drain is over.
#[test]
fn a_reload_queued_behind_a_drain_says_what_it_waits_for() {
    let _g = serial();
    let baton = Baton::start("queued", |port, ctl| {
        hello_config(
            port,
            ctl,
            1,
            "",
            "[env]\nHELLO_FAIL = \"ignore-sigterm\"\n\n[drain]\ntimeout = \"3s\"\n",
        )
    });
    let old = baton.serving_pids()[0];
    let text = baton.config_text();
    baton.write_config(&text.replace("HELLO_FAIL = \"ignore-sigterm\"", ""));
    let (ok, out, _) = baton.reload();
    assert!(ok, "{out}");
    assert!(
        pid_exists(old),
        "generation 1 ignores SIGTERM: it drains until its deadline"
    );

    let reload = |flags: &'static [&'static str]| {
        let config = baton.config.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let out = std::process::Command::new(baton_bin())
                .arg("reload")
                .args(flags)
                .arg("--config")
                .arg(&config)
                .output()
                .expect("baton reload");
            (out, t0.elapsed())
        })
    };
    let waits = reload(&[]);
    let gives_up = reload(&["--timeout", "1s"]);
    let (out, took) = gives_up.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("reload queued: waiting for generation 1 to drain, ")
            && stderr.contains(" left at most"),
        "{stderr}"
    );
    assert!(stderr.contains("no outcome after 1s"), "{stderr}");
    assert!(!stderr.contains("os error"), "{stderr}");
    assert!(took < Duration::from_secs(2), "gave up after {took:?}");

    let (out, took) = waits.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("waiting for generation 1 to drain"),
        "{stderr}"
    );
    assert!(!pid_exists(old), "generation 1 was killed at its deadline");
    assert!(
        took >= Duration::from_secs(1),
        "the reload did wait for the drain: {took:?}"
    );
    assert_eq!(
        baton.serving_generation(),
        3,
        "the two queued reloads made one rollout"
    );
}
