//! Descriptors, files and permissions: the pipes of workers' output, FIFOs, read(2), chmod,
//! access(2) for `baton check`, and baton's effective uid.
//!
//! Must never block the caller on a pipe's write end (the read end is non-blocking) and never
//! call `unsafe` code: everything here is a safe nix or std call, and the lint below keeps it so.

#![forbid(unsafe_code)]

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

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

/// A pipe, both ends blocking and close-on-exec (`Stdio` dup's the write end onto a
/// child's stdout and stderr).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// A FIFO at `path`, mode 0600 (an error if the path exists).
pub fn mkfifo(path: &Path) -> io::Result<()> {
    use nix::sys::stat::Mode;
    nix::unistd::mkfifo(path, Mode::S_IRUSR | Mode::S_IWUSR).map_err(io::Error::from)
}

/// read(2) on a descriptor.
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    nix::unistd::read(fd, buf).map_err(io::Error::from)
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

/// CLOCK_MONOTONIC in microseconds: one clock for every process of the machine (the one
/// `std::time::Instant` reads), so that two processes can order their events.
pub fn monotonic_us() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| (t.tv_sec() as u64) * 1_000_000 + (t.tv_nsec() as u64) / 1_000)
        .unwrap_or(0)
}
