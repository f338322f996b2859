//! `handover = "bind"` (issue 15) with real apps, each unchanged: they bind their own port
//! (from `PORT`), and baton answers that bind() with its own socket and their listen() with 0
//! (`readiness.kind = "listen"`). A Node `server.listen(PORT)`, a static Go
//! `ListenAndServe(":PORT")`, reloads under load with not one failed request; an app that also
//! binds a port of its own keeps it; an app that binds the port twice gets baton's socket both
//! times; and the config errors of the new keys.
//!
//! ```text
//! cargo build --release --examples --bins
//! cargo test --release --test bind -- --nocapture
//! ```

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;

/// A bind-mode config: `command`, `instances`, `PORT` in the environment (baton's socket's
/// port, which the app binds itself), listen readiness.
fn bind_config(command: &str, instances: usize, port: u16, ctl: &Path, env: &str) -> String {
    bind_config_kind(command, instances, port, ctl, env, "listen")
}

/// [`bind_config`] with another readiness kind.
fn bind_config_kind(
    command: &str,
    instances: usize,
    port: u16,
    ctl: &Path,
    env: &str,
    kind: &str,
) -> String {
    format!(
        r#"command = {command}
instances = {instances}
control = "{ctl}"
handover = "bind"

[env]
PORT = "{port}"
{env}

[sockets]
http = "127.0.0.1:{port}"

[readiness]
kind = "{kind}"
timeout = "20s"

[drain]
timeout = "10s"
"#,
        ctl = ctl.display()
    )
}

/// The pid in an answer "hello from … pid P".
fn pid_in(body: &str) -> i32 {
    body.split_whitespace()
        .last()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {body:?}"))
}

/// Start baton on `command` in bind mode, then 20 reloads (as issue 15 asks), one every 500 ms,
/// under keep-alive
/// and per-request load: each reload succeeds, the old pids are gone and the new ones serve,
/// and not one request fails. Returns baton (still running) for more checks.
/// Reloads per app in [`reloads_under_load`].
const RELOADS: u32 = 20;

fn reloads_under_load(name: &str, command: &str, instances: usize) -> Baton {
    let baton = Baton::spawn(name, |port, ctl| {
        bind_config(command, instances, port, ctl, "")
    });
    baton.wait_serving(Duration::from_secs(30));
    let keep = Load::start(baton.port, "keepalive", 2, 300);
    let close = Load::start(baton.port, "close", 2, 100);
    baton.paced_reloads(
        RELOADS,
        Duration::from_millis(500),
        Duration::from_secs(15),
        |_| Vec::new(),
        |_| {},
    );
    assert_no_failures(&keep.stop(), 100);
    assert_no_failures(&close.stop(), 50);
    // the last generation serves: its pids answer
    let serving = baton.serving_pids();
    assert_eq!(serving.len(), instances);
    let (code, body) = http_get(baton.port, "/", Duration::from_secs(10)).expect("GET");
    assert_eq!(code, 200, "{body}");
    assert!(
        serving.contains(&pid_in(&body)),
        "{body} not from {serving:?}"
    );
    let log = baton.log_text();
    // every worker of the RELOADS + 1 generations got the socket through its own bind
    let binds = log.matches("baton_event=\"worker_bind\"").count();
    let generations = RELOADS as usize + 1;
    assert!(
        binds >= generations * instances,
        "{binds} worker_bind lines:\n{log}"
    );
    assert!(log.contains("it got socket `http`"), "{log}");
    // nothing else bound a port: Go's IPv6 probes ([::1]:0, [::]:0) are not named
    assert!(!log.contains("worker_bind_other"), "{log}");
    assert!(!log.contains("loopback only"), "{log}");
    // every worker by its trapped listen(), none by the look in /proc (which cannot find an
    // app waiting for connections before its listen() returned)
    let by_listen = log.matches("ready (listen() on all 1 socket(s))").count();
    assert_eq!(by_listen, generations * instances, "{log}");
    assert!(!log.contains("as /proc shows"), "{log}");
    baton
}

fn node(instances: usize) {
    let _g = serial();
    let app = repo_dir().join("tests/apps/bind.js");
    let baton = reloads_under_load(
        &format!("bind-node-{instances}"),
        &format!("[\"node\", \"{}\"]", app.display()),
        instances,
    );
    // Node binds [::]:PORT and gets baton's 0.0.0.0-family socket; it has no LISTEN_FDS
    let log = baton.log_text();
    assert!(
        log.contains(&format!(
            "bound [::]:{}: it got socket `http` (127.0.0.1:{})",
            baton.port, baton.port
        )),
        "{log}"
    );
    // each bind line names the generation's release (`BATON_RELEASE`), as its other lines do
    let binds: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"worker_bind\""))
        .collect();
    assert!(binds.len() >= instances * (RELOADS as usize + 1), "{log}");
    assert!(
        binds.iter().all(|l| l.contains(" baton_release=")),
        "{binds:#?}"
    );
    let pid = baton.serving_pids()[0];
    // no workers' fd in `baton status`: the app has the socket where its bind put it
    assert_eq!(
        baton.status().expect("status")["sockets"][0]["worker_fd"],
        serde_json::Value::Null
    );
    assert_eq!(env_of(pid, "LISTEN_FDS"), None);
    assert_eq!(env_of(pid, "LISTEN_PID"), None);
    assert!(env_of(pid, "NOTIFY_SOCKET").is_some());
}

#[test]
fn node_binding_its_own_port_reloads_under_load_with_one_instance() {
    node(1);
}

#[test]
fn node_binding_its_own_port_reloads_under_load_with_two_instances() {
    node(2);
}

#[test]
fn node_binding_its_own_port_reloads_under_load_with_three_instances() {
    node(3);
}

/// The README's Node drain snippet ("What your app must do") in its bind-mode variant, as the
/// README gives it: its `server.listen({ fd: 3 })` replaced by the line of the README's next js
/// block, with a one-line handler; 20 reloads under load, not one failed request.
#[test]
fn the_readmes_node_drain_in_bind_mode_reloads_under_load() {
    let _g = serial();
    let readme = std::fs::read_to_string(repo_dir().join("README.md")).expect("README");
    let block = |from: usize| {
        let start = from + readme[from..].find("```js\n").expect("a js block") + 6;
        let len = readme[start..].find("```").expect("end of the js block");
        (start + len, &readme[start..start + len])
    };
    let (end, drain) = block(0);
    let (_, bind) = block(end + 3);
    let fd3 = "server.listen({ fd: 3 });";
    assert_eq!(drain.matches(fd3).count(), 1, "{drain}");
    assert!(
        bind.starts_with("server.listen(process.env.PORT);"),
        "{bind}"
    );
    let dir = scratch("bind-node-readme");
    let app = dir.join("app.js");
    std::fs::write(
        &app,
        format!(
            "'use strict';\nconst app = (req, res) => res.end(`hello from pid ${{process.pid}}\\n`);\n{}",
            drain.replace(fd3, bind.trim_end())
        ),
    )
    .expect("write app.js");
    reloads_under_load(
        "bind-node-readme",
        &format!("[\"node\", \"{}\"]", app.display()),
        2,
    );
}

/// tests/apps/goserver (the same server tests/runtimes.rs runs on fd 3; without `LISTEN_FDS`
/// it calls `ListenAndServe(":PORT")`) built static (CGO_ENABLED=0) with Debian's golang-go,
/// once per run.
fn go_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = scratch("goserver-build");
        let out = dir.join("goserver");
        let st = Command::new("nice")
            .args(["-n", "19", "go", "build", "-trimpath", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(repo_dir().join("tests/apps/goserver"))
            .env("CGO_ENABLED", "0")
            .env("GOCACHE", std::env::temp_dir().join("baton-tests-gocache"))
            .status()
            .expect("run go build (apt-get install golang-go)");
        assert!(st.success(), "go build: {st}");
        out
    })
}

/// A static Go server's `ListenAndServe(":PORT")` gets baton's socket (non-blocking, as Go
/// made its own: its Shutdown returns) and reloads under load without a failed request.
#[test]
fn a_static_go_server_binding_its_own_port_reloads_under_load() {
    let bin = go_binary();
    let _g = serial();
    let baton = reloads_under_load("bind-go", &format!("[\"{}\"]", bin.display()), 2);
    let log = baton.log_text();
    // Go's IPv6 probe binds [::1]:0 and [::]:0 first: those run untouched
    assert!(log.contains("bound [::]:"), "{log}");
    assert!(!log.contains("bound [::]:0"), "{log}");
}

/// A Python app that binds `PORT` (baton's; on `HOST`, by default 0.0.0.0) and `ADMIN` (its
/// own) and answers on both with its pid and the port it accepted on; `TWICE=1`: it binds `PORT` a second time (IPv6),
/// and serves both listeners; `UDP=1`: it first binds a UDP socket to `PORT` too (as HTTP/3
/// servers do) and answers each datagram with its pid.
const PY_APP: &str = r#"
import os, socket, selectors, sys
pid = os.getpid()
sel = selectors.DefaultSelector()
def listener(family, host, port):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(16)
    sel.register(s, selectors.EVENT_READ, port)
    print(f"app.py: pid={pid} fd={s.fileno()} bound {host}:{port}", flush=True)
if os.environ.get("UDP"):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("0.0.0.0", int(os.environ["PORT"])))
    sel.register(u, selectors.EVENT_READ, "udp")
listener(socket.AF_INET, os.environ.get("HOST", "0.0.0.0"), int(os.environ["PORT"]))
if os.environ.get("TWICE"):
    listener(socket.AF_INET6, "::", int(os.environ["PORT"]))
if os.environ.get("ADMIN"):
    listener(socket.AF_INET, "127.0.0.1", int(os.environ["ADMIN"]))
while True:
    for key, _ in sel.select():
        if key.data == "udp":
            _, peer = key.fileobj.recvfrom(2048)
            key.fileobj.sendto(f"udp pid {pid}\n".encode(), peer)
            continue
        conn, _ = key.fileobj.accept()
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(65536)
            if not chunk:
                break
            head += chunk
        body = f"port {key.data} pid {pid}\n".encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        conn.close()
"#;

fn python_app(name: &str, env: &str) -> (Baton, PathBuf) {
    python_app_kind(name, env, "listen")
}

fn python_app_kind(name: &str, env: &str, kind: &str) -> (Baton, PathBuf) {
    let dir = scratch(name);
    let app = dir.join("app.py");
    std::fs::write(&app, PY_APP).expect("write app.py");
    let command = format!("[\"python3\", \"{}\"]", app.display());
    let baton = Baton::start(name, |port, ctl| {
        bind_config_kind(&command, 1, port, ctl, env, kind)
    });
    (baton, app)
}

/// The inode of the socket at `fd` of `pid` ("socket:[123]").
fn socket_at(pid: i32, fd: i32) -> String {
    fd_target(pid, fd)
}

/// A second port the app binds for itself is not baton's: that bind runs untouched, and the
/// app serves it.
#[test]
fn an_app_that_binds_a_port_of_its_own_still_gets_it() {
    let admin = free_port();
    let (baton, _) = python_app("bind-admin", &format!("ADMIN = \"{admin}\""));
    let pid = baton.serving_pids()[0];
    let (code, body) = http_get(admin, "/", Duration::from_secs(10)).expect("GET admin");
    assert_eq!(code, 200);
    assert_eq!(body, format!("port {admin} pid {pid}\n"));
    let (_, body) = http_get(baton.port, "/", Duration::from_secs(10)).expect("GET");
    assert_eq!(body, format!("port {} pid {pid}\n", baton.port));
    let log = baton.log_text();
    assert_eq!(
        log.matches("baton_event=\"worker_bind\"").count(),
        1,
        "{log}"
    );
    assert!(!log.contains(&format!(":{admin}: it got")), "{log}");
    // the admin port is named once, as none of baton's sockets, with the journal fields
    let other: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("baton_event=\"worker_bind_other\""))
        .collect();
    assert_eq!(other.len(), 1, "{log}");
    assert!(
        other[0].contains(&format!(
            "worker {pid} (generation 1, instance 0) bound 127.0.0.1:{admin}: none of baton's \
             sockets (`http` 127.0.0.1:{}); left to the app",
            baton.port
        )),
        "{log}"
    );
    for field in [
        "baton_generation=1".to_string(),
        format!("baton_worker_pid={pid}"),
        "baton_instance=0".to_string(),
        " baton_release=".to_string(),
    ] {
        assert!(other[0].contains(&field), "{field}: {}", other[0]);
    }
    // baton does not hold the admin port: only the app's own socket is bound there
    let held = |p: i32| -> Vec<String> { fds(p).into_iter().map(|fd| socket_at(p, fd)).collect() };
    let app_sockets = held(pid);
    let baton_sockets = held(baton.pid());
    let shared: Vec<&String> = app_sockets
        .iter()
        .filter(|s| s.starts_with("socket:") && baton_sockets.contains(s))
        .collect();
    assert_eq!(
        shared.len(),
        1,
        "the app shares exactly baton's one socket: {shared:?}"
    );
}

/// An app that binds 127.0.0.1:PORT while baton's socket is 0.0.0.0:PORT gets that socket,
/// which listens on every interface: the bind line says so.
#[test]
fn a_loopback_bind_that_gets_a_socket_on_every_interface_is_told_so() {
    let name = "bind-loopback";
    let dir = scratch(name);
    let app = dir.join("app.py");
    std::fs::write(&app, PY_APP).expect("write app.py");
    let command = format!("[\"python3\", \"{}\"]", app.display());
    let baton = Baton::start(name, |port, ctl| {
        let config = bind_config(&command, 1, port, ctl, "HOST = \"127.0.0.1\"");
        let ours = format!("http = \"127.0.0.1:{port}\"");
        assert_eq!(config.matches(&ours).count(), 1, "{config}");
        config.replace(&ours, &format!("http = \"0.0.0.0:{port}\""))
    });
    let pid = baton.serving_pids()[0];
    let (_, body) = http_get(baton.port, "/", Duration::from_secs(10)).expect("GET");
    assert_eq!(body, format!("port {} pid {pid}\n", baton.port));
    let log = baton.log_text();
    assert!(
        log.contains(&format!(
            "worker {pid} (generation 1, instance 0) bound 127.0.0.1:{port}: it got socket `http` \
             (0.0.0.0:{port}) (it asked for loopback only; the socket listens on all interfaces)",
            port = baton.port
        )),
        "{log}"
    );
    assert!(!log.contains("worker_bind_other"), "{log}");
}

/// An app that binds baton's port twice (IPv4 and IPv6 listeners) gets baton's socket at both
/// descriptors.
#[test]
fn a_worker_that_binds_the_port_twice_gets_the_socket_both_times() {
    let (baton, _) = python_app("bind-twice", "TWICE = \"1\"");
    let pid = baton.serving_pids()[0];
    let baton_sockets: Vec<String> = fds(baton.pid())
        .into_iter()
        .map(|fd| socket_at(baton.pid(), fd))
        .collect();
    let wait = || {
        fds(pid)
            .into_iter()
            .map(|fd| socket_at(pid, fd))
            .filter(|s| s.starts_with("socket:") && baton_sockets.contains(s))
            .count()
    };
    wait_for(
        "two descriptors of the app on baton's socket",
        Duration::from_secs(10),
        || wait() == 2,
    );
    let log = baton.log_text();
    assert_eq!(
        log.matches("baton_event=\"worker_bind\"").count(),
        2,
        "{log}"
    );
    assert!(
        log.contains(&format!("bound 0.0.0.0:{}", baton.port)),
        "{log}"
    );
    assert!(log.contains(&format!("bound [::]:{}", baton.port)), "{log}");
    // a wildcard bind of a loopback socket: nothing widened
    assert!(!log.contains("loopback only"), "{log}");
    let (code, body) = http_get(baton.port, "/", Duration::from_secs(10)).expect("GET");
    assert_eq!(code, 200);
    assert_eq!(body, format!("port {} pid {pid}\n", baton.port));
}

/// A UDP socket the app binds to the port of baton's TCP socket keeps its own: only a socket
/// of the same type is replaced.
#[test]
fn a_udp_bind_of_the_sockets_port_is_not_handed_the_tcp_socket() {
    let (baton, _) = python_app("bind-udp", "UDP = \"1\"");
    let pid = baton.serving_pids()[0];
    let log = baton.log_text();
    assert_eq!(
        log.matches("baton_event=\"worker_bind\"").count(),
        1,
        "{log}"
    );
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    udp.send_to(b"hi", ("127.0.0.1", baton.port)).expect("send");
    let mut buf = [0u8; 64];
    let n = udp
        .recv(&mut buf)
        .expect("the app answers on its own UDP socket");
    assert_eq!(&buf[..n], format!("udp pid {pid}\n").as_bytes());
    let (_, body) = http_get(baton.port, "/", Duration::from_secs(10)).expect("GET");
    assert_eq!(body, format!("port {} pid {pid}\n", baton.port));
}

/// The observed `accepting` readiness works in bind mode too: the socket is found by its
/// inode wherever the app's bind put it; and a reload swaps.
#[test]
fn accepting_readiness_sees_the_socket_a_bind_got() {
    let (baton, _) = python_app_kind("bind-accepting", "", "accepting");
    let log = baton.log_text();
    assert!(log.contains("readiness check passed"), "{log}");
    assert!(log.contains("baton_event=\"worker_bind\""), "{log}");
    let old = baton.serving_pids();
    let (ok, out, _) = baton.reload();
    assert!(ok, "{out}");
    let new = baton.serving_pids();
    assert!(new.iter().all(|p| !old.contains(p)), "{old:?} {new:?}");
    let (_, body) = http_get(baton.port, "/", Duration::from_secs(10)).expect("GET");
    assert!(new.contains(&pid_in(&body)), "{body}");
}

/// Where the kernel refuses the filter, the generation fails with the reason, never running
/// the app untrapped: here an inner `baton run` is itself a worker of a bind-mode baton, and
/// the kernel allows one listener filter per process tree (EBUSY).
#[test]
fn a_refused_filter_fails_the_generation_with_the_reason() {
    let inner_dir = scratch("bind-inner");
    let inner = inner_dir.join("inner.toml");
    let inner_port = free_port();
    std::fs::write(
        &inner,
        format!(
            "command = [\"/bin/sleep\", \"60\"]\ncontrol = \"{}\"\nhandover = \"bind\"\n\
             [sockets]\nhttp = \"127.0.0.1:{inner_port}\"\n[readiness]\nkind = \"listen\"\n",
            inner_dir.join("ctl.sock").display()
        ),
    )
    .expect("inner config");
    let command = format!(
        "[\"{}\", \"run\", \"--config\", \"{}\"]",
        baton_bin().display(),
        inner.display()
    );
    let baton = Baton::spawn("bind-outer", |port, ctl| {
        bind_config_kind(&command, 1, port, ctl, "", "delay\"\ndelay = \"0s")
    });
    wait_for("the inner baton's failure", Duration::from_secs(20), || {
        baton.log_text().contains("failed to start")
    });
    let log = baton.log_text();
    let line = log.lines().find(|l| l.contains("could not be started"));
    eprintln!("  {}", line.unwrap_or_default());
    assert!(
        log.contains(
            "instance 0 could not be started: handover = \"bind\": the kernel refused the \
             bind() trap: seccomp: "
        ) && log.contains("Device or resource busy"),
        "{log}"
    );
}

/// `baton check` on a config: (success, stdout + stderr).
fn check(name: &str, text: &str) -> (bool, String, PathBuf) {
    let dir = scratch(name);
    let path = dir.join("baton.toml");
    std::fs::write(&path, text).expect("write config");
    let out = Command::new(baton_bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("baton check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text, path)
}

#[test]
fn listen_readiness_needs_bind_and_bind_refuses_http_and_tcp() {
    let (ok, out, path) = check(
        "bind-listen-fds",
        "command = [\"/bin/true\"]\n[readiness]\nkind = \"listen\"\n",
    );
    assert!(!ok, "{out}");
    let at = format!("{}:3:", path.display());
    assert!(out.contains(&at) && out.contains("readiness.kind"), "{out}");
    assert!(out.contains("handover = \"bind\""), "{out}");
    for kind in ["http", "tcp"] {
        let (ok, out, path) = check(
            &format!("bind-{kind}"),
            &format!(
                "command = [\"/bin/true\"]\nhandover = \"bind\"\n[readiness]\nkind = \"{kind}\"\n"
            ),
        );
        assert!(!ok, "{out}");
        let at = format!("{}:4:", path.display());
        assert!(out.contains(&at) && out.contains("readiness.kind"), "{out}");
        assert!(
            out.contains("use `listen`, `accepting`, `notify`, `exec` or `delay`"),
            "{out}"
        );
    }
    let (ok, out, _) = check(
        "bind-ok",
        "command = [\"/bin/true\"]\nhandover = \"bind\"\n[readiness]\nkind = \"listen\"\n",
    );
    assert!(ok, "{out}");
}

/// The Express server with 3 instances and a 3 s drain deadline, 20 reloads under load in
/// `modes` ("keepalive", "close"): the load reports, in that order, and the number of workers
/// killed at the drain deadline. With `close_idle` the load is a retrying one
/// ([`Load::start_retrying`]), as a browser's, curl's or Go's.
fn express_reloads(
    name: &str,
    close_idle: bool,
    modes: &[&str],
) -> (Vec<serde_json::Value>, usize) {
    let app = express_app(name, close_idle, true);
    let _g = serial();
    let command = format!("[\"node\", \"{}\"]", app.display());
    let baton = Baton::spawn(name, |port, ctl| {
        let config = bind_config(&command, 3, port, ctl, "");
        assert_eq!(config.matches("timeout = \"10s\"").count(), 1, "{config}");
        config.replace("timeout = \"10s\"", "timeout = \"3s\"")
    });
    baton.wait_serving(Duration::from_secs(30));
    let loads: Vec<Load> = modes
        .iter()
        .map(|m| match close_idle {
            true => Load::start_retrying(baton.port, m, 2, 100),
            false => Load::start(baton.port, m, 2, 100),
        })
        .collect();
    baton.paced_reloads(
        20,
        Duration::from_millis(500),
        Duration::from_secs(15),
        |_| Vec::new(),
        |_| {},
    );
    let reports = loads.into_iter().map(Load::stop).collect();
    let serving = baton.serving_pids();
    let pid = express_health_pid(baton.port);
    assert!(
        serving.contains(&pid),
        "/health from {pid}, not from {serving:?}"
    );
    let log = baton.log_text();
    assert!(log.contains("Worker "), "the guide's log line");
    let killed = log.matches("killed at the drain deadline").count();
    eprintln!("  {killed} workers killed at the drain deadline");
    (reports, killed)
}

/// At least `min_ok` requests succeeded, and every failed one was cut (reset or EOF): none
/// refused, timed out or failed to connect.
fn assert_only_cuts(r: &serde_json::Value, min_ok: u64) {
    assert!(r["ok"].as_u64().unwrap_or(0) >= min_ok, "{r}");
    let f = &r["failures"];
    for kind in [
        "refused",
        "timeout",
        "connect_timeout",
        "connect_other",
        "bad_status",
        "malformed",
    ] {
        assert_eq!(f[kind], 0, "{kind}: {r}");
    }
    let cut = f["reset"].as_u64().unwrap_or(0) + f["eof"].as_u64().unwrap_or(0);
    assert_eq!(Some(cut), r["failed"].as_u64(), "{r}");
}

/// Verbatim, its SIGTERM handler destroys every connection, busy ones included: the app's
/// bug, not baton's. Every failed request was cut (reset or EOF); none was refused or timed
/// out, and none failed to connect.
#[test]
fn the_guides_express_server_verbatim_reloads_20_times_and_nothing_is_refused() {
    for r in express_reloads("bind-express", false, &["keepalive", "close"]).0 {
        assert_only_cuts(&r, 50);
    }
}

/// The same server with only its shutdown loop changed to close idle connections: not one
/// failed request over 20 reloads, with keep-alive and with a connection per request, for a
/// client that does what browsers, curl and Go's `http.Transport` do.
///
/// With a connection per request every old worker drains and exits, and nothing is sent
/// twice. Under keep-alive Node 20's `server.close()` goes on serving a kept-alive connection
/// for as long as its client keeps sending on it, with no `Connection: close`: a worker that
/// holds one of the load's two busy connections is killed at the drain deadline with a request
/// in flight (README, Troubleshooting). That request, a GET on a reused connection that ended
/// before any byte of its answer, is one such clients send again on a new connection (RFC 9112
/// §9.3.1); the load does too, once, and counts it in `retried`: at most one per connection per
/// reload. The README's Node drain loses nothing with any client (tests/node.rs).
#[test]
fn the_guides_express_server_closing_idle_connections_reloads_20_times_without_a_failure() {
    let (reports, killed) = express_reloads("bind-express-idle", true, &["keepalive", "close"]);
    for r in &reports {
        assert_no_failures(r, 100);
    }
    let (keep, close) = (&reports[0], &reports[1]);
    assert_eq!(close["retried"], 0, "{close}");
    let retried = keep["retried"].as_u64().expect("retried") as usize;
    assert!(
        retried <= 2 * 20 && retried <= 2 * killed,
        "{retried} retried, {killed} killed: {keep}"
    );
}

/// The venv of tests/setup.sh with gunicorn and uvicorn.
const VENV: &str = "/opt/baton-tests/venv";

/// `gunicorn --bind 0.0.0.0:PORT` without systemd's variables, `listen` readiness: its master
/// binds (and gets baton's socket; its workers fork after and accept on the inherited socket),
/// but never calls listen() on it (gunicorn 27 checks SO_ACCEPTCONN, as for a socket from
/// systemd, and the socket listens already), so each worker is ready by the look in /proc
/// that follows its hand-over: its tree waits for connections on the socket. 20 reloads under
/// keep-alive and per-request load, 0 failed; `instances` baton workers of `workers` gunicorn
/// workers each.
fn gunicorn(instances: usize, workers: usize) {
    let _g = serial();
    let apps = repo_dir().join("tests/apps");
    let baton = Baton::spawn(
        &format!("bind-gunicorn-{instances}x{workers}"),
        |port, ctl| {
            let command = format!(
                "[\"{VENV}/bin/gunicorn\", \"--no-control-socket\", \"--workers\", \"{workers}\", \
             \"--graceful-timeout\", \"10\", \"--chdir\", \"{}\", \"--bind\", \"0.0.0.0:{port}\", \
             \"app:application\"]",
                apps.display()
            );
            // the README's recipe: a drain deadline above --graceful-timeout
            let config = bind_config(&command, instances, port, ctl, "");
            assert_eq!(config.matches("timeout = \"10s\"").count(), 1, "{config}");
            config.replace("timeout = \"10s\"", "timeout = \"15s\"")
        },
    );
    baton.wait_serving(Duration::from_secs(30));
    let keep = Load::start(baton.port, "keepalive", 2, 200);
    let close = Load::start(baton.port, "close", 2, 200);
    baton.paced_reloads(
        RELOADS,
        Duration::ZERO,
        Duration::from_secs(20),
        |masters| gunicorn_workers_of(masters, workers),
        |_| {},
    );
    let (keep, close) = (keep.stop(), close.stop());
    assert_no_failures(&keep, 100);
    assert_no_failures(&close, 100);
    let log = baton.log_text();
    assert!(log.contains("bound 0.0.0.0:"), "{log}");
    // from spawn to ready, by the look, in ms
    let mut after: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("it never called listen()) after "))
        .filter_map(|l| l.split(") after ").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    after.sort();
    eprintln!(
        "gunicorn {instances}x{workers}: ready after {:?} ms (min, median, max); ok/failed: \
         keep-alive {}/{}, per request {}/{}",
        (after[0], after[after.len() / 2], after[after.len() - 1]),
        keep["ok"],
        keep["failed"],
        close["ok"],
        close["failed"]
    );
    // every worker of every generation, by the look and not by a trapped listen()
    let looked = "ready (waiting for connections on all 1 socket(s), as /proc shows; it never \
                  called listen())";
    let generations = RELOADS as usize + 1;
    assert_eq!(
        log.matches(looked).count(),
        generations * instances,
        "{log}"
    );
    assert!(!log.contains("ready (listen() on all"), "{log}");
    // --no-control-socket: gunicorn binds nothing but its port
    assert!(!log.contains("worker_bind_other"), "{log}");
}

#[test]
fn gunicorn_binding_its_own_port_with_listen_readiness_reloads_20_times_without_a_failure() {
    gunicorn(1, 3);
}

#[test]
fn three_gunicorns_binding_the_port_with_listen_readiness_reload_20_times_without_a_failure() {
    gunicorn(3, 1);
}

/// `gunicorn --bind` with `listen` readiness under a load that never lets its sync worker wait
/// (flat out, four connections for one worker: it accepts again as soon as it has answered, so
/// no thread of it is ever seen blocked in select() on the socket). Its tree holds the
/// connection it is answering, accepted from baton's socket: that counts, and each reload is
/// ready at once. (A new user's trial: the reload waited until the load stopped, and failed at
/// its readiness timeout while the new generation was serving.)
#[test]
fn gunicorn_under_a_load_that_never_lets_it_wait_is_ready_by_the_connection_it_holds() {
    let _g = serial();
    let apps = repo_dir().join("tests/apps");
    let baton = Baton::spawn("bind-gunicorn-busy", |port, ctl| {
        let command = format!(
            "[\"{VENV}/bin/gunicorn\", \"--no-control-socket\", \"--workers\", \"1\", \
             \"--graceful-timeout\", \"10\", \"--chdir\", \"{}\", \"--bind\", \"0.0.0.0:{port}\", \
             \"app:application\"]",
            apps.display()
        );
        bind_config(&command, 1, port, ctl, "").replace("timeout = \"20s\"", "timeout = \"10s\"")
    });
    baton.wait_serving(Duration::from_secs(30));
    let load = Load::start(baton.port, "close", 4, 0);
    baton.paced_reloads(
        3,
        Duration::ZERO,
        Duration::from_secs(20),
        |masters| gunicorn_workers_of(masters, 1),
        |_| {},
    );
    assert_no_failures(&load.stop(), 100);
    let log = baton.log_text();
    let looked = "ready (waiting for connections on all 1 socket(s), as /proc shows; it never \
                  called listen())";
    assert_eq!(log.matches(looked).count(), 4, "{log}");
}

/// `listen` readiness for an app that binds the port and neither listens nor waits for
/// connections: the look in /proc, which its hand-over started, never finds it waiting, and the
/// first generation fails at its readiness timeout with the last look's reason.
#[test]
fn an_app_that_binds_but_never_waits_is_not_ready_by_the_look() {
    let _g = serial();
    let mut baton = Baton::spawn("bind-no-wait", |port, ctl| {
        format!(
            r#"command = ["python3", "-c", "import os, socket, time; s = socket.socket(); s.bind(('0.0.0.0', int(os.environ['PORT']))); time.sleep(60)"]
control = "{ctl}"
handover = "bind"

[env]
PORT = "{port}"

[sockets]
http = "127.0.0.1:{port}"

[readiness]
kind = "listen"
timeout = "2s"
"#,
            ctl = ctl.display()
        )
    });
    let status = baton.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1));
    let log = baton.log_text();
    assert!(log.contains("it got socket `http`"), "{log}");
    assert!(
        log.contains(
            "not ready after 2s (its tree called listen() on 0 of baton's 1 socket(s); its binds \
             got 1; last look: no process of the worker's tree waits for connections on `http`)"
        ),
        "{log}"
    );
}

/// `listen` readiness for a Node `server.listen(PORT)` whose `PORT` is not baton's: its bind
/// runs untouched and is named (`worker_bind_other`), and the first generation fails at its
/// readiness timeout with a reason that says no bind asked for baton's port, and which it bound.
#[test]
fn a_node_app_binding_another_port_fails_readiness_saying_so() {
    let _g = serial();
    let app = repo_dir().join("tests/apps/bind.js");
    let other = free_port();
    let mut baton = Baton::spawn("bind-other-port", |port, ctl| {
        let config = bind_config(
            &format!("[\"node\", \"{}\"]", app.display()),
            1,
            port,
            ctl,
            "",
        );
        let (ours, theirs) = (format!("PORT = \"{port}\""), format!("PORT = \"{other}\""));
        assert_eq!(config.matches(&ours).count(), 1, "{config}");
        let config = config.replace(&ours, &theirs);
        assert_eq!(config.matches("timeout = \"20s\"").count(), 1, "{config}");
        config.replace("timeout = \"20s\"", "timeout = \"3s\"")
    });
    let status = baton.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1));
    let log = baton.log_text();
    assert!(!log.contains("baton_event=\"worker_bind\""), "{log}");
    let port = baton.port;
    assert!(
        log.contains(&format!(
            "(generation 1, instance 0) bound [::]:{other}: none of baton's sockets (`http` \
             127.0.0.1:{port}); left to the app"
        )),
        "{log}"
    );
    assert!(log.contains("baton_event=\"worker_bind_other\""), "{log}");
    assert!(
        log.contains(&format!(
            "not ready after 3s (no bind() of the app asked for baton's port(s) (`http` \
             127.0.0.1:{port}): does it bind another port? It last bound [::]:{other}.)"
        )),
        "{log}"
    );
}

/// `uvicorn --port PORT` with a trivial ASGI app, 20 reloads under keep-alive and per-request
/// load, the load retrying as browsers, curl and Go do: nothing refused or timed out. Not 0
/// failed: at SIGTERM uvicorn closes the connections it has not read a request from yet, which
/// races a client's request: an idle kept-alive one (sent again on a new connection, counted in
/// `retried`), or one it has just accepted, whose request is lost to any client (0–2 of about
/// 1,400–5,500 per run and mode, cut by a reset or an EOF; under keep-alive that is a retry's
/// new connection), as under `handover = "fds"` with `uvicorn --fd 3`; tests/apps/asgi.py has
/// the drain that loses nothing, and the README's uvicorn recipe says so.
#[test]
fn uvicorn_binding_its_own_port_reloads_20_times_and_nothing_is_refused() {
    let _g = serial();
    let apps = repo_dir().join("tests/apps");
    let baton = Baton::spawn("bind-uvicorn", |port, ctl| {
        let command = format!(
            "[\"{VENV}/bin/uvicorn\", \"--no-access-log\", \"--app-dir\", \"{}\", \
             \"--host\", \"0.0.0.0\", \"--port\", \"{port}\", \"asgi:app\"]",
            apps.display()
        );
        bind_config(&command, 2, port, ctl, "")
    });
    baton.wait_serving(Duration::from_secs(30));
    let keep = Load::start_retrying(baton.port, "keepalive", 2, 200);
    let close = Load::start_retrying(baton.port, "close", 2, 200);
    baton.paced_reloads(
        20,
        Duration::ZERO,
        Duration::from_secs(20),
        |_| Vec::new(),
        |_| {},
    );
    assert_only_cuts(&keep.stop(), 100);
    let close = close.stop();
    assert_only_cuts(&close, 100);
    assert_eq!(close["retried"], 0, "{close}");
    let log = baton.log_text();
    assert!(log.contains("bound 0.0.0.0:"), "{log}");
}

/// What the trap adds to a worker's spawn (clone to exec, as baton waits for it): the median
/// of 200 spawns of `/bin/true` with and without it, in µs. A measurement, not a check:
/// `cargo test --release --test bind -- --ignored --nocapture spawn_cost`.
#[test]
#[ignore]
fn spawn_cost_of_the_trap() {
    use baton::sys;
    let median = |trap: bool| {
        let mut sp = sys::Spawn::new(Path::new("/bin/true"), &["true".to_string()]).unwrap();
        sp.trap_bind(trap).unwrap();
        let mut took: Vec<u128> = (0..200)
            .map(|_| {
                let t = std::time::Instant::now();
                let s = sys::spawn_child(&sp, &sys::Child::new()).unwrap();
                let dt = t.elapsed().as_micros();
                assert_eq!(s.listener.is_some(), trap);
                nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(s.pid), None).unwrap();
                dt
            })
            .collect();
        took.sort();
        took[took.len() / 2]
    };
    let (plain, trapped) = (median(false), median(true));
    eprintln!("spawn to exec, median of 200: {plain} µs plain, {trapped} µs with the bind trap");
}
