//! Scheduling priority: baton's own nice value and real-time policy, the nice value its
//! workers run at, whether baton may give a priority back (CAP_SYS_NICE or RLIMIT_NICE), and
//! the renice of a worker's process group.
//!
//! Must never choose a nice value: the startup and drain nice values are the supervisor's
//! policy; this file only reads and sets them.

use std::io;

use super::Pid;

/// The scheduling priority a child execs with. baton may run at a negative nice value
/// (`Nice=` in its unit) so that busy workers cannot starve its event loop, and an admin may
/// give it a real-time policy; its workers run at nice `max(0, baton's)` and SCHED_OTHER. The
/// child keeps baton's priority until just before `execve` (the part of a worker's start that
/// baton waits for runs at baton's priority), then takes `nice` and drops a real-time policy.
#[derive(Clone, Copy)]
pub(super) struct Priority {
    /// The nice value to take before exec; `None` keeps baton's.
    pub(super) nice: Option<i32>,
    pub(super) realtime: bool,
}

/// baton's own nice value (of the calling thread) and whether it has a real-time policy.
pub(super) fn own_priority() -> (i32, bool) {
    // SAFETY: sched_getscheduler and getpriority on the calling thread take integers and touch
    // no memory; errno is cleared first because -1 is a valid nice value.
    unsafe {
        let policy = libc::sched_getscheduler(0) & !libc::SCHED_RESET_ON_FORK;
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, 0);
        let nice = if *libc::__errno_location() == 0 {
            nice
        } else {
            0
        };
        (nice, policy == libc::SCHED_FIFO || policy == libc::SCHED_RR)
    }
}

/// The nice value a worker runs at: baton's, but never below 0.
pub fn worker_nice() -> i32 {
    own_priority().0.max(0)
}

/// Whether this process may lower a nice value down to `to` (raise a priority): with
/// CAP_SYS_NICE, or within RLIMIT_NICE (whose limit allows nice values down to 20 - rlim).
pub(super) fn may_lower_nice_to(to: i32) -> bool {
    const CAP_SYS_NICE: u32 = 23;
    let cap = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|st| {
            let hex = st
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_string();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_NICE) != 0);
    let rlimit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NICE)
        .map(|(soft, _)| soft)
        .unwrap_or(0);
    cap || 20 - (rlimit.min(40) as i32) <= to
}

/// Set the nice value of every thread of every process in process group `pgid` (a worker and
/// what it started): a worker is moved to its startup nice right after its spawn, and back to
/// its running nice once ready.
pub fn renice_group(pgid: Pid, nice: i32) -> io::Result<()> {
    // SAFETY: setpriority takes integers and touches no memory.
    let r = unsafe { libc::setpriority(libc::PRIO_PGRP, pgid as libc::id_t, nice) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
