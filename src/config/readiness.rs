//! The readiness kinds: [`Readiness`] and [`ReadinessKind`] (notify, accepting, listen, http,
//! tcp, exec, delay), which optional keys each kind accepts, their defaults, and the conversion
//! of `[readiness]` into them; and [`Handover`] (the top-level `handover`), which decides which
//! kinds can work at all.
//!
//! Must never probe anything: the checks themselves run in `crate::readiness`.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use super::error::ConfigError;
use super::raw::RawReadiness;
use super::validate::Ctx;
use super::{
    DEFAULT_ACCEPTING_INTERVAL, DEFAULT_INTERVAL, DEFAULT_PROBE_TIMEOUT, DEFAULT_READY_TIMEOUT,
    DEFAULT_STARTUP_NICE, MAX_INSTANCES,
};
use toml::Spanned;

/// How a worker gets baton's listening sockets (the top-level `handover`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Handover {
    /// Socket activation: the sockets at fd 3.. with `LISTEN_FDS` (the app must take them).
    #[default]
    Fds,
    /// The app binds its own port: baton traps its bind() and listen() (seccomp user
    /// notification) and answers a bind of one of its sockets' ports with that socket.
    Bind,
}

impl Handover {
    pub fn name(self) -> &'static str {
        match self {
            Handover::Fds => "fds",
            Handover::Bind => "bind",
        }
    }
}

/// How a worker proves it is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub kind: ReadinessKind,
    /// Maximum time for a worker to become ready.
    pub timeout: Duration,
    /// Once all workers of a new generation are ready, how long it must stay
    /// up before the old generation is retired.
    pub stable: Duration,
    /// The nice value a worker starts at; it runs at its normal priority once it is ready.
    /// So a starting generation takes the CPU the serving one leaves idle, rather than the
    /// CPU it needs to answer requests. 0 starts workers at their normal priority.
    pub startup_nice: i32,
    /// At most this many workers of a generation that starts while another one serves are
    /// starting (spawned, not yet ready) at once; the next one is spawned when one is ready.
    /// Starting a process is CPU work that delays the serving generation's requests however
    /// low its priority (much of it runs in the kernel), so it is paced rather than piled up.
    /// `None`: as many as there are CPUs baton may run on. The first generation, with no
    /// requests to protect, starts all its workers at once.
    pub max_starting: Option<u32>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            kind: ReadinessKind::Notify,
            timeout: DEFAULT_READY_TIMEOUT,
            stable: Duration::ZERO,
            startup_nice: DEFAULT_STARTUP_NICE,
            max_starting: None,
        }
    }
}

/// The readiness check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadinessKind {
    /// The worker sends `READY=1` over `NOTIFY_SOCKET`.
    Notify,
    /// An HTTP `GET path` probe against the worker's socket succeeds.
    Http {
        path: String,
        interval: Duration,
        probe_timeout: Duration,
        successes: u32,
    },
    /// A TCP connection to the worker's socket succeeds.
    Tcp {
        interval: Duration,
        probe_timeout: Duration,
        successes: u32,
    },
    /// The check command (`argv`, no shell) exits with status 0.
    Exec {
        argv: Vec<String>,
        interval: Duration,
        probe_timeout: Duration,
        successes: u32,
    },
    /// The worker is considered ready after a fixed delay.
    Delay { delay: Duration },
    /// The worker's process tree waits for connections on every passed socket (a thread
    /// blocked in accept/poll/select on it, or the socket in one of its epoll sets), as seen
    /// in /proc every `interval`. Needs no app change.
    Accepting { interval: Duration },
    /// With `handover = "bind"`: the worker's process tree called listen() on every socket
    /// baton handed it through its bind() (event-driven), or waits for connections on those it
    /// did not (an app that skips listen() on a socket that already listens), as a look in
    /// /proc finds once every socket was handed.
    Listen,
}

impl ReadinessKind {
    /// The `kind` string of this check (`"notify"`, `"http"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            ReadinessKind::Notify => "notify",
            ReadinessKind::Http { .. } => "http",
            ReadinessKind::Tcp { .. } => "tcp",
            ReadinessKind::Exec { .. } => "exec",
            ReadinessKind::Delay { .. } => "delay",
            ReadinessKind::Accepting { .. } => "accepting",
            ReadinessKind::Listen => "listen",
        }
    }
}

impl fmt::Display for ReadinessKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Ctx<'_> {
    pub(super) fn handover(&self, v: &Option<Spanned<String>>) -> Result<Handover, ConfigError> {
        match v {
            None => Ok(Handover::Fds),
            Some(s) => match s.get_ref().as_str() {
                "fds" => Ok(Handover::Fds),
                "bind" => Ok(Handover::Bind),
                other => Err(self.err(
                    Some(s.span()),
                    "handover",
                    format!("unknown handover {other:?}, expected `fds` or `bind`"),
                )),
            },
        }
    }

    /// The kinds a handover cannot work with: `listen` needs `bind`; `http` and `tcp` need the
    /// private probe socket at an extra fd, which only `fds` passes.
    fn kind_fits(
        &self,
        kind: &str,
        span: Option<Range<usize>>,
        handover: Handover,
    ) -> Result<(), ConfigError> {
        let why = match (kind, handover) {
            ("listen", Handover::Fds) => "kind = \"listen\" needs handover = \"bind\" (a worker \
                 is ready once it called listen() on every socket baton answered its bind() \
                 with); with handover = \"fds\" use `notify`, `accepting`, `http`, `tcp`, `exec` \
                 or `delay`"
                .to_string(),
            ("http" | "tcp", Handover::Bind) => format!(
                "kind = \"{kind}\" probes a private socket passed at an extra fd, which \
                 handover = \"bind\" does not pass (the app binds its own port); use `listen`, \
                 `accepting`, `notify`, `exec` or `delay`"
            ),
            _ => return Ok(()),
        };
        Err(self.err(span, "readiness.kind", why))
    }

    pub(super) fn readiness(
        &self,
        r: RawReadiness,
        handover: Handover,
    ) -> Result<Readiness, ConfigError> {
        let timeout = self.duration(&r.timeout, "readiness.timeout", DEFAULT_READY_TIMEOUT)?;
        if timeout.is_zero() {
            return Err(self.err(
                r.timeout.as_ref().map(|s| s.span()),
                "readiness.timeout",
                "readiness timeout must be greater than zero",
            ));
        }
        let stable = self.duration(&r.stable, "readiness.stable", Duration::ZERO)?;
        let startup_nice = self.nice(
            &r.startup_nice,
            "readiness.startup_nice",
            DEFAULT_STARTUP_NICE,
        )?;
        let max_starting = match &r.max_starting {
            None => None,
            Some(n) => match u32::try_from(*n.get_ref()) {
                Ok(v) if (1..=MAX_INSTANCES).contains(&v) => Some(v),
                _ => {
                    return Err(self.err(
                        Some(n.span()),
                        "readiness.max_starting",
                        format!(
                            "max_starting must be from 1 to {MAX_INSTANCES}, got {}",
                            n.get_ref()
                        ),
                    ))
                }
            },
        };

        let kind_name = r.kind.as_ref().map_or("notify", |k| k.get_ref().as_str());
        let kind_span = r.kind.as_ref().map(|k| k.span());
        const KINDS: &str = "`notify`, `accepting`, `listen`, `http`, `tcp`, `exec` or `delay`";
        // Which optional keys each kind accepts (besides timeout and stable).
        let allowed: &[&str] = match kind_name {
            "notify" | "listen" => &[],
            "http" => &["path", "interval", "probe_timeout", "successes"],
            "tcp" => &["interval", "probe_timeout", "successes"],
            "exec" => &["exec", "interval", "probe_timeout", "successes"],
            "delay" => &["delay"],
            "accepting" => &["interval"],
            other => {
                return Err(self.err(
                    kind_span,
                    "readiness.kind",
                    format!("unknown readiness kind {other:?}, expected {KINDS}"),
                ))
            }
        };
        self.kind_fits(kind_name, kind_span.clone(), handover)?;
        let present: [(&str, Option<Range<usize>>); 6] = [
            ("path", r.path.as_ref().map(|v| v.span())),
            ("interval", r.interval.as_ref().map(|v| v.span())),
            ("probe_timeout", r.probe_timeout.as_ref().map(|v| v.span())),
            ("successes", r.successes.as_ref().map(|v| v.span())),
            ("exec", r.exec.as_ref().map(|v| v.span())),
            ("delay", r.delay.as_ref().map(|v| v.span())),
        ];
        // Report the first offending key in file order.
        let mut offending: Vec<(&str, Range<usize>)> = present
            .into_iter()
            .filter_map(|(k, s)| s.map(|s| (k, s)))
            .filter(|(k, _)| !allowed.contains(k))
            .collect();
        offending.sort_by_key(|(_, s)| s.start);
        if let Some((k, span)) = offending.into_iter().next() {
            let users = match k {
                "path" => "kind = \"http\"",
                "exec" => "kind = \"exec\"",
                "delay" => "kind = \"delay\"",
                "interval" => "kind = \"accepting\", \"http\", \"tcp\" or \"exec\"",
                _ => "kind = \"http\", \"tcp\" or \"exec\"",
            };
            return Err(self.err(
                Some(span),
                format!("readiness.{k}"),
                format!("`{k}` is only valid with {users} (kind is \"{kind_name}\")"),
            ));
        }

        let default_interval = if kind_name == "accepting" {
            DEFAULT_ACCEPTING_INTERVAL
        } else {
            DEFAULT_INTERVAL
        };
        let interval = self.duration(&r.interval, "readiness.interval", default_interval)?;
        if interval.is_zero() {
            return Err(self.err(
                r.interval.as_ref().map(|s| s.span()),
                "readiness.interval",
                "interval must be greater than zero",
            ));
        }
        let probe_timeout = self.duration(
            &r.probe_timeout,
            "readiness.probe_timeout",
            DEFAULT_PROBE_TIMEOUT,
        )?;
        if probe_timeout.is_zero() {
            return Err(self.err(
                r.probe_timeout.as_ref().map(|s| s.span()),
                "readiness.probe_timeout",
                "probe_timeout must be greater than zero",
            ));
        }
        let successes = match &r.successes {
            None => 1,
            Some(n) => match u32::try_from(*n.get_ref()) {
                Ok(v) if v >= 1 => v,
                _ => {
                    return Err(self.err(
                        Some(n.span()),
                        "readiness.successes",
                        format!("successes must be at least 1, got {}", n.get_ref()),
                    ))
                }
            },
        };

        let kind = match kind_name {
            "notify" => ReadinessKind::Notify,
            "listen" => ReadinessKind::Listen,
            "http" => {
                let path = match &r.path {
                    None => "/".to_string(),
                    Some(p) => {
                        let s = p.get_ref();
                        if !is_http_path(s) {
                            return Err(self.err(
                                Some(p.span()),
                                "readiness.path",
                                format!(
                                    "http path {s:?} must start with '/' and contain no whitespace"
                                ),
                            ));
                        }
                        s.clone()
                    }
                };
                ReadinessKind::Http {
                    path,
                    interval,
                    probe_timeout,
                    successes,
                }
            }
            "tcp" => ReadinessKind::Tcp {
                interval,
                probe_timeout,
                successes,
            },
            "accepting" => ReadinessKind::Accepting { interval },
            "exec" => {
                let argv = match &r.exec {
                    Some(e) => self.argv(e, "readiness.exec")?,
                    None => {
                        return Err(self.err(
                            kind_span,
                            "readiness.exec",
                            "kind = \"exec\" requires `exec`, the argv of the check command \
                             (like exec = [\"/usr/bin/check\", \"arg\"])",
                        ))
                    }
                };
                ReadinessKind::Exec {
                    argv,
                    interval,
                    probe_timeout,
                    successes,
                }
            }
            _ => {
                let delay = match &r.delay {
                    Some(_) => self.duration(&r.delay, "readiness.delay", Duration::ZERO)?,
                    None => {
                        return Err(self.err(
                            kind_span,
                            "readiness.delay",
                            "kind = \"delay\" requires `delay` (like delay = \"2s\")",
                        ))
                    }
                };
                if delay > timeout {
                    return Err(self.err(
                        r.delay.as_ref().map(|s| s.span()),
                        "readiness.delay",
                        format!("delay ({delay:?}) exceeds the readiness timeout ({timeout:?})"),
                    ));
                }
                ReadinessKind::Delay { delay }
            }
        };
        Ok(Readiness {
            kind,
            timeout,
            stable,
            startup_nice,
            max_starting,
        })
    }
}

/// A path an HTTP request line can carry as it is: it starts with `/` and holds no
/// whitespace or control character (`readiness.path`, `baton verify --path`).
pub fn is_http_path(s: &str) -> bool {
    s.starts_with('/') && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{assert_err, parse, MIN};

    #[test]
    fn handover_and_the_listen_kind() {
        assert_eq!(parse(MIN).unwrap().handover, Handover::Fds);
        let c = parse(&format!(
            "{MIN}handover = \"bind\"\n[readiness]\nkind = \"listen\"\ntimeout = \"5s\"\n"
        ))
        .unwrap();
        assert_eq!(c.handover, Handover::Bind);
        assert_eq!(c.readiness.kind, ReadinessKind::Listen);
        assert_eq!(c.readiness.kind.name(), "listen");
        for kind in [
            "notify",
            "accepting",
            "exec\"\nexec = [\"/bin/true\"]\nstable = \"0s",
            "delay\"\ndelay = \"1s",
        ] {
            parse(&format!(
                "{MIN}handover = \"bind\"\n[readiness]\nkind = \"{kind}\"\n"
            ))
            .unwrap();
        }
        let e = assert_err(&format!("{MIN}handover = \"sockets\"\n"), 2, "handover");
        assert!(e.message.contains("`fds` or `bind`"), "{e}");
        // listen without bind: the file, the line and the key of the kind
        let e = assert_err(
            &format!("{MIN}[readiness]\ntimeout = \"5s\"\nkind = \"listen\"\n"),
            4,
            "readiness.kind",
        );
        assert!(e.message.contains("handover = \"bind\""), "{e}");
        // http and tcp need the probe socket, which bind mode does not pass
        for kind in ["http", "tcp"] {
            let e = assert_err(
                &format!("{MIN}handover = \"bind\"\n[readiness]\nkind = \"{kind}\"\n"),
                4,
                "readiness.kind",
            );
            for other in ["listen", "accepting", "notify", "exec", "delay"] {
                assert!(e.message.contains(&format!("`{other}`")), "{e}");
            }
        }
        // listen takes only the common keys
        assert_err(
            &format!(
                "{MIN}handover = \"bind\"\n[readiness]\nkind = \"listen\"\ninterval = \"1s\"\n"
            ),
            5,
            "readiness.interval",
        );
    }

    #[test]
    fn probe_defaults() {
        let c = parse(&format!("{MIN}[readiness]\nkind = \"http\"\n")).unwrap();
        assert_eq!(
            c.readiness.kind,
            ReadinessKind::Http {
                path: "/".into(),
                interval: Duration::from_millis(200),
                probe_timeout: Duration::from_secs(1),
                successes: 1,
            }
        );
        let c = parse(&format!("{MIN}[readiness]\nkind = \"tcp\"\n")).unwrap();
        assert_eq!(
            c.readiness.kind,
            ReadinessKind::Tcp {
                interval: Duration::from_millis(200),
                probe_timeout: Duration::from_secs(1),
                successes: 1,
            }
        );
        let c = parse(&format!(
            "{MIN}[readiness]\nkind = \"exec\"\nexec = [\"/usr/bin/check\", \"arg\"]\ninterval = \"1s\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.readiness.kind,
            ReadinessKind::Exec {
                argv: vec!["/usr/bin/check".into(), "arg".into()],
                interval: Duration::from_secs(1),
                probe_timeout: Duration::from_secs(1),
                successes: 1,
            }
        );
        let c = parse(&format!(
            "{MIN}[readiness]\nkind = \"delay\"\ndelay = \"2s\"\nstable = \"1s\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.readiness.kind,
            ReadinessKind::Delay {
                delay: Duration::from_secs(2)
            }
        );
        assert_eq!(c.readiness.stable, Duration::from_secs(1));
        assert_eq!(c.readiness.kind.name(), "delay");
        assert_eq!(c.readiness.kind.to_string(), "delay");
    }
}
