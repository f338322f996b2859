//! `handover = "bind"` with a unix socket (issue 15, "unix sockets"), real apps unchanged:
//! gunicorn `--bind unix:PATH` removes the path before its bind (a socket there is stale, to
//! gunicorn) and at exit, and Node's `server.close()` removes the path its `listen(PATH)` bound.
//! baton traps unlink() and unlinkat() when one of its sockets is a unix path and answers an
//! app's unlink of that path with 0 without removing it: reloads under load over the unix
//! socket fail no request, and after every reload the path is still baton's socket (a
//! connection there has baton's pid as its peer: baton called listen()). A relative path (the
//! worker's `cwd`) matches too, and every other unlink runs as the app asked.
//!
//! ```text
//! cargo build --release --examples --bins
//! cargo test --release --test bind_unix -- --nocapture
//! ```

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// The venv of tests/setup.sh with gunicorn.
const VENV: &str = "/opt/baton-tests/venv";

/// Where the test's unix socket lives: next to baton's control socket, in its scratch dir.
fn sock_of(ctl: &Path) -> PathBuf {
    ctl.with_file_name("app.sock")
}

/// A bind-mode config with one unix socket `app` at [`sock_of`]`(ctl)`; `top` adds top-level
/// keys (e.g. `cwd`), `env` lines of `[env]`.
fn unix_config(
    command: &str,
    instances: usize,
    ctl: &Path,
    top: &str,
    env: &str,
    kind: &str,
) -> String {
    format!(
        r#"command = {command}
instances = {instances}
control = "{ctl}"
handover = "bind"
{top}

[env]
{env}

[sockets]
app = "unix:{sock}"

[readiness]
kind = "{kind}"
timeout = "20s"

[drain]
timeout = "10s"
"#,
        ctl = ctl.display(),
        sock = sock_of(ctl).display()
    )
}

/// One `GET /` over the unix socket at `path`: the peer's pid (the process that called
/// listen() on the socket the path names) and the answer's body.
fn unix_get(path: &Path) -> Result<(i32, String), String> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let mut s =
        UnixStream::connect(path).map_err(|e| format!("connect {}: {e}", path.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let peer = getsockopt(&s, PeerCredentials).map_err(|e| format!("SO_PEERCRED: {e}"))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    Ok((peer.pid(), body.to_string()))
}

/// The path is still a socket, and it is baton's: a connection there is accepted on the
/// socket baton listens on (its peer credentials are baton's), and a worker answers.
fn assert_path_is_batons(baton: &Baton, path: &Path, when: &str) {
    let meta = std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{when}: {} is gone: {e}", path.display()));
    assert!(meta.file_type().is_socket(), "{when}: not a socket");
    let (peer, body) = unix_get(path).unwrap_or_else(|e| panic!("{when}: {e}"));
    assert_eq!(
        peer,
        baton.pid(),
        "{when}: the socket at the path is not baton's"
    );
    assert!(
        body.starts_with("hello from") || body.starts_with("port"),
        "{when}: {body:?}"
    );
}

/// Reloads one every `every` under keep-alive and per-request load over the unix socket: each
/// reload succeeds and replaces the serving pids (and those `also_old` adds), the path is
/// baton's socket after every one and at the end, and not one request fails.
fn reloads_over_the_socket(
    baton: &Baton,
    path: &Path,
    reloads: u32,
    every: Duration,
    also_old: impl FnMut(&[i32]) -> Vec<i32>,
) {
    assert_path_is_batons(baton, path, "before the first reload");
    let keep = Load::start_unix(path, "keepalive", 2, 200);
    let close = Load::start_unix(path, "close", 2, 100);
    baton.paced_reloads(reloads, every, Duration::from_secs(20), also_old, |i| {
        assert_path_is_batons(baton, path, &format!("after reload {i}"))
    });
    assert_no_failures(&keep.stop(), 100);
    assert_no_failures(&close.stop(), 50);
    assert_path_is_batons(baton, path, "at the end");
}

/// Each of the generations' workers had its unlink of the path kept (`at_least` lines).
fn assert_kept(log: &str, path: &Path, at_least: usize) {
    let line = format!(
        "kept unix:{}: the app's unlink was answered without removing it",
        path.display()
    );
    let kept = log.matches(&line).count();
    assert!(
        kept >= at_least,
        "{kept} `{line}` lines, wanted {at_least}:\n{log}"
    );
    assert!(log.contains("baton_event=\"worker_unlink_kept\""), "{log}");
}

/// gunicorn `--bind unix:PATH` (absolute): its master removes the path before it binds and at
/// exit. `instances` masters of 2 workers each, `notify` readiness as in the TCP test
/// (gunicorn skips listen() on a socket that already listens).
fn gunicorn(instances: usize) {
    let _g = serial();
    let apps = repo_dir().join("tests/apps");
    let name = format!("bind-unix-gunicorn-{instances}");
    let baton = Baton::spawn(&name, |_, ctl| {
        let command = format!(
            "[\"{VENV}/bin/gunicorn\", \"--no-control-socket\", \"--workers\", \"2\", \
             \"--graceful-timeout\", \"10\", \"--chdir\", \"{}\", \"--bind\", \"unix:{}\", \
             \"app:application\"]",
            apps.display(),
            sock_of(ctl).display()
        );
        unix_config(&command, instances, ctl, "", "", "notify")
    });
    let path = sock_of(&baton.control);
    baton.wait_serving(Duration::from_secs(30));
    let reloads = 20;
    reloads_over_the_socket(&baton, &path, reloads, Duration::ZERO, |old| {
        old.iter().flat_map(|m| gunicorn_workers(&[*m])).collect()
    });
    let log = baton.log_text();
    assert!(
        log.contains(&format!(
            "bound unix:{}: it got socket `app`",
            path.display()
        )),
        "{log}"
    );
    // every master removed the path at boot, and the retired ones at exit
    assert_kept(
        &log,
        &path,
        (reloads as usize + 1) * instances + reloads as usize * instances,
    );
}

#[test]
fn gunicorn_binding_a_unix_path_reloads_without_a_failure_and_the_path_stays_batons() {
    gunicorn(1);
}

#[test]
fn two_gunicorn_masters_binding_a_unix_path_reload_without_a_failure() {
    gunicorn(2);
}

/// tests/apps/bind.js with `SOCK` (`server.listen(SOCK)`), `instances` workers, 20 reloads
/// every 500 ms: each drained worker's `server.close()` unlinks SOCK (libuv removes the path
/// its bind created).
fn node(name: &str, instances: usize, relative: bool) {
    let _g = serial();
    let app = repo_dir().join("tests/apps/bind.js");
    let baton = Baton::spawn(name, |_, ctl| {
        let dir = ctl.parent().expect("scratch dir");
        let (sock, top) = match relative {
            true => (
                "app.sock".to_string(),
                format!("cwd = \"{}\"", dir.display()),
            ),
            false => (sock_of(ctl).display().to_string(), String::new()),
        };
        let command = format!("[\"node\", \"{}\"]", app.display());
        unix_config(
            &command,
            instances,
            ctl,
            &top,
            &format!("SOCK = \"{sock}\""),
            "listen",
        )
    });
    let path = sock_of(&baton.control);
    baton.wait_serving(Duration::from_secs(30));
    let reloads = 20;
    reloads_over_the_socket(&baton, &path, reloads, Duration::from_millis(500), |_| {
        Vec::new()
    });
    let log = baton.log_text();
    let asked = match relative {
        true => "app.sock".to_string(),
        false => path.display().to_string(),
    };
    assert!(
        log.contains(&format!(
            "bound unix:{asked}: it got socket `app` (unix:{})",
            path.display()
        )),
        "{log}"
    );
    assert!(log.contains("ready (listen() on all 1 socket(s))"), "{log}");
    // every retired worker's close() unlinked the path
    assert_kept(&log, &path, reloads as usize * instances);
}

#[test]
fn node_listening_on_a_unix_path_reloads_without_a_failure_with_one_instance() {
    node("bind-unix-node-1", 1, false);
}

#[test]
fn node_listening_on_a_unix_path_reloads_without_a_failure_with_three_instances() {
    node("bind-unix-node-3", 3, false);
}

/// `server.listen("app.sock")` from the worker's `cwd`: the relative bind gets baton's socket,
/// and the relative unlink at close is kept.
#[test]
fn node_listening_on_a_relative_unix_path_reloads_without_a_failure_with_two_instances() {
    node("bind-unix-node-rel", 2, true);
}

/// gunicorn `--bind unix:app.sock` with the worker's `cwd` the socket's directory (the app
/// imported through `--pythonpath`, so gunicorn does not chdir): its relative bind matches.
#[test]
fn gunicorn_binding_a_relative_unix_path_gets_the_socket() {
    let _g = serial();
    let apps = repo_dir().join("tests/apps");
    let baton = Baton::spawn("bind-unix-gunicorn-rel", |_, ctl| {
        let command = format!(
            "[\"{VENV}/bin/gunicorn\", \"--no-control-socket\", \"--workers\", \"2\", \
             \"--graceful-timeout\", \"10\", \"--pythonpath\", \"{}\", \"--bind\", \
             \"unix:app.sock\", \"app:application\"]",
            apps.display()
        );
        let top = format!("cwd = \"{}\"", ctl.parent().unwrap().display());
        unix_config(&command, 1, ctl, &top, "", "notify")
    });
    let path = sock_of(&baton.control);
    baton.wait_serving(Duration::from_secs(30));
    reloads_over_the_socket(&baton, &path, 3, Duration::ZERO, gunicorn_workers);
    let log = baton.log_text();
    assert!(
        log.contains(&format!(
            "bound unix:app.sock: it got socket `app` (unix:{})",
            path.display()
        )),
        "{log}"
    );
    assert_kept(&log, &path, 4 + 3);
}

/// A Python app that binds `SOCK` and then unlinks: the socket's path (absolute, and by name
/// relative to a descriptor of its directory), and in `WORK` a file (absolute), a file
/// relative to a descriptor (unlinkat), a directory (unlinkat with AT_REMOVEDIR), a file
/// that does not exist, and a file with the socket's name in another directory. It prints
/// each result (`ok` or the errno), removes the socket's path 5 more times, and serves HTTP on
/// the socket.
const UNLINK_APP: &str = r#"
import os, socket
pid = os.getpid()
sock_path, work = os.environ["SOCK"], os.environ["WORK"]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sock_path)
res = []
def attempt(what, f):
    try:
        f()
        res.append(f"{what}=ok")
    except OSError as e:
        res.append(f"{what}={e.errno}")
d = os.open(os.path.dirname(sock_path), os.O_RDONLY | os.O_DIRECTORY)
w = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
attempt("sock", lambda: os.unlink(sock_path))
attempt("sock_at", lambda: os.unlink(os.path.basename(sock_path), dir_fd=d))
attempt("other", lambda: os.unlink(os.path.join(work, "other")))
attempt("other_at", lambda: os.unlink("other_at", dir_fd=w))
attempt("dir_at", lambda: os.rmdir("dir", dir_fd=w))
attempt("missing", lambda: os.unlink(os.path.join(work, "missing")))
attempt("same_name", lambda: os.unlink(os.path.join(work, os.path.basename(sock_path))))
print("unlink.py: " + " ".join(res), flush=True)
for _ in range(5):
    os.unlink(sock_path)
s.listen(16)
while True:
    conn, _ = s.accept()
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(65536)
        if not chunk:
            break
        head += chunk
    body = f"port unix pid {pid}\n".encode()
    conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    conn.close()
"#;

/// The app's unlink of baton's path is answered 0 and the path stays; every other unlink it
/// makes runs as asked (the files and the directory are gone, the missing file is ENOENT).
/// Of a worker's 7 kept unlinks, the first 4 are logged at info.
#[test]
fn only_the_unlink_of_the_sockets_path_is_kept_every_other_one_runs() {
    let _g = serial();
    let dir = scratch("bind-unix-unlink-app");
    let app = dir.join("unlink.py");
    std::fs::write(&app, UNLINK_APP).expect("write unlink.py");
    let work = dir.join("work");
    std::fs::create_dir(&work).unwrap();
    for f in ["other", "other_at", "app.sock"] {
        std::fs::write(work.join(f), "x").unwrap();
    }
    std::fs::create_dir(work.join("dir")).unwrap();
    let baton = Baton::start("bind-unix-unlink", |_, ctl| {
        let command = format!("[\"python3\", \"{}\"]", app.display());
        let env = format!(
            "SOCK = \"{}\"\nWORK = \"{}\"",
            sock_of(ctl).display(),
            work.display()
        );
        unix_config(&command, 1, ctl, "", &env, "listen")
    });
    let path = sock_of(&baton.control);
    let log = baton.log_text();
    assert!(
        log.contains(
            "unlink.py: sock=ok sock_at=ok other=ok other_at=ok dir_at=ok missing=2 same_name=ok"
        ),
        "{log}"
    );
    for gone in ["other", "other_at", "dir", "app.sock"] {
        assert!(!work.join(gone).exists(), "{gone} is still there");
    }
    assert_path_is_batons(&baton, &path, "after the app's unlinks");
    let log = baton.log_text();
    assert_kept(&log, &path, 4);
    assert_eq!(
        log.matches("baton_event=\"worker_unlink_kept\"").count(),
        4,
        "{log}"
    );
    assert!(
        log.contains("this worker's further ones are logged at debug level"),
        "{log}"
    );
}

/// Binds `SOCK` (a unix path) or `PORT`, listens, then times 20,000 unlinks of a file that
/// does not exist and prints the mean in µs; then waits.
const UNLINK_COST_APP: &str = r#"
import os, socket, time
if os.environ.get("SOCK"):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(os.environ["SOCK"])
else:
    s = socket.socket()
    s.bind(("127.0.0.1", int(os.environ["PORT"])))
s.listen(16)
n = 20000
t = time.perf_counter()
for _ in range(n):
    try:
        os.unlink("/nonexistent-baton-unlink-cost")
    except FileNotFoundError:
        pass
print(f"unlink.cost: {(time.perf_counter() - t) / n * 1e6:.2f} us", flush=True)
time.sleep(600)
"#;

/// What the unlink trap costs an app: the mean time of an unlink (of a missing file, so the
/// call is continued) under a config with a unix socket (trapped) and one with a TCP socket
/// only (not trapped). A measurement, not a check:
/// `cargo test --release --test bind_unix -- --ignored --nocapture unlink_cost`.
#[test]
#[ignore]
fn unlink_cost_of_the_trap() {
    let _g = serial();
    let dir = scratch("bind-unix-cost-app");
    let app = dir.join("cost.py");
    std::fs::write(&app, UNLINK_COST_APP).expect("write cost.py");
    let command = format!("[\"python3\", \"{}\"]", app.display());
    let cost = |unix: bool| {
        let baton = Baton::start(&format!("bind-unix-cost-{unix}"), |port, ctl| match unix {
            true => {
                let env = format!("SOCK = \"{}\"", sock_of(ctl).display());
                unix_config(&command, 1, ctl, "", &env, "listen")
            }
            false => unix_config(&command, 1, ctl, "", "", "listen")
                .replace(
                    &format!("app = \"unix:{}\"", sock_of(ctl).display()),
                    &format!("app = \"127.0.0.1:{port}\""),
                )
                .replace("[env]\n", &format!("[env]\nPORT = \"{port}\"")),
        });
        let mut line = String::new();
        wait_for("unlink.cost", Duration::from_secs(60), || {
            line = baton
                .log_text()
                .lines()
                .find(|l| l.contains("unlink.cost:"))
                .unwrap_or_default()
                .to_string();
            !line.is_empty()
        });
        line
    };
    let (trapped, plain) = (cost(true), cost(false));
    eprintln!("unix socket (unlink trapped): {trapped}");
    eprintln!("TCP socket only (not trapped): {plain}");
}
