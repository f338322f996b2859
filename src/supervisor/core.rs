//! The supervisor's decisions, without I/O: events and the time in, actions out.
//!
//! [`Core::handle`] takes an [`Event`] (a reload asked for, a worker spawned, exited or ready,
//! a check's result, …) with the current instant; [`Core::handle_timeout`] fires the deadlines
//! that are due. Both end with [`Core::advance`], the one place where the supervisor's
//! [`State`] changes, by small named steps (`enter_serving`, `begin_rollout`, `swap`,
//! `roll_back`, `enter_stopping`, …). What must happen in the world comes out of
//! [`Core::poll_action`]; [`Core::poll_timeout`] says when to call back. The core never reads
//! the clock, never makes a system call, and never blocks: the event loop (`driver`) does all
//! of that, and the tests drive the core with a fake clock.
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

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::generation::{Generation, Life, Phase, Timings, Verdict};
use super::plan::{Check, NicePlan};
use super::timers::{SlotId, Timer, Timers};
use super::{fmt_duration, fmt_ms};
use crate::config::Config;
use crate::control::{self, ReloadReply};
use crate::notify::Message;
use crate::sys::{ExitStatus, Pid};

/// A reload client waiting for its answer; the event loop holds its connection.
pub type ClientId = u64;

/// What happened, as the event loop tells the core.
#[derive(Debug)]
pub enum Event {
    /// SIGHUP (`None`) or `baton reload` on the control socket.
    Reload(Option<ClientId>),
    /// SIGTERM, SIGINT or SIGQUIT (its name).
    Stop(&'static str),
    /// A reload client hung up before its answer.
    ClientGone(ClientId),
    /// The answer to [`Action::LoadConfig`].
    ConfigLoaded(Result<Box<Config>, String>),
    /// The answer to [`Action::Prepare`]: the workers' recipe is built (with the priorities
    /// it could give and the release it resolved), or why not.
    Prepared {
        generation: u64,
        result: Result<Prepared, String>,
    },
    /// The answer to [`Action::Spawn`]: the worker has exec'd; `at` is just before its spawn.
    Spawned {
        slot: SlotId,
        pid: Pid,
        at: Instant,
    },
    SpawnFailed {
        slot: SlotId,
        error: String,
    },
    /// A child was reaped (a worker, an `exec` check, or an orphan).
    Exited {
        pid: Pid,
        status: ExitStatus,
    },
    /// A notification attributed to `worker` (sent by it or a descendant, `sender`), as the
    /// kernel received it at `sent`.
    Notify {
        worker: Pid,
        sender: Pid,
        message: Message,
        sent: Instant,
    },
    /// The answer to an `exec` [`Action::Probe`]: the check's process.
    ProbeStarted {
        worker: Pid,
        probe: Pid,
    },
    /// A check attempt's outcome (or why it could not run).
    ProbeResult {
        worker: Pid,
        ok: bool,
        detail: String,
    },
    /// `handover = "bind"`: a process of `worker`'s tree called listen() on baton's socket
    /// number `socket` (in baton's list), which baton had handed it through its bind().
    Listened {
        worker: Pid,
        socket: usize,
    },
    /// `handover = "bind"`: a bind() of a process of `worker`'s tree was answered with baton's
    /// socket number `socket`. Once every socket was handed and not all were listened on, a
    /// `listen` worker is looked at in /proc (an app may skip listen() on a socket that
    /// already listens).
    Bound {
        worker: Pid,
        socket: usize,
    },
    /// `handover = "bind"`: a bind() of a process of `worker`'s tree asked for `address` (a
    /// TCP address with a port, or a unix path, as a log line shows it), which is none of
    /// baton's sockets, and ran untouched. The last one is named when a `listen` worker whose
    /// binds got no socket is not ready in time.
    BoundOther {
        worker: Pid,
        address: String,
    },
}

/// What the event loop built for a generation once, at its start ([`Event::Prepared`]).
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    pub nice: NicePlan,
    /// The release its workers run from, resolved once (`crate::release`): every worker of
    /// the generation, restarts included, runs it.
    pub release: String,
    /// The argv its workers run, its paths resolved.
    pub command: Vec<String>,
}

/// What the event loop must do.
#[derive(Debug)]
pub enum Action {
    /// Read the config file again; answer with [`Event::ConfigLoaded`].
    LoadConfig,
    /// Build the recipe of a generation's workers; answer with [`Event::Prepared`].
    Prepare {
        generation: u64,
        config: Rc<Config>,
        probe_socket: bool,
    },
    /// Start one worker; answer with [`Event::Spawned`] or [`Event::SpawnFailed`].
    Spawn {
        slot: SlotId,
    },
    /// Run one check attempt for a starting worker (an `exec` one answers with
    /// [`Event::ProbeStarted`], every kind eventually with [`Event::ProbeResult`]).
    Probe {
        slot: SlotId,
        worker: Pid,
        check: Check,
        timeout: Duration,
    },
    /// The worker is ready: its probe socket is no longer needed.
    Ready {
        worker: Pid,
    },
    /// Give a worker's process group a nice value; `warn`: say so if it fails.
    Renice {
        pid: Pid,
        nice: i32,
        warn: bool,
    },
    Signal {
        pid: Pid,
        signal: i32,
    },
    KillGroup {
        pid: Pid,
    },
    /// A generation is gone: its recipe can go.
    Release {
        generation: u64,
    },
    Systemd(Systemd),
    Progress {
        client: ClientId,
        text: String,
    },
    Reply {
        client: ClientId,
        reply: ReloadReply,
    },
    Log(LogEvent),
    /// A fact for the history ([`crate::history`]), which the event loop keeps and persists.
    Record(Fact),
}

/// What the history records of a generation, with the instants the core saw: the event loop
/// turns them into wall-clock times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    /// It began to serve (its swap; for the first generation, its readiness).
    Served {
        generation: u64,
        started: Instant,
        at: Instant,
    },
    /// It failed before it served.
    Failed {
        generation: u64,
        started: Instant,
        at: Instant,
        reason: String,
    },
    /// Its last worker is gone: it was replaced or failed (`stopped` false), or baton stopped.
    Ended {
        generation: u64,
        at: Instant,
        reason: String,
        stopped: bool,
    },
}

/// A notification to baton's own service manager.
#[derive(Debug, PartialEq)]
pub enum Systemd {
    Ready(String),
    Reloading(String),
    Status(String),
    Stopping(String),
    ExtendTimeout(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// One log line with its journal fields.
#[derive(Debug)]
pub struct LogEvent {
    pub level: Level,
    pub event: &'static str,
    pub generation: Option<u64>,
    pub worker: Option<Pid>,
    pub instance: Option<u32>,
    pub drain_ms: Option<u64>,
    /// The release of `generation` (`BATON_RELEASE`), filled in by [`Out::push`] for every
    /// event of a generation whose release is known.
    pub release: Option<Rc<str>>,
    pub message: String,
}

/// The supervisor's states. Generations live inside the state that owns them.
#[derive(Debug)]
pub enum State {
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
        waiters: Vec<ClientId>,
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
    pub fn name(&self) -> &'static str {
        match self {
            State::Booting { .. } => "booting",
            State::Serving { .. } => "serving",
            State::RollingOut { .. } => "rolling-out",
            State::Stopping { .. } => "stopping",
            State::Done { .. } => "done",
        }
    }

    pub fn gens(&self) -> Vec<&Generation> {
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

    pub fn gens_mut(&mut self) -> Vec<&mut Generation> {
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

    pub fn gen_mut(&mut self, id: u64) -> Option<&mut Generation> {
        self.gens_mut().into_iter().find(|g| g.id == id)
    }
}

/// What `baton status` shows that the core does not decide: baton's pid, config and sockets.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub pid: i32,
    pub config: Option<String>,
    pub sockets: Vec<control::SocketStatus>,
}

/// What the steps produce: actions, deadlines, and the `exec` checks they started. Kept apart
/// from the state so that a step can change a generation and record its effects at once.
#[derive(Default)]
pub struct Out {
    pub(super) timers: Timers,
    pub(super) actions: VecDeque<Action>,
    /// `exec` checks running: check pid -> worker pid.
    pub(super) exec_probes: HashMap<Pid, Pid>,
    /// Each live generation's release, once prepared: every log event of the generation
    /// carries it; it goes with the generation's [`Action::Release`].
    pub(super) releases: HashMap<u64, Rc<str>>,
}

pub struct Core {
    pub(super) state: State,
    pub(super) out: Out,
    /// A reload was asked for and has not started yet (coalesces every request until it does).
    pub(super) pending_reload: Option<Vec<ClientId>>,
    /// The clients of a reload whose config is being read.
    pub(super) loading: Option<Vec<ClientId>>,
    pub(super) next_generation: u64,
    pub(super) reloads_ok: u64,
    pub(super) reloads_failed: u64,
    pub(super) last_reload: Option<ReloadReply>,
    /// The STATUS= last sent to systemd.
    pub(super) last_status: String,
    /// baton runs under systemd (STATUS= lines are worth computing).
    pub(super) systemd: bool,
    pub(super) started: Instant,
    pub(super) identity: Identity,
}

impl Core {
    /// Start the first generation with `config`, numbered `first` (1, or one past the last
    /// generation in the history: numbers go on across runs of baton, so a number names one
    /// generation in the history and in the journal).
    pub fn new(
        config: Config,
        identity: Identity,
        systemd: bool,
        first: u64,
        now: Instant,
    ) -> Core {
        let config = Rc::new(config);
        let mut core = Core {
            state: State::Done { exit_code: 0 },
            out: Out::default(),
            pending_reload: None,
            loading: None,
            next_generation: first.max(1),
            reloads_ok: 0,
            reloads_failed: 0,
            last_reload: None,
            last_status: String::new(),
            systemd,
            started: now,
            identity,
        };
        core.out.systemd(Systemd::ExtendTimeout(
            config.readiness.timeout + Duration::from_secs(5),
        ));
        let gen = core.new_generation(config, now, false);
        core.state = State::Booting { gen };
        core
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.actions.pop_front()
    }

    /// When [`Core::handle_timeout`] is due next; `None`: only an event can change anything.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.out.timers.next()
    }

    /// baton's exit code, once every worker is gone.
    pub fn finished(&self) -> Option<i32> {
        match self.state {
            State::Done { exit_code } => Some(exit_code),
            _ => None,
        }
    }

    /// The pids of every worker process (for attributing notifications).
    pub fn worker_pids(&self) -> Vec<Pid> {
        let gens = self.state.gens();
        gens.iter()
            .flat_map(|g| g.procs().map(|p| p.pid).collect::<Vec<_>>())
            .collect()
    }

    pub fn handle(&mut self, now: Instant, event: Event) {
        match event {
            Event::Reload(client) => self.request_reload(client, now),
            Event::Stop(why) => self.enter_stopping(why, now),
            Event::ClientGone(id) => self.client_gone(id),
            Event::ConfigLoaded(result) => self.config_loaded(result, now),
            Event::Prepared { generation, result } => self.prepared(generation, result),
            Event::Spawned { slot, pid, at } => self.spawned(slot, pid, at, now),
            Event::SpawnFailed { slot, error } => self.spawn_failed(slot, &error, now),
            Event::Exited { pid, status } => self.exited(pid, status, now),
            Event::Notify {
                worker,
                sender,
                message,
                sent,
            } => self.notified(worker, sender, &message, sent, now),
            Event::ProbeStarted { worker, probe } => self.probe_started(worker, probe, now),
            Event::ProbeResult { worker, ok, detail } => self.probe_result(worker, ok, detail, now),
            Event::Listened { worker, socket } => self.listened(worker, socket, now),
            Event::Bound { worker, socket } => self.bound(worker, socket, now),
            Event::BoundOther { worker, address } => self.bound_other(worker, address),
        }
        self.settle(now);
    }

    /// Fire every deadline that is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in self.out.timers.expired(now) {
            match timer {
                Timer::Ready(slot) => self.readiness_timeout(slot, now),
                Timer::StartupNice(slot) => self.startup_nice_ended(slot),
                Timer::Delay(slot) => self.delay_passed(slot, now),
                Timer::Probe(slot) => self.probe_due(slot, now),
                Timer::Restart(slot) => self.restart(slot, now),
                Timer::Kill(slot) => self.kill_at_deadline(slot),
                Timer::ExecProbe(probe) => self.exec_probe_overdue(probe),
                // re-evaluated by `advance` and `publish_status` below
                Timer::Settle(_) | Timer::StatusTick => {}
            }
        }
        self.settle(now);
    }

    /// After every event: the transitions the facts allow, spawns of waiting workers the
    /// transitions made room for, and the STATUS= line.
    fn settle(&mut self, now: Instant) {
        loop {
            self.advance(now);
            if !self.spawn_waiting_all() {
                break;
            }
        }
        self.publish_status(now);
    }

    // --------------------------------------------------------------------------------------
    // transitions

    /// Apply every transition that the recorded facts allow. The only place `state` changes
    /// (besides `enter_stopping`, which an event asks for directly).
    pub(super) fn advance(&mut self, now: Instant) {
        loop {
            let state = std::mem::replace(&mut self.state, State::Done { exit_code: 0 });
            let (next, changed) = self.transition(state, now);
            self.state = next;
            if !changed {
                break;
            }
        }
    }

    /// One step from `state`, and whether anything changed.
    fn transition(&mut self, state: State, now: Instant) -> (State, bool) {
        match state {
            State::Booting { mut gen } => match gen.verdict(now) {
                Verdict::Pending => (self.settling(State::Booting { gen }), false),
                Verdict::Ready => (self.enter_serving(gen, now), true),
                Verdict::Failed(reason) => (self.boot_failed(gen, &reason, now), true),
            },
            State::Serving {
                current,
                retiring: Some(old),
            } if old.alive() == 0 => (self.generation_gone(current, old, now), true),
            State::Serving {
                current,
                retiring: None,
            } if self.pending_reload.is_some() && self.loading.is_none() => {
                self.loading = self.pending_reload.take();
                self.out.push(Action::LoadConfig);
                (
                    State::Serving {
                        current,
                        retiring: None,
                    },
                    false,
                )
            }
            State::RollingOut {
                current,
                mut next,
                waiters,
                started,
            } => match next.verdict(now) {
                Verdict::Pending => {
                    let st = State::RollingOut {
                        current,
                        next,
                        waiters,
                        started,
                    };
                    (self.settling(st), false)
                }
                Verdict::Ready => (self.swap(current, next, waiters, started, now), true),
                Verdict::Failed(reason) => (
                    self.roll_back(current, next, waiters, started, &reason, now),
                    true,
                ),
            },
            State::Stopping { gens, exit_code } if gens.iter().all(|g| g.alive() == 0) => {
                for g in &gens {
                    self.out.push(Action::Record(Fact::Ended {
                        generation: g.id,
                        at: now,
                        reason: "baton stopped".into(),
                        stopped: true,
                    }));
                    self.out.push(Action::Release { generation: g.id });
                }
                (State::Done { exit_code }, true)
            }
            other => (other, false),
        }
    }

    /// A generation whose workers are all ready waits `readiness.stable`: arm its deadline.
    fn settling(&mut self, state: State) -> State {
        if let State::Booting { gen: g } | State::RollingOut { next: g, .. } = &state {
            if let Phase::Settling { until } = g.phase {
                self.out.timers.set(Timer::Settle(g.id), until);
            }
        }
        state
    }

    /// The first generation is ready: tell systemd READY=1.
    fn enter_serving(&mut self, mut gen: Generation, now: Instant) -> State {
        gen.phase = Phase::Serving;
        self.out.push(Action::Record(Fact::Served {
            generation: gen.id,
            started: gen.started,
            at: now,
        }));
        self.out.timers.clear(Timer::Settle(gen.id));
        self.out.log_with(
            Level::Info,
            "generation_serving",
            Some(gen.id),
            None,
            None,
            format!(
                "generation {} ready: release {}, {} worker(s) serving after {} ms",
                gen.id,
                gen.release_name(),
                gen.slots.len(),
                now.duration_since(gen.started).as_millis()
            ),
        );
        let st = State::Serving {
            current: gen,
            retiring: None,
        };
        let summary = self.summary(&st);
        self.out.systemd(Systemd::Ready(summary));
        st
    }

    /// The first generation failed: baton stops, with exit code 1.
    fn boot_failed(&mut self, mut gen: Generation, reason: &str, now: Instant) -> State {
        self.out.log_with(
            Level::Error,
            "generation_failed",
            Some(gen.id),
            None,
            None,
            format!("generation {} failed to start: {reason}", gen.id),
        );
        self.out.push(Action::Record(Fact::Failed {
            generation: gen.id,
            started: gen.started,
            at: now,
            reason: reason.to_string(),
        }));
        self.out
            .systemd(Systemd::Stopping(format!("failed to start: {reason}")));
        self.out.retire(&mut gen, reason, now, false);
        // reloads asked for while it started are answered now, not when baton has exited
        let mut waiters = self.pending_reload.take().unwrap_or_default();
        waiters.extend(self.loading.take().unwrap_or_default());
        if !waiters.is_empty() {
            let msg = format!("baton is stopping: generation {} failed to start", gen.id);
            let reply = self.reload_reply(false, None, msg, Duration::ZERO, None);
            self.finish_reload(waiters, reply);
        }
        State::Stopping {
            gens: vec![gen],
            exit_code: 1,
        }
    }

    /// The retiring generation's last worker is gone.
    fn generation_gone(&mut self, current: Generation, old: Generation, now: Instant) -> State {
        let slowest = match old.slowest_drain {
            Some(d) => format!(" (slowest drain {})", fmt_ms(d)),
            None => String::new(),
        };
        self.out.log_with(
            Level::Info,
            "generation_gone",
            Some(old.id),
            None,
            None,
            format!("generation {} has exited{slowest}", old.id),
        );
        self.out.timers.clear_generation(old.id);
        let reason = match &old.phase {
            Phase::Retiring { reason } => reason.clone(),
            _ => "gone".into(),
        };
        self.out.push(Action::Record(Fact::Ended {
            generation: old.id,
            at: now,
            reason,
            stopped: false,
        }));
        self.out.push(Action::Release { generation: old.id });
        let st = State::Serving {
            current,
            retiring: None,
        };
        let summary = self.summary(&st);
        self.out.systemd(Systemd::Status(summary));
        st
    }

    /// The config of a reload was read: start the next generation, or reject the reload.
    fn config_loaded(&mut self, result: Result<Box<Config>, String>, now: Instant) {
        let waiters = self.loading.take().unwrap_or_default();
        let state = std::mem::replace(&mut self.state, State::Done { exit_code: 0 });
        self.state = match (state, result) {
            (
                State::Serving {
                    current,
                    retiring: None,
                },
                Ok(config),
            ) => self.begin_rollout(current, Rc::new(*config), waiters, now),
            (
                State::Serving {
                    current,
                    retiring: None,
                },
                Err(msg),
            ) => self.reject_reload(current, waiters, msg),
            (other, _) => {
                // the answer came when no reload could begin (baton stopping answered its
                // clients already): any client left waits for the next one
                if !waiters.is_empty() {
                    self.pending_reload
                        .get_or_insert_with(Vec::new)
                        .extend(waiters);
                }
                other
            }
        };
    }

    /// A reload whose config is wrong: the serving generation is untouched.
    fn reject_reload(&mut self, current: Generation, waiters: Vec<ClientId>, msg: String) -> State {
        self.out.log(
            Level::Warn,
            "reload_rejected",
            format!("reload rejected: {msg}"),
        );
        // a reload systemd asked for (Type=notify-reload) still gets its RELOADING=1 …
        // READY=1 pair, with the reason in STATUS=
        self.out
            .systemd(Systemd::Reloading("reloading: reading the config".into()));
        let reply = self.reload_reply(false, Some(current.id), msg, Duration::ZERO, None);
        self.finish_reload(waiters, reply);
        let st = State::Serving {
            current,
            retiring: None,
        };
        let summary = self.summary(&st);
        self.out.systemd(Systemd::Ready(summary));
        st
    }

    /// Start generation N+1 next to N, which keeps serving.
    fn begin_rollout(
        &mut self,
        current: Generation,
        config: Rc<Config>,
        waiters: Vec<ClientId>,
        now: Instant,
    ) -> State {
        self.out.systemd(Systemd::Reloading(format!(
            "reloading: starting generation {} next to {}",
            self.next_generation, current.id
        )));
        let r = &config.readiness;
        self.out.systemd(Systemd::ExtendTimeout(
            r.timeout + r.stable + Duration::from_secs(5),
        ));
        let next = self.new_generation(config, now, true);
        State::RollingOut {
            current,
            next,
            waiters,
            started: now,
        }
    }

    /// The swap: the new generation is ready, so (and only now) the old one drains.
    fn swap(
        &mut self,
        mut current: Generation,
        mut next: Generation,
        waiters: Vec<ClientId>,
        started: Instant,
        now: Instant,
    ) -> State {
        next.phase = Phase::Serving;
        self.out.timers.clear(Timer::Settle(next.id));
        self.out.push(Action::Record(Fact::Served {
            generation: next.id,
            started: next.started,
            at: now,
        }));
        let msg = format!(
            "generation {} serving release {} ({} worker(s) ready in {} ms); generation {} \
             draining",
            next.id,
            next.release_name(),
            next.slots.len(),
            now.duration_since(next.started).as_millis(),
            current.id
        );
        self.out.log_with(
            Level::Info,
            "reload_done",
            Some(next.id),
            None,
            None,
            msg.clone(),
        );
        let reason = format!("replaced by generation {}", next.id);
        self.out.retire(&mut current, &reason, now, true);
        let timings = next.timings(started);
        let took = now.duration_since(started);
        let reply = self.reload_reply(true, Some(next.id), msg, took, timings);
        self.finish_reload(waiters, reply);
        let st = State::Serving {
            current: next,
            retiring: Some(current),
        };
        let summary = self.summary(&st);
        self.out.systemd(Systemd::Ready(summary));
        st
    }

    /// The new generation failed before it was ready: it is retired, the current one is not
    /// touched.
    fn roll_back(
        &mut self,
        current: Generation,
        mut next: Generation,
        waiters: Vec<ClientId>,
        started: Instant,
        reason: &str,
        now: Instant,
    ) -> State {
        let tried = match &next.release {
            Some(r) => format!(" (release {r})"),
            None => String::new(),
        };
        let msg = format!(
            "generation {}{tried} rolled back: {reason}; generation {} still serving release {}",
            next.id,
            current.id,
            current.release_name()
        );
        self.out.log_with(
            Level::Error,
            "reload_failed",
            Some(next.id),
            None,
            None,
            msg.clone(),
        );
        self.out.timers.clear(Timer::Settle(next.id));
        self.out.push(Action::Record(Fact::Failed {
            generation: next.id,
            started: next.started,
            at: now,
            reason: reason.to_string(),
        }));
        self.out.retire(&mut next, reason, now, true);
        let took = now.duration_since(started);
        let reply = self.reload_reply(false, Some(current.id), msg.clone(), took, None);
        self.finish_reload(waiters, reply);
        let st = State::Serving {
            current,
            retiring: Some(next),
        };
        let summary = self.summary(&st);
        self.out.systemd(Systemd::Ready(format!(
            "{summary}; last reload failed: {msg}"
        )));
        st
    }

    /// SIGTERM / SIGINT: drain everything and exit.
    pub(super) fn enter_stopping(&mut self, why: &str, now: Instant) {
        let state = std::mem::replace(&mut self.state, State::Done { exit_code: 0 });
        let (mut gens, waiters) = match state {
            State::Stopping { .. } | State::Done { .. } => {
                self.state = state;
                return;
            }
            State::Booting { gen } => (vec![gen], vec![]),
            State::Serving { current, retiring } => {
                let mut v = vec![current];
                v.extend(retiring);
                (v, vec![])
            }
            State::RollingOut {
                current,
                next,
                waiters,
                ..
            } => (vec![current, next], waiters),
        };
        self.out.log(
            Level::Info,
            "stopping",
            format!("{why}: draining every worker"),
        );
        self.out
            .systemd(Systemd::Stopping(format!("stopping ({why})")));
        let drain = gens.iter().map(|g| g.config.drain.timeout).max();
        self.out.systemd(Systemd::ExtendTimeout(
            drain.unwrap_or_default() + Duration::from_secs(5),
        ));
        for g in gens.iter_mut() {
            self.out.timers.clear(Timer::Settle(g.id));
            self.out.retire(g, "baton is stopping", now, false);
        }
        let mut all = waiters;
        all.extend(self.pending_reload.take().unwrap_or_default());
        all.extend(self.loading.take().unwrap_or_default());
        if !all.is_empty() {
            let reply = self.reload_reply(
                false,
                None,
                "baton is stopping".into(),
                Duration::ZERO,
                None,
            );
            self.finish_reload(all, reply);
        }
        self.state = State::Stopping { gens, exit_code: 0 };
    }

    // --------------------------------------------------------------------------------------
    // reloads

    fn request_reload(&mut self, client: Option<ClientId>, now: Instant) {
        if let State::Stopping { .. } | State::Done { .. } = self.state {
            if let Some(c) = client {
                let reply = self.reload_reply(
                    false,
                    None,
                    "baton is stopping".into(),
                    Duration::ZERO,
                    None,
                );
                self.finish_reload(vec![c], reply);
            }
            return;
        }
        let queued = self.queue_note(now);
        let pending = self.pending_reload.get_or_insert_with(Vec::new);
        if client.is_some() && pending.len() >= control::MAX_CONNS {
            // bounded: the client that waited longest is told, and makes room
            let oldest = pending.remove(0);
            let message = format!(
                "more than {} clients wait for this reload; it goes on (`baton status` shows it)",
                control::MAX_CONNS
            );
            let reply = self.reload_reply(false, None, message, Duration::ZERO, None);
            self.out.push(Action::Reply {
                client: oldest,
                reply,
            });
        }
        if let (Some(c), Some((note, _))) = (client, &queued) {
            self.out.push(Action::Progress {
                client: c,
                text: format!("reload queued: {note}"),
            });
        }
        self.pending_reload
            .get_or_insert_with(Vec::new)
            .extend(client);
        if let Some((note, draining)) = queued {
            self.reload_queued(note, draining);
        }
    }

    /// Whether a reload was asked for and has not begun yet (it waits for a rollout or a drain,
    /// or its config is being read).
    pub fn reload_waiting(&self) -> bool {
        self.pending_reload.is_some() || self.loading.is_some()
    }

    /// A reload waits for a rollout or a drain: say so, and extend systemd's timeout for what
    /// it waits for and a rollout after it (a drain still to come after that rollout extends
    /// it again when it starts).
    fn reload_queued(&mut self, note: String, draining: Option<Duration>) {
        self.out.log(
            Level::Info,
            "reload_queued",
            format!("reload queued: {note}; it starts when that has ended"),
        );
        let gens = self.state.gens();
        let Some(cfg) = gens.first().map(|g| g.config.clone()) else {
            return;
        };
        let wait = draining.unwrap_or(cfg.drain.timeout);
        self.out.systemd(Systemd::ExtendTimeout(
            wait.saturating_add(cfg.readiness.timeout)
                .saturating_add(cfg.readiness.stable)
                .saturating_add(Duration::from_secs(5)),
        ));
    }

    fn client_gone(&mut self, id: ClientId) {
        let lists = [&mut self.pending_reload, &mut self.loading];
        for list in lists.into_iter().flatten() {
            list.retain(|c| *c != id);
        }
        if let State::RollingOut { waiters, .. } = &mut self.state {
            waiters.retain(|c| *c != id);
        }
    }

    pub(super) fn reload_reply(
        &self,
        ok: bool,
        generation: Option<u64>,
        message: String,
        took: Duration,
        timings: Option<Timings>,
    ) -> ReloadReply {
        let us = |d: Duration| d.as_micros() as u64;
        ReloadReply {
            ok,
            generation,
            release: generation
                .and_then(|g| self.out.releases.get(&g))
                .map(|r| r.to_string()),
            message,
            duration_ms: took.as_millis() as u64,
            duration_us: us(took),
            slowest_start_us: timings.as_ref().map(|t| us(t.slowest_start)),
            app_starting_us: timings.as_ref().map(|t| us(t.app_starting)),
            first_spawn_us: timings.as_ref().map(|t| us(t.first_spawn)),
            last_spawn_us: timings.as_ref().map(|t| us(t.last_spawn)),
            last_ready_us: timings.as_ref().map(|t| us(t.last_ready)),
        }
    }

    /// Answer every client waiting for a rollout and remember the outcome.
    pub(super) fn finish_reload(&mut self, waiters: Vec<ClientId>, reply: ReloadReply) {
        if reply.ok {
            self.reloads_ok += 1;
        } else {
            self.reloads_failed += 1;
        }
        for client in waiters {
            self.out.push(Action::Reply {
                client,
                reply: reply.clone(),
            });
        }
        self.last_reload = Some(reply);
    }

    // --------------------------------------------------------------------------------------
    // generations

    /// Create generation N; the event loop builds its recipe ([`Action::Prepare`]), then its
    /// workers are spawned: all of them, or, when `paced` (another generation serves), the
    /// first `readiness.max_starting`, the others as these get ready.
    fn new_generation(&mut self, config: Rc<Config>, now: Instant, paced: bool) -> Generation {
        let id = self.next_generation;
        self.next_generation += 1;
        let max_starting = if paced {
            config.max_starting()
        } else {
            usize::MAX
        };
        let gen = Generation::new(
            id,
            config.clone(),
            now,
            max_starting,
            &self.identity.sockets,
        );
        self.out.push(Action::Prepare {
            generation: id,
            config,
            probe_socket: gen.readiness.wants_probe_socket(),
        });
        gen
    }

    /// The recipe of a generation is built (or not): it starts.
    fn prepared(&mut self, id: u64, result: Result<Prepared, String>) {
        let Some(gen) = self.state.gen_mut(id) else {
            return;
        };
        if gen.phase != Phase::Preparing {
            return;
        }
        let config = gen.config.clone();
        let priority = result
            .as_ref()
            .map(|p| p.nice.describe())
            .unwrap_or_default();
        let pacing = if gen.max_starting < config.instances as usize {
            format!(", at most {} starting at once", gen.max_starting)
        } else {
            String::new()
        };
        let message = |command: &[String], release: &str| {
            format!(
                "starting generation {id}: {} x {command:?}{release} (readiness: {}{priority}{pacing})",
                config.instances,
                config.readiness.kind.name()
            )
        };
        match result {
            Ok(p) => {
                let release: Rc<str> = p.release.into();
                let message = message(&p.command, &format!(" from release {release}"));
                gen.nice = p.nice;
                gen.release = Some(release.clone());
                self.out.releases.insert(id, release);
                gen.phase = Phase::Starting;
                self.out.log_with(
                    Level::Info,
                    "generation_start",
                    Some(id),
                    None,
                    None,
                    message,
                );
            }
            Err(e) => {
                let reason = format!("cannot start {:?}: {e}", config.command);
                let message = message(&config.command, "");
                gen.phase = Phase::Starting;
                gen.failure = Some(reason.clone());
                self.out.log_with(
                    Level::Info,
                    "generation_start",
                    Some(id),
                    None,
                    None,
                    message,
                );
                self.out.log_with(
                    Level::Error,
                    "worker_spawn_failed",
                    Some(id),
                    None,
                    None,
                    reason,
                );
            }
        }
    }

    /// Spawn the next waiting worker of any starting generation that has room; true if one
    /// was asked for (its outcome, an event, may make room for the next).
    fn spawn_waiting_all(&mut self) -> bool {
        let mut asked = false;
        let mut extend = None;
        for gen in self.state.gens_mut() {
            if !gen.can_spawn_waiting() {
                continue;
            }
            // the first batch is covered by the extension the rollout began with; a later one
            // starts in a place a ready worker left
            let later_batch = gen.ready_count() > 0;
            let Some(slot) = gen
                .slots
                .iter_mut()
                .find(|s| matches!(s.life, Life::Waiting))
            else {
                continue;
            };
            slot.life = Life::Spawning;
            let id = SlotId {
                generation: gen.id,
                instance: slot.instance,
            };
            self.out.actions.push_back(Action::Spawn { slot: id });
            asked = true;
            if later_batch {
                // a paced reload takes longer than one readiness timeout: the worker just
                // spawned has a whole one, and systemd must wait for it
                let r = &gen.config.readiness;
                extend = Some(r.timeout + r.stable + Duration::from_secs(5));
            }
        }
        if let Some(d) = extend {
            self.out.systemd(Systemd::ExtendTimeout(d));
        }
        asked
    }
}

impl Out {
    /// Queue an action. A generation's log event gets its release here (`BATON_RELEASE`),
    /// and a generation's release is forgotten with its [`Action::Release`].
    pub(super) fn push(&mut self, mut action: Action) {
        match &mut action {
            Action::Log(e) => {
                if let Some(g) = e.generation {
                    e.release = self.releases.get(&g).cloned();
                }
            }
            Action::Release { generation } => {
                self.releases.remove(generation);
            }
            _ => {}
        }
        self.actions.push_back(action);
    }

    pub(super) fn systemd(&mut self, msg: Systemd) {
        self.push(Action::Systemd(msg));
    }

    pub(super) fn log(&mut self, level: Level, event: &'static str, message: String) {
        self.log_with(level, event, None, None, None, message);
    }

    pub(super) fn log_with(
        &mut self,
        level: Level,
        event: &'static str,
        generation: Option<u64>,
        worker: Option<Pid>,
        instance: Option<u32>,
        message: String,
    ) {
        self.push(Action::Log(LogEvent {
            level,
            event,
            generation,
            worker,
            instance,
            drain_ms: None,
            release: None,
            message,
        }));
    }

    /// Retire a whole generation: stop signal to every worker, SIGKILL at the drain deadline,
    /// no more restarts. `while_serving`: another generation serves meanwhile, so its workers
    /// drain at the drain nice.
    pub(super) fn retire(
        &mut self,
        gen: &mut Generation,
        reason: &str,
        now: Instant,
        while_serving: bool,
    ) {
        if gen.retiring() {
            return;
        }
        let cfg = gen.config.clone();
        let drain_nice = gen.nice.drain.filter(|_| while_serving);
        let priority = match drain_nice {
            Some(nice) => format!(" at nice {nice}"),
            None => String::new(),
        };
        self.log_with(
            Level::Info,
            "generation_retire",
            Some(gen.id),
            None,
            None,
            format!(
                "retiring generation {} ({reason}): {} to {} worker(s){priority}, SIGKILL after {}",
                gen.id,
                cfg.drain.signal.name(),
                gen.alive(),
                fmt_duration(cfg.drain.timeout)
            ),
        );
        gen.phase = Phase::Retiring {
            reason: reason.to_string(),
        };
        self.end_checks_of(gen);
        for i in 0..gen.slots.len() {
            let slot = gen.slot_id(gen.slots[i].instance);
            if matches!(gen.slots[i].life, Life::BackingOff { .. }) {
                gen.slots[i].life = Life::Exited;
                self.timers.clear(Timer::Restart(slot));
            }
            self.stop_worker(gen, i, now, drain_nice);
        }
    }

    /// `exec` checks still running for a generation's workers are moot: end them (they are
    /// reaped as unknown children).
    fn end_checks_of(&mut self, gen: &Generation) {
        let pids: Vec<Pid> = gen.procs().map(|p| p.pid).collect();
        let moot: Vec<Pid> = self
            .exec_probes
            .iter()
            .filter(|(_, w)| pids.contains(w))
            .map(|(probe, _)| *probe)
            .collect();
        for probe in moot {
            self.exec_probes.remove(&probe);
            self.timers.clear(Timer::ExecProbe(probe));
            self.push(Action::KillGroup { pid: probe });
        }
    }
}
