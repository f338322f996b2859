//! Signals and the ends of processes: the signalfd the event loop reads [`LOOP_SIGNALS`] from,
//! kill of a pid or a process group, reaping (waitpid, and the subreaper flag that makes baton
//! the reaper of its workers' orphans), and signal names.
//!
//! Must never decide whom to signal or when: the callers choose the pid, the group and the
//! signal; a process that is already gone is not an error here.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd as NixSignalFd};

use super::Pid;

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

/// `cmd`'s process gets SIGTERM when the thread that started it dies (PR_SET_PDEATHSIG): the
/// `baton run` that `baton verify` starts does not outlive a verify that was killed.
pub fn term_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the child between fork and exec, and calls only prctl and
    // getppid, which are async-signal-safe and touch no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            // the parent died before the flag was set: nobody will send the signal
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        })
    };
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
