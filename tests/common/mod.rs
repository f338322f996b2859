//! Test harness shared by the integration tests: a real `baton run` process with a config in a
//! scratch directory, the project's example worker, the project's load client, a free port and
//! plain HTTP (`net.rs`, shared with the systemd harness), and /proc inspection. Every wait is
//! on a condition with a deadline, never a bare sleep.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

mod load;
#[allow(unused_imports)] // not every test file drives load
pub use load::Load;
mod net;
#[allow(unused_imports)] // not every test file speaks HTTP
pub use net::{express_health_pid, free_port, http_get, http_request};
mod releases;
#[allow(unused_imports)] // not every test file deploys releases
pub use releases::{releases_config, run_current, Releases};
mod rng;
#[allow(unused_imports)] // not every test file generates input
pub use rng::Rng;
mod watch;
#[allow(unused_imports)] // not every test file watches a fault
pub use watch::{StatusWatch, Watched, STATUS_LIMIT};

/// Tests that drive load or measure timing take this lock, so that they do not compete for
/// the machine's two cores.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn baton_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_baton"))
}

/// An example binary built next to baton (cargo builds examples for `cargo test`).
pub fn example_bin(name: &str) -> PathBuf {
    let p = baton_bin()
        .parent()
        .expect("target dir")
        .join("examples")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: build the examples (cargo test builds them; or cargo build --examples)",
        p.display()
    );
    p
}

pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "baton-t-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        name
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Poll `cond` every few milliseconds until it holds or `timeout` passes.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether a process exists at all (a zombie counts as existing).
pub fn pid_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Field `n` (1-based, as in proc(5); n > 2) of /proc/PID/stat, if the process exists.
pub fn stat_field(pid: i32, n: usize) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command (field 2) may contain spaces: count from its closing parenthesis
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(n - 3).map(str::to_string)
}

/// The state letter of a process (R, S, Z, …), if it exists.
pub fn pid_state(pid: i32) -> Option<char> {
    stat_field(pid, 3)?.chars().next()
}

pub fn fd_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Numbers of the open descriptors of `pid`, sorted.
pub fn fds(pid: i32) -> Vec<i32> {
    let mut v: Vec<i32> = fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/pid/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort();
    v
}

/// `fds(pid)` without the history's temporary file, which baton's writer thread may hold open
/// at any instant (what a test that counts baton's descriptors must not count).
#[allow(dead_code)] // not every test file counts descriptors
pub fn lasting_fds(pid: i32) -> Vec<i32> {
    fds(pid)
        .into_iter()
        .filter(|f| !fd_target(pid, *f).contains("/.history.json."))
        .collect()
}

pub fn fd_target(pid: i32, fd: i32) -> String {
    fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// The environment of a process.
pub fn environ(pid: i32) -> Vec<(String, String)> {
    let raw = fs::read(format!("/proc/{pid}/environ")).expect("read environ");
    raw.split(|&b| b == 0)
        .filter_map(|kv| {
            let s = String::from_utf8_lossy(kv);
            let (k, v) = s.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

pub fn env_of(pid: i32, key: &str) -> Option<String> {
    environ(pid)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// Direct children of `pid` (from /proc/*/stat).
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let ppid = stat_field(p, 4).and_then(|s| s.parse().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// For [`Baton::paced_reloads`]' `also_old` with gunicorn (2 workers): its master sends READY=1
/// before it forks its workers, so wait until it has, and return them: the old master's
/// workers (its process group) must be gone after the drain too.
pub fn gunicorn_workers(old: &[i32]) -> Vec<i32> {
    gunicorn_workers_of(&old[..1], 2)
}

/// [`gunicorn_workers`] for several masters (one per baton instance) of `workers` each.
pub fn gunicorn_workers_of(masters: &[i32], workers: usize) -> Vec<i32> {
    let mut all = Vec::new();
    for &master in masters {
        wait_for(
            &format!("gunicorn master {master}'s {workers} workers forked"),
            Duration::from_secs(10),
            || children_of(master).len() == workers,
        );
        all.extend(children_of(master));
    }
    all
}

/// The pid in the example worker's answer "hello from pid P generation G".
pub fn answering_pid(port: u16) -> i32 {
    let (code, body) = http_get(port, "/", Duration::from_secs(10)).expect("GET /");
    assert_eq!(code, 200, "GET / -> {code} {body}");
    body.split_whitespace()
        .nth(3)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected body {body:?}"))
}

/// A config for the example worker on `port`, plus `extra` TOML (tables after the top keys).
pub fn hello_config(port: u16, control: &Path, instances: u32, top: &str, extra: &str) -> String {
    format!(
        r#"command   = ["{hello}"]
instances = {instances}
control   = "{control}"
{top}

[sockets]
http = "127.0.0.1:{port}"

{extra}
"#,
        hello = example_bin("hello").display(),
        control = control.display(),
    )
}

/// A running `baton run` with its config in a scratch directory.
pub struct Baton {
    pub child: Child,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub control: PathBuf,
    pub port: u16,
    pub log: PathBuf,
}

impl Baton {
    /// Start baton with the config produced by `make_config(port, control_path)` and wait
    /// until its first generation serves.
    pub fn start(name: &str, make_config: impl FnOnce(u16, &Path) -> String) -> Baton {
        let b = Baton::spawn(name, make_config);
        b.wait_serving(Duration::from_secs(20));
        b
    }

    /// Start without waiting.
    pub fn spawn(name: &str, make_config: impl FnOnce(u16, &Path) -> String) -> Baton {
        Baton::spawn_with(&[], name, make_config)
    }

    /// Start `prefix… baton run …` (e.g. under `nice`) without waiting.
    pub fn spawn_with(
        prefix: &[&str],
        name: &str,
        make_config: impl FnOnce(u16, &Path) -> String,
    ) -> Baton {
        let dir = scratch(name);
        let port = free_port();
        let control = dir.join("ctl.sock");
        let config = dir.join("baton.toml");
        fs::write(&config, make_config(port, &control)).expect("write config");
        let log = dir.join("baton.log");
        let logf = fs::File::create(&log).expect("log file");
        let mut cmd = match prefix.split_first() {
            None => Command::new(baton_bin()),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(baton_bin());
                c
            }
        };
        let child = cmd
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("dup log"))
            .stderr(logf)
            .current_dir(repo_dir())
            // the history of each test's baton is its own (`baton history`)
            .env("STATE_DIRECTORY", dir.join("state"))
            .spawn()
            .expect("spawn baton");
        Baton {
            child,
            dir,
            config,
            control,
            port,
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The config file as the test wrote it (to edit a copy for a reload).
    pub fn config_text(&self) -> String {
        fs::read_to_string(&self.config).expect("read config")
    }

    pub fn write_config(&self, text: &str) {
        fs::write(&self.config, text).expect("rewrite config");
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `baton status --json`, parsed.
    pub fn status(&self) -> Option<Value> {
        let out = Command::new(baton_bin())
            .args(["status", "--json", "--control"])
            .arg(&self.control)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// A real load client on the serving generation and `baton status` polled over and over,
    /// from now until [`Watched::finish`], which asserts no failed request and every status
    /// answered within [`STATUS_LIMIT`].
    pub fn watch(&self) -> Watched {
        Watched::start(self.port, StatusWatch::of(&self.control))
    }

    /// Wait until baton is in state `serving` with every worker of the serving generation
    /// ready and no other generation alive.
    pub fn wait_serving(&self, timeout: Duration) {
        wait_for("baton serving with every worker ready", timeout, || {
            self.status().is_some_and(|s| {
                s["state"] == "serving"
                    && s["generations"].as_array().is_some_and(|g| {
                        g.len() == 1
                            && g[0]["workers"]
                                .as_array()
                                .is_some_and(|w| w.iter().all(|w| w["state"] == "ready"))
                    })
            })
        });
    }

    /// Pids of the serving generation's workers.
    pub fn serving_pids(&self) -> Vec<i32> {
        let s = self.status().expect("status");
        let serving = s["serving_generation"]
            .as_u64()
            .expect("serving generation");
        let mut pids: Vec<i32> = s["generations"]
            .as_array()
            .expect("generations")
            .iter()
            .filter(|g| g["generation"].as_u64() == Some(serving))
            .flat_map(|g| g["workers"].as_array().cloned().unwrap_or_default())
            .filter_map(|w| w["pid"].as_i64().map(|p| p as i32))
            .collect();
        pids.sort();
        pids
    }

    pub fn serving_generation(&self) -> u64 {
        self.status().expect("status")["serving_generation"]
            .as_u64()
            .expect("serving generation")
    }

    /// `baton reload`; returns (success, stdout+stderr, wall time).
    pub fn reload(&self) -> (bool, String, Duration) {
        let t0 = Instant::now();
        let out = self.run_reload(&[]);
        let dt = t0.elapsed();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text, dt)
    }

    /// `baton reload --json`, which must succeed; its reply.
    pub fn reload_json(&self) -> Value {
        let out = self.run_reload(&["--json"]);
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).expect("JSON reply")
    }

    fn run_reload(&self, flags: &[&str]) -> std::process::Output {
        Command::new(baton_bin())
            .arg("reload")
            .args(flags)
            .arg("--config")
            .arg(&self.config)
            .output()
            .expect("run baton reload")
    }

    /// `count` reloads, the i-th due `every * i` after the first call (so that each generation
    /// takes traffic under a running load; `Duration::ZERO` for back to back). Each one must
    /// succeed, move the serving generation up by one and replace every serving pid; its old
    /// pids, with those `also_old` adds (e.g. a master's forked workers), must be gone within
    /// `drain`. `after_each(i)` then runs its own checks. Returns the wall times of the reloads.
    pub fn paced_reloads(
        &self,
        count: u32,
        every: Duration,
        drain: Duration,
        mut also_old: impl FnMut(&[i32]) -> Vec<i32>,
        mut after_each: impl FnMut(u32),
    ) -> Vec<Duration> {
        let t0 = Instant::now();
        let mut took = Vec::new();
        for i in 1..=count {
            std::thread::sleep((t0 + every * i).saturating_duration_since(Instant::now()));
            let mut old = self.serving_pids();
            let extra = also_old(&old);
            old.extend(extra);
            let gen_before = self.serving_generation();
            let (ok, out, dt) = self.reload();
            assert!(ok, "reload {i} failed: {out}");
            took.push(dt);
            assert_eq!(self.serving_generation(), gen_before + 1, "reload {i}");
            let new = self.serving_pids();
            assert!(
                new.iter().all(|p| !old.contains(p)),
                "reload {i}: pids {new:?} were serving before: {old:?}"
            );
            wait_for(
                &format!("reload {i}: generation {gen_before} (pids {old:?}) gone"),
                drain,
                || old.iter().all(|p| !pid_exists(*p)),
            );
            after_each(i);
        }
        took
    }

    /// `baton ARGS… --control <its socket>`: (success, stdout, stderr).
    pub fn client(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(baton_bin())
            .args(args)
            .arg("--control")
            .arg(&self.control)
            .output()
            .expect("run a baton client");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Stop baton (SIGTERM) and run it again on the same config, state directory and log
    /// (appended); wait until it serves.
    pub fn restart(&mut self) {
        assert!(self.stop().success(), "baton stopped with an error");
        let logf = fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .expect("log file");
        self.child = Command::new(baton_bin())
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("dup log"))
            .stderr(logf)
            .current_dir(repo_dir())
            .env("STATE_DIRECTORY", self.dir.join("state"))
            .spawn()
            .expect("spawn baton");
        self.wait_serving(Duration::from_secs(20));
    }

    /// Wait for baton to exit on its own (a first generation that fails), at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "baton still runs after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM baton and wait for it (bounded).
    pub fn stop(&mut self) -> ExitStatus {
        signal(self.pid(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("baton did not exit within 30s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Baton {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.pid(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("---- last lines of {} ----", self.log.display());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// `python3 ARGS…`, which must succeed; what it printed, trimmed.
pub fn python3<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let out = Command::new("python3")
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn signal(pid: i32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Assert a loadgen summary shows traffic and not a single failed request.
pub fn assert_no_failures(summary: &Value, min_ok: u64) {
    let ok = summary["ok"].as_u64().unwrap_or(0);
    let failed = summary["failed"].as_u64().unwrap_or(u64::MAX);
    assert_eq!(
        failed,
        0,
        "failed requests: {}",
        serde_json::to_string_pretty(summary).unwrap_or_default()
    );
    assert!(
        ok >= min_ok,
        "too little traffic ({ok} ok, wanted >= {min_ok}): {summary}"
    );
}

/// The uid of the stranger in the hijack tests: `nobody`.
pub const STRANGER: u32 = 65534;

/// A process of another uid ([`STRANGER`]) holding a socket it bound at a path (replacing
/// whatever was there, as anyone who may write the directory can): a stream socket that answers
/// every request line like a baton would ("generation 99 serving"), or a datagram socket that
/// reads and drops what it gets. Killed (by its pid) when dropped; its socket file stays, as
/// a stranger's would.
pub struct Stranger {
    child: Child,
}

impl Stranger {
    pub fn bind(path: &Path, kind: &str) -> Stranger {
        const SCRIPT: &str = r#"
import os, socket, sys
path, kind = sys.argv[1], sys.argv[2]
status = b'{"pid":1,"state":"serving","uptime_s":1,"config":null,"serving_generation":99,"sockets":[],"generations":[],"reloads_ok":99,"reloads_failed":0,"last_reload":null}'
reload = b'{"ok":true,"generation":99,"message":"generation 99 serving","duration_ms":1,"duration_us":1000,"slowest_start_us":null}'
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM if kind == "stream" else socket.SOCK_DGRAM)
try:
    os.unlink(path)
except FileNotFoundError:
    pass
s.bind(path)
os.chmod(path, 0o777)
if kind == "stream":
    s.listen(64)
print("bound", flush=True)
while True:
    if kind != "stream":
        s.recv(65536)
        continue
    c, _ = s.accept()
    try:
        c.settimeout(2)
        req = c.recv(4096)
        c.sendall((reload if b"reload" in req else status) + b"\n")
    except OSError:
        pass
    c.close()
"#;
        let mut child = Command::new("setpriv")
            .args([
                &format!("--reuid={STRANGER}"),
                &format!("--regid={STRANGER}"),
                "--clear-groups",
                // Debian's: a python3 under /root (pyenv) is not for other uids
                "/usr/bin/python3",
                "-c",
                SCRIPT,
            ])
            .arg(path)
            .arg(kind)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the stranger");
        let mut line = String::new();
        let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        std::io::BufRead::read_line(&mut out, &mut line).expect("the stranger's first line");
        assert_eq!(
            line.trim(),
            "bound",
            "the stranger could not bind {}",
            path.display()
        );
        Stranger { child }
    }

    /// Kill it and wait for it; its socket file stays behind.
    pub fn exit(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The owner uid and inode of the file at `path` (not following a symlink).
pub fn owner_and_inode(path: &Path) -> Option<(u32, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).ok().map(|m| (m.uid(), m.ino()))
}

/// A stale socket at `path` (bound, then its socket closed), owned by `uid`.
pub fn stale_socket(path: &Path, uid: u32) {
    drop(std::os::unix::net::UnixDatagram::bind(path).expect("bind a stale socket"));
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).expect("chown");
}

/// The Express server of a common zero-downtime guide, verbatim (tests/apps/express/guide.js,
/// as issue 15 quotes it), with its port from `PORT` when `port_from_env` (else its own
/// 3000, as written); `close_idle`: its shutdown loop that
/// destroys every connection replaced by `server.closeIdleConnections()`. Runs with the
/// express that tests/setup.sh installs in /opt/baton-tests/node.
#[allow(dead_code)] // not every test file runs Express
pub fn express_app(name: &str, close_idle: bool, port_from_env: bool) -> PathBuf {
    const GUIDE: &str = include_str!("../apps/express/guide.js");
    const MODULES: &str = "/opt/baton-tests/node/node_modules";
    assert!(
        Path::new(MODULES).join("express/package.json").exists(),
        "{MODULES}/express is missing: run tests/setup.sh"
    );
    let swap = |code: &str, from: &str, to: &str| {
        assert_eq!(
            code.matches(from).count(),
            1,
            "{from} in the guide's server"
        );
        code.replace(from, to)
    };
    let mut code = GUIDE.to_string();
    if port_from_env {
        code = swap(
            &code,
            "server.listen(3000,",
            "server.listen(process.env.PORT,",
        );
    }
    if close_idle {
        code = swap(
            &code,
            "for (const socket of connections) { socket.destroy(); }",
            "server.closeIdleConnections();",
        );
    }
    let dir = scratch(name);
    std::fs::write(dir.join("server.js"), code).expect("write server.js");
    std::fs::write(dir.join("package.json"), "{ \"type\": \"module\" }\n").expect("package.json");
    std::os::unix::fs::symlink(MODULES, dir.join("node_modules")).expect("node_modules");
    dir.join("server.js")
}
