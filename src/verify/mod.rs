//! `baton verify`: run an app as baton would in production, on private loopback sockets,
//! reload it under load, stop it, and say what it gets wrong.
//!
//! It starts `baton run` (this very binary) on a copy of the config whose `[sockets]` are
//! private (`127.0.0.1:<free port>`, unix sockets in a private directory) and whose control
//! socket and state directory are its own; with `handover = "bind"`, `--bind-as` gives the
//! app's bind() of its production address the private socket, so the app runs unchanged and
//! never takes the production port. baton writes its events to a FIFO (`BATON_EVENTS`), read
//! as they come ([`events`]); its output and the app's are read from pipes at once, the disk
//! written by threads of their own ([`output`]), so verify never slows what it measures. verify drives load ([`drive`], over the project's load client),
//! asks for K reloads over the control socket, keeps idle keep-alive connections across each
//! stop signal, samples /proc (process trees, memory, descriptors), then stops baton. The
//! verdicts are pure functions of those observations ([`checks`]); [`report`] prints them.
//!
//! Must never touch the production sockets, the production control socket or state
//! directory, and never leave a process behind: every process of the run is baton's or a
//! descendant (verify is their subreaper once baton is gone) and is killed at the end.

pub mod checks;
pub mod drive;
pub mod events;
mod output;
pub mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::{Config, Handover, ReadinessKind, SocketAddrSpec};
use crate::control;
use crate::sys::{self, Pid};
use checks::{Check, Observed};
use drive::Target;
use events::{Ev, Stream};

/// What `baton verify` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    /// How many reloads (1 to 50).
    pub reloads: u32,
    /// The path the load asks for.
    pub path: String,
    /// A path whose answer takes a while, for requests in flight at the stop signals.
    pub slow_path: Option<String>,
    /// The sockets, when the config has no `[sockets]` (a socket unit holds them).
    pub sockets: Vec<(String, SocketAddrSpec)>,
    /// Keep the private directory (the app's output, baton's events and config).
    pub keep: bool,
}

/// The outcome: the checks, and what the report says besides.
pub struct Outcome {
    pub checks: Vec<Check>,
    pub reloads: u32,
    pub aborted: Option<String>,
    /// Stopped by a signal to verify (Ctrl-C): its files are not kept unasked.
    pub interrupted: bool,
    pub kept: Option<PathBuf>,
}

/// A progress line on a terminal.
fn progress(text: &str) {
    if std::io::stderr().is_terminal() {
        eprintln!("verify: {text}");
    }
}

/// Run the whole verification. `Err`: it could not start (a bad config, no sockets); a
/// failed app is an `Ok` with failed checks.
pub fn run(opts: &Options) -> Result<Outcome, String> {
    let (config, text) = Config::load_text(&opts.config).map_err(|e| e.to_string())?;
    let production: Vec<(String, SocketAddrSpec)> = match config.sockets.is_empty() {
        false if !opts.sockets.is_empty() => {
            return Err(format!(
                "{} has [sockets]: --socket is for a config without them (a socket unit holds \
                 them)",
                opts.config.display()
            ))
        }
        false => config
            .sockets
            .iter()
            .map(|s| (s.name.clone(), s.addr.clone()))
            .collect(),
        true if !opts.sockets.is_empty() => opts.sockets.clone(),
        true => {
            return Err(format!(
                "{} has no [sockets] (under systemd the socket unit holds them): say what the \
                 socket unit listens on with --socket NAME=ADDRESS (e.g. --socket \
                 http=0.0.0.0:8080)",
                opts.config.display()
            ))
        }
    };
    for (i, (name, _)) in production.iter().enumerate() {
        if production[..i].iter().any(|(n, _)| n == name) {
            return Err(format!("--socket {name}=…: the name is given twice"));
        }
    }
    // an app that binds a unix path also stats, connects to and unlinks it by that path,
    // which a private socket cannot stand for: it would reach the production one
    if config.handover == Handover::Bind {
        if let Some((name, addr)) = production
            .iter()
            .find(|(_, a)| matches!(a, SocketAddrSpec::Unix(_)))
        {
            return Err(format!(
                "socket `{name}` ({addr}) is a unix path in bind mode: verify cannot give it a \
                 private stand-in (the app would stat, connect to or unlink {addr} itself); \
                 verify it with a TCP socket, or with handover = \"fds\""
            ));
        }
    }
    // what would fail at once is said at once, as `baton check --strict` says it; its
    // warnings come first, on stderr (the table's rows may be their consequence)
    let findings = crate::check::findings(&config);
    for f in findings
        .iter()
        .filter(|f| f.level == crate::check::Level::Advice)
    {
        eprintln!("verify: warning: {}: {}", f.key, f.message);
    }
    let fatal: Vec<String> = findings
        .into_iter()
        .filter(|f| f.is_error(true))
        .map(|f| format!("{}: {}", f.key, f.message))
        .collect();
    if !fatal.is_empty() {
        return Err(format!(
            "{}: {} (baton check --strict says so too)",
            opts.config.display(),
            fatal.join("; ")
        ));
    }
    let base = std::env::temp_dir();
    sweep_stale(&base);
    let dir = private_dir(&base)?;
    let result = verify_in(opts, &config, &text, &production, &dir);
    // what a run that stopped early (not by a Ctrl-C) saw is kept, to be looked at
    let stopped_early = result
        .as_ref()
        .is_ok_and(|o| o.aborted.is_some() && !o.interrupted);
    let kept = match opts.keep || result.is_err() || stopped_early {
        true => {
            // kept on purpose: no later run sweeps it
            let _ = std::fs::remove_file(dir.join(RUNNING));
            Some(dir)
        }
        false => {
            let _ = std::fs::remove_dir_all(&dir);
            None
        }
    };
    let mut outcome = match result {
        Ok(o) => o,
        Err(e) => match kept {
            Some(at) => return Err(format!("{e} (its files are kept in {})", at.display())),
            None => return Err(e),
        },
    };
    outcome.kept = kept;
    Ok(outcome)
}

/// In a private directory while its verify runs: a directory that still has it when its
/// verify is gone was left by a verify killed unawares (SIGKILL), and the next run removes it.
const RUNNING: &str = ".running";

/// Removes `baton-verify-PID-N` directories of `base` that this user made, whose verify is
/// gone and left its `.running` mark: what a killed verify left (the config's copy, with its
/// `[env]`, among it). Kept ones (`--keep`) have no mark; a live verify's pid is alive.
fn sweep_stale(base: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("baton-verify-")) else {
            continue;
        };
        let Some(pid) = rest
            .split_once('-')
            .and_then(|(p, _)| p.parse::<Pid>().ok())
        else {
            continue;
        };
        let path = e.path();
        let ours =
            std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == sys::euid());
        if ours && path.join(RUNNING).exists() && !sys::proc_alive(pid) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// A private directory for the run in `base` (mode 0700), marked [`RUNNING`].
fn private_dir(base: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    for i in 0..100u32 {
        let dir = base.join(format!("baton-verify-{}-{i}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                std::fs::write(dir.join(RUNNING), b"")
                    .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
    }
    Err(format!("cannot create a directory in {}", base.display()))
}

/// A free port on 127.0.0.1 (the kernel's pick, released at once for baton to bind).
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))
}

/// The config verify runs: the user's, with private sockets and control socket.
fn private_config(
    text: &str,
    production: &[(String, SocketAddrSpec)],
    dir: &Path,
) -> Result<(String, Vec<(String, Target)>), String> {
    let mut table: toml::Table = text.parse().map_err(|e| format!("{e}"))?;
    let mut sockets = toml::Table::new();
    let mut targets = Vec::new();
    for (name, addr) in production {
        let (value, target) = match addr {
            SocketAddrSpec::Tcp(_) => {
                let a: std::net::SocketAddr = ([127, 0, 0, 1], free_port()?).into();
                (a.to_string(), Target::Tcp(a))
            }
            SocketAddrSpec::Unix(_) => {
                let p = dir.join(format!("{}.sock", targets.len()));
                (format!("unix:{}", p.display()), Target::Unix(p))
            }
        };
        sockets.insert(name.clone(), toml::Value::String(value));
        targets.push((name.clone(), target));
    }
    table.insert("sockets".into(), toml::Value::Table(sockets));
    let control = dir.join("control.sock");
    table.insert(
        "control".into(),
        toml::Value::String(control.display().to_string()),
    );
    let text = toml::to_string(&table).map_err(|e| format!("{e}"))?;
    Ok((text, targets))
}

/// The `baton run` under test, and what verify sees of it.
struct Watch {
    child: Child,
    baton: Pid,
    tail: Stream,
    events: Vec<Ev>,
    /// Every worker seen, with its generation.
    workers: BTreeMap<Pid, u64>,
    /// Workers gone.
    gone: BTreeSet<Pid>,
    /// Each worker's descendants seen while it ran.
    trees: BTreeMap<Pid, BTreeSet<Pid>>,
    /// Each generation's resident memory (KiB) when last sampled with every worker alive.
    last_rss: BTreeMap<u64, u64>,
    last_sample: Instant,
    /// The output of baton and its workers.
    lines: output::Output,
    /// SIGINT, SIGTERM, SIGHUP and SIGQUIT to verify: it stops, stopping baton first.
    signals: sys::SignalFd,
    /// The last of those, and how many came.
    interrupted: Option<&'static str>,
    interrupts: u32,
}

impl Watch {
    /// Read baton's new events, and look at its workers' trees now and then. `Err` once baton
    /// has exited.
    fn pump(&mut self) -> Result<(), String> {
        while let Ok(Some(sig)) = self.signals.read() {
            if sig != libc::SIGCHLD {
                self.interrupted = Some(sys::signal_name(sig));
                self.interrupts += 1;
            }
        }
        for e in self.tail.read_new() {
            match e.event.as_str() {
                "worker_start" => {
                    if let (Some(p), Some(g)) = (e.worker, e.generation) {
                        self.workers.insert(p, g);
                    }
                }
                "worker_exit" | "worker_spawn_failed" => {
                    if let Some(p) = e.worker {
                        self.gone.insert(p);
                    }
                }
                _ => {}
            }
            self.events.push(e);
        }
        if self.last_sample.elapsed() >= Duration::from_millis(20) {
            self.last_sample = Instant::now();
            self.sample_trees();
        }
        if let Ok(Some(status)) = self.child.try_wait() {
            // the last events it wrote
            for e in self.tail.read_rest(Duration::from_secs(2)) {
                self.events.push(e);
            }
            // a Ctrl-C reaches baton too: it is the interruption that says why
            if let Some(sig) = self.interrupted {
                return Err(format!("verify was stopped ({sig})"));
            }
            return Err(format!("baton run exited ({status}){}", self.last_output()));
        }
        Ok(())
    }

    /// The descendants of every live worker.
    fn sample_trees(&mut self) {
        let live: Vec<Pid> = self
            .workers
            .keys()
            .filter(|p| !self.gone.contains(p))
            .copied()
            .collect();
        for w in live {
            let mut seen = BTreeSet::new();
            let mut todo = vec![w];
            while let Some(p) = todo.pop() {
                for c in sys::proc_children(p).unwrap_or_default() {
                    if seen.insert(c) {
                        todo.push(c);
                    }
                }
            }
            self.trees.entry(w).or_default().extend(seen);
        }
        // each live generation's memory as last seen whole: an old one may be gone by the
        // time a swap is looked at (an app that exits at once on its stop signal)
        let gens: BTreeSet<u64> = self.workers.values().copied().collect();
        for g in gens {
            let all = self.of(g);
            if !all.is_empty() && all.iter().all(|p| !self.gone.contains(p)) {
                let rss = self.rss(g);
                if rss > 0 {
                    self.last_rss.insert(g, rss);
                }
            }
        }
    }

    /// Pump for `d`, whatever comes.
    fn pump_for(&mut self, d: Duration) -> Result<(), String> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.pump()?;
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// Pump until `done` holds for the events, or `timeout`.
    fn until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&[Ev]) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            self.pump()?;
            if let Some(sig) = self.interrupted {
                return Err(format!("verify was stopped ({sig})"));
            }
            if done(&self.events) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("{what}: not within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The end of the app's and baton's output, as a suffix for a message.
    fn last_output(&self) -> String {
        let last = self.lines.lines(5);
        if last.is_empty() {
            return String::new();
        }
        format!("; its last output: {}", last.join(" | "))
    }

    /// The pids of generation `g`'s workers.
    fn of(&self, g: u64) -> Vec<Pid> {
        self.workers
            .iter()
            .filter(|(_, gen)| **gen == g)
            .map(|(p, _)| *p)
            .collect()
    }

    /// Resident memory of generation `g`: its live workers and their descendants, KiB.
    fn rss(&self, g: u64) -> u64 {
        let mut total = 0;
        for w in self.of(g) {
            if self.gone.contains(&w) {
                continue;
            }
            total += sys::proc_rss_kib(w).unwrap_or(0);
            for d in self.trees.get(&w).into_iter().flatten() {
                total += sys::proc_rss_kib(*d).unwrap_or(0);
            }
        }
        total
    }

    /// Descendants of gone workers that still live: pid and command line.
    fn strays(&self) -> Vec<(Pid, String)> {
        let mut out = Vec::new();
        for (w, tree) in &self.trees {
            if !self.gone.contains(w) {
                continue;
            }
            for p in tree {
                // a pid that lives on, still in baton's or verify's care (not reused by
                // another process of the machine)
                if !sys::proc_alive(*p) {
                    continue;
                }
                let Ok((parent, _)) = sys::proc_parent_and_group(*p) else {
                    continue;
                };
                let me = std::process::id() as Pid;
                if parent == self.baton || parent == me || tree.contains(&parent) {
                    let cmd = sys::proc_cmdline(*p).unwrap_or_default();
                    out.push((*p, cmd));
                }
            }
        }
        out
    }
}

fn has(events: &[Ev], event: &str, generation: u64) -> bool {
    events
        .iter()
        .any(|e| e.is(event) && e.generation == Some(generation))
}

fn verify_in(
    opts: &Options,
    config: &Config,
    text: &str,
    production: &[(String, SocketAddrSpec)],
    dir: &Path,
) -> Result<Outcome, String> {
    let (private, targets) = private_config(text, production, dir)?;
    let config_path = dir.join("verify.toml");
    std::fs::write(&config_path, &private)
        .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
    let output = dir.join("output.log");
    let out = std::fs::File::create(&output)
        .map_err(|e| format!("cannot create {}: {e}", output.display()))?;
    // helpers the app leaves behind come to verify once baton is gone
    let _ = sys::set_child_subreaper();
    let exe = std::env::current_exe().map_err(|e| format!("baton's own path: {e}"))?;
    // before any thread: every thread of verify keeps these signals for the loop to read
    let signals = sys::SignalFd::new().map_err(|e| format!("signal handling: {e}"))?;
    // baton's events come through a FIFO, copied to events.jsonl (threads: after the mask)
    let events_path = dir.join("events");
    let copy = dir.join("events.jsonl");
    let copy = std::fs::File::create(&copy)
        .map_err(|e| format!("cannot create {}: {e}", copy.display()))?;
    let events = Stream::start(&events_path, output::Spool::start(copy, output::CAP))
        .map_err(|e| format!("cannot make the FIFO {}: {e}", events_path.display()))?;
    // baton's and the workers' stdout and stderr, through verify: capped in the file, the
    // last lines kept for the table
    let (read, write) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (err_read, err) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
    let lines = output::Output::start(read, err_read, out);
    let mut cmd = Command::new(exe);
    sys::term_with_parent(&mut cmd);
    // a process group of its own: a terminal's Ctrl-C reaches verify, which stops baton after
    // its load; in verify's group, baton stopped under the load, and the app was blamed
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.arg("run").arg("--config").arg(&config_path);
    let bind_mode = config.handover == Handover::Bind;
    if bind_mode {
        for (name, addr) in production {
            cmd.arg("--bind-as").arg(format!("{name}={addr}"));
        }
    }
    for v in [
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "NOTIFY_SOCKET",
        "JOURNAL_STREAM",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
    ] {
        cmd.env_remove(v);
    }
    cmd.env("BATON_EVENTS", &events_path)
        .env("BATON_LOG", "debug")
        .env("STATE_DIRECTORY", dir.join("state"))
        .stdin(Stdio::null())
        .stdout(write)
        .stderr(err);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start baton run: {e}"))?;
    // its copies of the pipe's write end
    drop(cmd);
    let mut w = Watch {
        baton: child.id() as Pid,
        child,
        tail: events,
        events: Vec::new(),
        workers: BTreeMap::new(),
        gone: BTreeSet::new(),
        trees: BTreeMap::new(),
        last_rss: BTreeMap::new(),
        last_sample: Instant::now(),
        lines,
        signals,
        interrupted: None,
        interrupts: 0,
    };
    let target = targets[0].1.clone();
    let mut o = Observed {
        bind_mode,
        readiness_timeout: config.readiness.timeout,
        readiness_kind: config.readiness.kind.name(),
        node: config.command.iter().enumerate().any(|(i, a)| {
            let base = a.rsplit('/').next().unwrap_or(a);
            (i == 0 && base.starts_with("node")) || a.ends_with(".js") || a.ends_with(".mjs")
        }),
        addresses: targets
            .iter()
            .zip(production)
            .map(|((_, t), (_, prod))| (drive::describe(t), prod.to_string()))
            .collect(),
        drain_timeout: config.drain.timeout,
        mem_available_kib: sys::mem_available_kib().ok(),
        ..Observed::default()
    };
    let control = dir.join("control.sock");
    let run = Run {
        opts,
        config,
        target: &target,
        control: &control,
    };
    let result = exercise(&run, &mut w, &mut o);
    if let Err(why) = &result {
        o.aborted = Some(why.clone());
    }
    o.interrupted = w.interrupted.is_some();
    finish(&mut w, &mut o, config);
    o.app_output = w.lines.app_lines(3);
    o.events = std::mem::take(&mut w.events);
    if opts.keep {
        // every request, for a closer look: start and end (µs, CLOCK_MONOTONIC as the
        // events' mono_us), its path and connection, and the failure's kind
        let mut csv = String::from("start_us,end_us,path,connection,failure\n");
        for r in &o.requests {
            let failure = r.failure.as_deref().unwrap_or("");
            let (path, keepalive) = &*r.load;
            let connection = if *keepalive { "keep-alive" } else { "close" };
            // a path is one CSV field: quoted, its quotes doubled
            let path = path.replace('"', "\"\"");
            csv.push_str(&format!(
                "{},{},\"{path}\",{connection},{failure}\n",
                r.start_us, r.end_us
            ));
        }
        let _ = std::fs::write(dir.join("requests.csv"), csv);
    }
    Ok(Outcome {
        checks: checks::evaluate(&o),
        reloads: o.reloads,
        aborted: o.aborted,
        interrupted: o.interrupted,
        kept: None,
    })
}

/// What one run of verify works with, besides the watch and the observations.
struct Run<'a> {
    opts: &'a Options,
    config: &'a Config,
    /// Where the load goes: the first private socket.
    target: &'a Target,
    /// baton's control socket.
    control: &'a Path,
}

/// Start, load, reload K times. `Err`: why it could not go on (the checks say the rest).
fn exercise(run: &Run<'_>, w: &mut Watch, o: &mut Observed) -> Result<(), String> {
    let Run {
        opts,
        config,
        target,
        ..
    } = *run;
    let start_timeout = config.readiness.timeout + config.readiness.stable + Duration::from_secs(5);
    progress(&format!(
        "starting {} worker(s) on {} (readiness {})",
        config.instances,
        drive::describe(target),
        config.readiness.kind.name()
    ));
    // the first worker ready: a request at once, which only this generation can answer
    w.until("a worker of generation 1 ready", start_timeout, |ev| {
        ev.iter().any(|e| e.is("worker_ready")) || has(ev, "generation_failed", 1)
    })?;
    if let Some(ready) = w.events.iter().find(|e| e.is("worker_ready")) {
        let at = ready.mono_us;
        o.first_answer = Some((
            at,
            drive::first_answer(target, &opts.path, checks::FIRST_ANSWER_WAIT),
        ));
    }
    w.until("generation 1 serving", start_timeout, |ev| {
        has(ev, "generation_serving", 1) || has(ev, "generation_failed", 1)
    })?;
    if has(&w.events, "generation_failed", 1) {
        return Err("generation 1 never served".into());
    }
    if let Some(pid) = w.of(1).first() {
        // in fds mode the worker's fds from 3 on are baton's sockets, and with http
        // readiness its private probe socket after them
        let handed = match config.handover {
            Handover::Fds => {
                let probe = matches!(config.readiness.kind, ReadinessKind::Http { .. });
                let sockets = config.sockets.len().max(opts.sockets.len()) as i32;
                3 + sockets + i32::from(probe)
            }
            Handover::Bind => 3,
        };
        o.fds = Some((*pid, extra_fds(*pid, handed, w)));
    }
    for path in std::iter::once(&opts.path).chain(&opts.slow_path) {
        drive::preflight(target, path)?;
    }
    let mut loads = vec![
        drive::Load::start(target, &opts.path, true, 4, 200.0),
        drive::Load::start(target, &opts.path, false, 2, 100.0),
        // (a slow path that is not slow must not flood the app: at most 20 a second)
    ];
    if let Some(slow) = &opts.slow_path {
        loads.push(drive::Load::start(target, slow, true, 4, 20.0));
    }
    let result = reloads(run, w, o);
    for l in loads {
        o.requests.extend(l.stop());
    }
    let mut good: Vec<u64> = o
        .requests
        .iter()
        .filter(|r| r.failure.is_none())
        .map(|r| r.end_us.saturating_sub(r.start_us))
        .collect();
    good.sort_unstable();
    o.median_us = good.get(good.len() / 2).copied();
    result
}

/// The K reloads.
fn reloads(run: &Run<'_>, w: &mut Watch, o: &mut Observed) -> Result<(), String> {
    let Run {
        opts,
        config,
        target,
        control,
    } = *run;
    let gone_timeout = config.drain.timeout + Duration::from_secs(5);
    let rollout_timeout = config.readiness.timeout * 2 + config.readiness.stable + gone_timeout;
    for i in 1..=opts.reloads {
        let old = w
            .events
            .iter()
            .rev()
            .find(|e| e.is("generation_serving") || e.is("reload_done"))
            .and_then(|e| e.generation)
            .unwrap_or(1);
        progress(&format!(
            "reload {i} of {}: the new generation starts, the old one drains (up to \
             drain.timeout, {})",
            opts.reloads,
            crate::supervisor::fmt_duration(config.drain.timeout)
        ));
        let mut idle = drive::Idle::open(target, &opts.path, 8);
        let path = control.to_path_buf();
        let asked = std::thread::spawn(move || {
            control::request(&path, &control::Request::Reload, None, |_| {})
                .map_err(|e| format!("{e:#}"))
        });
        o.reloads = i;
        // the swap: both generations' memory, then the idle connections after the stop
        let from = w.events.len();
        // more requests in flight once the new generation is nearly there: the old one's
        // stop signal comes with the swap
        w.until(
            "the new generation's first worker ready",
            rollout_timeout,
            |ev| {
                ev[from..].iter().any(|e| {
                    e.is("reload_done")
                        || e.is("reload_failed")
                        || (e.is("worker_ready") && e.generation.is_some_and(|g| g > old))
                })
            },
        )?;
        // the idle connections the app has closed by now, before the old generation's stop
        // signal, tell nothing of it (an idle timeout shorter than the rollout)
        if !has(&w.events, "generation_retire", old) {
            idle.mark_closed();
        }
        // the old generation's memory while it still serves all (it may be gone by the swap)
        let old_rss = w.rss(old);
        // as fast as it goes on 8 connections: each has a request in flight nearly all the
        // time, so the stop signal finds some even in a fast app; until shortly after it
        let mut burst = Some(drive::Load::start(target, &opts.path, true, 8, 0.0));
        w.until("the reload's outcome", rollout_timeout, |ev| {
            ev[from..]
                .iter()
                .any(|e| e.is("reload_done") || e.is("reload_failed"))
        })?;
        let done = w.events[from..]
            .iter()
            .find(|e| e.is("reload_done"))
            .and_then(|e| e.generation);
        if let Some(new) = done {
            let sampled = w.last_rss.get(&old).copied().unwrap_or(0);
            o.memory
                .push((old_rss.max(w.rss(old)).max(sampled), w.rss(new)));
            w.until("the old generation retired", gone_timeout, |ev| {
                has(ev, "generation_retire", old)
            })?;
            // let a well-behaved app close its idle connections first
            w.pump_for(Duration::from_millis(100))?;
            let got = idle.use_each();
            // the requests in flight at the stop signal are the burst's
            w.pump_for(Duration::from_millis(400))?;
            if let Some(b) = burst.take() {
                o.requests.extend(b.stop());
            }
            o.idle.answered += got.answered;
            o.idle.closed += got.closed;
            o.idle.cut += got.cut;
            o.idle.early += got.early;
            o.idle.not_kept += got.not_kept;
            if got.unopened.is_some() {
                o.idle.unopened = got.unopened;
            }
            w.until("the old generation gone", gone_timeout, |ev| {
                has(ev, "generation_gone", old)
            })?;
        }
        if let Some(b) = burst.take() {
            o.requests.extend(b.stop());
        }
        let reply = asked
            .join()
            .unwrap_or_else(|_| Err("the reload request panicked".into()))?;
        let reply: control::ReloadReply =
            serde_json::from_str(&reply).map_err(|e| format!("reload reply: {e}"))?;
        if !reply.ok {
            o.reload_failures.push(reply.message.clone());
            return Err(format!("reload {i} failed: {}", reply.message));
        }
        // what the old generation left behind (its group was killed once it exited)
        std::thread::sleep(Duration::from_millis(50));
        w.pump()?;
        o.strays.extend(w.strays());
        if !o.strays.is_empty() {
            // one round is proof enough
            o.strays_ended_reloads = i < opts.reloads;
            break;
        }
        // so is a kill at the drain deadline: each further round would wait that long again
        // (minutes with the default 30 s)
        if w.events[from..].iter().any(|e| e.is("worker_killed")) {
            o.kill_ended_reloads = i < opts.reloads;
            break;
        }
    }
    Ok(())
}

/// A worker's descriptors beyond stdio and baton's sockets (those baton holds as well, at
/// whatever number the app got them).
/// A worker's descriptors from `from` on that are not baton's sockets.
fn extra_fds(pid: Pid, from: i32, w: &Watch) -> Vec<(i32, String)> {
    let batons: BTreeSet<String> = sys::proc_fd_targets(w.baton)
        .unwrap_or_default()
        .into_iter()
        .map(|(_, t)| t)
        .filter(|t| t.starts_with("socket:"))
        .collect();
    sys::proc_fd_targets(pid)
        .unwrap_or_default()
        .into_iter()
        .filter(|(fd, t)| *fd >= from && !batons.contains(t))
        .collect()
}

/// Stop baton; what its workers did on the stop, and what outlived them.
fn finish(w: &mut Watch, o: &mut Observed, config: &Config) {
    progress(&format!(
        "stopping: the workers drain, up to drain.timeout ({}); Ctrl-C again kills them",
        crate::supervisor::fmt_duration(config.drain.timeout)
    ));
    o.stopped_us = Some(sys::monotonic_us());
    let _ = sys::kill(w.baton, libc::SIGTERM);
    let deadline = Instant::now() + config.drain.timeout + Duration::from_secs(10);
    let first = w.interrupts;
    loop {
        if w.pump().is_err() {
            break;
        }
        // asked again to stop while baton drains: no more waiting
        let again = w.interrupts > first;
        if Instant::now() >= deadline || again {
            let _ = sys::kill(w.baton, libc::SIGKILL);
            let _ = w.child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // every worker is gone with baton: what lives on of their trees is stray
    let all: Vec<Pid> = w.workers.keys().copied().collect();
    w.gone.extend(all);
    for (pid, cmd) in w.strays() {
        if !o.strays.iter().any(|(p, _)| *p == pid) {
            o.strays.push((pid, cmd));
        }
    }
    // verify leaves nothing behind: the strays, and a worker that outlived a baton killed
    // above (it is verify's child now)
    let me = std::process::id() as Pid;
    let orphaned = w.workers.keys().copied().filter(|p| {
        sys::proc_alive(*p) && sys::proc_parent_and_group(*p).is_ok_and(|(parent, _)| parent == me)
    });
    let doomed: Vec<Pid> = o.strays.iter().map(|(p, _)| *p).chain(orphaned).collect();
    for pid in doomed {
        let _ = sys::kill(pid, libc::SIGKILL);
    }
    while sys::reap_one().is_some() {}
}

/// `--json`'s and the table's report of an outcome.
pub fn print(outcome: &Outcome, config: &Path, json: bool) -> bool {
    // a run that could not go on proved nothing: it fails, whatever the rows say
    let failed = checks::failed(&outcome.checks) || outcome.aborted.is_some();
    let r = report::Report {
        config: config.display().to_string(),
        reloads: outcome.reloads,
        failed,
        incomplete: outcome.aborted.is_some() && !checks::failed(&outcome.checks),
        checks: &outcome.checks,
        aborted: outcome.aborted.clone(),
        kept: outcome.kept.as_ref().map(|k| k.display().to_string()),
    };
    if json {
        println!("{}", serde_json::to_string(&r).unwrap_or_default());
    } else {
        print!("{}", report::table(&r));
    }
    failed
}
