//! `handover = "bind"`: the event loop's seccomp event source. Each bind-mode worker's
//! listener is polled with the loop's other descriptors; [`Supervisor::on_trap`] reads what its
//! process tree's trapped calls ask and answers each at once: a bind matching one of baton's
//! sockets by address, from an app socket of the same type, gets that socket (with the app's
//! O_NONBLOCK and FD_CLOEXEC) and is logged as `worker_bind`; one of another TCP port or unix
//! path continues and is named (`worker_bind_other`, [`Event::BoundOther`]); a `listen()` on a
//! descriptor whose inode is one of baton's sockets is answered with 0 and becomes
//! `Event::Listened`; an `unlink()`/`unlinkat()` (trapped only when one of baton's sockets is a
//! unix path) of such a path is answered 0 without removing it and logged as
//! `worker_unlink_kept`; everything else continues. A relative path, bound or unlinked, is resolved against the app's working
//! directory (or the directory descriptor of its unlinkat) first. Which bind matches which
//! socket is `crate::handover`'s decision.
//!
//! Must never block: every notification is answered in the turn it is read, at most
//! `TRAPS_PER_TURN` per worker and turn.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::{Io, RateLimit, Supervisor};
use crate::config::SocketAddrSpec;
use crate::handover::{self, ModeChange, Modes};
use crate::supervisor::core::Event;
use crate::supervisor::timers::SlotId;
use crate::sys::{self, Notification, Pid, SeccompListener, SockAddr, Syscall, UnixAddr};

/// At most this many trapped calls are answered per worker and loop turn.
const TRAPS_PER_TURN: usize = 64;
/// A worker's first this many kept unlinks are logged at info (an app removes the path once or
/// twice in its life); the rest, an app that loops on it, at debug.
const KEPT_LOGGED: u32 = 4;
/// A worker's first this many binds of addresses that are none of baton's sockets are logged
/// at info, each address once (an admin port, a wrong port); the rest at debug.
const OTHER_LOGGED: usize = 4;

/// What the answers keep of baton's sockets and of the modes they were given.
pub(super) struct Traps {
    /// Each listening socket's local address (what a trapped bind() is matched against), in
    /// the order of `Listeners::list`; a unix socket's path with its directory canonical.
    addrs: Vec<SockAddr>,
    /// Each listening socket's type (SOCK_STREAM, …): only an app socket of that type gets it.
    types: Vec<i32>,
    /// The O_NONBLOCK mode each socket was last given for a bind-mode worker.
    modes: Modes,
    /// Failed answers to trapped calls are logged at this rate at most.
    errors: RateLimit,
}

impl Traps {
    pub(super) fn new() -> Traps {
        Traps {
            addrs: Vec::new(),
            types: Vec::new(),
            modes: Modes::default(),
            errors: RateLimit::new(10, Duration::from_secs(10)),
        }
    }

    /// The next of baton's listening sockets: its local address (or `asked`, the address
    /// a bind must name to get it instead, `--bind-as`) and type.
    pub(super) fn learn(&mut self, socket: BorrowedFd<'_>, asked: Option<&SocketAddrSpec>) {
        let canonical = |p: std::path::PathBuf| {
            let me = std::process::id() as Pid;
            let canonical = sys::resolve_at(me, libc::AT_FDCWD, &p).unwrap_or(p);
            SockAddr::Unix(UnixAddr::Path(canonical))
        };
        // a socket whose address cannot be read is matched by no bind
        let addr = match (asked, sys::local_addr(socket)) {
            (Some(SocketAddrSpec::Tcp(std::net::SocketAddr::V4(a))), _) => SockAddr::Inet(*a),
            (Some(SocketAddrSpec::Tcp(std::net::SocketAddr::V6(a))), _) => SockAddr::Inet6(*a),
            (Some(SocketAddrSpec::Unix(p)), _) => canonical(p.clone()),
            (None, Ok(SockAddr::Unix(UnixAddr::Path(p)))) => canonical(p),
            (None, Ok(addr)) => addr,
            (None, Err(_)) => SockAddr::Other { family: 0 },
        };
        self.addrs.push(addr);
        self.types.push(sys::socket_type(socket).unwrap_or(-1));
    }
}

impl Supervisor {
    /// The trapped bind() and listen() calls of one bind-mode worker's tree, each answered at
    /// once (a budget per turn, as for the notify socket: the listener stays readable).
    pub(super) fn on_trap(&mut self, worker: Pid) {
        let Some(w) = self.io.workers.get_mut(&worker) else {
            return;
        };
        let slot = w.slot;
        let Some(mut trap) = w.trap.take() else {
            return;
        };
        for _ in 0..TRAPS_PER_TURN {
            let n = match trap.recv() {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => {
                    warn!(
                        baton_event = "worker_trap_failed",
                        baton_worker_pid = worker,
                        "worker {worker}: cannot read its trapped calls: {e}"
                    );
                    break;
                }
            };
            if let Some(event) = self.io.answer_trap(&trap, worker, slot, &n) {
                self.event(event);
            }
        }
        if let Some(w) = self.io.workers.get_mut(&worker) {
            w.trap = Some(trap);
        }
    }
}

/// The answers to a worker's trapped calls. Every answer may fail with ENOENT, which means the
/// thread is gone (died, or interrupted out of its call), not a fault.
impl Io {
    /// Answer one trapped call; a bind answered with one of baton's sockets, and a listen() on
    /// one, are events for the core.
    fn answer_trap(
        &mut self,
        trap: &SeccompListener,
        worker: Pid,
        slot: SlotId,
        n: &Notification,
    ) -> Option<Event> {
        debug!(
            "worker {worker}: thread {} trapped in {:?}",
            n.pid, n.syscall
        );
        let answered = match n.syscall {
            Syscall::Bind { fd, .. } => match self.answer_bind(trap, worker, slot, n, fd) {
                Ok(event) => return event,
                Err(e) => Err(e),
            },
            Syscall::Listen { fd, .. } => match self.listened_socket(n.pid, fd) {
                // the backlog stays baton's
                Some(socket) => match trap.respond_value(n.id, 0) {
                    Ok(()) => return Some(Event::Listened { worker, socket }),
                    Err(e) => Err(e),
                },
                None => trap.respond_continue(n.id),
            },
            Syscall::Unlink { dirfd, flags, .. } => {
                self.answer_unlink(trap, worker, slot, n, dirfd, flags)
            }
            Syscall::Other { .. } => trap.respond_continue(n.id),
        };
        if let Err(e) = answered {
            self.trap_failed(worker, n, e);
        }
        None
    }

    /// The release of `generation` (`BATON_RELEASE`), as its recipe pinned it.
    fn release_of(&self, generation: u64) -> Option<String> {
        let (recipe, _) = self.recipes.get(&generation)?;
        Some(recipe.release().display().to_string())
    }

    /// Which of baton's sockets descriptor `fd` of thread `tid` is, if any (by inode: a
    /// handed socket, or a copy of it a fork or a dup made).
    fn listened_socket(&self, tid: Pid, fd: i32) -> Option<usize> {
        match sys::proc_fd_kind(tid, fd) {
            Ok(sys::FdKind::Socket(ino)) => self.socket_inodes.iter().position(|(_, i)| *i == ino),
            _ => None,
        }
    }

    /// A bind of one of baton's sockets' addresses gets that socket, with the app's own
    /// O_NONBLOCK and FD_CLOEXEC: `Event::Bound`. Any other runs untouched; one of a TCP
    /// address with a port or of a unix path, from a socket of a type baton's have, is named
    /// (`worker_bind_other`) and is `Event::BoundOther`.
    fn answer_bind(
        &mut self,
        trap: &SeccompListener,
        worker: Pid,
        slot: SlotId,
        n: &Notification,
        fd: i32,
    ) -> std::io::Result<Option<Event>> {
        let asked = match trap.read_sockaddr(n) {
            Ok(a) => a,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            // unreadable or too short: the kernel gives the app its own answer
            Err(_) => return trap.respond_continue(n.id).map(|()| None),
        };
        let i = match &asked {
            SockAddr::Unix(UnixAddr::Path(path)) => {
                self.unix_socket_named(n.pid, libc::AT_FDCWD, path)
            }
            _ => handover::matching_socket(&asked, &self.traps.addrs),
        };
        let Some(i) = i else {
            trap.respond_continue(n.id)?;
            return Ok(self.bound_other(worker, slot, n.pid, fd, &asked));
        };
        let Some(flags) = self.replaceable(n.pid, fd, i) else {
            return trap.respond_continue(n.id).map(|()| None);
        };
        self.give_mode(i, flags & libc::O_NONBLOCK != 0, slot.generation);
        let cloexec = flags & libc::O_CLOEXEC != 0;
        trap.hand_over(n.id, fd, self.listeners.list[i].fd.as_fd(), cloexec)?;
        let name = &self.listeners.list[i].name;
        let got = &self.traps.addrs[i];
        // 127.0.0.1:3000 gets 0.0.0.0:3000: say that the app now serves every interface
        let widened = match (asked.ip(), got.ip()) {
            (Some(a), Some(g)) if a.is_loopback() && !g.is_loopback() => {
                " (it asked for loopback only; the socket listens on all interfaces)"
            }
            _ => "",
        };
        info!(
            baton_event = "worker_bind",
            baton_generation = slot.generation,
            baton_release = self.release_of(slot.generation),
            baton_worker_pid = worker,
            baton_instance = slot.instance,
            baton_socket = name.as_str(),
            "worker {worker} (generation {}, instance {}) bound {}: it got socket `{name}` \
             ({}){widened}",
            slot.generation,
            slot.instance,
            handover::describe(&asked),
            handover::describe(got),
        );
        Ok(Some(Event::Bound { worker, socket: i }))
    }

    /// A bind that got none of baton's sockets (and ran untouched): when it asked for a TCP
    /// address with a port or a unix path, from a socket of a type one of baton's has, it is
    /// most likely the app's port, a wrong one or one of its own: named at info, a worker's
    /// first [`OTHER_LOGGED`] addresses once each, and the core is told (the reason of a
    /// `listen` timeout names it). Port 0 (Go's IPv6 probes `[::1]:0`, `[::]:0`, an ephemeral
    /// port), abstract and unnamed unix addresses, a UDP socket: debug only.
    fn bound_other(
        &mut self,
        worker: Pid,
        slot: SlotId,
        tid: Pid,
        fd: i32,
        asked: &SockAddr,
    ) -> Option<Event> {
        let named = match asked {
            SockAddr::Inet(_) | SockAddr::Inet6(_) => asked.port().is_some_and(|p| p != 0),
            SockAddr::Unix(UnixAddr::Path(_)) => true,
            _ => false,
        };
        let what = handover::describe(asked);
        if !named || !self.same_type_as_ours(tid, fd) {
            debug!("worker {worker}: bind of {what} left to the app");
            return None;
        }
        let logged = match self.workers.get_mut(&worker) {
            Some(w) if w.binds_other.len() < OTHER_LOGGED && !w.binds_other.contains(asked) => {
                w.binds_other.push(asked.clone());
                Some(w.binds_other.len())
            }
            _ => None,
        };
        if let Some(count) = logged {
            let more = match count == OTHER_LOGGED {
                true => "; this worker's further ones are logged at debug level",
                false => "",
            };
            let ours: Vec<String> = (self.listeners.list.iter().zip(&self.traps.addrs))
                .map(|(l, a)| format!("`{}` {}", l.name, handover::describe(a)))
                .collect();
            info!(
                baton_event = "worker_bind_other",
                baton_generation = slot.generation,
                baton_release = self.release_of(slot.generation),
                baton_worker_pid = worker,
                baton_instance = slot.instance,
                baton_address = %what,
                "worker {worker} (generation {}, instance {}) bound {what}: none of baton's \
                 sockets ({}); left to the app{more}",
                slot.generation,
                slot.instance,
                ours.join(", "),
            );
        } else {
            debug!("worker {worker}: bind of {what} left to the app (logged before)");
        }
        Some(Event::BoundOther {
            worker,
            address: what,
        })
    }

    /// Whether the app's socket `fd` (of thread `tid`) is of a type one of baton's sockets
    /// has (a UDP socket is not a TCP server's port); when its type cannot be read, it is.
    fn same_type_as_ours(&self, tid: Pid, fd: i32) -> bool {
        match sys::proc_tgid(tid).and_then(|tgid| sys::socket_type_of(tgid, fd)) {
            Ok(ty) => self.traps.types.contains(&ty),
            Err(_) => true,
        }
    }

    /// Which of baton's unix sockets `path` names, as thread `tid` resolves it (relative to
    /// `dirfd`, or its working directory for `AT_FDCWD`), if any. Only a path that ends in the
    /// file name of one of them is resolved (the resolution reads /proc and the file system); a
    /// path that cannot be resolved names none.
    fn unix_socket_named(&self, tid: Pid, dirfd: i32, path: &Path) -> Option<usize> {
        if !handover::may_name_socket(path, &self.traps.addrs) {
            return None;
        }
        let resolved = match sys::resolve_at(tid, dirfd, path) {
            Ok(p) => p,
            Err(e) => {
                debug!("thread {tid}: cannot resolve {} ({e})", path.display());
                return None;
            }
        };
        handover::matching_socket(&SockAddr::Unix(UnixAddr::Path(resolved)), &self.traps.addrs)
    }

    /// An unlink of one of baton's unix sockets' paths is answered 0 without removing it (the
    /// app's customary clean-up: gunicorn before its bind and at exit, libuv at close); any
    /// other runs untouched, as does `unlinkat` with AT_REMOVEDIR or any flag.
    fn answer_unlink(
        &mut self,
        trap: &SeccompListener,
        worker: Pid,
        slot: SlotId,
        n: &Notification,
        dirfd: i32,
        flags: i32,
    ) -> std::io::Result<()> {
        if flags != 0 {
            return trap.respond_continue(n.id);
        }
        let path = match trap.read_path(n) {
            Ok(p) => p,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            // unreadable, empty or too long: the kernel gives the app its own answer
            Err(_) => return trap.respond_continue(n.id),
        };
        let Some(i) = self.unix_socket_named(n.pid, dirfd, &path) else {
            return trap.respond_continue(n.id);
        };
        trap.respond_value(n.id, 0)?;
        let kept = match self.workers.get_mut(&worker) {
            Some(w) => {
                w.unlinks_kept = w.unlinks_kept.saturating_add(1);
                w.unlinks_kept
            }
            None => 1,
        };
        let name = &self.listeners.list[i].name;
        if kept > KEPT_LOGGED {
            debug!(
                "worker {worker}: unlink {kept} of {} kept",
                handover::describe(&self.traps.addrs[i])
            );
            return Ok(());
        }
        let more = match kept == KEPT_LOGGED {
            true => "; this worker's further ones are logged at debug level",
            false => "",
        };
        info!(
            baton_event = "worker_unlink_kept",
            baton_generation = slot.generation,
            baton_release = self.release_of(slot.generation),
            baton_worker_pid = worker,
            baton_instance = slot.instance,
            baton_socket = name.as_str(),
            "worker {worker} (generation {}, instance {}) kept {}: the app's unlink was \
             answered without removing it (socket `{name}`){more}",
            slot.generation,
            slot.instance,
            handover::describe(&self.traps.addrs[i]),
        );
        Ok(())
    }

    /// The file status flags of the app's descriptor `fd` (of thread `tid`) if baton's socket
    /// `i` may replace it: it is a socket, and of the same type (a UDP socket bound to the
    /// port of a TCP one, as HTTP/3 servers do, keeps its own). Anything else gets the
    /// kernel's own answer. When the type cannot be read (no pidfd_getfd), the address decides.
    fn replaceable(&self, tid: Pid, fd: i32, i: usize) -> Option<i32> {
        let flags = match (sys::proc_fd_kind(tid, fd), sys::fd_flags(tid, fd)) {
            (Ok(sys::FdKind::Socket(_)), Ok(flags)) => flags,
            _ => return None,
        };
        match sys::proc_tgid(tid).and_then(|tgid| sys::socket_type_of(tgid, fd)) {
            Ok(ty) if Some(&ty) != self.traps.types.get(i) => None,
            Ok(_) => Some(flags),
            Err(e) => {
                debug!("thread {tid}: the type of its socket {fd} is unknown ({e})");
                Some(flags)
            }
        }
    }

    /// Give shared socket `i` the blocking mode a worker of `generation` created its own
    /// socket with, and say so when that changes the mode a live generation had.
    fn give_mode(&mut self, i: usize, nonblocking: bool, generation: u64) {
        let change = self.traps.modes.want(i, nonblocking, generation);
        if change == ModeChange::Kept {
            return;
        }
        let name = &self.listeners.list[i].name;
        if let Err(e) = sys::set_nonblocking(self.listeners.list[i].fd.as_fd(), nonblocking) {
            warn!(
                baton_event = "socket_mode_failed",
                "socket `{name}`: cannot set O_NONBLOCK to {nonblocking}: {e}"
            );
        }
        let mode = |nb: bool| if nb { "non-blocking" } else { "blocking" };
        if let ModeChange::Flipped { from } = change {
            if self.recipes.contains_key(&from) {
                warn!(
                    baton_event = "socket_mode_changed",
                    baton_generation = generation,
                    baton_release = self.release_of(generation),
                    "socket `{name}` is now {} for generation {generation}, whose app made its \
                     own socket so; generation {from} had it {}, and the mode is shared by every \
                     holder of the socket",
                    mode(nonblocking),
                    mode(!nonblocking)
                );
            }
        }
    }

    /// An answer to a trapped call failed: the thread is gone (ENOENT), or something to say.
    fn trap_failed(&mut self, worker: Pid, n: &Notification, e: std::io::Error) {
        if e.raw_os_error() == Some(libc::ENOENT) {
            debug!("worker {worker}: thread {} left its trapped call", n.pid);
        } else if self.traps.errors.allow(Instant::now()) {
            warn!(
                baton_event = "worker_trap_failed",
                baton_worker_pid = worker,
                "worker {worker}: cannot answer the {:?} of thread {}: {e}{}",
                n.syscall,
                n.pid,
                self.traps.errors.take_suppressed()
            );
        }
    }
}
