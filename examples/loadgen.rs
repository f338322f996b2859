//! `loadgen`: a small HTTP/1.1 load client that counts *every* failed request.
//!
//! Used by the test suite (spawned as a process, its `--json` line read back)
//! and by benchmarks to show that a reload under `baton` loses no request.
//!
//! Each of `--concurrency` worker threads sends `GET --path` requests, either
//! over one kept-alive connection (`--mode keepalive`, reconnecting without
//! counting a failure when the server announces `Connection: close` or has
//! visibly closed the idle connection) or over a fresh connection per request
//! (`--mode close`). A request is ok iff a complete 2xx response arrived
//! (`Content-Length`, chunked, or read-until-close body); everything else is
//! counted by kind: `refused`, `connect_timeout`, `connect_other`, `reset`,
//! `eof`, `timeout`, `bad_status`, `malformed`. By default failed requests are
//! never retried: a failure on a reused connection, even with 0 bytes received,
//! is a failure, so a server that closes a kept-alive connection without
//! `Connection: close` is only forgiven if the close (FIN/RST) arrived before
//! the next request was sent. With `--retry-reused` loadgen does what curl,
//! browsers and Go's `http.Transport` do (RFC 9112 §9.3.1): a request on a
//! reused connection that ends (EOF or reset) before any byte of its answer is
//! sent once more on a new connection; `retried` counts those, and the retry's
//! own outcome is what counts. `status_codes` counts non-2xx responses, `pids`
//! counts every complete response by its `X-Worker-Pid` header.
//!
//! With `--rate R` (> 0) global request `n` is scheduled at `start + n / R`
//! and worker `i` owns the slots `n ≡ i (mod concurrency)`: an absolute
//! schedule that never drifts. Latency is measured from the actual start of
//! the request (including the connect when a new connection is needed), not
//! from the scheduled slot.
//!
//! Stops on `--duration`, SIGTERM/SIGINT, or stdin EOF with `--stdin-stop`.
//! In-flight requests then finish (bounded by `--timeout`) and are counted.
//! `loadgen: started` is printed once on stderr when every worker has made
//! its first connection attempt.

use clap::{CommandFactory, Parser, ValueEnum};
use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::socket::{self, sockopt, MsgFlags};
use nix::sys::time::TimeVal;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

/// Set once the run must stop: no new request is started afterwards.
static STOP: AtomicBool = AtomicBool::new(false);
/// Number of workers that made their first connection attempt.
static READY: AtomicUsize = AtomicUsize::new(0);
/// How many error messages end up in the report.
const MAX_ERRORS: usize = 20;
/// Upper bound for a response head, to detect garbage.
const MAX_HEAD: usize = 64 * 1024;

#[derive(Parser, Debug)]
#[command(about = "HTTP/1.1 load generator that counts every failed request")]
struct Args {
    /// TCP address of the server, host:port.
    #[arg(long, required_unless_present = "unix")]
    addr: Option<String>,
    /// Unix stream socket to connect to instead of TCP.
    #[arg(long)]
    unix: Option<String>,
    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,
    #[arg(long, value_enum, default_value_t = Mode::Keepalive)]
    mode: Mode,
    /// Number of worker threads (= concurrent connections).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,
    /// Total requests per second across all workers; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Stop after this long (e.g. 10s, 500ms, 2m); default: run until signalled.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Also stop when stdin reaches EOF.
    #[arg(long)]
    stdin_stop: bool,
    /// Connect timeout, and time allowed for a complete response after sending.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    timeout: Duration,
    /// Print one JSON line instead of a human-readable summary.
    #[arg(long)]
    json: bool,
    /// Write one CSV line per request: t_start_us,t_end_us,kind,status,latency_us,pid.
    #[arg(long)]
    log: Option<String>,
    /// Send a request once more, on a new connection, when the reused connection it went
    /// out on ends before any byte of its answer (RFC 9112 §9.3.1, as curl, browsers and
    /// Go's http.Transport do); counted in `retried`.
    #[arg(long)]
    retry_reused: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Mode {
    Keepalive,
    Close,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("invalid duration `{s}`"))?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit in `{s}` (use us, ms, s, m, h)"
            ))
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration `{s}`: {e}"))
}

/// Failure kinds; the discriminant indexes `KIND_NAMES` and `Counts`.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Refused,
    ConnectTimeout,
    ConnectOther,
    Reset,
    Eof,
    Timeout,
    BadStatus,
    Malformed,
}

/// Report names of the failure kinds, in report order.
const KIND_NAMES: [&str; 8] = [
    "refused",
    "connect_timeout",
    "connect_other",
    "reset",
    "eof",
    "timeout",
    "bad_status",
    "malformed",
];

struct Failure {
    kind: Kind,
    msg: String,
}

fn fail(kind: Kind, msg: impl Into<String>) -> Failure {
    let msg = msg.into();
    Failure { kind, msg }
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

/// Immutable run configuration shared by all workers.
struct Config {
    target: Target,
    mode: Mode,
    concurrency: u32,
    rate: f64,
    timeout: Duration,
    request: Vec<u8>,
    log: bool,
    retry_reused: bool,
    t0: Instant,
    /// End of `--duration`, if given: no request starts at or after it.
    end: Option<Instant>,
}

enum Target {
    Tcp(SocketAddr),
    Unix(String),
}

fn timeval(d: Duration) -> TimeVal {
    TimeVal::new(d.as_secs() as _, d.subsec_micros() as _)
}

/// Connects to the target; the socket is returned as a `File` for plain read/write.
fn connect(target: &Target, timeout: Duration) -> Result<File, Failure> {
    let res = match target {
        Target::Tcp(addr) => TcpStream::connect_timeout(addr, timeout).map(|s| {
            let _ = s.set_nodelay(true);
            OwnedFd::from(s)
        }),
        Target::Unix(path) => connect_unix(path, timeout).map_err(io::Error::from),
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

/// Blocking unix connect; SO_SNDTIMEO bounds the wait on a full backlog (EAGAIN).
fn connect_unix(path: &str, timeout: Duration) -> nix::Result<OwnedFd> {
    use socket::{AddressFamily, SockFlag, SockType, UnixAddr};
    let flags = SockFlag::SOCK_CLOEXEC;
    let fd = socket::socket(AddressFamily::Unix, SockType::Stream, flags, None)?;
    socket::setsockopt(&fd, sockopt::SendTimeout, &timeval(timeout))?;
    socket::connect(fd.as_raw_fd(), &UnixAddr::new(path.as_bytes())?)?;
    Ok(fd)
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
        let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
        let peek = socket::recv(self.sock.as_raw_fd(), &mut [0u8; 1], flags);
        self.buf.is_empty() && peek == Err(Errno::EAGAIN)
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
        let tv = timeval(left.max(Duration::from_micros(1)));
        socket::setsockopt(&self.sock, sockopt::ReceiveTimeout, &tv)
            .and_then(|_| socket::setsockopt(&self.sock, sockopt::SendTimeout, &tv))
            .map_err(|e| io_failure(e.into(), "setsockopt"))
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
}

/// Failure counts indexed by `Kind`; serialized as an ordered JSON object.
#[derive(Default, Clone, Copy)]
struct Counts([u64; KIND_NAMES.len()]);

impl Serialize for Counts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(KIND_NAMES.iter().zip(self.0))
    }
}

/// Per-worker results, merged at the end.
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
    /// `--log` lines keyed by start time.
    log: Vec<(u128, String)>,
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
        self.log.extend(o.log);
    }

    fn retry(&mut self, cfg: &Config, msg: String) {
        self.retried += 1;
        if self.retries.len() < MAX_ERRORS {
            self.retries.push((cfg.t0.elapsed(), msg));
        }
    }

    fn record(&mut self, cfg: &Config, start: Instant, result: Result<Response, Failure>) {
        let end = Instant::now();
        let latency = (end - start).as_micros() as u64;
        self.total += 1;
        let (failure, status, pid) = match result {
            Ok(r) if (200..300).contains(&r.status) => (None, r.status, r.pid),
            Ok(r) => (
                Some((Kind::BadStatus, format!("HTTP {}", r.status))),
                r.status,
                r.pid,
            ),
            Err(f) => (Some((f.kind, f.msg)), 0, None),
        };
        if let Some(p) = &pid {
            *self.pids.entry(p.clone()).or_default() += 1;
        }
        let kind = failure.as_ref().map_or("ok", |f| KIND_NAMES[f.0 as usize]);
        match failure {
            None => {
                self.ok += 1;
                self.latencies.push(latency);
            }
            Some((k, msg)) => {
                self.failures.0[k as usize] += 1;
                if k == Kind::BadStatus {
                    *self.status_codes.entry(status).or_default() += 1;
                }
                if self.errors.len() < MAX_ERRORS {
                    self.errors.push((start - cfg.t0, format!("{kind}: {msg}")));
                }
            }
        }
        if cfg.log {
            let (t_start, t_end) = ((start - cfg.t0).as_micros(), (end - cfg.t0).as_micros());
            let pid = pid.unwrap_or_default().replace(',', ";");
            let line = format!("{t_start},{t_end},{kind},{status},{latency},{pid}");
            self.log.push((t_start, line));
        }
    }
}

/// Sleeps until `t`; returns false if the run was stopped meanwhile.
fn sleep_until(t: Instant) -> bool {
    while !STOP.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= t {
            return true;
        }
        thread::sleep((t - now).min(Duration::from_millis(20)));
    }
    false
}

/// Marks this worker's first connection attempt; the last one announces the start.
fn mark_ready(cfg: &Config, ready: &mut bool) {
    if !std::mem::replace(ready, true)
        && READY.fetch_add(1, Ordering::SeqCst) + 1 == cfg.concurrency as usize
    {
        eprintln!("loadgen: started");
    }
}

/// One request: reuse the kept-alive connection if it is still open, else connect. With
/// `--retry-reused`, a reused connection that ends before any byte of the answer is noted in
/// `stats` and the request goes out once more on a new connection.
fn exchange(
    cfg: &Config,
    slot: &mut Option<Conn>,
    ready: &mut bool,
    stats: &mut Stats,
) -> Result<Response, Failure> {
    let (mut conn, reused) = match slot.take().filter(Conn::reusable) {
        Some(c) => (c, true),
        None => (Conn::new(connect_marked(cfg, ready)?), false),
    };
    match attempt(cfg, &mut conn) {
        Err(f) if reused && cfg.retry_reused && conn.unanswered(&f) => {
            let after = conn.sent.elapsed().as_micros();
            stats.retry(cfg, format!("{} ({after} us after sending)", f.msg));
            conn = Conn::new(connect_marked(cfg, ready)?);
            let resp = attempt(cfg, &mut conn)?;
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
    mark_ready(cfg, ready);
    sock
}

/// Sends the request on `conn` and reads its answer. `--timeout` bounds the connect and,
/// separately, the exchange after it.
fn attempt(cfg: &Config, conn: &mut Conn) -> Result<Response, Failure> {
    let deadline = Instant::now() + cfg.timeout;
    conn.send(&cfg.request, deadline)?;
    let resp = conn.read_response(deadline)?;
    conn.served += 1;
    Ok(resp)
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
            if !sleep_until(cfg.t0 + Duration::from_secs_f64(n as f64 / cfg.rate)) {
                break;
            }
        }
        let start = Instant::now();
        if STOP.load(Ordering::Relaxed) || cfg.end.is_some_and(|end| start >= end) {
            break;
        }
        let result = exchange(&cfg, &mut conn, &mut ready, &mut stats);
        stats.record(&cfg, start, result);
    }
    stats
}

#[derive(Serialize)]
struct Report {
    total: u64,
    ok: u64,
    failed: u64,
    failures: Counts,
    /// With `--retry-reused`: requests sent once more (their outcome is in the counts above).
    retried: u64,
    status_codes: BTreeMap<u16, u64>,
    latency_us: Latency,
    duration_s: f64,
    rps: f64,
    pids: BTreeMap<String, u64>,
    errors: Vec<String>,
    retries: Vec<String>,
}

#[derive(Serialize)]
struct Latency {
    p50: u64,
    p90: u64,
    p99: u64,
    max: u64,
    mean: f64,
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    match sorted.len() {
        0 => 0,
        n => sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1],
    }
}

fn report(mut s: Stats, elapsed: Duration) -> Report {
    s.latencies.sort_unstable();
    s.errors.sort_by_key(|e| e.0);
    s.retries.sort_by_key(|e| e.0);
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
    }
}

fn print_human(r: &Report) {
    let l = &r.latency_us;
    println!(
        "loadgen: {} requests in {:.2}s ({:.1} req/s): {} ok, {} failed\n\
         latency us: p50 {} p90 {} p99 {} max {} mean {:.0}",
        r.total, r.duration_s, r.rps, r.ok, r.failed, l.p50, l.p90, l.p99, l.max, l.mean
    );
    for (name, n) in KIND_NAMES.iter().zip(r.failures.0).filter(|(_, n)| *n > 0) {
        println!("  {name:<16} {n}");
    }
    if !r.status_codes.is_empty() {
        println!("status codes: {:?}", r.status_codes);
    }
    if !r.pids.is_empty() {
        println!("answered by pid: {:?}", r.pids);
    }
    for e in &r.errors {
        println!("  {e}");
    }
    if r.retried > 0 {
        println!("retried on a new connection: {}", r.retried);
        for e in &r.retries {
            println!("  {e}");
        }
    }
}

fn usage_error(msg: String) -> ! {
    Args::command()
        .error(clap::error::ErrorKind::ValueValidation, msg)
        .exit()
}

/// Blocks SIGTERM/SIGINT in all threads (call before spawning any) and turns
/// them, and stdin EOF if asked, into a message on the returned channel.
fn stop_sources(stdin_stop: bool) -> mpsc::Receiver<()> {
    let mut sigs = SigSet::empty();
    sigs.add(Signal::SIGTERM);
    sigs.add(Signal::SIGINT);
    if let Err(e) = sigs.thread_block() {
        eprintln!("loadgen: cannot block signals: {e}");
    }
    let (tx, rx) = mpsc::channel();
    let sig_tx = tx.clone();
    thread::spawn(move || {
        if sigs.wait().is_ok() {
            let _ = sig_tx.send(());
        }
    });
    if stdin_stop {
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while matches!(io::stdin().read(&mut buf), Ok(n) if n > 0) {}
            let _ = tx.send(());
        });
    }
    rx
}

fn main() {
    let args = Args::parse();
    if !(args.rate.is_finite() && args.rate >= 0.0) {
        usage_error(format!("--rate must be >= 0, got {}", args.rate));
    }
    let (target, host) = match (&args.unix, &args.addr) {
        (Some(path), _) => (Target::Unix(path.clone()), "localhost"),
        (None, Some(addr)) => match addr.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(sa)) => (Target::Tcp(sa), addr.as_str()),
            _ => usage_error(format!("cannot resolve --addr {addr}")),
        },
        (None, None) => usage_error("one of --addr or --unix is required".into()),
    };
    let mut log_file = match args.log.as_deref().map(File::create) {
        Some(Ok(f)) => Some(BufWriter::new(f)),
        Some(Err(e)) => usage_error(format!("cannot create --log file: {e}")),
        None => None,
    };
    let stop = stop_sources(args.stdin_stop);

    let connection = match args.mode {
        Mode::Keepalive => "keep-alive",
        Mode::Close => "close",
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: baton-loadgen\r\n\
         Connection: {connection}\r\n\r\n",
        args.path
    );
    let t0 = Instant::now();
    let cfg = Arc::new(Config {
        target,
        mode: args.mode,
        concurrency: args.concurrency,
        rate: args.rate,
        timeout: args.timeout,
        request: request.into_bytes(),
        log: log_file.is_some(),
        retry_reused: args.retry_reused,
        t0,
        end: args.duration.map(|d| t0 + d),
    });
    let mut handles = Vec::new();
    for id in 0..args.concurrency {
        let cfg = Arc::clone(&cfg);
        match thread::Builder::new().spawn(move || worker(id, cfg)) {
            Ok(h) => handles.push(h),
            Err(e) => {
                eprintln!("loadgen: cannot spawn worker thread: {e}");
                std::process::exit(1);
            }
        }
    }

    let _ = match args.duration {
        Some(d) => stop.recv_timeout(d.saturating_sub(cfg.t0.elapsed())).ok(),
        None => stop.recv().ok(),
    };
    let elapsed = cfg.t0.elapsed();
    STOP.store(true, Ordering::SeqCst);

    // In-flight requests finish (bounded by --timeout) and are counted.
    let mut stats = Stats::default();
    for h in handles {
        match h.join() {
            Ok(s) => stats.merge(s),
            Err(_) => eprintln!("loadgen: a worker thread panicked"),
        }
    }
    if let Some(w) = log_file.as_mut() {
        stats.log.sort_unstable_by_key(|l| l.0);
        let res = stats.log.iter().try_for_each(|l| writeln!(w, "{}", l.1));
        if let Err(e) = res.and_then(|_| w.flush()) {
            eprintln!("loadgen: writing --log failed: {e}");
        }
    }
    let r = report(stats, elapsed);
    if args.json {
        match serde_json::to_string(&r) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("loadgen: cannot serialize report: {e}"),
        }
    } else {
        print_human(&r);
    }
}
