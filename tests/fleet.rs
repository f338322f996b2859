//! Issue 18: the rolling deploy of `packaging/ansible/` across a fleet. Three hosts, each a
//! real systemd booted by the harness (`SdBox::up`, the host's network), each running sshd
//! on its own loopback address (host N: 127.0.1.N) and baton's socket on 127.0.1.N:APP_PORT,
//! the same port on every host like a real fleet. Ansible (`/opt/baton-tests/ansible`, from
//! tests/setup.sh) connects over real SSH with a key made here and a known_hosts built from
//! each host's key (host key checking on). HAProxy, run here as a child, balances the three
//! sockets with `option httpchk GET /healthz`; the load goes through it, and every failed
//! request is counted by kind.
//!
//! One fleet, the scenarios in turn, each under load through HAProxy: install (the .deb of
//! packaging/build.sh, first release r1), a good rolling deploy (r2), `rollback.yml` (back to
//! r1), a broken release (host 1 fails and the play stops there), `serial: 2` (r3: two
//! batches, timed), then `restart.yml` with the HAProxy drain (through HAProxy's runtime API,
//! which the test polls: every server stays UP during the deploys, each host goes through
//! DRAIN during its restart) and, measured but not asserted, without it. Needs root and
//! `cargo build --release --bins --examples` (the .deb is made from target/release, like
//! tests/packaging.rs).
#[path = "sdbox/harness.rs"]
mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{free_port, wait_until, Checks, Load, SdBox};
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const ANSIBLE_BIN: &str = "/opt/baton-tests/ansible/bin";
/// The baton instance on every host: /etc/baton/fleet.toml, baton@fleet.{socket,service}.
const NAME: &str = "fleet";
const CONFIG: &str = "/etc/baton/fleet.toml";
const UNIT: &str = "baton@fleet.service";
const HOSTS: usize = 3;

// ------------------------------------------------------------------------------------------
// the fleet

struct Host {
    name: String,
    addr: String,
    ssh_port: u16,
    bx: SdBox,
}

/// What one host serves, from `baton status --json` and systemd.
#[derive(Debug, Clone, PartialEq)]
struct Serving {
    generation: u64,
    release: String,
    main_pid: String,
}

impl Host {
    fn serving(&self) -> Option<Serving> {
        let st = self.bx.baton_status(&["--config", CONFIG])?;
        let generation = st["serving_generation"].as_u64()?;
        let release = st["generations"]
            .as_array()?
            .iter()
            .find(|g| g["generation"].as_u64() == Some(generation))?["release"]
            .as_str()?
            .to_string();
        Some(Serving {
            generation,
            release,
            main_pid: self.bx.show(UNIT, "MainPID"),
        })
    }

    /// Where `/srv/NAME/current` points.
    fn current(&self) -> String {
        self.bx
            .sh_ok(&format!("readlink -f /srv/{NAME}/current"))
            .trim()
            .to_string()
    }

    fn must_serve(&self) -> Serving {
        self.serving()
            .unwrap_or_else(|| panic!("{}: baton status --json does not answer", self.name))
    }

    /// `baton status --json`'s last reload, as it is.
    fn last_reload(&self) -> Value {
        self.bx
            .baton_status(&["--config", CONFIG])
            .map(|s| s["last_reload"].clone())
            .unwrap_or(Value::Null)
    }
}

struct HaProxy {
    child: Child,
    port: u16,
    /// The runtime API (`stats socket … level admin`).
    api: PathBuf,
}

/// One command to HAProxy's runtime API; its answer.
fn haproxy_api(api: &Path, command: &str) -> Result<String, String> {
    let mut s = UnixStream::connect(api).map_err(|e| format!("{}: {e}", api.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    writeln!(s, "{command}").map_err(|e| format!("send: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("read: {e}"))?;
    Ok(out)
}

/// Each server's status in HAProxy's `show stat` (`UP`, `DRAIN`, `DOWN`, `DOWN 1/2`, …).
fn server_statuses(api: &Path) -> BTreeMap<String, String> {
    let text = haproxy_api(api, "show stat").unwrap_or_default();
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .unwrap_or("")
        .split(',')
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (Some(px), Some(sv), Some(st)) = (col("pxname"), col("svname"), col("status")) else {
        return BTreeMap::new();
    };
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.len() > st && f[px] == "baton" && f[sv] != "BACKEND")
        .map(|f| (f[sv].to_string(), f[st].to_string()))
        .collect()
}

/// Polls `show stat` every 20 ms until stopped: each server's statuses, in the order seen
/// (a status repeated only after another one).
struct StatusWatch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<BTreeMap<String, Vec<String>>>,
}

impl StatusWatch {
    fn start(api: &Path) -> StatusWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let (api, flag) = (api.to_path_buf(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
            while !flag.load(Ordering::Relaxed) {
                for (server, status) in server_statuses(&api) {
                    let v = seen.entry(server).or_default();
                    if v.last() != Some(&status) {
                        v.push(status);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        });
        StatusWatch { stop, thread }
    }

    fn stop(self) -> BTreeMap<String, Vec<String>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test's private directory (key, known_hosts, ansible.cfg, releases, the .deb),
/// removed on drop; under /tmp so that ssh's control socket paths stay short.
struct TmpDir(PathBuf);

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn app_release(name: &str) -> String {
    format!("/srv/{NAME}/releases/{name}")
}

/// A port free on every host's address (and on 127.0.0.1).
fn fleet_port() -> u16 {
    loop {
        let p = free_port();
        if (1..=HOSTS).all(|n| TcpListener::bind((format!("127.0.1.{n}").as_str(), p)).is_ok()) {
            return p;
        }
    }
}

fn run_ok(prog: &str, args: &[&str], dir: &Path) -> String {
    let out = harness::run_in(dir, prog, args);
    assert!(out.ok(), "{prog} {args:?}: {out}");
    out.stdout
}

/// packaging/build.sh --no-build --no-lint: the .deb of this release build (as
/// tests/packaging.rs makes it).
fn build_deb(out_dir: &Path) -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_baton"));
    let release = Path::new(ROOT).join("target/release/baton");
    assert_eq!(
        bin.canonicalize().ok(),
        release.canonicalize().ok(),
        "the .deb is built from target/release: run `cargo test --release` without CARGO_TARGET_DIR (the packages' assets name target/release) (this test's baton \
         is {})",
        bin.display()
    );
    let out = run_ok(
        "bash",
        &[
            "packaging/build.sh",
            "--no-build",
            "--no-lint",
            "--out",
            &out_dir.to_string_lossy(),
        ],
        Path::new(ROOT),
    );
    let deb = out
        .lines()
        .map(|l| Path::new(ROOT).join(l.trim()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .unwrap_or_else(|| panic!("build.sh printed no .deb: {out}"));
    assert!(deb.is_file(), "{}", deb.display());
    deb
}

/// A release tarball: `run.sh` runs the packaged example worker, whose answers carry the
/// release's name (`mark NAME`); a broken one exits 1 at once.
fn make_release(dir: &Path, name: &str, good: bool) -> PathBuf {
    let d = dir.join("build").join(name);
    std::fs::create_dir_all(&d).unwrap();
    let body = if good {
        format!("export HELLO_MARK={name}\nexec /usr/lib/baton/hello-worker\n")
    } else {
        format!("echo \"release {name} is broken\" >&2\nexit 1\n")
    };
    let run = d.join("run.sh");
    std::fs::write(&run, format!("#!/bin/sh\n{body}")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tarball = dir.join(format!("{name}.tar.gz"));
    run_ok(
        "tar",
        &[
            "-C",
            &d.to_string_lossy(),
            "-czf",
            &tarball.to_string_lossy(),
            "--owner=0",
            "--group=0",
            ".",
        ],
        dir,
    );
    tarball
}

/// Boots host `n` and starts its sshd (a transient unit: its own ed25519 host key, on
/// 127.0.1.n:`ssh_port`, keys only); returns it and its known_hosts line.
fn boot_host(n: usize, ssh_port: u16, authorized: &str) -> (Host, String) {
    let addr = format!("127.0.1.{n}");
    let bx = SdBox::up(&format!("fleet{n}"));
    // A fresh host: the container boots an overlay of this machine's root, where other tests
    // (or a baton run by hand) may have left an instance of that name, its history included.
    // Removed inside the container only.
    bx.sh_ok(&format!(
        "rm -rf /etc/baton/{NAME}.toml /var/lib/baton/{NAME} /srv/{NAME} \
           /etc/systemd/system/baton@{NAME}.socket.d /etc/systemd/system/baton@{NAME}.service.d \
           /etc/systemd/system/baton@.service /etc/systemd/system/baton@.socket"
    ));
    bx.write("/root/.ssh/authorized_keys", authorized);
    bx.sh_ok(&format!(
        "chmod 700 /root/.ssh && chmod 600 /root/.ssh/authorized_keys \
         && mkdir -p /etc/baton-fleet \
         && ssh-keygen -q -t ed25519 -N '' -C h{n} -f /etc/baton-fleet/ssh_host_ed25519_key \
         && systemd-run --quiet --unit fleet-sshd -p RuntimeDirectory=sshd \
              /usr/sbin/sshd -D -e -h /etc/baton-fleet/ssh_host_ed25519_key \
              -o ListenAddress={addr}:{ssh_port} -o PasswordAuthentication=no \
              -o KbdInteractiveAuthentication=no"
    ));
    let key = bx.sh_ok("cat /etc/baton-fleet/ssh_host_ed25519_key.pub");
    let key: Vec<&str> = key.split_whitespace().take(2).collect();
    wait_until(
        &format!("sshd of h{n} on {addr}:{ssh_port}"),
        Duration::from_secs(20),
        || TcpStream::connect((addr.as_str(), ssh_port)).ok(),
    );
    let line = format!("[{addr}]:{ssh_port} {} {}\n", key[0], key[1]);
    (
        Host {
            name: format!("h{n}"),
            addr,
            ssh_port,
            bx,
        },
        line,
    )
}

// ------------------------------------------------------------------------------------------
// HTTP through HAProxy (or to one host)

/// One GET with `Connection: close` to `addr`: (status, the backend HAProxy named, body).
fn get(addr: &str, path: &str) -> Result<(u16, String, String), String> {
    let r = harness::http_exchange(addr, path, Duration::from_secs(10), None)?;
    let backend = r.header("x-backend").unwrap_or_default().to_string();
    Ok((r.status, backend, r.body.trim().to_string()))
}

/// The release an answer of the example worker names (`… mark NAME`).
fn mark(body: &str) -> Option<&str> {
    body.split_once(" mark ").map(|(_, m)| m.trim())
}

/// Releases answered by each backend, over `n` GETs through HAProxy.
fn marks_through(port: u16, n: usize) -> BTreeMap<String, BTreeSet<String>> {
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for _ in 0..n {
        match get(&format!("127.0.0.1:{port}"), "/") {
            Ok((200, backend, body)) => {
                seen.entry(backend)
                    .or_default()
                    .insert(mark(&body).unwrap_or("?").to_string());
            }
            other => {
                seen.entry("error".into())
                    .or_default()
                    .insert(format!("{other:?}"));
            }
        }
    }
    seen
}

fn start_haproxy(dir: &Path, hosts: &[Host], app_port: u16) -> HaProxy {
    let port = free_port();
    let servers: String = hosts
        .iter()
        .map(|h| format!("  server {} {}:{app_port}\n", h.name, h.addr))
        .collect();
    let api = dir.join("haproxy.sock");
    let cfg = format!(
        "global\n  maxconn 2000\n  stats socket {} level admin\n\
         defaults\n  mode http\n  timeout connect 2s\n  timeout check 2s\n  timeout client 30s\n  \
         timeout server 30s\n  retries 3\n  option redispatch\n\
         frontend fleet\n  bind 127.0.0.1:{port}\n  default_backend baton\n\
         backend baton\n  balance roundrobin\n  option httpchk GET /healthz\n  \
         http-check expect status 200\n  default-server check inter 250ms fall 2 rise 2\n  \
         http-response set-header X-Backend %[srv_name]\n{servers}",
        api.display()
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    run_ok(
        "/usr/sbin/haproxy",
        &["-c", "-q", "-f", &path.to_string_lossy()],
        dir,
    );
    let child = Command::new("/usr/sbin/haproxy")
        .args(["-db", "-f", &path.to_string_lossy()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn haproxy");
    wait_until("HAProxy's runtime API", Duration::from_secs(10), || {
        haproxy_api(&api, "show info").ok()
    });
    HaProxy { child, port, api }
}

/// A reload never closes the socket: HAProxy's check saw every server UP all along.
fn always_up(c: &mut Checks, what: &str, seen: BTreeMap<String, Vec<String>>) {
    c.check(
        seen.len() == HOSTS && seen.values().all(|v| v.iter().all(|s| s == "UP")),
        format!("{what}: HAProxy saw every server UP all along: {seen:?}"),
    );
}

// ------------------------------------------------------------------------------------------
// ansible-playbook

/// A top-level key through `baton_config_extra` (JSON: `-e k=v` splits at spaces): it must
/// stay top-level in the config the role writes.
const CONFIG_EXTRA: &str = r#"{"baton_config_extra": "release = \"/srv/fleet/current\""}"#;

struct Play {
    ok: bool,
    output: String,
    took: Duration,
    /// Each `PLAY [...]` header (a batch under `serial`) with its offset from the start.
    batches: Vec<Duration>,
    /// Per host, the offset of its last result line (`ok: [h1]` …).
    host_done: BTreeMap<String, Duration>,
    /// Each `TASK [...]` / `RUNNING HANDLER [...]` / `PLAY [...]` header with its offset.
    marks: Vec<(String, Duration)>,
}

struct Ansible {
    dir: PathBuf,
}

impl Ansible {
    /// Runs `packaging/ansible/<playbook>` with `extra` (`-e k=v` each), streaming and
    /// timestamping its output.
    fn play(&self, playbook: &str, extra: &[String]) -> Play {
        let mut cmd = Command::new(format!("{ANSIBLE_BIN}/ansible-playbook"));
        cmd.arg(Path::new(ROOT).join("packaging/ansible").join(playbook));
        for e in extra {
            cmd.args(["-e", e]);
        }
        let t0 = Instant::now();
        let mut child = cmd
            .env("ANSIBLE_CONFIG", self.dir.join("ansible.cfg"))
            .env("ANSIBLE_HOME", self.dir.join("ansible-home"))
            .env("ANSIBLE_LOCAL_TEMP", self.dir.join("ansible-tmp"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_FORCE_COLOR", "0")
            .env(
                "PATH",
                format!("{ANSIBLE_BIN}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"),
            )
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ansible-playbook");
        let err = child.stderr.take().unwrap();
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(err).read_to_string(&mut s);
            s
        });
        let mut output = String::new();
        let mut batches = Vec::new();
        let mut host_done = BTreeMap::new();
        let mut marks = Vec::new();
        for line in BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
        {
            let at = t0.elapsed();
            if line.starts_with("PLAY [") {
                batches.push(at);
            }
            for tag in ["TASK [", "RUNNING HANDLER [", "PLAY ["] {
                if let Some(rest) = line.strip_prefix(tag) {
                    let name = rest.split_once(']').map_or(rest, |(n, _)| n);
                    marks.push((name.to_string(), at));
                }
            }
            for tag in ["ok: [", "changed: [", "fatal: [", "skipping: ["] {
                if let Some(rest) = line.strip_prefix(tag) {
                    if let Some((host, _)) = rest.split_once(']') {
                        host_done.insert(host.to_string(), at);
                    }
                }
            }
            output.push_str(&line);
            output.push('\n');
        }
        let status = child.wait().expect("wait for ansible-playbook");
        output.push_str(&err.join().unwrap());
        let took = t0.elapsed();
        let p = Play {
            ok: status.success(),
            output,
            took,
            batches,
            host_done,
            marks,
        };
        eprintln!(
            "ansible-playbook {playbook} {extra:?}: {} in {:.1}s",
            if p.ok { "ok" } else { "FAILED" },
            took.as_secs_f64()
        );
        p
    }
}

fn recap(p: &Play) -> String {
    p.output
        .lines()
        .skip_while(|l| !l.starts_with("PLAY RECAP"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where a play's time went: each task's total over the play (from its header to the next
/// header), slowest first.
fn task_times(p: &Play) -> Vec<(String, f64)> {
    let mut sum: BTreeMap<String, f64> = BTreeMap::new();
    for (i, (name, at)) in p.marks.iter().enumerate() {
        let end = p.marks.get(i + 1).map_or(p.took, |m| m.1);
        *sum.entry(name.clone()).or_default() += (end - *at).as_secs_f64();
    }
    let mut v: Vec<(String, f64)> = sum.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

/// Per batch, its duration (from its `PLAY [` header to the next one, or to the end).
fn batch_times(p: &Play) -> Vec<f64> {
    let mut ends: Vec<Duration> = p.batches.iter().skip(1).copied().collect();
    ends.push(p.took);
    p.batches
        .iter()
        .zip(ends)
        .map(|(s, e)| (e - *s).as_secs_f64())
        .collect()
}

/// The host's last reload as baton timed it (`duration_ms` of `baton status --json`).
fn reload_time(times: &mut Vec<(String, f64)>, h: &Host, what: &str) {
    let lr = h.last_reload();
    eprintln!("  {}: last reload {lr}", h.name);
    if let Some(us) = lr["duration_us"].as_f64() {
        times.push((
            format!(
                "  {what}: {}'s reload, as baton timed it ({:.1} ms)",
                h.name,
                us / 1000.0
            ),
            us / 1e6,
        ));
    }
}

// ------------------------------------------------------------------------------------------
// load

struct Loads(Vec<Load>);

impl Loads {
    /// Steady load through HAProxy: kept-alive and new-connection-per-request clients.
    fn start(port: u16) -> Loads {
        Loads(vec![
            Load::start(port, "keepalive", 8, 300),
            Load::start(port, "close", 4, 150),
        ])
    }

    /// Stops them; returns (requests, failed, failures by kind summed over both).
    fn stop(self) -> (u64, u64, BTreeMap<String, u64>) {
        let (mut total, mut failed) = (0, 0);
        let mut kinds = BTreeMap::new();
        for l in self.0 {
            let r = l.stop();
            total += r["total"].as_u64().unwrap_or(0);
            failed += r["failed"].as_u64().unwrap_or(u64::MAX);
            for (k, v) in r["failures"].as_object().into_iter().flatten() {
                *kinds.entry(k.clone()).or_insert(0) += v.as_u64().unwrap_or(0);
            }
        }
        kinds.retain(|_, v| *v > 0);
        (total, failed, kinds)
    }
}

// ------------------------------------------------------------------------------------------
// the test

#[test]
fn rolling_deploy_across_three_hosts_behind_haproxy() {
    let t_all = Instant::now();
    for tool in [
        format!("{ANSIBLE_BIN}/ansible-playbook"),
        "/usr/sbin/sshd".into(),
        "/usr/sbin/haproxy".into(),
    ] {
        assert!(
            Path::new(&tool).exists(),
            "{tool} is missing: run `bash tests/setup.sh` first"
        );
    }
    let tmp = TmpDir(std::env::temp_dir().join(format!("baton-fleet-{}", std::process::id())));
    let dir = tmp.0.clone();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut times: Vec<(String, f64)> = Vec::new();
    let mut loads: Vec<(String, u64, u64, BTreeMap<String, u64>)> = Vec::new();
    let mut c = Checks::new();

    // the .deb and the releases
    let t = Instant::now();
    let deb = build_deb(&dir.join("deb"));
    times.push((
        "build the .deb (build.sh --no-build)".into(),
        t.elapsed().as_secs_f64(),
    ));
    let r1 = make_release(&dir, "r1", true);
    let r2 = make_release(&dir, "r2", true);
    let r3 = make_release(&dir, "r3", true);
    let bad = make_release(&dir, "bad", false);

    // the key, the hosts, known_hosts
    let key = dir.join("id_ed25519");
    run_ok(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "baton-fleet-test",
            "-f",
            &key.to_string_lossy(),
        ],
        &dir,
    );
    let authorized = std::fs::read_to_string(dir.join("id_ed25519.pub")).unwrap();
    let ssh_port = fleet_port();
    let app_port = fleet_port();
    let mut hosts = Vec::new();
    let mut known_hosts = String::new();
    let t = Instant::now();
    for n in 1..=HOSTS {
        let tb = Instant::now();
        let (h, line) = boot_host(n, ssh_port, &authorized);
        times.push((
            format!("boot {} + sshd on {}:{}", h.name, h.addr, h.ssh_port),
            tb.elapsed().as_secs_f64(),
        ));
        hosts.push(h);
        known_hosts.push_str(&line);
    }
    times.push(("boot the 3 hosts".into(), t.elapsed().as_secs_f64()));
    std::fs::write(dir.join("known_hosts"), &known_hosts).unwrap();
    let inventory: String = hosts
        .iter()
        .map(|h| {
            format!(
                "{} ansible_host={} ansible_port={} baton_listen={}:{app_port}\n",
                h.name, h.addr, h.ssh_port, h.addr
            )
        })
        .collect();
    std::fs::write(
        dir.join("hosts.ini"),
        format!("[baton]\n{inventory}\n[baton:vars]\nbaton_name={NAME}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("ansible.cfg"),
        format!(
            "[defaults]\ninventory = {d}/hosts.ini\nhost_key_checking = True\n\
             private_key_file = {d}/id_ed25519\nremote_user = root\n\
             interpreter_python = /usr/bin/python3\nforks = 10\nretry_files_enabled = False\n\
             [ssh_connection]\npipelining = True\ncontrol_path_dir = {d}/cp\n\
             ssh_args = -F /dev/null -o UserKnownHostsFile={d}/known_hosts \
             -o StrictHostKeyChecking=yes -o ControlMaster=auto -o ControlPersist=120s\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let ansible = Ansible { dir: dir.clone() };

    // ---- install (first release r1)
    let p = ansible.play(
        "install.yml",
        &[
            format!("baton_deb={}", deb.display()),
            format!("baton_release_src={}", r1.display()),
            CONFIG_EXTRA.to_string(),
        ],
    );
    times.push(("install.yml (3 hosts at once)".into(), p.took.as_secs_f64()));
    assert!(p.ok, "install.yml failed:\n{}", p.output);
    for h in &hosts {
        let s = h.must_serve();
        c.check(
            s.release == app_release("r1") && s.generation == 1,
            format!("install: {} serves r1 in generation 1: {s:?}", h.name),
        );
        let direct = get(&format!("{}:{app_port}", h.addr), "/");
        c.check(
            matches!(&direct, Ok((200, _, b)) if mark(b) == Some("r1")),
            format!("install: {}:{app_port} answers r1: {direct:?}", h.addr),
        );
    }
    let hp = start_haproxy(&dir, &hosts, app_port);
    let want: BTreeSet<String> = hosts.iter().map(|h| h.name.clone()).collect();
    wait_until(
        "HAProxy to answer from the three hosts",
        Duration::from_secs(20),
        || {
            let seen = marks_through(hp.port, 9);
            (seen.keys().cloned().collect::<BTreeSet<_>>() == want).then_some(())
        },
    );
    eprintln!(
        "HAProxy on 127.0.0.1:{} in front of the three hosts",
        hp.port
    );

    // Every host's answers, through HAProxy, name `release` (and no other).
    let all_serve = |c: &mut Checks, what: &str, release: &str| {
        let seen = marks_through(hp.port, 18);
        let ok = seen.keys().cloned().collect::<BTreeSet<_>>() == want
            && seen.values().all(|m| m.len() == 1 && m.contains(release));
        c.check(
            ok,
            format!("{what}: every host answers {release} through HAProxy: {seen:?}"),
        );
    };
    all_serve(&mut c, "install", "r1");

    // ---- scenario 1: a good rolling deploy (r2), serial 1
    let before: Vec<Serving> = hosts.iter().map(|h| h.must_serve()).collect();
    let watch = StatusWatch::start(&hp.api);
    let load = Loads::start(hp.port);
    let p = ansible.play(
        "deploy.yml",
        &[format!("baton_release_src={}", r2.display())],
    );
    let (total, failed, kinds) = load.stop();
    always_up(&mut c, "deploy r2", watch.stop());
    loads.push(("deploy r2 (serial 1)".into(), total, failed, kinds.clone()));
    times.push(("deploy.yml r2, serial 1".into(), p.took.as_secs_f64()));
    for (i, t) in batch_times(&p).iter().enumerate() {
        times.push((format!("  batch {} ({})", i + 1, hosts[i].name), *t));
    }
    assert!(p.ok, "deploy.yml r2 failed:\n{}", p.output);
    let deploy_tasks = task_times(&p);
    c.check(
        p.batches.len() == HOSTS,
        format!("deploy r2: {} batches of one host", p.batches.len()),
    );
    c.check(
        failed == 0,
        format!("deploy r2: {failed} of {total} requests failed: {kinds:?}"),
    );
    for (h, b) in hosts.iter().zip(&before) {
        let s = h.must_serve();
        c.check(
            s.release == app_release("r2")
                && s.generation == b.generation + 1
                && s.main_pid == b.main_pid,
            format!(
                "deploy r2: {} serves r2 in generation {} under the same baton (MainPID {}): {s:?}",
                h.name,
                b.generation + 1,
                b.main_pid
            ),
        );
        reload_time(&mut times, h, "deploy r2");
    }
    all_serve(&mut c, "deploy r2", "r2");

    // ---- install.yml again on the running fleet (same .deb, first release r1 given again):
    // nothing changes, nothing is reloaded, current stays on r2
    let before: Vec<Serving> = hosts.iter().map(|h| h.must_serve()).collect();
    let load = Loads::start(hp.port);
    let p = ansible.play(
        "install.yml",
        &[
            format!("baton_deb={}", deb.display()),
            format!("baton_release_src={}", r1.display()),
            CONFIG_EXTRA.to_string(),
        ],
    );
    let (total, failed, kinds) = load.stop();
    loads.push(("install.yml again".into(), total, failed, kinds.clone()));
    times.push((
        "install.yml again (running fleet)".into(),
        p.took.as_secs_f64(),
    ));
    assert!(p.ok, "install.yml again failed:\n{}", p.output);
    let rc = recap(&p);
    c.check(
        hosts.iter().all(|h| {
            rc.lines()
                .any(|l| l.starts_with(&format!("{} ", h.name)) && l.contains("changed=0"))
        }),
        format!("install.yml again: changed=0 on every host:\n{rc}"),
    );
    c.check(
        failed == 0,
        format!("install.yml again: {failed} of {total} requests failed: {kinds:?}"),
    );
    for (h, b) in hosts.iter().zip(&before) {
        let s = h.must_serve();
        let current = h.current();
        c.check(
            s == *b && current == app_release("r2"),
            format!(
                "install.yml again: {} untouched, current -> {current}: {s:?}",
                h.name
            ),
        );
    }

    // ---- scenario 3: rollback.yml after the good deploy: back to r1
    let before: Vec<Serving> = hosts.iter().map(|h| h.must_serve()).collect();
    let load = Loads::start(hp.port);
    let p = ansible.play("rollback.yml", &[]);
    let (total, failed, kinds) = load.stop();
    loads.push(("rollback (serial 1)".into(), total, failed, kinds.clone()));
    times.push(("rollback.yml, serial 1".into(), p.took.as_secs_f64()));
    for (i, t) in batch_times(&p).iter().enumerate() {
        times.push((format!("  batch {} ({})", i + 1, hosts[i].name), *t));
    }
    assert!(p.ok, "rollback.yml failed:\n{}", p.output);
    c.check(
        failed == 0,
        format!("rollback: {failed} of {total} requests failed: {kinds:?}"),
    );
    for (h, b) in hosts.iter().zip(&before) {
        let s = h.must_serve();
        let current = h.current();
        c.check(
            s.release == app_release("r1")
                && s.generation == b.generation + 1
                && s.main_pid == b.main_pid
                && current == app_release("r1"),
            format!(
                "rollback: {} serves r1 again in a new generation, current -> {current}: {s:?}",
                h.name
            ),
        );
    }
    all_serve(&mut c, "rollback", "r1");

    // ---- scenario 2: a broken release; host 1 fails, hosts 2 and 3 are never touched
    let before: Vec<Serving> = hosts.iter().map(|h| h.must_serve()).collect();
    let load = Loads::start(hp.port);
    let p = ansible.play(
        "deploy.yml",
        &[format!("baton_release_src={}", bad.display())],
    );
    let (total, failed, kinds) = load.stop();
    loads.push((
        "broken release (serial 1)".into(),
        total,
        failed,
        kinds.clone(),
    ));
    times.push(("deploy.yml bad (fails on h1)".into(), p.took.as_secs_f64()));
    c.check(
        !p.ok,
        "broken release: ansible-playbook exits non-zero".to_string(),
    );
    let fatal: Vec<&str> = p
        .output
        .lines()
        .filter(|l| l.starts_with("fatal: [h1]"))
        .collect();
    c.check(
        fatal.iter().any(|l| {
            l.contains(&format!("baton@{NAME} on h1: release bad failed"))
                && l.contains("exited before it was ready: exit code 1")
                && l.contains(&format!("still serving release {}", app_release("r1")))
        }),
        format!("broken release: the output names h1 and baton's reason: {fatal:?}"),
    );
    eprintln!("  {}", fatal.last().unwrap_or(&"(no fatal line)"));
    c.check(
        failed == 0,
        format!("broken release: {failed} of {total} requests failed: {kinds:?}"),
    );
    c.check(
        !p.output.contains("[h2]") && !p.output.contains("[h3]"),
        format!(
            "broken release: the play never ran a task on h2 or h3:\n{}",
            recap(&p)
        ),
    );
    for (i, (h, b)) in hosts.iter().zip(&before).enumerate() {
        let s = h.must_serve();
        c.check(
            s == *b && s.release == app_release("r1"),
            format!(
                "broken release: {} serves r1 in the same generation under the same baton: {s:?} (before {b:?})",
                h.name
            ),
        );
        let current = h.current();
        c.check(
            current == app_release("r1"),
            format!("broken release: {} current -> {current}", h.name),
        );
        let uploaded = h.bx.sh(&format!("test -e /srv/{NAME}/releases/bad")).ok();
        let marked =
            h.bx.sh(&format!("test -s /srv/{NAME}/releases/bad/.deploy-failed"))
                .ok();
        if i == 0 {
            c.check(
                marked,
                format!("broken release: {} has releases/bad/.deploy-failed", h.name),
            );
            let lr = h.last_reload();
            c.check(
                lr["ok"] == false,
                format!("broken release: h1's last reload failed: {lr}"),
            );
        } else {
            c.check(
                !uploaded,
                format!("broken release: {} never got releases/bad", h.name),
            );
        }
    }
    all_serve(&mut c, "broken release", "r1");

    // ---- refusals: a serial of 0 (one batch of every host) before any host is touched; a
    // release directory the role did not upload (deploy.sh's, a hand-made one) never removed
    let before: Vec<Serving> = hosts.iter().map(|h| h.must_serve()).collect();
    let p = ansible.play(
        "deploy.yml",
        &[
            format!("baton_release_src={}", r3.display()),
            "baton_serial=0".into(),
        ],
    );
    c.check(
        !p.ok
            && p.output
                .contains("baton_serial (0) must be a number of hosts"),
        format!("serial 0: refused:\n{}", recap(&p)),
    );
    let hand = dir.join("hand.tar.gz");
    std::fs::copy(&r2, &hand).unwrap();
    hosts[0].bx.sh_ok(&format!(
        "mkdir -p /srv/{NAME}/releases/hand && echo precious > /srv/{NAME}/releases/hand/data.db"
    ));
    let p = ansible.play(
        "deploy.yml",
        &[format!("baton_release_src={}", hand.display())],
    );
    c.check(
        !p.ok && p.output.contains("was not uploaded by this role") && !p.output.contains("[h2]"),
        format!(
            "a hand-made release: refused on h1, h2 never reached:\n{}",
            recap(&p)
        ),
    );
    let kept = hosts[0].bx.sh_ok(&format!(
        "ls -A /srv/{NAME}/releases/hand; cat /srv/{NAME}/releases/hand/data.db"
    ));
    c.check(
        kept.split_whitespace().collect::<Vec<_>>() == ["data.db", "precious"],
        format!("a hand-made release: left as it was: {kept:?}"),
    );
    for (h, b) in hosts.iter().zip(&before) {
        let s = h.must_serve();
        let left = h.bx.sh_ok(&format!("ls -A /srv/{NAME}/releases"));
        c.check(
            s == *b
                && h.current() == app_release("r1")
                && !left.contains("r3")
                && !left.contains(".upload-"),
            format!("refusals: {} untouched: {s:?}, releases {left:?}", h.name),
        );
    }
    hosts[0]
        .bx
        .sh_ok(&format!("rm -r /srv/{NAME}/releases/hand"));

    // ---- scenario 4: serial 2 with three hosts: two batches, timed
    let before: Vec<Serving> = hosts.iter().map(|h| h.must_serve()).collect();
    let watch = StatusWatch::start(&hp.api);
    let load = Loads::start(hp.port);
    let p = ansible.play(
        "deploy.yml",
        &[
            format!("baton_release_src={}", r3.display()),
            "baton_serial=2".into(),
        ],
    );
    let (total, failed, kinds) = load.stop();
    always_up(&mut c, "serial 2", watch.stop());
    loads.push(("deploy r3 (serial 2)".into(), total, failed, kinds.clone()));
    times.push(("deploy.yml r3, serial 2".into(), p.took.as_secs_f64()));
    let bt = batch_times(&p);
    for (i, t) in bt.iter().enumerate() {
        let who = if i == 0 { "h1+h2" } else { "h3" };
        times.push((format!("  batch {} ({who})", i + 1), *t));
    }
    for (host, at) in &p.host_done {
        times.push((
            format!("  {host} done at (from the play's start)"),
            at.as_secs_f64(),
        ));
    }
    assert!(p.ok, "deploy.yml r3 (serial 2) failed:\n{}", p.output);
    c.check(
        p.batches.len() == 2,
        format!("serial 2: {} batches (want 2)", p.batches.len()),
    );
    c.check(
        failed == 0,
        format!("serial 2: {failed} of {total} requests failed: {kinds:?}"),
    );
    for (h, b) in hosts.iter().zip(&before) {
        let s = h.must_serve();
        // (h1's failed generation of the broken release took a number too)
        c.check(
            s.release == app_release("r3")
                && s.generation > b.generation
                && s.main_pid == b.main_pid,
            format!(
                "serial 2: {} serves r3 in a new generation under the same baton: {s:?} (before {b:?})",
                h.name
            ),
        );
        reload_time(&mut times, h, "serial 2");
    }
    all_serve(&mut c, "serial 2", "r3");

    // ---- scenario 5: restart.yml with the HAProxy drain (a restart closes the socket):
    // each host's server is drained through the runtime API, baton restarts (a new MainPID),
    // the server is made ready again; HAProxy's statuses are polled all along
    // Then, without the drain: the socket restarted too (measured, not asserted: what it loses
    // is a race with the socket's close), and the service alone (the socket stays open).
    let restart_vars = |drain: bool, socket: bool| -> Vec<String> {
        let mut v = vec![];
        if drain {
            v.extend([
                "baton_lb_drain=true".into(),
                "baton_lb_host=localhost".into(),
                format!("baton_lb_api={}", hp.api.display()),
                "baton_lb_backend=baton".into(),
                "baton_lb_become=false".into(),
            ]);
        }
        if socket {
            v.push("baton_restart_socket=true".into());
        }
        v
    };
    for (what, drain, socket) in [
        ("restart with drain", true, true),
        ("restart without drain", false, true),
        ("restart of the service only", false, false),
    ] {
        let asserted = drain || !socket;
        let before: Vec<Serving> = hosts.iter().map(|h| h.must_serve()).collect();
        let watch = StatusWatch::start(&hp.api);
        let load = Loads::start(hp.port);
        let p = ansible.play("restart.yml", &restart_vars(drain, socket));
        let (total, failed, kinds) = load.stop();
        let seen = watch.stop();
        loads.push((
            format!(
                "{what} (serial 1){}",
                if asserted { "" } else { ", not asserted" }
            ),
            total,
            failed,
            kinds.clone(),
        ));
        times.push((
            format!("restart.yml, {what}, serial 1"),
            p.took.as_secs_f64(),
        ));
        for (i, t) in batch_times(&p).iter().enumerate() {
            times.push((format!("  batch {} ({})", i + 1, hosts[i].name), *t));
        }
        eprintln!("  {what}: HAProxy's statuses, in order: {seen:?}");
        assert!(p.ok, "restart.yml ({what}) failed:\n{}", p.output);
        c.check(
            p.batches.len() == HOSTS,
            format!("{what}: {} batches of one host", p.batches.len()),
        );
        if asserted {
            c.check(
                failed == 0,
                format!("{what}: {failed} of {total} requests failed: {kinds:?}"),
            );
        }
        for (h, b) in hosts.iter().zip(&before) {
            let s = h.must_serve();
            c.check(
                s.main_pid != b.main_pid && s.release == app_release("r3"),
                format!(
                    "{what}: {} restarted (MainPID {} -> {}) and serves r3: {s:?}",
                    h.name, b.main_pid, s.main_pid
                ),
            );
            if drain {
                let statuses = seen.get(&h.name).cloned().unwrap_or_default();
                c.check(
                    statuses.iter().any(|s| s == "DRAIN"),
                    format!("{what}: HAProxy saw {} in DRAIN: {statuses:?}", h.name),
                );
            }
        }
        let now = server_statuses(&hp.api);
        c.check(
            now.len() == HOSTS && now.values().all(|s| s == "UP"),
            format!("{what}: every server UP in HAProxy afterwards: {now:?}"),
        );
        all_serve(&mut c, what, "r3");
    }

    // ---- report
    times.push(("whole test".into(), t_all.elapsed().as_secs_f64()));
    eprintln!("\nfleet times (s):");
    for (what, t) in &times {
        eprintln!("  {t:>7.2}  {what}");
    }
    eprintln!(
        "deploy.yml r2 (serial 1, 3 hosts): the slowest tasks, summed over the 3 batches (s):"
    );
    for (task, t) in deploy_tasks.iter().take(8) {
        eprintln!("  {t:>7.2}  {task}");
    }
    eprintln!("load through HAProxy (keepalive 8 conns @300/s + close 4 @150/s):");
    for (what, total, failed, kinds) in &loads {
        eprintln!("  {what}: {total} requests, {failed} failed {kinds:?}");
    }
    drop(hp);
    c.finish(&hosts[0].bx, &[UNIT]);
}

/// The role and playbooks are clean for ansible-lint (pinned in tests/setup.sh): its
/// production profile, warnings counted as failures, offline (no Galaxy, no version check).
#[test]
fn packaging_ansible_passes_ansible_lint() {
    let lint = format!("{ANSIBLE_BIN}/ansible-lint");
    assert!(
        Path::new(&lint).exists(),
        "{lint} is missing: run `bash tests/setup.sh` first"
    );
    let tmp = TmpDir(std::env::temp_dir().join(format!("baton-lint-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&tmp.0);
    std::fs::create_dir_all(&tmp.0).unwrap();
    let t0 = Instant::now();
    let out = Command::new(&lint)
        .args([
            "--offline",
            "--strict",
            "--nocolor",
            "--profile",
            "production",
        ])
        .current_dir(Path::new(ROOT).join("packaging/ansible"))
        .env("ANSIBLE_HOME", tmp.0.join("ansible-home"))
        .env("ANSIBLE_LOCAL_TEMP", tmp.0.join("ansible-tmp"))
        .env("XDG_CACHE_HOME", tmp.0.join("cache"))
        .env(
            "PATH",
            format!("{ANSIBLE_BIN}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"),
        )
        .stdin(Stdio::null())
        .output()
        .expect("run ansible-lint");
    let out = harness::to_out(out, t0.elapsed());
    eprintln!("ansible-lint: {out}");
    assert!(out.ok(), "ansible-lint packaging/ansible: {out}");
}
