//! [`PollSet`]: the event loop's poll(2) over borrowed descriptors (readable, writable, hung
//! up).
//!
//! Must never own, read or write a descriptor: it only reports which are ready; an
//! interrupted wait (EINTR) is a wait that found nothing.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

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
