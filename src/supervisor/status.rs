//! What the core tells about itself: `baton status`, the one-line summary for systemd's
//! `STATUS=`, and what a reload asked for now would wait for. Pure reads of the state, except
//! [`Core::publish_status`], which queues the `STATUS=` line when it changed.

use std::time::{Duration, Instant};

use super::core::{Core, State, Systemd};
use super::generation::{Generation, Phase};
use super::timers::Timer;
use super::{fmt_duration, secs};
use crate::control;

impl Core {
    /// One line for systemd's status: serving generation, ready and draining workers.
    pub(super) fn summary(&self, state: &State) -> String {
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

    /// What a reload asked for now would wait for, if anything: the rollout in progress, or
    /// the drain of the generation that is retiring (then also how long it may last at most:
    /// until the last SIGKILL deadline).
    pub(super) fn queue_note(&self, now: Instant) -> Option<(String, Option<Duration>)> {
        match &self.state {
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
                    .drain_deadline()
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
            // a reload whose config is being read counts as a rollout about to begin
            State::Serving { current, .. } if self.loading.is_some() => Some((
                format!(
                    "waiting for the rollout of generation {} (next to {}) to end",
                    self.next_generation, current.id
                ),
                None,
            )),
            _ => None,
        }
    }

    /// STATUS= to systemd whenever the one-line summary changes. While a reload waits for a
    /// drain, the summary says how long at most (it changes every second: a deadline counts it
    /// down), and systemd's timeout is extended to cover it and the rollout after it.
    pub(super) fn publish_status(&mut self, now: Instant) {
        if !self.systemd {
            return;
        }
        let mut summary = self.summary(&self.state);
        let mut extend = None;
        if self.pending_reload.is_some() {
            if let Some((note, draining)) = self.queue_note(now) {
                summary = format!("reload queued: {note}; {summary}");
                if let (Some(left), Some(g)) = (draining, self.state.gens().first()) {
                    let r = &g.config.readiness;
                    extend = Some(left + r.timeout + r.stable + Duration::from_secs(5));
                }
                if let Some(left) = draining.filter(|l| !l.is_zero()) {
                    // the next whole second of the countdown
                    let frac = Duration::from_nanos(u64::from(left.subsec_nanos()));
                    let tick = if frac.is_zero() {
                        Duration::from_secs(1)
                    } else {
                        frac
                    };
                    self.out.timers.set(Timer::StatusTick, now + tick);
                }
            }
        }
        if summary != self.last_status {
            self.out.systemd(Systemd::Status(summary.clone()));
            if let Some(d) = extend {
                self.out.systemd(Systemd::ExtendTimeout(d));
            }
            self.last_status = summary;
        }
    }

    /// `baton status`.
    pub fn status(&self, now: Instant) -> control::Status {
        let serving = match &self.state {
            State::Serving { current, .. } | State::RollingOut { current, .. } => Some(current.id),
            _ => None,
        };
        control::Status {
            pid: self.identity.pid,
            state: self.state.name().into(),
            uptime_s: secs(now.duration_since(self.started)),
            config: self.identity.config.clone(),
            serving_generation: serving,
            sockets: self.identity.sockets.clone(),
            generations: self
                .state
                .gens()
                .iter()
                .map(|g| self.generation_status(g, now))
                .collect(),
            reloads_ok: self.reloads_ok,
            reloads_failed: self.reloads_failed,
            last_reload: self.last_reload.clone(),
        }
    }

    fn role(&self, g: &Generation) -> &'static str {
        match &self.state {
            State::Serving { current, .. } if current.id == g.id => "serving",
            State::RollingOut { current, .. } if current.id == g.id => "serving",
            State::RollingOut { next, .. } if next.id == g.id => "next",
            State::Booting { .. } => "booting",
            State::Stopping { .. } => "stopping",
            _ => "retiring",
        }
    }

    fn generation_status(&self, g: &Generation, now: Instant) -> control::GenerationStatus {
        control::GenerationStatus {
            generation: g.id,
            role: self.role(g).into(),
            phase: match &g.phase {
                Phase::Preparing | Phase::Starting => "starting".into(),
                Phase::Settling { .. } => "settling".into(),
                Phase::Serving => "serving".into(),
                Phase::Retiring { reason } => format!("retiring: {reason}"),
            },
            release: g.release.as_deref().map(str::to_string),
            age_s: secs(now.duration_since(g.started)),
            workers: g
                .slots
                .iter()
                .map(|s| {
                    let proc = s.life.proc();
                    control::WorkerStatus {
                        instance: s.instance,
                        pid: proc.map(|p| p.pid),
                        state: g.worker_state(s).into(),
                        restarts: s.restarts,
                        uptime_s: proc.map(|p| secs(now.duration_since(p.started))),
                        status: proc.and_then(|p| p.status.clone()),
                        last_exit: s.last_exit.clone(),
                    }
                })
                .collect(),
        }
    }
}
