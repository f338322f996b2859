//! The project's HTTP/1.1 load client, which counts *every* failed request: the engine of
//! `examples/loadgen` (the test suite's and the benchmarks' load) and of `baton verify`.
//!
//! Each of [`Spec::concurrency`] worker threads sends `GET` [`Spec::path`] requests, either
//! over one kept-alive connection ([`Mode::Keepalive`], reconnecting without counting a
//! failure when the server announces `Connection: close` or has visibly closed the idle
//! connection) or over a fresh connection per request ([`Mode::Close`]). A request is ok iff a
//! complete 2xx response arrived (`Content-Length`, chunked, or read-until-close body);
//! everything else is counted by [`Kind`]: `refused`, `connect_timeout`, `connect_other`,
//! `reset`, `eof`, `timeout`, `bad_status`, `malformed`. By default failed requests are never
//! retried: a failure on a reused connection, even with 0 bytes received, is a failure, so a
//! server that closes a kept-alive connection without `Connection: close` is only forgiven if
//! the close (FIN/RST) arrived before the next request was sent. With [`Spec::retry_reused`]
//! the client does what curl, browsers and Go's `http.Transport` do (RFC 9112 §9.3.1): a
//! request on a reused connection that ends (EOF or reset) before any byte of its answer is
//! sent once more on a new connection; `retried` counts those, and the retry's own outcome is
//! what counts. `status_codes` counts non-2xx responses, `pids` counts every complete response
//! by its `X-Worker-Pid` header.
//!
//! With a [`Spec::rate`] R > 0, global request `n` is scheduled at `start + n / R` and worker
//! `i` owns the slots `n ≡ i (mod concurrency)`: an absolute schedule that never drifts.
//! Latency is measured from the actual start of the request (including the connect when a new
//! connection is needed), not from the scheduled slot. [`Spec::timeout`] bounds the connect
//! and, separately, the exchange after it.
//!
//! A run ([`start`] → [`Running::stop`], or [`run`] with a [`Handle`]) stops on
//! [`Spec::duration`] or when told to; no request starts after that, and in-flight requests
//! finish (bounded by the timeout) and are counted. Its [`Report`] serializes to the JSON line
//! of `loadgen --json`; with [`Spec::record`] it also holds a [`Record`] of every request
//! (start and end instants, outcome, status, bytes received, reused connection or not, worker
//! pid), which is what tells the requests in flight at a given instant.
//!
//! [`Idle`] holds kept-alive connections idle and uses each once more later, telling a
//! connection the server closed while it was idle ([`Use::ClosedBeforeUse`], forgivable) from
//! a request cut under way ([`Use::Cut`]).
//!
//! A client only: it never touches baton's processes, sockets or config, and prints nothing.
//! Its socket calls (a unix connect bounded in time, SO_RCVTIMEO/SO_SNDTIMEO, a peek that
//! never blocks) are `crate::sys`'s.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::sys;

/// How many error messages (and retry messages) end up in the report.
const MAX_ERRORS: usize = 20;
/// Upper bound for a response head, to detect garbage.
const MAX_HEAD: usize = 64 * 1024;

// ------------------------------------------------------------------------------------------
// What to run

/// Where the requests go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Tcp(SocketAddr),
    /// A unix stream socket's path.
    Unix(PathBuf),
}

impl Target {
    /// The `Host` header when none is given: the address, or `localhost` for a unix socket.
    fn default_host(&self) -> String {
        match self {
            Target::Tcp(addr) => addr.to_string(),
            Target::Unix(_) => "localhost".to_string(),
        }
    }
}

/// One kept-alive connection per worker, or a new connection per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Keepalive,
    Close,
}

/// A load run: what to request, how, how often and for how long.
#[derive(Clone, Debug)]
pub struct Spec {
    pub target: Target,
    /// The `Host` header; `None`: the TCP address, or `localhost` for a unix socket.
    pub host: Option<String>,
    /// Request path.
    pub path: String,
    pub mode: Mode,
    /// Worker threads (= concurrent connections), at least 1.
    pub concurrency: u32,
    /// Requests per second across all workers; 0: as fast as possible.
    pub rate: f64,
    /// No request starts once this much has passed since the start; `None`: until stopped.
    pub duration: Option<Duration>,
    /// Connect timeout, and time allowed for a complete response after sending.
    pub timeout: Duration,
    /// Send a request once more, on a new connection, when the reused connection it went out
    /// on ends before any byte of its answer (RFC 9112 §9.3.1).
    pub retry_reused: bool,
    /// Keep a [`Record`] of every request in the report.
    pub record: bool,
}

impl Spec {
    /// `GET /` on `target`, kept alive, 4 connections, unthrottled, until stopped, 5 s
    /// timeout, no retry, no records.
    pub fn new(target: Target) -> Spec {
        Spec {
            target,
            host: None,
            path: "/".to_string(),
            mode: Mode::Keepalive,
            concurrency: 4,
            rate: 0.0,
            duration: None,
            timeout: Duration::from_secs(5),
            retry_reused: false,
            record: false,
        }
    }

    fn check(&self) -> io::Result<()> {
        let invalid = |msg: String| Err(io::Error::new(ErrorKind::InvalidInput, msg));
        if self.concurrency == 0 {
            return invalid("concurrency must be at least 1".into());
        }
        if !(self.rate.is_finite() && self.rate >= 0.0) {
            return invalid(format!("rate must be >= 0, got {}", self.rate));
        }
        Ok(())
    }
}

/// The request line and headers every request of a run sends.
fn request(host: &str, path: &str, mode: Mode) -> Vec<u8> {
    let connection = match mode {
        Mode::Keepalive => "keep-alive",
        Mode::Close => "close",
    };
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: baton-loadgen\r\n\
         Connection: {connection}\r\n\r\n"
    )
    .into_bytes()
}

// ------------------------------------------------------------------------------------------
// Outcomes

/// Why a request failed; in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// The connect was refused (nobody listening).
    Refused,
    /// The connect did not complete within the timeout (a full backlog).
    ConnectTimeout,
    /// The connect failed otherwise.
    ConnectOther,
    /// The connection was reset (or another socket error) under the request.
    Reset,
    /// The server closed the connection before a complete answer.
    Eof,
    /// No complete answer within the timeout.
    Timeout,
    /// A complete answer, not 2xx.
    BadStatus,
    /// An answer that is not HTTP/1.x.
    Malformed,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 8] = [
        Kind::Refused,
        Kind::ConnectTimeout,
        Kind::ConnectOther,
        Kind::Reset,
        Kind::Eof,
        Kind::Timeout,
        Kind::BadStatus,
        Kind::Malformed,
    ];

    /// The report's name: `refused`, `connect_timeout`, ...
    pub fn name(self) -> &'static str {
        match self {
            Kind::Refused => "refused",
            Kind::ConnectTimeout => "connect_timeout",
            Kind::ConnectOther => "connect_other",
            Kind::Reset => "reset",
            Kind::Eof => "eof",
            Kind::Timeout => "timeout",
            Kind::BadStatus => "bad_status",
            Kind::Malformed => "malformed",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failed connect or exchange: its kind and what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Failure {}

fn fail(kind: Kind, message: impl Into<String>) -> Failure {
    let message = message.into();
    Failure { kind, message }
}

fn malformed(what: &str, value: &str) -> Failure {
    fail(Kind::Malformed, format!("bad {what} {value:?}"))
}

/// Classifies an I/O error seen while sending or reading.
fn io_failure(e: io::Error, what: &str) -> Failure {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => fail(
            Kind::Timeout,
            format!("{what}: no complete response in time"),
        ),
        // ECONNRESET, EPIPE, ECONNABORTED and any other socket error.
        _ => fail(Kind::Reset, format!("{what}: {e}")),
    }
}

/// What became of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A complete 2xx answer.
    Ok,
    Failed(Kind),
}

impl Outcome {
    /// `ok`, or the failure kind's name.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed(kind) => kind.name(),
        }
    }
}

/// One request of a run with [`Spec::record`].
#[derive(Clone, Debug)]
pub struct Record {
    /// When it started (before the connect, when it needed a new connection).
    pub start: Instant,
    /// When its answer was complete, or it failed.
    pub end: Instant,
    pub outcome: Outcome,
    /// The status of a complete answer.
    pub status: Option<u16>,
    /// Bytes of its answer received (interim answers, head and body), even when it failed.
    pub received: u64,
    /// It went out on a kept-alive connection that had carried earlier requests.
    pub reused: bool,
    /// It was sent once more on a new connection after its reused connection ended
    /// unanswered ([`Spec::retry_reused`]); `reused` and `received` are the second attempt's.
    pub retried: bool,
    /// The `X-Worker-Pid` header of a complete answer.
    pub pid: Option<String>,
}

/// Failure counts by kind; serialized as an object in report order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts([u64; Kind::ALL.len()]);

impl Counts {
    pub fn get(&self, kind: Kind) -> u64 {
        self.0[kind as usize]
    }

    /// Every kind with its count, in report order.
    pub fn iter(&self) -> impl Iterator<Item = (Kind, u64)> + '_ {
        Kind::ALL.iter().map(|&k| (k, self.get(k)))
    }
}

impl Serialize for Counts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter().map(|(k, n)| (k.name(), n)))
    }
}

/// Latency of the ok requests, in µs (nearest-rank percentiles).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: f64,
}

/// What a run did. Serialized, it is `loadgen --json`'s line (the instants and records are
/// not part of it).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub total: u64,
    pub ok: u64,
    pub failed: u64,
    pub failures: Counts,
    /// With [`Spec::retry_reused`]: requests sent once more (their outcome is in the counts).
    pub retried: u64,
    /// Non-2xx complete answers by status.
    pub status_codes: BTreeMap<u16, u64>,
    pub latency_us: Latency,
    /// From the start to the stop (not to the end of the last in-flight request).
    pub duration_s: f64,
    pub rps: f64,
    /// Complete answers by `X-Worker-Pid`.
    pub pids: BTreeMap<String, u64>,
    /// The first failures, `t=<s since start>s <kind>: <what>`, in time order.
    pub errors: Vec<String>,
    /// The first retries, `t=<s>s <why>`.
    pub retries: Vec<String>,
    /// The run's start: t = 0 of `errors` and `retries`.
    #[serde(skip)]
    pub started: Instant,
    /// With [`Spec::record`]: every request, by start.
    #[serde(skip)]
    pub records: Vec<Record>,
}

// ------------------------------------------------------------------------------------------
// Connections

/// Connects to the target; the socket is returned as a `File` for plain read/write.
fn connect(target: &Target, timeout: Duration) -> Result<File, Failure> {
    let res = match target {
        Target::Tcp(addr) => TcpStream::connect_timeout(addr, timeout).map(|s| {
            let _ = s.set_nodelay(true);
            OwnedFd::from(s)
        }),
        Target::Unix(path) => sys::connect_unix_within(path, timeout),
    };
    res.map(File::from).map_err(|e| {
        let kind = match e.kind() {
            ErrorKind::ConnectionRefused => Kind::Refused,
            ErrorKind::TimedOut | ErrorKind::WouldBlock => Kind::ConnectTimeout,
            _ => Kind::ConnectOther,
        };
        fail(kind, format!("connect: {e}"))
    })
}

/// A connected socket plus the bytes received but not consumed yet.
struct Conn {
    sock: File,
    buf: Vec<u8>,
    /// Responses completed earlier on this connection.
    served: u32,
    /// Bytes received for the current request.
    received: usize,
    /// When the current request was sent.
    sent: Instant,
}

/// A parsed response head (the body is read and discarded).
struct Response {
    status: u16,
    /// The connection must not be reused.
    close: bool,
    /// `X-Worker-Pid` header.
    pid: Option<String>,
    length: Option<u64>,
    chunked: bool,
}

impl Conn {
    fn new(sock: File) -> Conn {
        let (buf, served, received) = (Vec::new(), 0, 0);
        Conn {
            sock,
            buf,
            served,
            received,
            sent: Instant::now(),
        }
    }

    /// True if an idle kept-alive connection can carry another request: the
    /// server has not closed it (EOF/RST) and sent nothing unsolicited.
    fn reusable(&self) -> bool {
        self.buf.is_empty() && matches!(sys::peek_now(&self.sock), sys::Peeked::Quiet)
    }

    /// True if `f` ended the current request before any byte of its answer arrived: the
    /// connection was closed (EOF) or reset, by the peer, under the request.
    fn unanswered(&self, f: &Failure) -> bool {
        self.received == 0 && matches!(f.kind, Kind::Reset | Kind::Eof)
    }

    /// Bounds the next blocking read/write by what is left until `deadline`.
    fn arm(&self, deadline: Instant) -> Result<(), Failure> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(fail(Kind::Timeout, "no complete response in time"));
        }
        sys::set_io_timeouts(&self.sock, left).map_err(|e| io_failure(e, "setsockopt"))
    }

    fn send(&mut self, req: &[u8], deadline: Instant) -> Result<(), Failure> {
        self.arm(deadline)?;
        self.received = 0;
        self.sent = Instant::now();
        self.sock.write_all(req).map_err(|e| io_failure(e, "send"))
    }

    /// Reads more bytes into `buf`; EOF is reported as an `eof` failure.
    fn fill(&mut self, deadline: Instant) -> Result<(), Failure> {
        self.arm(deadline)?;
        let mut chunk = [0u8; 16 * 1024];
        match self.sock.read(&mut chunk) {
            Ok(0) => {
                let (got, served) = (self.received, self.served);
                let msg = format!("closed after {got} response bytes, {served} earlier responses");
                Err(fail(Kind::Eof, msg))
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                self.received += n;
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(io_failure(e, "read")),
        }
    }

    /// Returns the next line (without CRLF), reading as needed.
    fn line(&mut self, deadline: Instant) -> Result<String, Failure> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(malformed("head", "longer than 64 KiB"));
            }
            self.fill(deadline)?;
        }
    }

    /// Discards `n` body bytes.
    fn skip(&mut self, mut n: u64, deadline: Instant) -> Result<(), Failure> {
        while n > 0 {
            if self.buf.is_empty() {
                self.fill(deadline)?;
            }
            let take = self.buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            self.buf.drain(..take);
            n -= take as u64;
        }
        Ok(())
    }

    /// Reads one complete response; interim 1xx responses are skipped.
    fn read_response(&mut self, deadline: Instant) -> Result<Response, Failure> {
        let mut resp = self.read_head(deadline)?;
        while (100..200).contains(&resp.status) && resp.status != 101 {
            resp = self.read_head(deadline)?;
        }
        if resp.chunked {
            self.read_chunked(deadline)?;
        } else if let Some(n) = resp.length {
            self.skip(n, deadline)?;
        } else if !matches!(resp.status, 204 | 304) {
            // No framing (HTTP/1.0 style): the body runs until the server closes.
            loop {
                self.buf.clear();
                match self.fill(deadline) {
                    Ok(()) => {}
                    Err(f) if f.kind == Kind::Eof => break,
                    Err(f) => return Err(f),
                }
            }
            resp.close = true;
        }
        self.served += 1;
        Ok(resp)
    }

    /// Reads a status line and headers.
    fn read_head(&mut self, deadline: Instant) -> Result<Response, Failure> {
        let status_line = self.line(deadline)?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let code = parts.next().and_then(|c| c.parse::<u16>().ok());
        let status = match code {
            Some(c) if version.starts_with("HTTP/1.") && (100..600).contains(&c) => c,
            _ => return Err(malformed("status line", &status_line)),
        };
        let close = version == "HTTP/1.0" || status == 101;
        let mut resp = Response {
            status,
            close,
            pid: None,
            length: None,
            chunked: false,
        };
        loop {
            let line = self.line(deadline)?;
            if line.is_empty() {
                return Ok(resp);
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| malformed("header", &line))?;
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "content-length" => {
                    let n = value
                        .parse()
                        .map_err(|_| malformed("Content-Length", value))?;
                    resp.length = Some(n);
                }
                "transfer-encoding" => {
                    resp.chunked = value.to_ascii_lowercase().contains("chunked")
                }
                "connection" => {
                    let v = value.to_ascii_lowercase();
                    resp.close = v.contains("close") || (resp.close && !v.contains("keep-alive"));
                }
                "x-worker-pid" => resp.pid = Some(value.to_string()),
                _ => {}
            }
        }
    }

    fn read_chunked(&mut self, deadline: Instant) -> Result<(), Failure> {
        loop {
            let line = self.line(deadline)?;
            let hex = line.split(';').next().unwrap_or_default().trim();
            let size = u64::from_str_radix(hex, 16).map_err(|_| malformed("chunk size", &line))?;
            if size == 0 {
                while !self.line(deadline)?.is_empty() {} // trailers
                return Ok(());
            }
            self.skip(size, deadline)?;
            if !self.line(deadline)?.is_empty() {
                return Err(malformed("chunk end", "no CRLF"));
            }
        }
    }

    /// Sends `req` and reads its answer, both within `timeout` from now.
    fn attempt(&mut self, req: &[u8], timeout: Duration) -> Result<Response, Failure> {
        let deadline = Instant::now() + timeout;
        self.send(req, deadline)?;
        self.read_response(deadline)
    }
}

// ------------------------------------------------------------------------------------------
// A run

/// Stops a run, and tells when it has started. Clones share one run; a handle serves one run.
#[derive(Clone, Default)]
pub struct Handle(Arc<Shared>);

#[derive(Default)]
struct Shared {
    stopped: AtomicBool,
    /// Workers that made their first connection attempt.
    ready: AtomicUsize,
    /// Workers of the run; 0 until it starts.
    workers: AtomicUsize,
    lock: Mutex<()>,
    /// Notified on a stop, when the last worker is ready, and when a new pid answered.
    changed: Condvar,
    /// The `X-Worker-Pid`s that answered, in the order of their first answer.
    pids: Mutex<Vec<String>>,
}

impl Shared {
    /// Every worker of the run made its first connection attempt.
    fn started(&self) -> bool {
        let workers = self.workers.load(Ordering::SeqCst);
        workers > 0 && self.ready.load(Ordering::SeqCst) >= workers
    }
}

impl Handle {
    pub fn new() -> Handle {
        Handle::default()
    }

    /// No request starts from now on; those in flight finish (bounded by the timeout).
    pub fn stop(&self) {
        self.0.stopped.store(true, Ordering::SeqCst);
        let _guard = self.lock();
        self.0.changed.notify_all();
    }

    pub fn is_stopped(&self) -> bool {
        self.0.stopped.load(Ordering::SeqCst)
    }

    /// Notes a pid that answered (a worker's first answer from it).
    fn answered_by(&self, pid: &str) {
        let mut pids = self.0.pids.lock().unwrap_or_else(PoisonError::into_inner);
        if pids.iter().any(|p| p == pid) {
            return;
        }
        pids.push(pid.to_string());
        drop(pids);
        let _guard = self.lock();
        self.0.changed.notify_all();
    }

    fn pids_len(shared: &Shared) -> usize {
        shared
            .pids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Waits until more than `seen` pids have answered, and returns those after the first
    /// `seen`, in the order of their first answer; empty once the run stops (or after
    /// `timeout`) with no new one.
    pub fn pids_after(&self, seen: usize, timeout: Option<Duration>) -> Vec<String> {
        let until = timeout.map(|t| Instant::now() + t);
        self.wait_for(until, |s| Handle::pids_len(s) > seen);
        let pids = self.0.pids.lock().unwrap_or_else(PoisonError::into_inner);
        pids.get(seen..).unwrap_or_default().to_vec()
    }

    /// Waits until every worker of the run made its first connection attempt (true), or the
    /// run stopped first or `timeout` passed (false).
    pub fn wait_started(&self, timeout: Option<Duration>) -> bool {
        let until = timeout.map(|t| Instant::now() + t);
        self.wait_for(until, Shared::started);
        self.0.started()
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.0.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until `done`, a stop, or `until`.
    fn wait_for(&self, until: Option<Instant>, done: impl Fn(&Shared) -> bool) {
        let mut guard = self.lock();
        while !done(&self.0) && !self.is_stopped() {
            let changed = &self.0.changed;
            guard = match until {
                None => changed.wait(guard).unwrap_or_else(PoisonError::into_inner),
                Some(t) => match t.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => match changed.wait_timeout(guard, left) {
                        Ok((g, _)) => g,
                        Err(e) => e.into_inner().0,
                    },
                    _ => return,
                },
            };
        }
    }

    /// Sleeps until `t`; false if the run was stopped meanwhile.
    fn sleep_until(&self, t: Instant) -> bool {
        self.wait_for(Some(t), |_| false);
        !self.is_stopped()
    }

    /// Marks one worker's first connection attempt.
    fn mark_ready(&self) {
        let ready = self.0.ready.fetch_add(1, Ordering::SeqCst) + 1;
        if ready == self.0.workers.load(Ordering::SeqCst) {
            let _guard = self.lock();
            self.0.changed.notify_all();
        }
    }
}

/// Immutable run configuration shared by all workers.
struct Config {
    target: Target,
    mode: Mode,
    concurrency: u32,
    rate: f64,
    timeout: Duration,
    request: Vec<u8>,
    record: bool,
    retry_reused: bool,
    t0: Instant,
    /// End of the duration, if given: no request starts at or after it.
    end: Option<Instant>,
    handle: Handle,
}

/// One worker's results, merged at the end.
#[derive(Default)]
struct Stats {
    total: u64,
    ok: u64,
    failures: Counts,
    /// Requests sent once more after their reused connection ended unanswered.
    retried: u64,
    status_codes: BTreeMap<u16, u64>,
    pids: BTreeMap<String, u64>,
    latencies: Vec<u64>,
    errors: Vec<(Duration, String)>,
    retries: Vec<(Duration, String)>,
    records: Vec<Record>,
}

/// How the current request went out.
#[derive(Default)]
struct Attempt {
    reused: bool,
    retried: bool,
    received: usize,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.total += o.total;
        self.ok += o.ok;
        self.retried += o.retried;
        self.retries.extend(o.retries);
        for (a, b) in self.failures.0.iter_mut().zip(o.failures.0) {
            *a += b;
        }
        for (k, v) in o.status_codes {
            *self.status_codes.entry(k).or_default() += v;
        }
        for (k, v) in o.pids {
            *self.pids.entry(k).or_default() += v;
        }
        self.latencies.extend(o.latencies);
        self.errors.extend(o.errors);
        self.records.extend(o.records);
    }

    fn retry(&mut self, cfg: &Config, msg: String) {
        self.retried += 1;
        if self.retries.len() < MAX_ERRORS {
            self.retries.push((cfg.t0.elapsed(), msg));
        }
    }

    fn record(
        &mut self,
        cfg: &Config,
        start: Instant,
        how: Attempt,
        result: Result<Response, Failure>,
    ) {
        let end = Instant::now();
        self.total += 1;
        let (failure, status, pid) = match result {
            Ok(r) if (200..300).contains(&r.status) => (None, Some(r.status), r.pid),
            Ok(r) => (
                Some((Kind::BadStatus, format!("HTTP {}", r.status))),
                Some(r.status),
                r.pid,
            ),
            Err(f) => (Some((f.kind, f.message)), None, None),
        };
        if let Some(p) = &pid {
            let n = self.pids.entry(p.clone()).or_default();
            if *n == 0 {
                cfg.handle.answered_by(p);
            }
            *n += 1;
        }
        let outcome = failure
            .as_ref()
            .map_or(Outcome::Ok, |f| Outcome::Failed(f.0));
        match failure {
            None => {
                self.ok += 1;
                self.latencies.push((end - start).as_micros() as u64);
            }
            Some((k, msg)) => {
                self.failures.0[k as usize] += 1;
                if let (Kind::BadStatus, Some(status)) = (k, status) {
                    *self.status_codes.entry(status).or_default() += 1;
                }
                if self.errors.len() < MAX_ERRORS {
                    self.errors.push((start - cfg.t0, format!("{k}: {msg}")));
                }
            }
        }
        if cfg.record {
            self.records.push(Record {
                start,
                end,
                outcome,
                status,
                received: how.received as u64,
                reused: how.reused,
                retried: how.retried,
                pid,
            });
        }
    }
}

/// One request: reuse the kept-alive connection if it is still open, else connect. With
/// `retry_reused`, a reused connection that ends before any byte of the answer is noted in
/// `stats` and the request goes out once more on a new connection.
fn exchange(
    cfg: &Config,
    slot: &mut Option<Conn>,
    ready: &mut bool,
    stats: &mut Stats,
    how: &mut Attempt,
) -> Result<Response, Failure> {
    let (mut conn, reused) = match slot.take().filter(Conn::reusable) {
        Some(c) => (c, true),
        None => (Conn::new(connect_marked(cfg, ready)?), false),
    };
    how.reused = reused;
    let result = conn.attempt(&cfg.request, cfg.timeout);
    how.received = conn.received;
    match result {
        Err(f) if reused && cfg.retry_reused && conn.unanswered(&f) => {
            let after = conn.sent.elapsed().as_micros();
            stats.retry(cfg, format!("{} ({after} us after sending)", f.message));
            *how = Attempt {
                retried: true,
                ..Attempt::default()
            };
            conn = Conn::new(connect_marked(cfg, ready)?);
            let result = conn.attempt(&cfg.request, cfg.timeout);
            how.received = conn.received;
            let resp = result?;
            keep(cfg, slot, conn, &resp);
            Ok(resp)
        }
        Err(f) => Err(f),
        Ok(resp) => {
            keep(cfg, slot, conn, &resp);
            Ok(resp)
        }
    }
}

fn connect_marked(cfg: &Config, ready: &mut bool) -> Result<File, Failure> {
    let sock = connect(&cfg.target, cfg.timeout);
    if !std::mem::replace(ready, true) {
        cfg.handle.mark_ready();
    }
    sock
}

/// Keeps `conn` for the next request when the mode and the answer allow it.
fn keep(cfg: &Config, slot: &mut Option<Conn>, conn: Conn, resp: &Response) {
    if !resp.close && cfg.mode == Mode::Keepalive {
        *slot = Some(conn);
    }
}

fn worker(id: u32, cfg: Arc<Config>) -> Stats {
    let mut stats = Stats::default();
    let (mut conn, mut ready) = (None, false);
    for round in 0u64.. {
        if cfg.rate > 0.0 {
            // Absolute schedule: global request n is due at t0 + n / rate.
            let n = round * u64::from(cfg.concurrency) + u64::from(id);
            let due = cfg.t0 + Duration::from_secs_f64(n as f64 / cfg.rate);
            if !cfg.handle.sleep_until(due) {
                break;
            }
        }
        let start = Instant::now();
        if cfg.handle.is_stopped() || cfg.end.is_some_and(|end| start >= end) {
            break;
        }
        let mut how = Attempt::default();
        let result = exchange(&cfg, &mut conn, &mut ready, &mut stats, &mut how);
        stats.record(&cfg, start, how, result);
    }
    stats
}

/// A run under way, until [`Running::stop`] or [`Running::wait`]. Dropping it stops the run
/// without waiting for its threads.
pub struct Running {
    cfg: Arc<Config>,
    workers: Vec<JoinHandle<Stats>>,
}

/// Starts a run on its own threads (one per connection).
pub fn start(spec: Spec) -> io::Result<Running> {
    launch(spec, Handle::new())
}

/// Runs until `handle` is stopped or the spec's duration is over, on threads of its own, and
/// returns the report once in-flight requests are done.
pub fn run(spec: Spec, handle: &Handle) -> io::Result<Report> {
    Ok(launch(spec, handle.clone())?.wait())
}

fn launch(spec: Spec, handle: Handle) -> io::Result<Running> {
    spec.check()?;
    let host = spec.host.unwrap_or_else(|| spec.target.default_host());
    handle
        .0
        .workers
        .store(spec.concurrency as usize, Ordering::SeqCst);
    let t0 = Instant::now();
    let cfg = Arc::new(Config {
        request: request(&host, &spec.path, spec.mode),
        target: spec.target,
        mode: spec.mode,
        concurrency: spec.concurrency,
        rate: spec.rate,
        timeout: spec.timeout,
        record: spec.record,
        retry_reused: spec.retry_reused,
        t0,
        end: spec.duration.map(|d| t0 + d),
        handle,
    });
    let mut running = Running {
        cfg: Arc::clone(&cfg),
        workers: Vec::new(),
    };
    for id in 0..spec.concurrency {
        let cfg = Arc::clone(&cfg);
        let spawned = thread::Builder::new()
            .name(format!("load-{id}"))
            .spawn(move || worker(id, cfg));
        match spawned {
            Ok(h) => running.workers.push(h),
            Err(e) => {
                running.stop();
                return Err(e);
            }
        }
    }
    Ok(running)
}

impl Running {
    /// A handle on this run (to stop it from elsewhere, or wait until it started).
    pub fn handle(&self) -> Handle {
        self.cfg.handle.clone()
    }

    /// The run's start: t = 0 of its schedule and its duration.
    pub fn started_at(&self) -> Instant {
        self.cfg.t0
    }

    /// Stops the run now and returns its report once in-flight requests are done. A worker
    /// thread's panic is resumed here.
    pub fn stop(mut self) -> Report {
        let elapsed = self.cfg.t0.elapsed();
        self.cfg.handle.stop();
        let mut stats = Stats::default();
        let mut panic = None;
        for h in std::mem::take(&mut self.workers) {
            match h.join() {
                Ok(s) => stats.merge(s),
                Err(payload) => panic = panic.or(Some(payload)),
            }
        }
        if let Some(payload) = panic {
            std::panic::resume_unwind(payload);
        }
        report(stats, self.cfg.t0, elapsed)
    }

    /// Waits until the run is stopped through a [`Handle`] or its duration is over (forever
    /// when it has none), then [`Running::stop`].
    pub fn wait(self) -> Report {
        self.cfg.handle.wait_for(self.cfg.end, |_| false);
        self.stop()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cfg.handle.stop();
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    match sorted.len() {
        0 => 0,
        n => sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1],
    }
}

fn report(mut s: Stats, t0: Instant, elapsed: Duration) -> Report {
    s.latencies.sort_unstable();
    s.errors.sort_by_key(|e| e.0);
    s.retries.sort_by_key(|e| e.0);
    s.records.sort_by_key(|r| r.start);
    let lat = &s.latencies;
    let secs = elapsed.as_secs_f64().max(1e-9);
    let timed = |v: &[(Duration, String)]| -> Vec<String> {
        let first = v.iter().take(MAX_ERRORS);
        first
            .map(|(t, m)| format!("t={:.3}s {m}", t.as_secs_f64()))
            .collect()
    };
    Report {
        total: s.total,
        ok: s.ok,
        failed: s.total - s.ok,
        failures: s.failures,
        retried: s.retried,
        status_codes: s.status_codes,
        latency_us: Latency {
            p50: percentile(lat, 0.50),
            p90: percentile(lat, 0.90),
            p99: percentile(lat, 0.99),
            max: lat.last().copied().unwrap_or(0),
            mean: lat.iter().sum::<u64>() as f64 / lat.len().max(1) as f64,
        },
        duration_s: secs,
        rps: s.total as f64 / secs,
        pids: s.pids,
        errors: timed(&s.errors),
        retries: timed(&s.retries),
        started: t0,
        records: s.records,
    }
}

// ------------------------------------------------------------------------------------------
// Idle keep-alive probes

/// A complete answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// Its `X-Worker-Pid` header.
    pub pid: Option<String>,
}

/// What became of one more request on an idle connection ([`Idle::use_each`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Use {
    /// A complete answer (of any status).
    Answered(Answer),
    /// The server had closed the connection (FIN or RST) before the request was written, or
    /// had sent something unasked (as a server that times a connection out may, before it
    /// closes); nothing was written. What a client that checks before reusing forgives.
    ClosedBeforeUse,
    /// Closed already when [`Idle::mark_closed`] looked, earlier; nothing was written.
    ClosedEarly,
    /// The first answer said `Connection: close` (or was HTTP/1.0): the server does not keep
    /// connections alive, and a client never reuses this one; nothing was written.
    NotKept,
    /// The request was written and the connection ended (`eof`, `reset`), or the answer
    /// was not complete in time (`timeout`) or not HTTP (`malformed`): a cut request.
    Cut { kind: Kind },
}

/// Kept-alive connections held idle, each having carried one answered request.
pub struct Idle {
    /// `None`: the first answer said `Connection: close`, and the connection was closed at
    /// once, as a client does (a server may wait for that close: gunicorn's sync worker
    /// holds such a connection 2 s).
    conns: Vec<Option<Conn>>,
    answers: Vec<Answer>,
    /// Per connection: closed when [`Idle::mark_closed`] looked.
    early: Vec<bool>,
    request: Vec<u8>,
    timeout: Duration,
}

impl Idle {
    /// Opens `n` kept-alive connections to `target`, sends `GET path` on each, then reads
    /// each answer: the requests wait in the app's queue together, not one after the other
    /// (a server of a few busy sync workers takes seconds for each). Fails on the first
    /// connection that cannot connect or gets no complete answer (of any status). `timeout`
    /// bounds each connect, and each exchange from its write, here and in [`Idle::use_each`].
    pub fn open(target: &Target, path: &str, n: usize, timeout: Duration) -> Result<Idle, Failure> {
        let request = request(&target.default_host(), path, Mode::Keepalive);
        let mut idle = Idle {
            conns: Vec::with_capacity(n),
            answers: Vec::with_capacity(n),
            early: vec![false; n],
            request,
            timeout,
        };
        let mut sent = Vec::with_capacity(n);
        for _ in 0..n {
            let mut conn = Conn::new(connect(target, timeout)?);
            let deadline = Instant::now() + timeout;
            conn.send(&idle.request, deadline)?;
            sent.push((conn, deadline));
        }
        for (mut conn, deadline) in sent {
            let resp = conn.read_response(deadline)?;
            let (status, pid) = (resp.status, resp.pid);
            idle.answers.push(Answer { status, pid });
            idle.conns.push((!resp.close).then_some(conn));
        }
        Ok(idle)
    }

    /// Looks at each kept-alive connection now (a peek that never blocks) and marks those the
    /// server has closed already: [`Idle::use_each`] tells them as [`Use::ClosedEarly`].
    /// Returns how many are marked in all.
    pub fn mark_closed(&mut self) -> usize {
        for (i, conn) in self.conns.iter().enumerate() {
            if conn.as_ref().is_some_and(|c| !c.reusable()) {
                self.early[i] = true;
            }
        }
        self.early.iter().filter(|e| **e).count()
    }

    /// The first answer on each connection, in order.
    pub fn answers(&self) -> &[Answer] {
        &self.answers
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Sends one more request on each connection and reads the answers; one [`Use`] per
    /// connection, in order. Each connection is looked at (a peek that never blocks) right
    /// before its request is written; every request is written before any answer is read,
    /// so the requests go out together and each has the timeout from its own write.
    pub fn use_each(self) -> Vec<Use> {
        let mut uses: Vec<Option<Use>> = Vec::with_capacity(self.conns.len());
        let mut sent = Vec::with_capacity(self.conns.len());
        for (i, conn) in self.conns.into_iter().enumerate() {
            let Some(mut conn) = conn else {
                uses.push(Some(Use::NotKept));
                continue;
            };
            if self.early[i] {
                uses.push(Some(Use::ClosedEarly));
                continue;
            }
            if !conn.reusable() {
                uses.push(Some(Use::ClosedBeforeUse));
                continue;
            }
            let deadline = Instant::now() + self.timeout;
            match conn.send(&self.request, deadline) {
                Ok(()) => {
                    uses.push(None);
                    sent.push((uses.len() - 1, conn, deadline));
                }
                Err(f) => uses.push(Some(Use::Cut { kind: f.kind })),
            }
        }
        for (i, mut conn, deadline) in sent {
            uses[i] = Some(match conn.read_response(deadline) {
                Ok(resp) => Use::Answered(Answer {
                    status: resp.status,
                    pid: resp.pid,
                }),
                Err(f) => Use::Cut { kind: f.kind },
            });
        }
        uses.into_iter().flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;

    /// What the test server does on one connection.
    #[derive(Clone, Copy, Debug)]
    enum Script {
        /// Answers every request (200, `X-Worker-Pid: 42`).
        Answer,
        /// Answers every request with a 503.
        Unavailable,
        /// Answers the first request, then closes the idle connection, and reports it.
        AnswerThenCloseIdle,
        /// Answers the first request, reads the next and closes without an answer.
        AnswerThenDrop,
        /// Answers the first request, reads the next and never answers (until EOF).
        AnswerThenStall,
        /// Reads each request and closes without an answer.
        Drop,
        /// Answers the first request after reading only its request line, then (once the
        /// client has read the answer) closes with the rest of the request unread: an RST.
        AnswerThenReset,
        /// Answers one request with `Connection: close`, and closes.
        AnswerAndClose,
    }

    /// Reads one request head; false at EOF.
    fn read_request(s: &mut TcpStream) -> bool {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut b) {
                Ok(1) => head.push(b[0]),
                _ => return false,
            }
        }
        true
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Worker-Pid: 42\r\n\r\nok";
    const UNAVAILABLE: &[u8] = b"HTTP/1.1 503 No\r\nContent-Length: 0\r\n\r\n";
    const OK_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

    fn serve(mut s: TcpStream, script: Script, closed: mpsc::Sender<()>) {
        let answer = |s: &mut TcpStream, what: &[u8]| read_request(s) && s.write_all(what).is_ok();
        match script {
            Script::Answer => while answer(&mut s, OK) {},
            Script::Unavailable => while answer(&mut s, UNAVAILABLE) {},
            Script::AnswerThenCloseIdle => {
                if answer(&mut s, OK) {
                    drop(s);
                    let _ = closed.send(());
                }
            }
            Script::AnswerThenDrop => {
                if answer(&mut s, OK) {
                    read_request(&mut s);
                }
            }
            Script::AnswerThenStall => {
                if answer(&mut s, OK) && read_request(&mut s) {
                    let _ = s.read(&mut [0u8; 1]);
                }
            }
            Script::Drop => {
                read_request(&mut s);
            }
            Script::AnswerAndClose => {
                answer(&mut s, OK_CLOSE);
            }
            Script::AnswerThenReset => {
                let mut line = Vec::new();
                let mut b = [0u8; 1];
                while !line.ends_with(b"\r\n") {
                    match s.read(&mut b) {
                        Ok(1) => line.push(b[0]),
                        _ => return,
                    }
                }
                if s.write_all(OK).is_ok() {
                    thread::sleep(Duration::from_millis(200));
                    drop(s);
                    let _ = closed.send(());
                }
            }
        }
    }

    /// A server on 127.0.0.1 that serves connection `i` by `scripts[i]` (the last one for every
    /// later connection), each on its own thread; the receiver hears of each idle close.
    fn server(scripts: Vec<Script>) -> (SocketAddr, mpsc::Receiver<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for (i, conn) in listener.incoming().enumerate() {
                let Ok(s) = conn else { return };
                let script = scripts[i.min(scripts.len() - 1)];
                let tx = tx.clone();
                thread::spawn(move || serve(s, script, tx));
            }
        });
        (addr, rx)
    }

    /// A spec of 2 connections at 200 requests/s for 300 ms, recording.
    fn recording(target: Target) -> Spec {
        Spec {
            concurrency: 2,
            rate: 200.0,
            duration: Some(Duration::from_millis(300)),
            timeout: Duration::from_secs(2),
            record: true,
            ..Spec::new(target)
        }
    }

    #[test]
    fn every_request_of_a_run_has_its_record() {
        let (addr, _) = server(vec![Script::Answer]);
        let r = run(recording(Target::Tcp(addr)), &Handle::new()).expect("run");
        assert!(r.total >= 10, "{r:?}");
        assert_eq!(r.records.len() as u64, r.total);
        assert_eq!((r.ok, r.failed), (r.total, 0));
        assert_eq!(r.pids.get("42"), Some(&r.total));
        for rec in &r.records {
            assert!(r.started <= rec.start && rec.start < rec.end, "{rec:?}");
            assert_eq!(rec.outcome, Outcome::Ok);
            assert_eq!(rec.status, Some(200));
            assert_eq!(rec.pid.as_deref(), Some("42"));
            assert_eq!(rec.received as usize, OK.len());
            assert!(!rec.retried);
        }
        assert!(r.records.windows(2).all(|w| w[0].start <= w[1].start));
        // Two connections, kept alive: only each worker's first request opens one.
        let fresh = r.records.iter().filter(|rec| !rec.reused).count();
        assert_eq!(fresh, 2, "{:?}", r.records);
        let line = serde_json::to_value(&r).expect("json");
        assert!(line.get("records").is_none() && line.get("started").is_none());
        assert_eq!(line["failures"]["bad_status"], 0);
    }

    #[test]
    fn records_name_the_failure_kinds() {
        let (addr, _) = server(vec![Script::Unavailable]);
        let r = run(recording(Target::Tcp(addr)), &Handle::new()).expect("run");
        assert!(
            r.total > 0 && r.failures.get(Kind::BadStatus) == r.total,
            "{r:?}"
        );
        assert_eq!(r.status_codes.get(&503), Some(&r.total));
        for rec in &r.records {
            assert_eq!(rec.outcome, Outcome::Failed(Kind::BadStatus));
            assert_eq!(rec.status, Some(503));
            assert!(rec.start < rec.end && rec.received > 0);
        }

        let (addr, _) = server(vec![Script::Drop]);
        let r = run(recording(Target::Tcp(addr)), &Handle::new()).expect("run");
        assert!(r.total > 0 && r.failures.get(Kind::Eof) == r.total, "{r:?}");
        for rec in &r.records {
            assert_eq!(rec.outcome, Outcome::Failed(Kind::Eof));
            assert_eq!((rec.status, rec.received, rec.reused), (None, 0, false));
            assert!(rec.start < rec.end);
        }

        // Nobody listens on a port just released.
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
        let r = run(recording(Target::Tcp(port.expect("port"))), &Handle::new()).expect("run");
        assert!(
            r.total > 0 && r.failures.get(Kind::Refused) == r.total,
            "{r:?}"
        );
        assert!(r.records.iter().all(|rec| rec.outcome.name() == "refused"));
    }

    #[test]
    fn a_retried_request_has_one_record_on_its_new_connection() {
        let (addr, _) = server(vec![Script::AnswerThenDrop, Script::Answer]);
        let spec = Spec {
            concurrency: 1,
            retry_reused: true,
            ..recording(Target::Tcp(addr))
        };
        let r = run(spec, &Handle::new()).expect("run");
        assert_eq!((r.retried, r.failed), (1, 0), "{r:?}");
        assert_eq!(r.records.len() as u64, r.total);
        let retried: Vec<_> = r.records.iter().filter(|rec| rec.retried).collect();
        assert_eq!(retried.len(), 1, "{:?}", r.records);
        assert_eq!(retried[0].outcome, Outcome::Ok);
        assert!(!retried[0].reused && retried[0].received > 0);
    }

    #[test]
    fn a_started_run_says_so_and_stops_when_told() {
        let (addr, _) = server(vec![Script::Answer]);
        let spec = Spec {
            rate: 100.0,
            ..Spec::new(Target::Tcp(addr))
        };
        let running = start(spec).expect("start");
        let handle = running.handle();
        assert!(handle.wait_started(Some(Duration::from_secs(5))));
        let stopper = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            handle.stop();
        });
        let r = running.wait();
        stopper.join().expect("stopper");
        assert!(r.total > 0 && r.failed == 0, "{r:?}");
        assert!(r.duration_s < 5.0, "{r:?}");
    }

    #[test]
    fn a_bad_spec_is_refused() {
        let target = Target::Unix("/nonexistent/socket".into());
        for spec in [
            Spec {
                concurrency: 0,
                ..Spec::new(target.clone())
            },
            Spec {
                rate: f64::NAN,
                ..Spec::new(target.clone())
            },
        ] {
            let e = start(spec).err().expect("refused");
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn idle_probes_tell_a_closed_idle_connection_from_a_cut_request() {
        let scripts = vec![
            Script::Answer,
            Script::AnswerThenCloseIdle,
            Script::AnswerThenDrop,
            Script::AnswerThenStall,
            Script::AnswerThenReset,
        ];
        let (addr, closed) = server(scripts);
        let timeout = Duration::from_millis(500);
        let idle = Idle::open(&Target::Tcp(addr), "/", 5, timeout).expect("open");
        assert_eq!(idle.len(), 5);
        let first = Answer {
            status: 200,
            pid: Some("42".into()),
        };
        assert!(idle.answers().iter().all(|a| *a == first));
        // The FIN of connection 1 and the RST of connection 4 have arrived before they are used.
        for _ in 0..2 {
            closed.recv_timeout(Duration::from_secs(5)).expect("closed");
        }
        thread::sleep(Duration::from_millis(50));
        let peeked = |i: usize| sys::peek_now(&idle.conns[i].as_ref().expect("kept").sock);
        assert!(matches!(peeked(1), sys::Peeked::Closed), "{:?}", peeked(1));
        assert!(
            matches!(peeked(4), sys::Peeked::Failed(_)),
            "{:?}",
            peeked(4)
        );
        let uses = idle.use_each();
        assert_eq!(
            uses,
            vec![
                Use::Answered(first),
                Use::ClosedBeforeUse,
                Use::Cut { kind: Kind::Eof },
                Use::Cut {
                    kind: Kind::Timeout
                },
                Use::ClosedBeforeUse,
            ]
        );
    }

    /// A caller waits for the first answer of a pid (a test waits for the load to have
    /// reached a new generation).
    #[test]
    fn the_pids_that_answered_are_told_as_they_come() {
        let (addr, _) = server(vec![Script::Answer]);
        let running = start(Spec {
            concurrency: 2,
            rate: 50.0,
            ..Spec::new(Target::Tcp(addr))
        })
        .expect("start");
        let handle = running.handle();
        assert_eq!(handle.pids_after(0, Some(Duration::from_secs(5))), ["42"]);
        // no other pid answers: the wait ends at its timeout, empty
        assert!(handle
            .pids_after(1, Some(Duration::from_millis(100)))
            .is_empty());
        let report = running.stop();
        assert!(report.ok > 0);
        assert!(
            handle.pids_after(1, None).is_empty(),
            "a stopped run waits for nothing"
        );
    }

    #[test]
    fn idle_probes_tell_a_server_that_never_keeps_alive_and_one_that_closed_early() {
        let (addr, closed) = server(vec![
            Script::AnswerAndClose,
            Script::AnswerThenCloseIdle,
            Script::Answer,
        ]);
        let timeout = Duration::from_millis(500);
        let mut idle = Idle::open(&Target::Tcp(addr), "/", 3, timeout).expect("open");
        closed.recv_timeout(Duration::from_secs(5)).expect("closed");
        thread::sleep(Duration::from_millis(50));
        assert_eq!(
            idle.mark_closed(),
            1,
            "only the kept-alive one the server closed"
        );
        assert_eq!(
            idle.use_each(),
            vec![
                Use::NotKept,
                Use::ClosedEarly,
                Use::Answered(Answer {
                    status: 200,
                    pid: Some("42".into())
                }),
            ]
        );
    }

    /// A server of one busy worker answers the idle probes' requests in turn: they wait in
    /// its queue together, so each is answered within its timeout (one after the other, the
    /// probes took n × the server's time before).
    #[test]
    fn idle_probes_send_their_requests_together() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let n = 4;
        thread::spawn(move || {
            // every request is read before any is answered
            let mut conns: Vec<TcpStream> = Vec::new();
            for conn in listener.incoming().take(n) {
                let mut s = conn.expect("accept");
                assert!(read_request(&mut s));
                conns.push(s);
            }
            for s in &mut conns {
                s.write_all(OK).expect("answer");
            }
            thread::sleep(Duration::from_secs(5));
        });
        let idle = Idle::open(&Target::Tcp(addr), "/", n, Duration::from_secs(2)).expect("open");
        assert_eq!(idle.len(), n);
    }

    #[test]
    fn idle_probes_fail_to_open_without_a_server() {
        let (addr, _) = server(vec![Script::Drop]);
        let f = Idle::open(&Target::Tcp(addr), "/", 2, Duration::from_secs(2)).err();
        assert_eq!(f.map(|f| f.kind), Some(Kind::Eof));
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
        let f = Idle::open(
            &Target::Tcp(port.expect("port")),
            "/",
            1,
            Duration::from_secs(2),
        );
        assert_eq!(f.err().map(|f| f.kind), Some(Kind::Refused));
    }

    #[test]
    fn unix_targets_are_loaded_too() {
        use std::os::unix::net::UnixListener;
        let dir = std::env::temp_dir().join(format!("baton-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("app.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind");
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { return };
                thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut b = [0u8; 1];
                    loop {
                        match s.read(&mut b) {
                            Ok(1) => head.push(b[0]),
                            _ => return,
                        }
                        if head.ends_with(b"\r\n\r\n") {
                            assert!(head.starts_with(b"GET /u HTTP/1.1\r\nHost: localhost\r\n"));
                            head.clear();
                            if s.write_all(OK).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        let spec = Spec {
            path: "/u".into(),
            ..recording(Target::Unix(path.clone()))
        };
        let r = run(spec, &Handle::new()).expect("run");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(r.total > 0 && r.ok == r.total, "{r:?}");
    }
}
