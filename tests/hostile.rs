//! Hostile peers and exhausted resources (issue 13): whatever a local process sends or holds,
//! baton keeps its descriptors, its CPU and its serving generation.

mod common;

use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use common::*;

/// baton's CPU time so far (utime + stime, in clock ticks).
fn cpu_ticks(pid: i32) -> u64 {
    stat_field(pid, 14)
        .and_then(|u| u.parse::<u64>().ok())
        .unwrap_or(0)
        + stat_field(pid, 15)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
}

/// Datagrams carrying as many descriptors as the kernel allows (SCM_RIGHTS) leave baton's
/// descriptor table as it was: every descriptor that arrives is closed. (With room for 16,
/// each such datagram leaked 16 of them.)
#[test]
fn descriptors_sent_on_the_notify_socket_are_all_closed() {
    let _g = serial();
    let baton = Baton::start("notify-fds", |port, ctl| hello_config(port, ctl, 1, "", ""));
    let notify = baton.control.with_extension("notify");
    let before = lasting_fds(baton.pid());
    let watch = baton.watch();
    let sender = r#"
import os, socket, sys, array
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(253)]
for n in (17, 100, 253, 253, 253):
    for _ in range(4):
        s.sendmsg([b"STATUS=hi"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds[:n]))], 0, sys.argv[1])
"#;
    python3(&["-c".as_ref(), sender.as_ref(), notify.as_os_str()]);
    // the last datagram was read when baton answers a status request after it
    wait_for(
        "baton back to its descriptors",
        Duration::from_secs(5),
        || baton.status().is_some() && lasting_fds(baton.pid()) == before,
    );
    watch.finish("1,300 descriptors sent on the notify socket", 10);
    assert!(
        baton.log_text().contains("notification from pid"),
        "{}",
        baton.log_text()
    );
}

/// `control` naming a file that is not a socket (here the config file itself) makes `baton
/// run` fail with the reason, and the file is left as it was: only a stale socket is replaced.
#[test]
fn a_control_path_that_is_not_a_socket_is_never_removed() {
    let _g = serial();
    let dir = scratch("control-file");
    let config = dir.join("baton.toml");
    let text = format!(
        "command = [\"{}\"]\ncontrol = \"{}\"\n\n[sockets]\nhttp = \"127.0.0.1:{}\"\n",
        example_bin("hello").display(),
        config.display(),
        free_port()
    );
    std::fs::write(&config, &text).unwrap();
    let out = Command::new(baton_bin())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("baton run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("exists and is not a socket"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        text,
        "the config file is intact"
    );
}

/// 2,000 idle control connections against a baton with fewer descriptors (`ulimit -n 1024`,
/// and 300 against `ulimit -n 48`): baton makes room by closing the oldest idle ones, so it
/// neither spins on EMFILE (it once took 100 % CPU, logging one line per turn) nor locks a
/// client out: `baton status` answers at once throughout, and the serving generation loses no
/// request.
#[test]
fn idle_control_connections_and_emfile_neither_spin_nor_lock_out() {
    let _g = serial();
    // the test itself holds the connections: give it room (root may raise its own limit)
    let raised = Command::new("prlimit")
        .args([
            "--nofile=8192:8192",
            "--pid",
            &std::process::id().to_string(),
        ])
        .status()
        .expect("prlimit");
    assert!(raised.success(), "raising the test's own descriptor limit");
    for (limit, idle) in [(48, 300), (1024, 2000)] {
        idle_connections_case(limit, idle);
    }
}

fn idle_connections_case(limit: u32, idle: usize) {
    let nofile = format!("--nofile={limit}:{limit}");
    let baton = Baton::spawn_with(&["prlimit", &nofile], "emfile", |port, ctl| {
        hello_config(port, ctl, 2, "", "")
    });
    baton.wait_serving(Duration::from_secs(20));
    let watch = Watched::with_load(
        Load::start(baton.port, "close", 2, 200),
        StatusWatch::of(&baton.control),
    );
    let mut held = Vec::new();
    for _ in 0..idle {
        // the kernel queues a few more than baton accepts; a connect that would block means
        // the backlog is full, which is as hostile as it gets
        match UnixStream::connect(&baton.control) {
            Ok(s) => held.push(s),
            Err(e) => panic!("connect: {e}"),
        }
    }
    // baton's CPU over a fixed window of 2 s while the connections are held (the watch asks
    // `baton status` all along)
    let t0 = cpu_ticks(baton.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(baton.pid()) - t0; // ticks of 10 ms
    eprintln!("{idle} idle connections, ulimit -n {limit}: baton CPU {used} ticks in 2 s");
    assert!(used < 40, "baton used {used} ticks of CPU in 2 s");
    watch.finish(
        &format!("{} idle connections, ulimit -n {limit}", held.len()),
        50,
    );
    drop(held);
    assert!(baton.status().is_some());
}

/// The notify socket is created 0600 whatever the umask, bound again by the next reload if
/// something removed it (a /tmp cleaner: the workers' READY=1 would go nowhere and every
/// reload would time out), and removed when baton exits.
#[test]
fn the_notify_socket_is_private_survives_a_cleaner_and_goes_at_exit() {
    use std::os::unix::fs::PermissionsExt;
    let _g = serial();
    let mut baton = Baton::spawn_with(
        &["sh", "-c", "umask 0; exec \"$0\" \"$@\""],
        "notify-file",
        |port, ctl| {
            hello_config(
                port,
                ctl,
                1,
                "",
                "[readiness]\nkind = \"notify\"\ntimeout = \"3s\"\n",
            )
        },
    );
    baton.wait_serving(Duration::from_secs(20));
    let notify = baton.control.with_extension("notify");
    let mode = std::fs::metadata(&notify).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode of {}", notify.display());
    let watch = baton.watch();
    std::fs::remove_file(&notify).unwrap();
    let (ok, out, _) = baton.reload();
    assert!(ok, "a reload after the notify socket was removed: {out}");
    assert!(notify.exists());
    watch.finish("the notify socket removed, then a reload", 5);
    assert!(baton
        .log_text()
        .contains("was gone or replaced: bound it again"));
    assert!(baton.stop().success());
    assert!(!notify.exists(), "{} left behind", notify.display());
    assert!(
        !baton.control.exists(),
        "{} left behind",
        baton.control.display()
    );
}

/// A stranger flooding the notify socket with big datagrams is logged at a bounded rate, each
/// line truncated (it once made 318 MiB of log in 6 s), and baton goes on answering.
#[test]
fn a_notify_flood_from_a_stranger_is_logged_at_a_bounded_rate() {
    let _g = serial();
    let baton = Baton::start("notify-flood", |port, ctl| {
        hello_config(port, ctl, 1, "", "")
    });
    let notify = baton.control.with_extension("notify");
    let watch = baton.watch();
    let flood = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for i in range(5000):
    try:
        s.sendto(b"STATUS=" + b"x" * 4000, sys.argv[1])
    except BlockingIOError:
        pass
"#;
    python3(&["-c".as_ref(), flood.as_ref(), notify.as_os_str()]);
    watch.finish("5,000 datagrams of 4 KB from a stranger", 10);
    let log = baton.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("which is not a worker"))
        .collect();
    assert!(
        !lines.is_empty() && lines.len() <= 10,
        "{} lines",
        lines.len()
    );
    assert!(lines.iter().all(|l| l.len() < 400), "{}", lines[0]);
    assert!(log.len() < 64 * 1024, "{} bytes of log", log.len());
}

/// Runs `tests/fuzz/<script>` with its arguments; returns what it printed.
fn fuzz(script: &str, args: &[&str]) -> String {
    let path = repo_dir().join("tests/fuzz").join(script);
    let mut argv = vec![path.into_os_string()];
    argv.extend(args.iter().map(std::ffi::OsString::from));
    python3(&argv)
}

/// Thousands of random datagrams with random descriptors, sent by a stranger and by a
/// worker's own process tree (so that both paths of the parser are taken), and thousands of
/// random control requests: baton stays up, keeps its descriptors, answers, and the serving
/// generation loses no request. Fixed seeds: a failure is reproducible.
#[test]
fn random_notifications_and_control_requests_break_nothing() {
    let _g = serial();
    let fuzzer = repo_dir().join("tests/fuzz/notify.py");
    let baton = Baton::start("fuzz", |port, ctl| {
        let notify = ctl.with_extension("notify");
        format!(
            r#"command = ["/bin/sh", "-c", "python3 {fuzzer} {notify} 1500 2 >/dev/null; exec {hello}"]
instances = 2
control = "{ctl}"

[sockets]
http = "127.0.0.1:{port}"

[readiness]
kind = "accepting"
"#,
            fuzzer = fuzzer.display(),
            notify = notify.display(),
            hello = example_bin("hello").display(),
            ctl = ctl.display()
        )
    });
    let lasting = || lasting_fds(baton.pid()).len();
    let before = lasting();
    let gen = baton.serving_generation();
    let watch = baton.watch();
    let notify = baton.control.with_extension("notify");
    let sent: u32 = fuzz("notify.py", &[&notify.to_string_lossy(), "3000", "1"])
        .parse()
        .unwrap();
    assert!(sent > 1000, "only {sent} datagrams sent");
    let answered: u32 = fuzz(
        "control.py",
        &[&baton.control.to_string_lossy(), "2000", "1"],
    )
    .parse()
    .unwrap();
    assert!(answered > 0);
    watch.finish(
        "3,000 random datagrams and 2,000 random control requests",
        50,
    );
    wait_for(
        "baton back to its descriptors",
        Duration::from_secs(10),
        || baton.status().is_some() && lasting() == before,
    );
    assert!(baton.serving_generation() >= gen);
    assert_eq!(baton.serving_pids().len(), 2);
}

/// Reload clients that give up while their reload waits behind a long drain (`--timeout` in a
/// retry loop) do not pile up in baton: a client that closed its connection is let go at once.
#[test]
fn reload_clients_that_gave_up_are_let_go() {
    let _g = serial();
    let baton = Baton::start("gave-up", |port, ctl| {
        hello_config(
            port,
            ctl,
            1,
            "",
            "[env]\nHELLO_FAIL = \"ignore-sigterm\"\n\n[drain]\ntimeout = \"6s\"\n",
        )
    });
    let old = baton.serving_pids()[0];
    baton.write_config(
        &baton
            .config_text()
            .replace("HELLO_FAIL = \"ignore-sigterm\"", ""),
    );
    let (ok, out, _) = baton.reload();
    assert!(ok, "{out}");
    let before = lasting_fds(baton.pid()).len();
    for _ in 0..30 {
        let out = Command::new(baton_bin())
            .args(["reload", "--timeout", "100ms", "--config"])
            .arg(&baton.config)
            .output()
            .expect("baton reload");
        assert!(!out.status.success());
    }
    assert!(pid_exists(old), "generation 1 still drains");
    wait_for(
        "baton let the 30 clients go",
        Duration::from_secs(2),
        || lasting_fds(baton.pid()).len() <= before,
    );
    assert!(pid_exists(old), "checked while generation 1 still drained");
}

/// The effective uid of this test process (the owner of /proc/self).
fn own_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

/// What a stranger puts at the notify path `<control>.notify`. Before baton starts: a regular
/// file, or another uid's socket, makes `baton run` refuse with the path in its error, and is
/// left where it is; baton's own stale socket is replaced. While baton runs (in a directory
/// others may write, or no stranger could get there): another uid's socket in place of baton's
/// is not removed either, so a reload fails (its workers' READY=1 go to the stranger) without
/// touching the serving generation; once the path is free the next reload binds it again and
/// succeeds. No request fails and `baton status` answers within 100 ms throughout.
#[test]
fn a_strangers_file_at_the_notify_path_is_never_removed() {
    use std::os::unix::fs::PermissionsExt;
    let _g = serial();
    let dir = scratch("notify-path");
    let control = dir.join("ctl.sock");
    let notify = control.with_extension("notify");
    let config = dir.join("baton.toml");
    std::fs::write(&config, hello_config(free_port(), &control, 1, "", "")).unwrap();
    // a baton that wrongly takes the path is killed after 10 s and fails the test
    let run = || run_bounded(&config);
    std::fs::write(&notify, "not baton's").unwrap();
    let (ok, err) = run();
    assert!(!ok, "{err}");
    assert!(
        err.contains(&notify.display().to_string()) && err.contains("is not a socket"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&notify).unwrap(), "not baton's");
    std::fs::remove_file(&notify).unwrap();
    stale_socket(&notify, STRANGER);
    let strangers = owner_and_inode(&notify);
    let (ok, err) = run();
    assert!(!ok, "a stale socket of uid {STRANGER} was taken: {err}");
    assert!(
        err.contains(&notify.display().to_string()) && err.contains(&format!("uid {STRANGER}")),
        "{err}"
    );
    assert_eq!(
        owner_and_inode(&notify),
        strangers,
        "the stranger's socket is left"
    );
    assert!(
        !control.exists(),
        "a refused baton leaves no control socket"
    );
    let _ = std::fs::remove_dir_all(&dir);

    let baton = Baton::start("notify-path", |port, ctl| {
        // baton's own stale socket is replaced
        stale_socket(&ctl.with_extension("notify"), own_uid());
        let dir = ctl.parent().unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        hello_config(port, ctl, 1, "", "[readiness]\ntimeout = \"3s\"\n")
    });
    let notify = baton.control.with_extension("notify");
    let gen = baton.serving_generation();
    let pids = baton.serving_pids();
    let watch = baton.watch();
    let stranger = Stranger::bind(&notify, "dgram");
    let strangers = owner_and_inode(&notify);
    let asked = std::time::Instant::now();
    let (ok, out, _) = baton.reload();
    assert!(
        !ok,
        "a reload while a stranger holds the notify path: {out}"
    );
    // it fails at once, saying why, rather than after its 3 s readiness timeout
    assert!(
        out.contains("notify socket") && out.contains("cannot be bound again"),
        "{out}"
    );
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(baton.serving_generation(), gen);
    assert_eq!(baton.serving_pids(), pids);
    assert_eq!(
        owner_and_inode(&notify),
        strangers,
        "the stranger's socket is left"
    );
    let log = baton.log_text();
    assert!(
        log.contains("cannot be bound again") && log.contains(&format!("uid {STRANGER}")),
        "{log}"
    );
    stranger.exit();
    assert_eq!(owner_and_inode(&notify), strangers);
    // the operator frees the path
    std::fs::remove_file(&notify).unwrap();
    let (ok, out, _) = baton.reload();
    assert!(ok, "a reload once the notify path is free: {out}");
    assert!(baton.serving_generation() > gen);
    assert_eq!(owner_and_inode(&notify).map(|o| o.0), Some(own_uid()));
    // both reloads end at once: keep the serving generation under load and watched for 30
    // status rounds (over half a second, 100 requests at the watch's 200/s)
    watch.wait_asked(30);
    watch.finish("a stranger's socket at the notify path, two reloads", 100);
}

/// What is at a `[sockets]` unix path before `baton run` binds it (a new user's trial: a
/// second `baton run` on the same path replaced the first one's live socket, whose clients
/// were then refused while its status said serving). A live server there (another baton):
/// refused, naming the path, the socket left as it was and the first baton still answering on
/// it. A regular file: refused, saying what it is, and left. Another uid's stale socket:
/// refused, naming the uid, and left. baton's own stale socket (nobody listens: the connect is
/// refused) is replaced.
#[test]
fn a_live_socket_or_a_file_at_a_sockets_unix_path_is_never_taken() {
    let _g = serial();
    let unix_config = |sock: &std::path::Path, ctl: &std::path::Path| {
        format!(
            "command = [\"{}\"]\ncontrol = \"{}\"\n[sockets]\napp = \"unix:{}\"\n",
            example_bin("hello").display(),
            ctl.display(),
            sock.display()
        )
    };
    let get = |path: &std::path::Path| {
        use std::io::{Read, Write};
        let mut s = UnixStream::connect(path).expect("connect the unix socket");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let first = Baton::start("unix-live", |_, ctl| {
        unix_config(&ctl.with_file_name("app.sock"), ctl)
    });
    let sock = first.dir.join("app.sock");
    let before = owner_and_inode(&sock);
    // a second baton on the same path, with its own control socket and config; one that
    // wrongly takes the path is killed after 10 s and fails the test
    let second = scratch("unix-live-2");
    let config = second.join("baton.toml");
    std::fs::write(&config, unix_config(&sock, &second.join("ctl.sock"))).unwrap();
    let run = || run_bounded(&config);
    let (ok, err) = run();
    assert!(!ok, "{err}");
    assert!(
        err.contains(&format!(
            "unix:{} is in use by a live server (a connection to it was accepted",
            sock.display()
        )) && err.contains("stop it or choose another path"),
        "{err}"
    );
    assert_eq!(owner_and_inode(&sock), before, "the live socket is left");
    assert!(get(&sock).starts_with("HTTP/1.1 200"));
    drop(first);

    // a regular file
    let dir = scratch("unix-file");
    let sock = dir.join("app.sock");
    std::fs::write(&config, unix_config(&sock, &second.join("ctl.sock"))).unwrap();
    std::fs::write(&sock, "not a socket").unwrap();
    let (ok, err) = run();
    assert!(!ok, "{err}");
    assert!(
        err.contains(&format!(
            "unix:{} is a regular file, not a socket: baton never removes it; remove it or \
             choose another path",
            sock.display()
        )),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&sock).unwrap(), "not a socket");
    // another uid's stale socket
    std::fs::remove_file(&sock).unwrap();
    stale_socket(&sock, STRANGER);
    let strangers = owner_and_inode(&sock);
    let (ok, err) = run();
    assert!(!ok, "a stale socket of uid {STRANGER} was taken: {err}");
    assert!(
        err.contains(&format!("unix:{}", sock.display()))
            && err.contains(&format!("uid {STRANGER}")),
        "{err}"
    );
    assert_eq!(
        owner_and_inode(&sock),
        strangers,
        "the stranger's socket is left"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&second);

    // baton's own stale socket is replaced
    let baton = Baton::start("unix-stale", |_, ctl| {
        let sock = ctl.with_file_name("app.sock");
        stale_socket(&sock, own_uid());
        unix_config(&sock, ctl)
    });
    let sock = baton.dir.join("app.sock");
    assert!(get(&sock).starts_with("HTTP/1.1 200"));
}

/// Found by the watched idle-connection test: out of descriptors, baton closed its oldest
/// control connection for room even when that one had been accepted in the same turn and not
/// read yet, so a client that had just sent its request got EOF (`baton status: Broken pipe`).
/// Raw clients (which, unlike `baton status`, never retry) arriving in one burst while baton
/// has room for three more descriptors must all get their answer.
#[test]
fn a_burst_at_the_descriptor_limit_closes_no_unread_request() {
    use std::io::{BufRead, BufReader, Write};
    let _serial = serial();
    let mut baton = Baton::start("emfile-burst", |port, ctl| {
        hello_config(port, ctl, 1, "", "")
    });
    let pid = baton.pid();
    let prlimit = |soft: &str| {
        let st = Command::new("prlimit")
            .args(["--pid", &pid.to_string(), &format!("--nofile={soft}:")])
            .status()
            .expect("prlimit");
        assert!(st.success());
    };
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap()
        .to_string();
    // baton is stopped while the burst queues up, so that it meets all of it in one turn
    signal(pid, "STOP");
    prlimit(&(fd_count(pid) + 3).to_string());
    let clients: Vec<UnixStream> = (0..12)
        .map(|_| {
            let mut c = UnixStream::connect(&baton.control).expect("connect");
            c.write_all(b"{\"op\":\"status\"}\n").unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c
        })
        .collect();
    signal(pid, "CONT");
    let mut answered = 0;
    let mut missing = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        let mut line = String::new();
        let n = BufReader::new(c).read_line(&mut line);
        match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(v) if v["state"] == "serving" => answered += 1,
            _ => missing.push(format!("client {i}: {n:?} {line:?}")),
        }
    }
    prlimit(&soft);
    assert_eq!(answered, 12, "unanswered: {missing:?}");
    assert!(pid_exists(pid));
    baton.stop();
}

/// `baton run --config CONFIG` killed after 10 s (a baton that wrongly starts fails the test
/// then): whether it succeeded, and its stderr.
fn run_bounded(config: &std::path::Path) -> (bool, String) {
    let out = Command::new("timeout")
        .args(["--kill-after=2", "10"])
        .arg(baton_bin())
        .args(["run", "--config"])
        .arg(config)
        .output()
        .expect("baton run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
