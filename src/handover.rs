//! `handover = "bind"`: which of baton's sockets answers an app's own bind(), and which
//! blocking mode a shared socket takes. Pure decisions; the event loop (`supervisor::driver::trap`)
//! reads the notifications and carries them out through `sys`.
//!
//! * [`matching_socket`]: a TCP bind matches one of baton's sockets when the port is the
//!   same (never port 0) and the address asked for is a wildcard (`0.0.0.0`, `::`), a
//!   loopback, or the socket's own, of either family (Node binds `[::]:3000` while the socket
//!   may be `0.0.0.0:3000`); a socket whose own address is the one asked for wins over one
//!   that only shares the port. A unix bind matches a unix socket of the same path (the
//!   caller makes a relative one absolute, with the app's working directory, and both
//!   directories canonical). Nothing else matches: an app may bind an admin port of its own,
//!   and that bind runs untouched.
//! * [`may_name_socket`]: whether a path an app binds or unlinks may name one of baton's unix
//!   sockets, by its last component alone: the cheap test before the caller resolves it
//!   (which reads /proc and the file system). A path that names one is kept when the app
//!   unlinks it (answered 0, not removed); any other unlink runs.
//! * [`Modes`]: O_NONBLOCK belongs to a socket's open file description, which every holder
//!   shares. The app's own socket says which mode it wants (Go and libuv create theirs
//!   non-blocking, and Go's accept loop stalls on a blocking one); the shared socket takes it,
//!   and a change that another generation may rely on is reported.
//!
//! Must never touch a descriptor or a process.

use std::net::IpAddr;
use std::path::Path;

use crate::sys::{SockAddr, UnixAddr};

/// The index of the socket in `sockets` (baton's, by their local address) that a bind of
/// `asked` gets, if any.
pub fn matching_socket(asked: &SockAddr, sockets: &[SockAddr]) -> Option<usize> {
    match asked {
        SockAddr::Inet(_) | SockAddr::Inet6(_) => {
            let port = asked.port().filter(|p| *p != 0)?;
            let ip = asked.ip()?;
            let same_port = |s: &SockAddr| {
                matches!(s, SockAddr::Inet(_) | SockAddr::Inet6(_)) && s.port() == Some(port)
            };
            // the socket's own address first, then any socket of that port
            let own = sockets
                .iter()
                .position(|s| same_port(s) && s.ip() == Some(ip));
            own.or_else(|| {
                is_wildcard_or_loopback(ip)
                    .then(|| sockets.iter().position(same_port))
                    .flatten()
            })
        }
        SockAddr::Unix(UnixAddr::Path(path)) => sockets
            .iter()
            .position(|s| matches!(s, SockAddr::Unix(UnixAddr::Path(p)) if p == path)),
        _ => None,
    }
}

/// Whether `path`'s last component is the file name of one of baton's unix sockets at a path:
/// only then can it name one, and only then is it worth resolving.
pub fn may_name_socket(path: &Path, sockets: &[SockAddr]) -> bool {
    let Some(name) = path.file_name() else {
        return false;
    };
    sockets
        .iter()
        .any(|s| matches!(s, SockAddr::Unix(UnixAddr::Path(p)) if p.file_name() == Some(name)))
}

/// An address as a log line shows it: `0.0.0.0:3000`, `[::]:3000`, `unix:/run/app.sock`.
pub fn describe(addr: &SockAddr) -> String {
    match addr {
        SockAddr::Inet(a) => a.to_string(),
        SockAddr::Inet6(a) => a.to_string(),
        SockAddr::Unix(UnixAddr::Path(p)) => format!("unix:{}", p.display()),
        SockAddr::Unix(UnixAddr::Abstract(name)) => {
            format!("unix:@{}", String::from_utf8_lossy(name))
        }
        SockAddr::Unix(UnixAddr::Unnamed) => "unix:(unnamed)".into(),
        SockAddr::Other { family } => format!("(address family {family})"),
    }
}

/// Whether an IP is one a bind of "every address" or "this machine" asks for.
pub fn is_wildcard_or_loopback(ip: IpAddr) -> bool {
    ip.is_unspecified() || ip.is_loopback()
}

/// The blocking mode each shared socket was last given, and by which generation.
#[derive(Debug, Default)]
pub struct Modes {
    last: Vec<Option<(bool, u64)>>,
}

/// What giving a socket a mode changes.
#[derive(Debug, PartialEq, Eq)]
pub enum ModeChange {
    /// The mode it was last given (or the first one): nothing to say.
    Kept,
    /// The first time the socket is handed over, or the same generation changes its mind.
    Set,
    /// Generation `from` had the other mode: its workers may rely on it.
    Flipped { from: u64 },
}

impl Modes {
    /// Socket `socket` is handed to a worker of `generation` that wants it `nonblocking`.
    pub fn want(&mut self, socket: usize, nonblocking: bool, generation: u64) -> ModeChange {
        if self.last.len() <= socket {
            self.last.resize(socket + 1, None);
        }
        let before = self.last[socket].replace((nonblocking, generation));
        match before {
            None => ModeChange::Set,
            Some((mode, _)) if mode == nonblocking => ModeChange::Kept,
            Some((_, from)) if from == generation => ModeChange::Set,
            Some((_, from)) => ModeChange::Flipped { from },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SockAddr {
        match s.strip_prefix("unix:") {
            Some(p) => SockAddr::Unix(UnixAddr::Path(p.into())),
            None => match s.parse::<std::net::SocketAddr>().unwrap() {
                std::net::SocketAddr::V4(v4) => SockAddr::Inet(v4),
                std::net::SocketAddr::V6(v6) => SockAddr::Inet6(v6),
            },
        }
    }

    #[test]
    fn a_bind_of_a_sockets_port_matches_from_any_wildcard_or_loopback_of_either_family() {
        let sockets = [a("0.0.0.0:3000"), a("127.0.0.1:8080"), a("[::]:9000")];
        for asked in [
            "0.0.0.0:3000",
            "[::]:3000",
            "127.0.0.1:3000",
            "[::1]:3000",
            "[::ffff:127.0.0.1]:3000",
            "127.0.0.2:3000",
        ] {
            assert_eq!(matching_socket(&a(asked), &sockets), Some(0), "{asked}");
        }
        for asked in ["[::]:8080", "0.0.0.0:8080", "127.0.0.1:8080", "[::1]:8080"] {
            assert_eq!(matching_socket(&a(asked), &sockets), Some(1), "{asked}");
        }
        assert_eq!(matching_socket(&a("0.0.0.0:9000"), &sockets), Some(2));
        // another port, port 0, or another specific address: not baton's
        for asked in [
            "0.0.0.0:3001",
            "[::]:0",
            "0.0.0.0:0",
            "10.1.2.3:3000",
            "[2001:db8::1]:8080",
        ] {
            assert_eq!(matching_socket(&a(asked), &sockets), None, "{asked}");
        }
    }

    #[test]
    fn the_sockets_own_address_wins_and_unix_matches_by_path() {
        let sockets = [a("127.0.0.1:80"), a("10.0.0.5:80"), a("unix:/run/app.sock")];
        assert_eq!(matching_socket(&a("10.0.0.5:80"), &sockets), Some(1));
        assert_eq!(
            matching_socket(&a("[::ffff:10.0.0.5]:80"), &sockets),
            Some(1)
        );
        assert_eq!(matching_socket(&a("0.0.0.0:80"), &sockets), Some(0));
        assert_eq!(matching_socket(&a("10.0.0.6:80"), &sockets), None);
        assert_eq!(matching_socket(&a("unix:/run/app.sock"), &sockets), Some(2));
        assert_eq!(matching_socket(&a("unix:/run/other.sock"), &sockets), None);
        let abstract_name = SockAddr::Unix(UnixAddr::Abstract(b"/run/app.sock".to_vec()));
        assert_eq!(matching_socket(&abstract_name, &sockets), None);
        assert_eq!(
            matching_socket(&SockAddr::Other { family: 16 }, &sockets),
            None
        );
        assert_eq!(matching_socket(&a("0.0.0.0:80"), &[]), None);
    }

    #[test]
    fn only_a_path_ending_in_a_sockets_file_name_may_name_it() {
        let sockets = [a("127.0.0.1:80"), a("unix:/run/app/app.sock")];
        for p in [
            "app.sock",
            "/run/app/app.sock",
            "../app/app.sock",
            "/elsewhere/app.sock",
        ] {
            assert!(may_name_socket(Path::new(p), &sockets), "{p}");
        }
        for p in ["app.sock.tmp", "/run/app", "/run/app/other.sock", "..", "/"] {
            assert!(!may_name_socket(Path::new(p), &sockets), "{p}");
        }
        assert!(!may_name_socket(Path::new("app.sock"), &[a("0.0.0.0:80")]));
    }

    #[test]
    fn addresses_are_described_as_written() {
        assert_eq!(describe(&a("[::]:3000")), "[::]:3000");
        assert_eq!(describe(&a("0.0.0.0:3000")), "0.0.0.0:3000");
        assert_eq!(describe(&a("unix:/run/a.sock")), "unix:/run/a.sock");
        assert!(is_wildcard_or_loopback("::1".parse().unwrap()));
        assert!(!is_wildcard_or_loopback("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn a_mode_another_generation_set_is_reported_when_it_flips() {
        let mut m = Modes::default();
        assert_eq!(m.want(1, true, 1), ModeChange::Set);
        assert_eq!(m.want(1, true, 1), ModeChange::Kept);
        assert_eq!(m.want(1, true, 2), ModeChange::Kept);
        assert_eq!(
            m.want(1, false, 2),
            ModeChange::Set,
            "its own generation set it"
        );
        assert_eq!(m.want(1, true, 3), ModeChange::Flipped { from: 2 });
        assert_eq!(m.want(0, false, 3), ModeChange::Set);
    }
}
