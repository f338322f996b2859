//! Trapping a worker's `bind()` and `listen()` with seccomp user notification, so that baton can
//! answer an app's own bind with one of its sockets (issue 15), and, when one of baton's
//! sockets is a unix path, its `unlink()` and `unlinkat()`, so that an app's customary removal
//! of that path (gunicorn before its bind, libuv at close) can be answered without removing it.
//!
//! The child side lives in `spawn.rs`: a recipe with [`Spawn::trap_bind`](super::Spawn::trap_bind)
//! sets no_new_privs and installs [`FILTER`] between `clone` and `execve`, and sends the filter's
//! listener to baton over a socketpair (SCM_RIGHTS); [`spawn_child`](super::spawn_child) returns
//! it as a [`SeccompListener`]. This file has the filter and baton's side of the listener:
//! receive a notification without blocking ([`SeccompListener::recv`]), read the address the app
//! asked for from its memory, re-validated against the notification id
//! ([`SeccompListener::read_sockaddr`]) or the path it asked to unlink, bounded the same way
//! ([`SeccompListener::read_path`]), and answer: continue, an errno, a value, or put one of
//! baton's sockets into the trapped descriptor and answer 0 ([`SeccompListener::hand_over`]).
//!
//! Must never decide which bind matches which socket, which path is baton's, or which mode a
//! shared socket takes: that is the caller's policy. A notification's process may die or be interrupted at any moment:
//! every answer may fail with ENOENT, which means "gone", not a fault of baton.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use super::Pid;

/// `AUDIT_ARCH_X86_64` (EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE), not in libc.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `AUDIT_ARCH_I386` (EM_386 | __AUDIT_ARCH_LE): `int 0x80` from any process, 64-bit ones too.
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// The x32 ABI's bit in the system call number (same arch value as x86-64).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// x86-64 (and x32, with the bit above) system call numbers.
const NR_BIND: u32 = 49;
const NR_LISTEN: u32 = 50;
const NR_UNLINK: u32 = 87;
const NR_UNLINKAT: u32 = 263;
/// i386 system call numbers: the direct calls (Linux 4.3+) and socketcall(2), which glibc's
/// i386 build uses for every socket call, with the call number in its first argument.
const NR32_SOCKETCALL: u32 = 102;
const NR32_BIND: u32 = 361;
const NR32_LISTEN: u32 = 363;
const NR32_UNLINK: u32 = 10;
const NR32_UNLINKAT: u32 = 301;
/// socketcall(2)'s call numbers (linux/net.h).
const SYS_BIND: u32 = 2;
const SYS_LISTEN: u32 = 4;

// classic BPF opcodes (linux/filter.h)
const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
// offsets in struct seccomp_data: nr, arch, instruction_pointer, args[6]; args[0]'s low half
// (little endian)
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG0: u32 = 16;

const fn ld(k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: LD_W_ABS,
        jt: 0,
        jf: 0,
        k,
    }
}
const fn jeq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: JEQ_K,
        jt,
        jf,
        k,
    }
}
const fn ret(k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: RET_K,
        jt: 0,
        jf: 0,
        k,
    }
}

/// The filter a trapped worker runs: `SECCOMP_RET_USER_NOTIF` for bind and listen, in every ABI
/// an x86-64 kernel runs (x86-64, x32, and i386 through `int 0x80`, both the direct calls and
/// socketcall's BIND and LISTEN), `SECCOMP_RET_ALLOW` for everything else. An architecture this
/// filter does not know kills the process: on an x86-64 kernel there is none, and a system call
/// that cannot be decoded must not slip past the trap. Every allowed system call number of
/// x86-64 and i386 except socketcall is allowed whatever its arguments, so the kernel's
/// seccomp action cache answers them without running the filter: accept, read and write cost
/// nothing.
pub(super) const FILTER: [libc::sock_filter; 19] =
    program(&[NR_BIND, NR_LISTEN], &[NR32_BIND, NR32_LISTEN]);

/// [`FILTER`] that also traps unlink and unlinkat in every ABI (x86-64, x32, i386), for the
/// workers of a baton with a unix socket at a path. rename, rmdir and the rest stay allowed.
pub(super) const FILTER_UNLINK: [libc::sock_filter; 25] = program(
    &[NR_BIND, NR_LISTEN, NR_UNLINK, NR_UNLINKAT],
    &[NR32_BIND, NR32_LISTEN, NR32_UNLINK, NR32_UNLINKAT],
);

/// A filter program that traps the x86-64 system calls `x64` (and each with the x32 bit), the
/// i386 ones `i386`, and socketcall's BIND and LISTEN; `N` must be `13 + 2 * x64.len() +
/// i386.len()` (checked at compile time). The layout, by index:
///
/// ```text
/// 0            ld arch
/// 1            arch == x86-64 ? next : → i386
/// 2            ld nr
/// 3..          nr == each of x64, then x32 | each of x64 ? → notif
///              ret allow
/// i386:        arch == i386 ? next : → kill
///              ld nr
///              nr == each of i386 ? → notif
///              nr == socketcall ? next : → allow32
///              ld args[0]
///              args[0] == SYS_BIND, SYS_LISTEN ? → notif
/// allow32:     ret allow
/// notif (N-2): ret user notification
/// kill (N-1):  ret kill process
/// ```
const fn program<const N: usize>(x64: &[u32], i386: &[u32]) -> [libc::sock_filter; N] {
    assert!(N == 13 + 2 * x64.len() + i386.len());
    let notif = N - 2;
    let kill = N - 1;
    let to_i386 = 4 + 2 * x64.len();
    let mut p = [ret(libc::SECCOMP_RET_KILL_PROCESS); N];
    p[0] = ld(OFF_ARCH);
    p[1] = jeq(AUDIT_ARCH_X86_64, 0, jump(1, to_i386));
    p[2] = ld(OFF_NR);
    let mut i = 3;
    let mut k = 0;
    while k < x64.len() {
        p[i] = jeq(x64[k], jump(i, notif), 0);
        p[i + x64.len()] = jeq(X32_SYSCALL_BIT | x64[k], jump(i + x64.len(), notif), 0);
        i += 1;
        k += 1;
    }
    i += x64.len();
    p[i] = ret(libc::SECCOMP_RET_ALLOW);
    i += 1;
    assert!(i == to_i386);
    p[i] = jeq(AUDIT_ARCH_I386, 0, jump(i, kill));
    p[i + 1] = ld(OFF_NR);
    i += 2;
    let mut k = 0;
    while k < i386.len() {
        p[i] = jeq(i386[k], jump(i, notif), 0);
        i += 1;
        k += 1;
    }
    let allow32 = i + 4;
    p[i] = jeq(NR32_SOCKETCALL, 0, jump(i, allow32));
    p[i + 1] = ld(OFF_ARG0);
    p[i + 2] = jeq(SYS_BIND, jump(i + 2, notif), 0);
    p[i + 3] = jeq(SYS_LISTEN, jump(i + 3, notif), 0);
    p[allow32] = ret(libc::SECCOMP_RET_ALLOW);
    assert!(allow32 + 1 == notif);
    p[notif] = ret(libc::SECCOMP_RET_USER_NOTIF);
    p[kill] = ret(libc::SECCOMP_RET_KILL_PROCESS);
    p
}

/// A conditional jump's offset from instruction `from` to `to` (offsets count from the next
/// instruction, forward only, at most 255).
const fn jump(from: usize, to: usize) -> u8 {
    assert!(to > from && to - from - 1 <= u8::MAX as usize);
    (to - from - 1) as u8
}

/// Whether the filter can be built for this target (x86-64 only, for now) and the kernel
/// offers user notification to this process (a seccomp filter of its own, like a systemd
/// unit's `SystemCallFilter=` without `seccomp`, may refuse it).
pub fn supported() -> io::Result<()> {
    if cfg!(target_arch = "x86_64") {
        notif_sizes().map(|_| ())
    } else {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "trapping bind() is implemented for x86-64 only",
        ))
    }
}

/// The kernel's sizes of `seccomp_notif` and `seccomp_notif_resp` (SECCOMP_GET_NOTIF_SIZES),
/// asked once. Fails on a kernel without user notification (before 5.0).
fn notif_sizes() -> io::Result<(usize, usize)> {
    static SIZES: OnceLock<Result<(usize, usize), i32>> = OnceLock::new();
    let r = SIZES.get_or_init(|| {
        let mut s = libc::seccomp_notif_sizes {
            seccomp_notif: 0,
            seccomp_notif_resp: 0,
            seccomp_data: 0,
        };
        // SAFETY: SECCOMP_GET_NOTIF_SIZES writes one `struct seccomp_notif_sizes` (three u16,
        // the layout libc declares) to the pointer, a valid local.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_GET_NOTIF_SIZES,
                0,
                &mut s as *mut libc::seccomp_notif_sizes,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        Ok((s.seccomp_notif as usize, s.seccomp_notif_resp as usize))
    });
    match *r {
        Ok((n, resp)) if n <= BUF_BYTES && resp <= BUF_BYTES => Ok((n, resp)),
        Ok((n, resp)) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("seccomp notification structs larger than expected ({n}, {resp} bytes)"),
        )),
        Err(e) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "seccomp user notification not available: {}",
                io::Error::from_raw_os_error(e)
            ),
        )),
    }
}

/// Room for the kernel's `seccomp_notif` / `seccomp_notif_resp`, whichever version it has (it
/// copies its own size; today 80 and 24 bytes).
const BUF_BYTES: usize = 256;
#[repr(C, align(8))]
struct NotifBuf([u8; BUF_BYTES]);

/// What a trapped process asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syscall {
    /// `bind(fd, addr_ptr, addr_len)`; `addr_ptr` is in the process's memory.
    Bind {
        fd: RawFd,
        addr_ptr: u64,
        addr_len: u32,
    },
    /// `listen(fd, backlog)`.
    Listen { fd: RawFd, backlog: i32 },
    /// `unlinkat(dirfd, path_ptr, flags)`, or `unlink(path_ptr)` as `dirfd` `AT_FDCWD` and
    /// `flags` 0; `path_ptr` is in the process's memory.
    Unlink {
        dirfd: RawFd,
        path_ptr: u64,
        flags: i32,
    },
    /// Anything else (nothing the filter traps today, or an i386 socketcall whose arguments
    /// could not be read): answer it with [`SeccompListener::respond_continue`].
    Other { nr: i32 },
}

/// One trapped system call, waiting for baton's answer. `pid` is the thread that made it, in
/// baton's pid namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notification {
    pub id: u64,
    pub pid: Pid,
    pub syscall: Syscall,
}

/// A socket address read from a trapped process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SockAddr {
    Inet(SocketAddrV4),
    Inet6(SocketAddrV6),
    Unix(UnixAddr),
    /// A family baton does not decode.
    Other {
        family: u16,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnixAddr {
    Path(PathBuf),
    /// The name after the leading NUL, every byte of it (NULs included).
    Abstract(Vec<u8>),
    /// Only the family: autobind.
    Unnamed,
}

impl SockAddr {
    /// The TCP/UDP port, for either IP family.
    pub fn port(&self) -> Option<u16> {
        match self {
            SockAddr::Inet(a) => Some(a.port()),
            SockAddr::Inet6(a) => Some(a.port()),
            _ => None,
        }
    }
    /// The IP address, with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) given as IPv4.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            SockAddr::Inet(a) => Some(IpAddr::V4(*a.ip())),
            SockAddr::Inet6(a) => Some(match a.ip().to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(*a.ip()),
            }),
            _ => None,
        }
    }
}

/// Decode a `struct sockaddr` of `bytes.len()` bytes (the app's addr_len, as far as it was
/// read), as the kernel would: AF_INET needs 16 bytes, AF_INET6 24 (RFC 2133's size, without
/// the scope id), AF_UNIX at least its family. Shorter is an error (the kernel answers EINVAL).
pub fn decode_sockaddr(bytes: &[u8]) -> io::Result<SockAddr> {
    let short = || io::Error::new(io::ErrorKind::InvalidInput, "socket address too short");
    if bytes.len() < 2 {
        return Err(short());
    }
    let family = u16::from_ne_bytes([bytes[0], bytes[1]]);
    let be16 = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
    match i32::from(family) {
        libc::AF_INET => {
            if bytes.len() < 16 {
                return Err(short());
            }
            let ip = Ipv4Addr::new(bytes[4], bytes[5], bytes[6], bytes[7]);
            Ok(SockAddr::Inet(SocketAddrV4::new(ip, be16(2))))
        }
        libc::AF_INET6 => {
            if bytes.len() < 24 {
                return Err(short());
            }
            let flow = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&bytes[8..24]);
            let scope = match bytes.get(24..28) {
                Some(s) => u32::from_ne_bytes([s[0], s[1], s[2], s[3]]),
                None => 0,
            };
            Ok(SockAddr::Inet6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                be16(2),
                flow,
                scope,
            )))
        }
        libc::AF_UNIX => {
            let path = &bytes[2..];
            Ok(SockAddr::Unix(match path.first() {
                None => UnixAddr::Unnamed,
                Some(0) => UnixAddr::Abstract(path[1..].to_vec()),
                Some(_) => {
                    let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
                    UnixAddr::Path(PathBuf::from(std::ffi::OsStr::from_bytes(&path[..end])))
                }
            }))
        }
        _ => Ok(SockAddr::Other { family }),
    }
}

/// The listener of one worker's filter (and of every process it forks, which inherit the
/// filter). Poll it for POLLIN (a notification waits) and POLLHUP (every process that had the
/// filter is gone). Closing it makes every later trapped call of those processes fail with
/// ENOSYS, so keep it as long as the worker's process tree lives.
#[derive(Debug)]
pub struct SeccompListener {
    fd: OwnedFd,
}

impl AsFd for SeccompListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// ioctl(2) on a seccomp listener.
///
/// # Safety
/// `arg` must point to a live buffer at least as large as the struct `request` reads or writes.
unsafe fn ioctl(
    fd: BorrowedFd<'_>,
    request: libc::Ioctl,
    arg: *mut libc::c_void,
) -> io::Result<i32> {
    // SAFETY: the buffer is the caller's promise; the descriptor is borrowed, so it is open.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), request, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl SeccompListener {
    /// Wrap a listener received from a trapped child.
    pub(super) fn from_fd(fd: OwnedFd) -> SeccompListener {
        SeccompListener { fd }
    }

    /// The next notification, or `None` when none waits (or the one that did belongs to a
    /// thread that died or was interrupted since). Never blocks: the kernel's RECV ignores
    /// O_NONBLOCK, so this polls first; `&mut self` keeps a second receiver of this listener
    /// from taking the notification between the two. Every `Some` must be answered (one of the
    /// `respond_*` or [`hand_over`](Self::hand_over)), or the thread stays in its system call.
    pub fn recv(&mut self) -> io::Result<Option<Notification>> {
        let (size, _) = notif_sizes()?;
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, count 1, no wait.
        let r = unsafe { libc::poll(&mut pfd, 1, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(None)
            } else {
                Err(e)
            };
        }
        if pfd.revents & libc::POLLIN == 0 {
            return Ok(None);
        }
        let mut buf = NotifBuf([0; BUF_BYTES]);
        // SAFETY: SECCOMP_IOCTL_NOTIF_RECV writes the kernel's `struct seccomp_notif`, of
        // `size` bytes, which `notif_sizes` checked fits in `buf`; the kernel requires the
        // buffer zeroed, as it is.
        let r = unsafe {
            ioctl(
                self.fd.as_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV,
                buf.0.as_mut_ptr().cast(),
            )
        };
        match r {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EINTR)) => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
        debug_assert!(size >= std::mem::size_of::<libc::seccomp_notif>());
        // SAFETY: `buf` is 8-aligned and larger than `seccomp_notif` (plain integers, any bit
        // pattern valid), whose layout is the start of every kernel version of the struct.
        let n: libc::seccomp_notif = unsafe { std::ptr::read(buf.0.as_ptr().cast()) };
        let syscall = match self.decode(&n) {
            Some(s) => s,
            None => return Ok(None), // its thread went away while we read its arguments
        };
        Ok(Some(Notification {
            id: n.id,
            pid: n.pid as Pid,
            syscall,
        }))
    }

    fn decode(&self, n: &libc::seccomp_notif) -> Option<Syscall> {
        let nr = n.data.nr as u32;
        let a = n.data.args;
        let bind = |fd: u64, ptr: u64, len: u64| Syscall::Bind {
            fd: fd as i32,
            addr_ptr: ptr,
            addr_len: len as u32,
        };
        let listen = |fd: u64, backlog: u64| Syscall::Listen {
            fd: fd as i32,
            backlog: backlog as i32,
        };
        // descriptors and flags are C ints: the low half, whatever the ABI put above it
        let unlinkat = |dirfd: u64, ptr: u64, flags: u64| Syscall::Unlink {
            dirfd: dirfd as u32 as i32,
            path_ptr: ptr,
            flags: flags as u32 as i32,
        };
        let cwd = libc::AT_FDCWD as u32 as u64;
        Some(match (n.data.arch, nr) {
            (AUDIT_ARCH_X86_64, NR_BIND) => bind(a[0], a[1], a[2]),
            (AUDIT_ARCH_X86_64, NR_LISTEN) => listen(a[0], a[1]),
            (AUDIT_ARCH_X86_64, nr) if nr == X32_SYSCALL_BIT | NR_BIND => bind(a[0], a[1], a[2]),
            (AUDIT_ARCH_X86_64, nr) if nr == X32_SYSCALL_BIT | NR_LISTEN => listen(a[0], a[1]),
            (AUDIT_ARCH_X86_64, NR_UNLINK) => unlinkat(cwd, a[0], 0),
            (AUDIT_ARCH_X86_64, NR_UNLINKAT) => unlinkat(a[0], a[1], a[2]),
            (AUDIT_ARCH_X86_64, nr) if nr == X32_SYSCALL_BIT | NR_UNLINK => unlinkat(cwd, a[0], 0),
            (AUDIT_ARCH_X86_64, nr) if nr == X32_SYSCALL_BIT | NR_UNLINKAT => {
                unlinkat(a[0], a[1], a[2])
            }
            (AUDIT_ARCH_I386, NR32_BIND) => bind(a[0], a[1] & 0xffff_ffff, a[2]),
            (AUDIT_ARCH_I386, NR32_LISTEN) => listen(a[0], a[1]),
            (AUDIT_ARCH_I386, NR32_UNLINK) => unlinkat(cwd, a[0] & 0xffff_ffff, 0),
            (AUDIT_ARCH_I386, NR32_UNLINKAT) => unlinkat(a[0], a[1] & 0xffff_ffff, a[2]),
            (AUDIT_ARCH_I386, NR32_SOCKETCALL) => {
                // socketcall(call, args): args points to the call's arguments, three 32-bit
                // words in the process's memory (bind's; listen uses two)
                let words =
                    match super::proc::read_process_memory(n.pid as Pid, a[1] & 0xffff_ffff, 12) {
                        Ok(w) => w,
                        Err(_) => {
                            return self
                                .id_valid(n.id)
                                .ok()
                                .map(|_| Syscall::Other { nr: n.data.nr })
                        }
                    };
                self.id_valid(n.id).ok()?;
                let w = |i: usize| {
                    u64::from(u32::from_ne_bytes([
                        words[4 * i],
                        words[4 * i + 1],
                        words[4 * i + 2],
                        words[4 * i + 3],
                    ]))
                };
                match a[0] as u32 {
                    SYS_BIND => bind(w(0), w(1), w(2)),
                    SYS_LISTEN => listen(w(0), w(1)),
                    _ => Syscall::Other { nr: n.data.nr },
                }
            }
            _ => Syscall::Other { nr: n.data.nr },
        })
    }

    /// Whether notification `id` still waits for an answer: its thread is alive and still in
    /// that system call (so its pid still names it). Err(ENOENT) otherwise.
    pub fn id_valid(&self, id: u64) -> io::Result<()> {
        let mut id = id;
        // SAFETY: SECCOMP_IOCTL_NOTIF_ID_VALID reads one u64, a valid local.
        unsafe {
            ioctl(
                self.fd.as_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
                (&mut id as *mut u64).cast(),
            )
        }
        .map(|_| ())
    }

    /// The address a trapped `bind` asked for, read from the process's memory (at most
    /// `sizeof(struct sockaddr_storage)` bytes) and trusted only once the notification is
    /// still valid after the read: had the thread died and its pid been reused, the read would
    /// have come from another process. Err(ENOENT) when the thread is gone, InvalidInput for a
    /// notification that is no bind or an address too short to decode (the kernel would answer
    /// the app EINVAL: continue it). The app's other threads may change the memory after the
    /// read: use the address to pick one of baton's sockets, never to let the kernel act on it.
    pub fn read_sockaddr(&self, n: &Notification) -> io::Result<SockAddr> {
        let Syscall::Bind {
            addr_ptr, addr_len, ..
        } = n.syscall
        else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a bind notification",
            ));
        };
        let len = (addr_len as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
        let read = super::proc::read_process_memory(n.pid, addr_ptr, len);
        // validate after the read, whatever it gave: an error of a dead thread is ENOENT
        self.id_valid(n.id)?;
        decode_sockaddr(&read?)
    }

    /// The path a trapped `unlink`/`unlinkat` asked for, read from the process's memory up to
    /// its NUL (at most PATH_MAX bytes, the NUL included, as the kernel reads it; never past the
    /// first unreadable page) and trusted only once the notification is still valid after the
    /// read, as in [`read_sockaddr`](Self::read_sockaddr). Err(ENOENT) when the thread is gone,
    /// InvalidInput for a notification that is no unlink, an empty path or one without a NUL
    /// within PATH_MAX (the kernel would answer ENOENT or ENAMETOOLONG: continue it). The app's
    /// other threads may change the memory after the read: answering the call without running
    /// it is safe whatever they do; a continued call is run on what the memory holds then.
    pub fn read_path(&self, n: &Notification) -> io::Result<PathBuf> {
        let Syscall::Unlink { path_ptr, .. } = n.syscall else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an unlink notification",
            ));
        };
        let read = super::proc::read_process_string(n.pid, path_ptr, libc::PATH_MAX as usize);
        self.id_valid(n.id)?;
        let bytes = read?;
        if bytes.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty path"));
        }
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(&bytes)))
    }

    fn respond(&self, id: u64, val: i64, error: i32, flags: u32) -> io::Result<()> {
        let (_, size) = notif_sizes()?;
        debug_assert!(size >= std::mem::size_of::<libc::seccomp_notif_resp>());
        let mut buf = NotifBuf([0; BUF_BYTES]);
        let resp = libc::seccomp_notif_resp {
            id,
            val,
            error,
            flags,
        };
        // SAFETY: `buf` is 8-aligned and larger than the struct; the rest stays zero, which is
        // what a newer kernel's larger struct expects of fields this code does not know.
        unsafe { std::ptr::write(buf.0.as_mut_ptr().cast(), resp) };
        // SAFETY: SECCOMP_IOCTL_NOTIF_SEND reads the kernel's `struct seccomp_notif_resp`
        // (`size` bytes, checked to fit in `buf`).
        unsafe {
            ioctl(
                self.fd.as_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                buf.0.as_mut_ptr().cast(),
            )
        }
        .map(|_| ())
    }

    /// Let the system call run as if it had not been trapped (SECCOMP_USER_NOTIF_FLAG_CONTINUE).
    /// The kernel then reads the app's arguments again, so this is for "not ours", never a
    /// decision based on what [`read_sockaddr`](Self::read_sockaddr) saw.
    pub fn respond_continue(&self, id: u64) -> io::Result<()> {
        self.respond(id, 0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32)
    }

    /// Fail the system call with `errno` (positive, e.g. `libc::EADDRINUSE`).
    pub fn respond_error(&self, id: u64, errno: i32) -> io::Result<()> {
        if errno <= 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "errno must be positive",
            ));
        }
        self.respond(id, 0, -errno, 0)
    }

    /// Return `val` from the system call without running it (e.g. 0 for a listen on a socket
    /// baton handed over: the backlog stays baton's).
    pub fn respond_value(&self, id: u64, val: i64) -> io::Result<()> {
        self.respond(id, val, 0, 0)
    }

    /// Put `socket` into the trapped process at `target_fd` (SECCOMP_IOCTL_NOTIF_ADDFD with
    /// SECCOMP_ADDFD_FLAG_SETFD: like dup2, it closes the app's own socket there), with
    /// FD_CLOEXEC as `cloexec` says (give it the app's own: [`fd_flags`]), then answer 0. The
    /// socket's open file description is shared, O_NONBLOCK included: set that before.
    ///
    /// Not SECCOMP_ADDFD_FLAG_SEND, though it would add and answer in one step: it answers
    /// with the new descriptor's number, and bind() must return 0. Between the two steps the
    /// app's thread still waits in bind(); if it is interrupted there, the kernel restarts the
    /// call as a new notification (the answer here fails with ENOENT) on a descriptor that
    /// already is baton's socket, and handing it over again is harmless.
    pub fn hand_over(
        &self,
        id: u64,
        target_fd: RawFd,
        socket: BorrowedFd<'_>,
        cloexec: bool,
    ) -> io::Result<()> {
        if target_fd < 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "negative fd"));
        }
        let mut addfd = libc::seccomp_notif_addfd {
            id,
            flags: libc::SECCOMP_ADDFD_FLAG_SETFD as u32,
            srcfd: socket.as_raw_fd() as u32,
            newfd: target_fd as u32,
            newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
        };
        // SAFETY: SECCOMP_IOCTL_NOTIF_ADDFD reads a `struct seccomp_notif_addfd` of the size
        // encoded in the request (libc's, 24 bytes, the kernel's first version): `addfd` is
        // that struct. `srcfd` is borrowed, so it is open during the call; the kernel takes
        // its own reference to the file.
        unsafe {
            ioctl(
                self.fd.as_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ADDFD,
                (&mut addfd as *mut libc::seccomp_notif_addfd).cast(),
            )
        }?;
        self.respond_value(id, 0)
    }
}

/// The file status flags of descriptor `fd` of process `pid` (the `flags:` line of
/// /proc/PID/fdinfo/FD, octal), with O_CLOEXEC set when the descriptor is close-on-exec. E.g.
/// `flags & O_NONBLOCK` says whether the app made its socket non-blocking (Go and libuv do).
pub fn fd_flags(pid: Pid, fd: RawFd) -> io::Result<i32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| i32::from_str_radix(v.trim(), 8).ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no flags in fdinfo"))
}

/// Set or clear O_NONBLOCK on `fd`'s open file description (shared by every holder of it).
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    let new = if on {
        flags | OFlag::O_NONBLOCK
    } else {
        flags - OFlag::O_NONBLOCK
    };
    if new != flags {
        fcntl(fd, FcntlArg::F_SETFL(new))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic-BPF interpreter for the few opcodes the filters use, over a seccomp_data of
    /// (nr, arch, args[0]).
    fn run_filter(filter: &[libc::sock_filter], nr: u32, arch: u32, arg0: u32) -> u32 {
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let i = filter[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => {
                    acc = match i.k {
                        OFF_NR => nr,
                        OFF_ARCH => arch,
                        OFF_ARG0 => arg0,
                        k => panic!("load at {k}"),
                    }
                }
                JEQ_K => pc += usize::from(if acc == i.k { i.jt } else { i.jf }),
                RET_K => return i.k,
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    fn run(nr: u32, arch: u32, arg0: u32) -> u32 {
        run_filter(&FILTER, nr, arch, arg0)
    }

    /// [`FILTER`] as it was written by hand and reviewed before [`program`] generated it.
    #[test]
    fn the_generated_bind_filter_is_the_reviewed_one() {
        let reviewed = [
            ld(OFF_ARCH),
            jeq(AUDIT_ARCH_X86_64, 0, 6),
            ld(OFF_NR),
            jeq(NR_BIND, 13, 0),
            jeq(NR_LISTEN, 12, 0),
            jeq(X32_SYSCALL_BIT | NR_BIND, 11, 0),
            jeq(X32_SYSCALL_BIT | NR_LISTEN, 10, 0),
            ret(libc::SECCOMP_RET_ALLOW),
            jeq(AUDIT_ARCH_I386, 0, 9),
            ld(OFF_NR),
            jeq(NR32_BIND, 6, 0),
            jeq(NR32_LISTEN, 5, 0),
            jeq(NR32_SOCKETCALL, 0, 3),
            ld(OFF_ARG0),
            jeq(SYS_BIND, 2, 0),
            jeq(SYS_LISTEN, 1, 0),
            ret(libc::SECCOMP_RET_ALLOW),
            ret(libc::SECCOMP_RET_USER_NOTIF),
            ret(libc::SECCOMP_RET_KILL_PROCESS),
        ];
        let fields = |f: &libc::sock_filter| (f.code, f.jt, f.jf, f.k);
        let generated: Vec<_> = FILTER.iter().map(fields).collect();
        let reviewed: Vec<_> = reviewed.iter().map(fields).collect();
        assert_eq!(generated, reviewed);
    }

    /// Only the unlink filter traps unlink and unlinkat, in every ABI; neither traps rename,
    /// rmdir or accept; both trap bind and listen.
    #[test]
    fn unlink_is_trapped_only_by_the_unlink_filter_in_every_abi() {
        const NOTIF: u32 = libc::SECCOMP_RET_USER_NOTIF;
        const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
        let x64 = AUDIT_ARCH_X86_64;
        let i386 = AUDIT_ARCH_I386;
        let unlinks = [
            (libc::SYS_unlink as u32, x64),
            (libc::SYS_unlinkat as u32, x64),
            (X32_SYSCALL_BIT | libc::SYS_unlink as u32, x64),
            (X32_SYSCALL_BIT | libc::SYS_unlinkat as u32, x64),
            (NR32_UNLINK, i386),
            (NR32_UNLINKAT, i386),
        ];
        for (nr, arch) in unlinks {
            assert_eq!(run_filter(&FILTER, nr, arch, 0), ALLOW, "{nr} {arch:#x}");
            assert_eq!(
                run_filter(&FILTER_UNLINK, nr, arch, 0),
                NOTIF,
                "{nr} {arch:#x}"
            );
        }
        let untouched = [
            (libc::SYS_rename as u32, x64),
            (libc::SYS_renameat as u32, x64),
            (libc::SYS_renameat2 as u32, x64),
            (libc::SYS_rmdir as u32, x64),
            (libc::SYS_accept4 as u32, x64),
            (libc::SYS_read as u32, x64),
            (X32_SYSCALL_BIT | libc::SYS_rename as u32, x64),
            (38, i386),  // rename
            (40, i386),  // rmdir
            (302, i386), // renameat
        ];
        for (nr, arch) in untouched {
            assert_eq!(
                run_filter(&FILTER_UNLINK, nr, arch, 0),
                ALLOW,
                "{nr} {arch:#x}"
            );
        }
        for f in [&FILTER[..], &FILTER_UNLINK[..]] {
            assert_eq!(run_filter(f, libc::SYS_bind as u32, x64, 0), NOTIF);
            assert_eq!(run_filter(f, X32_SYSCALL_BIT | NR_LISTEN, x64, 0), NOTIF);
            assert_eq!(run_filter(f, NR32_LISTEN, i386, 0), NOTIF);
            assert_eq!(run_filter(f, NR32_SOCKETCALL, i386, SYS_BIND), NOTIF);
            assert_eq!(run_filter(f, NR32_SOCKETCALL, i386, 5), ALLOW);
            assert_eq!(
                run_filter(f, 10, 0xc000_00b7, 0),
                libc::SECCOMP_RET_KILL_PROCESS
            );
        }
    }

    #[test]
    fn the_filter_traps_bind_and_listen_only_in_every_abi() {
        const NOTIF: u32 = libc::SECCOMP_RET_USER_NOTIF;
        const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
        let x64 = AUDIT_ARCH_X86_64;
        let i386 = AUDIT_ARCH_I386;
        assert_eq!(run(libc::SYS_bind as u32, x64, 0), NOTIF);
        assert_eq!(run(libc::SYS_listen as u32, x64, 0), NOTIF);
        assert_eq!(run(X32_SYSCALL_BIT | 49, x64, 0), NOTIF);
        assert_eq!(run(X32_SYSCALL_BIT | 50, x64, 0), NOTIF);
        for nr in [
            libc::SYS_accept,
            libc::SYS_accept4,
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_execve,
        ] {
            assert_eq!(run(nr as u32, x64, 2), ALLOW, "{nr}");
        }
        assert_eq!(run(NR32_BIND, i386, 0), NOTIF);
        assert_eq!(run(NR32_LISTEN, i386, 0), NOTIF);
        assert_eq!(run(NR32_SOCKETCALL, i386, SYS_BIND), NOTIF);
        assert_eq!(run(NR32_SOCKETCALL, i386, SYS_LISTEN), NOTIF);
        for call in [1, 3, 5, 18] {
            // socket, connect, accept, accept4
            assert_eq!(run(NR32_SOCKETCALL, i386, call), ALLOW);
        }
        // i386's 49 and 50 are geteuid and getegid
        assert_eq!(run(49, i386, 0), ALLOW);
        assert_eq!(run(50, i386, 0), ALLOW);
        assert_eq!(run(49, 0xc000_00b7, 0), libc::SECCOMP_RET_KILL_PROCESS);
    }

    #[test]
    fn socket_addresses_decode_as_the_kernel_reads_them() {
        let mut v4 = vec![0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&8080u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 1]);
        let a = decode_sockaddr(&v4).unwrap();
        assert_eq!(a, SockAddr::Inet("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(a.port(), Some(8080));
        assert!(decode_sockaddr(&v4[..15]).is_err());

        let mut v6 = vec![0u8; 28];
        v6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[2..4].copy_from_slice(&3000u16.to_be_bytes());
        let a = decode_sockaddr(&v6).unwrap();
        assert_eq!(a.port(), Some(3000));
        assert_eq!(a.ip(), Some("::".parse().unwrap()));
        v6[18..20].copy_from_slice(&[0xff, 0xff]);
        v6[20..24].copy_from_slice(&[10, 1, 2, 3]);
        v6[24..28].copy_from_slice(&7u32.to_ne_bytes());
        let a = decode_sockaddr(&v6).unwrap();
        assert_eq!(a.ip(), Some("10.1.2.3".parse().unwrap()));
        assert!(matches!(a, SockAddr::Inet6(s) if s.scope_id() == 7));
        // RFC 2133's 24 bytes are enough; 23 are not
        assert!(decode_sockaddr(&v6[..24]).is_ok());
        assert!(decode_sockaddr(&v6[..23]).is_err());

        let unix = |tail: &[u8]| {
            let mut b = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
            b.extend_from_slice(tail);
            decode_sockaddr(&b).unwrap()
        };
        assert_eq!(
            unix(b"/run/app.sock\0junk"),
            SockAddr::Unix(UnixAddr::Path("/run/app.sock".into()))
        );
        assert_eq!(
            unix(b"\0name\0x"),
            SockAddr::Unix(UnixAddr::Abstract(b"name\0x".to_vec()))
        );
        assert_eq!(unix(b""), SockAddr::Unix(UnixAddr::Unnamed));
        assert_eq!(
            decode_sockaddr(&[16, 0, 1, 2]).unwrap(),
            SockAddr::Other { family: 16 }
        );
        assert!(decode_sockaddr(&[2]).is_err());
    }

    #[test]
    fn fdinfo_flags() {
        let (r, _w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let me = std::process::id() as Pid;
        let f = fd_flags(me, r.as_raw_fd()).unwrap();
        assert!(
            f & libc::O_CLOEXEC != 0 && f & libc::O_NONBLOCK == 0,
            "{f:o}"
        );
        set_nonblocking(r.as_fd(), true).unwrap();
        let f = fd_flags(me, r.as_raw_fd()).unwrap();
        assert!(f & libc::O_NONBLOCK != 0, "{f:o}");
        set_nonblocking(r.as_fd(), false).unwrap();
        assert!(fd_flags(me, r.as_raw_fd()).unwrap() & libc::O_NONBLOCK == 0);
    }
}
