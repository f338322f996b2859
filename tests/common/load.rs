//! The project's load client (`examples/loadgen`) driven from a test: one wrapper for every
//! test crate (`tests/common` has it as `mod load`, the systemd harness pulls it in with
//! `#[path]`). It records every request's outcome; [`Load::stop`] returns loadgen's JSON report
//! and fails the test if loadgen itself failed.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A request that gets no complete answer within this long counts as a timeout.
const REQUEST_TIMEOUT: &str = "10s";

fn loadgen_bin() -> PathBuf {
    let baton = PathBuf::from(env!("CARGO_BIN_EXE_baton"));
    baton.parent().expect("target dir").join("examples/loadgen")
}

/// A running loadgen, until [`Load::stop`].
pub struct Load {
    child: Child,
    pub mode: String,
    stderr: mpsc::Receiver<String>,
}

impl Load {
    /// Start loadgen against 127.0.0.1:`port` (`mode` "keepalive" or "close", `concurrency`
    /// connections, `rate` requests per second in all) and wait until its connections are up.
    /// Keep `rate` modest: an unthrottled loadgen on two vCPUs starves the rest of the machine.
    pub fn start(port: u16, mode: &str, concurrency: u32, rate: u32) -> Load {
        Load::start_at(
            &["--addr", &format!("127.0.0.1:{port}")],
            mode,
            concurrency,
            rate,
        )
    }

    /// [`Load::start`] as a browser, curl or Go's `http.Transport` would load: a request whose
    /// reused keep-alive connection ends before any byte of its answer is sent once more on a
    /// new connection (RFC 9112 §9.3.1). The report's `retried` counts those.
    pub fn start_retrying(port: u16, mode: &str, concurrency: u32, rate: u32) -> Load {
        let addr = format!("127.0.0.1:{port}");
        Load::start_at(
            &["--retry-reused", "--addr", &addr],
            mode,
            concurrency,
            rate,
        )
    }

    /// [`Load::start`] against the unix socket at `path`.
    pub fn start_unix(path: &Path, mode: &str, concurrency: u32, rate: u32) -> Load {
        let path = path.to_str().expect("a UTF-8 socket path");
        Load::start_at(&["--unix", path], mode, concurrency, rate)
    }

    /// loadgen against `target` (`--addr HOST:PORT` or `--unix PATH`, after any option).
    fn start_at(target: &[&str], mode: &str, concurrency: u32, rate: u32) -> Load {
        let mut child = Command::new(loadgen_bin())
            .args(target)
            .args(["--mode", mode])
            .args(["--concurrency", &concurrency.to_string()])
            .args(["--rate", &rate.to_string(), "--timeout", REQUEST_TIMEOUT])
            .args(["--json", "--stdin-stop"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn loadgen");
        // stderr is drained all along (loadgen must never block on it) and kept for the report
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.contains("loadgen: started") => break,
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    panic!("loadgen ({mode}) did not print `loadgen: started` within 10s");
                }
            }
        }
        Load {
            child,
            mode: mode.to_string(),
            stderr: rx,
        }
    }

    /// Waits until one of `pids` has answered a request of this load (loadgen says so at each
    /// pid's first answer); panics after `timeout`. A wait on the load's own progress, not on
    /// time: the load has reached a new generation.
    pub fn wait_answered_by(&mut self, pids: &[i32], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(l) => {
                    let pid = l
                        .strip_prefix("loadgen: answered by pid ")
                        .and_then(|p| p.trim().parse::<i32>().ok());
                    if pid.is_some_and(|p| pids.contains(&p)) {
                        return;
                    }
                }
                Err(_) => panic!(
                    "loadgen ({}) got no answer from {pids:?} within {timeout:?}",
                    self.mode
                ),
            }
        }
    }

    /// Stop it (stdin EOF) and return its JSON report, after checking that loadgen exited
    /// successfully. The report is printed (shown when the test fails).
    pub fn stop(mut self) -> Value {
        drop(self.child.stdin.take());
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut out)
            .expect("read loadgen output");
        let status = self.child.wait().expect("wait for loadgen");
        let errs: Vec<String> = self.stderr.try_iter().collect();
        assert!(
            status.success(),
            "loadgen {}: {status}: {errs:?}",
            self.mode
        );
        let v: Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("loadgen output {out:?}: {e}"));
        eprintln!(
            "  loadgen {}: {} requests in {:.2}s, {} ok, {} failed {}, {} retried, p99 {} us, max {} us, {} pids: {}",
            self.mode,
            v["total"],
            v["duration_s"].as_f64().unwrap_or(0.0),
            v["ok"],
            v["failed"],
            v["failures"],
            v["retried"],
            v["latency_us"]["p99"],
            v["latency_us"]["max"],
            v["pids"].as_object().map(|m| m.len()).unwrap_or(0),
            v["pids"]
        );
        if v["failed"] != 0 {
            eprintln!("  loadgen {} errors: {}", self.mode, v["errors"]);
        }
        if v["retried"] != 0 {
            eprintln!("  loadgen {} retries: {}", self.mode, v["retries"]);
        }
        v
    }
}
