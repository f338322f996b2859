//! The systemd harness shared by `tests/systemd.rs` and `tests/packaging.rs` (each pulls it
//! in with `#[path = "sdbox/harness.rs"] mod harness;`): a booted container ([`SdBox`], from
//! `tests/sdbox/sdbox.sh`), commands run in it ([`Out`]), the host-side load client
//! ([`Load`], the one in `tests/common/load.rs`), a free port and plain HTTP ([`free_port`],
//! [`http_get`], the ones in `tests/common/net.rs`), polling with a deadline ([`wait_until`],
//! [`within`]) and collected checks ([`Checks`]). Not every test file uses every item.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "../common/load.rs"]
mod load;
pub use load::Load;
#[path = "../common/net.rs"]
mod net;
#[allow(unused_imports)] // not every test file needs each of them
pub use net::{express_health_pid, free_port, http_exchange, http_get, http_request};

pub const SDBOX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdbox/sdbox.sh");

/// The unit files baton ships, installed as they are.
pub const UNITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/units");

/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(25);

/// Requests per second of every loadgen. Throttled on purpose: an unthrottled loadgen keeps
/// both vCPUs of a small VM busy, and with a non-preemptible kernel that starves the RCU
/// grace-period kthread (dmesg: "rcu_preempt kthread starved for 14752 jiffies"); everything
/// that waits for a grace period (systemd forking a sandboxed ExecReload into a cgroup, a
/// worker creating a thread) then stalls for up to a minute, which looks like a 60 s reload.
pub const LOAD_RATE: u32 = 2000;

// ------------------------------------------------------------------------------------------
// binaries

pub struct Bins {
    pub baton: PathBuf,
    pub hello: PathBuf,
    pub loadgen: PathBuf,
}

/// The release binaries under test (the container runs them; the host runs loadgen).
pub fn bins() -> Bins {
    let baton = PathBuf::from(env!("CARGO_BIN_EXE_baton"));
    let dir = baton.parent().expect("target dir").to_path_buf();
    let b = Bins {
        hello: dir.join("examples/hello"),
        loadgen: dir.join("examples/loadgen"),
        baton,
    };
    for p in [&b.baton, &b.hello, &b.loadgen] {
        assert!(
            p.is_file(),
            "{} is missing: run `cargo build --release --examples --bins` first",
            p.display()
        );
    }
    b
}

// ------------------------------------------------------------------------------------------
// commands

/// Output of a command (on the host, or inside the container).
pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let clip = |s: &str| -> String {
            let s = s.trim();
            match s.char_indices().nth(4000) {
                Some((i, _)) => format!("{}…", &s[..i]),
                None => s.to_string(),
            }
        };
        write!(
            f,
            "exit {:?} after {:.3}s",
            self.code,
            self.took.as_secs_f64()
        )?;
        if !self.stdout.trim().is_empty() {
            write!(f, "; stdout: {}", clip(&self.stdout))?;
        }
        if !self.stderr.trim().is_empty() {
            write!(f, "; stderr: {}", clip(&self.stderr))?;
        }
        Ok(())
    }
}

pub fn to_out(o: Output, took: Duration) -> Out {
    Out {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        took,
    }
}

/// Runs `prog` on the host (stdin from /dev/null, working directory `dir`).
pub fn run_in(dir: &Path, prog: &str, args: &[&str]) -> Out {
    let t0 = Instant::now();
    let o = Command::new(prog)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog}: {e}"));
    to_out(o, t0.elapsed())
}

pub fn sdbox(args: &[&str]) -> Out {
    run_in(Path::new(env!("CARGO_MANIFEST_DIR")), SDBOX, args)
}

// ------------------------------------------------------------------------------------------
// the container

/// One booted container; powered off and removed on drop (also when the test panics).
pub struct SdBox {
    pub name: String,
    t0: Instant,
}

impl SdBox {
    /// Boots a container named `baton-<tag>-<pid>`; fails the test with the reason if it
    /// cannot (none is skipped).
    pub fn up(tag: &str) -> SdBox {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "these tests boot systemd in namespaces and must run as root (euid is {euid})"
        );
        let name = format!("baton-{tag}-{}", std::process::id());
        assert!(name.len() <= 41, "container name {name} too long");
        reap_orphans();
        // a container of that name left over by a killed run of this very process id
        let _ = sdbox(&["--name", &name, "down"]);
        let t0 = Instant::now();
        let out = sdbox(&["--name", &name, "up"]);
        let boot = t0.elapsed();
        assert!(
            out.ok(),
            "could not boot systemd in a container with {SDBOX} (needs root, overlayfs, \
             util-linux, systemd): {out}"
        );
        eprintln!("[{name}] systemd booted in {:.2}s", boot.as_secs_f64());
        SdBox { name, t0 }
    }

    pub fn exec(&self, args: &[&str]) -> Out {
        let mut a = vec!["--name", &self.name, "exec"];
        a.extend_from_slice(args);
        sdbox(&a)
    }

    pub fn sh(&self, script: &str) -> Out {
        self.exec(&["/bin/sh", "-c", script])
    }

    /// Runs a shell script inside; panics with its output if it fails.
    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(out.ok(), "[{}] `{script}` failed: {out}", self.name);
        out.stdout
    }

    pub fn cp(&self, src: &Path, dst: &str) {
        let out = sdbox(&["--name", &self.name, "cp", &src.to_string_lossy(), dst]);
        assert!(out.ok(), "cp {} {dst}: {out}", src.display());
    }

    /// Writes `content` to `path` inside (creating its directory).
    pub fn write(&self, path: &str, content: &str) {
        let t0 = Instant::now();
        let mut child = Command::new(SDBOX)
            .args(["--name", &self.name, "exec", "/bin/sh", "-c"])
            .arg(r#"mkdir -p "$(dirname "$1")" && cat > "$1""#)
            .args(["sh", path])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sdbox.sh");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(content.as_bytes())
            .unwrap();
        let out = to_out(child.wait_with_output().unwrap(), t0.elapsed());
        assert!(out.ok(), "writing {path}: {out}");
    }

    /// Copies the release baton to /usr/bin/baton and every file of `units/` to
    /// /etc/systemd/system, unchanged.
    pub fn install_baton_and_units(&self) {
        self.cp(&bins().baton, "/usr/bin/baton");
        for entry in std::fs::read_dir(UNITS).expect("units/") {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            self.cp(&p, &format!("/etc/systemd/system/{name}"));
        }
    }

    /// Points `socket_unit` at 127.0.0.1:`port` with a drop-in (the unit file unchanged).
    pub fn listen_on(&self, socket_unit: &str, port: u16) {
        self.write(
            &format!("/etc/systemd/system/{socket_unit}.d/test-port.conf"),
            &format!("[Socket]\nListenStream=\nListenStream=127.0.0.1:{port}\n"),
        );
    }

    pub fn show(&self, unit: &str, prop: &str) -> String {
        let out = self.exec(&["systemctl", "show", "-P", prop, unit]);
        assert!(out.ok(), "systemctl show {prop} {unit}: {out}");
        out.stdout.trim().to_string()
    }

    pub fn systemctl(&self, args: &[&str]) -> Out {
        let mut a = vec!["systemctl"];
        a.extend_from_slice(args);
        self.exec(&a)
    }

    /// `baton status --json` inside the container; `which` selects the instance, e.g.
    /// `["--config", "/etc/baton/api.toml"]` or `["--control", "/run/baton/a/control.sock"]`.
    pub fn baton_status(&self, which: &[&str]) -> Option<Value> {
        let mut a = vec!["baton", "status", "--json"];
        a.extend_from_slice(which);
        let out = self.exec(&a);
        if !out.ok() {
            return None;
        }
        serde_json::from_str(out.stdout.trim()).ok()
    }

    pub fn journal(&self, unit: &str) -> String {
        self.exec(&[
            "journalctl",
            "-u",
            unit,
            "--no-pager",
            "-o",
            "short-precise",
        ])
        .stdout
    }

    pub fn journal_json(&self, args: &[&str]) -> Vec<BTreeMap<String, Value>> {
        let mut a = vec!["journalctl", "--no-pager", "-o", "json"];
        a.extend_from_slice(args);
        let out = self.exec(&a);
        assert!(out.ok(), "journalctl -o json: {out}");
        out.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// Waits until `unit` has the ActiveState `want`.
    pub fn wait_state(&self, unit: &str, want: &str, timeout: Duration) {
        wait_until(&format!("{unit} to become {want}"), timeout, || {
            (self.show(unit, "ActiveState") == want).then_some(())
        });
    }

    /// Start time (field 22 of /proc/PID/stat) of a process inside the container, None if
    /// there is none: tells a pid that was reused from the one that was recorded.
    pub fn proc_start(&self, pid: i64) -> Option<String> {
        let out = self.sh(&format!(
            "cut -d' ' -f22 /proc/{pid}/stat 2>/dev/null || true"
        ));
        let s = out.stdout.trim().to_string();
        (!s.is_empty()).then_some(s)
    }
}

impl Drop for SdBox {
    fn drop(&mut self) {
        let t = Instant::now();
        let out = sdbox(&["--name", &self.name, "down"]);
        eprintln!(
            "[{}] down in {:.2}s (test took {:.2}s){}",
            self.name,
            t.elapsed().as_secs_f64(),
            self.t0.elapsed().as_secs_f64(),
            if out.ok() {
                String::new()
            } else {
                format!(": {out}")
            }
        );
    }
}

/// Powers off containers of earlier test runs that were killed before their `Drop` ran:
/// named `baton-<tag>-<pid>` with a test process `<pid>` that no longer exists. (sdbox.sh
/// itself only ever signals processes it recorded for that container.)
fn reap_orphans() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let base = std::env::var("SDBOX_STATE").unwrap_or_else(|_| "/tmp/baton-sdbox".into());
        let Ok(dir) = std::fs::read_dir(&base) else {
            return;
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("baton-")
                .and_then(|rest| rest.rsplit('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if entry.path().is_dir() && !Path::new(&format!("/proc/{pid}")).exists() {
                eprintln!("[{name}] left over by a killed test run: powering it off");
                let _ = sdbox(&["--name", &name, "down"]);
            }
        }
    });
}

// ------------------------------------------------------------------------------------------
// waiting

/// Polls `f` until it returns Some, or panics after `timeout` naming `what`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(POLL);
    }
}

/// Whether `cond` holds within `timeout` (polled).
pub fn within(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL);
    }
}

// ------------------------------------------------------------------------------------------
// load, from the host (the container shares the host's network namespace)

/// pids that answered during a load run (from its report).
pub fn answered_by(report: &Value) -> BTreeSet<i64> {
    report["pids"]
        .as_object()
        .map(|m| m.keys().filter_map(|k| k.parse().ok()).collect())
        .unwrap_or_default()
}

// ------------------------------------------------------------------------------------------
// baton status

/// pids of the workers of the serving generation, from `baton status --json`.
pub fn serving_workers(status: &Value) -> BTreeSet<i64> {
    let serving = status["serving_generation"].as_u64();
    status["generations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| g["generation"].as_u64() == serving)
        .flat_map(|g| g["workers"].as_array().cloned().unwrap_or_default())
        .filter_map(|w| w["pid"].as_i64())
        .collect()
}

/// pids of every worker of every generation, from `baton status --json`.
pub fn all_worker_pids(status: &Value) -> Vec<i64> {
    status["generations"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["workers"].as_array().cloned().unwrap_or_default())
        .filter_map(|w| w["pid"].as_i64())
        .collect()
}

// ------------------------------------------------------------------------------------------
// checks

/// Collected checks: a test records every expectation and reports all that failed at the end,
/// with the journal of the units involved, so that one run shows every failing assertion.
pub struct Checks {
    failed: Vec<String>,
}

impl Checks {
    pub fn new() -> Checks {
        Checks { failed: Vec::new() }
    }

    pub fn check(&mut self, ok: bool, what: impl Into<String>) -> bool {
        let what = what.into();
        if ok {
            eprintln!("  ok: {what}");
        } else {
            eprintln!("  FAILED: {what}");
            self.failed.push(what);
        }
        ok
    }

    /// Panics if any check failed, with the failures, the tail of the journal of each of
    /// `units` (globs allowed, e.g. `baton@*`) and the path of the container's whole journal.
    pub fn finish(self, bx: &SdBox, units: &[&str]) {
        if self.failed.is_empty() {
            return;
        }
        let mut msg = format!("{} check(s) failed:\n", self.failed.len());
        // the whole journal of the container, for the post-mortem
        let full = bx
            .exec(&["journalctl", "--no-pager", "-o", "short-precise"])
            .stdout;
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{}.journal", bx.name));
        if std::fs::write(&path, full).is_ok() {
            msg.push_str(&format!(
                "(full journal of the container: {})\n",
                path.display()
            ));
        }
        for f in &self.failed {
            msg.push_str(&format!("  - {f}\n"));
        }
        for u in units {
            let j = bx.journal(u);
            let tail: Vec<&str> = j.lines().rev().take(60).collect();
            msg.push_str(&format!("--- journalctl -u {u} (last 60 lines)\n"));
            for l in tail.iter().rev() {
                msg.push_str(l);
                msg.push('\n');
            }
        }
        panic!("{msg}");
    }
}
