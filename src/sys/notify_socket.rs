//! [`NotifySocket`]: baton's private `NOTIFY_SOCKET`, a unix datagram socket with SO_PASSCRED,
//! whose every datagram comes with the sender's kernel-verified pid ([`Datagram`]), and whose
//! path baton removes at exit only while it still names this socket.
//!
//! Must never keep a descriptor that arrives with a datagram (each is closed at once) and
//! never interpret a datagram: the sd_notify protocol is `crate::notify`'s.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{self as nsock, sockopt};

use super::{chmod, euid, Pid};

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
