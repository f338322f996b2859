//! The bind/listen trap of `sys` (issue 15), with real processes and no supervisor: a recipe
//! with `trap_bind`, its listener, and the test as the one who answers, handing over its own
//! listening socket for a bind on its port and letting every other bind through; and with
//! `trap_unlink`, unlink and unlinkat in the x86-64 and i386 ABIs.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use baton::sys::{self, Notification, SeccompListener, SockAddr, Syscall};

/// Binds 127.0.0.1 on each port of its arguments, listens with a backlog of 5, then accepts one
/// connection on each socket in turn and answers "PID PORT" (the port the socket is bound to).
/// A SIGUSR1 interrupts a trapped bind, which it retries.
const PY_SERVER: &str = r#"
import os, signal, socket, sys
signal.signal(signal.SIGUSR1, lambda *a: None)
socks = []
for p in sys.argv[1:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    while True:
        try:
            s.bind(("127.0.0.1", int(p)))
            break
        except InterruptedError:
            pass
    s.listen(5)
    socks.append(s)
for s in socks:
    c, _ = s.accept()
    c.sendall(f"{os.getpid()} {s.getsockname()[1]}".encode())
    c.close()
"#;

/// The real python3 (not a pyenv shim: a shell script in between would be trapped too, but is
/// slow to start).
fn python() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

fn trapped(program: &Path, argv: &[&str]) -> (sys::Pid, SeccompListener) {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let mut sp = sys::Spawn::new(program, &argv).unwrap();
    sp.trap_bind(true).unwrap();
    let s = sys::spawn_child(&sp, &sys::Child::new()).unwrap();
    (
        s.pid,
        s.listener.expect("a trapping recipe returns its listener"),
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait for our own child `pid` (only it: the other tests' children are theirs); whether it
/// exited 0.
fn wait_exit(pid: sys::Pid) -> bool {
    use nix::sys::wait::{waitpid, WaitStatus};
    matches!(
        waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap(),
        WaitStatus::Exited(_, 0)
    )
}

/// The backlog of the TCP listener on 127.0.0.1:`port` (`ss`'s Send-Q of a listening socket).
fn backlog(port: u16) -> u32 {
    let out = Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no listener on {port}"));
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// The next notification within `timeout`, or `None` (also when every trapped process is gone).
fn next(l: &mut SeccompListener, timeout: Duration) -> Option<Notification> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(n) = l.recv().unwrap() {
            return Some(n);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        let mut set = sys::PollSet::new();
        let i = set.add(l.as_fd());
        set.wait(Some(deadline - now)).unwrap();
        if set.hung_up(i) && l.recv().unwrap().is_none() {
            return None;
        }
    }
}

/// What the answering side saw of one notification, and how it answered.
#[derive(Debug)]
struct Seen {
    n: Notification,
    addr: Option<SockAddr>,
    /// The app's socket's file status flags, read before a hand-over.
    flags: Option<i32>,
    handed: bool,
}

/// Answer `l`'s notifications until every trapped process is gone (or 30 s): a bind whose port
/// is `held`'s gets `held` (in the app's blocking mode and close-on-exec flag), a listen on a
/// handed descriptor gets 0, everything else continues.
fn serve(mut l: SeccompListener, held: OwnedFd, port: u16) -> JoinHandle<Vec<Seen>> {
    std::thread::spawn(move || {
        let mut handed = HashSet::new();
        let mut seen = Vec::new();
        while let Some(n) = next(&mut l, Duration::from_secs(30)) {
            let mut s = Seen {
                n,
                addr: None,
                flags: None,
                handed: false,
            };
            let answered = match n.syscall {
                Syscall::Bind { fd, .. } => {
                    s.addr = l.read_sockaddr(&n).ok();
                    if s.addr.as_ref().and_then(SockAddr::port) == Some(port) {
                        let flags = sys::fd_flags(n.pid, fd).unwrap();
                        s.flags = Some(flags);
                        sys::set_nonblocking(held.as_fd(), flags & libc::O_NONBLOCK != 0).unwrap();
                        s.handed = true;
                        handed.insert((n.pid, fd));
                        l.hand_over(n.id, fd, held.as_fd(), flags & libc::O_CLOEXEC != 0)
                    } else {
                        l.respond_continue(n.id)
                    }
                }
                Syscall::Listen { fd, .. } if handed.iter().any(|&(_, f)| f == fd) => {
                    s.handed = true;
                    l.respond_value(n.id, 0)
                }
                _ => l.respond_continue(n.id),
            };
            answered.unwrap();
            seen.push(s);
        }
        seen
    })
}

/// Connect to `port` and read what the server answers (`request` first, if any).
fn ask(port: u16, request: &[u8]) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(request).unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out)
        .unwrap_or_else(|e| panic!("reading from port {port}: {e}"));
    out
}

/// Without the trap, the app's bind of the port the test holds fails; with it, the app's bind
/// is answered with the test's socket, its listen is answered 0 without running (the backlog
/// stays the test's), and the app accepts the test's connection on the test's socket.
#[test]
fn a_bind_on_the_held_port_gets_the_held_socket() {
    let ours = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = ours.local_addr().unwrap().port();
    let p = port.to_string();

    // the control: the same app without the trap cannot bind
    let out = Command::new(python())
        .args(["-c", PY_SERVER, &p])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Address already in use"),
        "{err}"
    );

    let (pid, l) = trapped(python(), &["python3", "-c", PY_SERVER, &p]);
    let server = serve(l, OwnedFd::from(ours.try_clone().unwrap()), port);
    assert_eq!(ask(port, b""), format!("{pid} {port}"));
    assert!(wait_exit(pid));
    let seen = server.join().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let Syscall::Bind { fd, addr_len, .. } = seen[0].n.syscall else {
        panic!("{seen:?}")
    };
    assert_eq!(seen[0].n.pid, pid);
    assert_eq!(addr_len, 16);
    assert_eq!(
        seen[0].addr,
        Some(SockAddr::Inet(format!("127.0.0.1:{port}").parse().unwrap()))
    );
    assert!(seen[0].handed);
    // Python's socket: blocking, not inheritable (close-on-exec)
    let flags = seen[0].flags.unwrap();
    assert!(
        flags & libc::O_NONBLOCK == 0 && flags & libc::O_CLOEXEC != 0,
        "{flags:o}"
    );
    assert_eq!(
        seen[1].n.syscall,
        Syscall::Listen { fd, backlog: 5 },
        "{seen:?}"
    );
    assert!(seen[1].handed);
    // the test's socket still listens, with its own backlog: std's 128, not the app's 5
    assert_eq!(backlog(port), 128);
}

/// A bind of a port the test does not hold continues: the app gets that port itself, next to
/// the socket it got for the held one.
#[test]
fn a_bind_on_another_port_continues() {
    let ours = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = ours.local_addr().unwrap().port();
    let other = free_port();
    let (pid, l) = trapped(
        python(),
        &[
            "python3",
            "-c",
            PY_SERVER,
            &port.to_string(),
            &other.to_string(),
        ],
    );
    let server = serve(l, OwnedFd::from(ours.try_clone().unwrap()), port);
    assert_eq!(ask(port, b""), format!("{pid} {port}"));
    assert_eq!(ask(other, b""), format!("{pid} {other}"));
    assert!(wait_exit(pid));
    let seen = server.join().unwrap();
    let summary: Vec<(bool, Option<u16>)> = seen
        .iter()
        .map(|s| (s.handed, s.addr.as_ref().and_then(SockAddr::port)))
        .collect();
    // bind (handed), listen (answered), bind (continued), listen (continued)
    assert_eq!(
        summary,
        [
            (true, Some(port)),
            (true, None),
            (false, Some(other)),
            (false, None)
        ],
        "{seen:?}"
    );
}

/// The listener exists only in baton: the app has 0, 1 and 2, runs under a filter (Seccomp: 2)
/// with no_new_privs, and an empty listener is not a reason to block.
#[test]
fn the_listener_does_not_reach_the_app() {
    let (pid, mut l) = trapped(Path::new("/bin/sleep"), &["sleep", "30"]);
    // what a listener looks like in /proc
    let ours = std::fs::read_link(format!("/proc/self/fd/{}", l.as_fd().as_raw_fd())).unwrap();
    assert_eq!(ours.to_str(), Some("anon_inode:seccomp notify"));
    // the exec is complete (its close-on-exec descriptors closed, which follows the change of
    // its comm) once sleep sleeps: clock_nanosleep (230) or nanosleep (35) on x86-64
    let deadline = Instant::now() + Duration::from_secs(5);
    let sleeping = || {
        let call = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap();
        call.starts_with("230 ") || call.starts_with("35 ")
    };
    while !sleeping() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut fds = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let e = e.unwrap();
        let target = std::fs::read_link(e.path()).unwrap();
        assert!(!target.to_string_lossy().contains("seccomp"), "{target:?}");
        fds.push((
            e.file_name().to_string_lossy().parse::<i32>().unwrap(),
            target,
        ));
    }
    fds.sort();
    let numbers: Vec<i32> = fds.iter().map(|f| f.0).collect();
    assert_eq!(numbers, [0, 1, 2], "{fds:?}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("\nSeccomp:\t2\n"), "{status}");
    assert!(status.contains("\nNoNewPrivs:\t1\n"), "{status}");
    let t = Instant::now();
    assert_eq!(l.recv().unwrap(), None);
    assert!(t.elapsed() < Duration::from_millis(100));
    sys::kill(pid, libc::SIGKILL).unwrap();
    wait_exit(pid);
}

/// A notification whose thread was interrupted (the kernel restarts its bind as a new
/// notification; its memory still holds the address) or died reads as ENOENT, never as what
/// its memory holds, and cannot be answered.
#[test]
fn a_stale_notification_reads_nothing() {
    let port = free_port();
    let (pid, mut l) = trapped(python(), &["python3", "-c", PY_SERVER, &port.to_string()]);
    let first = next(&mut l, Duration::from_secs(10)).expect("bind");
    assert!(matches!(first.syscall, Syscall::Bind { .. }), "{first:?}");
    assert_eq!(l.read_sockaddr(&first).unwrap().port(), Some(port));
    sys::kill(pid, libc::SIGUSR1).unwrap();
    let again = next(&mut l, Duration::from_secs(10)).expect("the bind again");
    assert_ne!(again.id, first.id);
    assert_eq!(again.syscall, first.syscall, "same fd, same buffer");
    // the memory is there (the new notification reads it), the old id is not
    assert_eq!(l.read_sockaddr(&again).unwrap().port(), Some(port));
    let e = l.read_sockaddr(&first).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
    assert_eq!(
        l.respond_continue(first.id).unwrap_err().raw_os_error(),
        Some(libc::ENOENT)
    );
    // dead
    sys::kill(pid, libc::SIGKILL).unwrap();
    wait_exit(pid);
    let e = l.read_sockaddr(&again).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
    assert!(l.respond_value(again.id, 0).is_err());
    assert_eq!(next(&mut l, Duration::from_millis(200)), None);
}

/// Node 20's `server.listen(PORT)` binds `[::]:PORT` on a non-blocking socket and serves the
/// test's 127.0.0.1 socket once it is handed over (made non-blocking like the app's).
#[test]
fn node_serves_the_handed_socket() {
    let node = which("node").expect("node is needed: tests/setup.sh installs it (nodejs)");
    let ours = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = ours.local_addr().unwrap().port();
    let js = format!(
        "require('http').createServer((q, s) => {{ s.end(String(process.pid)); process.exit(0); }}).listen({port})"
    );
    let (pid, l) = trapped(&node, &["node", "-e", &js]);
    let server = serve(l, OwnedFd::from(ours.try_clone().unwrap()), port);
    let answer = ask(port, b"GET / HTTP/1.0\r\n\r\n");
    assert!(answer.ends_with(&format!("\r\n\r\n{pid}")), "{answer}");
    assert!(wait_exit(pid));
    let seen = server.join().unwrap();
    let bind = seen.iter().find(|s| s.handed).expect("a handed bind");
    match &bind.addr {
        Some(SockAddr::Inet6(a)) => assert!(a.ip().is_unspecified() && a.port() == port),
        other => panic!("{other:?}"),
    }
    assert!(bind.flags.unwrap() & libc::O_NONBLOCK != 0);
    assert!(seen
        .iter()
        .any(|s| s.handed && matches!(s.n.syscall, Syscall::Listen { .. })));
}

/// A static Go 1.19 `http.ListenAndServe(":PORT")`: its IPv6 probes (`[::]:0`) continue, its
/// `[::]:PORT` gets the test's socket, non-blocking as Go made its own.
#[test]
fn static_go_serves_the_handed_socket() {
    let go = which("go").expect("go is needed: tests/setup.sh installs it (golang-go)");
    let dir = std::env::temp_dir().join(format!("baton-seccomp-go-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("main.go"),
        r#"package main

import (
	"fmt"
	"net/http"
	"os"
	"time"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, os.Getpid())
		go func() { time.Sleep(200 * time.Millisecond); os.Exit(0) }()
	})
	panic(http.ListenAndServe(":"+os.Args[1], nil))
}
"#,
    )
    .unwrap();
    std::fs::write(dir.join("go.mod"), "module trapped\n\ngo 1.19\n").unwrap();
    let out = Command::new(&go)
        .args(["build", "-trimpath", "-o", "server", "."])
        .current_dir(&dir)
        .env("CGO_ENABLED", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = ours.local_addr().unwrap().port();
    let (pid, l) = trapped(&dir.join("server"), &["server", &port.to_string()]);
    let server = serve(l, OwnedFd::from(ours.try_clone().unwrap()), port);
    let answer = ask(port, b"GET / HTTP/1.0\r\n\r\n");
    assert!(answer.ends_with(&format!("\r\n\r\n{pid}")), "{answer}");
    wait_exit(pid);
    let seen = server.join().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let binds: Vec<(bool, Option<u16>)> = seen
        .iter()
        .filter(|s| matches!(s.n.syscall, Syscall::Bind { .. }))
        .map(|s| (s.handed, s.addr.as_ref().and_then(SockAddr::port)))
        .collect();
    assert_eq!(binds.last(), Some(&(true, Some(port))), "{seen:?}");
    assert!(
        binds[..binds.len() - 1]
            .iter()
            .all(|&b| b == (false, Some(0))),
        "{seen:?}"
    );
    let handed = seen.iter().find(|s| s.handed).unwrap();
    assert!(handed.flags.unwrap() & libc::O_NONBLOCK != 0);
}

/// A 64-bit process that makes its socket calls through `int 0x80` (the i386 ABI) with
/// socketcall(2), as a 32-bit glibc does: its bind and listen trap too, are decoded from the
/// arguments in its memory, and it serves the handed socket. (gcc builds it static, without a
/// libc, so that its buffers sit below 4 GiB where 32-bit pointers reach.)
#[test]
fn an_i386_socketcall_bind_is_trapped_too() {
    let gcc =
        which("gcc").expect("gcc is needed: the Rust toolchain's linker needs it (Debian's gcc)");
    let ours = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = ours.local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("baton-seccomp-i386-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("s.c"), I386_SERVER).unwrap();
    let out = Command::new(&gcc)
        .args([
            "-O1",
            "-static",
            "-no-pie",
            "-nostdlib",
            "-fno-stack-protector",
        ])
        .arg(format!("-DPORT={port}"))
        .args(["-o", "s", "s.c"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (pid, l) = trapped(&dir.join("s"), &["s"]);
    let server = serve(l, OwnedFd::from(ours.try_clone().unwrap()), port);
    assert_eq!(ask(port, b""), "i386");
    assert!(
        wait_exit(pid),
        "the trapped bind or listen did not return 0"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let seen = server.join().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let Syscall::Bind { fd, addr_len, .. } = seen[0].n.syscall else {
        panic!("{seen:?}")
    };
    assert_eq!(addr_len, 16);
    assert_eq!(
        seen[0].addr,
        Some(SockAddr::Inet(format!("127.0.0.1:{port}").parse().unwrap()))
    );
    assert_eq!(seen[1].n.syscall, Syscall::Listen { fd, backlog: 5 });
    assert!(seen[0].handed && seen[1].handed);
}

/// socket, bind 127.0.0.1:PORT, listen 5, accept, write "i386", each through `int 0x80` and
/// socketcall; exits 10/11/12 when bind/listen/accept fail.
const I386_SERVER: &str = r#"
static unsigned int args[3];
static unsigned char addr[16] = {2, 0, PORT >> 8, PORT & 0xff, 127, 0, 0, 1};
static long sys32(long nr, long a, long b, long c) {
    long r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
    return r;
}
void _start(void) {
    args[0] = 2; args[1] = 1; args[2] = 0;
    long fd = sys32(102, 1, (long)args, 0);
    args[0] = fd; args[1] = (unsigned int)(long)addr; args[2] = 16;
    if (sys32(102, 2, (long)args, 0) != 0) sys32(1, 10, 0, 0);
    args[0] = fd; args[1] = 5;
    if (sys32(102, 4, (long)args, 0) != 0) sys32(1, 11, 0, 0);
    args[0] = fd; args[1] = 0; args[2] = 0;
    long c = sys32(102, 5, (long)args, 0);
    if (c < 0) sys32(1, 12, 0, 0);
    sys32(4, c, (long)"i386", 4);
    sys32(1, 0, 0, 0);
}
"#;

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

/// A static program (no libc) that removes five names of its working directory: `a` with
/// x86-64 unlink, `b` with x86-64 unlinkat(AT_FDCWD), `c` with i386 unlink and `d` with i386
/// unlinkat(AT_FDCWD) (both through `int 0x80`), and the directory `e` with i386 unlinkat and
/// AT_REMOVEDIR. Its exit code has a bit set for each call that did not return 0.
const UNLINKER: &str = r#"
static long sys64(long nr, long a, long b, long c) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}
static long sys32(long nr, long a, long b, long c) {
    long r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
    return r;
}
void _start(void) {
    long bad = 0;
    if (sys64(87, (long)"a", 0, 0) != 0) bad |= 1;
    if (sys64(263, -100, (long)"b", 0) != 0) bad |= 2;
    if (sys32(10, (long)"c", 0, 0) != 0) bad |= 4;
    if (sys32(301, -100, (long)"d", 0) != 0) bad |= 8;
    if (sys32(301, -100, (long)"e", 0x200) != 0) bad |= 16;
    sys64(231, bad, 0, 0);
}
"#;

/// Run [`UNLINKER`] in a fresh directory holding `a`..`d` and the directory `e`, trapped with
/// or without `trap_unlink`, answering an unlink of `a` or `c` with 0 (not run) and continuing
/// everything else: (its exit code, each unlink notification with the path read, the names
/// left).
fn run_unlinker(trap_unlink: bool) -> (i32, Vec<(Syscall, String)>, Vec<String>) {
    use nix::sys::wait::{waitpid, WaitStatus};
    let gcc =
        which("gcc").expect("gcc is needed: the Rust toolchain's linker needs it (Debian's gcc)");
    let dir = std::env::temp_dir().join(format!(
        "baton-seccomp-unlink-{}-{trap_unlink}",
        std::process::id()
    ));
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(dir.join("u.c"), UNLINKER).unwrap();
    let out = Command::new(&gcc)
        .args([
            "-O1",
            "-static",
            "-no-pie",
            "-nostdlib",
            "-fno-stack-protector",
        ])
        .args(["-o", "u", "u.c"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["a", "b", "c", "d"] {
        std::fs::write(work.join(f), "x").unwrap();
    }
    std::fs::create_dir(work.join("e")).unwrap();
    let mut sp = sys::Spawn::new(&dir.join("u"), &["u".to_string()]).unwrap();
    sp.trap_bind(true).unwrap();
    sp.trap_unlink(trap_unlink);
    sp.cwd(&work).unwrap();
    let s = sys::spawn_child(&sp, &sys::Child::new()).unwrap();
    let mut l = s.listener.expect("a trapping recipe returns its listener");
    let server = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while let Some(n) = next(&mut l, Duration::from_secs(30)) {
            let path = l.read_path(&n).map(|p| p.display().to_string());
            let answered = match path.as_deref() {
                Ok("a") | Ok("c") => l.respond_value(n.id, 0),
                _ => l.respond_continue(n.id),
            };
            answered.unwrap();
            seen.push((n.syscall, path.unwrap_or_else(|e| e.to_string())));
        }
        seen
    });
    let code = match waitpid(nix::unistd::Pid::from_raw(s.pid), None).unwrap() {
        WaitStatus::Exited(_, code) => code,
        other => panic!("{other:?}"),
    };
    let seen = server.join().unwrap();
    let mut left: Vec<String> = std::fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    std::fs::remove_dir_all(&dir).unwrap();
    (code, seen, left)
}

/// With `trap_unlink`, unlink and unlinkat trap in the x86-64 and i386 ABIs, are decoded
/// (directory descriptor, path, flags), and an answer of 0 leaves the file; a continued one
/// (AT_REMOVEDIR included) runs. Without it, not one unlink traps and every one runs.
#[test]
fn unlink_and_unlinkat_trap_in_both_abis_only_with_trap_unlink() {
    let (code, seen, left) = run_unlinker(true);
    assert_eq!(code, 0, "{seen:?}");
    let unlink = |flags: i32| (libc::AT_FDCWD, flags);
    let got: Vec<((i32, i32), String)> = seen
        .iter()
        .map(|(s, p)| match *s {
            Syscall::Unlink { dirfd, flags, .. } => ((dirfd, flags), p.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (unlink(0), "a".to_string()),
            (unlink(0), "b".to_string()),
            (unlink(0), "c".to_string()),
            (unlink(0), "d".to_string()),
            (unlink(libc::AT_REMOVEDIR), "e".to_string()),
        ]
    );
    assert_eq!(left, ["a", "c"], "the kept ones stay, the rest are gone");

    let (code, seen, left) = run_unlinker(false);
    assert_eq!(code, 0);
    assert!(seen.is_empty(), "{seen:?}");
    assert!(left.is_empty(), "{left:?}");
}
