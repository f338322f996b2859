//! The core's steps for one worker: spawned, ready, told to stop, exited, checked, restarted.
//! Each moves the slot's [`Life`] and arms or disarms its deadlines in the same place. The
//! `Core` methods find the slot an event or a deadline is about; the `Out` methods take the
//! step on that generation and record its effects.

use std::time::{Duration, Instant};

use super::core::{Action, Core, Level, LogEvent, Out, State};
use super::generation::{Drain, Generation, Life, Proc, Starting};
use super::plan::{Check, Readiness};
use super::timers::{SlotId, Timer};
use super::{fmt_duration, fmt_ms, SIGSYS_HINT};
use crate::notify::Message;
use crate::readiness::later;
use crate::sys::{ExitStatus, Pid};

/// The generation and slot index of a slot id, if it still exists.
fn locate(state: &mut State, slot: SlotId) -> Option<(&mut Generation, usize)> {
    let gen = state.gen_mut(slot.generation)?;
    let i = gen.slots.iter().position(|s| s.instance == slot.instance)?;
    Some((gen, i))
}

/// The slot of a worker process.
fn find(state: &State, pid: Pid) -> Option<SlotId> {
    state.gens().iter().find_map(|g| {
        let i = g.slot_of(pid)?;
        Some(g.slot_id(g.slots[i].instance))
    })
}

impl Core {
    pub(super) fn spawned(&mut self, slot: SlotId, pid: Pid, at: Instant, now: Instant) {
        match locate(&mut self.state, slot) {
            Some((gen, i)) if matches!(gen.slots[i].life, Life::Spawning) => {
                self.out.spawned(gen, i, pid, at, now)
            }
            // its place is gone or taken: the process must not stay
            _ => self.out.push(Action::KillGroup { pid }),
        }
    }

    pub(super) fn spawn_failed(&mut self, slot: SlotId, error: &str, now: Instant) {
        if let Some((gen, i)) = locate(&mut self.state, slot) {
            self.out.spawn_failed(gen, i, error, now);
        }
    }

    /// A crashed worker of the serving generation: its backoff is over.
    pub(super) fn restart(&mut self, slot: SlotId, now: Instant) {
        let Some((gen, i)) = locate(&mut self.state, slot) else {
            return;
        };
        if let Life::BackingOff { until } = gen.slots[i].life {
            if gen.committed() && now >= until {
                gen.slots[i].life = Life::Spawning;
                self.out.push(Action::Spawn { slot });
            }
        }
    }

    pub(super) fn notified(
        &mut self,
        worker: Pid,
        sender: Pid,
        msg: &Message,
        sent: Instant,
        now: Instant,
    ) {
        let Some(slot) = find(&self.state, worker) else {
            return;
        };
        if let Some((gen, i)) = locate(&mut self.state, slot) {
            self.out.notified(gen, i, sender, msg, sent, now);
        }
    }

    /// `handover = "bind"`: the worker's tree listens on one more of baton's sockets.
    pub(super) fn listened(&mut self, worker: Pid, socket: usize, now: Instant) {
        let Some(slot) = find(&self.state, worker) else {
            return;
        };
        if let Some((gen, i)) = locate(&mut self.state, slot) {
            self.out.listened(gen, i, socket, now);
        }
    }

    /// `handover = "bind"`: a bind of the worker's tree got one more of baton's sockets.
    pub(super) fn bound(&mut self, worker: Pid, socket: usize, now: Instant) {
        let Some(slot) = find(&self.state, worker) else {
            return;
        };
        if let Some((gen, i)) = locate(&mut self.state, slot) {
            self.out.bound(gen, i, socket, now);
        }
    }

    /// `handover = "bind"`: a bind of the worker's tree asked for none of baton's sockets.
    pub(super) fn bound_other(&mut self, worker: Pid, address: String) {
        let Some(slot) = find(&self.state, worker) else {
            return;
        };
        if let Some((gen, i)) = locate(&mut self.state, slot) {
            if let Life::Starting(_, st) = &mut gen.slots[i].life {
                st.other_bind = Some(address);
            }
        }
    }

    pub(super) fn delay_passed(&mut self, slot: SlotId, now: Instant) {
        let Some((gen, i)) = locate(&mut self.state, slot) else {
            return;
        };
        if let Some(delay) = gen.readiness.delay() {
            if matches!(gen.slots[i].life, Life::Starting(..)) {
                self.out.set_ready(gen, i, now);
                let how = format!("alive for {}", fmt_duration(delay));
                self.out.log_ready(gen, i, how, None);
            }
        }
    }

    /// A check attempt is due for a starting worker.
    pub(super) fn probe_due(&mut self, slot: SlotId, now: Instant) {
        let Some((gen, i)) = locate(&mut self.state, slot) else {
            return;
        };
        let (check, listens) = (gen.readiness.check().cloned(), gen.readiness.listens());
        let Life::Starting(p, st) = &mut gen.slots[i].life else {
            return;
        };
        let check = match (check, listens) {
            (Some(check), _) => check,
            // `listen`: the look at the sockets it never called listen() on
            (None, Some(n)) => {
                Check::AcceptingOn((0..n).filter(|s| !st.listened.contains(s)).collect())
            }
            (None, None) => return,
        };
        let Some(t) = st.tracker.as_mut().filter(|t| t.due(now)) else {
            return;
        };
        t.started();
        self.out.push(Action::Probe {
            slot,
            worker: p.pid,
            check,
            timeout: t.probe_timeout,
        });
    }

    /// An `exec` check's process runs: it is killed if it overruns its timeout.
    pub(super) fn probe_started(&mut self, worker: Pid, probe: Pid, now: Instant) {
        let timeout = find(&self.state, worker)
            .and_then(|slot| {
                let (gen, i) = locate(&mut self.state, slot)?;
                match &gen.slots[i].life {
                    Life::Starting(_, st) => st.tracker.as_ref().map(|t| t.probe_timeout),
                    _ => None,
                }
            })
            .unwrap_or(Duration::from_secs(1));
        self.out.exec_probes.insert(probe, worker);
        self.out
            .timers
            .set(Timer::ExecProbe(probe), later(now, timeout));
    }

    pub(super) fn exec_probe_overdue(&mut self, probe: Pid) {
        if self.out.exec_probes.contains_key(&probe) {
            // reaped later like any child, as a failed check
            self.out.push(Action::KillGroup { pid: probe });
        }
    }

    pub(super) fn probe_result(&mut self, worker: Pid, ok: bool, detail: String, now: Instant) {
        let Some(slot) = find(&self.state, worker) else {
            return;
        };
        if let Some((gen, i)) = locate(&mut self.state, slot) {
            self.out.probe_result(gen, i, ok, detail, now);
        }
    }

    pub(super) fn startup_nice_ended(&mut self, slot: SlotId) {
        if let Some((gen, i)) = locate(&mut self.state, slot) {
            self.out.startup_nice_ended(gen, i);
        }
    }

    /// A starting worker's readiness timeout. A restarted worker of the serving generation
    /// that never gets ready is stopped (and then restarted with backoff); a generation that
    /// is not serving yet fails as a whole through its verdict instead.
    pub(super) fn readiness_timeout(&mut self, slot: SlotId, now: Instant) {
        let Some((gen, i)) = locate(&mut self.state, slot) else {
            return;
        };
        let Life::Starting(p, st) = &gen.slots[i].life else {
            return;
        };
        if now < st.deadline || !gen.committed() {
            return;
        }
        let pid = p.pid;
        let why = gen.not_ready_why(st);
        self.out.log_with(
            Level::Warn,
            "worker_not_ready",
            Some(slot.generation),
            Some(pid),
            Some(slot.instance),
            format!(
                "worker {pid} not ready after {}{why}: stopping it",
                fmt_duration(gen.config.readiness.timeout)
            ),
        );
        let nice = gen.nice.drain;
        self.out.stop_worker(gen, i, now, nice);
    }

    pub(super) fn kill_at_deadline(&mut self, slot: SlotId) {
        if let Some((gen, i)) = locate(&mut self.state, slot) {
            self.out.kill_at_deadline(gen, i);
        }
    }

    pub(super) fn exited(&mut self, pid: Pid, status: ExitStatus, now: Instant) {
        if let Some(worker) = self.out.exec_probes.remove(&pid) {
            self.out.timers.clear(Timer::ExecProbe(pid));
            let ok = status == ExitStatus::Code(0);
            self.probe_result(worker, ok, format!("exec check {status}"), now);
            return;
        }
        let Some(slot) = find(&self.state, pid) else {
            let msg = format!("reaped orphan {pid}: {status}");
            self.out.log(Level::Debug, "orphan_reaped", msg);
            return;
        };
        // mixed kill mode: whatever the worker left in its group goes now
        self.out.push(Action::KillGroup { pid });
        if let Some((gen, i)) = locate(&mut self.state, slot) {
            self.out.worker_exited(gen, i, status, now);
        }
    }
}

impl Out {
    fn spawned(&mut self, gen: &mut Generation, i: usize, pid: Pid, at: Instant, now: Instant) {
        let slot = gen.slot_id(gen.slots[i].instance);
        let timeout = gen.config.readiness.timeout;
        let starting = Starting {
            deadline: later(at, timeout),
            nice_until: later(at, timeout / 2),
            running_nice: gen.nice.running,
            tracker: gen.readiness.tracker(now),
            listened: Default::default(),
            bound: Default::default(),
            other_bind: None,
        };
        self.timers.clear_slot(slot);
        self.timers.set(Timer::Ready(slot), starting.deadline);
        if starting.running_nice.is_some() {
            self.timers
                .set(Timer::StartupNice(slot), starting.nice_until);
        }
        if let Some(t) = &starting.tracker {
            self.timers.set(Timer::Probe(slot), t.next_at);
        }
        if let Some(d) = gen.readiness.delay() {
            self.timers.set(Timer::Delay(slot), later(at, d));
        }
        let proc = Proc {
            pid,
            started: at,
            ready_at: None,
            status: None,
        };
        gen.slots[i].life = Life::Starting(proc, starting);
        self.log_with(
            Level::Info,
            "worker_start",
            Some(slot.generation),
            Some(pid),
            Some(slot.instance),
            format!(
                "worker {pid} started (generation {}, instance {})",
                slot.generation, slot.instance
            ),
        );
        if gen.retiring() {
            // retired while it was being spawned: it goes the way of the others
            self.stop_worker(gen, i, now, None);
        }
    }

    fn spawn_failed(&mut self, gen: &mut Generation, i: usize, error: &str, now: Instant) {
        let slot = gen.slot_id(gen.slots[i].instance);
        let reason = format!(
            "instance {} could not be started: {error} (command {:?})",
            slot.instance, gen.config.command
        );
        self.log_with(
            Level::Error,
            "worker_spawn_failed",
            Some(slot.generation),
            None,
            Some(slot.instance),
            reason.clone(),
        );
        let s = &mut gen.slots[i];
        s.last_exit = Some(format!("spawn failed: {error}"));
        if gen.phase == super::generation::Phase::Serving {
            // a restart: try again later, with the same backoff as a crash
            let until = later(now, s.backoff.take());
            s.life = Life::BackingOff { until };
            s.restarts += 1;
            self.timers.set(Timer::Restart(slot), until);
        } else {
            s.life = Life::Exited;
            gen.failure = Some(reason);
        }
    }

    /// A starting worker is ready as of `at`: from now on it serves, at its running priority.
    pub(super) fn set_ready(&mut self, gen: &mut Generation, i: usize, at: Instant) {
        let slot = gen.slot_id(gen.slots[i].instance);
        let life = std::mem::replace(&mut gen.slots[i].life, Life::Exited);
        let Life::Starting(mut proc, starting) = life else {
            gen.slots[i].life = life;
            return;
        };
        proc.ready_at = Some(at);
        let pid = proc.pid;
        if let Some(nice) = starting.running_nice {
            self.push(Action::Renice {
                pid,
                nice,
                warn: true,
            });
        }
        gen.slots[i].life = Life::Ready(proc);
        self.timers.clear_slot(slot);
        self.push(Action::Ready { worker: pid });
    }

    /// "worker 12 (generation 2, instance 0) ready (how) after 35 ms" (`now`: with the time
    /// since its spawn).
    fn log_ready(&mut self, gen: &Generation, i: usize, how: String, now: Option<Instant>) {
        let slot = &gen.slots[i];
        let Some(p) = slot.life.proc() else { return };
        let (pid, id, instance) = (p.pid, gen.id, slot.instance);
        let after = match now {
            Some(now) => format!(" after {} ms", now.duration_since(p.started).as_millis()),
            None => String::new(),
        };
        let message =
            format!("worker {pid} (generation {id}, instance {instance}) ready ({how}){after}");
        self.log_with(
            Level::Info,
            "worker_ready",
            Some(id),
            Some(pid),
            Some(instance),
            message,
        );
    }

    fn notified(
        &mut self,
        gen: &mut Generation,
        i: usize,
        sender: Pid,
        msg: &Message,
        sent: Instant,
        now: Instant,
    ) {
        let (id, instance) = (gen.id, gen.slots[i].instance);
        let notify_kind = gen.readiness.on_notify();
        let Some(p) = gen.slots[i].life.proc_mut() else {
            return;
        };
        let pid = p.pid;
        if let Some(s) = &msg.status {
            p.status = Some(s.clone());
        }
        let started = p.started;
        if msg.ready && notify_kind && matches!(gen.slots[i].life, Life::Starting(..)) {
            // when the worker sent it, not when the loop got to it (the difference is baton's)
            self.set_ready(gen, i, sent.max(started));
            self.log_ready(gen, i, format!("READY=1 from pid {sender}"), Some(now));
        }
        if msg.stopping {
            self.log_with(
                Level::Info,
                "worker_stopping",
                Some(id),
                Some(pid),
                Some(instance),
                format!("worker {pid} reports STOPPING=1"),
            );
        }
    }

    /// A `listen` worker is ready once its tree listened on every one of baton's sockets.
    fn listened(&mut self, gen: &mut Generation, i: usize, socket: usize, now: Instant) {
        let Some(needed) = gen.readiness.listens() else {
            return;
        };
        let slot = gen.slot_id(gen.slots[i].instance);
        let Life::Starting(_, st) = &mut gen.slots[i].life else {
            return;
        };
        if socket >= needed || !st.listened.insert(socket) {
            return;
        }
        if st.listened.len() < needed {
            // a listen() on a socket counts as its hand-over too
            self.look_once_handed(&gen.readiness, st, slot, now);
            return;
        }
        self.set_ready(gen, i, now);
        let how = format!("listen() on all {needed} socket(s)");
        self.log_ready(gen, i, how, Some(now));
    }

    /// A `listen` worker's bind got one more of baton's sockets.
    fn bound(&mut self, gen: &mut Generation, i: usize, socket: usize, now: Instant) {
        let Some(needed) = gen.readiness.listens() else {
            return;
        };
        let slot = gen.slot_id(gen.slots[i].instance);
        let Life::Starting(_, st) = &mut gen.slots[i].life else {
            return;
        };
        if socket < needed && st.bound.insert(socket) {
            self.look_once_handed(&gen.readiness, st, slot, now);
        }
    }

    /// A `listen` worker that was handed every socket and has not listened on all of them is
    /// looked at in /proc, one interval from now and every interval after, until it is ready
    /// (an app that finds its socket listening already may never call listen()). An app that
    /// calls listen() right after its bind is ready before the first look.
    fn look_once_handed(
        &mut self,
        readiness: &Readiness,
        st: &mut Starting,
        slot: SlotId,
        now: Instant,
    ) {
        let Some(needed) = readiness.listens() else {
            return;
        };
        let handed = (0..needed).all(|s| st.bound.contains(&s) || st.listened.contains(&s));
        if st.tracker.is_some() || !handed || st.listened.len() >= needed {
            return;
        }
        st.tracker = readiness.listen_look(now);
        if let Some(t) = &st.tracker {
            self.timers.set(Timer::Probe(slot), t.next_at);
        }
    }

    fn probe_result(
        &mut self,
        gen: &mut Generation,
        i: usize,
        ok: bool,
        detail: String,
        now: Instant,
    ) {
        let slot = gen.slot_id(gen.slots[i].instance);
        let Life::Starting(p, st) = &mut gen.slots[i].life else {
            return;
        };
        let listened = st.listened.len();
        let Some(t) = st.tracker.as_mut() else { return };
        if !ok {
            self.push(Action::Log(LogEvent {
                level: Level::Debug,
                event: "readiness_check_failed",
                generation: Some(slot.generation),
                worker: Some(p.pid),
                instance: Some(slot.instance),
                drain_ms: None,
                release: None,
                message: format!("readiness check failed: {detail}"),
            }));
        }
        if t.record(now, ok, detail) {
            let how = match gen.readiness.listens() {
                Some(n) if listened == 0 => format!(
                    "waiting for connections on all {n} socket(s), as /proc shows; it never \
                     called listen()"
                ),
                Some(n) => format!(
                    "listen() on {listened} of {n} socket(s), waiting for connections on the \
                     other {}, as /proc shows, without calling listen()",
                    n - listened
                ),
                None => "readiness check passed".into(),
            };
            self.set_ready(gen, i, now);
            self.log_ready(gen, i, how, Some(now));
        } else {
            self.timers.set(Timer::Probe(slot), t.next_at);
        }
    }

    /// Half the readiness timeout of a worker still starting: it continues at its running
    /// priority, so that on a saturated host the startup nice cannot make a reload fail.
    fn startup_nice_ended(&mut self, gen: &mut Generation, i: usize) {
        let slot = gen.slot_id(gen.slots[i].instance);
        let Life::Starting(p, st) = &mut gen.slots[i].life else {
            return;
        };
        let Some(nice) = st.running_nice.take() else {
            return;
        };
        let pid = p.pid;
        let message = format!(
            "worker {pid} not ready after {}, half its readiness timeout: it continues at its running priority",
            fmt_duration(st.nice_until.duration_since(p.started))
        );
        self.push(Action::Renice {
            pid,
            nice,
            warn: true,
        });
        self.log_with(
            Level::Info,
            "worker_startup_nice_ended",
            Some(slot.generation),
            Some(pid),
            Some(slot.instance),
            message,
        );
    }

    /// Send a worker its stop signal and arm its SIGKILL deadline. `drain_nice`: another
    /// generation serves meanwhile, so the worker's process group drains and exits at this
    /// nice value, yielding the CPU to it (`None` when baton itself stops: in-flight requests
    /// finish at full speed instead).
    pub(super) fn stop_worker(
        &mut self,
        gen: &mut Generation,
        i: usize,
        now: Instant,
        drain_nice: Option<i32>,
    ) {
        let slot = gen.slot_id(gen.slots[i].instance);
        let life = std::mem::replace(&mut gen.slots[i].life, Life::Exited);
        let proc = match life {
            Life::Starting(p, _) | Life::Ready(p) => p,
            other => {
                gen.slots[i].life = other;
                return;
            }
        };
        // a stopped worker's priority only goes down from here
        if let Some(nice) = drain_nice {
            // raising a nice value needs no privilege; a failure only leaves it where it was
            self.push(Action::Renice {
                pid: proc.pid,
                nice,
                warn: false,
            });
        }
        let cfg = &gen.config.drain;
        self.push(Action::Signal {
            pid: proc.pid,
            signal: cfg.signal.number(),
        });
        let drain = Drain {
            since: now,
            deadline: later(now, cfg.timeout),
            killed: false,
        };
        self.timers.clear_slot(slot);
        self.timers.set(Timer::Kill(slot), drain.deadline);
        gen.slots[i].life = Life::Draining(proc, drain);
    }

    /// A draining worker's deadline: SIGKILL to its process group.
    fn kill_at_deadline(&mut self, gen: &mut Generation, i: usize) {
        let slot = gen.slot_id(gen.slots[i].instance);
        let Life::Draining(p, d) = &mut gen.slots[i].life else {
            return;
        };
        if d.killed {
            return;
        }
        d.killed = true;
        let pid = p.pid;
        self.log_with(
            Level::Warn,
            "worker_killed",
            Some(slot.generation),
            Some(pid),
            Some(slot.instance),
            format!(
                "worker {pid} did not exit within the drain timeout: SIGKILL to its process group"
            ),
        );
        self.push(Action::KillGroup { pid });
    }

    fn worker_exited(&mut self, gen: &mut Generation, i: usize, status: ExitStatus, now: Instant) {
        let slot = gen.slot_id(gen.slots[i].instance);
        let life = std::mem::replace(&mut gen.slots[i].life, Life::Exited);
        let (proc, drain) = match life {
            Life::Starting(p, _) | Life::Ready(p) => (p, None),
            Life::Draining(p, d) => (p, Some(d)),
            other => {
                gen.slots[i].life = other;
                return;
            }
        };
        self.timers.clear_slot(slot);
        let uptime = now.duration_since(proc.started);
        let mut desc = format!("{status} after {}", fmt_duration(uptime));
        if status == ExitStatus::Signal(libc::SIGSYS) {
            desc.push_str(SIGSYS_HINT);
        }
        gen.slots[i].last_exit = Some(desc.clone());
        if gen.retiring() {
            self.retired_exit(gen, slot, proc.pid, desc, drain, now);
        } else if gen.committed() {
            self.crashed(gen, i, &proc, desc, now);
        } else {
            let when = if proc.ready_at.is_some() {
                "after"
            } else {
                "before"
            };
            let reason = format!(
                "instance {} (pid {}) exited {when} it was ready: {desc}",
                slot.instance, proc.pid
            );
            self.log_with(
                Level::Warn,
                "worker_exit",
                Some(gen.id),
                Some(proc.pid),
                Some(slot.instance),
                reason.clone(),
            );
            gen.failure.get_or_insert(reason);
        }
    }

    /// A worker of a retiring generation is gone: how long it drained.
    fn retired_exit(
        &mut self,
        gen: &mut Generation,
        slot: SlotId,
        pid: Pid,
        desc: String,
        drain: Option<Drain>,
        now: Instant,
    ) {
        let cfg = &gen.config.drain;
        let drained = drain.map(|d| now.duration_since(d.since));
        let how = match (drain, drained) {
            (Some(d), _) if d.killed => format!(
                "; killed at the drain deadline, {} after {}",
                fmt_duration(cfg.timeout),
                cfg.signal.name()
            ),
            (_, Some(d)) => format!("; drained in {} after {}", fmt_ms(d), cfg.signal.name()),
            _ => String::new(),
        };
        if let Some(d) = drained {
            gen.slowest_drain = Some(gen.slowest_drain.map_or(d, |s| s.max(d)));
        }
        let (id, instance) = (gen.id, slot.instance);
        self.push(Action::Log(LogEvent {
            level: Level::Info,
            event: "worker_exit",
            generation: Some(id),
            worker: Some(pid),
            instance: Some(instance),
            drain_ms: drained.map(|d| d.as_millis() as u64),
            release: None,
            message: format!(
                "worker {pid} (generation {id}, instance {instance}) exited: {desc}{how}"
            ),
        }));
    }

    /// A worker of the serving generation died: back off, restart.
    fn crashed(&mut self, gen: &mut Generation, i: usize, proc: &Proc, desc: String, now: Instant) {
        let slot = gen.slot_id(gen.slots[i].instance);
        let s = &mut gen.slots[i];
        s.backoff
            .after_run(proc.ready_at.is_some(), now.duration_since(proc.started));
        let delay = s.backoff.take();
        let until = later(now, delay);
        s.life = Life::BackingOff { until };
        s.restarts += 1;
        let looping = if s.backoff.looping() {
            " (crash loop)"
        } else {
            ""
        };
        let restarts = s.restarts;
        self.timers.set(Timer::Restart(slot), until);
        let pid = proc.pid;
        self.log_with(
            Level::Warn,
            "worker_crash",
            Some(gen.id),
            Some(pid),
            Some(slot.instance),
            format!(
                "worker {pid} (generation {}, instance {}) died: {desc}; restart #{restarts} in {}{looping}",
                gen.id,
                slot.instance,
                fmt_duration(delay)
            ),
        );
    }
}
