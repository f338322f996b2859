//! The supervisor: one state machine, driven by one event loop.
//!
//! ```text
//!            all workers ready                 reload (SIGHUP / control)
//!  Booting ─────────────────────▶ Serving ───────────────────────────▶ RollingOut
//!     │ a worker fails              ▲  ▲   (waits while `retiring` drains)  │
//!     ▼                             │  └──────────── next failed: ─────────┤
//!  Stopping ◀── SIGTERM/SIGINT ──   │      retire next, current untouched  │
//!     │        (from any state)     └─────────── next ready (+ stable): ───┘
//!     ▼                                   retire current, next serves
//!   Done
//! ```
//!
//! Event handlers (`on_*`) only record facts on generations and workers: a worker became ready,
//! a worker exited, a probe answered, a deadline passed. [`Supervisor::advance`] is the only
//! place where the state changes; read it to see what happens on a reload.
//!
//! Invariants kept here:
//! * at most two generations are alive (`RollingOut` has no retiring generation; a reload that
//!   arrives while one drains waits for it);
//! * a generation is never sent its stop signal before its successor is ready (and stable);
//! * while another generation serves, at most `readiness.max_starting` workers of a new one are
//!   starting at once (the others wait in their slots; `on_timers` spawns them as places free
//!   up), and each has `readiness.timeout` from its own spawn;
//! * a failed new generation is retired gently (stop signal, SIGKILL at the drain deadline), and
//!   the serving generation is not touched;
//! * every process group of a worker is SIGKILLed once its leader has exited or its drain
//!   deadline passed, so no helper outlives its worker.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use crate::config::{Config, ReadinessKind};
use crate::control::{self, Client, Incoming, ReloadReply, Request};
use crate::notify::{Manager, Message};
use crate::output;
use crate::readiness::{self, ProbeResult, Tracker, WakeReceiver, Waker};
use crate::sockets::Listeners;
use crate::sys::{self, ExitStatus, NotifySocket, Pid, PollSet, SignalFd};
use crate::worker::{self, ProbeSocket, Recipe};

/// One worker process.
struct Worker {
    pid: Pid,
    started: Instant,
    ready_at: Option<Instant>,
    /// Readiness must be reached by then.
    ready_deadline: Instant,
    /// When the stop signal was sent.
    stopped_at: Option<Instant>,
    /// Stop signal sent; the process group is SIGKILLed at this instant.
    stop_deadline: Option<Instant>,
    killed: bool,
    status: Option<String>,
    probe_socket: Option<ProbeSocket>,
    /// What it was handed (its sockets, then its probe socket), for the checks that look at
    /// what its process tree waits for.
    watched: Vec<readiness::Watched>,
    tracker: Option<Tracker>,
    /// The nice value it gets once ready (it started at `readiness.startup_nice`), at the
    /// latest at `startup_nice_until`.
    ready_nice: Option<i32>,
    /// Half its readiness timeout: a worker still not ready by then continues at its running
    /// priority, so that on a saturated host the startup nice cannot make a reload fail.
    startup_nice_until: Instant,
}

impl Worker {
    /// It is ready (as of `at`): from now on it serves, at its running priority.
    fn set_ready(&mut self, at: Instant) {
        self.ready_at = Some(at);
        self.restore_priority();
    }

    /// Its process group leaves the startup nice for its running nice (once).
    fn restore_priority(&mut self) {
        if let Some(nice) = self.ready_nice.take() {
            if let Err(e) = sys::renice_group(self.pid, nice) {
                warn!(
                    baton_event = "worker_renice_failed",
                    baton_worker_pid = self.pid,
                    "worker {} stays at its startup priority: {e}",
                    self.pid
                );
            }
        }
    }
}

/// Where a successful rollout's time went, each from the rollout's start except
/// `slowest_start`, which is the longest start-up of one worker (from just before its spawn to
/// the kernel's receive time of its READY=1, or to its passed check).
struct Timings {
    slowest_start: Duration,
    /// How long at least one worker was starting (the union of the workers' start-ups); the
    /// rest of the rollout is baton's own time.
    app_starting: Duration,
    /// The first worker's spawn began (config re-read and the recipes done).
    first_spawn: Duration,
    /// The last worker's spawn began.
    last_spawn: Duration,
    /// The last worker became ready (the swap follows, after `readiness.stable` if set).
    last_ready: Duration,
}

/// One instance position of a generation; its worker may be restarted.
struct Slot {
    instance: u32,
    worker: Option<Worker>,
    /// Not spawned yet: waits for a place among the generation's `max_starting`.
    waiting: bool,
    restarts: u32,
    backoff: Duration,
    restart_at: Option<Instant>,
    last_exit: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Waiting for every worker's readiness; each has `readiness.timeout` from its spawn.
    Starting,
    /// Every worker is ready; must stay so until `until` (readiness.stable).
    Settling { until: Instant },
    /// Committed: takes traffic, crashed workers are restarted.
    Serving,
    /// Stop signal sent to every worker; process groups are SIGKILLed at `deadline`.
    Retiring { reason: String },
}

struct Generation {
    id: u64,
    config: Rc<Config>,
    /// How its workers are started; `None` when even that failed (see `failure`).
    recipe: Option<Rc<Recipe>>,
    started: Instant,
    phase: Phase,
    slots: Vec<Slot>,
    /// How many of its workers may be starting at once (`usize::MAX`: all of them).
    max_starting: usize,
    /// First reason this generation cannot become ready.
    failure: Option<String>,
    /// The longest drain of its workers so far (stop signal to exit), for the line that says
    /// the generation is gone.
    slowest_drain: Option<Duration>,
}

enum Verdict {
    Pending,
    Ready,
    Failed(String),
}

impl Generation {
    fn workers(&self) -> impl Iterator<Item = &Worker> {
        self.slots.iter().filter_map(|s| s.worker.as_ref())
    }
    fn alive(&self) -> usize {
        self.workers().count()
    }
    fn ready_count(&self) -> usize {
        self.workers().filter(|w| w.ready_at.is_some()).count()
    }
    fn slot_of(&mut self, pid: Pid) -> Option<&mut Slot> {
        self.slots
            .iter_mut()
            .find(|s| s.worker.as_ref().is_some_and(|w| w.pid == pid))
    }
    /// Where a rollout that began at `since` spent its time (once every worker is ready).
    fn timings(&self, since: Instant) -> Option<Timings> {
        let ready: Vec<(Instant, Instant)> = self
            .workers()
            .filter_map(|w| w.ready_at.map(|r| (w.started, r)))
            .collect();
        Some(Timings {
            slowest_start: ready.iter().map(|(s, r)| r.duration_since(*s)).max()?,
            app_starting: union_length(ready.clone()),
            first_spawn: ready.iter().map(|(s, _)| s.duration_since(since)).min()?,
            last_spawn: ready.iter().map(|(s, _)| s.duration_since(since)).max()?,
            last_ready: ready.iter().map(|(_, r)| r.duration_since(since)).max()?,
        })
    }
    /// Whether a waiting slot would be spawned now: the generation is starting, has not
    /// failed, and fewer than `max_starting` of its workers are starting.
    fn can_spawn_waiting(&self) -> bool {
        let starting = self.workers().filter(|w| w.ready_at.is_none()).count();
        self.phase == Phase::Starting
            && self.failure.is_none()
            && self.recipe.is_some()
            && starting < self.max_starting
            && self.slots.iter().any(|s| s.waiting)
    }
    fn committed(&self) -> bool {
        self.phase == Phase::Serving
    }
    fn retiring(&self) -> bool {
        matches!(self.phase, Phase::Retiring { .. })
    }

    /// Whether this (not yet committed) generation is ready, still pending, or failed.
    fn verdict(&mut self, now: Instant) -> Verdict {
        if let Some(reason) = &self.failure {
            return Verdict::Failed(reason.clone());
        }
        let total = self.slots.len();
        let ready = self.ready_count();
        match self.phase.clone() {
            Phase::Starting => {
                if ready == total {
                    let until = readiness::later(now, self.config.readiness.stable);
                    self.phase = Phase::Settling { until };
                    if until <= now {
                        return Verdict::Ready;
                    }
                    return Verdict::Pending;
                }
                // the first worker (in instance order) whose time is up
                let late = self.slots.iter().find_map(|s| {
                    let w = s.worker.as_ref()?;
                    (w.ready_at.is_none() && now >= w.ready_deadline).then_some((s.instance, w))
                });
                let Some((instance, w)) = late else {
                    return Verdict::Pending;
                };
                let why = match &w.tracker {
                    Some(t) => match &t.last_failure {
                        Some(f) => format!(" (last check: {f})"),
                        None => " (no check completed yet)".to_string(),
                    },
                    None => String::new(),
                };
                Verdict::Failed(format!(
                    "instance {instance} (pid {}) not ready after {}{why}",
                    w.pid,
                    fmt_duration(self.config.readiness.timeout)
                ))
            }
            Phase::Settling { until } => {
                if now >= until {
                    Verdict::Ready
                } else {
                    Verdict::Pending
                }
            }
            Phase::Serving => Verdict::Ready,
            Phase::Retiring { reason } => Verdict::Failed(reason),
        }
    }
}

/// The supervisor's states. Generations live inside the state that owns them.
enum State {
    /// The first generation is starting; systemd has not been told READY=1.
    Booting { gen: Generation },
    /// `current` serves; `retiring` (a previous or a failed generation) drains.
    Serving {
        current: Generation,
        retiring: Option<Generation>,
    },
    /// `next` starts on the same sockets while `current` keeps serving.
    RollingOut {
        current: Generation,
        next: Generation,
        waiters: Vec<Client>,
        started: Instant,
    },
    /// Every generation drains; baton exits when the last worker is gone.
    Stopping {
        gens: Vec<Generation>,
        exit_code: i32,
    },
    /// Final.
    Done { exit_code: i32 },
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Booting { .. } => "booting",
            State::Serving { .. } => "serving",
            State::RollingOut { .. } => "rolling-out",
            State::Stopping { .. } => "stopping",
            State::Done { .. } => "done",
        }
    }

    fn gens(&self) -> Vec<&Generation> {
        match self {
            State::Booting { gen } => vec![gen],
            State::Serving { current, retiring } => {
                let mut v = vec![current];
                v.extend(retiring.iter());
                v
            }
            State::RollingOut { current, next, .. } => vec![current, next],
            State::Stopping { gens, .. } => gens.iter().collect(),
            State::Done { .. } => vec![],
        }
    }

    fn gens_mut(&mut self) -> Vec<&mut Generation> {
        match self {
            State::Booting { gen } => vec![gen],
            State::Serving { current, retiring } => {
                let mut v = vec![current];
                v.extend(retiring.iter_mut());
                v
            }
            State::RollingOut { current, next, .. } => vec![current, next],
            State::Stopping { gens, .. } => gens.iter_mut().collect(),
            State::Done { .. } => vec![],
        }
    }
}

/// Everything besides the state: resources and counters. Kept apart from `state` so that both
/// can be borrowed at once.
struct Ctx {
    config_path: Option<PathBuf>,
    /// The config baton started with: its sockets and control path hold for baton's lifetime
    /// (a generation's own config lives in the generation).
    boot_config: Rc<Config>,
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
    next_generation: u64,
    /// A reload was asked for and has not started yet (coalesces every request until it does).
    pending_reload: Option<Vec<Client>>,
    /// `exec` readiness probes in flight: probe pid -> (worker pid, deadline).
    exec_probes: HashMap<Pid, (Pid, Instant)>,
    started: Instant,
    next_watchdog: Option<Instant>,
    reloads_ok: u64,
    reloads_failed: u64,
    last_reload: Option<ReloadReply>,
    /// Where workers' output lines go; `None` = workers inherit baton's stdout/stderr.
    journal: Option<output::Journal>,
    pipes: Vec<output::Pipe>,
    /// The STATUS= last sent to systemd.
    last_status: String,
    /// Each listening socket's name and inode, in the order workers get them (fd 3, 4, …).
    socket_inodes: Vec<(String, u64)>,
    /// The control socket is not polled until then: accepting failed for want of
    /// descriptors, and a listener that stays readable must not make the loop spin.
    accept_paused_until: Option<Instant>,
    /// Failing accepts are logged at this rate at most.
    accept_errors: RateLimit,
    /// Notifications from strangers are logged at this rate at most.
    ignored_notes: RateLimit,
    /// Answers the clients have not read whole yet.
    outgoing: Vec<control::Outgoing>,
    /// Stopping: the workers' output is forwarded until then at most.
    output_deadline: Option<Instant>,
}

/// At most this many characters of an ignored notification are logged.
const IGNORED_SHOWN: usize = 120;

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

/// How long accepting control connections pauses when it fails (EMFILE, ENFILE, ENOBUFS).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// When baton stops, the workers' last output is forwarded for at most this long after the
/// last worker exited (a helper that escaped the process group may hold a pipe open).
const OUTPUT_AT_EXIT: Duration = Duration::from_secs(2);
/// At most this many notify datagrams are handled per loop turn.
const NOTIFY_PER_TURN: usize = 256;
/// At most this many control connections are accepted per loop turn.
const ACCEPTS_PER_TURN: usize = 64;

pub struct Supervisor {
    ctx: Ctx,
    state: State,
}

/// What `run` needs; built by main from the CLI.
pub struct Setup {
    pub config_path: Option<PathBuf>,
    pub config: Config,
    pub listeners: Listeners,
    pub control_path: PathBuf,
    pub signals: SignalFd,
    /// Send workers' stdout/stderr to the journal (when baton itself logs there).
    pub capture_output: bool,
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
        let config = Rc::new(setup.config);
        let now = Instant::now();
        let mut ctx = Ctx {
            config_path: setup.config_path,
            boot_config: config.clone(),
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
            next_generation: 1,
            pending_reload: None,
            exec_probes: HashMap::new(),
            started: now,
            reloads_ok: 0,
            reloads_failed: 0,
            last_reload: None,
            journal: None,
            pipes: Vec::new(),
            last_status: String::new(),
            socket_inodes: Vec::new(),
            accept_paused_until: None,
            // one line per 10 s about failing accepts; ten about notifications from strangers
            accept_errors: RateLimit::new(1, Duration::from_secs(10)),
            ignored_notes: RateLimit::new(10, Duration::from_secs(10)),
            outgoing: Vec::new(),
            output_deadline: None,
        };
        for l in &ctx.listeners.list {
            let inode = sys::inode(l.fd.as_fd())?;
            ctx.socket_inodes.push((l.name.clone(), inode));
        }
        if setup.capture_output {
            match output::Journal::connect() {
                Ok(j) => ctx.journal = Some(j),
                Err(e) => warn!("workers' output stays on stderr: cannot reach journald: {e}"),
            }
        }
        for l in &ctx.listeners.list {
            info!(
                baton_event = "socket",
                "socket `{}` ({}, from {})", l.name, l.address, l.source
            );
        }
        info!(
            baton_event = "control",
            "control socket {}",
            ctx.control.path().display()
        );
        ctx.manager
            .extend_timeout(config.readiness.timeout + Duration::from_secs(5));
        let gen = ctx.start_generation(config, now, false);
        Ok(Supervisor {
            ctx,
            state: State::Booting { gen },
        })
    }

    /// The event loop. Returns baton's exit code.
    pub fn run(mut self) -> i32 {
        let mut poll = PollSet::new();
        loop {
            let now = Instant::now();
            self.on_timers(now);
            self.advance(Instant::now());
            if let State::Done { exit_code } = self.state {
                return exit_code;
            }
            self.publish_status();
            if crate::logging::lines_dropped() {
                crate::logging::report_dropped();
            }
            let timeout = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()));
            poll.clear();
            let i_sig = poll.add(self.ctx.signals.as_fd());
            let i_notify = poll.add(self.ctx.notify.as_fd());
            // not while accepting is paused (out of descriptors)
            let i_control = match self.ctx.accept_paused_until {
                Some(t) if t > Instant::now() => None,
                _ => Some(poll.add(self.ctx.control.as_fd())),
            };
            let i_wake = poll.add(self.ctx.wake_rx.as_fd());
            // a pipe that journald pushed back on waits for the journal, not for input
            let i_pipes: Vec<Option<usize>> = self
                .ctx
                .pipes
                .iter()
                .map(|p| (!p.blocked()).then(|| poll.add(p.as_fd())))
                .collect();
            let i_journal = match &self.ctx.journal {
                Some(j) if self.ctx.pipes.iter().any(|p| p.blocked()) => {
                    Some(poll.add_writable(j.as_fd()))
                }
                _ => None,
            };
            let i_conns: Vec<usize> = self.ctx.conns.iter().map(|c| poll.add(c.as_fd())).collect();
            let i_out: Vec<usize> = self
                .ctx
                .outgoing
                .iter()
                .map(|o| poll.add_writable(o.as_fd()))
                .collect();
            // reload clients waiting for their outcome: only to see those that gave up
            let i_waiters: Vec<usize> = self
                .waiters()
                .iter()
                .flat_map(|list| list.iter())
                .map(|c| poll.add_hangup(c.as_fd()))
                .collect();
            if let Err(e) = poll.wait(timeout) {
                error!("poll failed: {e}");
                return 1;
            }
            // first, before any handler moves the waiting clients between lists
            let gone: Vec<bool> = i_waiters.iter().map(|i| poll.hung_up(*i)).collect();
            let mut i = 0;
            for list in self.waiters_mut() {
                list.retain(|_| {
                    let keep = !gone.get(i).copied().unwrap_or(false);
                    i += 1;
                    keep
                });
            }
            if poll.readable(i_sig) {
                self.on_signals();
            }
            if poll.readable(i_notify) {
                self.on_notify();
            }
            if poll.readable(i_wake) {
                self.ctx.wake_rx.drain();
                self.on_probe_results();
            }
            let journal_writable = i_journal.is_some_and(|i| poll.writable(i));
            let ready: Vec<bool> = self
                .ctx
                .pipes
                .iter()
                .zip(&i_pipes)
                .map(|(p, i)| match i {
                    Some(i) => poll.readable(*i),
                    None => p.blocked() && journal_writable,
                })
                .collect();
            self.on_output(&ready);
            let readable: Vec<bool> = i_conns.iter().map(|i| poll.readable(*i)).collect();
            self.on_control_conns(&readable);
            let writable: Vec<bool> = i_out.iter().map(|i| poll.writable(*i)).collect();
            let mut i = 0;
            self.ctx.outgoing.retain_mut(|o| {
                let ready = writable.get(i).copied().unwrap_or(false);
                i += 1;
                !ready || o.write_some() == control::Sent::Pending
            });
            if i_control.is_some_and(|i| poll.readable(i)) {
                let added = self.ctx.accept_control(Instant::now());
                // read the new ones (the last `added`) at once: the request line usually came
                // with the connection
                let first_new = self.ctx.conns.len() - added;
                let new: Vec<bool> = (0..self.ctx.conns.len()).map(|i| i >= first_new).collect();
                self.on_control_conns(&new);
            }
        }
    }

    // --------------------------------------------------------------------------------------
    // transitions

    /// Apply every transition that the recorded facts allow. The only place `state` changes.
    fn advance(&mut self, now: Instant) {
        loop {
            let state = std::mem::replace(&mut self.state, State::Done { exit_code: 0 });
            let (next, changed) = self.transition(state, now);
            self.state = next;
            if !changed {
                break;
            }
        }
    }

    fn transition(&mut self, state: State, now: Instant) -> (State, bool) {
        let ctx = &mut self.ctx;
        match state {
            State::Booting { mut gen } => match gen.verdict(now) {
                Verdict::Pending => (State::Booting { gen }, false),
                Verdict::Ready => {
                    gen.phase = Phase::Serving;
                    info!(
                        baton_event = "generation_serving",
                        baton_generation = gen.id,
                        "generation {} ready: {} worker(s) serving after {} ms",
                        gen.id,
                        gen.slots.len(),
                        now.duration_since(gen.started).as_millis()
                    );
                    let st = State::Serving {
                        current: gen,
                        retiring: None,
                    };
                    ctx.manager.ready(&ctx.summary(&st));
                    (st, true)
                }
                Verdict::Failed(reason) => {
                    error!(
                        baton_event = "generation_failed",
                        baton_generation = gen.id,
                        "generation {} failed to start: {reason}",
                        gen.id
                    );
                    ctx.manager.stopping(&format!("failed to start: {reason}"));
                    ctx.retire(&mut gen, &reason, now, false);
                    (
                        State::Stopping {
                            gens: vec![gen],
                            exit_code: 1,
                        },
                        true,
                    )
                }
            },

            State::Serving {
                current,
                retiring: Some(old),
            } if old.alive() == 0 => {
                let slowest = match old.slowest_drain {
                    Some(d) => format!(" (slowest drain {})", fmt_ms(d)),
                    None => String::new(),
                };
                info!(
                    baton_event = "generation_gone",
                    baton_generation = old.id,
                    "generation {} has exited{slowest}",
                    old.id
                );
                let st = State::Serving {
                    current,
                    retiring: None,
                };
                ctx.manager.status(&ctx.summary(&st));
                (st, true)
            }

            State::Serving {
                current,
                retiring: None,
            } if ctx.pending_reload.is_some() => {
                let waiters = ctx.pending_reload.take().unwrap_or_default();
                match ctx.load_config() {
                    Err(msg) => {
                        warn!(baton_event = "reload_rejected", "reload rejected: {msg}");
                        // a reload systemd asked for (Type=notify-reload) still gets its
                        // RELOADING=1 … READY=1 pair, with the reason in STATUS=
                        ctx.manager.reloading("reloading: reading the config");
                        ctx.finish_reload(
                            waiters,
                            false,
                            Some(current.id),
                            msg,
                            Duration::ZERO,
                            None,
                        );
                        let st = State::Serving {
                            current,
                            retiring: None,
                        };
                        ctx.manager.ready(&ctx.summary(&st));
                        (st, false)
                    }
                    Ok(config) => {
                        let config = Rc::new(config);
                        ctx.manager.reloading(&format!(
                            "reloading: starting generation {} next to {}",
                            ctx.next_generation, current.id
                        ));
                        ctx.manager.extend_timeout(
                            config.readiness.timeout
                                + config.readiness.stable
                                + Duration::from_secs(5),
                        );
                        let next = ctx.start_generation(config, now, true);
                        (
                            State::RollingOut {
                                current,
                                next,
                                waiters,
                                started: now,
                            },
                            true,
                        )
                    }
                }
            }

            State::RollingOut {
                mut current,
                mut next,
                waiters,
                started,
            } => match next.verdict(now) {
                Verdict::Pending => (
                    State::RollingOut {
                        current,
                        next,
                        waiters,
                        started,
                    },
                    false,
                ),
                Verdict::Ready => {
                    // the swap: the new generation is ready, so (and only now) the old one drains
                    next.phase = Phase::Serving;
                    let msg = format!(
                        "generation {} serving ({} worker(s) ready in {} ms); generation {} draining",
                        next.id,
                        next.slots.len(),
                        now.duration_since(next.started).as_millis(),
                        current.id
                    );
                    info!(
                        baton_event = "reload_done",
                        baton_generation = next.id,
                        "{msg}"
                    );
                    let reason = format!("replaced by generation {}", next.id);
                    ctx.retire(&mut current, &reason, now, true);
                    let timings = next.timings(started);
                    ctx.finish_reload(
                        waiters,
                        true,
                        Some(next.id),
                        msg,
                        now.duration_since(started),
                        timings,
                    );
                    let st = State::Serving {
                        current: next,
                        retiring: Some(current),
                    };
                    ctx.manager.ready(&ctx.summary(&st));
                    (st, true)
                }
                Verdict::Failed(reason) => {
                    let msg = format!(
                        "generation {} rolled back: {reason}; generation {} still serving",
                        next.id, current.id
                    );
                    error!(
                        baton_event = "reload_failed",
                        baton_generation = next.id,
                        "{msg}"
                    );
                    ctx.retire(&mut next, &reason, now, true);
                    ctx.finish_reload(
                        waiters,
                        false,
                        Some(current.id),
                        msg.clone(),
                        now.duration_since(started),
                        None,
                    );
                    let st = State::Serving {
                        current,
                        retiring: Some(next),
                    };
                    ctx.manager
                        .ready(&format!("{}; last reload failed: {msg}", ctx.summary(&st)));
                    (st, true)
                }
            },

            State::Stopping { gens, exit_code } => {
                if gens.iter().any(|g| g.alive() > 0) {
                    return (State::Stopping { gens, exit_code }, false);
                }
                // the workers are gone; what they wrote last is still in the pipes (or waits
                // for journald): send it, for at most OUTPUT_AT_EXIT
                let deadline = *ctx.output_deadline.get_or_insert(now + OUTPUT_AT_EXIT);
                if !ctx.pipes.is_empty() && now < deadline {
                    return (State::Stopping { gens, exit_code }, false);
                }
                if !ctx.pipes.is_empty() {
                    warn!(
                        baton_event = "output_cut",
                        "{} output pipe(s) still open {} after the last worker exited: their \
                         rest is not forwarded",
                        ctx.pipes.len(),
                        fmt_duration(OUTPUT_AT_EXIT)
                    );
                }
                info!(baton_event = "stopped", "all workers have exited");
                (State::Done { exit_code }, true)
            }

            other => (other, false),
        }
    }

    /// SIGTERM / SIGINT: drain everything and exit.
    fn shutdown(&mut self, why: &str) {
        let now = Instant::now();
        let state = std::mem::replace(&mut self.state, State::Done { exit_code: 0 });
        let ctx = &mut self.ctx;
        let (mut gens, waiters, exit_code) = match state {
            State::Stopping { .. } | State::Done { .. } => {
                self.state = state;
                return;
            }
            State::Booting { gen } => (vec![gen], vec![], 0),
            State::Serving { current, retiring } => {
                let mut v = vec![current];
                v.extend(retiring);
                (v, vec![], 0)
            }
            State::RollingOut {
                current,
                next,
                waiters,
                ..
            } => (vec![current, next], waiters, 0),
        };
        info!(baton_event = "stopping", "{why}: draining every worker");
        ctx.manager.stopping(&format!("stopping ({why})"));
        let drain = gens
            .iter()
            .map(|g| g.config.drain.timeout)
            .max()
            .unwrap_or_default();
        ctx.manager.extend_timeout(drain + Duration::from_secs(5));
        for g in gens.iter_mut() {
            ctx.retire(g, "baton is stopping", now, false);
        }
        let mut all = waiters;
        all.extend(ctx.pending_reload.take().unwrap_or_default());
        if !all.is_empty() {
            ctx.finish_reload(
                all,
                false,
                None,
                "baton is stopping".into(),
                Duration::ZERO,
                None,
            );
        }
        self.state = State::Stopping { gens, exit_code };
    }

    // --------------------------------------------------------------------------------------
    // events

    fn on_signals(&mut self) {
        loop {
            let sig = match self.ctx.signals.read() {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(e) => {
                    error!("reading signals: {e}");
                    break;
                }
            };
            match sig {
                libc::SIGCHLD => self.on_children(),
                libc::SIGHUP => {
                    info!(baton_event = "reload_requested", "SIGHUP: reload requested");
                    self.request_reload(None);
                }
                libc::SIGTERM | libc::SIGINT | libc::SIGQUIT => {
                    self.shutdown(sys::signal_name(sig));
                }
                _ => {}
            }
        }
    }

    /// The lists of reload clients waiting for an outcome: the pending reload's, and the
    /// rollout's.
    fn waiters(&self) -> Vec<&Vec<Client>> {
        let mut v: Vec<&Vec<Client>> = self.ctx.pending_reload.iter().collect();
        if let State::RollingOut { waiters, .. } = &self.state {
            v.push(waiters);
        }
        v
    }

    fn waiters_mut(&mut self) -> Vec<&mut Vec<Client>> {
        let mut v: Vec<&mut Vec<Client>> = self.ctx.pending_reload.iter_mut().collect();
        if let State::RollingOut { waiters, .. } = &mut self.state {
            v.push(waiters);
        }
        v
    }

    fn request_reload(&mut self, client: Option<Client>) {
        if let State::Stopping { .. } | State::Done { .. } = self.state {
            if let Some(c) = client {
                self.ctx.finish_reload(
                    vec![c],
                    false,
                    None,
                    "baton is stopping".into(),
                    Duration::ZERO,
                    None,
                );
            }
            return;
        }
        let now = Instant::now();
        let queued = queue_note(&self.state, now);
        let pending = self.ctx.pending_reload.get_or_insert_with(Vec::new);
        if client.is_some() && pending.len() >= control::MAX_CONNS {
            // bounded: the client that waited longest is told, and makes room
            let oldest = pending.remove(0);
            let reply = ReloadReply {
                ok: false,
                generation: None,
                message: format!(
                    "more than {} clients wait for this reload; it goes on (`baton status` shows it)",
                    control::MAX_CONNS
                ),
                duration_ms: 0,
                duration_us: 0,
                slowest_start_us: None,
                app_starting_us: None,
                first_spawn_us: None,
                last_spawn_us: None,
                last_ready_us: None,
            };
            let _ = oldest.reply(&reply, now);
        }
        let pending = self.ctx.pending_reload.get_or_insert_with(Vec::new);
        let mut client = client;
        if let (Some(c), Some((note, _))) = (client.as_mut(), &queued) {
            c.progress(&format!("reload queued: {note}"));
        }
        pending.extend(client);
        if let Some((note, draining)) = queued {
            info!(
                baton_event = "reload_queued",
                "reload queued: {note}; it starts when that has ended"
            );
            // the waiting reload job may outlast systemd's timeout: what it waits for, then a
            // rollout (a drain still to come after a rollout extends it again when it starts)
            let gens = self.state.gens();
            let Some(cfg) = gens.first().map(|g| &g.config) else {
                return;
            };
            let wait = draining.unwrap_or(cfg.drain.timeout);
            self.ctx.manager.extend_timeout(
                wait.saturating_add(cfg.readiness.timeout)
                    .saturating_add(cfg.readiness.stable)
                    .saturating_add(Duration::from_secs(5)),
            );
        }
    }

    fn on_children(&mut self) {
        let now = Instant::now();
        while let Some((pid, status)) = sys::reap_one() {
            if let Some((worker, _)) = self.ctx.exec_probes.remove(&pid) {
                let ok = status == ExitStatus::Code(0);
                let detail = format!("exec check {status}");
                self.record_probe(worker, ok, detail, now);
                continue;
            }
            let mut found = false;
            for gen in self.state.gens_mut() {
                let Some(idx) = gen
                    .slots
                    .iter()
                    .position(|s| s.worker.as_ref().is_some_and(|w| w.pid == pid))
                else {
                    continue;
                };
                found = true;
                let (gen_id, committed, retiring) = (gen.id, gen.committed(), gen.retiring());
                let cfg = gen.config.clone();
                let slot = &mut gen.slots[idx];
                let w = slot.worker.take().expect("found by position");
                // mixed kill mode: whatever the worker left in its group goes now
                let _ = sys::kill_group(pid, libc::SIGKILL);
                let uptime = now.duration_since(w.started);
                let mut desc = format!("{status} after {}", fmt_duration(uptime));
                if status == ExitStatus::Signal(libc::SIGSYS) {
                    desc.push_str(SIGSYS_HINT);
                }
                let drained = w.stopped_at.map(|t| now.duration_since(t));
                slot.last_exit = Some(desc.clone());
                let instance = slot.instance;
                if retiring {
                    let drain = match drained {
                        Some(_) if w.killed => format!(
                            "; killed at the drain deadline, {} after {}",
                            fmt_duration(cfg.drain.timeout),
                            cfg.drain.signal.name()
                        ),
                        Some(d) => {
                            format!(
                                "; drained in {} after {}",
                                fmt_ms(d),
                                cfg.drain.signal.name()
                            )
                        }
                        None => String::new(),
                    };
                    if let Some(d) = drained {
                        gen.slowest_drain = Some(gen.slowest_drain.map_or(d, |s| s.max(d)));
                    }
                    info!(
                        baton_event = "worker_exit",
                        baton_generation = gen_id,
                        baton_worker_pid = pid,
                        baton_instance = instance,
                        baton_drain_ms = drained.map(|d| d.as_millis() as u64),
                        "worker {pid} (generation {gen_id}, instance {instance}) exited: {desc}{drain}"
                    );
                } else if committed {
                    // a crash (or a restart after a failed readiness): back off, restart
                    let rc = &cfg.restart;
                    if w.ready_at.is_some() && uptime >= rc.backoff_max {
                        slot.backoff = rc.backoff_initial;
                    }
                    let delay = slot.backoff;
                    slot.backoff = slot.backoff.saturating_mul(2).min(rc.backoff_max);
                    slot.restart_at = Some(readiness::later(now, delay));
                    slot.restarts += 1;
                    let looping = slot.backoff >= rc.backoff_max;
                    warn!(
                        baton_event = "worker_crash",
                        baton_generation = gen_id,
                        baton_worker_pid = pid,
                        baton_instance = instance,
                        "worker {pid} (generation {gen_id}, instance {instance}) died: {desc}; restart #{} in {}{}",
                        slot.restarts,
                        fmt_duration(delay),
                        if looping { " (crash loop)" } else { "" }
                    );
                } else {
                    let when = if w.ready_at.is_some() {
                        "after"
                    } else {
                        "before"
                    };
                    let reason = format!(
                        "instance {instance} (pid {pid}) exited {when} it was ready: {desc}"
                    );
                    warn!(
                        baton_event = "worker_exit",
                        baton_generation = gen_id,
                        baton_worker_pid = pid,
                        baton_instance = instance,
                        "{reason}"
                    );
                    gen.failure.get_or_insert(reason);
                }
                break;
            }
            if !found {
                debug!("reaped orphan {pid}: {status}");
            }
        }
    }

    fn on_notify(&mut self) {
        let now = Instant::now();
        // a budget per turn: a sender in a tight loop must not keep the loop from the rest
        // (the socket stays readable, so the next turn goes on)
        for _ in 0..NOTIFY_PER_TURN {
            let dg = match self.ctx.notify.recv() {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(e) => {
                    warn!("notify socket: {e}");
                    break;
                }
            };
            let Some(sender) = dg.pid else {
                if self.ctx.ignored_notes.allow(now) {
                    warn!(
                        baton_event = "notify_ignored",
                        "notification without credentials ignored{}",
                        self.ctx.ignored_notes.take_suppressed()
                    );
                }
                continue;
            };
            let msg = Message::parse(&dg.data);
            // when the worker sent it, not when the loop got to it (the difference is baton's)
            let sent = dg
                .received
                .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
                .and_then(|ago| now.checked_sub(ago))
                .unwrap_or(now);
            if dg.fds_closed > 0 {
                debug!(
                    "closed {} descriptor(s) sent by pid {sender} (barrier: {})",
                    dg.fds_closed, msg.barrier
                );
            }
            let Some(worker_pid) = self.attribute(sender) else {
                if self.ctx.ignored_notes.allow(now) {
                    let text = String::from_utf8_lossy(&dg.data);
                    let text = text.trim();
                    let shown: String = text.chars().take(IGNORED_SHOWN).collect();
                    let cut = if shown.len() < text.len() { "…" } else { "" };
                    warn!(
                        baton_event = "notify_ignored",
                        "notification from pid {sender}, which is not a worker, ignored: {shown:?}{cut}{}",
                        self.ctx.ignored_notes.take_suppressed()
                    );
                }
                continue;
            };
            for gen in self.state.gens_mut() {
                let gen_id = gen.id;
                let notify_kind = matches!(gen.config.readiness.kind, ReadinessKind::Notify);
                if let Some(slot) = gen.slot_of(worker_pid) {
                    let instance = slot.instance;
                    let w = slot.worker.as_mut().expect("slot_of found it");
                    if let Some(s) = &msg.status {
                        w.status = Some(s.clone());
                    }
                    if msg.ready && notify_kind && w.ready_at.is_none() && w.stop_deadline.is_none()
                    {
                        w.set_ready(sent.max(w.started));
                        info!(
                            baton_event = "worker_ready",
                            baton_generation = gen_id,
                            baton_worker_pid = worker_pid,
                            baton_instance = instance,
                            "worker {worker_pid} (generation {gen_id}, instance {instance}) ready (READY=1 from pid {sender}) after {} ms",
                            now.duration_since(w.started).as_millis()
                        );
                    }
                    if msg.stopping {
                        info!(
                            baton_event = "worker_stopping",
                            baton_generation = gen_id,
                            baton_worker_pid = worker_pid,
                            baton_instance = instance,
                            "worker {worker_pid} reports STOPPING=1"
                        );
                    }
                    break;
                }
            }
        }
    }

    /// The worker a notification belongs to: the sender itself or its nearest ancestor that is
    /// a worker (gunicorn's master, or `systemd-notify` run by a worker's shell).
    fn attribute(&self, sender: Pid) -> Option<Pid> {
        let workers: Vec<Pid> = self
            .state
            .gens()
            .iter()
            .flat_map(|g| g.workers().map(|w| w.pid).collect::<Vec<_>>())
            .collect();
        let mut pid = sender;
        for _ in 0..32 {
            if workers.contains(&pid) {
                return Some(pid);
            }
            match sys::proc_parent_and_group(pid) {
                Ok((ppid, pgrp)) => {
                    if workers.contains(&pgrp) {
                        return Some(pgrp);
                    }
                    if ppid <= 1 {
                        return None;
                    }
                    pid = ppid;
                }
                Err(_) => return None,
            }
        }
        None
    }

    fn on_probe_results(&mut self) {
        let now = Instant::now();
        while let Ok(r) = self.ctx.probe_rx.try_recv() {
            self.record_probe(r.worker, r.ok, r.detail, now);
        }
    }

    fn record_probe(&mut self, worker: Pid, ok: bool, detail: String, now: Instant) {
        for gen in self.state.gens_mut() {
            let gen_id = gen.id;
            if let Some(slot) = gen.slot_of(worker) {
                let instance = slot.instance;
                let w = slot.worker.as_mut().expect("slot_of found it");
                let Some(t) = w.tracker.as_mut() else { return };
                if !ok {
                    debug!(
                        baton_generation = gen_id,
                        baton_worker_pid = worker,
                        "readiness check failed: {detail}"
                    );
                }
                if t.record(now, ok, detail) && w.ready_at.is_none() && w.stop_deadline.is_none() {
                    w.set_ready(now);
                    info!(
                        baton_event = "worker_ready",
                        baton_generation = gen_id,
                        baton_worker_pid = worker,
                        baton_instance = instance,
                        "worker {worker} (generation {gen_id}, instance {instance}) ready (readiness check passed) after {} ms",
                        now.duration_since(w.started).as_millis()
                    );
                    w.tracker = None;
                    w.probe_socket = None;
                }
                return;
            }
        }
    }

    /// Workers' output lines to the journal (`ready`: the pipe is readable, or it waited for
    /// the journal, which is writable now); a pipe goes away once EOF is reached and sent.
    fn on_output(&mut self, ready: &[bool]) {
        let Some(journal) = &self.ctx.journal else {
            return;
        };
        let mut i = 0;
        self.ctx.pipes.retain_mut(|p| {
            let keep =
                !ready.get(i).copied().unwrap_or(false) || p.pump(journal) != output::Pump::Done;
            i += 1;
            keep
        });
    }

    /// STATUS= to systemd whenever the one-line summary changes. While a reload waits for a
    /// drain, the summary says how long at most (it changes every second), and systemd's
    /// timeout is extended to cover it and the rollout after it.
    fn publish_status(&mut self) {
        if !self.ctx.manager.enabled() {
            return;
        }
        let now = Instant::now();
        let mut summary = self.ctx.summary(&self.state);
        let mut extend = None;
        if self.ctx.pending_reload.is_some() {
            if let Some((note, draining)) = queue_note(&self.state, now) {
                summary = format!("reload queued: {note}; {summary}");
                if let (Some(left), Some(g)) = (draining, self.state.gens().first()) {
                    let r = &g.config.readiness;
                    extend = Some(left + r.timeout + r.stable + Duration::from_secs(5));
                }
            }
        }
        if summary != self.ctx.last_status {
            self.ctx.manager.status(&summary);
            if let Some(d) = extend {
                self.ctx.manager.extend_timeout(d);
            }
            self.ctx.last_status = summary;
        }
    }

    fn on_control_conns(&mut self, readable: &[bool]) {
        let conns = std::mem::take(&mut self.ctx.conns);
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
                    let status = self.status();
                    let out = client.reply(&status, Instant::now());
                    self.ctx.push_outgoing(out);
                }
                Incoming::Request(Request::Reload, client) => {
                    info!(
                        baton_event = "reload_requested",
                        "reload requested on the control socket"
                    );
                    self.request_reload(Some(client));
                }
            }
        }
        self.ctx.conns.extend(keep);
    }

    // --------------------------------------------------------------------------------------
    // timers

    fn on_timers(&mut self, now: Instant) {
        let ctx = &mut self.ctx;
        // control connections that never sent their request, answers nobody reads
        ctx.conns
            .retain(|c| now < c.opened + control::REQUEST_TIMEOUT);
        ctx.outgoing.retain(|o| now < o.deadline);
        if ctx.accept_paused_until.is_some_and(|t| now >= t) {
            ctx.accept_paused_until = None;
        }
        if let Some(t) = ctx.next_watchdog {
            if now >= t {
                ctx.manager.watchdog();
                ctx.next_watchdog = ctx
                    .manager
                    .watchdog_interval()
                    .map(|d| readiness::later(now, d));
            }
        }
        // exec probes that overran their timeout
        let overdue: Vec<Pid> = ctx
            .exec_probes
            .iter()
            .filter(|(_, (_, deadline))| now >= *deadline)
            .map(|(p, _)| *p)
            .collect();
        for p in overdue {
            let _ = sys::kill_group(p, libc::SIGKILL);
        }
        for gen in self.state.gens_mut() {
            let committed = gen.committed();
            let retiring = gen.retiring();
            let cfg = gen.config.clone();
            let recipe = gen.recipe.clone();
            let gen_id = gen.id;
            for slot in gen.slots.iter_mut() {
                // restarts of crashed workers of the serving generation
                if slot.worker.is_none() && committed {
                    if let (Some(at), Some(recipe)) = (slot.restart_at, &recipe) {
                        if now >= at {
                            slot.restart_at = None;
                            if ctx.spawn_slot(&cfg, recipe, gen_id, slot, now).is_err() {
                                // try again later, with the same backoff as a crash
                                let delay = slot.backoff;
                                slot.backoff =
                                    slot.backoff.saturating_mul(2).min(cfg.restart.backoff_max);
                                slot.restart_at = Some(readiness::later(now, delay));
                                slot.restarts += 1;
                            }
                        }
                    }
                }
                let Some(w) = slot.worker.as_mut() else {
                    continue;
                };
                if let Some(deadline) = w.stop_deadline {
                    if now >= deadline && !w.killed {
                        warn!(
                            baton_event = "worker_killed",
                            baton_generation = gen_id,
                            baton_worker_pid = w.pid,
                            baton_instance = slot.instance,
                            "worker {} did not exit within the drain timeout: SIGKILL to its process group",
                            w.pid
                        );
                        let _ = sys::kill_group(w.pid, libc::SIGKILL);
                        w.killed = true;
                    }
                    continue;
                }
                if w.ready_at.is_some() || retiring {
                    continue;
                }
                match &cfg.readiness.kind {
                    ReadinessKind::Delay { delay } => {
                        if now >= w.started + *delay {
                            w.set_ready(now);
                            info!(
                                baton_event = "worker_ready",
                                baton_generation = gen_id,
                                baton_worker_pid = w.pid,
                                baton_instance = slot.instance,
                                "worker {} (generation {gen_id}, instance {}) ready (alive for {})",
                                w.pid,
                                slot.instance,
                                fmt_duration(*delay)
                            );
                        }
                    }
                    ReadinessKind::Notify => {}
                    kind => {
                        if let Some(t) = w.tracker.as_mut() {
                            if t.due(now) {
                                t.started();
                                ctx.start_probe(kind, &cfg, gen_id, slot.instance, w, now);
                            }
                        }
                    }
                }
                if w.ready_at.is_none() && w.ready_nice.is_some() && now >= w.startup_nice_until {
                    info!(
                        baton_event = "worker_startup_nice_ended",
                        baton_generation = gen_id,
                        baton_worker_pid = w.pid,
                        baton_instance = slot.instance,
                        "worker {} not ready after {}, half its readiness timeout: it continues at its running priority",
                        w.pid,
                        fmt_duration(w.startup_nice_until.duration_since(w.started))
                    );
                    w.restore_priority();
                }
                // a restarted worker of the serving generation that never gets ready is
                // stopped (and then restarted with backoff); an uncommitted generation fails
                // as a whole through its verdict instead
                if committed && w.ready_at.is_none() && now >= w.ready_deadline {
                    warn!(
                        baton_event = "worker_not_ready",
                        baton_generation = gen_id,
                        baton_worker_pid = w.pid,
                        baton_instance = slot.instance,
                        "worker {} not ready after {}: stopping it",
                        w.pid,
                        fmt_duration(cfg.readiness.timeout)
                    );
                    let drain_nice = recipe.as_ref().and_then(|r| r.drain_nice());
                    ctx.stop_worker(w, &cfg, now, drain_nice);
                }
            }
            // a paced generation: spawn in the places its ready workers left, after the pass
            // above, which may itself have made workers ready (`delay`)
            if let Some(recipe) = recipe {
                ctx.spawn_waiting(gen, &recipe, now);
            }
        }
    }

    /// The earliest instant at which something is due; `None` = sleep until an event.
    fn next_deadline(&self) -> Option<Instant> {
        let mut best: Option<Instant> = self.ctx.next_watchdog;
        let mut consider = |t: Instant| {
            best = Some(best.map_or(t, |b| b.min(t)));
        };
        if let Some(t) = self.ctx.accept_paused_until {
            consider(t);
        }
        if crate::logging::lines_dropped() {
            // the note about them goes out once journald reads again, even if nothing else
            // is logged
            consider(Instant::now() + Duration::from_secs(1));
        }
        if let Some(c) = self.ctx.conns.first() {
            // the oldest connection is the first to time out
            consider(c.opened + control::REQUEST_TIMEOUT);
        }
        if let Some(o) = self.ctx.outgoing.first() {
            consider(o.deadline);
        }
        if let Some(t) = self.ctx.output_deadline {
            consider(t);
        }
        for (_, d) in self.ctx.exec_probes.values() {
            consider(*d);
        }
        if self.ctx.pending_reload.is_some() && self.ctx.manager.enabled() {
            if let Some((_, Some(left))) = queue_note(&self.state, Instant::now()) {
                // the STATUS= line counts the drain's seconds down (to the next whole second)
                let frac = Duration::from_nanos(u64::from(left.subsec_nanos()));
                if !left.is_zero() {
                    let tick = if frac.is_zero() {
                        Duration::from_secs(1)
                    } else {
                        frac
                    };
                    consider(Instant::now() + tick);
                }
            }
        }
        for gen in self.state.gens() {
            if let Phase::Settling { until } = &gen.phase {
                consider(*until);
            }
            if gen.can_spawn_waiting() {
                // a place is free for a waiting worker: the next turn spawns it
                consider(Instant::now());
            }
            for slot in &gen.slots {
                if let Some(at) = slot.restart_at {
                    consider(at);
                }
                let Some(w) = &slot.worker else { continue };
                if let Some(d) = w.stop_deadline {
                    if !w.killed {
                        consider(d);
                    }
                    continue;
                }
                if w.ready_at.is_none() && !gen.retiring() {
                    consider(w.ready_deadline);
                    if w.ready_nice.is_some() {
                        consider(w.startup_nice_until);
                    }
                    if let ReadinessKind::Delay { delay } = gen.config.readiness.kind {
                        consider(readiness::later(w.started, delay));
                    }
                    if let Some(t) = w.tracker.as_ref().and_then(|t| t.deadline()) {
                        consider(t);
                    }
                }
            }
        }
        best
    }

    // --------------------------------------------------------------------------------------
    // status

    fn status(&self) -> control::Status {
        let now = Instant::now();
        let serving = match &self.state {
            State::Serving { current, .. } | State::RollingOut { current, .. } => Some(current.id),
            _ => None,
        };
        let role = |g: &Generation| -> &'static str {
            match &self.state {
                State::Serving { current, .. } if current.id == g.id => "serving",
                State::RollingOut { current, .. } if current.id == g.id => "serving",
                State::RollingOut { next, .. } if next.id == g.id => "next",
                State::Booting { .. } => "booting",
                State::Stopping { .. } => "stopping",
                _ => "retiring",
            }
        };
        let generations = self
            .state
            .gens()
            .iter()
            .map(|g| control::GenerationStatus {
                generation: g.id,
                role: role(g).into(),
                phase: match &g.phase {
                    Phase::Starting => "starting".into(),
                    Phase::Settling { .. } => "settling".into(),
                    Phase::Serving => "serving".into(),
                    Phase::Retiring { reason } => format!("retiring: {reason}"),
                },
                age_s: secs(now.duration_since(g.started)),
                workers: g
                    .slots
                    .iter()
                    .map(|s| {
                        let state = match &s.worker {
                            None if s.waiting => "waiting".to_string(),
                            None if s.restart_at.is_some() => {
                                if s.backoff >= g.config.restart.backoff_max {
                                    "crash-loop".to_string()
                                } else {
                                    "restarting".to_string()
                                }
                            }
                            None => "exited".to_string(),
                            Some(w) if w.stop_deadline.is_some() => "draining".to_string(),
                            Some(w) if w.ready_at.is_some() => "ready".to_string(),
                            Some(_) => "starting".to_string(),
                        };
                        control::WorkerStatus {
                            instance: s.instance,
                            pid: s.worker.as_ref().map(|w| w.pid),
                            state,
                            restarts: s.restarts,
                            uptime_s: s
                                .worker
                                .as_ref()
                                .map(|w| secs(now.duration_since(w.started))),
                            status: s.worker.as_ref().and_then(|w| w.status.clone()),
                            last_exit: s.last_exit.clone(),
                        }
                    })
                    .collect(),
            })
            .collect();
        control::Status {
            pid: std::process::id() as i32,
            state: self.state.name().into(),
            uptime_s: secs(now.duration_since(self.ctx.started)),
            config: self
                .ctx
                .config_path
                .as_ref()
                .map(|p| p.display().to_string()),
            serving_generation: serving,
            sockets: self
                .ctx
                .listeners
                .list
                .iter()
                .zip(3..)
                .map(|(l, worker_fd)| control::SocketStatus {
                    name: l.name.clone(),
                    fd: std::os::fd::AsRawFd::as_raw_fd(&l.fd),
                    worker_fd: Some(worker_fd),
                    address: l.address.clone(),
                    source: l.source.into(),
                })
                .collect(),
            generations,
            reloads_ok: self.ctx.reloads_ok,
            reloads_failed: self.ctx.reloads_failed,
            last_reload: self.ctx.last_reload.clone(),
        }
    }
}

impl Ctx {
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
                Ok(None) => return added.min(self.conns.len()),
                Err(e) => {
                    let out_of_fds = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
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
                    return added.min(self.conns.len());
                }
            }
        }
        added.min(self.conns.len())
    }

    /// Re-read the config for a reload. The running generation is untouched on error.
    fn load_config(&self) -> Result<Config, String> {
        let Some(path) = &self.config_path else {
            return Ok((*self.boot_config).clone());
        };
        let cfg = Config::load(path).map_err(|e| format!("config error: {e}"))?;
        if cfg.sockets != self.boot_config.sockets {
            warn!(
                baton_event = "config_sockets_changed",
                "[sockets] changed in {}: sockets are kept for baton's lifetime; restart baton to apply",
                path.display()
            );
        }
        if cfg.control != self.boot_config.control {
            warn!(
                baton_event = "config_control_changed",
                "`control` changed in {}: the control socket moves only when baton restarts",
                path.display()
            );
        }
        Ok(cfg)
    }

    /// Create generation N and spawn its workers: all of them, or, when `paced` (another
    /// generation serves), the first `readiness.max_starting`; [`Ctx::spawn_waiting`] spawns
    /// the others as these get ready.
    fn start_generation(&mut self, config: Rc<Config>, now: Instant, paced: bool) -> Generation {
        let id = self.next_generation;
        self.next_generation += 1;
        let probe = matches!(
            config.readiness.kind,
            ReadinessKind::Http { .. } | ReadinessKind::Tcp { .. }
        );
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
                Err(e) => error!(
                    baton_event = "notify_socket_lost",
                    "the notify socket {} was gone or replaced and cannot be bound again: {e}",
                    self.notify_path.display()
                ),
            }
        }
        let recipe = Recipe::new(&config, &self.listeners, &self.notify_path, id, probe);
        let priority = match recipe.as_ref().ok().and_then(|r| r.ready_nice()) {
            Some(run) => format!(
                ", at nice {} until ready, then {run}",
                config.readiness.startup_nice
            ),
            None => String::new(),
        };
        let max_starting = if paced {
            config.max_starting()
        } else {
            usize::MAX
        };
        let pacing = if max_starting < config.instances as usize {
            format!(", at most {max_starting} starting at once")
        } else {
            String::new()
        };
        info!(
            baton_event = "generation_start",
            baton_generation = id,
            "starting generation {id}: {} x {:?} (readiness: {}{priority}{pacing})",
            config.instances,
            config.command,
            config.readiness.kind.name()
        );
        let recipe = recipe.map(Rc::new).map_err(|e| {
            let reason = format!("cannot start {:?}: {e}", config.command);
            error!(
                baton_event = "worker_spawn_failed",
                baton_generation = id,
                "{reason}"
            );
            reason
        });
        let mut gen = Generation {
            id,
            config: config.clone(),
            recipe: recipe.as_ref().ok().cloned(),
            started: now,
            phase: Phase::Starting,
            slots: (0..config.instances)
                .map(|instance| Slot {
                    instance,
                    worker: None,
                    waiting: true,
                    restarts: 0,
                    backoff: config.restart.backoff_initial,
                    restart_at: None,
                    last_exit: None,
                })
                .collect(),
            failure: None,
            max_starting,
            slowest_drain: None,
        };
        let recipe = match recipe {
            Ok(r) => r,
            Err(reason) => {
                gen.failure = Some(reason);
                return gen;
            }
        };
        self.spawn_waiting(&mut gen, &recipe, now);
        gen
    }

    /// Spawn waiting workers of a starting generation while fewer than its `max_starting` are
    /// starting, one after the other (each spawn returns once its worker has exec'd).
    fn spawn_waiting(&mut self, gen: &mut Generation, recipe: &Recipe, now: Instant) {
        if !gen.can_spawn_waiting() {
            return;
        }
        let starting = gen.workers().filter(|w| w.ready_at.is_none()).count();
        let room = gen.max_starting.saturating_sub(starting);
        // the first batch is covered by the extension the rollout began with
        let later_batch = gen.workers().next().is_some();
        let config = gen.config.clone();
        let mut spawned = false;
        for slot in gen.slots.iter_mut().filter(|s| s.waiting).take(room) {
            slot.waiting = false;
            spawned = true;
            if let Err(reason) = self.spawn_slot(&config, recipe, gen.id, slot, now) {
                gen.failure = Some(reason);
                return;
            }
        }
        if spawned && later_batch {
            // a paced reload takes longer than one readiness timeout: the worker just
            // spawned has a whole one, and systemd must wait for it
            let r = &config.readiness;
            self.manager
                .extend_timeout(r.timeout + r.stable + Duration::from_secs(5));
        }
    }

    /// Start the worker of one slot (with its probe socket and output pipes) and record it.
    fn spawn_slot(
        &mut self,
        cfg: &Config,
        recipe: &Recipe,
        gen_id: u64,
        slot: &mut Slot,
        now: Instant,
    ) -> Result<(), String> {
        let probe_socket = if recipe.wants_probe() {
            match ProbeSocket::new() {
                Ok(p) => Some(p),
                Err(e) => return Err(format!("cannot create the probe socket: {e}")),
            }
        } else {
            None
        };
        // workers' output to the journal: one pipe per stream, the pid filled in once known
        let mut pipes = Vec::new();
        let mut writers = Vec::new();
        if self.journal.is_some() {
            let identifier = std::path::Path::new(&cfg.command[0])
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "worker".into());
            for stream in [output::Stream::Stdout, output::Stream::Stderr] {
                let origin = output::Origin {
                    generation: gen_id,
                    pid: 0,
                    instance: slot.instance,
                    identifier: identifier.clone(),
                    stream,
                };
                match output::pipe(origin) {
                    Ok((p, w)) => {
                        pipes.push(p);
                        writers.push(w);
                    }
                    Err(e) => return Err(format!("cannot create an output pipe: {e}")),
                }
            }
        }
        // a worker's own start-up runs from here (its exec included) to its READY=1 as the
        // kernel received it: baton's handling before and after is baton's share
        let spawned_at = Instant::now();
        let spawned = recipe.spawn(
            &self.listeners,
            slot.instance,
            probe_socket.as_ref(),
            writers.first().map(|w| w.as_fd()),
            writers.get(1).map(|w| w.as_fd()),
        );
        drop(writers); // the child has its copies; EOF comes when it (and its tree) is done
        match spawned {
            Ok(pid) => {
                for mut p in pipes {
                    p.origin.pid = pid;
                    self.pipes.push(p);
                }
                info!(
                    baton_event = "worker_start",
                    baton_generation = gen_id,
                    baton_worker_pid = pid,
                    baton_instance = slot.instance,
                    "worker {pid} started (generation {gen_id}, instance {})",
                    slot.instance
                );
                let tracker = match &cfg.readiness.kind {
                    ReadinessKind::Http {
                        interval,
                        probe_timeout,
                        successes,
                        ..
                    }
                    | ReadinessKind::Tcp {
                        interval,
                        probe_timeout,
                        successes,
                    }
                    | ReadinessKind::Exec {
                        interval,
                        probe_timeout,
                        successes,
                        ..
                    } => Some(Tracker::new(now, *successes, *interval, *probe_timeout)),
                    ReadinessKind::Accepting { interval } => {
                        Some(Tracker::new(now, 1, *interval, *interval))
                    }
                    _ => None,
                };
                let mut watched: Vec<readiness::Watched> = self
                    .socket_inodes
                    .iter()
                    .enumerate()
                    .map(|(i, (name, inode))| readiness::Watched {
                        name: name.clone(),
                        fd: 3 + i as i32,
                        inode: *inode,
                    })
                    .collect();
                if let Some(p) = &probe_socket {
                    if let Ok(inode) = sys::inode(p.fd.as_fd()) {
                        watched.push(readiness::Watched {
                            name: worker::PROBE_FDNAME.into(),
                            fd: 3 + watched.len() as i32,
                            inode,
                        });
                    }
                }
                slot.worker = Some(Worker {
                    pid,
                    started: spawned_at,
                    ready_at: None,
                    ready_deadline: readiness::later(spawned_at, cfg.readiness.timeout),
                    stopped_at: None,
                    stop_deadline: None,
                    killed: false,
                    status: None,
                    probe_socket,
                    watched,
                    tracker,
                    ready_nice: recipe.ready_nice(),
                    startup_nice_until: readiness::later(spawned_at, cfg.readiness.timeout / 2),
                });
                Ok(())
            }
            Err(e) => Err(self.spawn_failed(cfg, gen_id, slot, e)),
        }
    }

    fn spawn_failed(
        &self,
        cfg: &Config,
        gen_id: u64,
        slot: &mut Slot,
        e: std::io::Error,
    ) -> String {
        let reason = format!(
            "instance {} could not be started: {e} (command {:?})",
            slot.instance, cfg.command
        );
        error!(
            baton_event = "worker_spawn_failed",
            baton_generation = gen_id,
            baton_instance = slot.instance,
            "{reason}"
        );
        slot.last_exit = Some(format!("spawn failed: {e}"));
        reason
    }

    fn start_probe(
        &mut self,
        kind: &ReadinessKind,
        cfg: &Config,
        gen_id: u64,
        instance: u32,
        w: &mut Worker,
        now: Instant,
    ) {
        let timeout = w
            .tracker
            .as_ref()
            .map(|t| t.probe_timeout)
            .unwrap_or(Duration::from_secs(1));
        let probe = |target| {
            readiness::start(
                target,
                w.watched.clone(),
                timeout,
                w.pid,
                self.probe_tx.clone(),
                self.waker.clone(),
            )
        };
        let result = match (kind, &w.probe_socket) {
            (ReadinessKind::Http { path, .. }, Some(p)) => p.fd.try_clone().and_then(|listener| {
                probe(readiness::Target::Http(p.addr, path.clone(), listener))
            }),
            (ReadinessKind::Tcp { .. }, Some(p)) => {
                p.fd.try_clone()
                    .and_then(|listener| probe(readiness::Target::Tcp(p.addr, listener)))
            }
            (ReadinessKind::Accepting { .. }, _) => probe(readiness::Target::Accepting),
            (ReadinessKind::Exec { argv, .. }, _) => {
                worker::spawn_exec_probe(argv, cfg.cwd.as_deref(), w.pid, gen_id, instance).map(
                    |probe_pid| {
                        self.exec_probes
                            .insert(probe_pid, (w.pid, readiness::later(now, timeout)));
                    },
                )
            }
            _ => Err(std::io::Error::other("no probe socket")),
        };
        if let Err(e) = result {
            if let Some(t) = w.tracker.as_mut() {
                t.record(now, false, format!("cannot run the check: {e}"));
            }
        }
    }

    /// Send the stop signal to one worker and arm its SIGKILL deadline.
    /// Send a worker its stop signal. `drain_nice`: another generation serves meanwhile, so
    /// the worker's process group drains and exits at this nice value, yielding the CPU to it
    /// (`None` when baton itself stops: in-flight requests finish at full speed instead).
    fn stop_worker(&mut self, w: &mut Worker, cfg: &Config, now: Instant, drain_nice: Option<i32>) {
        if w.stop_deadline.is_some() {
            return;
        }
        // a stopped worker's priority only goes down from here
        w.ready_nice = None;
        if let Some(nice) = drain_nice {
            // raising a nice value needs no privilege; a failure only leaves it where it was
            let _ = sys::renice_group(w.pid, nice);
        }
        let _ = sys::kill(w.pid, cfg.drain.signal.number());
        w.stopped_at = Some(now);
        w.stop_deadline = Some(readiness::later(now, cfg.drain.timeout));
        w.tracker = None;
    }

    /// Retire a whole generation: stop signal to every worker, SIGKILL at the drain deadline,
    /// no more restarts.
    /// `while_serving`: another generation serves meanwhile (see `stop_worker`).
    fn retire(&mut self, gen: &mut Generation, reason: &str, now: Instant, while_serving: bool) {
        if gen.retiring() {
            return;
        }
        let cfg = gen.config.clone();
        let drain_nice = gen
            .recipe
            .as_ref()
            .and_then(|r| r.drain_nice())
            .filter(|_| while_serving);
        let priority = match drain_nice {
            Some(nice) => format!(" at nice {nice}"),
            None => String::new(),
        };
        info!(
            baton_event = "generation_retire",
            baton_generation = gen.id,
            "retiring generation {} ({reason}): {} to {} worker(s){priority}, SIGKILL after {}",
            gen.id,
            cfg.drain.signal.name(),
            gen.alive(),
            fmt_duration(cfg.drain.timeout)
        );
        gen.phase = Phase::Retiring {
            reason: reason.to_string(),
        };
        let pids: Vec<Pid> = gen.workers().map(|w| w.pid).collect();
        // checks still running for these workers are moot: end them (they are reaped as
        // unknown children)
        self.exec_probes.retain(|probe, (worker, _)| {
            let moot = pids.contains(worker);
            if moot {
                let _ = sys::kill_group(*probe, libc::SIGKILL);
            }
            !moot
        });
        for slot in gen.slots.iter_mut() {
            slot.restart_at = None;
            if let Some(w) = slot.worker.as_mut() {
                self.stop_worker(w, &cfg, now, drain_nice);
            }
        }
    }

    /// Answer every client waiting for a rollout and remember the outcome.
    fn finish_reload(
        &mut self,
        waiters: Vec<Client>,
        ok: bool,
        generation: Option<u64>,
        message: String,
        took: Duration,
        timings: Option<Timings>,
    ) {
        if ok {
            self.reloads_ok += 1;
        } else {
            self.reloads_failed += 1;
        }
        let reply = ReloadReply {
            ok,
            generation,
            message,
            duration_ms: took.as_millis() as u64,
            duration_us: took.as_micros() as u64,
            slowest_start_us: timings.as_ref().map(|t| t.slowest_start.as_micros() as u64),
            app_starting_us: timings.as_ref().map(|t| t.app_starting.as_micros() as u64),
            first_spawn_us: timings.as_ref().map(|t| t.first_spawn.as_micros() as u64),
            last_spawn_us: timings.as_ref().map(|t| t.last_spawn.as_micros() as u64),
            last_ready_us: timings.as_ref().map(|t| t.last_ready.as_micros() as u64),
        };
        let now = Instant::now();
        for c in waiters {
            let out = c.reply(&reply, now);
            self.push_outgoing(out);
        }
        self.last_reload = Some(reply);
    }

    /// One line for systemd's status: serving generation, ready and draining workers.
    fn summary(&self, state: &State) -> String {
        let mut parts = Vec::new();
        for g in state.gens() {
            let what = match &g.phase {
                Phase::Serving => format!("{}/{} ready", g.ready_count(), g.slots.len()),
                Phase::Retiring { .. } => format!("{} draining", g.alive()),
                _ => format!("{}/{} starting", g.ready_count(), g.slots.len()),
            };
            parts.push(format!("gen {}: {what}", g.id));
        }
        if let Some(r) = self.last_reload.as_ref().filter(|r| !r.ok) {
            parts.push(format!("last reload failed: {}", r.message));
        }
        parts.join("; ")
    }
}

/// What a reload asked for now would wait for, if anything: the rollout in progress, or the
/// drain of the generation that is retiring (then also how long it may last at most: until
/// the last SIGKILL deadline).
fn queue_note(state: &State, now: Instant) -> Option<(String, Option<Duration>)> {
    match state {
        State::RollingOut { next, current, .. } => Some((
            format!(
                "waiting for the rollout of generation {} (next to {}) to end",
                next.id, current.id
            ),
            None,
        )),
        State::Serving {
            retiring: Some(old),
            ..
        } => {
            let left = old
                .workers()
                .filter_map(|w| w.stop_deadline)
                .max()
                .map_or(Duration::ZERO, |d| d.saturating_duration_since(now));
            let secs = Duration::from_secs(left.as_secs() + u64::from(left.subsec_nanos() > 0));
            Some((
                format!(
                    "waiting for generation {} to drain, {} left at most",
                    old.id,
                    fmt_duration(secs)
                ),
                Some(left),
            ))
        }
        _ => None,
    }
}

/// The total length of a set of time intervals, overlaps counted once.
fn union_length(mut intervals: Vec<(Instant, Instant)>) -> Duration {
    intervals.sort();
    let mut total = Duration::ZERO;
    let mut current: Option<(Instant, Instant)> = None;
    for (start, end) in intervals {
        current = match current {
            Some((s, e)) if start <= e => Some((s, e.max(end))),
            Some((s, e)) => {
                total += e.duration_since(s);
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    total + current.map_or(Duration::ZERO, |(s, e)| e.duration_since(s))
}

/// Appended to the exit of a worker killed by SIGSYS: the usual cause under systemd.
const SIGSYS_HINT: &str = " (SIGSYS: the kernel refused a system call of the app, most likely \
the unit's SystemCallFilter=; `journalctl -k` or `coredumpctl` names the call, and a drop-in \
can allow it: see \"What the units impose\" in the README)";

/// "312ms", "1.25s".
fn fmt_ms(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// "30s", "250ms", "1m30s".
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms % 1000 != 0 {
        if ms < 1000 {
            return format!("{ms}ms");
        }
        return format!("{:.1}s", d.as_secs_f64());
    }
    let s = ms / 1000;
    if s >= 60 && s % 60 == 0 {
        format!("{}m", s / 60)
    } else if s > 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::{fmt_duration, union_length};
    use std::time::{Duration, Instant};

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(Duration::from_secs(30)), "30s");
        assert_eq!(fmt_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(fmt_duration(Duration::from_secs(120)), "2m");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn overlapping_intervals_count_once() {
        let t = Instant::now();
        let ms = |a: u64, b: u64| (t + Duration::from_millis(a), t + Duration::from_millis(b));
        assert_eq!(union_length(vec![]), Duration::ZERO);
        // nested, overlapping, touching, and a gap (40..50) that does not count
        let set = vec![
            ms(30, 40),
            ms(0, 10),
            ms(5, 8),
            ms(8, 20),
            ms(20, 25),
            ms(50, 60),
        ];
        assert_eq!(union_length(set), Duration::from_millis(25 + 10 + 10));
    }
}
