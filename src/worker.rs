//! Starting one worker process, the socket-activation way or the bind way.
//!
//! Owns the recipe for a worker's environment and descriptors. With `handover = "fds"`: the
//! shared listening sockets at fd 3.., an optional private probe socket after them,
//! `LISTEN_FDS`, `LISTEN_FDNAMES`, `LISTEN_PID` (filled in by [`sys::spawn_child`] with the
//! child's own pid). With `handover = "bind"`: none of those; the worker's bind() and listen()
//! are trapped instead ([`sys::Spawn::trap_bind`]; its unlink() too when one of the sockets is
//! a unix path, [`sys::Spawn::trap_unlink`]) and its filter's listener comes back with its pid. Always `NOTIFY_SOCKET`, `BATON_GENERATION`, `BATON_INSTANCE`, the config's
//! `[env]`. Variables that belong to baton itself (its own NOTIFY_SOCKET, watchdog, LISTEN_*)
//! never reach a worker.
//!
//! This module starts processes; it never signals or waits for them (the supervisor does).

use std::ffi::{OsStr, OsString};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::config::Handover;
use crate::release::Pinned;
use crate::sockets::Listeners;
use crate::sys::{self, Pid};

/// Variables of baton's own environment that must not be inherited by children.
const PRIVATE_VARS: [&str; 9] = [
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "BATON_GENERATION",
    "BATON_INSTANCE",
    // baton's own events file (`logging`): a worker's lines must not go there
    "BATON_EVENTS",
];

/// Name of the private probe socket in LISTEN_FDNAMES.
pub const PROBE_FDNAME: &str = "baton-probe";

/// A private listening socket on 127.0.0.1 handed to exactly one worker, so that an http/tcp
/// readiness probe reaches that worker and no other (a probe through the shared port could be
/// answered by the previous generation).
pub struct ProbeSocket {
    pub fd: OwnedFd,
    pub addr: SocketAddr,
}

impl ProbeSocket {
    pub fn new() -> io::Result<ProbeSocket> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let addr = l.local_addr()?;
        Ok(ProbeSocket {
            fd: OwnedFd::from(l),
            addr,
        })
    }
}

/// Find `argv0` like execvp would, but before fork and with a clear error.
pub fn resolve_program(argv0: &str, cwd: Option<&Path>) -> io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if argv0.contains('/') {
        let p = PathBuf::from(argv0);
        let full = match cwd {
            Some(dir) if p.is_relative() => dir.join(&p),
            _ => p.clone(),
        };
        if is_exec(&full) {
            return Ok(p);
        }
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{argv0}: no such executable file"),
        ));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let cand = dir.join(argv0);
        if is_exec(&cand) {
            return Ok(cand);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("{argv0}: command not found in PATH"),
    ))
}

/// baton's environment minus its private variables.
fn inherited_env() -> Vec<(OsString, OsString)> {
    std::env::vars_os()
        .filter(|(k, _)| !PRIVATE_VARS.iter().any(|p| OsStr::new(p) == k))
        .collect()
}

/// How the workers of one generation are started: the release and the program resolved
/// ([`crate::release::pin`]), the environment they all share built, `/dev/null` opened, once
/// per generation rather than once per worker: every worker of the generation, restarts
/// included, runs from the same resolved paths.
pub struct Recipe {
    spawn: sys::Spawn,
    /// The generation's release, resolved.
    release: PathBuf,
    /// `handover = "bind"`: no descriptors passed, bind() and listen() trapped (and unlink()
    /// when a socket is a unix path).
    bind: bool,
    /// Whether each worker gets a private probe socket after the shared ones.
    probe: bool,
    /// (startup nice, running nice) when a worker starts at a higher nice value than it runs
    /// at once ready (`readiness.startup_nice`); see [`sys::renice_group`].
    nice: Option<(i32, i32)>,
    /// `drain.nice`, when it is above the running nice (a worker's priority only goes down
    /// once it is told to stop).
    drain_nice: Option<i32>,
}

impl Recipe {
    /// `probe`: every worker of this generation gets a [`ProbeSocket`] (http/tcp readiness).
    pub fn new(
        pinned: &Pinned,
        listeners: &Listeners,
        notify_path: &Path,
        generation: u64,
        probe: bool,
    ) -> io::Result<Recipe> {
        let config = &pinned.config;
        let mut sp = sys::Spawn::new(&pinned.program, &config.command)?;
        let bind = config.handover == Handover::Bind;
        if bind {
            // never a silent fallback to an untrapped worker: the generation fails with this
            sp.trap_bind(true).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("handover = \"bind\" cannot trap the workers' bind(): {e}"),
                )
            })?;
            // an app removes a unix socket's path before its bind (gunicorn) or at close
            // (libuv): answered without removing baton's
            sp.trap_unlink(listeners.has_unix_path());
        }
        let mut names = listeners.names();
        if probe {
            names.push(PROBE_FDNAME.to_string());
        }
        for (k, v) in inherited_env() {
            if config.env.contains_key(k.to_string_lossy().as_ref()) {
                continue;
            }
            sp.env(&k, &v)?;
        }
        for (k, v) in &config.env {
            sp.env(OsStr::new(k), OsStr::new(v))?;
        }
        // In bind mode the app gets no descriptor and no LISTEN_* variable: it binds its own
        // port and gets baton's socket through that bind. Passing the sockets too would make
        // a socket-activation-aware app (one that reads LISTEN_FDS when it is set) serve fd 3
        // and never bind, so `listen` readiness would never see it; and an app that does not
        // read them would hold an unused duplicate of every socket for its whole life.
        if !bind {
            sp.env(
                OsStr::new("LISTEN_FDS"),
                OsStr::new(&names.len().to_string()),
            )?;
            sp.env(OsStr::new("LISTEN_FDNAMES"), OsStr::new(&names.join(":")))?;
        }
        sp.env(OsStr::new("NOTIFY_SOCKET"), notify_path.as_os_str())?;
        sp.env(
            OsStr::new("BATON_GENERATION"),
            OsStr::new(&generation.to_string()),
        )?;
        if let Some(dir) = &config.cwd {
            sp.cwd(dir)?;
        }
        let startup = config.readiness.startup_nice;
        let nice = sp.can_start_at(startup).map(|run| (startup, run));
        let drain = config.drain_nice();
        let drain_nice = (drain > sys::worker_nice()).then_some(drain);
        Ok(Recipe {
            spawn: sp,
            release: pinned.release.clone(),
            bind,
            probe: probe && !bind,
            nice,
            drain_nice,
        })
    }

    /// The nice value to give a worker's process group with its stop signal while another
    /// generation serves, if it is to drain below its running priority.
    pub fn drain_nice(&self) -> Option<i32> {
        self.drain_nice
    }

    /// The nice value to give a worker's process group once it is ready, if it started at
    /// another one.
    pub fn ready_nice(&self) -> Option<i32> {
        self.nice.map(|(_, run)| run)
    }

    /// Whether each worker of this recipe gets a private probe socket (see [`Recipe::spawn`]).
    pub fn wants_probe(&self) -> bool {
        self.probe
    }

    /// The generation's release, resolved once (see [`crate::release`]).
    pub fn release(&self) -> &Path {
        &self.release
    }

    /// Whether workers bind their own port (`handover = "bind"`).
    pub fn traps_bind(&self) -> bool {
        self.bind
    }

    /// Start one worker; returns its pid once it has exec'd, and in bind mode the listener of
    /// its bind()/listen() trap. `probe` is given exactly when [`Recipe::wants_probe`].
    pub fn spawn(
        &self,
        listeners: &Listeners,
        instance: u32,
        probe: Option<&ProbeSocket>,
        stdout: Option<BorrowedFd<'_>>,
        stderr: Option<BorrowedFd<'_>>,
    ) -> io::Result<sys::Spawned> {
        let mut child = sys::Child::new();
        child.env(
            OsStr::new("BATON_INSTANCE"),
            OsStr::new(&instance.to_string()),
        )?;
        if !self.bind {
            let mut fds: Vec<BorrowedFd<'_>> = listeners.fds();
            if let Some(p) = probe {
                fds.push(p.fd.as_fd());
            }
            child.pass_fds(&fds, true);
        }
        child.stdio(stdout, stderr);
        let spawned = sys::spawn_child(&self.spawn, &child)?;
        let pid = spawned.pid;
        if let Some((startup, _)) = self.nice {
            // It has just exec'd, so its group is this one process. Raising a nice value
            // needs no privilege; should it fail anyway, the worker merely starts at its
            // running priority (and it is running: no error may hide it from the supervisor).
            let _ = sys::renice_group(pid, startup);
        }
        Ok(spawned)
    }
}

/// Start an `exec` readiness probe for a worker: the command gets BATON_WORKER_PID,
/// BATON_GENERATION and BATON_INSTANCE, no sockets, and its own process group.
pub fn spawn_exec_probe(
    argv: &[String],
    cwd: Option<&Path>,
    worker: Pid,
    generation: u64,
    instance: u32,
) -> io::Result<Pid> {
    let program = resolve_program(&argv[0], cwd)?;
    let mut sp = sys::Spawn::new(&program, argv)?;
    for (k, v) in inherited_env() {
        sp.env(&k, &v)?;
    }
    sp.env(
        OsStr::new("BATON_WORKER_PID"),
        OsStr::new(&worker.to_string()),
    )?;
    sp.env(
        OsStr::new("BATON_GENERATION"),
        OsStr::new(&generation.to_string()),
    )?;
    sp.env(
        OsStr::new("BATON_INSTANCE"),
        OsStr::new(&instance.to_string()),
    )?;
    if let Some(dir) = cwd {
        sp.cwd(dir)?;
    }
    sys::spawn(&sp, &sys::Child::new())
}
