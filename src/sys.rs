//! Every raw system call baton makes, behind small safe wrappers.
//!
//! This is the only module that calls `unsafe` functions (libc, or the few unsafe nix/std
//! functions). Each `unsafe` block carries a `// SAFETY:` comment. The rest of the crate only sees
//! safe types: [`SignalFd`], [`NotifySocket`], [`Spawn`] and [`Child`], [`ExitStatus`], plain pids and `OwnedFd`s.
//!
//! The delicate part is [`spawn`]: between `clone` and `execve` the child runs on baton's
//! memory (CLONE_VM | CLONE_VFORK, as `posix_spawn` does) and may only use async-signal-safe
//! calls, so everything that allocates (argv, envp, the `LISTEN_PID=` buffer) is prepared
//! before `clone`, and the child only fills in its own pid, moves descriptors and resets its
//! signal state.

#![deny(clippy::undocumented_unsafe_blocks)]

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd as NixSignalFd};
use nix::sys::socket::{self as nsock, sockopt};

/// A process id. Plain `i32` so that the rest of the crate does not depend on nix.
pub type Pid = i32;

/// The signals baton handles in its event loop. They are blocked in every thread and read
/// from a signalfd; children get an empty mask back before `execve`.
pub const LOOP_SIGNALS: [i32; 5] = [
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
];

fn sigset(signals: &[i32]) -> io::Result<SigSet> {
    let mut set = SigSet::empty();
    for &s in signals {
        set.add(Signal::try_from(s).map_err(io::Error::from)?);
    }
    Ok(set)
}

/// A non-blocking signalfd for [`LOOP_SIGNALS`]. Creating it blocks those signals in the
/// calling thread; call it before spawning any thread so that every thread inherits the mask.
pub struct SignalFd(NixSignalFd);

impl SignalFd {
    pub fn new() -> io::Result<SignalFd> {
        let set = sigset(&LOOP_SIGNALS)?;
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
        let fd = NixSignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(SignalFd(fd))
    }

    /// Next pending signal number, or `None` when none is pending.
    pub fn read(&self) -> io::Result<Option<i32>> {
        match self.0.read_signal() {
            Ok(Some(info)) => Ok(Some(info.ssi_signo as i32)),
            Ok(None) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

impl AsFd for SignalFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Make baton the reaper of orphaned descendants of its workers, so that helpers a worker
/// leaves behind are reaped by baton (no zombie survives) instead of escaping to PID 1.
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer argument and touches no memory.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The scheduling priority a child execs with. baton may run at a negative nice value
/// (`Nice=` in its unit) so that busy workers cannot starve its event loop, and an admin may
/// give it a real-time policy; its workers run at nice `max(0, baton's)` and SCHED_OTHER. The
/// child keeps baton's priority until just before `execve` (the part of a worker's start that
/// baton waits for runs at baton's priority), then takes `nice` and drops a real-time policy.
#[derive(Clone, Copy)]
struct Priority {
    /// The nice value to take before exec; `None` keeps baton's.
    nice: Option<i32>,
    realtime: bool,
}

/// baton's own nice value (of the calling thread) and whether it has a real-time policy.
fn own_priority() -> (i32, bool) {
    // SAFETY: sched_getscheduler and getpriority on the calling thread take integers and touch
    // no memory; errno is cleared first because -1 is a valid nice value.
    unsafe {
        let policy = libc::sched_getscheduler(0) & !libc::SCHED_RESET_ON_FORK;
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, 0);
        let nice = if *libc::__errno_location() == 0 {
            nice
        } else {
            0
        };
        (nice, policy == libc::SCHED_FIFO || policy == libc::SCHED_RR)
    }
}

/// The nice value a worker runs at: baton's, but never below 0.
pub fn worker_nice() -> i32 {
    own_priority().0.max(0)
}

/// Whether this process may lower a nice value down to `to` (raise a priority): with
/// CAP_SYS_NICE, or within RLIMIT_NICE (whose limit allows nice values down to 20 - rlim).
fn may_lower_nice_to(to: i32) -> bool {
    const CAP_SYS_NICE: u32 = 23;
    let cap = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|st| {
            let hex = st
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_string();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_NICE) != 0);
    let rlimit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NICE)
        .map(|(soft, _)| soft)
        .unwrap_or(0);
    cap || 20 - (rlimit.min(40) as i32) <= to
}

/// Set the nice value of every thread of every process in process group `pgid` (a worker and
/// what it started): a worker is moved to its startup nice right after its spawn, and back to
/// its running nice once ready.
pub fn renice_group(pgid: Pid, nice: i32) -> io::Result<()> {
    // SAFETY: setpriority takes integers and touches no memory.
    let r = unsafe { libc::setpriority(libc::PRIO_PGRP, pgid as libc::id_t, nice) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {}", signal_name(*s)),
        }
    }
}

/// Reap one exited child without blocking. `None` when no child has exited (or none exist).
pub fn reap_one() -> Option<(Pid, ExitStatus)> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes only to `status`, a valid local.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            let st = if libc::WIFEXITED(status) {
                ExitStatus::Code(libc::WEXITSTATUS(status))
            } else {
                ExitStatus::Signal(libc::WTERMSIG(status))
            };
            return Some((pid, st));
        }
        if pid < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return None;
    }
}

/// Send `signal` to one process. A process that is already gone is not an error.
pub fn kill(pid: Pid, signal: i32) -> io::Result<()> {
    debug_assert!(pid > 0);
    // SAFETY: kill takes plain integers; pid > 0 so it never targets a group or everybody.
    let r = unsafe { libc::kill(pid, signal) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(e);
        }
    }
    Ok(())
}

/// Send `signal` to the process group `pgid` (a worker and everything it started).
/// An empty group is not an error.
pub fn kill_group(pgid: Pid, signal: i32) -> io::Result<()> {
    debug_assert!(pgid > 1);
    // SAFETY: kill with a negative pid signals a process group; pgid > 1 so -pgid is never
    // 0 (our own group) or -1 (every process).
    let r = unsafe { libc::kill(-pgid, signal) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(e);
        }
    }
    Ok(())
}

/// The canonical name of a signal number, e.g. "SIGTERM".
pub fn signal_name(sig: i32) -> &'static str {
    Signal::try_from(sig).map(|s| s.as_str()).unwrap_or("SIG?")
}

/// Readiness of descriptors; thin wrapper around poll(2).
pub struct PollSet {
    fds: Vec<libc::pollfd>,
}

impl PollSet {
    pub fn new() -> PollSet {
        PollSet { fds: Vec::new() }
    }
    pub fn clear(&mut self) {
        self.fds.clear();
    }
    /// Watch `fd` for input; returns its index for [`PollSet::readable`].
    pub fn add(&mut self, fd: BorrowedFd<'_>) -> usize {
        self.fds.push(libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        self.fds.len() - 1
    }
    /// Watch `fd`, a connected unix stream, for its peer closing it (not a mere shutdown of
    /// its writing half: a client may do that after its request and still read the answer);
    /// returns its index for [`PollSet::hung_up`].
    pub fn add_hangup(&mut self, fd: BorrowedFd<'_>) -> usize {
        self.fds.push(libc::pollfd {
            fd: fd.as_raw_fd(),
            // POLLHUP and POLLERR are reported whatever is asked for
            events: 0,
            revents: 0,
        });
        self.fds.len() - 1
    }
    /// Whether the peer of entry `idx` (added with [`PollSet::add_hangup`]) has closed it.
    pub fn hung_up(&self, idx: usize) -> bool {
        self.fds[idx].revents & (libc::POLLHUP | libc::POLLERR) != 0
    }
    /// Watch `fd` for room to write; returns its index for [`PollSet::writable`].
    pub fn add_writable(&mut self, fd: BorrowedFd<'_>) -> usize {
        self.fds.push(libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        });
        self.fds.len() - 1
    }
    /// Whether entry `idx` (added with [`PollSet::add_writable`]) can be written to (or is in
    /// error, which a write will report).
    pub fn writable(&self, idx: usize) -> bool {
        self.fds[idx].revents & (libc::POLLOUT | libc::POLLHUP | libc::POLLERR) != 0
    }
    /// Wait until something is ready or `timeout` passed (`None` = forever).
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let ms: libc::c_int = match timeout {
            None => -1,
            Some(d) => {
                // round up so that a deadline 0.3 ms away does not spin
                let ms = d.as_micros().div_ceil(1000);
                ms.min(i32::MAX as u128) as libc::c_int
            }
        };
        // SAFETY: `fds` is a valid, initialised array of pollfd of the length passed; the
        // descriptors were borrowed from live owners by `add` and are only read by the kernel.
        let r = unsafe { libc::poll(self.fds.as_mut_ptr(), self.fds.len() as libc::nfds_t, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                return Ok(());
            }
            return Err(e);
        }
        Ok(())
    }
    /// Whether entry `idx` is readable (or hung up / in error, which a read will report).
    pub fn readable(&self, idx: usize) -> bool {
        self.fds[idx].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
    }
}

impl Default for PollSet {
    fn default() -> Self {
        Self::new()
    }
}

// ------------------------------------------------------------------------------------------
// Listening sockets

/// Take the sockets systemd passed (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES) and remove those
/// variables from baton's environment. Returns an empty list when baton was not socket-activated
/// (or the variables were meant for another process: LISTEN_PID is not our pid).
///
/// Must be called before any thread is spawned (it modifies the environment).
pub fn take_listen_fds() -> io::Result<Vec<(OwnedFd, String)>> {
    // SAFETY: called from `run` before the event loop or any thread starts (documented
    // precondition), so nothing reads the environment concurrently. sd-notify sets
    // FD_CLOEXEC on every descriptor it returns.
    let fds = unsafe { sd_notify::listen_fds_with_names_and_unset_env() }?;
    let mut out = Vec::new();
    for (fd, name) in fds {
        // SAFETY: systemd hands these descriptors to this process (LISTEN_PID matched); nothing
        // else owns them, so taking ownership once here is sound.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        out.push((owned, name));
    }
    Ok(out)
}

/// What kind of socket a descriptor is, for logs and for deciding how to probe it.
pub fn describe_socket(fd: BorrowedFd<'_>) -> io::Result<String> {
    let st = nix::sys::stat::fstat(fd)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a socket"));
    }
    let addr: nsock::SockaddrStorage = nsock::getsockname(fd.as_raw_fd())?;
    let ty = nsock::getsockopt(&fd, sockopt::SockType)?;
    let ty = match ty {
        nsock::SockType::Stream => "stream",
        nsock::SockType::Datagram => "datagram",
        nsock::SockType::SeqPacket => "seqpacket",
        _ => "other",
    };
    let addr = if let Some(u) = addr.as_unix_addr() {
        match u.path() {
            Some(p) => format!("unix:{}", p.display()),
            None => "unix:(abstract or unnamed)".to_string(),
        }
    } else {
        addr.to_string()
    };
    Ok(format!("{ty} {addr}"))
}

/// Bind a listening TCP socket (SO_REUSEADDR, TCP_NODELAY, close-on-exec) with a large backlog,
/// so that connections queue while no worker is accepting instead of being refused. Linux copies
/// TCP_NODELAY to every connection accepted on it: an app that writes a response in two pieces
/// does not wait for the client's delayed ACK (what `NoDelay=true` does in a socket unit).
pub fn bind_tcp(addr: std::net::SocketAddr, backlog: i32) -> io::Result<OwnedFd> {
    let family = match addr {
        std::net::SocketAddr::V4(_) => nsock::AddressFamily::Inet,
        std::net::SocketAddr::V6(_) => nsock::AddressFamily::Inet6,
    };
    let fd = nsock::socket(
        family,
        nsock::SockType::Stream,
        nsock::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    nsock::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    nsock::setsockopt(&fd, sockopt::TcpNoDelay, &true)?;
    match addr {
        std::net::SocketAddr::V4(a) => nsock::bind(fd.as_raw_fd(), &nsock::SockaddrIn::from(a))?,
        std::net::SocketAddr::V6(a) => nsock::bind(fd.as_raw_fd(), &nsock::SockaddrIn6::from(a))?,
    }
    nsock::listen(&fd, nsock::Backlog::new(backlog).map_err(io::Error::from)?)?;
    Ok(fd)
}

/// Bind a listening unix stream socket at `path`, replacing a stale socket file.
pub fn bind_unix(path: &Path, backlog: i32) -> io::Result<OwnedFd> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        }
    }
    let fd = nsock::socket(
        nsock::AddressFamily::Unix,
        nsock::SockType::Stream,
        nsock::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let sa = nsock::UnixAddr::new(path)?;
    nsock::bind(fd.as_raw_fd(), &sa)?;
    nsock::listen(&fd, nsock::Backlog::new(backlog).map_err(io::Error::from)?)?;
    Ok(fd)
}

/// How many connections wait in a listening TCP socket's accept queue. For a socket in LISTEN
/// state, Linux reports the queue length in TCP_INFO's `tcpi_unacked`.
pub fn accept_queue_len(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut info: libc::tcp_info = unsafe_zeroed_tcp_info();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a valid, writable tcp_info and `len` holds its size; the kernel writes
    // at most `len` bytes and updates `len`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut libc::tcp_info as *mut libc::c_void,
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info.tcpi_unacked)
}

fn unsafe_zeroed_tcp_info() -> libc::tcp_info {
    // SAFETY: tcp_info is a plain C struct of integers, for which all-zero bytes are valid.
    unsafe { std::mem::zeroed() }
}

// ------------------------------------------------------------------------------------------
// Pipes for workers' output

/// A pipe for one output stream of a worker: the read end non-blocking (for the event loop),
/// both close-on-exec (the write end is dup'ed onto the child's fd 1 or 2), 1 MiB of buffer so
/// a chatty worker does not stall on a busy loop.
pub fn output_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    fcntl(&r, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    let _ = fcntl(&w, FcntlArg::F_SETPIPE_SZ(1 << 20));
    Ok((r, w))
}

/// read(2) on a descriptor.
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    nix::unistd::read(fd, buf).map_err(io::Error::from)
}

// ------------------------------------------------------------------------------------------
// Notify socket

/// One datagram received on baton's private notify socket.
#[derive(Debug)]
pub struct Datagram {
    /// Sender pid from SCM_CREDENTIALS (kernel-verified), if the kernel attached it.
    pub pid: Option<Pid>,
    pub data: Vec<u8>,
    /// How many descriptors came with it (all already closed).
    pub fds_closed: usize,
    /// When the kernel received it (SO_TIMESTAMPNS, wall clock): how long ago the sender sent
    /// it, however late the event loop reads it.
    pub received: Option<std::time::SystemTime>,
}

/// The most descriptors one unix socket message can carry (SCM_MAX_FD in the kernel).
const SCM_MAX_FD: usize = 253;

/// baton's private `NOTIFY_SOCKET` for workers: a unix datagram socket at a filesystem path,
/// with SO_PASSCRED so every datagram carries the sender's pid.
pub struct NotifySocket {
    sock: UnixDatagram,
    path: std::path::PathBuf,
    /// The socket file's inode: whether the path still names this socket.
    inode: u64,
}

impl NotifySocket {
    /// Bind at `path` (a stale socket there is replaced; anything else is an error), mode
    /// 0600 whatever the umask: only baton's uid (its workers) may send.
    pub fn bind(path: &Path) -> io::Result<NotifySocket> {
        remove_stale_socket(path, "notify socket")?;
        let sock = UnixDatagram::bind(path)?;
        chmod(path, 0o600)?;
        let inode = file_inode(path)?;
        sock.set_nonblocking(true)?;
        nsock::setsockopt(&sock, sockopt::PassCred, &true)?;
        let _ = nsock::setsockopt(&sock, sockopt::ReceiveTimestampns, &true);
        // Workers' notifications are short; a larger buffer absorbs bursts from many workers.
        let _ = nsock::setsockopt(&sock, sockopt::RcvBuf, &(1 << 20));
        Ok(NotifySocket {
            sock,
            path: path.to_path_buf(),
            inode,
        })
    }

    /// Whether its path still names this socket (a /tmp cleaner or an operator may have
    /// removed or replaced it; then workers could not reach baton).
    pub fn reachable(&self) -> bool {
        file_inode(&self.path).is_ok_and(|i| i == self.inode)
    }

    /// Receive one datagram; `None` when none is queued. Descriptors sent with it (for example
    /// the BARRIER=1 pipe of `systemd-notify`) are closed at once.
    pub fn recv(&self) -> io::Result<Option<Datagram>> {
        let mut buf = vec![0u8; 4096];
        // Room for as many descriptors as one datagram can carry (the kernel's SCM_MAX_FD):
        // were the space shorter, the kernel would install the descriptors that fit and flag
        // the message MSG_CTRUNC, nix would refuse to walk its control messages, and those
        // descriptors would leak, for good, with every such datagram.
        let mut cmsg = nix::cmsg_space!(
            nsock::UnixCredentials,
            nix::sys::time::TimeSpec,
            [RawFd; SCM_MAX_FD]
        );
        let (len, pid, fds, received) = {
            let mut iov = [io::IoSliceMut::new(&mut buf)];
            let msg = match nsock::recvmsg::<()>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                nsock::MsgFlags::MSG_DONTWAIT | nsock::MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(m) => m,
                Err(nix::errno::Errno::EAGAIN) => return Ok(None),
                Err(nix::errno::Errno::EINTR) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let mut pid = None;
            let mut received = None;
            let mut fds: Vec<RawFd> = Vec::new();
            if msg.flags.contains(nsock::MsgFlags::MSG_CTRUNC) {
                // cannot happen with the space above; say so loudly if a kernel proves it wrong
                tracing::warn!("a notify datagram's control data was truncated (MSG_CTRUNC)");
            }
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    match c {
                        nsock::ControlMessageOwned::ScmCredentials(cred) => pid = Some(cred.pid()),
                        nsock::ControlMessageOwned::ScmRights(r) => fds.extend(r),
                        nsock::ControlMessageOwned::ScmTimestampns(ts) => {
                            received = std::time::UNIX_EPOCH.checked_add(Duration::new(
                                ts.tv_sec().max(0) as u64,
                                ts.tv_nsec().clamp(0, 999_999_999) as u32,
                            ));
                        }
                        _ => {}
                    }
                }
            }
            (msg.bytes, pid, fds, received)
        };
        for fd in &fds {
            // SAFETY: the kernel just installed these descriptors in our table for this
            // message (SCM_RIGHTS); nobody else knows them, so we own and close them once.
            drop(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
        buf.truncate(len);
        Ok(Some(Datagram {
            pid,
            data: buf,
            fds_closed: fds.len(),
            received,
        }))
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        if self.reachable() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Make room at `path` for a socket of baton's (the `role` socket, named in errors): a socket
/// file of baton's own uid there is removed; anything else is refused and left in place: a file
/// that is not a socket (a config file, a directory) and a socket of another uid, which another
/// user may have put there (only its owner or root should remove it).
pub fn remove_stale_socket(path: &Path, role: &str) -> io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "the {role} path {} exists and is not a socket; baton replaces only a stale \
                 socket: choose another `control` path",
                path.display()
            ),
        ));
    }
    if meta.uid() != euid() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the {role} path {} is a socket of uid {}, not of baton's uid {}: baton \
                 replaces only a stale socket of its own; have its owner (or root) remove it, \
                 or choose another `control` path",
                path.display(),
                meta.uid(),
                euid()
            ),
        ));
    }
    std::fs::remove_file(path)
}

/// The inode of the file at `path` (not following a symlink).
fn file_inode(path: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::symlink_metadata(path)?.ino())
}

impl AsFd for NotifySocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// The uid of the process at the other end of a unix stream socket (SO_PEERCRED).
pub fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    let cred = nsock::getsockopt(stream, sockopt::PeerCredentials)?;
    Ok(cred.uid())
}

/// baton's effective uid.
pub fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Whether this process may execute (a file) or search (a directory) `path`: access(2) with
/// X_OK, which checks the real uid and gids, the owner, group and other bits and ACLs.
pub fn may_execute(path: &Path) -> io::Result<()> {
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).map_err(io::Error::from)
}

/// Set a path's permission bits.
pub fn chmod(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// The parent pid and process group of `pid`, from /proc/PID/stat.
pub fn proc_parent_and_group(pid: Pid) -> io::Result<(Pid, Pid)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // the command name is in parentheses and may contain spaces: parse after the last ')'
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad /proc stat"))?;
    let mut it = rest.split_whitespace();
    let _state = it.next();
    let ppid = it.next().and_then(|s| s.parse().ok());
    let pgrp = it.next().and_then(|s| s.parse().ok());
    match (ppid, pgrp) {
        (Some(p), Some(g)) => Ok((p, g)),
        _ => Err(io::Error::new(io::ErrorKind::InvalidData, "bad /proc stat")),
    }
}

// ------------------------------------------------------------------------------------------
// What a process waits for (/proc): the `accepting` readiness check

/// The inode number of an open file (a socket's identity across processes and `dup`s).
pub fn inode(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let st = nix::sys::stat::fstat(fd).map_err(io::Error::from)?;
    Ok(st.st_ino)
}

/// The children of every thread of `pid` (/proc/PID/task/TID/children).
pub fn proc_children(pid: Pid) -> io::Result<Vec<Pid>> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let task = task?.file_name();
        let path = format!("/proc/{pid}/task/{}/children", task.to_string_lossy());
        // a thread that has just exited has no file any more
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<Pid>().ok()),
        );
    }
    Ok(out)
}

/// The thread ids of `pid`.
pub fn proc_tasks(pid: Pid) -> io::Result<Vec<Pid>> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        if let Ok(tid) = task?.file_name().to_string_lossy().parse() {
            out.push(tid);
        }
    }
    Ok(out)
}

/// What one of a process's descriptors is, as far as the `accepting` check cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdKind {
    /// A socket, with its inode.
    Socket(u64),
    /// An epoll instance.
    Epoll,
    Other,
}

/// The open descriptors of `pid` (/proc/PID/fd).
pub fn proc_fds(pid: Pid) -> io::Result<Vec<(RawFd, FdKind)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let e = e?;
        let Ok(fd) = e.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        // closed meanwhile: skip
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        out.push((fd, fd_kind(&target.to_string_lossy())));
    }
    Ok(out)
}

/// `socket:[1234]` → a socket with inode 1234; `anon_inode:[eventpoll]` → epoll.
pub fn fd_kind(link: &str) -> FdKind {
    if let Some(ino) = link
        .strip_prefix("socket:[")
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
    {
        return FdKind::Socket(ino);
    }
    if link == "anon_inode:[eventpoll]" {
        return FdKind::Epoll;
    }
    FdKind::Other
}

/// The files an epoll instance (descriptor `fd` of `pid`) watches: (events mask, inode) from
/// the `tfd:` lines of /proc/PID/fdinfo/FD.
pub fn proc_epoll_targets(pid: Pid, fd: RawFd) -> io::Result<Vec<(u32, u64)>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))?;
    Ok(parse_epoll_fdinfo(&text))
}

/// `tfd:        3 events:       19 data: 3  pos:0 ino:15b5d sdev:9` → (0x19, 0x15b5d).
pub fn parse_epoll_fdinfo(text: &str) -> Vec<(u32, u64)> {
    let field = |line: &str, key: &str| -> Option<String> {
        let at = line.find(key)? + key.len();
        line[at..].split_whitespace().next().map(str::to_string)
    };
    text.lines()
        .filter(|l| l.starts_with("tfd:"))
        .filter_map(|l| {
            let events = u32::from_str_radix(&field(l, "events:")?, 16).ok()?;
            let ino = u64::from_str_radix(&field(l, "ino:")?, 16).ok()?;
            Some((events, ino))
        })
        .collect()
}

/// The system call thread `tid` of `pid` is blocked in, with its six arguments
/// (/proc/PID/task/TID/syscall); `None` when it is running or not in a system call.
pub fn proc_syscall(pid: Pid, tid: Pid) -> io::Result<Option<(i64, [u64; 6])>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall"))?;
    Ok(parse_syscall(&text))
}

/// `288 0x3 0x0 0x0 0x80800 0x0 0x0 0x7ffd… 0x7f…` → (288, [3, 0, 0, 0x80800, 0, 0]).
pub fn parse_syscall(text: &str) -> Option<(i64, [u64; 6])> {
    let mut it = text.split_whitespace();
    let nr: i64 = it.next()?.parse().ok()?;
    if nr < 0 {
        return None;
    }
    let mut args = [0u64; 6];
    for a in args.iter_mut() {
        *a = u64::from_str_radix(it.next()?.trim_start_matches("0x"), 16).ok()?;
    }
    Some((nr, args))
}

/// System calls in which a thread waits for a listening socket to become readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCall {
    /// accept/accept4 on the descriptor (argument 0).
    Accept,
    /// poll/ppoll on an array of `struct pollfd` (arguments 0 and 1).
    Poll,
    /// select/pselect6 on an `fd_set` of readable descriptors (arguments 0 and 1).
    Select,
}

/// Which [`WaitCall`] a system call number of this architecture is, if any.
pub fn wait_call(nr: i64) -> Option<WaitCall> {
    #[cfg(target_arch = "x86_64")]
    {
        if nr == libc::SYS_poll {
            return Some(WaitCall::Poll);
        }
        if nr == libc::SYS_select {
            return Some(WaitCall::Select);
        }
        if nr == libc::SYS_accept {
            return Some(WaitCall::Accept);
        }
    }
    if nr == libc::SYS_accept4 {
        Some(WaitCall::Accept)
    } else if nr == libc::SYS_ppoll {
        Some(WaitCall::Poll)
    } else if nr == libc::SYS_pselect6 {
        Some(WaitCall::Select)
    } else {
        None
    }
}

/// `len` bytes of `pid`'s memory at `addr` (/proc/PID/mem; readable by baton for its own
/// descendants). A short read (unmapped memory) is an error.
pub fn read_process_memory(pid: Pid, addr: u64, len: usize) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(format!("/proc/{pid}/mem"))?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, addr)?;
    Ok(buf)
}

// ------------------------------------------------------------------------------------------
// Spawning

/// What every child started from one recipe shares: the program, its argv, the environment
/// common to all of them, the working directory, and a `/dev/null` for their stdin. Built (and
/// allocated) once, e.g. per generation, so that starting 64 workers does not resolve, copy and
/// open the same things 64 times.
pub struct Spawn {
    program: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    cwd: Option<CString>,
    devnull: OwnedFd,
    /// The priority each child takes right before its exec, from baton's own read when the
    /// recipe is made.
    priority: Priority,
    /// Signals whose disposition is not SIG_DFL in baton (bit `sig - 1`), read when the
    /// recipe is made: the only ones a child has to reset before it unblocks signals.
    /// (baton never changes a disposition: the ones it has are inherited or set by the Rust
    /// runtime before `main`, so they are the same when the recipe is made and at each spawn.)
    reset_signals: u64,
}

/// The part of a spawn that differs between children of one [`Spawn`]: more environment, the
/// descriptors that become 3, 4, … (borrowed until [`spawn`] returns), stdout and stderr.
pub struct Child<'a> {
    env: Vec<CString>,
    fds: Vec<BorrowedFd<'a>>,
    set_listen_pid: bool,
    stdout: Option<BorrowedFd<'a>>,
    stderr: Option<BorrowedFd<'a>>,
}

fn cstring(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in string"))
}

fn env_entry(key: &OsStr, value: &OsStr) -> io::Result<CString> {
    let mut kv = Vec::with_capacity(key.len() + 1 + value.len());
    kv.extend_from_slice(key.as_bytes());
    kv.push(b'=');
    kv.extend_from_slice(value.as_bytes());
    cstring(&kv)
}

impl Spawn {
    /// `program` must already be resolved (absolute or relative path with a '/').
    pub fn new(program: &Path, argv: &[String]) -> io::Result<Spawn> {
        Ok(Spawn {
            program: cstring(program.as_os_str().as_bytes())?,
            argv: argv
                .iter()
                .map(|a| cstring(a.as_bytes()))
                .collect::<io::Result<_>>()?,
            env: Vec::new(),
            cwd: None,
            devnull: OwnedFd::from(std::fs::File::open("/dev/null")?), // O_CLOEXEC by std
            priority: {
                let (nice, realtime) = own_priority();
                Priority {
                    nice: (nice < 0).then_some(0),
                    realtime,
                }
            },
            reset_signals: non_default_signals(),
        })
    }
    pub fn env(&mut self, key: &OsStr, value: &OsStr) -> io::Result<()> {
        self.env.push(env_entry(key, value)?);
        Ok(())
    }
    pub fn cwd(&mut self, dir: &Path) -> io::Result<()> {
        self.cwd = Some(cstring(dir.as_os_str().as_bytes())?);
        Ok(())
    }
    /// Whether children of this recipe may start at nice `startup_nice` and be given their
    /// running priority back once ready: returns that running nice value, or `None` when
    /// `startup_nice` is not above it or baton could not give it back (neither CAP_SYS_NICE nor
    /// RLIMIT_NICE allows it). The child itself always execs at its running priority: its
    /// exec is part of the spawn baton waits for, and at a lower priority it would wait behind
    /// the serving workers; [`renice_group`] moves it to `startup_nice` once spawned.
    pub fn can_start_at(&self, startup_nice: i32) -> Option<i32> {
        let run = worker_nice();
        (startup_nice > run && may_lower_nice_to(run)).then_some(run)
    }
}

impl<'a> Child<'a> {
    pub fn new() -> Child<'a> {
        Child {
            env: Vec::new(),
            fds: Vec::new(),
            set_listen_pid: false,
            stdout: None,
            stderr: None,
        }
    }
    /// One more environment variable, after the recipe's (the first of two equal names wins).
    pub fn env(&mut self, key: &OsStr, value: &OsStr) -> io::Result<()> {
        self.env.push(env_entry(key, value)?);
        Ok(())
    }
    /// Pass these descriptors as 3, 4, …. When `listen_pid` is set, the child gets
    /// `LISTEN_PID=<its own pid>`.
    pub fn pass_fds(&mut self, fds: &[BorrowedFd<'a>], listen_pid: bool) {
        self.fds = fds.to_vec();
        self.set_listen_pid = listen_pid;
    }
    /// Redirect stdout / stderr to these descriptors (stdin is always /dev/null).
    pub fn stdio(&mut self, stdout: Option<BorrowedFd<'a>>, stderr: Option<BorrowedFd<'a>>) {
        self.stdout = stdout;
        self.stderr = stderr;
    }
}

impl Default for Child<'_> {
    fn default() -> Self {
        Child::new()
    }
}

/// The signals (bit `sig - 1`) that are caught or ignored in this process. A child must reset
/// them before it unblocks signals: a caught one would run baton's handler on baton's memory,
/// an ignored one would stay ignored in the app. (Raw rt_sigaction: glibc's wrapper refuses
/// the real-time signals it reserves for itself, 32 and 33. A failed query counts as not
/// default, so that the child resets it.)
fn non_default_signals() -> u64 {
    let mut set = 0u64;
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // the kernel's struct sigaction: handler, flags, restorer, mask (8 bytes of it)
        let mut old = [0u64; 4];
        // SAFETY: a query only (no new action); the kernel writes the 32-byte struct into
        // `old`, which is that large, with an 8-byte signal mask as passed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                std::ptr::null::<u64>(),
                old.as_mut_ptr(),
                8usize,
            )
        };
        if r != 0 || old[0] != libc::SIG_DFL as u64 {
            set |= 1 << (sig - 1);
        }
    }
    set
}

/// Stage of the child at which a spawn failed, as the child reports it.
const STAGES: [&str; 6] = ["setpgid", "dup", "stdio", "chdir", "execve", "signals"];

/// Write `n` as decimal into `buf` (no allocation: used in the forked child). Returns length.
fn write_decimal(buf: &mut [u8], mut n: u32) -> usize {
    let mut tmp = [0u8; 10];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = tmp.len() - i;
    buf[..len].copy_from_slice(&tmp[i..]);
    len
}

/// Everything the child reads between `clone` and `execve`: built by the parent, which is
/// suspended (CLONE_VFORK) while the child runs on the parent's memory.
struct ChildArgs<'a> {
    spec: &'a Spawn,
    fds: &'a [BorrowedFd<'a>],
    set_listen_pid: bool,
    stdout: Option<RawFd>,
    stderr: Option<RawFd>,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// The `LISTEN_PID=` envp entry; the child writes its pid after the `=`.
    listen_pid: *mut u8,
    /// Scratch space for the moved sockets, one slot per `fds` entry.
    tmp_fds: *mut RawFd,
    /// Where a failing child leaves its errno and stage (`STAGES` index) before `_exit`. The
    /// parent reads it once clone has returned: with CLONE_VFORK that is after the child
    /// exec'd (nothing written: success) or exited. No pipe needed, as in glibc's posix_spawn.
    error: *mut ChildError,
    /// Lowest descriptor at which sources are parked before they move down to 3.. .
    high: RawFd,
    parent: libc::pid_t,
}

#[derive(Clone, Copy)]
struct ChildError {
    errno: i32,
    /// Index into `STAGES`; `u8::MAX` while the child has not failed.
    stage: u8,
}

/// The stack the child runs on until `execve`. It lives in spawn's own frame, as in musl's
/// posix_spawn: no mapping to create and tear down per worker (at 64 workers, mmap + munmap
/// with its TLB shoot-down cost more than the clone itself). The parent's thread is suspended
/// while the child runs, and an overflow would run down into the unused part of the parent's
/// stack, below every live frame. The child needs far less than these 16 KiB.
#[repr(C, align(16))]
struct ChildStack([std::mem::MaybeUninit<u8>; 16 * 1024]);

/// Start a child of `spec` with `child`'s additions: own process group, SIGKILL when baton
/// dies, empty signal mask and default dispositions, stdin from /dev/null, the passed
/// descriptors at 3.. and no other descriptor of baton, `LISTEN_PID` equal to the child's own
/// pid. Returns the pid once the child has exec'd, or the reason it could not (the stage and
/// errno; the failed child is already reaped). The child has its own copies of every
/// descriptor by then, so the caller may close its own at once.
///
/// The child is created like `posix_spawn` does it, with `clone(CLONE_VM | CLONE_VFORK)`: it
/// shares baton's memory and baton's thread waits until the child's `execve` has replaced
/// it. Nothing is copied (no page tables, no copy-on-write faults in baton afterwards, no
/// address space to tear down at exec), which is what makes starting 64 or 256 workers cheap.
/// (`posix_spawn` itself cannot be used: the environment is fixed before the child's pid
/// exists, so `LISTEN_PID` could not be the child's own.)
pub fn spawn(spec: &Spawn, child: &Child<'_>) -> io::Result<Pid> {
    let n = child.fds.len() as RawFd;
    // --- everything that allocates happens here, before clone
    let mut argv: Vec<*const libc::c_char> = spec.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut listen_pid_buf = [0u8; 32];
    listen_pid_buf[..11].copy_from_slice(b"LISTEN_PID=");
    // One raw pointer for both uses (envp entry, and the child's write of its pid), so the
    // write is visible through the pointer execve reads.
    let listen_pid_ptr: *mut u8 = listen_pid_buf.as_mut_ptr();
    let mut envp: Vec<*const libc::c_char> =
        Vec::with_capacity(spec.env.len() + child.env.len() + 2);
    envp.extend(spec.env.iter().chain(&child.env).map(|e| e.as_ptr()));
    if child.set_listen_pid {
        envp.push(listen_pid_ptr as *const libc::c_char);
    }
    envp.push(std::ptr::null());
    let stdout = child.stdout.map(|f| f.as_raw_fd());
    let stderr = child.stderr.map(|f| f.as_raw_fd());
    let devnull = spec.devnull.as_raw_fd();
    // Descriptors are first moved at or above `high`, so that dup2 to 3.. can never clobber a
    // source that is still needed.
    let high = child
        .fds
        .iter()
        .map(|f| f.as_raw_fd())
        .chain([2 + n, devnull, stdout.unwrap_or(0), stderr.unwrap_or(0)])
        .max()
        .unwrap_or(2)
        + 1;
    let mut tmp_fds = vec![-1 as RawFd; child.fds.len()];
    let mut error = ChildError {
        errno: 0,
        stage: u8::MAX,
    };
    // One raw pointer, shared by the child's write and the read below.
    let error_ptr: *mut ChildError = &mut error;
    let mut stack = ChildStack([std::mem::MaybeUninit::uninit(); 16 * 1024]);
    // stacks grow down on every Linux target baton builds for; the end is 16-byte aligned
    let stack_top = stack.0.as_mut_ptr_range().end.cast::<libc::c_void>();
    let args = ChildArgs {
        spec,
        fds: &child.fds,
        set_listen_pid: child.set_listen_pid,
        stdout,
        stderr,
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        listen_pid: listen_pid_ptr,
        tmp_fds: tmp_fds.as_mut_ptr(),
        error: error_ptr,
        high,
        parent: std::process::id() as libc::pid_t,
    };

    // Block every signal in this thread around clone: the child starts with this mask, so no
    // handler (std's SIGSEGV handler, glibc's internal ones) can run on baton's memory in the
    // child before it has reset every disposition.
    // SAFETY: sigfillset/pthread_sigmask write only to the valid locals passed.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: an all-zero sigset_t is a valid (empty) set.
    let mut saved: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above: both sets are valid locals.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut saved);
    }
    // SAFETY: `child_main` runs on `stack` (ours, unused otherwise) and only reads `args` and
    // the buffers it points to, all alive until clone returns, which with CLONE_VFORK is after
    // the child's execve succeeded or it called _exit. It never returns (exec or _exit), so
    // glibc's clone wrapper never calls exit() in the child. The only memory it writes is
    // `listen_pid_buf`, `tmp_fds`, `error` and errno, which this thread does not touch
    // meanwhile (it is suspended), and no other thread knows about.
    let pid = unsafe {
        libc::clone(
            child_main,
            stack_top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &args as *const ChildArgs<'_> as *mut libc::c_void,
        )
    };
    let clone_error = io::Error::last_os_error();
    // SAFETY: restores the mask saved above; writes nothing.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &saved, std::ptr::null_mut()) };
    if pid < 0 {
        return Err(clone_error);
    }
    // SAFETY: the child is done with `error` (it exec'd or exited: CLONE_VFORK) and the
    // kernel's wake-up of this thread orders its write before this read.
    let error = unsafe { std::ptr::read_volatile(error_ptr) };
    if error.stage == u8::MAX {
        return Ok(pid);
    }
    // the child failed before or at exec: collect it and report why
    // SAFETY: waitpid on our own child's pid; writes to a valid local.
    unsafe {
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
    }
    let stage = STAGES.get(error.stage as usize).copied().unwrap_or("spawn");
    let e = io::Error::from_raw_os_error(error.errno);
    Err(io::Error::new(e.kind(), format!("{stage}: {e}")))
}

extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` that spawn keeps alive until this child has exec'd or
    // exited (see the clone call).
    unsafe { child_exec(&*(arg as *const ChildArgs<'_>)) }
}

/// The child, between clone and execve. It runs on baton's memory while baton's thread waits:
/// only async-signal-safe calls (setpgid, prctl, getppid, rt_sigaction, sigprocmask, fcntl,
/// dup2, syscall(close_range), chdir, getpid, sched_setscheduler, setpriority, execve,
/// _exit), no allocation, no panic, and writes only to the `ChildArgs` scratch buffers and
/// its error slot. It never returns.
///
/// # Safety
/// `a` and every pointer in it must be valid, as spawn makes them.
unsafe fn child_exec(a: &ChildArgs<'_>) -> ! {
    let spec = a.spec;
    let n = a.fds.len();
    let fail = |stage: u8| -> ! {
        *a.error = ChildError {
            errno: *libc::__errno_location(),
            stage,
        };
        libc::_exit(127);
    };
    if libc::setpgid(0, 0) < 0 {
        fail(0);
    }
    // die with baton; if baton already died before prctl, give up now
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    if libc::getppid() != a.parent {
        libc::_exit(127);
    }
    // default dispositions and an empty mask (baton blocks signals for its signalfd,
    // and Rust ignores SIGPIPE: neither must leak into the app); only the signals that are
    // not at their default need the call
    // (raw rt_sigaction: glibc's wrapper refuses the real-time signals it reserves
    // for itself, 32 and 33, yet an ignored disposition of those is inherited too;
    // an all-zero kernel sigaction is SIG_DFL with no flags and an empty mask)
    let dfl = [0u64; 4];
    for sig in 1..=64 {
        if spec.reset_signals & (1 << (sig - 1)) != 0 {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                dfl.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            );
        }
    }
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) < 0 {
        fail(5);
    }
    // sockets: move high, then down to 3..; dup2 clears FD_CLOEXEC on the target
    for (i, fd) in a.fds.iter().enumerate() {
        let t = libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, a.high);
        if t < 0 {
            fail(1);
        }
        *a.tmp_fds.add(i) = t;
    }
    let out = a
        .stdout
        .map(|fd| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, a.high));
    let err = a
        .stderr
        .map(|fd| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, a.high));
    if libc::dup2(spec.devnull.as_raw_fd(), 0) < 0 {
        fail(2);
    }
    if let Some(fd) = out {
        if fd < 0 || libc::dup2(fd, 1) < 0 {
            fail(2);
        }
    }
    if let Some(fd) = err {
        if fd < 0 || libc::dup2(fd, 2) < 0 {
            fail(2);
        }
    }
    for i in 0..n {
        if libc::dup2(*a.tmp_fds.add(i), 3 + i as RawFd) < 0 {
            fail(1);
        }
    }
    // Every other descriptor closes at exec: mark 3+n.. close-on-exec in one call.
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    let r = libc::syscall(
        libc::SYS_close_range,
        (3 + n) as libc::c_uint,
        libc::c_uint::MAX,
        CLOSE_RANGE_CLOEXEC,
    );
    if r < 0 {
        // kernel < 5.11: mark them one by one up to a bound
        for fd in (3 + n as RawFd)..65536 {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    if let Some(dir) = &spec.cwd {
        if libc::chdir(dir.as_ptr()) < 0 {
            fail(3);
        }
    }
    if a.set_listen_pid {
        let mut digits = [0u8; 12];
        let len = write_decimal(&mut digits, libc::getpid() as u32);
        std::ptr::copy_nonoverlapping(digits.as_ptr(), a.listen_pid.add(11), len);
        *a.listen_pid.add(11 + len) = 0;
    }
    // last, so that everything baton waits for ran at baton's priority (lowering needs no
    // privilege; a failure leaves the worker at baton's priority, which is only a missed wish)
    if spec.priority.realtime {
        let param: libc::sched_param = std::mem::zeroed();
        libc::sched_setscheduler(0, libc::SCHED_OTHER, &param);
    }
    if let Some(nice) = spec.priority.nice {
        libc::setpriority(libc::PRIO_PROCESS, 0, nice);
    }
    libc::execve(spec.program.as_ptr(), a.argv, a.envp);
    fail(4);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The listener baton binds has TCP_NODELAY, and so has a connection accepted on it (the
    /// kernel copies the option from the listener), IPv4 and IPv6.
    #[test]
    fn bound_tcp_sockets_and_their_connections_have_nodelay() {
        for ip in ["127.0.0.1", "[::1]"] {
            let l = bind_tcp(format!("{ip}:0").parse().unwrap(), 16).unwrap();
            assert!(
                nsock::getsockopt(&l, sockopt::TcpNoDelay).unwrap(),
                "{ip} listener"
            );
            let addr = std::net::TcpListener::from(l);
            let client = std::net::TcpStream::connect(addr.local_addr().unwrap()).unwrap();
            let (conn, _) = addr.accept().unwrap();
            assert!(conn.nodelay().unwrap(), "{ip}: a connection accepted on it");
            assert!(
                !client.nodelay().unwrap(),
                "{ip}: the client's side is its own"
            );
        }
    }

    #[test]
    fn decimal() {
        let mut b = [0u8; 12];
        let n = write_decimal(&mut b, 0);
        assert_eq!(&b[..n], b"0");
        let n = write_decimal(&mut b, 4194304);
        assert_eq!(&b[..n], b"4194304");
        let n = write_decimal(&mut b, u32::MAX);
        assert_eq!(&b[..n], b"4294967295");
    }

    fn spawn_error(program: &str, cwd: Option<&str>) -> String {
        let mut sp = Spawn::new(Path::new(program), &[program.to_string()]).unwrap();
        if let Some(dir) = cwd {
            sp.cwd(Path::new(dir)).unwrap();
        }
        spawn(&sp, &Child::new()).unwrap_err().to_string()
    }

    /// A child that fails before its exec reports the stage and errno through the memory it
    /// shares with baton.
    #[test]
    fn spawn_reports_where_the_child_failed() {
        // an executable file that is neither ELF nor a script: execve fails with ENOEXEC
        use std::os::unix::fs::PermissionsExt;
        let bad = std::env::temp_dir().join(format!("baton-noexec-{}", std::process::id()));
        std::fs::write(&bad, [0u8; 64]).unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = spawn_error(bad.to_str().unwrap(), None);
        std::fs::remove_file(&bad).unwrap();
        assert!(
            e.starts_with("execve: ") && e.contains("Exec format error"),
            "{e}"
        );
        let e = spawn_error("/bin/true", Some("/nonexistent-dir"));
        assert!(
            e.starts_with("chdir: ") && e.contains("No such file"),
            "{e}"
        );
    }

    #[test]
    fn spawn_starts_a_child_with_extra_env_and_fds() {
        let mut sp = Spawn::new(
            Path::new("/bin/sh"),
            &[
                "sh".into(),
                "-c".into(),
                r#"[ "$A$B" = 12 ] && [ "$LISTEN_PID" = $$ ] && [ -e /proc/self/fd/3 ] && [ ! -e /proc/self/fd/4 ]"#.into(),
            ],
        )
        .unwrap();
        sp.env(OsStr::new("A"), OsStr::new("1")).unwrap();
        let (r, _w) = nix::unistd::pipe().unwrap();
        let mut child = Child::new();
        child.env(OsStr::new("B"), OsStr::new("2")).unwrap();
        child.pass_fds(&[r.as_fd()], true);
        let pid = spawn(&sp, &child).unwrap();
        let mut status = 0;
        // SAFETY: waits for our own child; writes a valid local.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{status:#x}"
        );
    }

    #[test]
    fn signals_to_reset() {
        let set = non_default_signals();
        let has = |sig: i32| set & (1 << (sig - 1)) != 0;
        // the Rust runtime ignores SIGPIPE (and catches SIGSEGV for stack overflows)
        assert!(has(libc::SIGPIPE) && has(libc::SIGSEGV), "{set:#x}");
        assert!(!has(libc::SIGTERM) && !has(libc::SIGCHLD), "{set:#x}");
    }

    #[test]
    fn parse_own_stat() {
        let (ppid, _pgrp) = proc_parent_and_group(std::process::id() as Pid).unwrap();
        assert!(ppid > 0);
    }

    #[test]
    fn proc_texts_of_the_accepting_check() {
        assert_eq!(fd_kind("socket:[88925]"), FdKind::Socket(88925));
        assert_eq!(fd_kind("anon_inode:[eventpoll]"), FdKind::Epoll);
        assert_eq!(fd_kind("/dev/null"), FdKind::Other);
        assert_eq!(fd_kind("socket:[x]"), FdKind::Other);
        let fdinfo = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\n\
            tfd:        3 events:       19 data:                3  pos:0 ino:15b5d sdev:9\n\
            tfd:        7 events:        4 data:                7  pos:0 ino:a sdev:9\n";
        assert_eq!(
            parse_epoll_fdinfo(fdinfo),
            vec![(0x19, 0x15b5d), (0x4, 0xa)]
        );
        assert_eq!(
            parse_syscall("288 0x3 0x7ffc2afcd7e0 0x0 0x80800 0x0 0x0 0x7ffc 0x7f00\n"),
            Some((288, [3, 0x7ffc2afcd7e0, 0, 0x80800, 0, 0]))
        );
        assert_eq!(parse_syscall("running\n"), None);
        assert_eq!(parse_syscall("-1 0x7ffc 0x7f00\n"), None);
        assert_eq!(wait_call(libc::SYS_accept4), Some(WaitCall::Accept));
        assert_eq!(wait_call(libc::SYS_pselect6), Some(WaitCall::Select));
        assert_eq!(wait_call(libc::SYS_ppoll), Some(WaitCall::Poll));
        assert_eq!(wait_call(libc::SYS_read), None);
    }
}
