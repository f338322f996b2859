//! What a generation decides once, when it is created: how its workers' readiness is checked
//! ([`Readiness`]), at which priorities they start, run and drain ([`NicePlan`]), and how a
//! crashed worker's restarts back off ([`Backoff`]). Pure data; no I/O.

use std::time::{Duration, Instant};

use crate::config::{Config, ReadinessKind, DEFAULT_ACCEPTING_INTERVAL};
use crate::readiness::Tracker;

/// How a generation's workers are found ready: the config's `readiness.kind`, matched once.
#[derive(Debug, Clone, PartialEq)]
pub enum Readiness {
    /// `READY=1` from the worker's process tree.
    Notify,
    /// Alive for this long.
    Delay(Duration),
    /// `handover = "bind"`: the worker's tree called listen() on each of baton's `sockets`
    /// (handed to it through its bind()), or waits for connections on those it never called
    /// listen() on (an app that finds the socket listening already skips the call), which a
    /// look in /proc every `look` finds once every socket was handed to it.
    Listen { sockets: usize, look: Duration },
    /// A check repeated every `interval` until `successes` pass in a row.
    Probe {
        check: Check,
        successes: u32,
        interval: Duration,
        timeout: Duration,
    },
}

/// One readiness check attempt, as the event loop runs it.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// `GET path` on the worker's private probe socket.
    Http { path: String },
    /// A connection to the worker's private probe socket.
    Tcp,
    /// The command exits with 0.
    Exec { argv: Vec<String> },
    /// The worker's process tree waits for connections on every passed socket (`/proc`).
    Accepting,
    /// The worker's process tree waits for connections on each of these of baton's sockets
    /// (index in baton's list; `/proc`): `listen` readiness's look at the sockets a bind got
    /// and no listen() was trapped on.
    AcceptingOn(Vec<usize>),
}

impl Readiness {
    /// `sockets`: how many listening sockets baton holds (a `listen` worker must listen on
    /// each).
    pub fn of(kind: &ReadinessKind, sockets: usize) -> Readiness {
        match kind {
            ReadinessKind::Notify => Readiness::Notify,
            // the look is the `accepting` check's, at its pace
            ReadinessKind::Listen => Readiness::Listen {
                sockets,
                look: DEFAULT_ACCEPTING_INTERVAL,
            },
            ReadinessKind::Delay { delay } => Readiness::Delay(*delay),
            ReadinessKind::Http {
                path,
                interval,
                probe_timeout,
                successes,
            } => Readiness::probe(
                Check::Http { path: path.clone() },
                *successes,
                *interval,
                *probe_timeout,
            ),
            ReadinessKind::Tcp {
                interval,
                probe_timeout,
                successes,
            } => Readiness::probe(Check::Tcp, *successes, *interval, *probe_timeout),
            ReadinessKind::Exec {
                argv,
                interval,
                probe_timeout,
                successes,
            } => Readiness::probe(
                Check::Exec { argv: argv.clone() },
                *successes,
                *interval,
                *probe_timeout,
            ),
            // one look at /proc is the whole check; it may take as long as the interval
            ReadinessKind::Accepting { interval } => {
                Readiness::probe(Check::Accepting, 1, *interval, *interval)
            }
        }
    }

    fn probe(check: Check, successes: u32, interval: Duration, timeout: Duration) -> Readiness {
        Readiness::Probe {
            check,
            successes,
            interval,
            timeout,
        }
    }

    /// A worker is ready once its tree sends `READY=1` (and only then does that count).
    pub fn on_notify(&self) -> bool {
        *self == Readiness::Notify
    }

    /// A worker is ready once it listened on this many sockets.
    pub fn listens(&self) -> Option<usize> {
        match self {
            Readiness::Listen { sockets, .. } => Some(*sockets),
            _ => None,
        }
    }

    /// `listen`: the bookkeeping of the look in /proc for a worker that was handed every
    /// socket at `now` and has not listened on all of them (the first look after one
    /// interval: an app that calls listen() right after its bind is ready by then).
    pub fn listen_look(&self, now: Instant) -> Option<Tracker> {
        match self {
            Readiness::Listen { look, .. } => {
                let mut t = Tracker::new(now, 1, *look, *look);
                t.next_at = crate::readiness::later(now, *look);
                Some(t)
            }
            _ => None,
        }
    }

    /// A worker is ready once alive for this long.
    pub fn delay(&self) -> Option<Duration> {
        match self {
            Readiness::Delay(d) => Some(*d),
            _ => None,
        }
    }

    /// The periodic check that finds a worker ready.
    pub fn check(&self) -> Option<&Check> {
        match self {
            Readiness::Probe { check, .. } => Some(check),
            _ => None,
        }
    }

    /// Whether each worker gets a private probe socket (http and tcp checks target it).
    pub fn wants_probe_socket(&self) -> bool {
        matches!(
            self,
            Readiness::Probe {
                check: Check::Http { .. } | Check::Tcp,
                ..
            }
        )
    }

    /// The bookkeeping of a periodic check for a worker spawned at `now`, if this is one.
    pub fn tracker(&self, now: Instant) -> Option<Tracker> {
        match self {
            Readiness::Probe {
                successes,
                interval,
                timeout,
                ..
            } => Some(Tracker::new(now, *successes, *interval, *timeout)),
            _ => None,
        }
    }
}

/// A generation's priorities, known once its workers' recipe is built: they start at
/// `readiness.startup_nice` and get `running` once ready (`None`: they start at their running
/// priority already), and drain at `drain` while another generation serves (`None`: at their
/// running priority). A worker's priority never rises once it is told to stop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NicePlan {
    pub startup: i32,
    pub running: Option<i32>,
    pub drain: Option<i32>,
}

impl NicePlan {
    /// ", at nice 10 until ready, then 0" for the line that starts a generation.
    pub fn describe(&self) -> String {
        match self.running {
            Some(run) => format!(", at nice {} until ready, then {run}", self.startup),
            None => String::new(),
        }
    }
}

/// Restart backoff of one worker slot: the delay doubles at each restart up to
/// `restart.backoff_max`, and starts over once a worker was ready and ran that long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
    initial: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(config: &Config) -> Backoff {
        Backoff {
            next: config.restart.backoff_initial,
            initial: config.restart.backoff_initial,
            max: config.restart.backoff_max,
        }
    }

    /// The delay before the next restart; the one after is twice as long (at most the max).
    pub fn take(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        d
    }

    /// A worker that was ready and ran for `uptime` crashed: a long run starts the backoff over.
    pub fn after_run(&mut self, was_ready: bool, uptime: Duration) {
        if was_ready && uptime >= self.max {
            self.next = self.initial;
        }
    }

    /// The restarts have reached the longest delay: the worker is crash-looping.
    pub fn looping(&self) -> bool {
        self.next >= self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml_tail: &str) -> Config {
        Config::parse(&format!("command = [\"x\"]\n{toml_tail}"), "test.toml").unwrap()
    }

    #[test]
    fn backoff_doubles_to_the_max_and_resets_after_a_long_ready_run() {
        let c = config("[restart]\nbackoff_initial = \"100ms\"\nbackoff_max = \"1s\"\n");
        let mut b = Backoff::new(&c);
        let ms = Duration::from_millis;
        let delays: Vec<Duration> = (0..6).map(|_| b.take()).collect();
        assert_eq!(
            delays,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        assert!(b.looping());
        // a short run, or a long one that never got ready, keeps the backoff
        b.after_run(true, ms(999));
        b.after_run(false, ms(5000));
        assert_eq!(b.take(), ms(1000));
        b.after_run(true, ms(1000));
        assert!(!b.looping());
        assert_eq!(b.take(), ms(100));
    }

    #[test]
    fn readiness_is_matched_once() {
        let c = config("[readiness]\nkind = \"http\"\npath = \"/up\"\nsuccesses = 2\n");
        let r = Readiness::of(&c.readiness.kind, 1);
        assert!(r.wants_probe_socket());
        assert_eq!(
            r.tracker(std::time::Instant::now())
                .unwrap()
                .successes_needed,
            2
        );
        let a = config("[readiness]\nkind = \"accepting\"\n");
        let r = Readiness::of(&a.readiness.kind, 1);
        assert!(!r.wants_probe_socket());
        assert!(matches!(
            r,
            Readiness::Probe {
                check: Check::Accepting,
                successes: 1,
                ..
            }
        ));
        assert_eq!(
            Readiness::of(&config("").readiness.kind, 1),
            Readiness::Notify
        );
        let l = config("handover = \"bind\"\n[readiness]\nkind = \"listen\"\n");
        let r = Readiness::of(&l.readiness.kind, 2);
        let look = Duration::from_millis(50);
        assert_eq!(r, Readiness::Listen { sockets: 2, look });
        assert_eq!(r.listens(), Some(2));
        let now = Instant::now();
        assert!(!r.wants_probe_socket() && r.tracker(now).is_none());
        // the look is not due at once: a listen() right after the bind comes first
        let t = r.listen_look(now).unwrap();
        assert!(t.next_at == now + look && !t.due(now) && t.due(now + look));
        assert!(Readiness::of(&a.readiness.kind, 1)
            .listen_look(now)
            .is_none());
    }
}
