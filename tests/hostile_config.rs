//! Issue 13, item 3 and the config weaknesses: a reload with any out-of-range value, or with
//! a FIFO at the config path, fails with the reason while the serving generation keeps
//! serving under load and baton stays alive.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn reloads_with_out_of_range_values_fail_and_lose_nothing() {
    let _g = serial();
    let mut baton = Baton::start("range", |port, ctl| hello_config(port, ctl, 2, "", ""));
    let good = baton.config_text();
    let load = Load::start(baton.port, "close", 2, 200);
    let gen = baton.serving_generation();
    let huge = "9223372036854775807s";
    let bad: Vec<(String, &str)> = vec![
        (
            format!("[readiness]\ntimeout = \"{huge}\"\n"),
            "readiness.timeout",
        ),
        (
            format!("[readiness]\nstable = \"{huge}\"\n"),
            "readiness.stable",
        ),
        (
            format!("[readiness]\nkind = \"tcp\"\ninterval = \"{huge}\"\n"),
            "readiness.interval",
        ),
        (
            format!("[readiness]\nkind = \"tcp\"\nprobe_timeout = \"{huge}\"\n"),
            "readiness.probe_timeout",
        ),
        (
            format!("[readiness]\nkind = \"delay\"\ntimeout = \"{huge}\"\ndelay = \"{huge}\"\n"),
            "readiness.timeout",
        ),
        (format!("[drain]\ntimeout = \"{huge}\"\n"), "drain.timeout"),
        (
            format!("[restart]\nbackoff_initial = \"{huge}\"\nbackoff_max = \"{huge}\"\n"),
            "restart.backoff_initial",
        ),
        (
            format!("[restart]\nbackoff_max = \"{huge}\"\n"),
            "restart.backoff_max",
        ),
        ("[drain]\ntimeout = \"2d\"\n".into(), "drain.timeout"),
        ("[drain]\ntimeout = \"-1s\"\n".into(), "drain.timeout"),
        (
            "[readiness]\nsuccesses = -1\n".into(),
            "readiness.successes",
        ),
        (
            "[readiness]\nstartup_nice = 99\n".into(),
            "readiness.startup_nice",
        ),
        (
            "[readiness]\nmax_starting = 0\n".into(),
            "readiness.max_starting",
        ),
        ("[drain]\nnice = -5\n".into(), "drain.nice"),
    ];
    for (extra, key) in &bad {
        baton.write_config(&format!("{good}\n{extra}"));
        let (ok, out, _) = baton.reload();
        assert!(!ok, "reload with {extra:?} succeeded: {out}");
        assert!(
            out.contains(key),
            "reload with {extra:?}: names {key}: {out}"
        );
        assert!(
            baton.child.try_wait().unwrap().is_none(),
            "baton died on {extra:?}"
        );
        assert_eq!(baton.serving_generation(), gen);
    }
    for v in ["100000", "-1", "4294967297"] {
        baton.write_config(&good.replace("instances = 2", &format!("instances = {v}")));
        let (ok, out, _) = baton.reload();
        assert!(!ok && out.contains("instances"), "{v}: {out}");
    }
    // a FIFO at the config path: refused at once, baton does not freeze
    std::fs::remove_file(&baton.config).unwrap();
    assert!(Command::new("mkfifo")
        .arg(&baton.config)
        .status()
        .unwrap()
        .success());
    let t0 = Instant::now();
    let out = Command::new(baton_bin())
        .args(["reload", "--timeout", "5s", "--control"])
        .arg(&baton.control)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("regular file"),
        "{text}"
    );
    assert!(t0.elapsed() < Duration::from_secs(4));
    std::fs::remove_file(&baton.config).unwrap();
    baton.write_config(&good);
    let (ok, out, _) = baton.reload();
    assert!(ok, "{out}");
    assert_eq!(baton.serving_generation(), gen + 1);
    assert_no_failures(&load.stop(), 10);
    baton.stop();
}

/// Generated configs, through to a running supervisor: 300 mutations of a valid config (fixed
/// seed), each checked with `baton check` and sent as a reload to a baton under load. Whatever
/// each one does (most fail, some roll out), `check` never crashes, baton stays alive, every
/// reload gets an answer, and the app loses no request.
#[test]
fn generated_configs_through_reloads_break_nothing() {
    const CASES: usize = 300;
    let _g = serial();
    let baton = Baton::start("config-fuzz", |port, ctl| {
        hello_config(
            port,
            ctl,
            2,
            "",
            "[readiness]\nkind = \"notify\"\ntimeout = \"2s\"\nmax_starting = 2\n\n\
             [drain]\ntimeout = \"2s\"\n\n[restart]\nbackoff_initial = \"100ms\"\n",
        )
    });
    let good = baton.dir.join("good.toml");
    std::fs::write(&good, baton.config_text()).unwrap();
    let cases = baton.dir.join("cases");
    std::fs::create_dir_all(&cases).unwrap();
    python3(&[
        repo_dir().join("tests/fuzz/config.py").into_os_string(),
        good.clone().into_os_string(),
        cases.clone().into_os_string(),
        CASES.to_string().into(),
        "1".into(),
    ]);
    let load = Load::start(baton.port, "close", 2, 200);
    let (mut rolled_out, mut refused) = (0, 0);
    for n in 0..CASES {
        let case = cases.join(format!("{n}.toml"));
        let check = Command::new(baton_bin())
            .args(["check", "--config"])
            .arg(&case)
            .output()
            .expect("baton check");
        assert!(
            matches!(check.status.code(), Some(0 | 1)),
            "check of case {n} crashed: {check:?}\n{}",
            String::from_utf8_lossy(&std::fs::read(&case).unwrap())
        );
        std::fs::copy(&case, &baton.config).unwrap();
        let reload = Command::new(baton_bin())
            .args(["reload", "--timeout", "20s", "--control"])
            .arg(&baton.control)
            .output()
            .expect("baton reload");
        let text = String::from_utf8_lossy(&reload.stderr);
        assert!(
            !text.contains("no outcome") && !text.contains("cannot connect"),
            "case {n}: {text}"
        );
        if reload.status.success() {
            rolled_out += 1;
        } else {
            refused += 1;
        }
        assert!(baton.status().is_some(), "baton gone after case {n}");
    }
    eprintln!("{CASES} generated configs: {rolled_out} rolled out, {refused} refused");
    assert_no_failures(&load.stop(), 100);
    std::fs::copy(&good, &baton.config).unwrap();
    let (ok, out, _) = baton.reload();
    assert!(ok, "the good config after the generated ones: {out}");
}
