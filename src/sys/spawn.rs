//! Starting a worker: [`Spawn`] (what the children of one recipe share, built once) and
//! [`Child`] (what differs per child), and [`spawn`], which creates the child with
//! `clone(CLONE_VM | CLONE_VFORK)` as `posix_spawn` does, and the child's side up to `execve`.
//!
//! Between `clone` and `execve` the child runs on baton's memory (CLONE_VM | CLONE_VFORK, as
//! `posix_spawn` does) and may only use async-signal-safe calls, so everything that allocates
//! (argv, envp, the `LISTEN_PID=` buffer) is prepared before `clone`, and the child only fills
//! in its own pid, moves descriptors and resets its signal state. The child must never
//! allocate, panic, return or write to memory other than the buffers prepared for it.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::priority::{may_lower_nice_to, own_priority, worker_nice, Priority};
use super::seccomp::{self, SeccompListener};
use super::Pid;

/// What every child started from one recipe shares: the program, its argv, the environment
/// common to all of them, the working directory, and a `/dev/null` for their stdin. Built (and
/// allocated) once, e.g. per generation, so that starting 64 workers does not resolve, copy and
/// open the same things 64 times.
pub struct Spawn {
    program: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    cwd: Option<CString>,
    devnull: OwnedFd,
    /// The priority each child takes right before its exec, from baton's own read when the
    /// recipe is made.
    priority: Priority,
    /// Signals whose disposition is not SIG_DFL in baton (bit `sig - 1`), read when the
    /// recipe is made: the only ones a child has to reset before it unblocks signals.
    /// (baton never changes a disposition: the ones it has are inherited or set by the Rust
    /// runtime before `main`, so they are the same when the recipe is made and at each spawn.)
    reset_signals: u64,
    /// Whether each child installs the bind/listen trap before its exec (see
    /// [`Spawn::trap_bind`]).
    trap_bind: bool,
    /// Whether that trap also catches unlink and unlinkat (see [`Spawn::trap_unlink`]).
    trap_unlink: bool,
}

/// The part of a spawn that differs between children of one [`Spawn`]: more environment, the
/// descriptors that become 3, 4, … (borrowed until [`spawn`] returns), stdout and stderr.
pub struct Child<'a> {
    env: Vec<CString>,
    fds: Vec<BorrowedFd<'a>>,
    set_listen_pid: bool,
    stdout: Option<BorrowedFd<'a>>,
    stderr: Option<BorrowedFd<'a>>,
}

fn cstring(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in string"))
}

fn env_entry(key: &OsStr, value: &OsStr) -> io::Result<CString> {
    let mut kv = Vec::with_capacity(key.len() + 1 + value.len());
    kv.extend_from_slice(key.as_bytes());
    kv.push(b'=');
    kv.extend_from_slice(value.as_bytes());
    cstring(&kv)
}

impl Spawn {
    /// `program` must already be resolved (absolute or relative path with a '/').
    pub fn new(program: &Path, argv: &[String]) -> io::Result<Spawn> {
        Ok(Spawn {
            program: cstring(program.as_os_str().as_bytes())?,
            argv: argv
                .iter()
                .map(|a| cstring(a.as_bytes()))
                .collect::<io::Result<_>>()?,
            env: Vec::new(),
            cwd: None,
            devnull: OwnedFd::from(std::fs::File::open("/dev/null")?), // O_CLOEXEC by std
            priority: {
                let (nice, realtime) = own_priority();
                Priority {
                    nice: (nice < 0).then_some(0),
                    realtime,
                }
            },
            reset_signals: non_default_signals(),
            trap_bind: false,
            trap_unlink: false,
        })
    }
    pub fn env(&mut self, key: &OsStr, value: &OsStr) -> io::Result<()> {
        self.env.push(env_entry(key, value)?);
        Ok(())
    }
    pub fn cwd(&mut self, dir: &Path) -> io::Result<()> {
        self.cwd = Some(cstring(dir.as_os_str().as_bytes())?);
        Ok(())
    }
    /// Trap the bind() and listen() calls of every child of this recipe (and of every process
    /// it forks): between clone and execve the child sets no_new_privs (setuid and file
    /// capabilities grant nothing from then on) and installs the seccomp filter of
    /// `seccomp.rs` with a user-notification listener, which [`spawn_child`] returns. Off by
    /// default. Fails where the filter cannot be built (not x86-64, or a kernel without
    /// seccomp user notification); a kernel that refuses the filter itself makes each
    /// [`spawn_child`] fail (stage `seccomp`), never run the app untrapped.
    pub fn trap_bind(&mut self, on: bool) -> io::Result<()> {
        if on {
            seccomp::supported()?;
        }
        self.trap_bind = on;
        Ok(())
    }
    /// With [`Spawn::trap_bind`], trap unlink() and unlinkat() too (`seccomp.rs`'s
    /// `FILTER_UNLINK`, for a baton with a unix socket at a path, whose removal by the app it
    /// answers); without it, nothing. Off by default: the filter then traps bind and listen
    /// only.
    pub fn trap_unlink(&mut self, on: bool) {
        self.trap_unlink = on;
    }
    /// Whether children of this recipe may start at nice `startup_nice` and be given their
    /// running priority back once ready: returns that running nice value, or `None` when
    /// `startup_nice` is not above it or baton could not give it back (neither CAP_SYS_NICE nor
    /// RLIMIT_NICE allows it). The child itself always execs at its running priority: its
    /// exec is part of the spawn baton waits for, and at a lower priority it would wait behind
    /// the serving workers; [`renice_group`] moves it to `startup_nice` once spawned.
    pub fn can_start_at(&self, startup_nice: i32) -> Option<i32> {
        let run = worker_nice();
        (startup_nice > run && may_lower_nice_to(run)).then_some(run)
    }
}

impl<'a> Child<'a> {
    pub fn new() -> Child<'a> {
        Child {
            env: Vec::new(),
            fds: Vec::new(),
            set_listen_pid: false,
            stdout: None,
            stderr: None,
        }
    }
    /// One more environment variable, after the recipe's (the first of two equal names wins).
    pub fn env(&mut self, key: &OsStr, value: &OsStr) -> io::Result<()> {
        self.env.push(env_entry(key, value)?);
        Ok(())
    }
    /// Pass these descriptors as 3, 4, …. When `listen_pid` is set, the child gets
    /// `LISTEN_PID=<its own pid>`.
    pub fn pass_fds(&mut self, fds: &[BorrowedFd<'a>], listen_pid: bool) {
        self.fds = fds.to_vec();
        self.set_listen_pid = listen_pid;
    }
    /// Redirect stdout / stderr to these descriptors (stdin is always /dev/null).
    pub fn stdio(&mut self, stdout: Option<BorrowedFd<'a>>, stderr: Option<BorrowedFd<'a>>) {
        self.stdout = stdout;
        self.stderr = stderr;
    }
}

impl Default for Child<'_> {
    fn default() -> Self {
        Child::new()
    }
}

/// The signals (bit `sig - 1`) that are caught or ignored in this process. A child must reset
/// them before it unblocks signals: a caught one would run baton's handler on baton's memory,
/// an ignored one would stay ignored in the app. (Raw rt_sigaction: glibc's wrapper refuses
/// the real-time signals it reserves for itself, 32 and 33. A failed query counts as not
/// default, so that the child resets it.)
fn non_default_signals() -> u64 {
    let mut set = 0u64;
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // the kernel's struct sigaction: handler, flags, restorer, mask (8 bytes of it)
        let mut old = [0u64; 4];
        // SAFETY: a query only (no new action); the kernel writes the 32-byte struct into
        // `old`, which is that large, with an 8-byte signal mask as passed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                std::ptr::null::<u64>(),
                old.as_mut_ptr(),
                8usize,
            )
        };
        if r != 0 || old[0] != libc::SIG_DFL as u64 {
            set |= 1 << (sig - 1);
        }
    }
    set
}

/// Stage of the child at which a spawn failed, as the child reports it.
const STAGES: [&str; 9] = [
    "setpgid",
    "dup",
    "stdio",
    "chdir",
    "execve",
    "signals",
    "no_new_privs",
    "seccomp",
    "seccomp listener handover",
];

/// Write `n` as decimal into `buf` (no allocation: used in the forked child). Returns length.
fn write_decimal(buf: &mut [u8], mut n: u32) -> usize {
    let mut tmp = [0u8; 10];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = tmp.len() - i;
    buf[..len].copy_from_slice(&tmp[i..]);
    len
}

/// Everything the child reads between `clone` and `execve`: built by the parent, which is
/// suspended (CLONE_VFORK) while the child runs on the parent's memory.
struct ChildArgs<'a> {
    spec: &'a Spawn,
    fds: &'a [BorrowedFd<'a>],
    set_listen_pid: bool,
    stdout: Option<RawFd>,
    stderr: Option<RawFd>,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// The `LISTEN_PID=` envp entry; the child writes its pid after the `=`.
    listen_pid: *mut u8,
    /// Scratch space for the moved sockets, one slot per `fds` entry.
    tmp_fds: *mut RawFd,
    /// Where a failing child leaves its errno and stage (`STAGES` index) before `_exit`. The
    /// parent reads it once clone has returned: with CLONE_VFORK that is after the child
    /// exec'd (nothing written: success) or exited. No pipe needed, as in glibc's posix_spawn.
    error: *mut ChildError,
    /// Lowest descriptor at which sources are parked before they move down to 3.. .
    high: RawFd,
    parent: libc::pid_t,
    /// What a trapping child needs; `None` for the others.
    trap: Option<TrapArgs>,
}

/// The child's part of the trap, all prepared before clone: the filter to install, and the
/// message that sends its listener back (the child writes the descriptor's number into the
/// message's SCM_RIGHTS slot, then sends it on its end of a socketpair).
struct TrapArgs {
    prog: *const libc::sock_fprog,
    /// The child's end, below `high`: parked above it with the other sources before the
    /// moves to 3.., which could land on it.
    sock: RawFd,
    msg: *const libc::msghdr,
    fd_slot: *mut libc::c_int,
}

#[derive(Clone, Copy)]
struct ChildError {
    errno: i32,
    /// Index into `STAGES`; `u8::MAX` while the child has not failed.
    stage: u8,
}

/// The stack the child runs on until `execve`. It lives in spawn's own frame, as in musl's
/// posix_spawn: no mapping to create and tear down per worker (at 64 workers, mmap + munmap
/// with its TLB shoot-down cost more than the clone itself). The parent's thread is suspended
/// while the child runs, and an overflow would run down into the unused part of the parent's
/// stack, below every live frame. The child needs far less than these 16 KiB.
#[repr(C, align(16))]
struct ChildStack([std::mem::MaybeUninit<u8>; 16 * 1024]);

/// Start a child of `spec` with `child`'s additions: own process group, SIGKILL when baton
/// dies, empty signal mask and default dispositions, stdin from /dev/null, the passed
/// descriptors at 3.. and no other descriptor of baton, `LISTEN_PID` equal to the child's own
/// pid. Returns the pid once the child has exec'd, or the reason it could not (the stage and
/// errno; the failed child is already reaped). The child has its own copies of every
/// descriptor by then, so the caller may close its own at once.
///
/// The child is created like `posix_spawn` does it, with `clone(CLONE_VM | CLONE_VFORK)`: it
/// shares baton's memory and baton's thread waits until the child's `execve` has replaced
/// it. Nothing is copied (no page tables, no copy-on-write faults in baton afterwards, no
/// address space to tear down at exec), which is what makes starting 64 or 256 workers cheap.
/// (`posix_spawn` itself cannot be used: the environment is fixed before the child's pid
/// exists, so `LISTEN_PID` could not be the child's own.)
///
/// A recipe that traps bind() (see [`Spawn::trap_bind`]) is refused here with InvalidInput,
/// since its listener would be lost: use [`spawn_child`].
pub fn spawn(spec: &Spawn, child: &Child<'_>) -> io::Result<Pid> {
    if spec.trap_bind {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "this recipe traps bind(): spawn it with spawn_child, which returns the listener",
        ));
    }
    spawn_child(spec, child).map(|s| s.pid)
}

/// A child that has exec'd: its pid and, when its recipe traps bind(), the listener of its
/// filter (the only copy: the child closed its own before exec).
#[derive(Debug)]
pub struct Spawned {
    pub pid: Pid,
    pub listener: Option<SeccompListener>,
}

/// [`spawn`] for any recipe: the same child, and with [`Spawn::trap_bind`] the listener of its
/// filter too. A child that could not install the filter or send its listener fails like any
/// other (stage `no_new_privs`, `seccomp` or `seccomp listener handover`, with the errno).
pub fn spawn_child(spec: &Spawn, child: &Child<'_>) -> io::Result<Spawned> {
    let n = child.fds.len() as RawFd;
    // --- everything that allocates happens here, before clone
    let mut argv: Vec<*const libc::c_char> = spec.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut listen_pid_buf = [0u8; 32];
    listen_pid_buf[..11].copy_from_slice(b"LISTEN_PID=");
    // One raw pointer for both uses (envp entry, and the child's write of its pid), so the
    // write is visible through the pointer execve reads.
    let listen_pid_ptr: *mut u8 = listen_pid_buf.as_mut_ptr();
    let mut envp: Vec<*const libc::c_char> =
        Vec::with_capacity(spec.env.len() + child.env.len() + 2);
    envp.extend(spec.env.iter().chain(&child.env).map(|e| e.as_ptr()));
    if child.set_listen_pid {
        envp.push(listen_pid_ptr as *const libc::c_char);
    }
    envp.push(std::ptr::null());
    let stdout = child.stdout.map(|f| f.as_raw_fd());
    let stderr = child.stderr.map(|f| f.as_raw_fd());
    let devnull = spec.devnull.as_raw_fd();
    // Descriptors are first moved at or above `high`, so that dup2 to 3.. can never clobber a
    // source that is still needed.
    let trap_sockets = if spec.trap_bind {
        Some(trap_socketpair()?)
    } else {
        None
    };
    let trap_sock = trap_sockets.as_ref().map(|(_, theirs)| theirs.as_raw_fd());
    let high = child
        .fds
        .iter()
        .map(|f| f.as_raw_fd())
        .chain([2 + n, devnull, stdout.unwrap_or(0), stderr.unwrap_or(0)])
        .chain(trap_sock)
        .max()
        .unwrap_or(2)
        + 1;
    let mut tmp_fds = vec![-1 as RawFd; child.fds.len()];
    let mut error = ChildError {
        errno: 0,
        stage: u8::MAX,
    };
    // One raw pointer, shared by the child's write and the read below.
    let error_ptr: *mut ChildError = &mut error;
    // The trap: the filter program, the socketpair (made above), and the SCM_RIGHTS message
    // the child sends on its end (its own end closes at exec: SOCK_CLOEXEC).
    let filter: &[libc::sock_filter] = match spec.trap_unlink {
        true => &seccomp::FILTER_UNLINK,
        false => &seccomp::FILTER,
    };
    let prog = libc::sock_fprog {
        len: filter.len() as libc::c_ushort,
        // the kernel only reads (copies) the program
        filter: filter.as_ptr().cast_mut(),
    };
    let mut payload = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    let mut cmsg_buf = CmsgBuf([0; CMSG_BYTES]);
    // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths); its fields are set
    // below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.0.as_mut_ptr().cast();
    msg.msg_controllen = CMSG_BYTES as _;
    // SAFETY: `msg` points to `cmsg_buf`, 8-aligned and CMSG_SPACE(sizeof(int)) bytes long, so
    // CMSG_FIRSTHDR returns its start, and the header plus one int fit in it.
    let fd_slot: *mut libc::c_int = unsafe {
        let h = libc::CMSG_FIRSTHDR(&msg);
        (*h).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        (*h).cmsg_level = libc::SOL_SOCKET;
        (*h).cmsg_type = libc::SCM_RIGHTS;
        libc::CMSG_DATA(h).cast()
    };
    let trap = trap_sock.map(|sock| TrapArgs {
        prog: &prog,
        sock,
        msg: &msg,
        fd_slot,
    });
    let mut stack = ChildStack([std::mem::MaybeUninit::uninit(); 16 * 1024]);
    // stacks grow down on every Linux target baton builds for; the end is 16-byte aligned
    let stack_top = stack.0.as_mut_ptr_range().end.cast::<libc::c_void>();
    let args = ChildArgs {
        spec,
        fds: &child.fds,
        set_listen_pid: child.set_listen_pid,
        stdout,
        stderr,
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        listen_pid: listen_pid_ptr,
        tmp_fds: tmp_fds.as_mut_ptr(),
        error: error_ptr,
        high,
        parent: std::process::id() as libc::pid_t,
        trap,
    };

    // Block every signal in this thread around clone: the child starts with this mask, so no
    // handler (std's SIGSEGV handler, glibc's internal ones) can run on baton's memory in the
    // child before it has reset every disposition.
    // SAFETY: sigfillset/pthread_sigmask write only to the valid locals passed.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: an all-zero sigset_t is a valid (empty) set.
    let mut saved: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above: both sets are valid locals.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut saved);
    }
    // SAFETY: `child_main` runs on `stack` (ours, unused otherwise) and only reads `args` and
    // the buffers it points to, all alive until clone returns, which with CLONE_VFORK is after
    // the child's execve succeeded or it called _exit. It never returns (exec or _exit), so
    // glibc's clone wrapper never calls exit() in the child. The only memory it writes is
    // `listen_pid_buf`, `tmp_fds`, `error`, the SCM_RIGHTS slot of `cmsg_buf` and errno,
    // which this thread does not touch meanwhile (it is suspended), and no other thread knows
    // about.
    let pid = unsafe {
        libc::clone(
            child_main,
            stack_top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &args as *const ChildArgs<'_> as *mut libc::c_void,
        )
    };
    let clone_error = io::Error::last_os_error();
    // SAFETY: restores the mask saved above; writes nothing.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &saved, std::ptr::null_mut()) };
    if pid < 0 {
        return Err(clone_error);
    }
    // SAFETY: the child is done with `error` (it exec'd or exited: CLONE_VFORK) and the
    // kernel's wake-up of this thread orders its write before this read.
    let error = unsafe { std::ptr::read_volatile(error_ptr) };
    if error.stage == u8::MAX {
        let Some((ours, theirs)) = trap_sockets else {
            return Ok(Spawned {
                pid,
                listener: None,
            });
        };
        drop(theirs);
        return match receive_listener(&ours) {
            Ok(fd) => Ok(Spawned {
                pid,
                listener: Some(SeccompListener::from_fd(fd)),
            }),
            Err(e) => {
                // it exec'd without baton holding its listener: its binds would fail with
                // ENOSYS, so it must not run
                // SAFETY: kill and waitpid on our own child, which nobody else reaps
                // meanwhile (this thread is the loop's); writes a valid local.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    let mut status = 0;
                    libc::waitpid(pid, &mut status, 0);
                }
                Err(io::Error::new(
                    e.kind(),
                    format!("seccomp listener handover: {e}"),
                ))
            }
        };
    }
    // the child failed before or at exec: collect it and report why
    // SAFETY: waitpid on our own child's pid; writes to a valid local.
    unsafe {
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
    }
    let stage = STAGES.get(error.stage as usize).copied().unwrap_or("spawn");
    let e = io::Error::from_raw_os_error(error.errno);
    // what the stage worked on, where the errno alone does not say it
    let on = match (stage, &spec.cwd) {
        ("chdir", Some(dir)) => format!(" {}", dir.to_string_lossy()),
        ("execve", _) => format!(" {}", spec.program.to_string_lossy()),
        _ => String::new(),
    };
    Err(io::Error::new(e.kind(), format!("{stage}{on}: {e}")))
}

/// The control buffer of the message that carries the listener: CMSG_SPACE(sizeof(int)).
const CMSG_BYTES: usize = 24;
#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_BYTES]);
// SAFETY: CMSG_SPACE is a pure computation on its argument.
const SPACE: u32 = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) };
const _: () = assert!(SPACE as usize == CMSG_BYTES);

/// A socketpair for the listener: (baton's end, the child's end), both close-on-exec.
fn trap_socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::Datagram,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// Take the listener the child sent before its exec (it is already there: the child sent it
/// before baton's thread resumed), close-on-exec in baton.
fn receive_listener(ours: &OwnedFd) -> io::Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        ours.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(list) = c {
            for fd in list {
                // SAFETY: SCM_RIGHTS just installed this descriptor in baton for this
                // message; nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if fds.len() != 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("expected one descriptor, got {}", fds.len()),
        ));
    }
    Ok(fds.remove(0))
}

extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` that spawn keeps alive until this child has exec'd or
    // exited (see the clone call).
    unsafe { child_exec(&*(arg as *const ChildArgs<'_>)) }
}

/// The child, between clone and execve. It runs on baton's memory while baton's thread waits:
/// only async-signal-safe calls (setpgid, prctl, getppid, rt_sigaction, sigprocmask, fcntl,
/// dup2, syscall(close_range), chdir, syscall(seccomp), sendmsg, close, getpid,
/// sched_setscheduler, setpriority, execve, _exit), no allocation, no panic, and writes only
/// to the `ChildArgs` scratch buffers (the trap's SCM_RIGHTS slot among them) and
/// its error slot. It never returns.
///
/// # Safety
/// `a` and every pointer in it must be valid, as spawn makes them.
unsafe fn child_exec(a: &ChildArgs<'_>) -> ! {
    let spec = a.spec;
    let n = a.fds.len();
    let fail = |stage: u8| -> ! {
        *a.error = ChildError {
            errno: *libc::__errno_location(),
            stage,
        };
        libc::_exit(127);
    };
    if libc::setpgid(0, 0) < 0 {
        fail(0);
    }
    // die with baton; if baton already died before prctl, give up now
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    if libc::getppid() != a.parent {
        libc::_exit(127);
    }
    // default dispositions and an empty mask (baton blocks signals for its signalfd,
    // and Rust ignores SIGPIPE: neither must leak into the app); only the signals that are
    // not at their default need the call
    // (raw rt_sigaction: glibc's wrapper refuses the real-time signals it reserves
    // for itself, 32 and 33, yet an ignored disposition of those is inherited too;
    // an all-zero kernel sigaction is SIG_DFL with no flags and an empty mask)
    let dfl = [0u64; 4];
    for sig in 1..=64 {
        if spec.reset_signals & (1 << (sig - 1)) != 0 {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                dfl.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            );
        }
    }
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) < 0 {
        fail(5);
    }
    // sockets: move high, then down to 3..; dup2 clears FD_CLOEXEC on the target
    for (i, fd) in a.fds.iter().enumerate() {
        let t = libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, a.high);
        if t < 0 {
            fail(1);
        }
        *a.tmp_fds.add(i) = t;
    }
    let trap_sock = match &a.trap {
        Some(t) => {
            let s = libc::fcntl(t.sock, libc::F_DUPFD_CLOEXEC, a.high);
            if s < 0 {
                fail(1);
            }
            s
        }
        None => -1,
    };
    let out = a
        .stdout
        .map(|fd| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, a.high));
    let err = a
        .stderr
        .map(|fd| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, a.high));
    if libc::dup2(spec.devnull.as_raw_fd(), 0) < 0 {
        fail(2);
    }
    if let Some(fd) = out {
        if fd < 0 || libc::dup2(fd, 1) < 0 {
            fail(2);
        }
    }
    if let Some(fd) = err {
        if fd < 0 || libc::dup2(fd, 2) < 0 {
            fail(2);
        }
    }
    for i in 0..n {
        if libc::dup2(*a.tmp_fds.add(i), 3 + i as RawFd) < 0 {
            fail(1);
        }
    }
    // Every other descriptor closes at exec: mark 3+n.. close-on-exec in one call.
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    let r = libc::syscall(
        libc::SYS_close_range,
        (3 + n) as libc::c_uint,
        libc::c_uint::MAX,
        CLOSE_RANGE_CLOEXEC,
    );
    if r < 0 {
        // kernel < 5.11: mark them one by one up to a bound
        for fd in (3 + n as RawFd)..65536 {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    if let Some(dir) = &spec.cwd {
        if libc::chdir(dir.as_ptr()) < 0 {
            fail(3);
        }
    }
    // The trap, once every descriptor is in place (the listener takes the lowest free number,
    // so it cannot clobber one, and is closed before exec): no_new_privs, the filter, and its
    // listener sent to baton on the socketpair's end parked above `high`. From here on bind()
    // and listen() trap; nothing below calls them.
    if let Some(t) = &a.trap {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
            fail(6);
        }
        let listener = libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            t.prog,
        );
        if listener < 0 {
            fail(7);
        }
        *t.fd_slot = listener as libc::c_int;
        if libc::sendmsg(trap_sock, t.msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) < 0 {
            fail(8);
        }
        libc::close(listener as libc::c_int);
    }
    if a.set_listen_pid {
        let mut digits = [0u8; 12];
        let len = write_decimal(&mut digits, libc::getpid() as u32);
        std::ptr::copy_nonoverlapping(digits.as_ptr(), a.listen_pid.add(11), len);
        *a.listen_pid.add(11 + len) = 0;
    }
    // last, so that everything baton waits for ran at baton's priority (lowering needs no
    // privilege; a failure leaves the worker at baton's priority, which is only a missed wish)
    if spec.priority.realtime {
        let param: libc::sched_param = std::mem::zeroed();
        libc::sched_setscheduler(0, libc::SCHED_OTHER, &param);
    }
    if let Some(nice) = spec.priority.nice {
        libc::setpriority(libc::PRIO_PROCESS, 0, nice);
    }
    libc::execve(spec.program.as_ptr(), a.argv, a.envp);
    fail(4);
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn decimal() {
        let mut b = [0u8; 12];
        let n = write_decimal(&mut b, 0);
        assert_eq!(&b[..n], b"0");
        let n = write_decimal(&mut b, 4194304);
        assert_eq!(&b[..n], b"4194304");
        let n = write_decimal(&mut b, u32::MAX);
        assert_eq!(&b[..n], b"4294967295");
    }

    fn spawn_error(program: &str, cwd: Option<&str>) -> String {
        let mut sp = Spawn::new(Path::new(program), &[program.to_string()]).unwrap();
        if let Some(dir) = cwd {
            sp.cwd(Path::new(dir)).unwrap();
        }
        spawn(&sp, &Child::new()).unwrap_err().to_string()
    }

    /// A child that fails before its exec reports the stage and errno through the memory it
    /// shares with baton.
    #[test]
    fn spawn_reports_where_the_child_failed() {
        // an executable file that is neither ELF nor a script: execve fails with ENOEXEC
        use std::os::unix::fs::PermissionsExt;
        let bad = std::env::temp_dir().join(format!("baton-noexec-{}", std::process::id()));
        std::fs::write(&bad, [0u8; 64]).unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = spawn_error(bad.to_str().unwrap(), None);
        std::fs::remove_file(&bad).unwrap();
        assert!(
            e.starts_with(&format!("execve {}: ", bad.display()))
                && e.contains("Exec format error"),
            "{e}"
        );
        // a new user's trial: `chdir: No such file or directory` named no directory
        let e = spawn_error("/bin/true", Some("/nonexistent-dir"));
        assert!(
            e.starts_with("chdir /nonexistent-dir: ") && e.contains("No such file"),
            "{e}"
        );
    }

    #[test]
    fn spawn_starts_a_child_with_extra_env_and_fds() {
        let mut sp = Spawn::new(
            Path::new("/bin/sh"),
            &[
                "sh".into(),
                "-c".into(),
                r#"[ "$A$B" = 12 ] && [ "$LISTEN_PID" = $$ ] && [ -e /proc/self/fd/3 ] && [ ! -e /proc/self/fd/4 ]"#.into(),
            ],
        )
        .unwrap();
        sp.env(OsStr::new("A"), OsStr::new("1")).unwrap();
        let (r, _w) = nix::unistd::pipe().unwrap();
        let mut child = Child::new();
        child.env(OsStr::new("B"), OsStr::new("2")).unwrap();
        child.pass_fds(&[r.as_fd()], true);
        let pid = spawn(&sp, &child).unwrap();
        let mut status = 0;
        // SAFETY: waits for our own child; writes a valid local.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{status:#x}"
        );
    }

    /// Where the kernel refuses the filter, the spawn fails with the reason and no app runs
    /// untrapped. A filter with a listener can only be installed once in a process's chain:
    /// a thread that already has one (as in a container whose runtime traps calls the same way)
    /// makes its children's seccomp() fail with EBUSY.
    #[test]
    fn a_refused_filter_fails_the_spawn() {
        let mut sp = Spawn::new(Path::new("/bin/true"), &["true".into()]).unwrap();
        sp.trap_bind(true).unwrap();
        // a recipe that traps is refused by `spawn`, which would lose its listener
        let e = spawn(&sp, &Child::new()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        // the filter (and no_new_privs) stay on this thread only: no TSYNC
        let e = std::thread::spawn(move || {
            let allow = [libc::sock_filter {
                code: (libc::BPF_RET | libc::BPF_K) as u16,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ALLOW,
            }];
            let prog = libc::sock_fprog {
                len: 1,
                filter: allow.as_ptr().cast_mut(),
            };
            // SAFETY: prctl and seccomp take plain integers and a pointer to `prog`, which
            // points to `allow`; both live locals the kernel only reads.
            let l = unsafe {
                assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                    &prog,
                )
            };
            assert!(l >= 0, "{}", io::Error::last_os_error());
            // SAFETY: the kernel just returned this new descriptor to us; nobody else owns it.
            // (It must stay open: the kernel forgets a filter's listener once it is closed.)
            let _listener = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(l as i32) };
            spawn_child(&sp, &Child::new()).unwrap_err()
        })
        .join()
        .unwrap();
        assert!(e.to_string().starts_with("seccomp: "), "{e}");
        assert_eq!(e.kind(), io::ErrorKind::ResourceBusy, "{e}");
    }

    /// The child's end of the listener's socketpair survives the moves of the passed
    /// descriptors to 3.., however many there are (64 here: baton's own descriptors, the
    /// socketpair among them, are all below that).
    #[test]
    fn a_trapping_child_with_many_descriptors_sends_its_listener() {
        let mut sp = Spawn::new(
            Path::new("/bin/sh"),
            &[
                "sh".into(),
                "-c".into(),
                "[ -e /proc/self/fd/66 ] && [ ! -e /proc/self/fd/67 ]".into(),
            ],
        )
        .unwrap();
        sp.trap_bind(true).unwrap();
        let (r, _w) = nix::unistd::pipe().unwrap();
        let fds = vec![r.as_fd(); 64];
        let mut child = Child::new();
        child.pass_fds(&fds, false);
        let s = spawn_child(&sp, &child).unwrap();
        assert!(s.listener.is_some());
        let mut status = 0;
        // SAFETY: waits for our own child; writes a valid local.
        assert_eq!(unsafe { libc::waitpid(s.pid, &mut status, 0) }, s.pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{status:#x}"
        );
    }

    #[test]
    fn signals_to_reset() {
        let set = non_default_signals();
        let has = |sig: i32| set & (1 << (sig - 1)) != 0;
        // the Rust runtime ignores SIGPIPE (and catches SIGSEGV for stack overflows)
        assert!(has(libc::SIGPIPE) && has(libc::SIGSEGV), "{set:#x}");
        assert!(!has(libc::SIGTERM) && !has(libc::SIGCHLD), "{set:#x}");
    }
}
