//! Readiness checks of one worker.
//!
//! [`Tracker`] holds the per-worker bookkeeping (consecutive successes, next attempt, last
//! failure) for the periodic kinds (`http`, `tcp`, `exec`); `notify` and `delay` need none.
//! HTTP and TCP attempts run on a short-lived thread each (blocking I/O with timeouts, no async
//! runtime) and report through a channel plus a [`Waker`] that wakes the event loop; `exec`
//! attempts are child processes that the supervisor reaps like any other child.
//!
//! Probes always target the worker's *private* probe socket, never the shared port. The
//! `accepting` check sends nothing at all: it reads in /proc whether the worker's process tree
//! waits for connections on every passed socket ([`waited_on`]), which needs no app change.
//! This module decides nothing about generations.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sys::{self, FdKind, Pid, SockAddr, WaitCall};

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
        self.next_at = later(now, self.interval);
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
    /// The worker's private listener: its address, and a duplicate of it (to read its accept
    /// queue).
    Tcp(SocketAddr, OwnedFd),
    Http(SocketAddr, String, OwnedFd),
    /// Nothing is sent: the worker's process tree must wait for connections on every socket.
    Accepting,
}

/// A socket handed to a worker, as the `accepting` check looks for it: its name (from
/// LISTEN_FDNAMES), its descriptor in the worker (-1 in bind mode, where the app's own bind
/// chose it), and its inode (its identity in any process, whatever descriptor a `dup` gave it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub name: String,
    pub fd: i32,
    pub inode: u64,
}

impl Watched {
    fn describe(&self) -> String {
        match self.fd {
            fd if fd < 0 => format!("`{}`", self.name),
            fd => format!("`{}` (fd {fd})", self.name),
        }
    }
}

/// Run one attempt on its own thread; the result arrives on `tx`. `sockets`: what the worker
/// was handed (shared sockets, then its probe socket), to explain a probe that failed.
pub fn start(
    target: Target,
    sockets: Vec<Watched>,
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
                Target::Http(addr, path, _) => http(*addr, path, timeout),
                Target::Accepting => accepting(worker, &sockets),
            };
            let detail = match &target {
                Target::Tcp(_, l) | Target::Http(_, _, l) if !ok => {
                    never_accepted(worker, l.as_fd(), &sockets).unwrap_or(detail)
                }
                _ => detail,
            };
            let _ = tx.send(ProbeResult { worker, ok, detail });
            waker.wake();
        })?;
    Ok(())
}

/// When a probe failed because the app never accepted on its probe socket (the connection is
/// still queued there), say so, and on which sockets the app does wait: most apps serve only
/// the first socket they are given.
fn never_accepted(worker: Pid, probe: BorrowedFd<'_>, sockets: &[Watched]) -> Option<String> {
    if sys::accept_queue_len(probe).ok()? == 0 {
        return None;
    }
    let probe_inode = sys::inode(probe).ok()?;
    let probe_socket = sockets.iter().find(|s| s.inode == probe_inode)?;
    let waited = waited_on(worker, sockets).ok()?;
    let probe_waited = sockets
        .iter()
        .zip(&waited)
        .any(|(s, w)| *w && s.inode == probe_inode);
    if probe_waited {
        // the app does wait on it: it is only slow, and the probe's own reason says so
        return None;
    }
    let serves: Vec<String> = sockets
        .iter()
        .zip(&waited)
        .filter(|(_, w)| **w)
        .map(|(s, _)| s.describe())
        .collect();
    let app = if serves.is_empty() {
        "the app waits for connections on none of its sockets yet".to_string()
    } else {
        format!("this app serves only {}", serves.join(", "))
    };
    Some(format!(
        "the probe socket {} was never accepted on: {app}; readiness.kind = \"accepting\" needs \
         no probe socket",
        probe_socket.describe()
    ))
}

/// The `accepting` check: ready once some process of the worker's tree waits for connections
/// on every one of `sockets`.
fn accepting(worker: Pid, sockets: &[Watched]) -> (bool, String) {
    match waited_on(worker, sockets) {
        Err(e) => (false, format!("cannot inspect pid {worker} in /proc: {e}")),
        Ok(waited) => {
            let missing: Vec<String> = sockets
                .iter()
                .zip(&waited)
                .filter(|(_, w)| !**w)
                .map(|(s, _)| s.describe())
                .collect();
            if missing.is_empty() {
                (true, "waiting for connections on every socket".into())
            } else {
                (
                    false,
                    format!(
                        "no process of the worker's tree waits for connections on {}",
                        missing.join(", ")
                    ),
                )
            }
        }
    }
}

/// At most this many processes of a worker's tree are inspected.
const MAX_TREE: usize = 1024;
/// At most this many entries of one `poll` array, or descriptors of one `select` set, are read.
const MAX_WAIT_FDS: u64 = 65536;

/// For each of `sockets`, whether a process of `root`'s tree (root, its children, theirs, …)
/// waits for connections on it, as the kernel shows it in /proc:
/// * the socket is in one of the process's epoll sets, for reading (`tfd:` lines of the epoll
///   descriptor's fdinfo) — event loops (Node, Go, asyncio, nginx-style servers);
/// * or a thread of it is blocked in accept/accept4 on it, or in poll/ppoll/select/pselect6
///   with it among the descriptors it waits to read (the arguments, then the array or set in
///   the process's memory) — threaded and pre-fork servers;
/// * or, for a socket neither shows, the process holds a connection accepted from it (a
///   socket of the same local address that does not listen, looked at through a copy of the
///   descriptor, at most [`MAX_ACCEPTED_LOOKS`] per process) — a pre-fork server under a load
///   that never lets it wait: a gunicorn sync worker accepts again as soon as it has answered.
///
/// Sockets are matched by inode, so a `dup` (Python's `socket.fromfd`, Go's `FileListener`)
/// counts. Only `root` itself must be readable; a descendant that exits meanwhile is skipped.
pub fn waited_on(root: Pid, sockets: &[Watched]) -> io::Result<Vec<bool>> {
    let mut found = vec![false; sockets.len()];
    let mark = |ino: u64, found: &mut Vec<bool>| {
        for (i, s) in sockets.iter().enumerate() {
            if s.inode == ino {
                found[i] = true;
            }
        }
    };
    let mut queue = vec![root];
    let mut seen = 0;
    while let Some(pid) = queue.pop() {
        if found.iter().all(|f| *f) || seen >= MAX_TREE {
            break;
        }
        seen += 1;
        let fds = match sys::proc_fds(pid) {
            Ok(f) => f,
            Err(e) if pid == root => return Err(e),
            Err(_) => continue,
        };
        let socket_of = |fd: u64| -> Option<u64> {
            fds.iter().find_map(|(n, k)| match k {
                FdKind::Socket(ino) if *n as u64 == fd => Some(*ino),
                _ => None,
            })
        };
        // an epoll target counts only as a socket this process holds: an inode number alone
        // could be a file of another file system
        let holds_socket = |ino: u64| fds.iter().any(|(_, k)| *k == FdKind::Socket(ino));
        for (fd, kind) in &fds {
            if *kind == FdKind::Epoll {
                for (events, ino) in sys::proc_epoll_targets(pid, *fd).unwrap_or_default() {
                    if events & libc::EPOLLIN as u32 != 0 && holds_socket(ino) {
                        mark(ino, &mut found);
                    }
                }
            }
        }
        for tid in sys::proc_tasks(pid).unwrap_or_default() {
            let Ok(Some((nr, args))) = sys::proc_syscall(pid, tid) else {
                continue;
            };
            match sys::wait_call(nr) {
                Some(WaitCall::Accept) => {
                    if let Some(ino) = socket_of(args[0]) {
                        mark(ino, &mut found);
                    }
                }
                Some(WaitCall::Poll) => {
                    let n = args[1].min(MAX_WAIT_FDS) as usize;
                    let Ok(mem) = sys::read_process_memory(pid, args[0], n * 8) else {
                        continue;
                    };
                    // struct pollfd { int fd; short events; short revents; }
                    for entry in mem.chunks_exact(8) {
                        let fd = i32::from_ne_bytes([entry[0], entry[1], entry[2], entry[3]]);
                        let events = i16::from_ne_bytes([entry[4], entry[5]]);
                        if fd >= 0 && events & libc::POLLIN != 0 {
                            if let Some(ino) = socket_of(fd as u64) {
                                mark(ino, &mut found);
                            }
                        }
                    }
                }
                Some(WaitCall::Select) => {
                    let nfds = args[0].min(MAX_WAIT_FDS);
                    if args[1] == 0 || nfds == 0 {
                        continue;
                    }
                    // an fd_set is an array of longs; on a little-endian machine bit N of the
                    // set is bit N % 8 of byte N / 8
                    let Ok(set) = sys::read_process_memory(pid, args[1], nfds.div_ceil(8) as usize)
                    else {
                        continue;
                    };
                    for fd in 0..nfds {
                        if cfg!(target_endian = "little")
                            && set[(fd / 8) as usize] & (1 << (fd % 8)) != 0
                        {
                            if let Some(ino) = socket_of(fd) {
                                mark(ino, &mut found);
                            }
                        }
                    }
                }
                None => {}
            }
        }
        if !found.iter().all(|f| *f) {
            holds_accepted(pid, &fds, sockets, &mut found);
        }
        queue.extend(sys::proc_children(pid).unwrap_or_default());
    }
    Ok(found)
}

/// At most this many of one process's sockets are looked at for a connection accepted from a
/// socket it is not seen waiting on.
const MAX_ACCEPTED_LOOKS: usize = 64;

/// Marks each of `sockets` not `found` yet that process `pid` (its descriptors `fds`) holds a
/// connection accepted from: a socket that does not listen, whose local address is the
/// socket's own (the same TCP port and address, or the same unix path). Read through copies of
/// the descriptors taken at once (pidfd_getfd: a connection lives a millisecond under a load
/// of short requests, too short for a look at /proc/net after the walk).
fn holds_accepted(pid: Pid, fds: &[(i32, FdKind)], sockets: &[Watched], found: &mut [bool]) {
    let Ok(pidfd) = sys::pidfd(pid) else {
        return;
    };
    let local_of = |fd: i32| -> Option<(SockAddr, bool)> {
        let copy = sys::copy_fd(pidfd.as_fd(), fd).ok()?;
        let addr = sys::local_addr(copy.as_fd()).ok()?;
        Some((addr, sys::is_listening(copy.as_fd()).ok()?))
    };
    // the local address of each socket still missing, from this process's own copy of it
    let mut wanted: Vec<(usize, SockAddr)> = Vec::new();
    for (i, s) in sockets.iter().enumerate() {
        let fd = fds.iter().find(|(_, k)| *k == FdKind::Socket(s.inode));
        if let (false, Some((fd, _))) = (found[i], fd) {
            if let Some((addr, true)) = local_of(*fd) {
                wanted.push((i, addr));
            }
        }
    }
    if wanted.is_empty() {
        return;
    }
    let ours: Vec<u64> = sockets.iter().map(|s| s.inode).collect();
    let others = fds.iter().filter_map(|(fd, k)| match k {
        FdKind::Socket(ino) if !ours.contains(ino) => Some(*fd),
        _ => None,
    });
    for fd in others.take(MAX_ACCEPTED_LOOKS) {
        if let Some((addr, false)) = local_of(fd) {
            for (i, want) in &wanted {
                if accepted_on(&addr, want) {
                    found[*i] = true;
                }
            }
        }
        if wanted.iter().all(|(i, _)| found[*i]) {
            return;
        }
    }
}

/// Whether a connection whose local address is `conn` came through a listener bound to
/// `listener`: the same port (and address, unless the listener's is a wildcard; an IPv6
/// listener also takes IPv4 connections), or the same unix path.
fn accepted_on(conn: &SockAddr, listener: &SockAddr) -> bool {
    use std::net::IpAddr;
    match (conn, listener) {
        (SockAddr::Unix(a), SockAddr::Unix(b)) => a == b && *a != sys::UnixAddr::Unnamed,
        _ => match (conn.port(), listener.port(), listener.ip()) {
            (Some(c), Some(l), Some(ip)) if c == l && c != 0 => {
                ip.is_unspecified()
                    || conn.ip() == Some(ip)
                    || matches!((conn.ip(), ip), (Some(IpAddr::V6(v6)), IpAddr::V4(v4))
                        if v6.to_ipv4_mapped() == Some(v4))
            }
            _ => false,
        },
    }
}

/// A TCP check must show that the *worker* accepts: baton created the private listener, so a
/// bare connect would succeed through the kernel's backlog even if the worker never accepted.
/// Success = our connection left the listener's accept queue (the worker took it).
fn tcp(addr: SocketAddr, listener: BorrowedFd<'_>, timeout: Duration) -> (bool, String) {
    let deadline = later(Instant::now(), timeout);
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
    let deadline = later(Instant::now(), timeout);
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

/// `t + d`, saturating far in the future instead of panicking when the sum does not fit the
/// clock (the config bounds durations; this keeps a reading of the clock from ever panicking).
pub fn later(t: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 86_400);
    t.checked_add(d).or_else(|| t.checked_add(FAR)).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_accepted_on_the_listener_of_its_local_address() {
        use crate::sys::UnixAddr;
        let a = |s: &str| SockAddr::Inet(s.parse().unwrap());
        let a6 = |s: &str| SockAddr::Inet6(s.parse().unwrap());
        assert!(accepted_on(&a("127.0.0.1:3000"), &a("0.0.0.0:3000")));
        assert!(accepted_on(&a("127.0.0.1:3000"), &a("127.0.0.1:3000")));
        assert!(!accepted_on(&a("127.0.0.2:3000"), &a("127.0.0.1:3000")));
        assert!(!accepted_on(&a("127.0.0.1:3001"), &a("0.0.0.0:3000")));
        assert!(accepted_on(
            &a6("[::ffff:127.0.0.1]:3000"),
            &a6("[::]:3000")
        ));
        assert!(accepted_on(
            &a6("[::ffff:127.0.0.1]:3000"),
            &a("127.0.0.1:3000")
        ));
        assert!(!accepted_on(&a("0.0.0.0:0"), &a("0.0.0.0:0")));
        let u = |p: &str| SockAddr::Unix(UnixAddr::Path(p.into()));
        assert!(accepted_on(&u("/run/app.sock"), &u("/run/app.sock")));
        assert!(!accepted_on(&u("/run/other.sock"), &u("/run/app.sock")));
        let unnamed = SockAddr::Unix(UnixAddr::Unnamed);
        assert!(!accepted_on(&unnamed, &unnamed));
        assert!(!accepted_on(&u("/run/app.sock"), &a("0.0.0.0:3000")));
    }

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
