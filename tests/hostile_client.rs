//! Issue 13, item 8: `baton status` and `baton reload` against a fake control server that
//! answers garbage, absurd numbers or an endless line: they exit non-zero with a message,
//! never panic (exit 101) and never hang or grow without bound.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const STATUS_OK: &str = r#"{"pid":1,"state":"serving","uptime_s":UPTIME,"config":null,"serving_generation":1,"sockets":[],"generations":[],"reloads_ok":0,"reloads_failed":0,"last_reload":null}"#;

/// Serve one connection on `path` with `answer`, in a thread.
fn fake(
    path: &std::path::Path,
    answer: &'static [u8],
    endless: bool,
) -> std::thread::JoinHandle<()> {
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).expect("bind");
    std::thread::spawn(move || {
        let (s, _) = l.accept().expect("accept");
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut req = String::new();
        let _ = r.read_line(&mut req);
        let mut s = s;
        if endless {
            let chunk = vec![b'x'; 1 << 16];
            // 64 MiB at most, then hold the connection without a line end
            for _ in 0..1024 {
                if s.write_all(&chunk).is_err() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_secs(20));
        } else {
            let _ = s.write_all(answer);
        }
    })
}

#[test]
fn bad_replies_are_errors_not_panics() {
    let dir = scratch("fake-ctl");
    let sock = dir.join("ctl.sock");
    let neg: &'static str =
        Box::leak(format!("{}\n", STATUS_OK.replace("UPTIME", "-1")).into_boxed_str());
    let huge: &'static str =
        Box::leak(format!("{}\n", STATUS_OK.replace("UPTIME", "1e300")).into_boxed_str());
    let cases: Vec<(&str, &'static [u8], bool)> = vec![
        ("status", neg.as_bytes(), false),
        ("status", huge.as_bytes(), false),
        ("status", b"garbage\n", false),
        ("status", b"\xff\xfe\n", false),
        ("status", b"", false),
        ("status", b"", true),
        ("reload", b"{\"ok\":true,\"generation\":1e300,\"message\":\"x\",\"duration_ms\":-1,\"duration_us\":0,\"slowest_start_us\":null}\n", false),
        ("reload", b"garbage\n", false),
        ("reload", b"", true),
    ];
    for (cmd, answer, endless) in cases {
        let t = fake(&sock, answer, endless);
        let t0 = Instant::now();
        let mut child = Command::new(baton_bin())
            .args([cmd, "--control"])
            .arg(&sock)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if t0.elapsed() > Duration::from_secs(8) {
                let _ = child.kill();
                panic!(
                    "baton {cmd} hung on {:?}",
                    String::from_utf8_lossy(&answer[..answer.len().min(80)])
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(status.code(), Some(101), "baton {cmd} panicked: {err}");
        assert!(
            !status.success(),
            "baton {cmd} accepted {:?}",
            String::from_utf8_lossy(answer)
        );
        assert!(err.starts_with("baton:"), "baton {cmd}: a message: {err}");
        if endless {
            assert!(err.contains("longer than"), "{err}");
        }
        drop(t);
    }
}
