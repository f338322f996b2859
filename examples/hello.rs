//! `hello`: baton's example worker, a small HTTP/1.1 server that behaves like a
//! real application under systemd socket activation.
//!
//! It serves every socket passed in `LISTEN_FDS` (TCP or Unix stream, from fd 3),
//! or binds `HELLO_LISTEN` (default `127.0.0.1:8080`) when started without any.
//! Once it is accepting it sends `READY=1` to `NOTIFY_SOCKET`. On SIGTERM or
//! SIGINT it drains: it stops accepting at once, lets in-flight requests finish,
//! answers the next request of each keep-alive connection with
//! `Connection: close`, gives keep-alive connections that are idle
//! `HELLO_IDLE_GRACE_MS` to send one last request, and exits 0 once no
//! connection is left.
//!
//! Routes: `GET /` (`hello from pid <pid> generation <gen>`, then ` mark <mark>` when
//! `HELLO_MARK` is set), `GET /healthz`
//! (`ok`) and `GET /slow?ms=N` (answers after N ms); anything else is 404.
//! `HEAD` works too. Every response carries `Content-Length`, `X-Worker-Pid`
//! and `X-Generation` (from `BATON_GENERATION`, `-` when unset).
//!
//! Knobs (environment; durations in milliseconds):
//! - `HELLO_LISTEN`: address to bind when no socket is passed in.
//! - `HELLO_DELAY_MS` (0): extra delay before every response.
//! - `HELLO_STARTUP_MS` (0): delay before accepting and `READY=1` (slow start-up).
//! - `HELLO_IDLE_GRACE_MS` (1000): how long idle keep-alive connections may
//!   still send a request once draining has started.
//! - `HELLO_CRASH_AFTER_MS` (200): delay before the `crash-after-ready` exit.
//! - `HELLO_MARK`: a word `GET /` adds to its answer (a release's marker, in the tests).
//! - `HELLO_FAIL=MODE` or `--fail MODE`: misbehave to test rollbacks:
//!   - `exit-at-start`: exit 1 before touching the sockets;
//!   - `never-ready`: serve normally but never send `READY=1`;
//!   - `crash-after-ready`: send `READY=1`, accept nothing, exit 3 after
//!     `HELLO_CRASH_AFTER_MS`;
//!   - `unhealthy`: serve normally but answer `/healthz` with 503;
//!   - `ignore-sigterm`: ignore SIGTERM (SIGINT still drains), so only SIGKILL
//!     stops it;
//!   - `exit-on-sigterm`: exit 0 at once on SIGTERM, cutting the requests in flight;
//!   - `early-ready`: send `READY=1` a second (`HELLO_EARLY_MS`, 1000) before it
//!     starts accepting;
//!   - `stray-helper`: start a helper (`sleep 300`) in a process group of its own, which
//!     outlives the worker.
//!
//! Try it: `systemd-socket-activate -l 127.0.0.1:8080 target/debug/examples/hello`.

use std::env;
use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{SigHandler, SigSet, Signal};
use nix::sys::socket;
use sd_notify::NotifyState;

/// Largest request head (request line plus headers) we accept.
const MAX_HEAD: usize = 16 * 1024;
/// Idle keep-alive connections are closed after this long (when not draining).
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// A request that has started arriving must make progress within this time.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// After our last response: how long we wait for the client to close its side.
const LINGER: Duration = Duration::from_secs(1);

/// Logs one line to stderr, never panicking if stderr is gone.
macro_rules! log {
    ($($arg:tt)*) => {{
        let _ = writeln!(io::stderr(), "hello: {}", format_args!($($arg)*));
    }};
}

#[derive(Clone, Copy, PartialEq)]
enum Fail {
    None,
    ExitAtStart,
    NeverReady,
    CrashAfterReady,
    Unhealthy,
    IgnoreSigterm,
    ExitOnSigterm,
    EarlyReady,
    StrayHelper,
}

struct Config {
    fail: Fail,
    delay: Duration,
    startup: Duration,
    idle_grace: Duration,
    crash_after: Duration,
    early: Duration,
}

/// State shared by the accept loop, the signal thread and the connection threads.
struct Shared {
    pid: u32,
    generation: String,
    /// `HELLO_MARK`, as ` mark <it>` (empty when unset).
    mark: String,
    cfg: Config,
    draining: AtomicBool,
    /// Read end of the drain pipe: it becomes (and stays) readable once draining starts.
    drain_rx: OwnedFd,
}

impl Shared {
    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

fn main() -> ExitCode {
    let pid = std::process::id();
    let cfg = match config() {
        Ok(cfg) => cfg,
        Err(e) => {
            log!("pid={pid} {e}");
            return ExitCode::from(2);
        }
    };
    if cfg.fail == Fail::ExitAtStart {
        log!("pid={pid} exiting at start (fail mode exit-at-start)");
        return ExitCode::from(1);
    }
    match serve(cfg) {
        Ok(code) => code,
        Err(e) => {
            log!("pid={pid} fatal: {e}");
            ExitCode::from(1)
        }
    }
}

fn config() -> Result<Config, String> {
    let mut mode = env::var("HELLO_FAIL").unwrap_or_default();
    let mut args = env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--fail" {
            mode = args.next().ok_or("--fail needs a MODE")?;
        } else if let Some(m) = arg.strip_prefix("--fail=") {
            mode = m.to_string();
        } else {
            return Err(format!(
                "unknown argument {arg:?} (usage: hello [--fail MODE])"
            ));
        }
    }
    let fail = match mode.as_str() {
        "" | "none" => Fail::None,
        "exit-at-start" => Fail::ExitAtStart,
        "never-ready" => Fail::NeverReady,
        "crash-after-ready" => Fail::CrashAfterReady,
        "unhealthy" => Fail::Unhealthy,
        "ignore-sigterm" => Fail::IgnoreSigterm,
        "exit-on-sigterm" => Fail::ExitOnSigterm,
        "early-ready" => Fail::EarlyReady,
        "stray-helper" => Fail::StrayHelper,
        other => {
            return Err(format!(
                "unknown fail mode {other:?} (expected exit-at-start, never-ready, \
                 crash-after-ready, unhealthy, ignore-sigterm, exit-on-sigterm, early-ready \
                 or stray-helper)"
            ))
        }
    };
    Ok(Config {
        fail,
        delay: millis_var("HELLO_DELAY_MS", 0)?,
        startup: millis_var("HELLO_STARTUP_MS", 0)?,
        idle_grace: millis_var("HELLO_IDLE_GRACE_MS", 1000)?,
        crash_after: millis_var("HELLO_CRASH_AFTER_MS", 200)?,
        early: millis_var("HELLO_EARLY_MS", 1000)?,
    })
}

fn millis_var(name: &str, default: u64) -> Result<Duration, String> {
    match env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map(Duration::from_millis)
            .map_err(|_| format!("{name}={v:?} is not a number of milliseconds")),
        _ => Ok(Duration::from_millis(default)),
    }
}

fn serve(cfg: Config) -> io::Result<ExitCode> {
    let (drain_rx, drain_tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let shared = Arc::new(Shared {
        pid: std::process::id(),
        generation: env::var("BATON_GENERATION").unwrap_or_else(|_| "-".into()),
        mark: env::var("HELLO_MARK")
            .map(|m| format!(" mark {m}"))
            .unwrap_or_default(),
        cfg,
        draining: AtomicBool::new(false),
        drain_rx,
    });
    let (pid, cfg) = (shared.pid, &shared.cfg);
    watch_signals(cfg.fail, &shared, drain_tx)?;
    if cfg.fail == Fail::StrayHelper {
        use std::os::unix::process::CommandExt;
        // a process group of its own: out of the worker's group, as daemonizing helpers are
        let helper = std::process::Command::new("sleep")
            .arg("300")
            .process_group(0)
            .spawn()?;
        log!(
            "pid={pid} started helper {} (fail mode stray-helper)",
            helper.id()
        );
    }

    let listeners = take_listeners()?;
    let addrs: Vec<String> = listeners.iter().map(Listener::describe).collect();
    let instance = env::var("BATON_INSTANCE").unwrap_or_else(|_| "-".into());
    log!(
        "pid={pid} generation={} instance={instance} listening on {}",
        shared.generation,
        addrs.join(", ")
    );

    if drained_within(&shared, cfg.startup)? {
        log!("pid={pid} exiting: stopped during start-up");
        return Ok(ExitCode::SUCCESS);
    }
    if cfg.fail == Fail::CrashAfterReady {
        notify_ready(pid);
        if drained_within(&shared, cfg.crash_after)? {
            log!("pid={pid} exiting: stopped before the planned crash");
            return Ok(ExitCode::SUCCESS);
        }
        log!("pid={pid} crashing with exit code 3 (fail mode crash-after-ready)");
        return Ok(ExitCode::from(3));
    }
    if cfg.fail == Fail::EarlyReady {
        notify_ready(pid);
        log!(
            "pid={pid} READY=1 sent, accepting in {:?} (fail mode early-ready)",
            cfg.early
        );
        if drained_within(&shared, cfg.early)? {
            return Ok(ExitCode::SUCCESS);
        }
    } else if cfg.fail != Fail::NeverReady {
        notify_ready(pid);
    }

    // Accept loop: wait for any listener or the drain pipe; never block in accept(),
    // since other processes accept on the same sockets. The listeners are watched
    // with EPOLLEXCLUSIVE: a new connection wakes one waiting process, not every
    // process of every generation (poll() would wake them all, 2N at a reload).
    // A process that is busy accepting does not swallow the wake-up: the kernel only
    // counts it as delivered to an epoll that has a waiter. The other side of that
    // contract: a process that was woken accepts until the queue is empty (accept_all).
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    for (i, listener) in listeners.iter().enumerate() {
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE;
        epoll.add(listener.as_fd(), EpollEvent::new(flags, i as u64))?;
    }
    let drain_token = listeners.len() as u64;
    epoll.add(
        shared.drain_rx.as_fd(),
        EpollEvent::new(EpollFlags::EPOLLIN, drain_token),
    )?;
    let mut events = vec![EpollEvent::empty(); listeners.len() + 1];
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !shared.is_draining() {
        let n = match epoll.wait(&mut events, EpollTimeout::NONE) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        conns.retain(|c| !c.is_finished());
        for event in &events[..n] {
            if let Some(listener) = listeners.get(event.data() as usize) {
                listener.accept_all(&shared, &mut conns);
            }
        }
    }
    // Leave the listeners' wait queues before anything else: this process is never
    // a waiter again, so every later connection wakes a process that will accept it.
    // (Closing our fds would not do it: the sockets stay open in other processes.)
    drop(epoll);

    // Our listeners are duplicates: closing them leaves the shared socket open.
    drop(listeners);
    conns.retain(|c| !c.is_finished());
    log!(
        "pid={pid} stopped accepting, waiting for {} connection(s)",
        conns.len()
    );
    for conn in conns {
        let _ = conn.join(); // a panicked connection is just a closed one
    }
    log!(
        "pid={pid} generation={} exiting: drained",
        shared.generation
    );
    Ok(ExitCode::SUCCESS)
}

fn notify_ready(pid: u32) {
    let status = format!("serving pid {pid}");
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(&status)]) {
        log!("pid={pid} sd_notify failed: {e}");
    }
}

/// Blocks SIGTERM/SIGINT in every thread and receives them with sigwait() on a
/// dedicated thread, which starts the drain: it sets the flag and writes one byte
/// to the drain pipe. That byte is never read, so every poller wakes up, now or later.
fn watch_signals(fail: Fail, shared: &Arc<Shared>, drain_tx: OwnedFd) -> io::Result<()> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    if fail == Fail::IgnoreSigterm {
        // SAFETY: SIG_IGN installs no handler code, and no other thread exists yet.
        unsafe { nix::sys::signal::signal(Signal::SIGTERM, SigHandler::SigIgn) }?;
    } else {
        set.add(Signal::SIGTERM);
    }
    // Called while this is the only thread: all threads spawned later inherit the mask.
    set.thread_block()?;
    let shared = Arc::clone(shared);
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let Ok(sig) = set.wait() else { continue };
            if fail == Fail::ExitOnSigterm && sig == Signal::SIGTERM {
                log!(
                    "pid={} got {sig}, exiting at once (fail mode exit-on-sigterm)",
                    shared.pid
                );
                std::process::exit(0);
            }
            if !shared.draining.swap(true, Ordering::SeqCst) {
                log!("pid={} got {sig}, draining", shared.pid);
                let _ = nix::unistd::write(&drain_tx, b"x");
            }
        })?;
    Ok(())
}

/// Polls until one of `fds` is ready (true) or the deadline passes (false).
fn poll_until(fds: &mut [PollFd], deadline: Option<Instant>) -> io::Result<bool> {
    loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(deadline) => match deadline.saturating_duration_since(Instant::now()) {
                left if left.is_zero() => return Ok(false),
                // Rounded up, so that we do not spin through the last millisecond.
                left => PollTimeout::try_from(left + Duration::from_micros(999))
                    .unwrap_or(PollTimeout::MAX),
            },
        };
        match poll(fds, timeout) {
            Ok(0) | Err(Errno::EINTR) => {}
            Ok(_) => return Ok(true),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sleeps for `timeout` unless the drain starts first (then true).
fn drained_within(shared: &Shared, timeout: Duration) -> io::Result<bool> {
    let mut fds = [PollFd::new(shared.drain_rx.as_fd(), PollFlags::POLLIN)];
    poll_until(&mut fds, Some(Instant::now() + timeout))
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Takes every socket passed by the service manager, or binds `HELLO_LISTEN`.
fn take_listeners() -> io::Result<Vec<Listener>> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut listeners = Vec::new();
    for i in 0..fds.len() {
        if let Ok(Some(l)) = fds.take_tcp_listener(i) {
            l.set_nonblocking(true)?;
            listeners.push(Listener::Tcp(l));
        } else if let Ok(Some(l)) = fds.take_unix_listener(i) {
            l.set_nonblocking(true)?;
            listeners.push(Listener::Unix(l));
        } else {
            log!("passed socket #{i} is not a TCP or Unix stream listener, ignoring it");
        }
    }
    if listeners.is_empty() {
        let addr = env::var("HELLO_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into());
        let l = TcpListener::bind(&addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {addr}: {e}")))?;
        l.set_nonblocking(true)?;
        listeners.push(Listener::Tcp(l));
    }
    Ok(listeners)
}

impl Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l.local_addr().map_or("tcp:?".into(), |a| a.to_string()),
            Listener::Unix(l) => match l.local_addr() {
                Ok(a) => a.as_pathname().map_or("unix:(abstract)".into(), |p| {
                    format!("unix:{}", p.display())
                }),
                Err(_) => "unix:?".into(),
            },
        }
    }

    /// Accepts until the backlog is empty; each connection gets its own thread.
    ///
    /// It does so even once the drain has begun: with EPOLLEXCLUSIVE the kernel woke this
    /// process *instead of* the others, so a process that returned without accepting would
    /// leave the connections queued with nobody woken for them (until some later connection
    /// arrives, which with a few busy clients may be never). Connections accepted while
    /// draining are served like in-flight ones, with `Connection: close`.
    fn accept_all(&self, shared: &Arc<Shared>, conns: &mut Vec<JoinHandle<()>>) {
        loop {
            let accepted = match self {
                Listener::Tcp(l) => l.accept().map(|(s, _)| {
                    let _ = s.set_nodelay(true);
                    spawn_conn(s, shared)
                }),
                Listener::Unix(l) => l.accept().map(|(s, _)| spawn_conn(s, shared)),
            };
            let e = match accepted {
                Ok(Some(conn)) => {
                    conns.push(conn);
                    continue;
                }
                Ok(None) => return, // could not spawn a thread (already logged)
                Err(e) => e,
            };
            match e.kind() {
                // Backlog empty, or another process won the race for this connection.
                ErrorKind::WouldBlock => return,
                ErrorKind::Interrupted | ErrorKind::ConnectionAborted => {}
                _ => {
                    log!("pid={} accept failed: {e}", shared.pid);
                    thread::sleep(Duration::from_millis(10)); // e.g. EMFILE: don't spin
                    return;
                }
            }
        }
    }
}

/// What a connection thread needs: TCP and Unix streams alike.
trait Stream: Read + Write + AsFd + Send + 'static {}
impl<T: Read + Write + AsFd + Send + 'static> Stream for T {}

fn spawn_conn<S: Stream>(stream: S, shared: &Arc<Shared>) -> Option<JoinHandle<()>> {
    let shared = Arc::clone(shared);
    let pid = shared.pid;
    let conn = Conn {
        stream,
        buf: Vec::new(),
        shared,
    };
    let spawned = thread::Builder::new().spawn(move || conn.run());
    spawned
        .map_err(|e| log!("pid={pid} cannot spawn a connection thread: {e}"))
        .ok()
}

struct Request {
    method: String,
    path: String,
    query: String,
    close: bool,
    content_length: u64,
}

enum Filled {
    Data,
    Eof,
    Timeout,
    Drain,
}

struct Conn<S> {
    stream: S,
    buf: Vec<u8>,
    shared: Arc<Shared>,
}

impl<S: Stream> Conn<S> {
    fn run(mut self) {
        let mut idle_deadline = None;
        loop {
            // Read a request head, waiting for the drain too while the connection is idle.
            let head_len = loop {
                let window = &self.buf[..self.buf.len().min(MAX_HEAD + 4)];
                if let Some(pos) = window.windows(4).position(|w| w == b"\r\n\r\n") {
                    break pos + 4;
                }
                if self.buf.len() > MAX_HEAD {
                    return self.reject(431);
                }
                let idle = self.buf.is_empty();
                let (deadline, watch_drain) = match (idle, self.shared.is_draining()) {
                    (false, _) => (Instant::now() + READ_TIMEOUT, false),
                    (true, false) => (Instant::now() + KEEPALIVE_TIMEOUT, true),
                    // Idle at drain time: the client may be sending right now, so
                    // give it a grace period instead of closing under its feet.
                    (true, true) => {
                        let grace = self.shared.cfg.idle_grace;
                        (
                            *idle_deadline.get_or_insert_with(|| Instant::now() + grace),
                            false,
                        )
                    }
                };
                match self.fill(deadline, watch_drain) {
                    Ok(Filled::Data | Filled::Drain) => {}
                    Ok(Filled::Timeout) if idle => return self.close_gracefully(),
                    _ => return, // EOF, reset, or a request stalled half-way
                }
            };
            let head: Vec<u8> = self.buf.drain(..head_len).collect();
            let req = match parse_request(&head) {
                Ok(req) => req,
                Err(status) => return self.reject(status),
            };
            if !self.discard_body(req.content_length) {
                return;
            }
            thread::sleep(self.shared.cfg.delay);
            let (status, body) = self.route(&req);
            // Checked after the work is done: a drain that began meanwhile closes too.
            let close = req.close || self.shared.is_draining();
            let head_only = req.method == "HEAD";
            if self.respond(status, &body, head_only, close).is_err() {
                return;
            }
            if close {
                return self.close_gracefully();
            }
        }
    }

    fn route(&self, req: &Request) -> (u16, String) {
        let s = &self.shared;
        if req.method != "GET" && req.method != "HEAD" {
            return (404, "not found\n".into());
        }
        match req.path.as_str() {
            "/" => (
                200,
                format!(
                    "hello from pid {} generation {}{}\n",
                    s.pid, s.generation, s.mark
                ),
            ),
            "/healthz" if s.cfg.fail == Fail::Unhealthy => (503, "unhealthy\n".into()),
            "/healthz" => (200, "ok\n".into()),
            "/slow" => {
                let ms = req.query.split('&').find_map(|kv| kv.strip_prefix("ms="));
                match ms.map(str::parse::<u64>) {
                    Some(Ok(ms)) => {
                        thread::sleep(Duration::from_millis(ms));
                        (200, format!("slept {ms} ms in pid {}\n", s.pid))
                    }
                    _ => (400, "usage: /slow?ms=N\n".into()),
                }
            }
            _ => (404, "not found\n".into()),
        }
    }

    fn respond(&mut self, status: u16, body: &str, head_only: bool, close: bool) -> io::Result<()> {
        let reason = reason(status);
        let mut out = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\nX-Worker-Pid: {}\r\nX-Generation: {}\r\nConnection: {}\r\n\r\n",
            body.len(),
            self.shared.pid,
            self.shared.generation,
            if close { "close" } else { "keep-alive" },
        );
        if !head_only {
            out.push_str(body);
        }
        self.stream.write_all(out.as_bytes())
    }

    fn reject(mut self, status: u16) {
        let body = format!("{}\n", reason(status));
        if self.respond(status, &body, false, true).is_ok() {
            self.close_gracefully();
        }
    }

    /// Ends the connection without a reset: shut down our side, then read (and
    /// discard) until the client closes too, so unread bytes cannot make the
    /// kernel send a RST that would destroy a response still in flight.
    fn close_gracefully(mut self) {
        let fd = self.stream.as_fd().as_raw_fd();
        if socket::shutdown(fd, socket::Shutdown::Write).is_err() {
            return;
        }
        let deadline = Instant::now() + LINGER;
        while let Ok(Filled::Data) = self.fill(deadline, false) {
            self.buf.clear();
        }
    }

    /// Reads and throws away a request body of `len` bytes; false if it never came.
    fn discard_body(&mut self, mut len: u64) -> bool {
        loop {
            let n = self
                .buf
                .len()
                .min(usize::try_from(len).unwrap_or(usize::MAX));
            self.buf.drain(..n);
            len -= n as u64;
            if len == 0 {
                return true;
            }
            if !matches!(
                self.fill(Instant::now() + READ_TIMEOUT, false),
                Ok(Filled::Data)
            ) {
                return false;
            }
        }
    }

    /// Waits until the client sends something (appended to `buf`), the deadline
    /// passes, or (with `watch_drain`) the drain starts.
    fn fill(&mut self, deadline: Instant, watch_drain: bool) -> io::Result<Filled> {
        loop {
            let (readable, drained) = {
                let mut fds = [
                    PollFd::new(self.stream.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.shared.drain_rx.as_fd(), PollFlags::POLLIN),
                ];
                let n = if watch_drain { 2 } else { 1 };
                if !poll_until(&mut fds[..n], Some(deadline))? {
                    return Ok(Filled::Timeout);
                }
                (
                    fds[0].any().unwrap_or(false),
                    watch_drain && fds[1].any().unwrap_or(false),
                )
            };
            if readable {
                let mut chunk = [0u8; 8192];
                match self.stream.read(&mut chunk) {
                    Ok(0) => return Ok(Filled::Eof),
                    Ok(n) => {
                        self.buf.extend_from_slice(&chunk[..n]);
                        return Ok(Filled::Data);
                    }
                    Err(e)
                        if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => {}
                    Err(e) => return Err(e),
                }
            } else if drained {
                return Ok(Filled::Drain);
            }
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Parses a request head (ending with the blank line); Err is the status to answer.
fn parse_request(head: &[u8]) -> Result<Request, u16> {
    let text = std::str::from_utf8(head).map_err(|_| 400u16)?;
    let mut lines = text.split("\r\n");
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(400),
    };
    if method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
    {
        return Err(400);
    }
    let is_token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let (mut close, mut keep_alive, mut content_length) = (false, false, None);
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(400u16)?;
        let value = value.trim();
        if !is_token(name) {
            return Err(400);
        }
        if name.eq_ignore_ascii_case("content-length") {
            let valid = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
            let len: u64 = value.parse().ok().filter(|_| valid).ok_or(400u16)?;
            if content_length.is_some_and(|old| old != len) {
                return Err(400);
            }
            content_length = Some(len);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(501); // chunked request bodies are not supported
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                close |= token.eq_ignore_ascii_case("close");
                keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        close: close || (http10 && !keep_alive),
        content_length: content_length.unwrap_or(0),
    })
}
