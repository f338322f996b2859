//! Listening sockets and peers: the descriptors systemd passed (LISTEN_FDS), binding TCP and
//! unix listeners with a large backlog (TCP ones with TCP_NODELAY), what kind of socket a
//! descriptor is, the length of a listener's accept queue (TCP_INFO), and the uid of a unix
//! stream's peer (SO_PEERCRED).
//!
//! Must never accept, read or close a listening socket it returned: the sockets are opened
//! once and live as long as baton.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{self as nsock, sockopt};

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

/// The local address of socket `fd` (getsockname), as [`super::SockAddr`]: what a trapped
/// bind() is matched against.
pub fn local_addr(fd: BorrowedFd<'_>) -> io::Result<super::SockAddr> {
    use super::{SockAddr, UnixAddr};
    use nsock::SockaddrLike;
    let addr: nsock::SockaddrStorage = nsock::getsockname(fd.as_raw_fd())?;
    if let Some(a) = addr.as_sockaddr_in() {
        return Ok(SockAddr::Inet(std::net::SocketAddrV4::from(*a)));
    }
    if let Some(a) = addr.as_sockaddr_in6() {
        return Ok(SockAddr::Inet6(std::net::SocketAddrV6::from(*a)));
    }
    if let Some(u) = addr.as_unix_addr() {
        return Ok(SockAddr::Unix(match (u.path(), u.as_abstract()) {
            (Some(p), _) => UnixAddr::Path(p.to_path_buf()),
            (None, Some(name)) => UnixAddr::Abstract(name.to_vec()),
            (None, None) => UnixAddr::Unnamed,
        }));
    }
    Ok(SockAddr::Other {
        family: addr.family().map_or(0, |f| f as u16),
    })
}

/// The type of socket `fd` (`libc::SOCK_STREAM`, `SOCK_DGRAM`, …).
pub fn socket_type(fd: BorrowedFd<'_>) -> io::Result<i32> {
    Ok(nsock::getsockopt(&fd, sockopt::SockType)? as i32)
}

/// A pidfd of process `tgid` (a thread group leader), for [`copy_fd`].
pub fn pidfd(tgid: super::Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags (plain integers) and returns a new descriptor.
    owned(unsafe { libc::syscall(libc::SYS_pidfd_open, tgid, 0) })
}

/// A copy of descriptor `fd` of the process of `pidfd`, taken with pidfd_getfd(2) (Linux 5.6;
/// needs ptrace access to the process, which baton has to its own children).
pub fn copy_fd(pidfd: BorrowedFd<'_>, fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd takes a pidfd (borrowed, so open), a descriptor number in the target
    // process and flags (plain integers), and returns a new descriptor of baton's.
    owned(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) })
}

/// A descriptor a system call just returned (or its error).
fn owned(r: libc::c_long) -> io::Result<OwnedFd> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this new descriptor, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// The type of socket `fd` of process `tgid` (a thread group leader), read from a copy of the
/// descriptor ([`copy_fd`]) closed at once. Err(ENOTSOCK) when it is no socket.
pub fn socket_type_of(tgid: super::Pid, fd: RawFd) -> io::Result<i32> {
    let copy = copy_fd(pidfd(tgid)?.as_fd(), fd)?;
    socket_type(copy.as_fd())
}

/// Whether socket `fd` listens (SO_ACCEPTCONN).
pub fn is_listening(fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(nsock::getsockopt(&fd, sockopt::AcceptConn)?)
}

/// Bind a listening TCP socket (SO_REUSEADDR, TCP_NODELAY, close-on-exec; an IPv6 one
/// dual-stack: IPV6_V6ONLY off) with a large backlog,
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
    if addr.is_ipv6() {
        // dual-stack whatever net.ipv6.bindv6only says: `[::]:P` takes IPv4's P too, which
        // `baton check` counts on when it refuses `[::]:P` next to an IPv4 address of P
        nsock::setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
    }
    match addr {
        std::net::SocketAddr::V4(a) => nsock::bind(fd.as_raw_fd(), &nsock::SockaddrIn::from(a))?,
        std::net::SocketAddr::V6(a) => nsock::bind(fd.as_raw_fd(), &nsock::SockaddrIn6::from(a))?,
    }
    nsock::listen(&fd, nsock::Backlog::new(backlog).map_err(io::Error::from)?)?;
    Ok(fd)
}

/// Bind a listening unix stream socket at `path`. What is there already is looked at first
/// ([`make_room_for_unix`]): only a stale socket of baton's own uid is replaced.
pub fn bind_unix(path: &Path, backlog: i32) -> io::Result<OwnedFd> {
    make_room_for_unix(path)?;
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

/// What a connection to a unix stream socket's path found.
#[derive(Debug)]
pub enum Probe {
    /// A listener took the connection (queued it); its pid and uid (SO_PEERCRED: the
    /// listener's at its listen()), when the kernel says.
    Accepted(Option<(i32, u32)>),
    /// A listener whose queue of connections is full (EAGAIN): live, not accepting now.
    QueueFull,
    /// Nobody listens (ECONNREFUSED): a stale socket file, or one bound and not listening.
    Refused,
    /// Any other answer (EACCES, EPROTOTYPE for a live socket of another type, ...).
    Other(io::Error),
}

/// Connect to the unix stream socket at `path`, without blocking (a live listener whose queue
/// is full would block a plain connect), and close the connection at once.
pub fn probe_unix(path: &Path) -> Probe {
    let fd = match nsock::socket(
        nsock::AddressFamily::Unix,
        nsock::SockType::Stream,
        nsock::SockFlag::SOCK_CLOEXEC | nsock::SockFlag::SOCK_NONBLOCK,
        None,
    ) {
        Ok(fd) => fd,
        Err(e) => return Probe::Other(e.into()),
    };
    let sa = match nsock::UnixAddr::new(path) {
        Ok(sa) => sa,
        Err(e) => return Probe::Other(e.into()),
    };
    match nsock::connect(fd.as_raw_fd(), &sa) {
        Ok(()) => Probe::Accepted(
            nsock::getsockopt(&fd, sockopt::PeerCredentials)
                .ok()
                .map(|c| (c.pid(), c.uid())),
        ),
        Err(nix::errno::Errno::EAGAIN) => Probe::QueueFull,
        Err(nix::errno::Errno::ECONNREFUSED) => Probe::Refused,
        Err(e) => Probe::Other(e.into()),
    }
}

/// Make room at `path` for a `[sockets]` unix socket: nothing there is fine; a file that is
/// not a socket is refused and never removed; a socket something listens on (a connection to
/// it is accepted, or gets any answer but ECONNREFUSED) is refused and left: another server
/// (another baton) serves there, and replacing its path would cut its clients off. A stale
/// socket (the connection refused) of baton's own uid, still the file that was probed, is
/// removed; another uid's is refused and left, as at the control and notify paths
/// ([`super::remove_stale_socket`]).
///
/// A server that has bound the path but not called listen() yet looks stale (ECONNREFUSED too):
/// that window, between its bind() and its listen(), is the one race left.
pub fn make_room_for_unix(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let shown = format!("unix:{}", path.display());
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if let Some(kind) = not_a_socket(&meta) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{shown} is {kind}, not a socket: baton never removes it; remove it or choose \
                 another path"
            ),
        ));
    }
    let live = |how: String| {
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{shown} is in use by {how}; stop it or choose another path"),
        ))
    };
    match probe_unix(path) {
        Probe::Accepted(cred) => {
            let by = match cred {
                Some((pid, uid)) => format!("; its listener: pid {pid}, uid {uid}"),
                None => String::new(),
            };
            return live(format!(
                "a live server (a connection to it was accepted{by})"
            ));
        }
        Probe::QueueFull => {
            return live("a live server (its queue of connections is full)".to_string())
        }
        Probe::Refused => {}
        Probe::Other(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => {
            return live(format!("a live socket of another type (connect: {e})"))
        }
        Probe::Other(e) => {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{shown} is a socket baton could not probe (connect: {e}): baton replaces \
                     only a socket nobody listens on; stop what holds it, remove it, or choose \
                     another path"
                ),
            ))
        }
    }
    // stale: nobody listens. Only baton's own, and only the file that was probed.
    let now = std::fs::symlink_metadata(path)?;
    if (now.dev(), now.ino()) != (meta.dev(), meta.ino()) {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{shown} was replaced while baton looked at it: try again"),
        ));
    }
    if meta.uid() != super::euid() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{shown} is a stale socket of uid {}, not of baton's uid {}: baton replaces \
                 only a stale socket of its own; have its owner (or root) remove it, or choose \
                 another path",
                meta.uid(),
                super::euid()
            ),
        ));
    }
    std::fs::remove_file(path)
}

/// What a file that is not a socket is ("a regular file", ...), or `None` for a socket.
fn not_a_socket(meta: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_socket() {
        return None;
    }
    Some(if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "a file of unknown type"
    })
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

/// The uid of the process at the other end of a unix stream socket (SO_PEERCRED).
pub fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    let cred = nsock::getsockopt(stream, sockopt::PeerCredentials)?;
    Ok(cred.uid())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("baton-u-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn inode(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(path).unwrap().ino()
    }

    /// A unix path a live listener holds is never taken, even when its queue of connections
    /// is full (a blocking connect would wait there for good); what is not a socket is never
    /// removed, and a symbolic link is not followed; a stale socket of baton's own is replaced.
    #[test]
    fn a_unix_path_is_taken_only_from_a_stale_socket() {
        let dir = scratch("unix-room");
        let path = dir.join("a.sock");
        let live = bind_unix(&path, 0).unwrap();
        let ino = inode(&path);
        let e = bind_unix(&path, 16).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        assert!(
            e.to_string()
                .contains("in use by a live server (a connection to it was accepted"),
            "{e}"
        );
        // that look's connection stays queued until the listener accepts it, and backlog 0
        // holds one: the queue is full now; a look is answered at once all the same
        match probe_unix(&path) {
            Probe::QueueFull => {}
            other => panic!("{other:?}"),
        }
        let e = bind_unix(&path, 16).unwrap_err();
        assert!(
            e.to_string().contains("its queue of connections is full"),
            "{e}"
        );
        assert_eq!(inode(&path), ino, "the live socket is left");
        // a symbolic link to it is not followed
        let link = dir.join("link.sock");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let e = bind_unix(&link, 16).unwrap_err();
        assert!(
            e.to_string().contains("is a symbolic link, not a socket"),
            "{e}"
        );
        drop(live);
        // stale now: replaced by a new socket
        assert!(matches!(probe_unix(&path), Probe::Refused));
        let fd = bind_unix(&path, 16).unwrap();
        let me = std::process::id() as i32;
        assert!(matches!(probe_unix(&path), Probe::Accepted(Some((pid, _))) if pid == me));
        drop(fd);
        for (name, make) in [
            (
                "file",
                (|p: &Path| std::fs::write(p, "x").unwrap()) as fn(&Path),
            ),
            ("dir", |p: &Path| std::fs::create_dir(p).unwrap()),
        ] {
            let p = dir.join(name);
            make(&p);
            let e = bind_unix(&p, 16).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
            assert!(e.to_string().contains("never removes it"), "{e}");
            assert!(p.exists(), "{name} left");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `[::]` is bound dual-stack whatever net.ipv6.bindv6only says (`baton check` counts on
    /// it); Linux itself makes a socket bound to one IPv6 address IPv6 only.
    #[test]
    fn ipv6_wildcard_is_bound_dual_stack() {
        let l = bind_tcp("[::]:0".parse().unwrap(), 16).unwrap();
        assert!(!nsock::getsockopt(&l, sockopt::Ipv6V6Only).unwrap());
    }

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
}
