//! Every raw system call baton makes, behind small safe wrappers.
//!
//! This is the only module that calls `unsafe` functions (libc, or the few unsafe nix/std
//! functions). Each `unsafe` block carries a `// SAFETY:` comment (the lint below denies one
//! without, in every file of this folder). The rest of the crate only sees safe types:
//! [`SignalFd`], [`NotifySocket`], [`Spawn`] and [`Child`], [`ExitStatus`], plain pids and
//! `OwnedFd`s, all re-exported here, so that callers write `sys::X` whatever file `X` lives in.
//!
//! The delicate part is [`spawn()`]: between `clone` and `execve` the child runs on baton's
//! memory (CLONE_VM | CLONE_VFORK, as `posix_spawn` does) and may only use async-signal-safe
//! calls, so everything that allocates (argv, envp, the `LISTEN_PID=` buffer) is prepared
//! before `clone`, and the child only fills in its own pid, moves descriptors and resets its
//! signal state.
//!
//! Must never make a policy decision: which process to signal, when, at what priority, and
//! what a datagram or a /proc reading means are for the callers.

#![deny(clippy::undocumented_unsafe_blocks)]

mod file;
mod notify_socket;
mod poll;
mod priority;
mod proc;
mod seccomp;
mod signal;
mod socket;
mod spawn;
mod stream;

pub use file::{chmod, euid, may_execute, mkfifo, monotonic_us, output_pipe, pipe, read};
pub use notify_socket::{remove_stale_socket, Datagram, NotifySocket};
pub use poll::PollSet;
pub use priority::{renice_group, worker_nice};
pub use proc::{
    fd_kind, inode, mem_available_kib, parse_epoll_fdinfo, parse_syscall, proc_alive,
    proc_children, proc_cmdline, proc_epoll_targets, proc_fd_kind, proc_fd_targets, proc_fds,
    proc_parent_and_group, proc_rss_kib, proc_syscall, proc_tasks, proc_tgid, read_process_memory,
    read_process_string, resolve_at, wait_call, FdKind, WaitCall,
};
pub use seccomp::{
    decode_sockaddr, fd_flags, set_nonblocking, supported as trap_bind_supported, Notification,
    SeccompListener, SockAddr, Syscall, UnixAddr,
};
pub use signal::{
    kill, kill_group, reap_one, set_child_subreaper, signal_name, term_with_parent, ExitStatus,
    SignalFd, LOOP_SIGNALS,
};
pub use socket::{
    accept_queue_len, bind_tcp, bind_unix, copy_fd, describe_socket, is_listening, local_addr,
    peer_uid, pidfd, probe_unix, socket_type, socket_type_of, take_listen_fds, Probe,
};
pub use spawn::{spawn, spawn_child, Child, Spawn, Spawned};
pub use stream::{connect_unix_within, peek_now, set_io_timeouts, Peeked};

/// A process id. Plain `i32` so that the rest of the crate does not depend on nix.
pub type Pid = i32;
