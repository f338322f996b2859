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
    let (code, body) = http_get(port, "/").expect("first request");
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
