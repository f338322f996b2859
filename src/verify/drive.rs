//! The traffic `baton verify` sends, over the project's load client ([`crate::load`]), with
//! every request's times on CLOCK_MONOTONIC (µs), the clock of baton's events.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use super::checks;
use crate::load;
pub use crate::load::Target;
use crate::sys;

/// How a target is named in verify's lines.
pub fn describe(t: &Target) -> String {
    match t {
        Target::Tcp(a) => a.to_string(),
        Target::Unix(p) => format!("unix:{}", p.display()),
    }
}

/// An `Instant` on CLOCK_MONOTONIC, µs (`Instant` reads that clock on Linux).
fn mono_us(at: Instant) -> u64 {
    let (now, mono) = (Instant::now(), sys::monotonic_us());
    mono.saturating_sub(now.saturating_duration_since(at).as_micros() as u64)
}

/// A load run, recording every request.
pub struct Load(Option<load::Running>, std::sync::Arc<(String, bool)>);

impl Load {
    /// `GET path` on `concurrency` connections (kept alive, or one per request) at `rate`
    /// requests per second (0: as fast as they go). A load that cannot start records nothing.
    pub fn start(
        target: &Target,
        path: &str,
        keepalive: bool,
        concurrency: u32,
        rate: f64,
    ) -> Load {
        let mut spec = load::Spec::new(target.clone());
        spec.path = path.to_string();
        spec.mode = match keepalive {
            true => load::Mode::Keepalive,
            false => load::Mode::Close,
        };
        spec.concurrency = concurrency;
        spec.rate = rate;
        spec.timeout = Duration::from_secs(10);
        spec.record = true;
        Load(
            load::start(spec).ok(),
            std::sync::Arc::new((path.to_string(), keepalive)),
        )
    }

    /// Stop; every request it made.
    pub fn stop(self) -> Vec<checks::Request> {
        let Some(running) = self.0 else {
            return Vec::new();
        };
        let report = running.stop();
        report
            .records
            .iter()
            .map(|r| checks::Request {
                start_us: mono_us(r.start),
                end_us: mono_us(r.end),
                failure: match r.outcome {
                    load::Outcome::Ok => None,
                    load::Outcome::Failed(k) => Some(k.name().to_string()),
                },
                reused_unanswered: r.reused && r.received == 0,
                load: self.1.clone(),
            })
            .collect()
    }
}

/// Kept-alive connections held idle across a stop signal.
pub struct Idle(Result<load::Idle, String>);

impl Idle {
    /// `n` connections, each waiting up to 10 s for its first answer (a few sync workers
    /// busy with slow requests take seconds).
    pub fn open(target: &Target, path: &str, n: usize) -> Idle {
        Idle(load::Idle::open(target, path, n, Duration::from_secs(10)).map_err(|f| f.message))
    }

    /// Marks the connections the app has closed by now: they tell nothing of a stop signal
    /// that comes later.
    pub fn mark_closed(&mut self) {
        if let Ok(i) = self.0.as_mut() {
            i.mark_closed();
        }
    }

    /// One more request on each: what became of them.
    pub fn use_each(self) -> checks::Idle {
        let mut out = checks::Idle::default();
        let uses = match self.0 {
            Ok(idle) => idle.use_each(),
            Err(why) => {
                out.unopened = Some(why);
                Vec::new()
            }
        };
        for u in uses {
            match u {
                load::Use::Answered(_) => out.answered += 1,
                load::Use::ClosedBeforeUse => out.closed += 1,
                load::Use::Cut { .. } => out.cut += 1,
                load::Use::ClosedEarly => out.early += 1,
                load::Use::NotKept => out.not_kept += 1,
            }
        }
        out
    }
}

/// `GET path` once: the app must answer it with a 2xx (a 404 would count as a failed request
/// at every turn, which is no fault of the drain).
pub fn preflight(target: &Target, path: &str) -> Result<(), String> {
    let idle = load::Idle::open(target, path, 1, Duration::from_secs(10))
        .map_err(|f| format!("GET {path}: {}", f.message))?;
    match idle.answers().first().map(|a| a.status) {
        Some(s) if (200..300).contains(&s) => Ok(()),
        Some(s) => Err(format!(
            "GET {path} answered {s}: give a path the app answers with 2xx (--path, --slow-path)"
        )),
        None => Err(format!("GET {path}: no answer")),
    }
}

/// One `GET path` on a new connection: when the first byte of its answer came (µs), or why
/// none did within `timeout`.
pub fn first_answer(target: &Target, path: &str, timeout: Duration) -> Result<u64, String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: verify\r\nConnection: close\r\n\r\n");
    let mut byte = [0u8; 1];
    let got = match target {
        Target::Tcp(a) => std::net::TcpStream::connect_timeout(a, timeout).and_then(|mut s| {
            s.set_read_timeout(Some(timeout))?;
            s.write_all(request.as_bytes())?;
            s.read(&mut byte)
        }),
        Target::Unix(p) => std::os::unix::net::UnixStream::connect(p).and_then(|mut s| {
            s.set_read_timeout(Some(timeout))?;
            s.write_all(request.as_bytes())?;
            s.read(&mut byte)
        }),
    };
    match got {
        Ok(1) => Ok(sys::monotonic_us()),
        Ok(_) => Err("the connection was closed without an answer".into()),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            Err(format!("no answer within {timeout:?}"))
        }
        Err(e) => Err(e.to_string()),
    }
}
