//! The command line and the sockets: `baton check`, socket activation through
//! `systemd-socket-activate`, self-bound IPv6 and unix sockets, the control socket's access rules.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn check_accepts_a_good_config_and_names_file_line_key_on_error() {
    let dir = scratch("check");
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "command = [\"/bin/true\"]\n[sockets]\nhttp = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let out = Command::new(baton_bin())
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "command = [\"/bin/true\"]\n\n[readiness]\nkind = \"http\"\ntimeout = 30\n",
    )
    .unwrap();
    let out = Command::new(baton_bin())
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:5"), "file and line: {err}");
    assert!(err.contains("readiness.timeout"), "key: {err}");
    assert!(err.contains("\"30s\""), "hint: {err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Socket-activated by systemd-socket-activate: baton passes the named socket on, and each
/// worker sees its own LISTEN_PID and the name from LISTEN_FDNAMES.
#[test]
fn takes_sockets_from_socket_activation() {
    let _g = serial();
    let dir = scratch("activate");
    let port = free_port();
    let ctl = dir.join("ctl.sock");
    let cfg = dir.join("a.toml");
    std::fs::write(
        &cfg,
        format!(
            "command = [\"{}\"]\ninstances = 2\ncontrol = \"{}\"\n",
            example_bin("hello").display(),
            ctl.display()
        ),
    )
    .unwrap();
    let child = Command::new("systemd-socket-activate")
        .args(["-l", &format!("127.0.0.1:{port}"), "--fdname=web"])
        // it passes on only what -E names: the history goes next to the test's files
        .arg(format!(
            "--setenv=STATE_DIRECTORY={}",
            dir.join("state").display()
        ))
        .arg(baton_bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("systemd-socket-activate (package systemd)");
    // ends it (and baton, with its workers) even when an assertion below fails
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            if let Ok(None) = self.0.try_wait() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
    let mut child = KillOnDrop(child);
    wait_for(
        "systemd-socket-activate listening",
        Duration::from_secs(5),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    // systemd-socket-activate started baton on that first connection
    let (code, body) = http_get(port, "/", Duration::from_secs(10)).expect("first request");
    assert_eq!(code, 200, "{body}");
    let status = || -> Option<serde_json::Value> {
        let out = Command::new(baton_bin())
            .args(["status", "--json", "--control"])
            .arg(&ctl)
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    };
    wait_for("serving", Duration::from_secs(10), || {
        status().is_some_and(|s| s["state"] == "serving")
    });
    let s = status().unwrap();
    assert_eq!(s["sockets"][0]["name"], "web");
    assert_eq!(s["sockets"][0]["source"], "systemd");
    for w in s["generations"][0]["workers"].as_array().unwrap() {
        let pid = w["pid"].as_i64().unwrap() as i32;
        assert_eq!(env_of(pid, "LISTEN_PID"), Some(pid.to_string()));
        assert_eq!(env_of(pid, "LISTEN_FDNAMES").as_deref(), Some("web"));
    }
    signal(child.0.id() as i32, "TERM");
    let st = child.0.wait().unwrap();
    assert!(st.success(), "{st:?}");
    let _ = std::fs::remove_dir_all(dir);
}

fn unix_get(path: &std::path::Path) -> String {
    let mut s = UnixStream::connect(path).expect("connect unix socket");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Without systemd, baton binds IPv6 and unix stream sockets itself and passes both.
#[test]
fn binds_ipv6_and_unix_sockets_itself() {
    let _g = serial();
    let port = free_port();
    let baton = Baton::start("bind", |_, ctl| {
        let sock = ctl.with_file_name("app.sock");
        format!(
            "command = [\"{}\"]\ninstances = 1\ncontrol = \"{}\"\n[sockets]\nv6 = \"[::1]:{port}\"\nlocal = \"unix:{}\"\n",
            example_bin("hello").display(),
            ctl.display(),
            sock.display()
        )
    });
    let pid = baton.serving_pids()[0];
    assert_eq!(env_of(pid, "LISTEN_FDS").as_deref(), Some("2"));
    assert_eq!(env_of(pid, "LISTEN_FDNAMES").as_deref(), Some("v6:local"));
    let mut s = std::net::TcpStream::connect(("::1", port)).expect("connect [::1]");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let out = unix_get(&baton.dir.join("app.sock"));
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

/// The control socket is 0600 and refuses other users.
#[test]
fn control_socket_refuses_other_users() {
    let _g = serial();
    let baton = Baton::start("perm", |port, ctl| hello_config(port, ctl, 1, "", ""));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&baton.control)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    // make the directory traversable so that only the socket's own checks apply
    std::fs::set_permissions(&baton.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(baton_bin())
        .args(["reload", "--control"])
        .arg(&baton.control)
        .output()
        .expect("setpriv");
    assert!(!out.status.success());
    assert_eq!(baton.serving_generation(), 1, "nothing was reloaded");
}

/// A `baton run` started by a test, killed (SIGTERM, then SIGKILL) when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            signal(self.0.id() as i32, "TERM");
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `baton ARGS…`, as user nobody when `xdg` is given (with XDG_RUNTIME_DIR=xdg), else as root.
fn baton_cmd(xdg: Option<&std::path::Path>, args: &[&std::ffi::OsStr]) -> Command {
    let mut c = match xdg {
        Some(dir) => {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(baton_bin())
                .env("XDG_RUNTIME_DIR", dir);
            c
        }
        None => Command::new(baton_bin()),
    };
    c.args(args).env_remove("NOTIFY_SOCKET");
    c
}

/// `baton run --config CONFIG` in the background (output into CONFIG.log).
fn run_config(xdg: Option<&std::path::Path>, config: &std::path::Path) -> Running {
    let log = std::fs::File::create(config.with_extension("log")).unwrap();
    let child = baton_cmd(xdg, &["run".as_ref(), "--config".as_ref(), config.as_ref()])
        // the history goes next to the test's config, not to /var/lib/baton
        .env("STATE_DIRECTORY", config.with_extension("state"))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn baton run");
    Running(child)
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Item 6 of issue 12: with no `control =` and no `--control`, `baton run --config
/// DIR/NAME.toml` (as root) listens on /run/baton/NAME/control.sock — the directory
/// baton@NAME.service gets from `RuntimeDirectory=baton/NAME` — and `baton status` /
/// `baton reload --config DIR/NAME.toml` find it there.
#[test]
fn default_control_socket_is_runtime_dir_name_control_sock() {
    let _g = serial();
    assert_eq!(
        nix_euid(),
        0,
        "this test checks root's runtime dir /run/baton"
    );
    let dir = scratch("defctl");
    let name = format!("baton-test-{}", std::process::id());
    let cfg = dir.join(format!("{name}.toml"));
    let port = free_port();
    std::fs::write(
        &cfg,
        format!(
            "command = [\"{}\"]\n[sockets]\nhttp = \"127.0.0.1:{port}\"\n",
            example_bin("hello").display()
        ),
    )
    .unwrap();
    let expected = std::path::PathBuf::from(format!("/run/baton/{name}/control.sock"));
    let _baton = run_config(None, &cfg);
    let status = || {
        baton_cmd(
            None,
            &[
                "status".as_ref(),
                "--json".as_ref(),
                "--config".as_ref(),
                cfg.as_ref(),
            ],
        )
        .output()
        .unwrap()
    };
    wait_for(
        "baton status --config answers",
        Duration::from_secs(20),
        || {
            let out = status();
            out.status.success()
                && serde_json::from_slice::<serde_json::Value>(&out.stdout)
                    .is_ok_and(|s| s["state"] == "serving")
        },
    );
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::metadata(&expected).is_ok_and(|m| m.file_type().is_socket()),
        "{} is baton's control socket",
        expected.display()
    );
    assert!(
        expected.with_extension("notify").exists(),
        "the notify socket sits next to it"
    );
    let out = baton_cmd(
        None,
        &["reload".as_ref(), "--config".as_ref(), cfg.as_ref()],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let s: serde_json::Value = serde_json::from_slice(&status().stdout).unwrap();
    assert_eq!(s["serving_generation"], 2);
    // A broken file (a new user's trial: `reload --json --config` printed plain text, baton
    // never heard of the failed reload, and `status --config` showed nothing): the baton at
    // the file's default path is asked all the same, and judges the file itself.
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{good}timout = \"20s\"\n")).unwrap();
    let out = baton_cmd(
        None,
        &[
            "reload".as_ref(),
            "--json".as_ref(),
            "--config".as_ref(),
            cfg.as_ref(),
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json prints JSON ({e}): {}", text(&out)));
    assert_eq!(r["ok"], false);
    let msg = r["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("config error") && msg.contains("timout"),
        "{msg}"
    );
    let out = status();
    assert!(
        out.status.success(),
        "status with a broken file: {}",
        text(&out)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        s["serving_generation"], 2,
        "the serving generation is untouched"
    );
    assert_eq!(s["reloads_failed"], 1, "baton counted the failed reload");
    std::fs::write(&cfg, &good).unwrap();
    // Another file of the same name (a new user's trial: `reload --config OTHER/NAME.toml`
    // reloaded the baton serving NAME.toml, from its own file, and said it succeeded): refused,
    // naming the file that baton serves; nothing is reloaded or counted.
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let other_cfg = other.join(format!("{name}.toml"));
    std::fs::write(&other_cfg, &good).unwrap();
    let out = baton_cmd(
        None,
        &["reload".as_ref(), "--config".as_ref(), other_cfg.as_ref()],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reload refused")
            && err.contains(&format!("serves {}", cfg.display()))
            && err.contains(&format!("not {}", other_cfg.display())),
        "{err}"
    );
    let s: serde_json::Value = serde_json::from_slice(&status().stdout).unwrap();
    assert_eq!(s["serving_generation"], 2, "nothing was reloaded");
    assert_eq!(s["reloads_failed"], 1, "nor counted");
    assert_eq!(s["config"], cfg.display().to_string());
    // The served file itself, named relative to another directory, through a `..`: reloaded.
    let out = baton_cmd(
        None,
        &[
            "reload".as_ref(),
            "--config".as_ref(),
            format!("../{name}.toml").as_ref(),
        ],
    )
    .current_dir(&other)
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let s: serde_json::Value = serde_json::from_slice(&status().stdout).unwrap();
    assert_eq!(s["serving_generation"], 3);
    drop(_baton);
    assert!(
        !expected.exists(),
        "baton removes its control socket on exit"
    );
    let _ = std::fs::remove_dir(expected.parent().unwrap());
    let _ = std::fs::remove_dir_all(dir);
}

fn nix_euid() -> u32 {
    // the owner of /proc/self is the effective uid
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

/// Item 6 of issue 12: `baton status` / `baton reload` with neither --config nor --control
/// use the one `<runtime dir>/*/control.sock`; with none they say where they looked and
/// what to pass (status exits 3), with several they list them. Run as nobody with its own
/// XDG_RUNTIME_DIR, so that nothing else on the machine is in the way.
#[test]
fn status_without_arguments_finds_the_one_control_socket() {
    let _g = serial();
    let dir = scratch("discover");
    let xdg = dir.join("xdg");
    std::fs::create_dir(&xdg).unwrap();
    let mk = |name: &str| {
        let cfg = dir.join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "command = [\"{}\"]\n[sockets]\nhttp = \"127.0.0.1:{}\"\n",
                example_bin("hello").display(),
                free_port()
            ),
        )
        .unwrap();
        cfg
    };
    let (one, two) = (mk("one"), mk("two"));
    let chown = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(chown.success());
    let status = || {
        baton_cmd(Some(&xdg), &["status".as_ref(), "--json".as_ref()])
            .output()
            .unwrap()
    };

    // none
    let out = status();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = text(&out);
    let pattern = format!("{}/baton/*/control.sock", xdg.display());
    assert!(err.contains(&pattern), "says where it looked: {err}");
    assert!(
        err.contains("--config") && err.contains("--control"),
        "says what to pass: {err}"
    );

    // exactly one
    let a = run_config(Some(&xdg), &one);
    wait_for(
        "baton status (no argument) answers",
        Duration::from_secs(20),
        || {
            let out = status();
            out.status.success()
                && serde_json::from_slice::<serde_json::Value>(&out.stdout)
                    .is_ok_and(|s| s["state"] == "serving")
        },
    );
    let s: serde_json::Value = serde_json::from_slice(&status().stdout).unwrap();
    assert_eq!(s["pid"], a.0.id(), "it is baton `one`");
    assert!(xdg.join("baton/one/control.sock").exists());
    let out = baton_cmd(Some(&xdg), &["reload".as_ref()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let s: serde_json::Value = serde_json::from_slice(&status().stdout).unwrap();
    assert_eq!(s["serving_generation"], 2, "`baton reload` reloaded `one`");

    // several
    let _b = run_config(Some(&xdg), &two);
    let sock2 = xdg.join("baton/two/control.sock");
    wait_for("baton `two` listening", Duration::from_secs(20), || {
        baton_cmd(
            Some(&xdg),
            &["status".as_ref(), "--control".as_ref(), sock2.as_ref()],
        )
        .output()
        .unwrap()
        .status
        .success()
    });
    for cmd in ["status", "reload"] {
        let out = baton_cmd(Some(&xdg), &[cmd.as_ref()]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{cmd}: {}", text(&out));
        let err = text(&out);
        assert!(
            err.contains(&format!("{}/baton/one/control.sock", xdg.display()))
                && err.contains(&sock2.display().to_string()),
            "{cmd} lists both: {err}"
        );
    }
    let s: serde_json::Value = serde_json::from_slice(
        &baton_cmd(
            Some(&xdg),
            &[
                "status".as_ref(),
                "--json".as_ref(),
                "--config".as_ref(),
                one.as_ref(),
            ],
        )
        .output()
        .unwrap()
        .stdout,
    )
    .unwrap();
    assert_eq!(
        s["serving_generation"], 2,
        "a failed `reload` reloaded nothing"
    );
    drop(a);
    drop(_b);
    let _ = std::fs::remove_dir_all(dir);
}

/// Item 9 of issue 12: `baton check` warns (exit 0) about a command that does not exist, a
/// missing cwd, a program another user may not execute; `--strict` makes them errors (exit 1).
#[test]
fn check_warns_about_missing_command_and_cwd_and_strict_fails() {
    let dir = scratch("checkrt");
    let check = |xdg: Option<&std::path::Path>, cfg: &std::path::Path, strict: bool| {
        let mut args: Vec<&std::ffi::OsStr> =
            vec!["check".as_ref(), "--config".as_ref(), cfg.as_ref()];
        if strict {
            args.push("--strict".as_ref());
        }
        baton_cmd(xdg, &args).output().unwrap()
    };
    let write = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let missing = write(
        "missing.toml",
        "command = [\"/srv/nonexistent/app\", \"-x\"]\n",
    );
    let nocwd = write(
        "nocwd.toml",
        "command = [\"./app\"]\ncwd = \"/srv/nonexistent\"\n",
    );
    let notpath = write("notpath.toml", "command = [\"baton-no-such-command\"]\n");
    for (cfg, key, words) in [
        (&missing, "command", "/srv/nonexistent/app does not exist"),
        (&nocwd, "cwd", "/srv/nonexistent does not exist"),
        (&notpath, "command", "PATH"),
    ] {
        let out = check(None, cfg, false);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "a warning only: {}", text(&out));
        let line = format!("warning: {}: key `{key}`: ", cfg.display());
        assert!(
            err.contains(&line) && err.contains(words),
            "{line} … {words}: {err}"
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("ok ("),
            "{}",
            text(&out)
        );
        let out = check(None, cfg, true);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "--strict: an error: {}",
            text(&out)
        );
        assert!(
            err.contains(&format!("baton: {}: key `{key}`: ", cfg.display()))
                && err.contains(words),
            "{err}"
        );
        assert!(!err.contains("warning:"), "{err}");
        assert!(out.stdout.is_empty(), "no ok line: {}", text(&out));
    }
    // a program root may run but the service's user may not: only the check as that user sees it
    let private = dir.join("private");
    std::fs::create_dir(&private).unwrap();
    let app = private.join("app");
    std::fs::copy("/bin/true", &app).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = write(
        "private.toml",
        &format!("command = [\"{}\"]\n", app.display()),
    );
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = check(None, &cfg, true);
    assert!(out.status.success(), "root may run it: {}", text(&out));
    assert!(out.stderr.is_empty(), "{}", text(&out));
    let out = check(Some(&dir), &cfg, true);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not executable by uid 65534"),
        "{}",
        text(&out)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A new user's trial, through the binary: what `baton check` passed and `baton run` then
/// refused. Two [sockets] that collide and port 0 in bind mode are errors naming the file,
/// line and key (the collision both keys); `handover` under [sockets] is hinted to the top
/// level; bind mode with the default notify readiness is a warning; no [sockets] is a note on
/// stdout (exit 0, nothing on stderr: the shipped socket unit gives the sockets), and `baton
/// run` outside systemd says what to do.
#[test]
fn check_refuses_what_run_would_and_notes_what_systemd_must_give() {
    let dir = scratch("check-trial");
    let write = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(&p, format!("command = [\"/bin/true\"]\n{body}")).unwrap();
        p
    };
    let check = |cfg: &std::path::Path| {
        Command::new(baton_bin())
            .args(["check", "--config"])
            .arg(cfg)
            .output()
            .unwrap()
    };
    let dual = write(
        "dual.toml",
        "[sockets]\nv4 = \"0.0.0.0:3000\"\nv6 = \"[::]:3000\"\n",
    );
    let out = check(&dual);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:4:", dual.display()))
            && err.contains("key `sockets.v6`")
            && err.contains("`sockets.v4` (0.0.0.0:3000, line 3)"),
        "{err}"
    );
    let zero = write(
        "zero.toml",
        "handover = \"bind\"\n[sockets]\nhttp = \"0.0.0.0:0\"\n[readiness]\nkind = \"listen\"\n",
    );
    let out = check(&zero);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:4:", zero.display()))
            && err.contains("key `sockets.http`: port 0"),
        "{err}"
    );
    let misplaced = write(
        "misplaced.toml",
        "[sockets]\nhttp = \"127.0.0.1:3000\"\nhandover = \"bind\"\n",
    );
    let out = check(&misplaced);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("key `sockets.handover`")
            && err.contains("`handover` is a top-level key: put it above the first [table]"),
        "{err}"
    );
    let notify = write(
        "notify.toml",
        "handover = \"bind\"\n[sockets]\nhttp = \"127.0.0.1:3000\"\n",
    );
    let out = check(&notify);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning:")
            && err.contains("key `readiness.kind`: bind mode with notify readiness")
            && err.contains("kind = \"listen\""),
        "{err}"
    );
    let none = write("none.toml", "");
    let out = check(&none);
    assert!(out.status.success(), "{}", text(&out));
    assert!(out.stderr.is_empty(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "note: {}: key `sockets`: no [sockets]",
            none.display()
        )) && stdout.contains("systemd")
            && stdout.contains(": ok (")
            && !stdout.contains("warning"),
        "{stdout}"
    );
    let out = Command::new("timeout")
        .args(["--kill-after=2", "10"])
        .arg(baton_bin())
        .args(["run", "--config"])
        .arg(&none)
        .arg("--control")
        .arg(dir.join("ctl.sock"))
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains(
            "the config has no [sockets]: add a [sockets] table, like http = \"0.0.0.0:3000\""
        ) && all.contains("socket unit"),
        "{all}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Item 9 of issue 12: `baton run --demo` finds the example worker next to the baton binary
/// (cargo's target/release/examples/hello, or the packages' /usr/lib/baton/hello-worker seen
/// from /usr/bin/baton) whatever the current directory, and takes `--listen`.
#[test]
fn demo_finds_its_worker_next_to_baton_and_takes_listen() {
    let _g = serial();
    let dir = scratch("demo");
    // a packaged layout: DIR/usr/bin/baton and DIR/usr/lib/baton/hello-worker
    let bin = dir.join("usr/bin");
    let lib = dir.join("usr/lib/baton");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::copy(baton_bin(), bin.join("baton")).unwrap();
    std::fs::copy(example_bin("hello"), lib.join("hello-worker")).unwrap();
    let alone = dir.join("alone");
    std::fs::create_dir_all(&alone).unwrap();
    std::fs::copy(baton_bin(), alone.join("baton")).unwrap();
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();

    for (baton, worker) in [
        (baton_bin(), example_bin("hello")),
        (bin.join("baton"), lib.join("hello-worker")),
    ] {
        let port = free_port();
        let ctl = dir.join("ctl.sock");
        let log = std::fs::File::create(dir.join("demo.log")).unwrap();
        let child = Command::new(&baton)
            .args([
                "run",
                "--demo",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--control",
            ])
            .arg(&ctl)
            .current_dir(&elsewhere)
            .env_remove("NOTIFY_SOCKET")
            .env("STATE_DIRECTORY", dir.join("state"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let _running = Running(child);
        let status = || -> Option<serde_json::Value> {
            let out = Command::new(baton_bin())
                .args(["status", "--json", "--control"])
                .arg(&ctl)
                .output()
                .ok()?;
            serde_json::from_slice(&out.stdout).ok()
        };
        wait_for(
            &format!("the demo of {} serving", baton.display()),
            Duration::from_secs(20),
            || status().is_some_and(|s| s["state"] == "serving"),
        );
        let (code, body) = http_get(port, "/", Duration::from_secs(10)).expect("GET / on --listen");
        assert_eq!(code, 200, "{body}");
        assert!(body.starts_with("hello from pid"), "{body}");
        let s = status().unwrap();
        let workers = s["generations"][0]["workers"].as_array().unwrap().clone();
        assert_eq!(workers.len(), 2, "{s}");
        for w in workers {
            let pid = w["pid"].as_i64().unwrap() as i32;
            assert_eq!(
                std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
                std::fs::canonicalize(&worker).unwrap(),
                "the worker next to {}",
                baton.display()
            );
        }
    }

    // no worker next to it: an error naming where it looked
    let out = Command::new(alone.join("baton"))
        .args(["run", "--demo", "--control"])
        .arg(dir.join("ctl2.sock"))
        .current_dir(&elsewhere)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = text(&out);
    assert!(
        err.contains(&alone.join("examples/hello").display().to_string())
            && err.contains("lib/baton/hello-worker")
            && err.contains("cargo build"),
        "{err}"
    );
    // a bad --listen is a usage error; --listen without --demo too
    let out = Command::new(baton_bin())
        .args(["run", "--demo", "--listen", "localhost:80"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--listen"), "{}", text(&out));
    let out = Command::new(baton_bin())
        .args(["run", "--config", "/dev/null", "--listen", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let _ = std::fs::remove_dir_all(dir);
}

/// Item 10 of issue 12: `baton status` says at which fd the *workers* get each socket (the
/// number an app is configured with), next to baton's own; both checked in /proc.
#[test]
fn status_names_the_workers_fd_of_each_socket() {
    let _g = serial();
    let port2 = free_port();
    let baton = Baton::start("sockfd", |port, ctl| {
        hello_config(port, ctl, 1, "", "").replace(
            "[sockets]\n",
            &format!("[sockets]\nadmin = \"127.0.0.1:{port2}\"\n"),
        )
    });
    let out = Command::new(baton_bin())
        .args(["status", "--control"])
        .arg(&baton.control)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    let worker = baton.serving_pids()[0];
    for (name, worker_fd, port) in [("admin", 3, port2), ("http", 4, baton.port)] {
        let line = table
            .lines()
            .find(|l| l.starts_with(&format!("socket {name}: ")))
            .unwrap_or_else(|| panic!("no line for socket {name}: {table}"));
        let prefix = format!("socket {name}: workers' fd {worker_fd} (baton's fd ");
        assert!(line.starts_with(&prefix), "{line}");
        let baton_fd: i32 = line[prefix.len()..]
            .split(')')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("{line}"));
        assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
        assert_eq!(
            fd_target(worker, worker_fd),
            fd_target(baton.pid(), baton_fd),
            "{line}: the worker's fd {worker_fd} is baton's fd {baton_fd}"
        );
        assert!(fd_target(worker, worker_fd).starts_with("socket:"));
    }
    let s = baton.status().unwrap();
    assert_eq!(s["sockets"][0]["worker_fd"], 3, "{s}");
}

/// Item 10 of issue 12: `baton generate man` (what packaging/build.sh ships) writes baton(1)
/// with the sections clap does not know, one page per subcommand, and baton.toml(5); man
/// renders each one without a warning (lintian runs the same check on the .deb).
#[test]
fn generated_man_pages_have_the_extra_sections_and_render_cleanly() {
    let dir = scratch("man");
    let out = Command::new(baton_bin())
        .args(["generate", "man", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    assert_eq!(
        pages,
        [
            "baton-check.1",
            "baton-history.1",
            "baton-reload.1",
            "baton-rollback.1",
            "baton-run.1",
            "baton-status.1",
            "baton-units.1",
            "baton-verify.1",
            "baton.1",
            "baton.toml.5"
        ]
    );
    let render = |page: &str| {
        let out = Command::new("man")
            .args(["--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z"])
            .arg(dir.join(page))
            .env("LC_ALL", "C.UTF-8")
            .env("MANWIDTH", "80")
            .env("MANROFFSEQ", "")
            .output()
            .expect("man (package man-db)");
        assert!(out.status.success(), "{page}: {}", text(&out));
        assert!(
            out.stderr.is_empty(),
            "{page}: warnings: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new("man")
            .args(["-l", "-Tutf8", "-P", "cat"])
            .arg(dir.join(page))
            .env("LC_ALL", "C.UTF-8")
            .env("MANWIDTH", "200")
            .output()
            .unwrap();
        // plain text: drop the overstrike sequences of bold and underline
        let raw = String::from_utf8_lossy(&out.stdout).to_string();
        let mut plain = String::new();
        for c in raw.chars() {
            if c == '\u{8}' {
                plain.pop();
            } else {
                plain.push(c);
            }
        }
        plain
    };
    for page in &pages {
        render(page);
    }
    let baton1 = render("baton.1");
    for section in [
        "EXIT STATUS",
        "SIGNALS",
        "ENVIRONMENT",
        "FILES",
        "EXAMPLES",
        "SEE ALSO",
    ] {
        assert!(
            baton1.lines().any(|l| l == section),
            "baton(1) has {section}: {baton1}"
        );
    }
    for words in [
        "SIGHUP",
        "SIGTERM, SIGINT, SIGQUIT",
        "/run/baton/NAME/control.sock",
        "baton.toml(5)",
        "3 when no baton answers",
    ] {
        assert!(baton1.contains(words), "baton(1) says {words:?}: {baton1}");
    }
    let baton5 = render("baton.toml.5");
    for words in [
        "backoff_initial (duration)",
        "cwd (string (path))",
        "accepting",
        "Default: \"30s\".",
    ] {
        assert!(
            baton5.contains(words),
            "baton.toml(5) says {words:?}: {baton5}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
