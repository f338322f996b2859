//! The client side of a stream connection, for the load client (`crate::load`): a unix connect
//! bounded in time, the time bounds of a connection's blocking reads and writes
//! (SO_RCVTIMEO/SO_SNDTIMEO), and a look at an idle connection that never blocks (a one-byte
//! `recv` with MSG_PEEK | MSG_DONTWAIT).
//!
//! Must never consume a byte of a connection (the look only peeks) and never call `unsafe`
//! code: everything here is a safe nix call, and the lint below keeps it so.

#![forbid(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{self as nsock, sockopt, MsgFlags};
use nix::sys::time::TimeVal;

/// A socket timeout; at least 1 µs, since 0 means "never" to the kernel.
fn timeval(d: Duration) -> TimeVal {
    let d = d.max(Duration::from_micros(1));
    TimeVal::new(d.as_secs() as _, d.subsec_micros() as _)
}

/// A blocking connect to the unix stream socket at `path`, close-on-exec. SO_SNDTIMEO (left set
/// on the returned socket) bounds the wait on a full backlog: past `timeout` it fails with
/// EAGAIN (`WouldBlock`).
pub fn connect_unix_within(path: &Path, timeout: Duration) -> io::Result<OwnedFd> {
    use nsock::{AddressFamily, SockFlag, SockType, UnixAddr};
    let flags = SockFlag::SOCK_CLOEXEC;
    let fd = nsock::socket(AddressFamily::Unix, SockType::Stream, flags, None)?;
    nsock::setsockopt(&fd, sockopt::SendTimeout, &timeval(timeout))?;
    nsock::connect(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    Ok(fd)
}

/// Bounds each later blocking read and write on `fd` by `timeout` (SO_RCVTIMEO and
/// SO_SNDTIMEO; a read or write past it fails with EAGAIN, `WouldBlock`).
pub fn set_io_timeouts(fd: impl AsFd, timeout: Duration) -> io::Result<()> {
    let tv = timeval(timeout);
    nsock::setsockopt(&fd, sockopt::ReceiveTimeout, &tv)?;
    nsock::setsockopt(&fd, sockopt::SendTimeout, &tv)?;
    Ok(())
}

/// What an idle connection holds right now, as [`peek_now`] saw it.
#[derive(Debug)]
pub enum Peeked {
    /// Nothing to read, and the peer has not closed it: it can carry a request.
    Quiet,
    /// The peer sent bytes nobody asked for.
    Data,
    /// The peer closed it (FIN).
    Closed,
    /// An error is pending (ECONNRESET after the peer's RST, or another).
    Failed(io::Error),
}

/// Looks at `fd` without blocking and without consuming anything.
pub fn peek_now(fd: impl AsFd) -> Peeked {
    let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
    loop {
        return match nsock::recv(fd.as_fd().as_raw_fd(), &mut [0u8; 1], flags) {
            Err(Errno::EAGAIN) => Peeked::Quiet,
            Err(Errno::EINTR) => continue,
            Err(e) => Peeked::Failed(e.into()),
            Ok(0) => Peeked::Closed,
            Ok(_) => Peeked::Data,
        };
    }
}
