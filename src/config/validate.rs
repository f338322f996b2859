//! Conversion and validation: [`Ctx`] turns the raw structs into a [`Config`], checking every
//! value (ranges, paths, environment names, socket names and addresses, durations, nice values,
//! backoff) and naming the file, line and key of the first one that is wrong.
//!
//! Must never read a file or anything outside the text it was given.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::error::ConfigError;
use super::raw::{RawArgv, RawConfig, RawDuration};
use super::{
    check_control_path, parse_duration, Config, Drain, Handover, Restart, SocketAddrSpec,
    SocketSpec, StopSignal, DEFAULT_BACKOFF_INITIAL, DEFAULT_BACKOFF_MAX, DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_HISTORY, MAX_DURATION, MAX_HISTORY, MAX_INSTANCES, MAX_SOCKET_NAME, MAX_UNIX_PATH,
    SET_BY_BATON,
};

pub(super) struct Ctx<'a> {
    pub(super) text: &'a str,
    pub(super) origin: &'a str,
}

impl Ctx<'_> {
    pub(super) fn convert(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let command = match raw.command {
            None => {
                return Err(ConfigError {
                    file: self.origin.to_string(),
                    line: None,
                    column: None,
                    key: Some("command".to_string()),
                    message: "missing required key `command` (the worker argv, like \
                              command = [\"/usr/bin/app\", \"--flag\"])"
                        .to_string(),
                })
            }
            Some(c) => self.argv(&c, "command")?,
        };

        let instances = match raw.instances {
            None => 1,
            Some(n) => match u32::try_from(*n.get_ref()) {
                Ok(v) if (1..=MAX_INSTANCES).contains(&v) => v,
                _ => {
                    return Err(self.err(
                        Some(n.span()),
                        "instances",
                        format!(
                            "instances must be between 1 and {MAX_INSTANCES}, got {}",
                            n.get_ref()
                        ),
                    ))
                }
            },
        };

        let history = match raw.history {
            None => DEFAULT_HISTORY,
            Some(n) => match u32::try_from(*n.get_ref()) {
                Ok(v) if (1..=MAX_HISTORY).contains(&v) => v,
                _ => {
                    return Err(self.err(
                        Some(n.span()),
                        "history",
                        format!(
                            "history must be between 1 and {MAX_HISTORY}, got {}",
                            n.get_ref()
                        ),
                    ))
                }
            },
        };

        let raw_control_span = raw.control.as_ref().map(|c| c.span());
        let control = match raw.control {
            None => None,
            Some(c) => {
                let p = self.path(&c, "control")?;
                if c.get_ref().len() > MAX_UNIX_PATH {
                    return Err(self.err(
                        Some(c.span()),
                        "control",
                        format!(
                            "control socket path is too long ({} bytes, at most {MAX_UNIX_PATH})",
                            c.get_ref().len()
                        ),
                    ));
                }
                Some(p)
            }
        };
        let cwd = match raw.cwd {
            None => None,
            Some(c) => Some(self.path(&c, "cwd")?),
        };
        let release = match raw.release {
            None => None,
            Some(r) => {
                let p = self.path(&r, "release")?;
                if !p.is_absolute() {
                    return Err(self.err(
                        Some(r.span()),
                        "release",
                        "`release` must be an absolute path: the directory a deploy points at, \
                         like \"/srv/api/current\"",
                    ));
                }
                Some(p)
            }
        };

        let mut env = BTreeMap::new();
        for (name, value) in raw.env {
            let key = format!("env.{name}");
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(self.err(
                    Some(value.span()),
                    key,
                    "environment variable names must be non-empty and contain no '=' or NUL",
                ));
            }
            if value.get_ref().contains('\0') {
                return Err(self.err(
                    Some(value.span()),
                    key,
                    "environment values must not contain NUL",
                ));
            }
            if SET_BY_BATON.contains(&name.as_str()) {
                return Err(self.err(
                    Some(value.span()),
                    key,
                    "baton sets this variable for every worker (socket activation and notify)",
                ));
            }
            env.insert(name, value.into_inner());
        }

        let spanned_sockets = self.sockets(raw.sockets)?;
        let handover = self.handover(&raw.handover)?;
        if handover == Handover::Bind {
            for (s, span) in &spanned_sockets {
                if matches!(s.addr, SocketAddrSpec::Tcp(a) if a.port() == 0) {
                    return Err(self.err(
                        Some(span.clone()),
                        format!("sockets.{}", s.name),
                        format!(
                            "port 0 with handover = \"bind\": the app binds its own port, and \
                             baton answers only a bind of its sockets' own port, which port 0 \
                             leaves to the kernel (a new one for each bind): give the port the \
                             app binds, like \"{}:3000\"",
                            match s.addr {
                                SocketAddrSpec::Tcp(std::net::SocketAddr::V6(a)) =>
                                    format!("[{}]", a.ip()),
                                SocketAddrSpec::Tcp(a) => a.ip().to_string(),
                                SocketAddrSpec::Unix(_) => String::new(),
                            }
                        ),
                    ));
                }
            }
        }
        let sockets: Vec<SocketSpec> = spanned_sockets.into_iter().map(|(s, _)| s).collect();
        if let (Some(path), Some(c)) = (&control, &raw_control_span) {
            check_control_path(path, &sockets)
                .map_err(|m| self.err(Some(c.clone()), "control", m))?;
        }
        let readiness = self.readiness(raw.readiness, handover)?;

        let drain = Drain {
            signal: match raw.drain.signal {
                None => StopSignal::TERM,
                Some(s) => s
                    .get_ref()
                    .parse()
                    .map_err(|m: String| self.err(Some(s.span()), "drain.signal", m))?,
            },
            timeout: self.duration(&raw.drain.timeout, "drain.timeout", DEFAULT_DRAIN_TIMEOUT)?,
            nice: match &raw.drain.nice {
                None => None,
                v => Some(self.nice(v, "drain.nice", 0)?),
            },
        };

        let r = raw.restart;
        let backoff_initial = self.duration(
            &r.backoff_initial,
            "restart.backoff_initial",
            DEFAULT_BACKOFF_INITIAL,
        )?;
        let backoff_max =
            self.duration(&r.backoff_max, "restart.backoff_max", DEFAULT_BACKOFF_MAX)?;
        if backoff_initial.is_zero() {
            return Err(self.err(
                r.backoff_initial.as_ref().map(|s| s.span()),
                "restart.backoff_initial",
                "backoff_initial must be greater than zero",
            ));
        }
        if backoff_initial > backoff_max {
            let (span, key) = match (&r.backoff_initial, &r.backoff_max) {
                (Some(s), _) => (Some(s.span()), "restart.backoff_initial"),
                (None, Some(s)) => (Some(s.span()), "restart.backoff_max"),
                (None, None) => (None, "restart.backoff_initial"),
            };
            return Err(self.err(
                span,
                key,
                format!(
                    "backoff_initial ({backoff_initial:?}) must not exceed backoff_max ({backoff_max:?})"
                ),
            ));
        }

        Ok(Config {
            command,
            instances,
            control,
            cwd,
            release,
            handover,
            history,
            env,
            sockets,
            readiness,
            drain,
            restart: Restart {
                backoff_initial,
                backoff_max,
            },
        })
    }

    pub(super) fn argv(&self, v: &Spanned<RawArgv>, key: &str) -> Result<Vec<String>, ConfigError> {
        let args = &v.get_ref().0;
        if args.is_empty() {
            return Err(self.err(
                Some(v.span()),
                key,
                format!("`{key}` must not be empty: give the program and its arguments, like [\"/usr/bin/app\"]"),
            ));
        }
        if args[0].get_ref().is_empty() {
            return Err(self.err(
                Some(args[0].span()),
                key,
                "the program (first element) must not be an empty string",
            ));
        }
        if let Some(a) = args.iter().find(|a| a.get_ref().contains('\0')) {
            return Err(self.err(Some(a.span()), key, "arguments must not contain NUL"));
        }
        Ok(args.iter().map(|a| a.get_ref().clone()).collect())
    }

    fn path(&self, v: &Spanned<String>, key: &str) -> Result<PathBuf, ConfigError> {
        let s = v.get_ref();
        if s.is_empty() {
            return Err(self.err(Some(v.span()), key, "path must not be empty"));
        }
        if s.contains('\0') {
            return Err(self.err(Some(v.span()), key, "path must not contain NUL"));
        }
        Ok(PathBuf::from(s))
    }

    fn sockets(
        &self,
        raw: BTreeMap<String, Spanned<String>>,
    ) -> Result<Vec<(SocketSpec, Range<usize>)>, ConfigError> {
        // toml tables are sorted maps; restore file order from the spans.
        let mut entries: Vec<(String, Spanned<String>)> = raw.into_iter().collect();
        entries.sort_by_key(|(_, v)| v.span().start);
        let mut out: Vec<(SocketSpec, Range<usize>)> = Vec::with_capacity(entries.len());
        for (name, value) in entries {
            let key = format!("sockets.{name}");
            if name.is_empty()
                || name.len() > MAX_SOCKET_NAME
                || name.contains(':')
                || !name.chars().all(|c| c.is_ascii() && !c.is_ascii_control())
            {
                return Err(self.err(
                    Some(value.span()),
                    key,
                    format!(
                        "invalid socket name {name:?}: names must be 1 to {MAX_SOCKET_NAME} printable \
                         ASCII characters without ':'"
                    ),
                ));
            }
            let addr: SocketAddrSpec = value
                .get_ref()
                .parse()
                .map_err(|m: String| self.err(Some(value.span()), key.clone(), m))?;
            for (other, span) in &out {
                if let Some(why) = addr.collides_with(&other.addr) {
                    let (line, _) = super::error::line_col(self.text, span.start);
                    return Err(self.err(
                        Some(value.span()),
                        key,
                        format!(
                            "{addr} cannot be bound next to `sockets.{}` ({}, line {line}): \
                             {why}, so the second bind would fail with \"Address already in \
                             use\"",
                            other.name, other.addr
                        ),
                    ));
                }
            }
            out.push((SocketSpec { name, addr }, value.span()));
        }
        Ok(out)
    }

    /// A nice value for workers: 0 (their running priority) to 19.
    pub(super) fn nice(
        &self,
        v: &Option<Spanned<i64>>,
        key: &str,
        default: i32,
    ) -> Result<i32, ConfigError> {
        match v {
            None => Ok(default),
            Some(n) => match i32::try_from(*n.get_ref()) {
                Ok(v) if (0..=19).contains(&v) => Ok(v),
                _ => Err(self.err(
                    Some(n.span()),
                    key,
                    format!(
                        "{} must be a nice value from 0 to 19, got {}",
                        key.rsplit('.').next().unwrap_or(key),
                        n.get_ref()
                    ),
                )),
            },
        }
    }

    pub(super) fn duration(
        &self,
        v: &Option<Spanned<RawDuration>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(v) = v else { return Ok(default) };
        let found = match v.get_ref() {
            RawDuration::Str(s) => {
                let d = parse_duration(s).map_err(|m| self.err(Some(v.span()), key, m))?;
                if d > MAX_DURATION {
                    return Err(self.err(
                        Some(v.span()),
                        key,
                        format!(
                            "duration {s:?} is too long: durations are at most one day (\"24h\")"
                        ),
                    ));
                }
                return Ok(d);
            }
            RawDuration::Int(n) => format!("integer {n}"),
            RawDuration::Float(f) => format!("number {f}"),
        };
        Err(self.err(
            Some(v.span()),
            key,
            format!(
                "durations must be strings with a unit: use a string like \"30s\" (found {found})"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{assert_err, err, parse, MIN};

    #[test]
    fn missing_command() {
        let e = err("instances = 2\n");
        assert_eq!(e.key.as_deref(), Some("command"));
        assert_eq!(e.line, None);
        assert!(
            e.to_string().starts_with("test.toml: key `command`: "),
            "{e}"
        );
        let e = err("");
        assert_eq!(e.key.as_deref(), Some("command"));
    }

    #[test]
    fn validation_errors_name_line_and_key() {
        // empty command
        assert_err("# c\ncommand = []\n", 2, "command");
        assert_err("command = [\"\", \"x\"]\n", 1, "command");
        // instances
        assert_err(&format!("{MIN}instances = 0\n"), 2, "instances");
        assert_err(&format!("{MIN}instances = 1025\n"), 2, "instances");
        // history
        assert_err(&format!("{MIN}history = 0\n"), 2, "history");
        assert_err(&format!("{MIN}history = 101\n"), 2, "history");
        assert_eq!(
            parse(&format!("{MIN}history = 100\n")).unwrap().history,
            100
        );
        assert_eq!(parse(MIN).unwrap().history, 10);
        assert_err(&format!("{MIN}instances = -3\n"), 2, "instances");
        assert_eq!(
            parse(&format!("{MIN}instances = 1024\n"))
                .unwrap()
                .instances,
            1024
        );
        // paths
        assert_err(&format!("{MIN}control = \"\"\n"), 2, "control");
        assert_err(
            &format!("{MIN}control = \"/{}\"\n", "x".repeat(120)),
            2,
            "control",
        );
        assert_err(&format!("{MIN}cwd = \"\"\n"), 2, "cwd");
        assert_err(&format!("{MIN}release = \"\"\n"), 2, "release");
        let e = assert_err(&format!("{MIN}release = \"current\"\n"), 2, "release");
        assert!(e.message.contains("absolute path"), "{e}");
        assert_err(&format!("{MIN}release = [\"/srv\"]\n"), 2, "release");
        // nice values
        for (table, key, bad) in [
            ("readiness", "startup_nice", "20"),
            ("readiness", "startup_nice", "-1"),
            ("drain", "nice", "40"),
        ] {
            let e = assert_err(
                &format!("{MIN}[{table}]\n{key} = {bad}\n"),
                3,
                &format!("{table}.{key}"),
            );
            assert!(e.message.contains("0 to 19"), "{e}");
        }
        for bad in ["0", "-2", "1025"] {
            let e = assert_err(
                &format!("{MIN}[readiness]\nmax_starting = {bad}\n"),
                3,
                "readiness.max_starting",
            );
            assert!(e.message.contains("from 1 to 1024"), "{e}");
        }
        // env
        assert_err(&format!("{MIN}[env]\n\"A=B\" = \"1\"\n"), 3, "env.A=B");
        let e = assert_err(
            &format!("{MIN}[env]\nLISTEN_FDS = \"1\"\n"),
            3,
            "env.LISTEN_FDS",
        );
        assert!(e.message.contains("baton sets"), "{e}");
        assert_err(
            &format!("{MIN}[env]\nNOTIFY_SOCKET = \"/x\"\n"),
            3,
            "env.NOTIFY_SOCKET",
        );
        // sockets
        assert_err(
            &format!("{MIN}[sockets]\nhttp = \"localhost:80\"\n"),
            3,
            "sockets.http",
        );
        assert_err(
            &format!("{MIN}[sockets]\nhttp = \"127.0.0.1\"\n"),
            3,
            "sockets.http",
        );
        assert_err(
            &format!("{MIN}[sockets]\nu = \"unix:rel.sock\"\n"),
            3,
            "sockets.u",
        );
        assert_err(
            &format!("{MIN}[sockets]\n\"a:b\" = \"127.0.0.1:1\"\n"),
            3,
            "sockets.a:b",
        );
        let e = assert_err(
            &format!("{MIN}[sockets]\na = \"127.0.0.1:1\"\nb = \"127.0.0.1:1\"\n"),
            4,
            "sockets.b",
        );
        assert!(e.message.contains("`sockets.a`"), "{e}");
        // readiness kinds
        assert_err(
            &format!("{MIN}[readiness]\nkind = \"http2\"\n"),
            3,
            "readiness.kind",
        );
        let e = assert_err(
            &format!("{MIN}[readiness]\nkind = \"exec\"\n"),
            3,
            "readiness.exec",
        );
        assert!(e.message.contains("requires `exec`"), "{e}");
        assert_err(
            &format!("{MIN}[readiness]\nkind = \"exec\"\nexec = []\n"),
            4,
            "readiness.exec",
        );
        assert_err(
            &format!("{MIN}[readiness]\n\nkind = \"delay\"\n"),
            4,
            "readiness.delay",
        );
        let e = assert_err(
            &format!("{MIN}[readiness]\nkind = \"tcp\"\npath = \"/x\"\n"),
            4,
            "readiness.path",
        );
        assert!(e.message.contains("kind = \"http\""), "{e}");
        assert_err(
            &format!("{MIN}[readiness]\ninterval = \"1s\"\n"),
            3,
            "readiness.interval",
        );
        assert_err(
            &format!("{MIN}[readiness]\nkind = \"delay\"\ndelay = \"1s\"\nsuccesses = 2\n"),
            5,
            "readiness.successes",
        );
        assert_err(
            &format!("{MIN}[readiness]\nkind = \"http\"\nexec = [\"x\"]\n"),
            4,
            "readiness.exec",
        );
        assert_err(
            &format!("{MIN}[readiness]\nkind = \"http\"\npath = \"healthz\"\n"),
            4,
            "readiness.path",
        );
        assert_err(
            &format!("{MIN}[readiness]\nkind = \"tcp\"\nsuccesses = 0\n"),
            4,
            "readiness.successes",
        );
        assert_err(
            &format!("{MIN}[readiness]\ntimeout = \"0s\"\n"),
            3,
            "readiness.timeout",
        );
        assert_err(
            &format!("{MIN}[readiness]\nkind = \"tcp\"\ninterval = \"0s\"\n"),
            4,
            "readiness.interval",
        );
        assert_err(
            &format!("{MIN}[readiness]\nkind = \"delay\"\ndelay = \"1m\"\ntimeout = \"5s\"\n"),
            4,
            "readiness.delay",
        );
        // interval > timeout is fine
        parse(&format!(
            "{MIN}[readiness]\nkind = \"tcp\"\ninterval = \"1m\"\ntimeout = \"5s\"\n"
        ))
        .unwrap();
        // drain
        let e = assert_err(
            &format!("{MIN}[drain]\nsignal = \"SIGKILL\"\n"),
            3,
            "drain.signal",
        );
        assert!(e.message.contains("SIGTERM"), "{e}");
        // restart
        let e = assert_err(
            &format!("{MIN}[restart]\nbackoff_initial = \"20s\"\nbackoff_max = \"10s\"\n"),
            3,
            "restart.backoff_initial",
        );
        assert!(e.message.contains("must not exceed"), "{e}");
        assert_err(
            &format!("{MIN}[restart]\nbackoff_max = \"10ms\"\n"),
            3,
            "restart.backoff_max",
        );
        assert_err(
            &format!("{MIN}[restart]\nbackoff_initial = \"0s\"\n"),
            3,
            "restart.backoff_initial",
        );
    }
}
