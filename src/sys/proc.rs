//! Readers of /proc: a process's parent and group (/proc/PID/stat), and what the `accepting`
//! readiness check looks at: a process's children and threads, its descriptors and their
//! inodes, the epoll sets in fdinfo, the system call a thread is blocked in, and its memory
//! (/proc/PID/mem); and what `baton verify` reports: a process's descriptors with their
//! targets, its resident memory and command line, and the host's available memory.
//!
//! Must never change a process (read only) and never call `unsafe` code: /proc is read with
//! std, and the lint below keeps it so. A process or thread that vanishes between two reads is
//! an error or is skipped, never a panic.

#![forbid(unsafe_code)]

use std::io;
use std::os::fd::{BorrowedFd, RawFd};

use super::Pid;

/// The parent pid and process group of `pid`, from /proc/PID/stat.
pub fn proc_parent_and_group(pid: Pid) -> io::Result<(Pid, Pid)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // the command name is in parentheses and may contain spaces: parse after the last ')'
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad /proc stat"))?;
    let mut it = rest.split_whitespace();
    let _state = it.next();
    let ppid = it.next().and_then(|s| s.parse().ok());
    let pgrp = it.next().and_then(|s| s.parse().ok());
    match (ppid, pgrp) {
        (Some(p), Some(g)) => Ok((p, g)),
        _ => Err(io::Error::new(io::ErrorKind::InvalidData, "bad /proc stat")),
    }
}

/// Whether `pid` exists and is not a zombie (state `Z` or `X` in /proc/PID/stat).
pub fn proc_alive(pid: Pid) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}

// ------------------------------------------------------------------------------------------
// What a process waits for (/proc): the `accepting` readiness check

/// The inode number of an open file (a socket's identity across processes and `dup`s).
pub fn inode(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let st = nix::sys::stat::fstat(fd).map_err(io::Error::from)?;
    Ok(st.st_ino)
}

/// The children of every thread of `pid` (/proc/PID/task/TID/children).
pub fn proc_children(pid: Pid) -> io::Result<Vec<Pid>> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let task = task?.file_name();
        let path = format!("/proc/{pid}/task/{}/children", task.to_string_lossy());
        // a thread that has just exited has no file any more
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<Pid>().ok()),
        );
    }
    Ok(out)
}

/// The thread ids of `pid`.
pub fn proc_tasks(pid: Pid) -> io::Result<Vec<Pid>> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        if let Ok(tid) = task?.file_name().to_string_lossy().parse() {
            out.push(tid);
        }
    }
    Ok(out)
}

/// What one of a process's descriptors is, as far as the `accepting` check cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdKind {
    /// A socket, with its inode.
    Socket(u64),
    /// An epoll instance.
    Epoll,
    Other,
}

/// The open descriptors of `pid` (/proc/PID/fd).
pub fn proc_fds(pid: Pid) -> io::Result<Vec<(RawFd, FdKind)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let e = e?;
        let Ok(fd) = e.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        // closed meanwhile: skip
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        out.push((fd, fd_kind(&target.to_string_lossy())));
    }
    Ok(out)
}

/// What descriptor `fd` of process (or thread) `pid` is: one readlink of /proc/PID/fd/FD.
pub fn proc_fd_kind(pid: Pid, fd: RawFd) -> io::Result<FdKind> {
    let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))?;
    Ok(fd_kind(&target.to_string_lossy()))
}

/// The open descriptors of `pid` with what each points at (`socket:[123]`, a path, …), in
/// descriptor order.
pub fn proc_fd_targets(pid: Pid) -> io::Result<Vec<(RawFd, String)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let e = e?;
        let Ok(fd) = e.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        if let Ok(target) = std::fs::read_link(e.path()) {
            out.push((fd, target.to_string_lossy().into_owned()));
        }
    }
    out.sort();
    Ok(out)
}

/// The resident memory of `pid`, KiB (`VmRSS:` of /proc/PID/status; 0 for a zombie).
pub fn proc_rss_kib(pid: Pid) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(kib_field(&text, "VmRSS:").unwrap_or(0))
}

/// The host's available memory, KiB (`MemAvailable:` of /proc/meminfo).
pub fn mem_available_kib() -> io::Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    kib_field(&text, "MemAvailable:")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no MemAvailable"))
}

fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The command line of `pid`, its arguments joined by spaces.
pub fn proc_cmdline(pid: Pid) -> io::Result<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Ok(args.join(" "))
}

/// The process (thread group) a thread belongs to: `Tgid:` of /proc/TID/status.
pub fn proc_tgid(tid: Pid) -> io::Result<Pid> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Tgid in status"))
}

/// `socket:[1234]` → a socket with inode 1234; `anon_inode:[eventpoll]` → epoll.
pub fn fd_kind(link: &str) -> FdKind {
    if let Some(ino) = link
        .strip_prefix("socket:[")
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
    {
        return FdKind::Socket(ino);
    }
    if link == "anon_inode:[eventpoll]" {
        return FdKind::Epoll;
    }
    FdKind::Other
}

/// The files an epoll instance (descriptor `fd` of `pid`) watches: (events mask, inode) from
/// the `tfd:` lines of /proc/PID/fdinfo/FD.
pub fn proc_epoll_targets(pid: Pid, fd: RawFd) -> io::Result<Vec<(u32, u64)>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))?;
    Ok(parse_epoll_fdinfo(&text))
}

/// `tfd:        3 events:       19 data: 3  pos:0 ino:15b5d sdev:9` → (0x19, 0x15b5d).
pub fn parse_epoll_fdinfo(text: &str) -> Vec<(u32, u64)> {
    let field = |line: &str, key: &str| -> Option<String> {
        let at = line.find(key)? + key.len();
        line[at..].split_whitespace().next().map(str::to_string)
    };
    text.lines()
        .filter(|l| l.starts_with("tfd:"))
        .filter_map(|l| {
            let events = u32::from_str_radix(&field(l, "events:")?, 16).ok()?;
            let ino = u64::from_str_radix(&field(l, "ino:")?, 16).ok()?;
            Some((events, ino))
        })
        .collect()
}

/// The system call thread `tid` of `pid` is blocked in, with its six arguments
/// (/proc/PID/task/TID/syscall); `None` when it is running or not in a system call.
pub fn proc_syscall(pid: Pid, tid: Pid) -> io::Result<Option<(i64, [u64; 6])>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall"))?;
    Ok(parse_syscall(&text))
}

/// `288 0x3 0x0 0x0 0x80800 0x0 0x0 0x7ffd… 0x7f…` → (288, [3, 0, 0, 0x80800, 0, 0]).
pub fn parse_syscall(text: &str) -> Option<(i64, [u64; 6])> {
    let mut it = text.split_whitespace();
    let nr: i64 = it.next()?.parse().ok()?;
    if nr < 0 {
        return None;
    }
    let mut args = [0u64; 6];
    for a in args.iter_mut() {
        *a = u64::from_str_radix(it.next()?.trim_start_matches("0x"), 16).ok()?;
    }
    Some((nr, args))
}

/// System calls in which a thread waits for a listening socket to become readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCall {
    /// accept/accept4 on the descriptor (argument 0).
    Accept,
    /// poll/ppoll on an array of `struct pollfd` (arguments 0 and 1).
    Poll,
    /// select/pselect6 on an `fd_set` of readable descriptors (arguments 0 and 1).
    Select,
}

/// Which [`WaitCall`] a system call number of this architecture is, if any.
pub fn wait_call(nr: i64) -> Option<WaitCall> {
    #[cfg(target_arch = "x86_64")]
    {
        if nr == libc::SYS_poll {
            return Some(WaitCall::Poll);
        }
        if nr == libc::SYS_select {
            return Some(WaitCall::Select);
        }
        if nr == libc::SYS_accept {
            return Some(WaitCall::Accept);
        }
    }
    if nr == libc::SYS_accept4 {
        Some(WaitCall::Accept)
    } else if nr == libc::SYS_ppoll {
        Some(WaitCall::Poll)
    } else if nr == libc::SYS_pselect6 {
        Some(WaitCall::Select)
    } else {
        None
    }
}

/// `len` bytes of `pid`'s memory at `addr` (/proc/PID/mem; readable by baton for its own
/// descendants). A short read (unmapped memory) is an error.
pub fn read_process_memory(pid: Pid, addr: u64, len: usize) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(format!("/proc/{pid}/mem"))?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, addr)?;
    Ok(buf)
}

/// The NUL-terminated string at `addr` in `pid`'s memory, without its NUL: at most `max` bytes
/// are read, the NUL included, page by page (a string that ends just before an unmapped page
/// is read whole; the first unreadable page ends the read with an error). No NUL within `max`
/// bytes is InvalidInput.
pub fn read_process_string(pid: Pid, addr: u64, max: usize) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    /// The smallest page size: a read that stops at its boundaries never crosses into an
    /// unmapped page of any larger size either.
    const PAGE: u64 = 4096;
    let f = std::fs::File::open(format!("/proc/{pid}/mem"))?;
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < max {
        let len = ((PAGE - at % PAGE) as usize).min(max - out.len());
        let mut chunk = vec![0u8; len];
        f.read_exact_at(&mut chunk, at)?;
        if let Some(end) = chunk.iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..end]);
            return Ok(out);
        }
        out.extend_from_slice(&chunk);
        at = at
            .checked_add(len as u64)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EFAULT))?;
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("no NUL within {max} bytes"),
    ))
}

/// `path` as the kernel resolves it for process `pid` in a `*at()` call with `dirfd`
/// (`AT_FDCWD`: the process's working directory; ignored for an absolute path), made absolute,
/// with its directory canonical (symlinks and `..` resolved, through /proc/PID/cwd or
/// /proc/PID/fd/DIRFD) and its last component as written (unlink and bind act on that name,
/// they do not follow it). InvalidInput for a path whose last component is not a name (empty,
/// `.`, `..`, or a trailing `/`).
pub fn resolve_at(
    pid: Pid,
    dirfd: RawFd,
    path: &std::path::Path,
) -> io::Result<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;
    let bytes = path.as_os_str().as_bytes();
    let last = bytes.rsplit(|&b| b == b'/').next().unwrap_or_default();
    let name = match last {
        b"" | b"." | b".." => None,
        _ => path.file_name(),
    }
    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a name"))?;
    let parent = path.parent().unwrap_or(Path::new(""));
    let dir = if path.is_absolute() {
        parent.to_path_buf()
    } else if dirfd == libc::AT_FDCWD {
        Path::new(&format!("/proc/{pid}/cwd")).join(parent)
    } else if dirfd >= 0 {
        Path::new(&format!("/proc/{pid}/fd/{dirfd}")).join(parent)
    } else {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    };
    Ok(std::fs::canonicalize(dir)?.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_is_read_up_to_its_nul_and_never_past_max() {
        let me = std::process::id() as Pid;
        let text = b"/run/app.sock\0junk".to_vec();
        let addr = text.as_ptr() as u64;
        assert_eq!(
            read_process_string(me, addr, 4096).unwrap(),
            b"/run/app.sock"
        );
        assert_eq!(read_process_string(me, addr, 14).unwrap(), b"/run/app.sock");
        assert!(
            read_process_string(me, addr, 13).is_err(),
            "no NUL within 13 bytes"
        );
        // a string that crosses a page boundary
        let mut s = vec![b'a'; 8192];
        // 3 bytes before a page boundary
        let start = (4093 + 4096 - s.as_ptr() as usize % 4096) % 4096;
        s[start + 10] = 0;
        let got = read_process_string(me, s.as_ptr() as u64 + start as u64, 4096).unwrap();
        assert_eq!(got, vec![b'a'; 10]);
        assert!(read_process_string(me, 8, 16).is_err(), "unmapped");
    }

    #[test]
    fn paths_resolve_against_the_process_cwd_or_a_directory_descriptor() {
        use std::os::fd::AsRawFd;
        use std::path::Path;
        let me = std::process::id() as Pid;
        let cwd = std::fs::canonicalize(std::env::current_dir().unwrap()).unwrap();
        assert_eq!(
            resolve_at(me, libc::AT_FDCWD, Path::new("app.sock")).unwrap(),
            cwd.join("app.sock")
        );
        assert_eq!(
            resolve_at(me, 12345, Path::new("/tmp/../tmp/./x.sock")).unwrap(),
            std::fs::canonicalize("/tmp").unwrap().join("x.sock")
        );
        let dir = std::fs::File::open("/tmp").unwrap();
        assert_eq!(
            resolve_at(me, dir.as_raw_fd(), Path::new("x.sock")).unwrap(),
            std::fs::canonicalize("/tmp").unwrap().join("x.sock")
        );
        for not_a_name in ["/tmp/", "x/.", "..", "", "/"] {
            assert!(
                resolve_at(me, libc::AT_FDCWD, Path::new(not_a_name)).is_err(),
                "{not_a_name}"
            );
        }
        assert!(resolve_at(me, -5, Path::new("x")).is_err());
        assert!(resolve_at(me, libc::AT_FDCWD, Path::new("no/such/dir/x")).is_err());
    }

    #[test]
    fn parse_own_stat() {
        let (ppid, _pgrp) = proc_parent_and_group(std::process::id() as Pid).unwrap();
        assert!(ppid > 0);
    }

    #[test]
    fn proc_texts_of_the_accepting_check() {
        assert_eq!(fd_kind("socket:[88925]"), FdKind::Socket(88925));
        assert_eq!(fd_kind("anon_inode:[eventpoll]"), FdKind::Epoll);
        assert_eq!(fd_kind("/dev/null"), FdKind::Other);
        assert_eq!(fd_kind("socket:[x]"), FdKind::Other);
        let fdinfo = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\n\
            tfd:        3 events:       19 data:                3  pos:0 ino:15b5d sdev:9\n\
            tfd:        7 events:        4 data:                7  pos:0 ino:a sdev:9\n";
        assert_eq!(
            parse_epoll_fdinfo(fdinfo),
            vec![(0x19, 0x15b5d), (0x4, 0xa)]
        );
        assert_eq!(
            parse_syscall("288 0x3 0x7ffc2afcd7e0 0x0 0x80800 0x0 0x0 0x7ffc 0x7f00\n"),
            Some((288, [3, 0x7ffc2afcd7e0, 0, 0x80800, 0, 0]))
        );
        assert_eq!(parse_syscall("running\n"), None);
        assert_eq!(parse_syscall("-1 0x7ffc 0x7f00\n"), None);
        assert_eq!(wait_call(libc::SYS_accept4), Some(WaitCall::Accept));
        assert_eq!(wait_call(libc::SYS_pselect6), Some(WaitCall::Select));
        assert_eq!(wait_call(libc::SYS_ppoll), Some(WaitCall::Poll));
        assert_eq!(wait_call(libc::SYS_read), None);
    }
}
