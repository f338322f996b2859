//! The supervisor: a pure core that decides, and an event loop that does.
//!
//! * [`core`]: the state machine (booting, serving, rolling out, stopping). Events and the
//!   time in, actions out; it never reads the clock or makes a system call, so its tests run
//!   with a fake clock and no processes (`tests.rs`).
//! * [`generation`]: a generation and its workers' lifecycles ([`generation::Life`]), and
//!   [`workers`]: the steps that move a worker through it.
//! * [`plan`]: what a generation decides once (readiness strategy, priorities, backoff).
//! * [`timers`]: every deadline of the core, in one table.
//! * [`driver`]: the event loop: turns descriptors into events and executes actions.
//!
//! Invariants the core keeps (and `tests.rs` checks after every step of random event
//! sequences):
//! * at most two generations are alive (`RollingOut` has no retiring generation; a reload that
//!   arrives while one drains waits for it);
//! * a generation is never sent its stop signal before its successor is ready (and stable);
//! * while another generation serves, at most `readiness.max_starting` workers of a new one are
//!   starting at once, and each has `readiness.timeout` from its own spawn;
//! * every starting worker has a readiness deadline and every draining one a SIGKILL deadline;
//! * a `listen` worker is looked at in /proc only once a bind got every socket and not all were
//!   listened on, and only on the sockets not listened on; a ready worker has no check due;
//! * a failed new generation is retired gently (stop signal, SIGKILL at the drain deadline), and
//!   the serving generation is not touched;
//! * every process group of a worker is SIGKILLed once its leader has exited or its drain
//!   deadline passed, so no helper outlives its worker.

pub mod core;
mod driver;
pub mod generation;
pub mod plan;
mod status;
pub mod timers;
mod workers;

#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

pub use driver::{Setup, Supervisor};

/// Appended to the exit of a worker killed by SIGSYS: the usual cause under systemd.
const SIGSYS_HINT: &str = " (SIGSYS: the kernel refused a system call of the app, most likely \
the unit's SystemCallFilter=; `journalctl -k` or `coredumpctl` names the call, and a drop-in \
can allow it: see \"What the units impose\" in the README)";

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
mod format_tests {
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
