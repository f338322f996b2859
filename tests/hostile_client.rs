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

/// `v` with some of its values replaced by values of other types and extremes.
fn mutate(v: &serde_json::Value, rng: &mut Rng) -> serde_json::Value {
    use serde_json::{json, Value};
    let odd = |rng: &mut Rng| -> Value {
        match rng.below(12) {
            0 => json!(-1),
            1 => json!(1e300),
            2 => json!(u64::MAX),
            3 => json!(i64::MIN),
            4 => json!(null),
            5 => json!(""),
            6 => json!("\u{1b}[2J\u{7}\n"),
            7 => json!("x".repeat(100_000)),
            8 => json!([]),
            9 => json!({}),
            10 => json!(true),
            _ => json!(0.5),
        }
    };
    match v {
        Value::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, x) in m {
                if rng.below(20) == 0 {
                    continue; // a field left out
                }
                let x = if rng.below(4) == 0 {
                    odd(rng)
                } else {
                    mutate(x, rng)
                };
                out.insert(k.clone(), x);
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| mutate(x, rng)).collect()),
        _ if rng.below(3) == 0 => odd(rng),
        other => other.clone(),
    }
}

/// Generated replies: 200 mutations each of a real `status` answer (with a generation and a
/// worker) and of a real reload answer (fixed seed). The clients exit with their documented
/// codes and never panic or hang, whatever the reply.
#[test]
fn generated_replies_never_panic_the_clients() {
    let dir = scratch("fake-gen");
    let sock = dir.join("ctl.sock");
    let status: serde_json::Value = serde_json::from_str(
        r#"{"pid":4242,"state":"serving","uptime_s":12.5,"config":"/etc/baton/api.toml","serving_generation":2,
        "sockets":[{"name":"http","fd":4,"worker_fd":3,"address":"stream 127.0.0.1:8080","source":"systemd"}],
        "generations":[{"generation":2,"role":"serving","phase":"serving","age_s":3.5,"workers":[
          {"instance":0,"pid":4301,"state":"ready","restarts":0,"uptime_s":3.4,"status":"ok","last_exit":null}]}],
        "reloads_ok":1,"reloads_failed":0,"last_reload":{"ok":true,"generation":2,"message":"m","duration_ms":41,
        "duration_us":41000,"slowest_start_us":40000,"app_starting_us":40000,"first_spawn_us":10,"last_spawn_us":20,"last_ready_us":40900}}"#,
    )
    .unwrap();
    let reload = status["last_reload"].clone();
    let mut rng = Rng(0x5eed);
    for n in 0..400 {
        let (op, base, codes): (&str, &serde_json::Value, &[i32]) = if n % 2 == 0 {
            ("status", &status, &[0, 1, 3])
        } else {
            ("reload", &reload, &[0, 1])
        };
        let mut line = serde_json::to_vec(&mutate(base, &mut rng)).unwrap();
        line.push(b'\n');
        let answer: &'static [u8] = Box::leak(line.into_boxed_slice());
        let server = fake(&sock, answer, false);
        let t0 = Instant::now();
        let flags: &[&str] = if op == "reload" {
            &["--timeout", "5s"]
        } else {
            &[]
        };
        let out = Command::new(baton_bin())
            .arg(op)
            .args(flags)
            .arg("--control")
            .arg(&sock)
            .output()
            .expect("baton");
        let code = out.status.code();
        assert!(
            code.is_some_and(|c| codes.contains(&c)),
            "case {n} ({op}) exited {code:?} after {:?}: {}\nreply: {}",
            t0.elapsed(),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&answer[..answer.len().min(2000)])
        );
        let _ = server.join();
    }
}

/// A server that closes `unread` connections without reading their request (as baton closes
/// the oldest of too many connections that have not sent theirs), then reads the next one's
/// request and answers `answer` (or closes without a word when it is empty). Returns the
/// requests it read.
fn closing(
    path: &std::path::Path,
    unread: usize,
    answer: &'static [u8],
) -> std::thread::JoinHandle<Vec<String>> {
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).expect("bind");
    std::thread::spawn(move || {
        for _ in 0..unread {
            let (s, _) = l.accept().expect("accept");
            drop(s);
        }
        let (s, _) = l.accept().expect("accept");
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut req = String::new();
        let _ = r.read_line(&mut req);
        let mut s = s;
        let _ = s.write_all(answer);
        drop(s);
        // a client that sends its request again after it was read would be seen here
        l.set_nonblocking(true).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let mut read = vec![req];
        while let Ok((s, _)) = l.accept() {
            let mut again = String::new();
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let _ = BufReader::new(s).read_line(&mut again);
            read.push(again);
        }
        read
    })
}

/// baton closes the oldest control connection that has not sent its request when too many
/// are open at once, and that may be a client that had just connected (seen while 2,000 idle
/// connections were being opened: `baton status: Broken pipe`). A client whose connection was
/// closed with its request unread (EPIPE when writing it, ECONNRESET when reading the answer)
/// connects again; one whose request was read and got no answer does not (a reload is never
/// sent twice).
#[test]
fn a_request_closed_unread_is_sent_again_and_a_read_one_never() {
    let dir = scratch("fake-unread");
    let sock = dir.join("ctl.sock");
    let status: &'static str =
        Box::leak(format!("{}\n", STATUS_OK.replace("UPTIME", "1")).into_boxed_str());
    let reload = b"{\"ok\":true,\"generation\":2,\"message\":\"generation 2 serving\",\"duration_ms\":1,\"duration_us\":1000,\"slowest_start_us\":null}\n";
    for (op, answer) in [("status", status.as_bytes()), ("reload", &reload[..])] {
        let server = closing(&sock, 3, answer);
        let out = Command::new(baton_bin())
            .args([op, "--control"])
            .arg(&sock)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{op} after 3 connections closed unread: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(server.join().unwrap().len(), 1, "{op}: one request read");
    }
    // read, then closed without an answer: an error, and the request is not sent again
    let server = closing(&sock, 0, b"");
    let out = Command::new(baton_bin())
        .args(["reload", "--control"])
        .arg(&sock)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("without a reply"), "{err}");
    assert_eq!(server.join().unwrap(), vec!["{\"op\":\"reload\"}\n"]);
}
