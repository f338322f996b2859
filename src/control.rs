//! The control socket: protocol, server side (driven by the supervisor's event loop) and the
//! client used by `baton reload`, `rollback`, `history` and `status`.
//!
//! Protocol: one JSON request line, one JSON response line, then the server closes. A reload
//! request is answered only when the rollout it triggered has ended, so the client blocks until
//! then; before its answer the server may send progress lines (`{"progress": "..."}`), e.g.
//! when the reload waits for a drain, which the client prints and skips. The socket is mode 0600 and every peer's uid is checked with SO_PEERCRED (root or
//! baton's own uid), both ways: the client talks only to a server of its own uid or root.
//!
//! This module owns no supervisor state and never blocks the event loop on a slow client for
//! at all: answers are written without blocking (what the socket does not take at once is
//! finished by the event loop as the client reads, see [`Outgoing`]).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::sys;

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    Reload,
    Status,
    /// The history of generations ([`HistoryReply`]).
    History,
    /// A new generation from the release and config of an earlier one (`to`, else the last
    /// good one before the serving one); answered like a reload ([`ReloadReply`]).
    Rollback {
        #[serde(default)]
        to: Option<u64>,
    },
}

impl Request {
    /// The request's name, as `baton` calls it.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Reload => "reload",
            Request::Status => "status",
            Request::History => "history",
            Request::Rollback { .. } => "rollback",
        }
    }
}

/// Answer to a history request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryReply {
    /// This run of baton (its start, ms since the epoch): generation numbers start at 1 on
    /// each run.
    pub run: u64,
    /// The file it is kept in (`None`: in memory only, no state directory).
    pub file: Option<String>,
    /// How many generations it keeps (`history`).
    pub keep: u32,
    /// Why the last write of the file failed (a full disk), until one succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unwritten: Option<String>,
    /// Oldest first.
    pub generations: Vec<crate::history::Record>,
}

/// Answer to a reload request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadReply {
    pub ok: bool,
    /// The generation serving after the rollout.
    pub generation: Option<u64>,
    /// That generation's release, resolved at its start (`None` from a baton that predates
    /// it).
    #[serde(default)]
    pub release: Option<String>,
    /// One line: what happened (on failure: why the new generation was rolled back).
    pub message: String,
    pub duration_ms: u64,
    /// From the reload's start to its outcome (the swap, or the rollback), in microseconds.
    pub duration_us: u64,
    /// The new generation's slowest worker: from just before its spawn to its readiness (the
    /// kernel's receive time of its READY=1), in microseconds.
    pub slowest_start_us: Option<u64>,
    /// How long at least one worker of the new generation was starting (each from just before
    /// its spawn to its readiness; overlaps counted once), in microseconds.
    /// `duration_us - app_starting_us` is baton's own share of the reload. (Workers started all
    /// at once overlap, so this is about `slowest_start_us`; paced ones follow each other.)
    #[serde(default)]
    pub app_starting_us: Option<u64>,
    /// From the reload's start to the start of the first worker's spawn, in microseconds.
    #[serde(default)]
    pub first_spawn_us: Option<u64>,
    /// From the reload's start to the start of the last worker's spawn, in microseconds.
    #[serde(default)]
    pub last_spawn_us: Option<u64>,
    /// From the reload's start to the last worker's readiness, in microseconds;
    /// `duration_us - last_ready_us` is the swap's latency (plus `readiness.stable`, if set).
    #[serde(default)]
    pub last_ready_us: Option<u64>,
}

/// Full status, as `baton status --json` prints it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub pid: i32,
    pub state: String,
    pub uptime_s: f64,
    pub config: Option<String>,
    pub serving_generation: Option<u64>,
    pub sockets: Vec<SocketStatus>,
    pub generations: Vec<GenerationStatus>,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub last_reload: Option<ReloadReply>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SocketStatus {
    pub name: String,
    /// baton's own descriptor of the socket.
    pub fd: i32,
    /// The descriptor the workers get it at (3, 4, … in `LISTEN_FDNAMES` order). `None` in
    /// the reply of a baton from before it was reported (a package upgrade keeps the running
    /// baton, while `baton status` is the new one).
    #[serde(default)]
    pub worker_fd: Option<i32>,
    pub address: String,
    pub source: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct GenerationStatus {
    pub generation: u64,
    pub role: String,
    pub phase: String,
    /// The release its workers run from, resolved at its start (`None` until then, when it
    /// could not be, or from a baton that predates it).
    #[serde(default)]
    pub release: Option<String>,
    pub age_s: f64,
    pub workers: Vec<WorkerStatus>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub instance: u32,
    pub pid: Option<i32>,
    pub state: String,
    pub restarts: u32,
    pub uptime_s: Option<f64>,
    pub status: Option<String>,
    pub last_exit: Option<String>,
}

/// Error reply for requests that cannot be served (bad request, permission).
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: String,
}

/// A line sent before the answer: what the request waits for.
#[derive(Debug, Serialize, Deserialize)]
pub struct Progress {
    pub progress: String,
}

// ------------------------------------------------------------------------------------------
// server

/// The listening control socket.
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
    /// The socket file's inode: at exit only that file is removed, not whatever replaced it.
    inode: u64,
    uid: u32,
}

/// A connected client whose request line is still being read.
pub struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    /// When it was accepted: it must send its request within [`REQUEST_TIMEOUT`].
    pub opened: Instant,
}

/// How long a control connection may take to send its request line before it is closed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// At most this many control connections wait for their request line at once; the oldest one
/// is closed to make room for a new one, so that idle connections never lock a client out.
pub const MAX_CONNS: usize = 64;

/// What a connection asked for, once its request line is complete.
pub enum Incoming {
    Pending,
    Closed,
    Request(Request, Client),
}

/// A client waiting for its answer.
pub struct Client {
    stream: UnixStream,
}

impl Server {
    pub fn bind(path: &Path) -> io::Result<Server> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // A stale socket of baton's own uid from a previous run is replaced, but a live one
        // means another baton (or anything else) already serves this control path: refuse to
        // take it over. Anything that is not a socket (a config file, a directory), and a
        // socket of another uid, is never removed.
        // The look never blocks: a live server whose queue of connections is full is live.
        let by = match sys::probe_unix(path) {
            sys::Probe::Accepted(Some((_, u))) if u == sys::euid() => {
                Some("another running baton".to_string())
            }
            sys::Probe::Accepted(Some((_, u))) => Some(format!("a process of uid {u}")),
            sys::Probe::Accepted(None) => Some("another process".to_string()),
            sys::Probe::QueueFull => {
                Some("another process (its queue of connections is full)".to_string())
            }
            sys::Probe::Refused | sys::Probe::Other(_) => None,
        };
        if let Some(by) = by {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by {by}", path.display()),
            ));
        }
        sys::remove_stale_socket(path, "control socket")?;
        let listener = UnixListener::bind(path)?;
        sys::chmod(path, 0o600)?;
        listener.set_nonblocking(true)?;
        let inode = std::fs::symlink_metadata(path).map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.ino()
        })?;
        Ok(Server {
            listener,
            path: path.to_path_buf(),
            inode,
            uid: sys::euid(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accept the next pending connection; `Ok(None)` when none is queued. Peers that are
    /// neither root nor baton's uid are told so and dropped. An error is the listener's (for
    /// example EMFILE: no descriptor left for the connection).
    pub fn accept_one(&self, now: Instant) -> io::Result<Option<Conn>> {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let uid = sys::peer_uid(&stream);
                    match uid {
                        Ok(u) if u == 0 || u == self.uid => {
                            if stream.set_nonblocking(true).is_ok() {
                                return Ok(Some(Conn {
                                    stream,
                                    buf: Vec::new(),
                                    opened: now,
                                }));
                            }
                        }
                        other => {
                            tracing::warn!(
                                baton_event = "control_denied",
                                "control connection refused (peer uid {:?})",
                                other.ok()
                            );
                            // best effort: a short line into an empty socket buffer
                            let _ = Client { stream }.reply(
                                &ErrorReply {
                                    error: "permission denied".into(),
                                },
                                now,
                            );
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl AsFd for Server {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

/// A connection that sent this many bytes without a line end is closed.
pub const MAX_REQUEST: usize = 4096;

/// One request line (without its `\n`) as the server reads it: a [`Request`], or the error
/// message the client is answered with (`{"error": "bad request: …"}`). Pure: no I/O.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    serde_json::from_slice::<Request>(line).map_err(|e| format!("bad request: {e}"))
}

impl Conn {
    /// Read what is available; returns the request once its line is complete.
    pub fn read(mut self) -> (Option<Conn>, Incoming) {
        let mut chunk = [0u8; 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return (None, Incoming::Closed),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                        let line = self.buf[..end].to_vec();
                        let client = Client {
                            stream: self.stream,
                        };
                        return match parse_request(&line) {
                            Ok(req) => (None, Incoming::Request(req, client)),
                            Err(error) => {
                                // best effort: a short line into an empty socket buffer
                                let _ = client.reply(&ErrorReply { error }, self.opened);
                                (None, Incoming::Closed)
                            }
                        };
                    }
                    if self.buf.len() > MAX_REQUEST {
                        return (None, Incoming::Closed);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return (Some(self), Incoming::Pending)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return (None, Incoming::Closed),
            }
        }
    }
}

impl AsFd for Client {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

impl Client {
    /// Tell the client what its request waits for, without blocking: a client that does not
    /// read misses the line (its answer still comes, as an [`Outgoing`] if need be).
    pub fn progress(&mut self, text: &str) {
        let mut line = match serde_json::to_vec(&Progress {
            progress: text.to_string(),
        }) {
            Ok(l) => l,
            Err(_) => return,
        };
        line.push(b'\n');
        let _ = self.stream.set_nonblocking(true);
        // The first thing written to a fresh connection fits its empty buffer; should a line
        // ever go out in part, the answer after it would be garbage: close the connection
        // instead, which the client reports as a connection closed without a reply.
        match self.stream.write(&line) {
            Ok(n) if n == line.len() => {}
            Ok(0) | Err(_) => {}
            Ok(_) => {
                let _ = self.stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// Send the one-line JSON answer and close, without blocking: what the socket does not
    /// take at once comes back as an [`Outgoing`] for the event loop to finish (or drop after
    /// [`REPLY_TIMEOUT`]). A client that went away is not an error.
    pub fn reply<T: Serialize>(self, value: &T, now: Instant) -> Option<Outgoing> {
        let mut line = serde_json::to_vec(value).ok()?;
        line.push(b'\n');
        let _ = self.stream.set_nonblocking(true);
        let mut out = Outgoing {
            stream: self.stream,
            buf: line,
            written: 0,
            deadline: now + REPLY_TIMEOUT,
        };
        match out.write_some() {
            Sent::Pending => Some(out),
            Sent::Done | Sent::Failed => None,
        }
    }
}

/// How long a client may take to read its answer before the connection is dropped.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// An answer the client has not read whole yet.
pub struct Outgoing {
    stream: UnixStream,
    buf: Vec<u8>,
    written: usize,
    /// Dropped (unfinished) at this instant.
    pub deadline: Instant,
}

/// How far an [`Outgoing`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Done,
    /// The socket is full: try again when it is writable.
    Pending,
    /// The client went away.
    Failed,
}

impl Outgoing {
    /// Write what the socket takes now.
    pub fn write_some(&mut self) -> Sent {
        while self.written < self.buf.len() {
            match self.stream.write(&self.buf[self.written..]) {
                Ok(0) => return Sent::Failed,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Sent::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Sent::Failed,
            }
        }
        Sent::Done
    }
}

impl AsFd for Outgoing {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

// ------------------------------------------------------------------------------------------
// client

/// The longest reply line a client accepts: a status of 1024 workers is well under 1 MiB.
pub const MAX_REPLY: usize = 4 << 20;

/// Send one request and return the raw JSON reply; progress lines that come before it go to
/// `on_progress`. `timeout` bounds the whole wait. A line longer than [`MAX_REPLY`] or that is
/// not UTF-8 is an error, never a reason to grow without bound.
pub fn request(
    path: &Path,
    req: &Request,
    timeout: Option<Duration>,
    mut on_progress: impl FnMut(&str),
) -> anyhow::Result<String> {
    // a timeout too large to add to the clock is no timeout
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut attempt = 1;
    loop {
        match request_once(path, req, timeout, deadline, &mut on_progress)? {
            Some(reply) => return Ok(reply),
            None if attempt < UNREAD_ATTEMPTS && !deadline.is_some_and(|d| Instant::now() >= d) => {
                std::thread::sleep(Duration::from_millis(1 << attempt));
                attempt += 1;
            }
            None => anyhow::bail!(
                "baton closed the control connection before reading the request, {attempt} \
                 times in a row (too many control connections at once?)"
            ),
        }
    }
}

/// How many times a client connects when baton closes the connection without reading the
/// request: it closes the oldest connection that has not sent its request when too many are
/// open at once, which may be a client that had just connected.
const UNREAD_ATTEMPTS: u32 = 5;

/// One connection of [`request`]: `None` when baton provably closed it without reading the
/// request (the write fails with EPIPE, or the read with ECONNRESET, which the kernel reports
/// when a Unix socket is closed with data unread, before anything came back), so that the
/// request (even a reload) may be sent again.
fn request_once(
    path: &Path,
    req: &Request,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    on_progress: &mut impl FnMut(&str),
) -> anyhow::Result<Option<String>> {
    use anyhow::Context;
    let unread = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        )
    };
    let mut stream = UnixStream::connect(path).with_context(|| {
        format!(
            "cannot connect to the control socket {} (is `baton run` running with this config?)",
            path.display()
        )
    })?;
    // Whoever answers must be baton's user or root (SO_PEERCRED, from the kernel): another
    // user who could replace the socket file would otherwise answer `baton reload` with
    // "generation 99 serving".
    let me = sys::euid();
    match sys::peer_uid(&stream) {
        Ok(uid) if uid == me || uid == 0 => {}
        Ok(uid) => {
            return Err(ForeignServer {
                path: path.to_path_buf(),
                uid,
                me,
            }
            .into())
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot tell who serves the control socket {}",
                    path.display()
                )
            })
        }
    }
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    match stream.write_all(&line) {
        Ok(()) => {}
        Err(e) if unread(&e) => return Ok(None),
        Err(e) => return Err(e).context("sending the request to baton"),
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut received = false;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = buf.drain(..=end).collect();
            match reply_line(raw)? {
                ReplyLine::Progress(p) => on_progress(&p),
                ReplyLine::Answer(reply) => return Ok(Some(reply)),
            }
        }
        if buf.len() > MAX_REPLY {
            anyhow::bail!("baton's reply is longer than {MAX_REPLY} bytes without a line end");
        }
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(no_outcome(timeout));
            }
            // a zero timeout means "none" to the kernel
            stream.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        }
        match stream.read(&mut chunk) {
            Ok(0) if buf.is_empty() => {
                anyhow::bail!("baton closed the control connection without a reply")
            }
            Ok(0) => anyhow::bail!("baton closed the control connection in the middle of a reply"),
            Ok(n) => {
                received = true;
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if !received && unread(&e) => return Ok(None),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(no_outcome(timeout));
            }
            Err(e) => return Err(e).context("reading the reply from baton"),
        }
    }
}

/// The control socket is served by a process of another user: the client refuses to talk to
/// it (nothing is sent).
#[derive(Debug)]
pub struct ForeignServer {
    pub path: PathBuf,
    /// The serving process's uid (SO_PEERCRED).
    pub uid: u32,
    /// The client's effective uid.
    pub me: u32,
}

impl std::fmt::Display for ForeignServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "refusing the control socket {}: it is served by uid {}, not by uid {} (yours) or \
             root, so another user may have replaced it; nothing was sent. Check the path, and \
             keep control sockets in a directory only their user can write",
            self.path.display(),
            self.uid,
            self.me
        )?;
        if self.me == 0 {
            // root asking a user's own baton
            write!(
                f,
                " (to ask the baton of uid {} as root, run the client as that user: \
                 `runuser -u USER -- baton ...`)",
                self.uid
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ForeignServer {}

/// One line a client read from the server (with or without its `\n`).
#[derive(Debug, PartialEq, Eq)]
pub enum ReplyLine {
    /// `{"progress": "…"}`: what the request waits for; more lines follow.
    Progress(String),
    /// The answer, as raw JSON text for the caller to parse.
    Answer(String),
}

/// Classify one reply line: a progress line, the answer, or an error (the server's
/// `{"error": "…"}`, or a line that is not UTF-8). The text of a progress line and of an
/// error goes to a terminal: its control characters are replaced (see
/// [`crate::client::shown`]). Pure: no I/O.
pub fn reply_line(raw: Vec<u8>) -> anyhow::Result<ReplyLine> {
    use crate::client::shown;
    let reply =
        String::from_utf8(raw).map_err(|_| anyhow::anyhow!("baton's reply is not UTF-8 text"))?;
    if let Ok(p) = serde_json::from_str::<Progress>(&reply) {
        return Ok(ReplyLine::Progress(shown(&p.progress)));
    }
    if let Ok(err) = serde_json::from_str::<ErrorReply>(&reply) {
        anyhow::bail!("{}", shown(&err.error));
    }
    Ok(ReplyLine::Answer(reply))
}

fn no_outcome(timeout: Option<Duration>) -> anyhow::Error {
    let waited = timeout.map(crate::supervisor::fmt_duration);
    anyhow::anyhow!(
        "no outcome after {}: baton goes on with the request (`baton status` shows where it is)",
        waited.unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer bigger than the socket takes at once is not written with a blocking write:
    /// `reply` returns what is left, and `write_some` finishes it as the client reads.
    #[test]
    fn a_big_answer_is_finished_without_blocking() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let big = ErrorReply {
            error: "x".repeat(4 << 20),
        };
        let now = Instant::now();
        // nobody reads yet: a blocking write would never return (a time bound instead would
        // measure the JSON encoding of 4 MiB in a debug build on a busy machine)
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(Client { stream: ours }.reply(&big, now));
        });
        let mut out = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("reply blocked")
            .expect("4 MiB do not fit a socket buffer");
        assert_eq!(out.deadline, now + REPLY_TIMEOUT);
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            theirs.read_to_end(&mut all).unwrap();
            all
        });
        loop {
            match out.write_some() {
                Sent::Done => break,
                Sent::Pending => std::thread::sleep(Duration::from_millis(1)),
                Sent::Failed => panic!("the reader is there"),
            }
        }
        drop(out);
        let all = reader.join().unwrap();
        assert_eq!(all.len(), (4 << 20) + r#"{"error":""}"#.len() + 1);
        assert_eq!(all.last(), Some(&b'\n'));
    }

    #[test]
    fn a_request_line_is_parsed_or_answered_with_an_error() {
        assert_eq!(parse_request(br#"{"op":"reload"}"#), Ok(Request::Reload));
        assert_eq!(parse_request(br#"{"op":"status"}"#), Ok(Request::Status));
        assert_eq!(parse_request(br#"{"op":"history"}"#), Ok(Request::History));
        assert_eq!(
            parse_request(br#"{"op":"rollback"}"#),
            Ok(Request::Rollback { to: None })
        );
        assert_eq!(
            parse_request(br#"{"op":"rollback","to":3}"#),
            Ok(Request::Rollback { to: Some(3) })
        );
        for bad in [&b"{\"op\":\"stop\"}"[..], b"", b"\xff", b"{\"op\":1}"] {
            let e = parse_request(bad).unwrap_err();
            assert!(e.starts_with("bad request: "), "{e}");
        }
    }

    #[test]
    fn reply_lines_are_progress_answers_or_errors() {
        assert_eq!(
            reply_line(b"{\"progress\":\"waiting\"}\n".to_vec()).unwrap(),
            ReplyLine::Progress("waiting".into())
        );
        assert_eq!(
            reply_line(b"{\"ok\":true}\n".to_vec()).unwrap(),
            ReplyLine::Answer("{\"ok\":true}\n".into())
        );
        let e = reply_line(b"{\"error\":\"permission denied\"}".to_vec()).unwrap_err();
        assert_eq!(e.to_string(), "permission denied");
        let e = reply_line(b"\xff\n".to_vec()).unwrap_err();
        assert!(e.to_string().contains("not UTF-8"), "{e}");
    }

    /// Found by the `client_reply` fuzz target: a progress line or an error reply carrying
    /// escape sequences reached the terminal as they were (`baton reload` prints progress
    /// lines, both print errors), while the status table replaced them.
    #[test]
    fn control_characters_in_progress_and_error_lines_are_replaced() {
        let line = br#"{"progress":"wait\u001b[2J\r\tdrain\u007f"}"#.to_vec();
        assert_eq!(
            reply_line(line).unwrap(),
            ReplyLine::Progress("wait\u{fffd}[2J\u{fffd}\u{fffd}drain\u{fffd}".into())
        );
        let e = reply_line(br#"{"error":"\u001b]0;owned\u0007denied\r"}"#.to_vec()).unwrap_err();
        assert_eq!(e.to_string(), "\u{fffd}]0;owned\u{fffd}denied\u{fffd}");
    }
}
