//! The `[sockets]` section's types, [`SocketSpec`] and [`SocketAddrSpec`] (`IPv4:port`,
//! `[IPv6]:port`, `unix:/path`), and the paths derived next to the control socket:
//! [`notify_path`] and the check that they collide with nothing ([`check_control_path`]).
//!
//! Must never touch the file system or a socket: addresses are parsed and compared as text.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::MAX_UNIX_PATH;

/// One named socket from `[sockets]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSpec {
    pub name: String,
    pub addr: SocketAddrSpec,
}

/// Address of a socket from `[sockets]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SocketAddrSpec {
    Tcp(SocketAddr),
    /// Absolute filesystem path of a unix stream socket.
    Unix(PathBuf),
}

impl fmt::Display for SocketAddrSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketAddrSpec::Tcp(a) => write!(f, "{a}"),
            SocketAddrSpec::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl FromStr for SocketAddrSpec {
    type Err = String;

    /// Accepts `IPv4:port`, `[IPv6]:port`, `unix:/abs/path` and `/abs/path`.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let unix = s
            .strip_prefix("unix:")
            .or(if s.starts_with('/') { Some(s) } else { None });
        if let Some(path) = unix {
            if !path.starts_with('/') {
                return Err(format!(
                    "unix socket path {path:?} must be absolute (like \"unix:/run/app.sock\")"
                ));
            }
            if path.contains('\0') {
                return Err("unix socket path contains a NUL byte".to_string());
            }
            if path.len() > MAX_UNIX_PATH {
                return Err(format!(
                    "unix socket path is too long ({} bytes, at most {MAX_UNIX_PATH})",
                    path.len()
                ));
            }
            return Ok(SocketAddrSpec::Unix(PathBuf::from(path)));
        }
        s.parse::<SocketAddr>()
            .map(SocketAddrSpec::Tcp)
            .map_err(|_| {
                format!(
                    "invalid socket address {s:?}: expected \"IPv4:port\" (like \"127.0.0.1:8080\"), \
                     \"[IPv6]:port\" (like \"[::1]:8080\") or \"unix:/path\""
                )
            })
    }
}

impl SocketAddrSpec {
    /// Why `self` and `other` cannot both be bound, if they cannot: the same address; a port
    /// (not 0: the kernel picks one for each) bound on a wildcard address and on an address of
    /// its family; `[::]`, which baton binds dual-stack (IPV6_V6ONLY off), with any IPv4
    /// address of the port; an IPv4-mapped IPv6 address with its IPv4 address.
    pub fn collides_with(&self, other: &SocketAddrSpec) -> Option<&'static str> {
        use std::net::IpAddr;
        if self == other {
            return Some("the same address");
        }
        let (SocketAddrSpec::Tcp(a), SocketAddrSpec::Tcp(b)) = (self, other) else {
            return None;
        };
        if a.port() != b.port() || a.port() == 0 {
            return None;
        }
        // what each one takes: IPv4 (all, or one address) and IPv6 (all, or one address)
        let v4 = |ip: IpAddr| match ip {
            IpAddr::V4(v) if v.is_unspecified() => Some(None),
            IpAddr::V4(v) => Some(Some(v)),
            IpAddr::V6(v) if v.is_unspecified() => Some(None),
            IpAddr::V6(v) => v.to_ipv4_mapped().map(Some),
        };
        let v6 = |ip: IpAddr| match ip {
            IpAddr::V6(v) if v.is_unspecified() => Some(None),
            IpAddr::V6(v) if v.to_ipv4_mapped().is_none() => Some(Some(v)),
            _ => None,
        };
        fn meet<T: PartialEq>(x: Option<Option<T>>, y: Option<Option<T>>) -> bool {
            match (x, y) {
                (Some(None), Some(_)) | (Some(_), Some(None)) => true,
                (Some(Some(p)), Some(Some(q))) => p == q,
                _ => false,
            }
        }
        let (ia, ib) = (a.ip(), b.ip());
        if meet(v4(ia), v4(ib)) || meet(v6(ia), v6(ib)) {
            Some(
                if (a.is_ipv6() && ia.is_unspecified()) || (b.is_ipv6() && ib.is_unspecified()) {
                    "a socket on [::] takes IPv4 too (baton binds it dual-stack)"
                } else if ia.is_unspecified() || ib.is_unspecified() {
                    "a wildcard address takes every address of its family"
                } else {
                    "the same address"
                },
            )
        } else {
            None
        }
    }
}

/// The notify socket's path, next to the control socket: `control` with the extension
/// `.notify` (`/run/baton/api/control.sock` → `/run/baton/api/control.notify`).
pub fn notify_path(control: &Path) -> PathBuf {
    control.with_extension("notify")
}

/// Whether `control` can be the control socket's path next to `sockets`: its derived notify
/// path (see [`notify_path`]) must differ from it and fit a socket address, and neither may
/// be one of the `[sockets]` unix paths (baton would replace the service's socket).
pub fn check_control_path(control: &Path, sockets: &[SocketSpec]) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let notify = notify_path(control);
    let len = |p: &Path| p.as_os_str().as_bytes().len();
    if len(control) > MAX_UNIX_PATH {
        return Err(format!(
            "control socket path {} is too long ({} bytes, at most {MAX_UNIX_PATH})",
            control.display(),
            len(control)
        ));
    }
    if notify == control {
        return Err(format!(
            "the control socket path {} would also be the notify socket's (the control path \
             with the extension .notify): use another extension, like .sock",
            control.display()
        ));
    }
    if len(&notify) > MAX_UNIX_PATH {
        return Err(format!(
            "the notify socket path derived from it, {}, is too long ({} bytes, at most \
             {MAX_UNIX_PATH}): choose a shorter control path",
            notify.display(),
            len(&notify)
        ));
    }
    for s in sockets {
        if let SocketAddrSpec::Unix(p) = &s.addr {
            let what = if *p == control {
                "the control socket"
            } else if *p == notify {
                "the notify socket (the control path with the extension .notify)"
            } else {
                continue;
            };
            return Err(format!(
                "`sockets.{}` ({}) is at the path of {what}: baton would replace it",
                s.name,
                p.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{assert_err, parse, MIN};

    #[test]
    fn unix_socket_addr() {
        let c = parse(&format!(
            "{MIN}[sockets]\na = \"unix:/run/a.sock\"\nb = \"/run/b.sock\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.sockets[0].addr,
            SocketAddrSpec::Unix(PathBuf::from("/run/a.sock"))
        );
        assert_eq!(
            c.sockets[1].addr,
            SocketAddrSpec::Unix(PathBuf::from("/run/b.sock"))
        );
        assert_eq!(c.sockets[0].addr.to_string(), "unix:/run/a.sock");
        let long = format!("unix:/{}", "x".repeat(200));
        assert!(long.parse::<SocketAddrSpec>().is_err());
    }

    #[test]
    fn ipv6_socket_addr() {
        let c = parse(&format!("{MIN}[sockets]\nv6 = \"[::]:8443\"\n")).unwrap();
        let SocketAddrSpec::Tcp(a) = c.sockets[0].addr else {
            panic!("not tcp")
        };
        assert!(a.is_ipv6());
        assert_eq!(a.port(), 8443);
        assert!("[::1]".parse::<SocketAddrSpec>().is_err());
        assert!("::1:80".parse::<SocketAddrSpec>().is_err());
    }

    #[test]
    fn sockets_keep_file_order() {
        let c = parse(&format!(
            "{MIN}[sockets]\nzeta = \"127.0.0.1:1\"\nalpha = \"127.0.0.1:2\"\nmid = \"127.0.0.1:3\"\n"
        ))
        .unwrap();
        let names: Vec<&str> = c.sockets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["zeta", "alpha", "mid"]);
    }

    /// A new user's trial: `baton check` passed two `[sockets]` entries that cannot both be
    /// bound (the second bind failed at run time with "Address already in use"). Equal
    /// addresses, a wildcard and an address of its family, and `[::]` (bound dual-stack) with
    /// any IPv4 address of the port collide; the error is at the second key and names the
    /// first with its line. Port 0 (the kernel picks one each) and distinct addresses do not.
    #[test]
    fn sockets_that_cannot_both_be_bound_are_an_error_naming_both() {
        for (a, b) in [
            ("0.0.0.0:3000", "0.0.0.0:3000"),
            ("0.0.0.0:3000", "[::]:3000"),
            ("[::]:3000", "0.0.0.0:3000"),
            ("[::]:3000", "127.0.0.1:3000"),
            ("0.0.0.0:3000", "127.0.0.1:3000"),
            ("[::]:3000", "[::1]:3000"),
            ("[::ffff:127.0.0.1]:3000", "127.0.0.1:3000"),
            ("unix:/run/a.sock", "/run/a.sock"),
        ] {
            let text = format!("{MIN}[sockets]\nfirst = \"{a}\"\nsecond = \"{b}\"\n");
            let e = assert_err(&text, 4, "sockets.second");
            assert!(
                e.message.contains("`sockets.first`") && e.message.contains("line 3"),
                "{a} {b}: {e}"
            );
        }
        for (a, b) in [
            ("0.0.0.0:3000", "0.0.0.0:3001"),
            ("127.0.0.1:3000", "127.0.0.2:3000"),
            ("[::1]:3000", "127.0.0.1:3000"),
            ("0.0.0.0:0", "[::]:0"),
            ("unix:/run/a.sock", "unix:/run/b.sock"),
        ] {
            let text = format!("{MIN}[sockets]\nfirst = \"{a}\"\nsecond = \"{b}\"\n");
            parse(&text).unwrap_or_else(|e| panic!("{a} {b}: {e}"));
        }
    }

    /// Port 0 in bind mode: the app binds its own port, and a bind of port 0 is never answered
    /// with one of baton's sockets, so the app could never get it.
    #[test]
    fn port_0_in_bind_mode_is_an_error() {
        let e = assert_err(
            &format!("{MIN}handover = \"bind\"\n[sockets]\nhttp = \"127.0.0.1:0\"\n[readiness]\nkind = \"listen\"\n"),
            4,
            "sockets.http",
        );
        assert!(e.message.contains("port 0"), "{e}");
        parse(&format!("{MIN}[sockets]\nhttp = \"127.0.0.1:0\"\n")).unwrap();
    }

    /// Issue 13, item 5: the derived notify path is validated.
    #[test]
    fn derived_notify_path_is_validated() {
        assert_err(&format!("{MIN}control = \"/run/x.notify\"\n"), 2, "control");
        let e = assert_err(
            &format!("{MIN}control = \"/run/x.sock\"\n[sockets]\na = \"unix:/run/x.notify\"\n"),
            2,
            "control",
        );
        assert!(e.message.contains("sockets.a"), "{e}");
        assert_err(
            &format!("{MIN}control = \"/run/x.sock\"\n[sockets]\na = \"/run/x.sock\"\n"),
            2,
            "control",
        );
        let long = format!("/{}", "x".repeat(104));
        assert!(long.len() <= MAX_UNIX_PATH);
        assert_err(&format!("{MIN}control = \"{long}\"\n"), 2, "control");
    }
}
