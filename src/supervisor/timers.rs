//! Every deadline the supervisor's core keeps, in one table.
//!
//! A transition that creates a deadline arms it here ([`Timers::set`]); the event loop sleeps
//! until [`Timers::next`], and [`Timers::expired`] hands back what is due. There is no second
//! list to keep in step: a deadline that is not in this table does not exist. A timer may
//! outlive the state that armed it (a worker exits before its readiness timeout): its handler
//! checks the state and does nothing then, so disarming is tidiness, not correctness.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::sys::Pid;

/// One worker place of one generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotId {
    pub generation: u64,
    pub instance: u32,
}

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// A starting worker's `readiness.timeout`.
    Ready(SlotId),
    /// Half a starting worker's readiness timeout: it leaves the startup nice.
    StartupNice(SlotId),
    /// `readiness.kind = "delay"`: the worker counts as ready.
    Delay(SlotId),
    /// The next readiness check attempt is due.
    Probe(SlotId),
    /// A crashed worker of the serving generation is restarted.
    Restart(SlotId),
    /// A draining worker's process group is SIGKILLed.
    Kill(SlotId),
    /// An `exec` check process overran its `probe_timeout`.
    ExecProbe(Pid),
    /// A generation whose workers are all ready has been stable for `readiness.stable`.
    Settle(u64),
    /// `STATUS=` counts a drain down, a second at a time, while a reload waits for it.
    StatusTick,
}

impl Timer {
    /// The slot a per-worker timer belongs to.
    pub fn slot(&self) -> Option<SlotId> {
        match *self {
            Timer::Ready(s)
            | Timer::StartupNice(s)
            | Timer::Delay(s)
            | Timer::Probe(s)
            | Timer::Restart(s)
            | Timer::Kill(s) => Some(s),
            Timer::ExecProbe(_) | Timer::Settle(_) | Timer::StatusTick => None,
        }
    }
}

#[derive(Debug, Default)]
pub struct Timers {
    armed: BTreeMap<Timer, Instant>,
}

impl Timers {
    /// Arm (or move) a timer.
    pub fn set(&mut self, timer: Timer, at: Instant) {
        self.armed.insert(timer, at);
    }

    pub fn clear(&mut self, timer: Timer) {
        self.armed.remove(&timer);
    }

    /// Disarm every timer of one slot (its worker exited, or a new one replaces it).
    pub fn clear_slot(&mut self, slot: SlotId) {
        self.armed.retain(|t, _| t.slot() != Some(slot));
    }

    /// Disarm every timer of a generation's slots and its settling.
    pub fn clear_generation(&mut self, generation: u64) {
        self.armed.retain(|t, _| match t {
            Timer::Settle(g) => *g != generation,
            t => t.slot().map_or(true, |s| s.generation != generation),
        });
    }

    pub fn get(&self, timer: Timer) -> Option<Instant> {
        self.armed.get(&timer).copied()
    }

    /// The earliest deadline; `None` = nothing is due until an event arrives.
    pub fn next(&self) -> Option<Instant> {
        self.armed.values().min().copied()
    }

    /// Remove and return every timer due at `now`, earliest first.
    pub fn expired(&mut self, now: Instant) -> Vec<Timer> {
        let mut due: Vec<(Instant, Timer)> = self
            .armed
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(t, at)| (*at, *t))
            .collect();
        due.sort();
        for (_, t) in &due {
            self.armed.remove(t);
        }
        due.into_iter().map(|(_, t)| t).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Timer, &Instant)> {
        self.armed.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn expired_in_order_and_removed() {
        let t0 = Instant::now();
        let s = |instance| SlotId {
            generation: 1,
            instance,
        };
        let mut t = Timers::default();
        t.set(Timer::Ready(s(0)), t0 + Duration::from_secs(3));
        t.set(Timer::Kill(s(1)), t0 + Duration::from_secs(1));
        t.set(Timer::StatusTick, t0 + Duration::from_secs(9));
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        assert!(t.expired(t0).is_empty());
        assert_eq!(
            t.expired(t0 + Duration::from_secs(3)),
            vec![Timer::Kill(s(1)), Timer::Ready(s(0))]
        );
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(9)));
        t.set(Timer::Probe(s(0)), t0);
        t.clear_generation(1);
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(9)));
    }
}
