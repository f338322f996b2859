//! The event loop: the only part of the supervisor that touches the world.
//!
//! It turns descriptors into [`Event`]s for the [`Core`] (signals, reaped children, notify
//! datagrams, control requests, probe results, the trapped bind() and listen() calls of
//! `handover = "bind"` workers) and carries out the core's [`Action`]s (spawn,
//! signal, renice, notify systemd, answer a client, log). An action whose outcome the core
//! needs (reading the config, building a recipe, spawning, starting an `exec` check) is
//! answered at once with the matching event. It owns every descriptor: the notify and control
//! sockets and connections, the signalfd, the workers' output pipes, probe sockets and seccomp
//! listeners, and their own deadlines (idle control connections, unread answers, an accept
//! pause, the watchdog), which are kept on the resources themselves. The trapped calls are
//! answered in [`trap`], the seccomp event source.
//!
//! Must never block (no blocking I/O in the loop, except the synchronous exec hand-shake of
//! `sys::spawn`, which lasts until the child's `execve`).

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::core::{
    Action, ClientId, Core, Event, Fact, Identity, Level, LogEvent, Prepared, Systemd,
};
use super::fmt_duration;
use super::plan::{Check, NicePlan};
use super::timers::SlotId;
use crate::config::{Config, Handover, ReadinessKind};
use crate::control::{self, Client, Incoming, Request};
use crate::history::{self, History, Kind, Source};
use crate::notify::{Manager, Message};
use crate::output;
use crate::readiness::{self, ProbeResult, WakeReceiver, Waker};
use crate::release;
use crate::sockets::Listeners;
use crate::sys::{self, NotifySocket, Pid, PollSet, SeccompListener, SignalFd};
use crate::worker::{self, ProbeSocket, Recipe};

mod trap;

use trap::Traps;

/// What `run` needs; built by main from the CLI.
pub struct Setup {
    pub config_path: Option<PathBuf>,
    pub config: Config,
    /// The config's text (what the history keeps of the first generation).
    pub config_text: String,
    /// Where the history is kept (`None`: in memory only).
    pub state_dir: Option<PathBuf>,
    pub listeners: Listeners,
    pub control_path: PathBuf,
    pub signals: SignalFd,
    /// Send workers' stdout/stderr to the journal (when baton itself logs there).
    pub capture_output: bool,
    /// `handover = "bind"`: the address an app's bind() names to get the socket of this name,
    /// when it is not the socket's own (`baton verify` runs an app that binds its production
    /// port on a private one; `--bind-as`).
    pub bind_as: Vec<(String, crate::config::SocketAddrSpec)>,
}

pub struct Supervisor {
    core: Core,
    io: Io,
}

/// A worker's own descriptors besides its pipes: what a check needs, and in bind mode the
/// listener of its bind()/listen() trap.
struct WorkerIo {
    slot: SlotId,
    /// `handover = "bind"`: polled for notifications; dropped once it hangs up (every process
    /// that had the filter is gone) or the worker is reaped.
    trap: Option<SeccompListener>,
    /// How many of its tree's unlinks of baton's paths were answered without removing them
    /// (the first few are logged at info, the rest at debug).
    unlinks_kept: u32,
    /// The addresses of none of baton's sockets its tree bound that were logged at info (the
    /// first few, each once).
    binds_other: Vec<sys::SockAddr>,
    probe_socket: Option<ProbeSocket>,
    /// What it was handed (its sockets, then its probe socket), for the checks that look at
    /// what its process tree waits for.
    watched: Vec<readiness::Watched>,
}

/// Everything the event loop owns.
struct Io {
    config_path: Option<PathBuf>,
    /// The config baton started with: its sockets and control path hold for baton's lifetime.
    boot_config: Rc<Config>,
    boot_text: String,
    /// The generations that served or failed, persisted in `state_dir` (`history.rs`).
    history: History,
    state_dir: Option<PathBuf>,
    /// Writes the history off the loop (an fsync may take seconds); `None` when it is kept in
    /// memory only (`history_memory_only`, or no state directory). It also says why the last
    /// write failed, until one succeeds (`baton history` says it).
    history_writer: Option<history::Writer>,
    /// Why the state directory is not used at all (others may write to it): the history is
    /// then neither read from it nor written there, and `baton history` says why.
    history_memory_only: Option<String>,
    /// What the next generation the core prepares starts from (the config read for it, or
    /// the earlier generation a rollback starts again).
    next_source: Option<Source>,
    /// A rollback asked for: the config the next [`Action::LoadConfig`] gets instead of the
    /// file's.
    rollback: Option<(Config, Source)>,
    listeners: Listeners,
    notify_path: PathBuf,
    notify: NotifySocket,
    control: control::Server,
    conns: Vec<control::Conn>,
    signals: SignalFd,
    waker: Waker,
    wake_rx: WakeReceiver,
    probe_tx: Sender<ProbeResult>,
    probe_rx: Receiver<ProbeResult>,
    manager: Manager,
    next_watchdog: Option<Instant>,
    /// Reload clients waiting for their answer.
    clients: HashMap<ClientId, Client>,
    /// The clients that asked for a rollback: their reply says so.
    rollback_clients: std::collections::HashSet<ClientId>,
    next_client: ClientId,
    /// Each live generation's recipe and config, its paths pinned to its release
    /// ([`release::pin`]).
    recipes: HashMap<u64, (Rc<Recipe>, Rc<Config>)>,
    workers: HashMap<Pid, WorkerIo>,
    /// Where workers' output lines go; `None` = workers inherit baton's stdout/stderr.
    journal: Option<output::Journal>,
    pipes: Vec<output::Pipe>,
    /// Each listening socket's name and inode, in the order workers get them (fd 3, 4, …).
    socket_inodes: Vec<(String, u64)>,
    /// What the answers to bind-mode workers' trapped calls keep (`trap.rs`).
    traps: Traps,
    /// The control socket is not polled until then: accepting failed for want of
    /// descriptors, and a listener that stays readable must not make the loop spin.
    accept_paused_until: Option<Instant>,
    /// Failing accepts are logged at this rate at most.
    accept_errors: RateLimit,
    /// Notifications from strangers are logged at this rate at most.
    ignored_notes: RateLimit,
    /// Answers the clients have not read whole yet.
    outgoing: Vec<control::Outgoing>,
    /// Stopping: when the last worker exited, the workers' output last moved, and the
    /// deadline that gives it up.
    output_since: Option<Instant>,
    output_moved: (u64, Instant),
    output_deadline: Option<Instant>,
}

/// At most this many characters of an ignored notification are logged.
const IGNORED_SHOWN: usize = 120;
/// How long accepting control connections pauses when it fails (EMFILE, ENFILE, ENOBUFS).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// When baton stops, the workers' last output is forwarded while it moves, and given up once
/// it has stood still this long after the last worker exited (a helper that escaped the
/// process group may hold a pipe open and silent)...
const OUTPUT_AT_EXIT: Duration = Duration::from_secs(2);
/// ...or this long after the last worker exited, however it moves (such a helper may also
/// print without end).
const OUTPUT_AT_EXIT_MAX: Duration = Duration::from_secs(30);
/// At most this many notify datagrams are handled per loop turn.
const NOTIFY_PER_TURN: usize = 256;
/// At most this many control connections are accepted per loop turn.
const ACCEPTS_PER_TURN: usize = 64;

/// A log rate limit: so many lines per window, the rest counted; the next line logged says
/// how many were not.
struct RateLimit {
    per_window: u32,
    window: Duration,
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl RateLimit {
    const fn new(per_window: u32, window: Duration) -> RateLimit {
        RateLimit {
            per_window,
            window,
            window_start: None,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged now (if not, it is counted).
    fn allow(&mut self, now: Instant) -> bool {
        if self.window_start.map_or(true, |t| now >= t + self.window) {
            self.window_start = Some(now);
            self.logged = 0;
        }
        if self.logged < self.per_window {
            self.logged += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// " (and 12 more since the last line, not logged)", once, after lines were suppressed.
    fn take_suppressed(&mut self) -> String {
        match std::mem::take(&mut self.suppressed) {
            0 => String::new(),
            n => format!(" (and {n} more since the last line, not logged)"),
        }
    }
}

/// The descriptors of one loop turn, by index in the poll set.
struct Polled {
    sig: usize,
    notify: usize,
    control: Option<usize>,
    wake: usize,
    pipes: Vec<Option<usize>>,
    /// Each bind-mode worker's trap listener.
    traps: Vec<(Pid, usize)>,
    journal: Option<usize>,
    conns: Vec<usize>,
    out: Vec<usize>,
    clients: Vec<(ClientId, usize)>,
}

impl Supervisor {
    pub fn new(setup: Setup) -> anyhow::Result<Supervisor> {
        let notify_path = setup.control_path.with_extension("notify");
        let control = control::Server::bind(&setup.control_path)?;
        let notify = NotifySocket::bind(&notify_path)?;
        sys::set_child_subreaper()?;
        let (waker, wake_rx) = readiness::waker()?;
        let (probe_tx, probe_rx) = mpsc::channel();
        let manager = Manager::from_env();
        let now = Instant::now();
        let config_shown = setup.config_path.as_ref().map(|p| p.display().to_string());
        let (history, history_memory_only) = load_history(
            setup.state_dir.as_deref(),
            setup.config.history,
            config_shown.as_deref(),
        );
        let next_source = Some(Source {
            kind: Kind::Start,
            rollback_to: None,
            config_path: config_shown,
            config: setup.config_text.clone(),
            release: None,
        });
        let mut io = Io {
            config_path: setup.config_path,
            boot_config: Rc::new(setup.config.clone()),
            boot_text: setup.config_text,
            history,
            history_writer: match (&setup.state_dir, &history_memory_only) {
                (Some(dir), None) => Some(history::Writer::spawn(dir.clone(), |dir, bytes| {
                    history::write_atomic(dir, history::FILE, bytes)
                })?),
                _ => None,
            },
            state_dir: setup.state_dir,
            history_memory_only,
            next_source,
            rollback: None,
            listeners: setup.listeners,
            notify_path,
            notify,
            control,
            conns: Vec::new(),
            signals: setup.signals,
            waker,
            wake_rx,
            probe_tx,
            probe_rx,
            next_watchdog: manager
                .watchdog_interval()
                .map(|d| readiness::later(now, d)),
            manager,
            clients: HashMap::new(),
            rollback_clients: std::collections::HashSet::new(),
            next_client: 1,
            recipes: HashMap::new(),
            workers: HashMap::new(),
            journal: None,
            pipes: Vec::new(),
            socket_inodes: Vec::new(),
            traps: Traps::new(),
            accept_paused_until: None,
            // one line per 10 s about failing accepts; ten about notifications from strangers
            accept_errors: RateLimit::new(1, Duration::from_secs(10)),
            ignored_notes: RateLimit::new(10, Duration::from_secs(10)),
            outgoing: Vec::new(),
            output_since: None,
            output_moved: (0, now),
            output_deadline: None,
        };
        io.learn_sockets(&setup.bind_as)?;
        if setup.capture_output {
            match output::Journal::connect() {
                Ok(j) => io.journal = Some(j),
                Err(e) => warn!("workers' output stays on stderr: cannot reach journald: {e}"),
            }
        }
        io.announce();
        let identity = io.identity();
        let first = io.history.next_generation();
        let core = Core::new(setup.config, identity, io.manager.enabled(), first, now);
        let mut sup = Supervisor { core, io };
        sup.execute();
        Ok(sup)
    }

    /// The event loop. Returns baton's exit code.
    pub fn run(mut self) -> i32 {
        let mut poll = PollSet::new();
        loop {
            let now = Instant::now();
            self.io.expire(now);
            self.core.handle_timeout(now);
            self.execute();
            if let Some(code) = self.core.finished() {
                if self.io.output_done(now) {
                    // the last records (`stopped`) reach the disk before baton exits
                    if let Some(w) = &mut self.io.history_writer {
                        if !w.finish(Duration::from_secs(5)) {
                            warn!(
                                baton_event = "history_write_failed",
                                "the history's last write did not end within 5s; baton exits \
                                 without it"
                            );
                        }
                    }
                    info!(baton_event = "stopped", "all workers have exited");
                    return code;
                }
            }
            if crate::logging::lines_dropped() {
                crate::logging::report_dropped();
            }
            let timeout = [self.core.poll_timeout(), self.io.next_deadline(now)]
                .into_iter()
                .flatten()
                .min()
                .map(|d| d.saturating_duration_since(Instant::now()));
            let polled = self.io.fill(&mut poll);
            if let Err(e) = poll.wait(timeout) {
                error!("poll failed: {e}");
                return 1;
            }
            self.dispatch(&poll, &polled);
        }
    }

    /// Hand what the poll found to its handlers, one event at a time.
    fn dispatch(&mut self, poll: &PollSet, p: &Polled) {
        // first: reload clients that gave up waiting
        for (id, i) in &p.clients {
            if poll.hung_up(*i) {
                self.io.clients.remove(id);
                self.event(Event::ClientGone(*id));
            }
        }
        if poll.readable(p.sig) {
            self.on_signals();
        }
        if poll.readable(p.notify) {
            self.on_notify();
        }
        for (pid, i) in &p.traps {
            if poll.readable(*i) {
                self.on_trap(*pid);
            }
            if poll.hung_up(*i) {
                if let Some(w) = self.io.workers.get_mut(pid) {
                    w.trap = None;
                }
            }
        }
        if poll.readable(p.wake) {
            self.io.wake_rx.drain();
            while let Ok(r) = self.io.probe_rx.try_recv() {
                self.event(Event::ProbeResult {
                    worker: r.worker,
                    ok: r.ok,
                    detail: r.detail,
                });
            }
        }
        self.io.on_output(poll, p);
        let readable: Vec<bool> = p.conns.iter().map(|i| poll.readable(*i)).collect();
        self.on_control_conns(&readable);
        let writable: Vec<bool> = p.out.iter().map(|i| poll.writable(*i)).collect();
        let mut i = 0;
        self.io.outgoing.retain_mut(|o| {
            let ready = writable.get(i).copied().unwrap_or(false);
            i += 1;
            !ready || o.write_some() == control::Sent::Pending
        });
        if p.control.is_some_and(|i| poll.readable(i)) {
            let added = self.io.accept_control(Instant::now());
            // read the new ones (the last `added`) at once: the request line usually came
            // with the connection
            let first_new = self.io.conns.len() - added;
            let new: Vec<bool> = (0..self.io.conns.len()).map(|i| i >= first_new).collect();
            self.on_control_conns(&new);
        }
    }

    /// Tell the core, and carry out what it decides.
    fn event(&mut self, event: Event) {
        self.core.handle(Instant::now(), event);
        self.execute();
    }

    /// Carry out every action the core queued; those that need an answer get it at once.
    fn execute(&mut self) {
        while let Some(action) = self.core.poll_action() {
            let now = Instant::now();
            if let Some(answer) = self.io.carry_out(action, now) {
                self.core.handle(now, answer);
            }
        }
    }

    fn on_signals(&mut self) {
        loop {
            let sig = match self.io.signals.read() {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(e) => {
                    error!("reading signals: {e}");
                    break;
                }
            };
            match sig {
                libc::SIGCHLD => {
                    while let Some((pid, status)) = sys::reap_one() {
                        self.io.workers.remove(&pid);
                        self.event(Event::Exited { pid, status });
                    }
                }
                libc::SIGHUP => {
                    info!(baton_event = "reload_requested", "SIGHUP: reload requested");
                    match self.io.rollback_queued() {
                        Some(why) => warn!(baton_event = "reload_refused", "reload refused: {why}"),
                        None => self.event(Event::Reload(None)),
                    }
                }
                libc::SIGTERM | libc::SIGINT | libc::SIGQUIT => {
                    self.event(Event::Stop(sys::signal_name(sig)));
                }
                _ => {}
            }
        }
    }

    fn on_notify(&mut self) {
        // a budget per turn: a sender in a tight loop must not keep the loop from the rest
        // (the socket stays readable, so the next turn goes on)
        // whose tree a sender belongs to, found in /proc once per sender and turn: a flood
        // from one process costs one walk, not one per datagram
        let mut known: HashMap<Pid, Option<Pid>> = HashMap::new();
        for _ in 0..NOTIFY_PER_TURN {
            let dg = match self.io.notify.recv() {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(e) => {
                    warn!("notify socket: {e}");
                    break;
                }
            };
            // the clock is read for each datagram: handling one may spawn a worker, and its
            // send time is worked out from the time it has been queued until now
            let now = Instant::now();
            let workers = self.core.worker_pids();
            let worker = dg.pid.map(|sender| {
                *known
                    .entry(sender)
                    .or_insert_with(|| worker_of(sender, &workers))
            });
            if let Some(event) = self.io.attribute(dg, worker.flatten(), now) {
                self.event(event);
            }
        }
    }

    fn on_control_conns(&mut self, readable: &[bool]) {
        let conns = std::mem::take(&mut self.io.conns);
        let mut keep = Vec::new();
        for (i, c) in conns.into_iter().enumerate() {
            if !readable.get(i).copied().unwrap_or(false) {
                keep.push(c);
                continue;
            }
            let (rest, incoming) = c.read();
            keep.extend(rest);
            match incoming {
                Incoming::Pending | Incoming::Closed => {}
                Incoming::Request(Request::Status, client) => {
                    let now = Instant::now();
                    let out = client.reply(&self.core.status(now), now);
                    self.io.push_outgoing(out);
                }
                Incoming::Request(Request::History, client) => {
                    let now = Instant::now();
                    let out = client.reply(&self.io.history_reply(), now);
                    self.io.push_outgoing(out);
                }
                Incoming::Request(Request::Rollback { to }, client) => self.rollback(to, client),
                Incoming::Request(Request::Reload, client) => {
                    info!(
                        baton_event = "reload_requested",
                        "reload requested on the control socket"
                    );
                    if let Some(why) = self.io.rollback_queued() {
                        self.refuse(client, why, "reload_refused", "reload refused");
                        continue;
                    }
                    let id = self.io.next_client;
                    self.io.next_client += 1;
                    self.io.clients.insert(id, client);
                    self.event(Event::Reload(Some(id)));
                }
            }
        }
        self.io.conns.extend(keep);
    }
}

impl Supervisor {
    /// `baton rollback`: a reload whose config and release come from the history. What it
    /// would start is checked first (the generation is in the history and served, its release
    /// directory is there, its config parses): if not, the client is told why at once and
    /// nothing is touched.
    fn rollback(&mut self, to: Option<u64>, mut client: Client) {
        let now = Instant::now();
        let status = self.core.status(now);
        let serving = status.serving_generation;
        let next = status
            .generations
            .iter()
            .find(|g| g.role == "next")
            .map(|g| g.generation);
        // a rollback never takes the place of a reload asked for before it (that reload's
        // client would be told "ok" for a release it never asked for), nor of another
        // rollback; nor does it wait for a rollout in progress, whose outcome decides what it
        // would go back from (a second trial: it replaced the generation that baton had kept
        // serving after that rollout failed)
        let queued = match (self.io.rollback_queued(), self.core.reload_waiting(), next) {
            (Some(why), ..) => Err(why),
            (None, true, _) => Err(
                "a reload is queued (it starts once the rollout or drain in progress has \
                 ended): roll back once it has ended"
                    .to_string(),
            ),
            (None, false, Some(n)) => Err(format!(
                "generation {n} is rolling out: if it fails, generation {} keeps serving; roll \
                 back once it has ended (`baton status` shows it)",
                serving.map_or_else(|| "-".to_string(), |g| g.to_string())
            )),
            (None, false, None) => Ok(()),
        };
        match queued.and_then(|()| self.io.rollback_source(serving, to)) {
            Err(message) => self.refuse(client, message, "rollback_refused", "rollback refused"),
            Ok((config, source, what)) => {
                info!(baton_event = "rollback_requested", "{what}");
                client.progress(&what);
                self.io.rollback = Some((config, source));
                let id = self.io.next_client;
                self.io.next_client += 1;
                self.io.clients.insert(id, client);
                self.io.rollback_clients.insert(id);
                self.event(Event::Reload(Some(id)));
            }
        }
    }
}

impl Supervisor {
    /// Answer a reload or rollback request with a failure at once: nothing was touched.
    fn refuse(&mut self, client: Client, message: String, event: &str, what: &str) {
        let now = Instant::now();
        warn!(baton_event = event, "{what}: {message}");
        let serving = self.core.status(now).serving_generation;
        let reply = self
            .core
            .reload_reply(false, serving, message, Duration::ZERO, None);
        let out = client.reply(&reply, now);
        self.io.push_outgoing(out);
    }
}

impl Io {
    /// Why a reload or another rollback may not be queued now: a rollback is (it would take
    /// their place, and their clients would be told of its outcome as if it were theirs).
    fn rollback_queued(&self) -> Option<String> {
        let (_, source) = self.rollback.as_ref()?;
        let to = match source.rollback_to {
            Some((g, _)) => format!(" to generation {g}"),
            None => String::new(),
        };
        Some(format!(
            "a rollback{to} is queued: ask again once it has ended"
        ))
    }
}

/// The history in `state_dir` (created if missing), or an empty one, with a warning that
/// says why (never fatal); a warning for each record dropped, and for the records of another
/// config file than `config` (this baton's) that share the state directory. A state directory
/// that others may write to (`history::untrusted_dir`) is neither read nor written: the
/// history is kept in memory only, and the second value says why.
fn load_history(
    state_dir: Option<&std::path::Path>,
    keep: u32,
    config: Option<&str>,
) -> (History, Option<String>) {
    let run = wall_ms(Instant::now());
    let Some(dir) = state_dir else {
        warn!(
            baton_event = "history_unavailable",
            "no state directory (no $STATE_DIRECTORY, and no $HOME): the history of \
             generations is kept in memory only"
        );
        return (History::new(keep, run, Vec::new()), None);
    };
    let private = {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    };
    if let Err(e) = private {
        warn!(
            baton_event = "history_unavailable",
            "cannot create the state directory {}: {e}; the history of generations is kept \
             in memory only until it can be written",
            dir.display()
        );
    }
    if let Some(why) = history::untrusted_dir(dir) {
        warn!(
            baton_event = "history_unavailable",
            "{why}. The history of generations is kept in memory only: {} is neither read \
             nor written",
            dir.join(history::FILE).display()
        );
        let why = format!("baton does not use it: {why}");
        return (History::new(keep, run, Vec::new()), Some(why));
    }
    let path = dir.join(history::FILE);
    let records = match history::load(&path) {
        Ok(loaded) => {
            for why in &loaded.dropped {
                warn!(
                    baton_event = "history_record_dropped",
                    "history {}: {why}; it is left out of the history (and of the file when \
                     it is next written)",
                    path.display()
                );
            }
            let r = loaded.records;
            match r.len() {
                0 => info!(
                    baton_event = "history",
                    "history {}: none yet",
                    path.display()
                ),
                n => info!(
                    baton_event = "history",
                    "history {}: {n} generation(s)",
                    path.display()
                ),
            }
            r
        }
        Err(why) => {
            // a file that is no history is kept aside, not written over: it may be the only
            // record of what a rollback could start again
            let kept = history::set_aside(&path);
            warn!(
                baton_event = "history_unreadable",
                "history {}: {why}; it is ignored ({kept}; starting with an empty history)",
                path.display()
            );
            Vec::new()
        }
    };
    let history = History::new(keep, run, records);
    for (other, gens) in history.other_configs(config) {
        let gens: Vec<String> = gens.iter().map(u64::to_string).collect();
        warn!(
            baton_event = "history_shared",
            "history {}: generation(s) {} ran another config, {other}, not this baton's {}: \
             configs of one file name share a default state directory ({}); `baton rollback` \
             does not start those generations, and two batons running at once write over \
             each other's history. Give each its own: STATE_DIRECTORY=DIR (under systemd: \
             StateDirectory=)",
            path.display(),
            gens.join(", "),
            config.unwrap_or("embedded demo config"),
            dir.display()
        );
    }
    (history, None)
}

/// An instant of the loop's clock as wall-clock time, in ms since the epoch.
fn wall_ms(at: Instant) -> u64 {
    let now = Instant::now();
    let wall = std::time::SystemTime::now();
    let t = match now.checked_duration_since(at) {
        Some(ago) => wall.checked_sub(ago),
        None => wall.checked_add(at.duration_since(now)),
    };
    t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

impl Io {
    /// What `baton history` shows.
    fn history_reply(&self) -> control::HistoryReply {
        control::HistoryReply {
            run: self.history.run,
            file: self
                .state_dir
                .as_ref()
                .map(|d| d.join(history::FILE).display().to_string()),
            keep: self.history.keep as u32,
            generations: self.history.records.clone(),
            unwritten: self.history_memory_only.clone().or_else(|| {
                self.history_writer
                    .as_ref()
                    .and_then(history::Writer::unwritten)
            }),
        }
    }

    /// What a rollback would start: the config, its source, and a line that says so.
    fn rollback_source(
        &self,
        serving: Option<u64>,
        to: Option<u64>,
    ) -> Result<(Config, Source, String), String> {
        let config = self.config_path.as_ref().map(|p| p.display().to_string());
        let r = self
            .history
            .rollback_target(serving, to, config.as_deref())?;
        let g = r.generation;
        let run = match r.run == self.history.run {
            true => String::new(),
            false => format!(" (of baton's run started {} UTC)", history::utc(r.run)),
        };
        let Some(release) = r.release.as_deref() else {
            return Err(format!(
                "generation {g}{run} has no release recorded: nothing was started"
            ));
        };
        if !std::path::Path::new(release).is_absolute() {
            // `load` drops such a record: a second guard, as a relative release would be
            // taken from baton's working directory
            return Err(format!(
                "generation {g}{run}'s release {release} is not an absolute path: nothing was \
                 started"
            ));
        }
        if let Err(e) = release::resolve_dir(std::path::Path::new(release), "the release directory")
        {
            return Err(format!(
                "cannot roll back to generation {g}{run}: {e} (was it pruned?); nothing was \
                 started, generation {} still serving",
                serving.map_or("none".into(), |s| s.to_string())
            ));
        }
        let origin = r.config_path.clone().unwrap_or_else(|| "<history>".into());
        let config = Config::parse(&r.config, &origin).map_err(|e| {
            format!("the config of generation {g}{run} does not parse any more: {e}")
        })?;
        // the digest of the text that starts, never the one the file stored
        let what = format!(
            "rolling back to generation {g}{run}: release {release}, config {} ({})",
            origin,
            history::digest(&r.config)
        );
        let source = Source {
            kind: Kind::Rollback,
            rollback_to: Some((g, r.run)),
            config_path: r.config_path.clone(),
            config: r.config.clone(),
            release: Some(release.into()),
        };
        Ok((config, source, what))
    }

    /// A fact of the core, in the history; the file is written again when it changed. A
    /// write that fails is logged, never more: serving goes on.
    fn record(&mut self, fact: Fact) {
        let changed = match fact {
            Fact::Served {
                generation,
                started,
                at,
            } => self
                .history
                .served(generation, wall_ms(started), wall_ms(at)),
            Fact::Failed {
                generation,
                started,
                at,
                reason,
            } => self
                .history
                .failed(generation, wall_ms(started), wall_ms(at), &reason),
            Fact::Ended {
                generation,
                at,
                reason,
                stopped,
            } => self
                .history
                .ended(generation, wall_ms(at), &reason, stopped),
        };
        if !changed {
            return;
        }
        if let Some(w) = &self.history_writer {
            w.write(self.history.to_json());
        }
    }

    /// Each socket's inode (what `accepting` and a trapped listen() look for), local address
    /// and type (what a trapped bind() is matched against).
    fn learn_sockets(
        &mut self,
        bind_as: &[(String, crate::config::SocketAddrSpec)],
    ) -> std::io::Result<()> {
        for l in &self.listeners.list {
            let inode = sys::inode(l.fd.as_fd())?;
            self.socket_inodes.push((l.name.clone(), inode));
            let asked = bind_as.iter().find(|(n, _)| *n == l.name).map(|(_, a)| a);
            self.traps.learn(l.fd.as_fd(), asked);
        }
        Ok(())
    }

    fn announce(&self) {
        for l in &self.listeners.list {
            info!(
                baton_event = "socket",
                "socket `{}` ({}, from {})", l.name, l.address, l.source
            );
        }
        info!(
            baton_event = "control",
            "control socket {}",
            self.control.path().display()
        );
    }

    /// What `baton status` shows of baton itself.
    fn identity(&self) -> Identity {
        Identity {
            pid: std::process::id() as i32,
            config: self.config_path.as_ref().map(|p| p.display().to_string()),
            sockets: self
                .listeners
                .list
                .iter()
                .zip(3..)
                .map(|(l, worker_fd)| control::SocketStatus {
                    name: l.name.clone(),
                    fd: std::os::fd::AsRawFd::as_raw_fd(&l.fd),
                    // in bind mode the app gets the socket wherever its own bind() put it
                    worker_fd: (self.boot_config.handover == Handover::Fds).then_some(worker_fd),
                    address: l.address.clone(),
                    source: l.source.into(),
                })
                .collect(),
        }
    }

    /// The loop's own deadlines: idle control connections, unread answers, the accept pause,
    /// the watchdog.
    fn expire(&mut self, now: Instant) {
        self.conns
            .retain(|c| now < c.opened + control::REQUEST_TIMEOUT);
        self.outgoing.retain(|o| now < o.deadline);
        if self.accept_paused_until.is_some_and(|t| now >= t) {
            self.accept_paused_until = None;
        }
        if let Some(t) = self.next_watchdog {
            if now >= t {
                self.manager.watchdog();
                self.next_watchdog = self
                    .manager
                    .watchdog_interval()
                    .map(|d| readiness::later(now, d));
            }
        }
    }

    /// The earliest of the loop's own deadlines.
    fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let log_note = crate::logging::lines_dropped().then(|| now + Duration::from_secs(1));
        [
            self.next_watchdog,
            self.accept_paused_until,
            // the note about dropped lines goes out once journald reads again, even if
            // nothing else is logged
            log_note,
            // the oldest connection is the first to time out
            self.conns
                .first()
                .map(|c| c.opened + control::REQUEST_TIMEOUT),
            self.outgoing.first().map(|o| o.deadline),
            self.output_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Once every worker is gone: whether their last output was sent, or stood still for
    /// `OUTPUT_AT_EXIT` (`OUTPUT_AT_EXIT_MAX` at most), which is said.
    fn output_done(&mut self, now: Instant) -> bool {
        if self.pipes.is_empty() {
            return true;
        }
        let since = *self.output_since.get_or_insert(now);
        let moved: u64 = self.pipes.iter().map(|p| p.moved()).sum();
        if moved != self.output_moved.0 {
            self.output_moved = (moved, now);
        }
        let still = self.output_moved.1.max(since);
        let deadline = (still + OUTPUT_AT_EXIT).min(since + OUTPUT_AT_EXIT_MAX);
        self.output_deadline = Some(deadline);
        if now < deadline {
            return false;
        }
        warn!(
            baton_event = "output_cut",
            "{} output pipe(s) still open {} after the last worker exited, their output standing \
             still for {}: their rest is not forwarded",
            self.pipes.len(),
            fmt_duration(now.duration_since(since)),
            fmt_duration(now.duration_since(still))
        );
        true
    }

    /// This turn's poll set.
    fn fill(&self, poll: &mut PollSet) -> Polled {
        poll.clear();
        Polled {
            sig: poll.add(self.signals.as_fd()),
            notify: poll.add(self.notify.as_fd()),
            // not while accepting is paused (out of descriptors)
            control: match self.accept_paused_until {
                Some(t) if t > Instant::now() => None,
                _ => Some(poll.add(self.control.as_fd())),
            },
            wake: poll.add(self.wake_rx.as_fd()),
            // a pipe that journald pushed back on waits for the journal, not for input
            pipes: self
                .pipes
                .iter()
                .map(|p| (!p.blocked()).then(|| poll.add(p.as_fd())))
                .collect(),
            traps: self
                .workers
                .iter()
                .filter_map(|(pid, w)| w.trap.as_ref().map(|t| (*pid, poll.add(t.as_fd()))))
                .collect(),
            journal: match &self.journal {
                Some(j) if self.pipes.iter().any(|p| p.blocked()) => {
                    Some(poll.add_writable(j.as_fd()))
                }
                _ => None,
            },
            conns: self.conns.iter().map(|c| poll.add(c.as_fd())).collect(),
            out: self
                .outgoing
                .iter()
                .map(|o| poll.add_writable(o.as_fd()))
                .collect(),
            // reload clients waiting for their outcome: only to see those that gave up
            clients: self
                .clients
                .iter()
                .map(|(id, c)| (*id, poll.add_hangup(c.as_fd())))
                .collect(),
        }
    }

    /// Workers' output lines to the journal (a pipe is readable, or it waited for the
    /// journal, which is writable now); a pipe goes away once EOF is reached and sent.
    fn on_output(&mut self, poll: &PollSet, p: &Polled) {
        let Some(journal) = &self.journal else {
            return;
        };
        let journal_writable = p.journal.is_some_and(|i| poll.writable(i));
        let mut i = 0;
        self.pipes.retain_mut(|pipe| {
            let ready = match p.pipes.get(i).copied().flatten() {
                Some(ix) => poll.readable(ix),
                None => pipe.blocked() && journal_writable,
            };
            i += 1;
            !ready || pipe.pump(journal) != output::Pump::Done
        });
    }

    /// A notify datagram, as an event for the worker it belongs to (or logged and ignored).
    /// `worker`: the worker whose tree sent it, if any.
    fn attribute(&mut self, dg: sys::Datagram, worker: Option<Pid>, now: Instant) -> Option<Event> {
        let Some(sender) = dg.pid else {
            if self.ignored_notes.allow(now) {
                warn!(
                    baton_event = "notify_ignored",
                    "notification without credentials ignored{}",
                    self.ignored_notes.take_suppressed()
                );
            }
            return None;
        };
        let message = Message::parse(&dg.data);
        // when the worker sent it, not when the loop got to it (the difference is baton's)
        let sent = dg
            .received
            .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
            .and_then(|ago| now.checked_sub(ago))
            .unwrap_or(now);
        if dg.fds_closed > 0 {
            debug!(
                "closed {} descriptor(s) sent by pid {sender} (barrier: {})",
                dg.fds_closed, message.barrier
            );
        }
        let Some(worker) = worker else {
            if self.ignored_notes.allow(now) {
                let text = String::from_utf8_lossy(&dg.data);
                let text = text.trim();
                let shown: String = text.chars().take(IGNORED_SHOWN).collect();
                let cut = if shown.len() < text.len() { "…" } else { "" };
                warn!(
                    baton_event = "notify_ignored",
                    "notification from pid {sender}, which is not a worker, ignored: {shown:?}{cut}{}",
                    self.ignored_notes.take_suppressed()
                );
            }
            return None;
        };
        Some(Event::Notify {
            worker,
            sender,
            message,
            sent,
        })
    }

    /// Keep an answer the client has not read whole yet, at most [`control::MAX_CONNS`] of
    /// them (the oldest is dropped for a new one).
    fn push_outgoing(&mut self, out: Option<control::Outgoing>) {
        if let Some(o) = out {
            if self.outgoing.len() >= control::MAX_CONNS {
                self.outgoing.remove(0);
            }
            self.outgoing.push(o);
        }
    }

    /// Accept pending control connections. Room is made by closing the oldest connection that
    /// has not sent its request yet: when there are [`control::MAX_CONNS`] of them, or when
    /// baton is out of descriptors (EMFILE). With none to close, accepting pauses for
    /// [`ACCEPT_PAUSE`] instead of spinning on a listener that stays readable.
    /// Returns how many connections it added (the last ones of `conns`).
    fn accept_control(&mut self, now: Instant) -> usize {
        let mut added = 0;
        for _ in 0..ACCEPTS_PER_TURN {
            match self.control.accept_one(now) {
                Ok(Some(conn)) => {
                    if self.conns.len() >= control::MAX_CONNS {
                        self.conns.remove(0);
                    }
                    self.conns.push(conn);
                    added += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    let out_of_fds = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                    // the oldest is closed for room only if it came in an earlier turn: one
                    // accepted in this turn has not been read yet, and its request (which
                    // usually came with it) is read now; the rest wait in the backlog
                    let oldest_is_new = added >= self.conns.len();
                    if out_of_fds && oldest_is_new && added > 0 {
                        break;
                    }
                    if out_of_fds && !self.conns.is_empty() {
                        self.conns.remove(0);
                        continue;
                    }
                    self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                    if self.accept_errors.allow(now) {
                        warn!(
                            baton_event = "control_accept_failed",
                            "control socket: accept failed: {e}; pausing for {}{}",
                            fmt_duration(ACCEPT_PAUSE),
                            self.accept_errors.take_suppressed()
                        );
                    }
                    break;
                }
            }
        }
        added.min(self.conns.len())
    }

    // --------------------------------------------------------------------------------------
    // actions

    /// Carry out one action; the answer the core needs, if any.
    fn carry_out(&mut self, action: Action, now: Instant) -> Option<Event> {
        match action {
            Action::LoadConfig => {
                return Some(Event::ConfigLoaded(self.load_config().map(Box::new)))
            }
            Action::Prepare {
                generation,
                config,
                probe_socket,
            } => {
                let result = self.prepare(generation, config, probe_socket);
                return Some(Event::Prepared { generation, result });
            }
            Action::Spawn { slot } => return Some(self.spawn(slot)),
            Action::Probe {
                slot,
                worker,
                check,
                timeout,
            } => return self.probe(slot, worker, check, timeout),
            Action::Ready { worker } => {
                // its checks are over: the probe socket goes
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.probe_socket = None;
                }
            }
            Action::Renice { pid, nice, warn } => {
                if let (Err(e), true) = (sys::renice_group(pid, nice), warn) {
                    warn!(
                        baton_event = "worker_renice_failed",
                        baton_worker_pid = pid,
                        "worker {pid} stays at its startup priority: {e}"
                    );
                }
            }
            Action::Signal { pid, signal } => {
                let _ = sys::kill(pid, signal);
            }
            Action::KillGroup { pid } => {
                let _ = sys::kill_group(pid, libc::SIGKILL);
            }
            Action::Release { generation } => {
                self.recipes.remove(&generation);
            }
            Action::Systemd(msg) => self.tell_systemd(msg),
            Action::Progress { client, text } => {
                // the core says "reload queued"; a rollback's client asked for a rollback
                let text = match (
                    self.rollback_clients.contains(&client),
                    text.strip_prefix("reload "),
                ) {
                    (true, Some(rest)) => format!("rollback {rest}"),
                    _ => text,
                };
                if let Some(c) = self.clients.get_mut(&client) {
                    c.progress(&text);
                }
            }
            Action::Reply { client, mut reply } => {
                if self.rollback_clients.remove(&client) {
                    reply.message = format!("rollback: {}", reply.message);
                }
                if let Some(c) = self.clients.remove(&client) {
                    let out = c.reply(&reply, now);
                    self.push_outgoing(out);
                }
            }
            Action::Log(e) => log(e),
            Action::Record(fact) => self.record(fact),
        }
        None
    }

    fn tell_systemd(&self, msg: Systemd) {
        match msg {
            Systemd::Ready(s) => self.manager.ready(&s),
            Systemd::Reloading(s) => self.manager.reloading(&s),
            Systemd::Status(s) => self.manager.status(&s),
            Systemd::Stopping(s) => self.manager.stopping(&s),
            Systemd::ExtendTimeout(d) => self.manager.extend_timeout(d),
        }
    }

    /// Re-read the config for a reload. The running generation is untouched on error.
    fn load_config(&mut self) -> Result<Config, String> {
        if let Some((cfg, source)) = self.rollback.take() {
            let from = match source.rollback_to {
                Some((g, _)) => format!("generation {g}'s config"),
                None => "the config rolled back to".into(),
            };
            self.next_source = Some(source);
            self.unapplied(&cfg, &from, true);
            return Ok(cfg);
        }
        let Some(path) = &self.config_path else {
            self.next_source = Some(Source {
                kind: Kind::Reload,
                rollback_to: None,
                config_path: None,
                config: self.boot_text.clone(),
                release: None,
            });
            return Ok((*self.boot_config).clone());
        };
        let (cfg, text) = Config::load_text(path).map_err(|e| format!("config error: {e}"))?;
        self.next_source = Some(Source {
            kind: Kind::Reload,
            rollback_to: None,
            config_path: Some(path.display().to_string()),
            config: text,
            release: None,
        });
        let from = path.display().to_string();
        self.unapplied(&cfg, &from, false);
        Ok(cfg)
    }

    /// What a reload to `cfg` cannot apply (`[sockets]`, `control`: both kept for baton's
    /// lifetime): a warning in the log, and a progress line to every client waiting for the
    /// reload, so that `baton reload` prints it too (a new user's trial: a changed port was
    /// "reloaded" with exit 0 and a warning in the journal alone).
    fn unapplied(&mut self, cfg: &Config, from: &str, rollback: bool) {
        let mut notes = Vec::new();
        if cfg.sockets != self.boot_config.sockets {
            // a rollback's config is the history's copy: a restart applies the file, not it
            let apply = match rollback {
                false => "; restart baton to apply",
                true => "",
            };
            let note = format!(
                "[sockets] in {from} differ from the ones baton runs with: sockets are kept \
                 for baton's lifetime (the new generation gets the old ones){apply}"
            );
            warn!(baton_event = "config_sockets_changed", "{note}");
            notes.push(note);
        }
        if cfg.control != self.boot_config.control {
            let note = format!(
                "`control` in {from} differs from the one baton runs with: the control socket \
                 moves only when baton restarts"
            );
            warn!(baton_event = "config_control_changed", "{note}");
            notes.push(note);
        }
        for note in notes {
            for c in self.clients.values_mut() {
                c.progress(&format!("warning: {note}"));
            }
        }
    }

    /// Build a generation's recipe (the notify socket is bound again first if it vanished):
    /// its release and paths resolved once, for every worker it will ever start.
    fn prepare(
        &mut self,
        generation: u64,
        config: Rc<Config>,
        probe_socket: bool,
    ) -> Result<Prepared, String> {
        // the history gets it once it served or failed
        let source = self.next_source.take().unwrap_or_else(|| Source {
            kind: Kind::Reload,
            rollback_to: None,
            config_path: None,
            config: String::new(),
            release: None,
        });
        let recorded = source.release.clone();
        self.history.keep = config.history.max(1) as usize;
        self.history.starting(generation, source, None);
        if !self.notify.reachable() {
            // workers would send READY=1 to nothing: bind the path again (the old socket goes
            // when the new one replaces it)
            match NotifySocket::bind(&self.notify_path) {
                Ok(n) => {
                    warn!(
                        baton_event = "notify_socket_recreated",
                        "the notify socket {} was gone or replaced: bound it again",
                        self.notify_path.display()
                    );
                    self.notify = n;
                }
                Err(e) => {
                    let why = format!(
                        "the notify socket {} was gone or replaced and cannot be bound again: {e}",
                        self.notify_path.display()
                    );
                    error!(baton_event = "notify_socket_lost", "{why}");
                    // READY=1 could not reach baton: the generation cannot get ready
                    if matches!(config.readiness.kind, ReadinessKind::Notify) {
                        return Err(why);
                    }
                }
            }
        }
        let pinned = match &recorded {
            // a rollback runs the release recorded, not what the config's paths resolve to
            Some(r) => release::pin_at(&config, r)?,
            None => release::pin(&config)?,
        };
        self.history
            .resolved(generation, pinned.release.display().to_string());
        let recipe = Recipe::new(
            &pinned,
            &self.listeners,
            &self.notify_path,
            generation,
            probe_socket,
        )
        .map_err(|e| e.to_string())?;
        let nice = NicePlan {
            startup: config.readiness.startup_nice,
            running: recipe.ready_nice(),
            drain: recipe.drain_nice(),
        };
        let prepared = Prepared {
            nice,
            release: pinned.release.display().to_string(),
            command: pinned.config.command.clone(),
        };
        self.recipes
            .insert(generation, (Rc::new(recipe), Rc::new(pinned.config)));
        Ok(prepared)
    }

    /// Start the worker of one slot, with its probe socket and output pipes.
    fn spawn(&mut self, slot: SlotId) -> Event {
        match self.try_spawn(slot) {
            Ok((pid, at)) => Event::Spawned { slot, pid, at },
            Err(error) => Event::SpawnFailed { slot, error },
        }
    }

    fn try_spawn(&mut self, slot: SlotId) -> Result<(Pid, Instant), String> {
        let (recipe, cfg) = self
            .recipes
            .get(&slot.generation)
            .cloned()
            .ok_or("the generation has no recipe")?;
        let probe_socket = match recipe.wants_probe() {
            true => Some(
                ProbeSocket::new().map_err(|e| format!("cannot create the probe socket: {e}"))?,
            ),
            false => None,
        };
        let (mut pipes, writers) = self.output_pipes(&cfg, recipe.release(), slot)?;
        // a worker's own start-up runs from here (its exec included) to its READY=1 as the
        // kernel received it: baton's handling before and after is baton's share
        let at = Instant::now();
        let spawned = recipe.spawn(
            &self.listeners,
            slot.instance,
            probe_socket.as_ref(),
            writers.first().map(|w| w.as_fd()),
            writers.get(1).map(|w| w.as_fd()),
        );
        drop(writers); // the child has its copies; EOF comes when it (and its tree) is done
        let spawned = spawned.map_err(|e| {
            let e = e.to_string();
            let trap = ["no_new_privs", "seccomp"].iter().any(|s| e.starts_with(s));
            match recipe.traps_bind() && trap {
                // never run untrapped: the worker fails, with the reason
                true => format!("handover = \"bind\": the kernel refused the bind() trap: {e}"),
                false => e,
            }
        })?;
        let pid = spawned.pid;
        for p in pipes.iter_mut() {
            p.origin.pid = pid;
        }
        self.pipes.extend(pipes);
        let watched = self.watched(probe_socket.as_ref(), recipe.traps_bind());
        self.workers.insert(
            pid,
            WorkerIo {
                slot,
                trap: spawned.listener,
                unlinks_kept: 0,
                binds_other: Vec::new(),
                probe_socket,
                watched,
            },
        );
        Ok((pid, at))
    }

    /// Workers' output to the journal: one pipe per stream, the pid filled in once known.
    fn output_pipes(
        &self,
        cfg: &Config,
        release: &std::path::Path,
        slot: SlotId,
    ) -> Result<(Vec<output::Pipe>, Vec<std::os::fd::OwnedFd>), String> {
        let mut pipes = Vec::new();
        let mut writers = Vec::new();
        if self.journal.is_none() {
            return Ok((pipes, writers));
        }
        let identifier = std::path::Path::new(&cfg.command[0])
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "worker".into());
        for stream in [output::Stream::Stdout, output::Stream::Stderr] {
            let origin = output::Origin {
                generation: slot.generation,
                pid: 0,
                instance: slot.instance,
                release: release.display().to_string().replace('\n', "\\n"),
                identifier: identifier.clone(),
                stream,
            };
            let (p, w) =
                output::pipe(origin).map_err(|e| format!("cannot create an output pipe: {e}"))?;
            pipes.push(p);
            writers.push(w);
        }
        Ok((pipes, writers))
    }

    /// What a worker is handed: the shared sockets at fd 3.. (in bind mode wherever its binds
    /// put them: no number), then its probe socket.
    fn watched(&self, probe: Option<&ProbeSocket>, bind: bool) -> Vec<readiness::Watched> {
        let mut watched: Vec<readiness::Watched> = self
            .socket_inodes
            .iter()
            .enumerate()
            .map(|(i, (name, inode))| readiness::Watched {
                name: name.clone(),
                fd: if bind { -1 } else { 3 + i as i32 },
                inode: *inode,
            })
            .collect();
        if let Some(inode) = probe.and_then(|p| sys::inode(p.fd.as_fd()).ok()) {
            watched.push(readiness::Watched {
                name: worker::PROBE_FDNAME.into(),
                fd: 3 + watched.len() as i32,
                inode,
            });
        }
        watched
    }

    /// Start one check attempt: on a helper thread (http, tcp, accepting) or as a process
    /// (exec). The answer now is the `exec` check's pid, or a failure to start it.
    fn probe(&self, slot: SlotId, worker: Pid, check: Check, timeout: Duration) -> Option<Event> {
        let w = self.workers.get(&worker);
        let mut watched = w.map(|w| w.watched.clone()).unwrap_or_default();
        if let Check::AcceptingOn(sockets) = &check {
            // `listen`'s look: only the sockets it never called listen() on
            watched = sockets
                .iter()
                .filter_map(|s| watched.get(*s).cloned())
                .collect();
        }
        let probe_socket = w.and_then(|w| w.probe_socket.as_ref());
        let start = |target| {
            readiness::start(
                target,
                watched.clone(),
                timeout,
                worker,
                self.probe_tx.clone(),
                self.waker.clone(),
            )
        };
        let started = match (check, probe_socket) {
            (Check::Http { path }, Some(p)) => {
                p.fd.try_clone()
                    .and_then(|l| start(readiness::Target::Http(p.addr, path, l)))
            }
            (Check::Tcp, Some(p)) => {
                p.fd.try_clone()
                    .and_then(|l| start(readiness::Target::Tcp(p.addr, l)))
            }
            (Check::Accepting | Check::AcceptingOn(_), _) => start(readiness::Target::Accepting),
            (Check::Exec { argv }, _) => {
                // the generation's pinned config: its cwd and the check's paths resolved
                let pinned = self.recipes.get(&slot.generation).map(|(_, c)| c.clone());
                let cwd = pinned.as_ref().and_then(|c| c.cwd.clone());
                let argv = match pinned.as_deref().map(|c| &c.readiness.kind) {
                    Some(ReadinessKind::Exec { argv, .. }) => argv.clone(),
                    _ => argv,
                };
                match worker::spawn_exec_probe(
                    &argv,
                    cwd.as_deref(),
                    worker,
                    slot.generation,
                    slot.instance,
                ) {
                    Ok(probe) => return Some(Event::ProbeStarted { worker, probe }),
                    Err(e) => Err(e),
                }
            }
            _ => Err(std::io::Error::other("no probe socket")),
        };
        started.err().map(|e| Event::ProbeResult {
            worker,
            ok: false,
            detail: format!("cannot run the check: {e}"),
        })
    }
}

/// The worker a notification belongs to: the sender itself or its nearest ancestor that is a
/// worker (gunicorn's master, or `systemd-notify` run by a worker's shell).
fn worker_of(sender: Pid, workers: &[Pid]) -> Option<Pid> {
    let mut pid = sender;
    for _ in 0..32 {
        if workers.contains(&pid) {
            return Some(pid);
        }
        let (ppid, pgrp) = sys::proc_parent_and_group(pid).ok()?;
        if workers.contains(&pgrp) {
            return Some(pgrp);
        }
        if ppid <= 1 {
            return None;
        }
        pid = ppid;
    }
    None
}

/// One of the core's log events, with its journal fields.
fn log(e: LogEvent) {
    macro_rules! emit {
        ($level:ident) => {
            tracing::$level!(
                baton_event = e.event,
                baton_generation = e.generation,
                baton_worker_pid = e.worker,
                baton_instance = e.instance,
                baton_drain_ms = e.drain_ms,
                baton_release = e.release.as_deref(),
                "{}",
                e.message
            )
        };
    }
    match e.level {
        Level::Debug => emit!(debug),
        Level::Info => emit!(info),
        Level::Warn => emit!(warn),
        Level::Error => emit!(error),
    }
}
