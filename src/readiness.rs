//! Readiness checks of one worker.
//!
//! [`Tracker`] holds the per-worker bookkeeping (consecutive successes, next attempt, last
//! failure) for the periodic kinds (`http`, `tcp`, `exec`); `notify` and `delay` need none.
//! HTTP and TCP attempts run on a short-lived thread each (blocking I/O with timeouts, no async
//! runtime) and report through a channel plus a [`Waker`] that wakes the event loop; `exec`
//! attempts are child processes that the supervisor reaps like any other child.
//!
//! Probes always target the worker's *private* probe socket, never the shared port.
//! This module decides nothing about generations.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sys::{self, Pid};

/// Result of one probe attempt against one worker.
#[derive(Debug)]
pub struct ProbeResult {
    pub worker: Pid,
    pub ok: bool,
    pub detail: String,
}

/// Per-worker probe bookkeeping.
#[derive(Debug)]
pub struct Tracker {
    pub successes_needed: u32,
    pub interval: Duration,
    pub probe_timeout: Duration,
    consecutive: u32,
    pub in_flight: bool,
    pub next_at: Instant,
    pub last_failure: Option<String>,
}

impl Tracker {
    pub fn new(now: Instant, successes: u32, interval: Duration, probe_timeout: Duration) -> Self {
        Tracker {
            successes_needed: successes.max(1),
            interval,
            probe_timeout,
            consecutive: 0,
            in_flight: false,
            next_at: now,
            last_failure: None,
        }
    }

    /// Whether an attempt should start now.
    pub fn due(&self, now: Instant) -> bool {
        !self.in_flight && now >= self.next_at
    }

    /// When the next attempt is due (None while one is in flight).
    pub fn deadline(&self) -> Option<Instant> {
        (!self.in_flight).then_some(self.next_at)
    }

    pub fn started(&mut self) {
        self.in_flight = true;
    }

    /// Record an attempt's outcome; true once enough consecutive attempts succeeded.
    pub fn record(&mut self, now: Instant, ok: bool, detail: String) -> bool {
        self.in_flight = false;
        self.next_at = now + self.interval;
        if ok {
            self.consecutive += 1;
        } else {
            self.consecutive = 0;
            self.last_failure = Some(detail);
        }
        self.consecutive >= self.successes_needed
    }
}

/// Wakes the event loop from another thread.
#[derive(Clone)]
pub struct Waker(Arc<UnixStream>);

/// The event loop's end of the waker.
pub struct WakeReceiver(UnixStream);

pub fn waker() -> io::Result<(Waker, WakeReceiver)> {
    let (a, b) = UnixStream::pair()?;
    a.set_nonblocking(true)?;
    b.set_nonblocking(true)?;
    Ok((Waker(Arc::new(a)), WakeReceiver(b)))
}

impl Waker {
    pub fn wake(&self) {
        // a full buffer already guarantees a wake-up
        let _ = (&*self.0).write(&[1]);
    }
}

impl WakeReceiver {
    pub fn drain(&self) {
        let mut buf = [0u8; 256];
        while let Ok(n) = (&self.0).read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    }
}

impl AsFd for WakeReceiver {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// What to probe.
#[derive(Debug)]
pub enum Target {
    /// The worker's private listener (a duplicate of it, to read its accept queue) and address.
    Tcp(SocketAddr, OwnedFd),
    Http(SocketAddr, String),
}

/// Run one attempt on its own thread; the result arrives on `tx`.
pub fn start(
    target: Target,
    timeout: Duration,
    worker: Pid,
    tx: Sender<ProbeResult>,
    waker: Waker,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name("baton-probe".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let (ok, detail) = match &target {
                Target::Tcp(addr, listener) => tcp(*addr, listener.as_fd(), timeout),
                Target::Http(addr, path) => http(*addr, path, timeout),
            };
            let _ = tx.send(ProbeResult { worker, ok, detail });
            waker.wake();
        })?;
    Ok(())
}

/// A TCP check must show that the *worker* accepts: baton created the private listener, so a
/// bare connect would succeed through the kernel's backlog even if the worker never accepted.
/// Success = our connection left the listener's accept queue (the worker took it).
fn tcp(addr: SocketAddr, listener: BorrowedFd<'_>, timeout: Duration) -> (bool, String) {
    let deadline = Instant::now() + timeout;
    let _conn = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(c) => c,
        Err(e) => return (false, format!("tcp connect: {e}")),
    };
    loop {
        match sys::accept_queue_len(listener) {
            Ok(0) => return (true, "connection accepted".into()),
            Ok(_) => {}
            Err(e) => return (false, format!("tcp: reading the accept queue: {e}")),
        }
        if Instant::now() >= deadline {
            return (false, "tcp: connection not accepted in time".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn http(addr: SocketAddr, path: &str, timeout: Duration) -> (bool, String) {
    let deadline = Instant::now() + timeout;
    let mut s = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) => return (false, format!("http connect: {e}")),
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: baton-probe\r\nConnection: close\r\n\r\n"
    );
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return (false, "http: timed out".into());
    }
    let _ = s.set_write_timeout(Some(left));
    if let Err(e) = s.write_all(req.as_bytes()) {
        return (false, format!("http send: {e}"));
    }
    // read until the status line is complete
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..end]).to_string();
            return match parse_status(&line) {
                Some(code) if (200..300).contains(&code) => (true, format!("HTTP {code}")),
                Some(code) => (false, format!("HTTP {code} from {path}")),
                None => (false, format!("http: malformed status line {line:?}")),
            };
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (false, "http: timed out waiting for the response".into());
        }
        let _ = s.set_read_timeout(Some(left));
        match s.read(&mut chunk) {
            Ok(0) => return (false, "http: connection closed before a response".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                return (false, "http: timed out waiting for the response".into())
            }
            Err(e) => return (false, format!("http read: {e}")),
        }
        if buf.len() > 8192 {
            return (false, "http: status line too long".into());
        }
    }
}

fn parse_status(line: &str) -> Option<u16> {
    let mut it = line.split_whitespace();
    let proto = it.next()?;
    if !proto.starts_with("HTTP/") {
        return None;
    }
    it.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line() {
        assert_eq!(parse_status("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(parse_status("HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(parse_status("SSH-2.0"), None);
    }

    #[test]
    fn tracker_needs_consecutive_successes() {
        let t0 = Instant::now();
        let mut t = Tracker::new(t0, 2, Duration::from_millis(100), Duration::from_secs(1));
        assert!(t.due(t0));
        t.started();
        assert!(!t.due(t0));
        assert!(!t.record(t0, true, "ok".into()));
        assert!(!t.record(t0, false, "HTTP 503".into()));
        assert!(!t.record(t0, true, "ok".into()));
        assert!(t.record(t0, true, "ok".into()));
        assert_eq!(t.last_failure.as_deref(), Some("HTTP 503"));
    }

    #[test]
    fn tcp_probe_needs_the_connection_accepted() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let dup = OwnedFd::from(l.try_clone().unwrap());
        // nobody accepts: the connect succeeds through the backlog, the check must not
        let (ok, detail) = tcp(addr, dup.as_fd(), Duration::from_millis(200));
        assert!(!ok, "{detail}");
        // drain the stale connection, then accept the probe's
        let h = std::thread::spawn(move || {
            let _stale = l.accept().unwrap();
            let _probe = l.accept().unwrap();
            std::thread::sleep(Duration::from_millis(100));
        });
        let (ok, detail) = tcp(addr, dup.as_fd(), Duration::from_secs(2));
        assert!(ok, "{detail}");
        h.join().unwrap();
    }

    #[test]
    fn http_probe_against_a_real_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            for code in ["200 OK", "503 Service Unavailable"] {
                let (mut c, _) = l.accept().unwrap();
                let mut b = [0u8; 512];
                let _ = c.read(&mut b).unwrap();
                let _ = c.write_all(format!("HTTP/1.1 {code}\r\n\r\n").as_bytes());
            }
        });
        assert!(http(addr, "/healthz", Duration::from_secs(2)).0);
        let (ok, detail) = http(addr, "/healthz", Duration::from_secs(2));
        assert!(!ok);
        assert!(detail.contains("503"), "{detail}");
        h.join().unwrap();
    }
}
