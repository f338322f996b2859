//! A fault "under watch" (issue 13): while it goes on, a load client runs against the serving
//! generation and `baton status` is asked over and over on its own thread; at the end, not one
//! request may have failed and every status must have been answered within [`STATUS_LIMIT`].
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{assert_no_failures, Load};

/// How long one `baton status` (the whole command, from spawn to exit) may take, whatever the
/// fault.
pub const STATUS_LIMIT: Duration = Duration::from_millis(100);

/// The pause between two status requests of a [`StatusWatch`].
const PAUSE: Duration = Duration::from_millis(25);

/// What a [`StatusWatch`] saw.
#[derive(Debug, Default)]
pub struct StatusTimes {
    /// Requests answered (exit 0, a JSON reply).
    pub answers: u32,
    /// The slowest of them.
    pub slowest: Duration,
    /// Those that failed or took longer than [`STATUS_LIMIT`]: what happened.
    pub bad: Vec<String>,
}

/// `baton status` run over and over on a thread until [`StatusWatch::stop`].
pub struct StatusWatch {
    stop: Arc<AtomicBool>,
    /// Requests made so far, answered or not.
    asked: Arc<AtomicU32>,
    thread: JoinHandle<StatusTimes>,
}

impl StatusWatch {
    /// `baton status --json --control PATH` as this process's uid.
    pub fn of(control: &Path) -> StatusWatch {
        let control = control.to_path_buf();
        StatusWatch::start(move || {
            let mut c = Command::new(super::baton_bin());
            c.args(["status", "--json", "--control"]).arg(&control);
            c
        })
    }

    /// Run the status command `cmd()` builds (e.g. as another uid) until stopped.
    pub fn start(cmd: impl Fn() -> Command + Send + 'static) -> StatusWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(AtomicU32::new(0));
        let (s, a) = (stop.clone(), asked.clone());
        let thread = std::thread::spawn(move || {
            let mut times = StatusTimes::default();
            while !s.load(Ordering::SeqCst) {
                let t0 = Instant::now();
                let out = cmd().output();
                let took = t0.elapsed();
                let ok = out.as_ref().is_ok_and(|o| {
                    o.status.success() && serde_json::from_slice::<Value>(&o.stdout).is_ok()
                });
                if !ok {
                    times.bad.push(format!("failed after {took:?}: {out:?}"));
                } else {
                    times.answers += 1;
                    times.slowest = times.slowest.max(took);
                    if took > STATUS_LIMIT {
                        times.bad.push(format!("answered in {took:?}"));
                    }
                }
                a.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(PAUSE);
            }
            times
        });
        let w = StatusWatch {
            stop,
            asked,
            thread,
        };
        // the fault starts once status was asked once
        w.wait_asked(1);
        w
    }

    /// Wait until `n` requests in all were made, answered or not (at most 10 s).
    pub fn wait_asked(&self, n: u32) {
        super::wait_for("status requests", Duration::from_secs(10), || {
            self.asked.load(Ordering::SeqCst) >= n || self.thread.is_finished()
        });
    }

    /// Stop after one more request (so that one was made after whatever the test did); what
    /// was seen.
    pub fn stop(self) -> StatusTimes {
        let n = self.asked.load(Ordering::SeqCst) + 1;
        self.wait_asked(n);
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("status watch thread")
    }
}

/// Load on a serving generation and a [`StatusWatch`], until [`Watched::finish`].
pub struct Watched {
    load: Load,
    status: StatusWatch,
}

impl Watched {
    /// A keep-alive load client on 127.0.0.1:`port` (2 connections, 200 requests/s) and
    /// `status`, which is already answering.
    pub fn start(port: u16, status: StatusWatch) -> Watched {
        Watched {
            load: Load::start(port, "keepalive", 2, 200),
            status,
        }
    }

    /// Like [`Watched::start`] with another load (`mode`, connections, rate).
    pub fn with_load(load: Load, status: StatusWatch) -> Watched {
        Watched { load, status }
    }

    /// Wait until `baton status` has been asked `n` times since the watch began: the fault
    /// stays watched (and loaded) at least that long, however quickly baton dealt with it.
    pub fn wait_asked(&self, n: u32) {
        self.status.wait_asked(n);
    }

    /// Stop both; assert that no request failed (and at least `min_ok` succeeded) and that
    /// every status was answered within [`STATUS_LIMIT`]. Returns loadgen's report and the
    /// status times, which are also printed.
    pub fn finish(self, what: &str, min_ok: u64) -> (Value, StatusTimes) {
        let times = self.status.stop();
        let load = self.load.stop();
        eprintln!(
            "{what}: {} status answers, slowest {:?}; {} requests ok, {} failed",
            times.answers, times.slowest, load["ok"], load["failed"]
        );
        assert!(
            times.bad.is_empty(),
            "{what}: `baton status` not answered within {STATUS_LIMIT:?} every time: {:?}",
            times.bad
        );
        assert_no_failures(&load, min_ok);
        (load, times)
    }
}
