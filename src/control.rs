//! The control socket: protocol, server side (driven by the supervisor's event loop) and the
//! client used by `baton reload` / `baton status`.
//!
//! Protocol: one JSON request line, one JSON response line, then the server closes. A reload
//! request is answered only when the rollout it triggered has ended, so the client blocks until
//! then. The socket is mode 0600 and every peer's uid is checked with SO_PEERCRED (root or
//! baton's own uid).
//!
//! This module owns no supervisor state and never blocks the event loop on a slow client for
//! longer than a short write timeout.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sys;

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    Reload,
    Status,
}

/// Answer to a reload request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadReply {
    pub ok: bool,
    /// The generation serving after the rollout.
    pub generation: Option<u64>,
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

#[derive(Debug, Serialize, Deserialize)]
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

// ------------------------------------------------------------------------------------------
// server

/// The listening control socket.
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
    uid: u32,
}

/// A connected client whose request line is still being read.
pub struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
}

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
        // A stale socket from a previous run is replaced, but a live one means another baton
        // already runs with this control path: refuse to take it over.
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by another running baton", path.display()),
            ));
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        sys::chmod(path, 0o600)?;
        listener.set_nonblocking(true)?;
        Ok(Server {
            listener,
            path: path.to_path_buf(),
            uid: sys::euid(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accept every pending connection. Peers that are neither root nor baton's uid are told
    /// so and dropped.
    pub fn accept(&self) -> Vec<Conn> {
        let mut out = Vec::new();
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let uid = sys::peer_uid(&stream);
                    match uid {
                        Ok(u) if u == 0 || u == self.uid => {
                            if stream.set_nonblocking(true).is_ok() {
                                out.push(Conn {
                                    stream,
                                    buf: Vec::new(),
                                });
                            }
                        }
                        other => {
                            tracing::warn!(
                                baton_event = "control_denied",
                                "control connection refused (peer uid {:?})",
                                other.ok()
                            );
                            let mut c = Client { stream };
                            c.reply(&ErrorReply {
                                error: "permission denied".into(),
                            });
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("control accept failed: {e}");
                    break;
                }
            }
        }
        out
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
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
                        let mut client = Client {
                            stream: self.stream,
                        };
                        return match serde_json::from_slice::<Request>(&line) {
                            Ok(req) => (None, Incoming::Request(req, client)),
                            Err(e) => {
                                client.reply(&ErrorReply {
                                    error: format!("bad request: {e}"),
                                });
                                (None, Incoming::Closed)
                            }
                        };
                    }
                    if self.buf.len() > 4096 {
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

impl Client {
    /// Send the one-line JSON answer and close. A client that went away is not an error.
    pub fn reply<T: Serialize>(&mut self, value: &T) {
        let mut line = match serde_json::to_vec(value) {
            Ok(l) => l,
            Err(_) => return,
        };
        line.push(b'\n');
        let _ = self.stream.set_nonblocking(false);
        let _ = self
            .stream
            .set_write_timeout(Some(Duration::from_millis(500)));
        let _ = self.stream.write_all(&line);
    }
}

// ------------------------------------------------------------------------------------------
// client

/// Send one request and return the raw JSON reply.
pub fn request(path: &Path, req: &Request, timeout: Option<Duration>) -> anyhow::Result<String> {
    use anyhow::Context;
    let mut stream = UnixStream::connect(path).with_context(|| {
        format!(
            "cannot connect to the control socket {} (is `baton run` running with this config?)",
            path.display()
        )
    })?;
    stream.set_read_timeout(timeout)?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .context("reading the reply from baton")?;
    if reply.is_empty() {
        anyhow::bail!("baton closed the control connection without a reply");
    }
    if let Ok(err) = serde_json::from_str::<ErrorReply>(&reply) {
        anyhow::bail!("{}", err.error);
    }
    Ok(reply)
}
