//! The listening sockets baton hands to every generation.
//!
//! They come from systemd (LISTEN_FDS, names from LISTEN_FDNAMES) or, when baton was not
//! socket-activated, are bound from the config's `[sockets]` table. Either way they are
//! acquired once, at start-up, and live as long as baton: generations come and go, the sockets
//! (and the connections queued on them) stay. This module never closes a socket while baton
//! runs and never accepts on one.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use anyhow::Context;

use crate::config::{SocketAddrSpec, SocketSpec};
use crate::sys;

/// Listen backlog for sockets baton binds itself: connections queue here while no worker is
/// accepting (e.g. the instant between two generations), instead of being refused.
pub const BACKLOG: i32 = 4096;

pub struct Listener {
    pub fd: OwnedFd,
    pub name: String,
    /// e.g. "stream 127.0.0.1:8080"
    pub address: String,
    /// "systemd" or "bound"
    pub source: &'static str,
}

pub struct Listeners {
    pub list: Vec<Listener>,
}

impl Listeners {
    /// Whether one of the sockets is a unix socket at a path (not abstract): in bind mode its
    /// workers' unlink() of that path is trapped too.
    pub fn has_unix_path(&self) -> bool {
        self.list.iter().any(|l| {
            matches!(
                sys::local_addr(l.fd.as_fd()),
                Ok(sys::SockAddr::Unix(sys::UnixAddr::Path(_)))
            )
        })
    }

    /// Take systemd's sockets, or bind the configured ones when there are none.
    /// Must run before any thread is spawned (it edits the environment).
    pub fn acquire(specs: &[SocketSpec]) -> anyhow::Result<Listeners> {
        let passed = sys::take_listen_fds().context("reading LISTEN_FDS")?;
        let mut list = Vec::new();
        if !passed.is_empty() {
            for (fd, name) in passed {
                let address = sys::describe_socket(fd.as_fd())
                    .with_context(|| format!("descriptor {} from systemd", fd.as_raw_fd()))?;
                list.push(Listener {
                    fd,
                    name,
                    address,
                    source: "systemd",
                });
            }
            if !specs.is_empty() {
                tracing::info!(
                    baton_event = "sockets",
                    "using {} socket(s) from systemd; [sockets] in the config is ignored",
                    list.len()
                );
            }
            return Ok(Listeners { list });
        }
        if specs.is_empty() {
            anyhow::bail!(
                "no sockets: baton was not socket-activated (no LISTEN_FDS) and the config has \
                 no [sockets]: add a [sockets] table, like http = \"0.0.0.0:3000\", or run \
                 baton under a socket unit (`baton units NAME` writes one)"
            );
        }
        for spec in specs {
            let fd = match &spec.addr {
                SocketAddrSpec::Tcp(addr) => sys::bind_tcp(*addr, BACKLOG)
                    .with_context(|| format!("binding socket `{}` to {addr}", spec.name))?,
                SocketAddrSpec::Unix(path) => sys::bind_unix(path, BACKLOG).with_context(|| {
                    format!("binding socket `{}` to unix:{}", spec.name, path.display())
                })?,
            };
            let address = sys::describe_socket(fd.as_fd())?;
            list.push(Listener {
                fd,
                name: spec.name.clone(),
                address,
                source: "bound",
            });
        }
        store_in_fdstore(&list);
        Ok(Listeners { list })
    }

    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.list.iter().map(|l| l.fd.as_fd()).collect()
    }

    /// LISTEN_FDNAMES for the workers.
    pub fn names(&self) -> Vec<String> {
        self.list.iter().map(|l| l.name.clone()).collect()
    }
}

/// Under systemd, sockets baton bound itself go to the service's fd store (FDSTORE=1, FDNAME=),
/// so that after `systemctl restart` systemd passes them back through LISTEN_FDS and no
/// connection is refused while baton restarts. Needs `FileDescriptorStoreMax=` in the unit;
/// without it systemd drops them, which is harmless.
fn store_in_fdstore(list: &[Listener]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    for l in list {
        let states = [
            sd_notify::NotifyState::FdStore,
            sd_notify::NotifyState::FdName(&l.name),
        ];
        match sd_notify::notify_with_fds(&states, &[l.fd.as_fd()]) {
            Ok(()) => tracing::info!(
                baton_event = "fdstore",
                "socket `{}` stored in systemd's fd store",
                l.name
            ),
            Err(e) => tracing::warn!(
                baton_event = "fdstore",
                "could not store socket `{}` in systemd's fd store: {e}",
                l.name
            ),
        }
    }
}
