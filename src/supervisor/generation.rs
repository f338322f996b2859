//! A generation and its workers, as the core sees them: data and the questions asked of it
//! (how many are alive, ready, starting; is the generation ready, pending or failed). Every
//! change of a worker's [`Life`] is made by the core's named steps (`core::worker`); this
//! module only answers.

use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::plan::{Backoff, NicePlan, Readiness};
use super::timers::SlotId;
use super::{fmt_duration, union_length};
use crate::config::Config;
use crate::control::SocketStatus;
use crate::readiness::Tracker;
use crate::sys::Pid;

/// Sockets as a reason names them: each one's name and address, without its type
/// (``` `http` 0.0.0.0:3000 ```, from `stream 0.0.0.0:3000`).
fn describe_sockets(sockets: &[SocketStatus]) -> String {
    let one = |s: &SocketStatus| {
        let address = s.address.split_once(' ').map_or(&*s.address, |(_, a)| a);
        format!("`{}` {address}", s.name)
    };
    sockets.iter().map(one).collect::<Vec<_>>().join(", ")
}

/// A worker process that baton started and has not reaped yet.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: Pid,
    /// Just before its spawn.
    pub started: Instant,
    /// When it became ready, if it did.
    pub ready_at: Option<Instant>,
    /// The last `STATUS=` it sent.
    pub status: Option<String>,
}

/// One worker place's lifecycle.
///
/// ```text
///  Waiting ─▶ Spawning ─▶ Starting ─▶ Ready ─▶ Draining ─▶ Exited
///                │           │          │                    ▲
///                └───────────┴──────────┴── (exit) ──────────┤ (a generation that is not
///                                                            │  serving: it fails or drains)
///                                       BackingOff ◀─────────┘ (the serving generation:
///                                           └──▶ Spawning        restart after a backoff)
/// ```
#[derive(Debug)]
pub enum Life {
    /// Not spawned yet: waits for a place among its generation's `max_starting`.
    Waiting,
    /// The event loop was asked to spawn it; the outcome comes next.
    Spawning,
    /// Spawned, not ready yet.
    Starting(Proc, Starting),
    /// Passed its readiness check.
    Ready(Proc),
    /// Sent its stop signal; its process group is SIGKILLed at `deadline`.
    Draining(Proc, Drain),
    /// Crashed while its generation serves: restarted at `until`.
    BackingOff { until: Instant },
    /// Gone for good (or never started).
    Exited,
}

#[derive(Debug)]
pub struct Starting {
    /// `readiness.timeout` from its spawn.
    pub deadline: Instant,
    /// Half its readiness timeout: it continues at its running priority from then on.
    pub nice_until: Instant,
    /// The nice value it still has to get once ready (it started at the startup nice).
    pub running_nice: Option<i32>,
    /// The periodic check's bookkeeping (http, tcp, exec, accepting; for `listen`, the look
    /// in /proc, from the moment every socket was handed to it).
    pub tracker: Option<Tracker>,
    /// The sockets (index in baton's list) its tree called listen() on, each handed to it
    /// through its bind() (`handover = "bind"`).
    pub listened: BTreeSet<usize>,
    /// The sockets a bind of its tree was handed (`handover = "bind"`).
    pub bound: BTreeSet<usize>,
    /// The last address a bind of its tree asked for that is none of baton's sockets
    /// (`handover = "bind"`: a TCP address with a port, or a unix path).
    pub other_bind: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct Drain {
    /// When the stop signal was sent.
    pub since: Instant,
    pub deadline: Instant,
    /// SIGKILL was sent at the deadline.
    pub killed: bool,
}

impl Life {
    /// The process, if one is running.
    pub fn proc(&self) -> Option<&Proc> {
        match self {
            Life::Starting(p, _) | Life::Ready(p) | Life::Draining(p, _) => Some(p),
            _ => None,
        }
    }

    pub fn proc_mut(&mut self) -> Option<&mut Proc> {
        match self {
            Life::Starting(p, _) | Life::Ready(p) | Life::Draining(p, _) => Some(p),
            _ => None,
        }
    }

    /// Counts against `max_starting`: spawned (or being spawned) and not ready.
    pub fn starting(&self) -> bool {
        matches!(self, Life::Spawning | Life::Starting(..))
    }

    /// A process exists (or is being created).
    pub fn alive(&self) -> bool {
        matches!(
            self,
            Life::Spawning | Life::Starting(..) | Life::Ready(_) | Life::Draining(..)
        )
    }
}

/// One instance position of a generation; its worker may be restarted.
#[derive(Debug)]
pub struct Slot {
    pub instance: u32,
    pub life: Life,
    pub restarts: u32,
    pub backoff: Backoff,
    pub last_exit: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Its workers' recipe is being built; nothing is spawned yet.
    Preparing,
    /// Waiting for every worker's readiness; each has `readiness.timeout` from its spawn.
    Starting,
    /// Every worker is ready; must stay so until `until` (readiness.stable).
    Settling { until: Instant },
    /// Committed: takes traffic, crashed workers are restarted.
    Serving,
    /// Stop signal sent to every worker.
    Retiring { reason: String },
}

pub enum Verdict {
    Pending,
    Ready,
    Failed(String),
}

/// Where a successful rollout's time went, each from the rollout's start except
/// `slowest_start`, which is the longest start-up of one worker (from just before its spawn to
/// the kernel's receive time of its READY=1, or to its passed check).
pub struct Timings {
    pub slowest_start: Duration,
    /// How long at least one worker was starting (the union of the workers' start-ups); the
    /// rest of the rollout is baton's own time.
    pub app_starting: Duration,
    /// The first worker's spawn began (config re-read and the recipes done).
    pub first_spawn: Duration,
    /// The last worker's spawn began.
    pub last_spawn: Duration,
    /// The last worker became ready (the swap follows, after `readiness.stable` if set).
    pub last_ready: Duration,
}

#[derive(Debug)]
pub struct Generation {
    pub id: u64,
    pub config: Rc<Config>,
    pub readiness: Readiness,
    /// baton's sockets as a reason names them: ``` `http` 0.0.0.0:3000, `admin` … ```.
    pub sockets: String,
    /// Known once the recipe is built.
    pub nice: NicePlan,
    /// The release its workers run from, resolved once when its recipe is built (`None`
    /// until then, or when it could not be).
    pub release: Option<Rc<str>>,
    pub started: Instant,
    pub phase: Phase,
    pub slots: Vec<Slot>,
    /// How many of its workers may be starting at once (`usize::MAX`: all of them).
    pub max_starting: usize,
    /// First reason this generation cannot become ready.
    pub failure: Option<String>,
    /// The longest drain of its workers so far (stop signal to exit), for the line that says
    /// the generation is gone.
    pub slowest_drain: Option<Duration>,
}

impl Generation {
    /// `sockets`: the listening sockets baton holds.
    pub fn new(
        id: u64,
        config: Rc<Config>,
        now: Instant,
        max_starting: usize,
        sockets: &[SocketStatus],
    ) -> Generation {
        Generation {
            id,
            readiness: Readiness::of(&config.readiness.kind, sockets.len()),
            sockets: describe_sockets(sockets),
            nice: NicePlan::default(),
            release: None,
            started: now,
            phase: Phase::Preparing,
            slots: (0..config.instances)
                .map(|instance| Slot {
                    instance,
                    life: Life::Waiting,
                    restarts: 0,
                    backoff: Backoff::new(&config),
                    last_exit: None,
                })
                .collect(),
            max_starting,
            failure: None,
            slowest_drain: None,
            config,
        }
    }

    /// Its release for messages (`-` when not resolved).
    pub fn release_name(&self) -> &str {
        self.release.as_deref().unwrap_or("-")
    }

    pub fn slot_id(&self, instance: u32) -> SlotId {
        SlotId {
            generation: self.id,
            instance,
        }
    }

    pub fn procs(&self) -> impl Iterator<Item = &Proc> {
        self.slots.iter().filter_map(|s| s.life.proc())
    }

    pub fn alive(&self) -> usize {
        self.slots.iter().filter(|s| s.life.alive()).count()
    }

    pub fn ready_count(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s.life, Life::Ready(_)))
            .count()
    }

    pub fn starting_count(&self) -> usize {
        self.slots.iter().filter(|s| s.life.starting()).count()
    }

    /// The slot whose worker has this pid.
    pub fn slot_of(&self, pid: Pid) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.life.proc().is_some_and(|p| p.pid == pid))
    }

    pub fn committed(&self) -> bool {
        self.phase == Phase::Serving
    }

    pub fn retiring(&self) -> bool {
        matches!(self.phase, Phase::Retiring { .. })
    }

    /// Whether a waiting slot would be spawned now: the generation is starting, has not
    /// failed, no spawn is under way, and fewer than `max_starting` of its workers are starting.
    pub fn can_spawn_waiting(&self) -> bool {
        self.phase == Phase::Starting
            && self.failure.is_none()
            && !self.slots.iter().any(|s| matches!(s.life, Life::Spawning))
            && self.starting_count() < self.max_starting
            && self.slots.iter().any(|s| matches!(s.life, Life::Waiting))
    }

    /// The latest SIGKILL deadline of its draining workers.
    pub fn drain_deadline(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| match &s.life {
                Life::Draining(_, d) => Some(d.deadline),
                _ => None,
            })
            .max()
    }

    /// Where a rollout that began at `since` spent its time (once every worker is ready).
    pub fn timings(&self, since: Instant) -> Option<Timings> {
        let ready: Vec<(Instant, Instant)> = self
            .procs()
            .filter_map(|p| p.ready_at.map(|r| (p.started, r)))
            .collect();
        Some(Timings {
            slowest_start: ready.iter().map(|(s, r)| r.duration_since(*s)).max()?,
            app_starting: union_length(ready.clone()),
            first_spawn: ready.iter().map(|(s, _)| s.duration_since(since)).min()?,
            last_spawn: ready.iter().map(|(s, _)| s.duration_since(since)).max()?,
            last_ready: ready.iter().map(|(_, r)| r.duration_since(since)).max()?,
        })
    }

    /// Whether this (not yet committed) generation is ready, still pending, or failed. The
    /// phase moves from `Starting` to `Settling` here, when every worker is ready.
    pub fn verdict(&mut self, now: Instant) -> Verdict {
        if let Some(reason) = &self.failure {
            return Verdict::Failed(reason.clone());
        }
        match self.phase.clone() {
            Phase::Preparing => Verdict::Pending,
            Phase::Starting if self.ready_count() == self.slots.len() => {
                let until = crate::readiness::later(now, self.config.readiness.stable);
                self.phase = Phase::Settling { until };
                if until <= now {
                    Verdict::Ready
                } else {
                    Verdict::Pending
                }
            }
            Phase::Starting => match self.late_worker(now) {
                Some(reason) => Verdict::Failed(reason),
                None => Verdict::Pending,
            },
            Phase::Settling { until } if now >= until => Verdict::Ready,
            Phase::Settling { .. } => Verdict::Pending,
            Phase::Serving => Verdict::Ready,
            Phase::Retiring { reason } => Verdict::Failed(reason),
        }
    }

    /// The first worker (in instance order) whose readiness time is up, as a failure reason.
    fn late_worker(&self, now: Instant) -> Option<String> {
        let (instance, proc, st) = self.slots.iter().find_map(|s| match &s.life {
            Life::Starting(p, st) if now >= st.deadline => Some((s.instance, p, st)),
            _ => None,
        })?;
        let why = self.not_ready_why(st);
        Some(format!(
            "instance {instance} (pid {}) not ready after {}{why}",
            proc.pid,
            fmt_duration(self.config.readiness.timeout)
        ))
    }

    /// Why a starting worker is not ready yet, for the line of its timeout: what its
    /// readiness waited for (` (no READY=1 received)`, the listen() count, the last check).
    pub(super) fn not_ready_why(&self, st: &Starting) -> String {
        match (&st.tracker, self.readiness.listens()) {
            // `handover = "bind"` and no bind asked for a socket of baton's
            (_, Some(_)) if st.bound.is_empty() && st.listened.is_empty() => {
                let last = match &st.other_bind {
                    Some(a) => format!(" It last bound {a}."),
                    None => String::new(),
                };
                format!(
                    " (no bind() of the app asked for baton's port(s) ({}): does it bind another \
                     port?{last})",
                    self.sockets
                )
            }
            (t, Some(n)) => {
                let got = st.bound.union(&st.listened).count();
                let look = match t.as_ref().and_then(|t| t.last_failure.as_ref()) {
                    Some(f) => format!("; last look: {f}"),
                    None => String::new(),
                };
                format!(
                    " (its tree called listen() on {} of baton's {n} socket(s); its binds got \
                 {got}{look})",
                    st.listened.len()
                )
            }
            (Some(t), None) => match &t.last_failure {
                Some(f) => format!(" (last check: {f})"),
                None => " (no check completed yet)".to_string(),
            },
            (None, None) if matches!(self.readiness, Readiness::Notify) => {
                " (no READY=1 received)".to_string()
            }
            (None, None) => String::new(),
        }
    }

    /// A worker's state as `baton status` shows it.
    pub fn worker_state(&self, slot: &Slot) -> &'static str {
        match &slot.life {
            Life::Waiting => "waiting",
            Life::BackingOff { .. } if slot.backoff.looping() => "crash-loop",
            Life::BackingOff { .. } => "restarting",
            Life::Exited => "exited",
            Life::Draining(..) => "draining",
            Life::Ready(_) => "ready",
            Life::Spawning | Life::Starting(..) => "starting",
        }
    }
}
