//! The load client itself (`examples/loadgen`), against a scripted server: what it counts as a
//! failure, and what `--retry-reused` sends again. The other tests trust its numbers.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use common::Load;

/// What the scripted server does on one connection.
#[derive(Clone, Copy)]
enum Script {
    /// Answers `n` requests, then reads the next one and closes without a byte of an answer.
    AnswerThenDrop(usize),
    /// Answers every request.
    AnswerAll,
}

/// Reads one request head; false at EOF.
fn read_request(s: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return false,
        }
    }
    true
}

/// Serves connection `i` by `scripts[i]` (the last one for every later connection) on its own
/// thread; each answered request is reported on the channel as (connection, count so far).
fn scripted_server(scripts: Vec<Script>) -> (u16, mpsc::Receiver<(usize, usize)>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (i, conn) in listener.incoming().enumerate() {
            let Ok(mut s) = conn else { return };
            let script = scripts[i.min(scripts.len() - 1)];
            let tx = tx.clone();
            std::thread::spawn(move || {
                let answers = match script {
                    Script::AnswerThenDrop(n) => n,
                    Script::AnswerAll => usize::MAX,
                };
                for n in 1..=answers {
                    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if !read_request(&mut s) || s.write_all(ok).is_err() {
                        return;
                    }
                    let _ = tx.send((i, n));
                }
                read_request(&mut s); // and drop it: closed with the request unanswered
            });
        }
    });
    (port, rx)
}

/// Runs one keep-alive loadgen (one connection, 100 requests/s) against the script until
/// connection 2 has answered 3 requests; returns its report.
fn run(retrying: bool) -> serde_json::Value {
    // Connection 0 answers 2, then drops the 3rd request: unanswered on a reused connection.
    // Connection 1 drops its first request: unanswered on a fresh connection. Then all is well.
    let scripts = vec![
        Script::AnswerThenDrop(2),
        Script::AnswerThenDrop(0),
        Script::AnswerAll,
    ];
    let (port, answered) = scripted_server(scripts);
    let load = match retrying {
        true => Load::start_retrying(port, "keepalive", 1, 100),
        false => Load::start(port, "keepalive", 1, 100),
    };
    loop {
        match answered.recv_timeout(Duration::from_secs(10)) {
            Ok((2, 3)) => break,
            Ok(_) => {}
            Err(e) => panic!("connection 2 never answered 3 requests: {e}"),
        }
    }
    load.stop()
}

/// By default nothing is sent twice: both dropped requests are failures (EOF).
#[test]
fn an_unanswered_request_is_a_failure_and_is_never_sent_again() {
    let r = run(false);
    assert_eq!(r["failed"], 2, "{r}");
    assert_eq!(r["failures"]["eof"], 2, "{r}");
    assert_eq!(r["retried"], 0, "{r}");
}

/// `--retry-reused`: the request dropped on the reused connection goes out once more, on a new
/// connection (the one that drops its first request), and that second outcome is what counts:
/// one retried, one failed. A request dropped on a fresh connection is never sent again.
#[test]
fn retry_reused_sends_again_only_what_a_reused_connection_dropped_and_only_once() {
    let r = run(true);
    assert_eq!(r["retried"], 1, "{r}");
    assert_eq!(r["failed"], 1, "{r}");
    assert_eq!(r["failures"]["eof"], 1, "{r}");
    assert!(r["ok"].as_u64().expect("ok") >= 5, "{r}");
    let why = r["retries"][0].as_str().expect("a retry line");
    assert!(
        why.contains("closed after 0 response bytes, 2 earlier"),
        "{why}"
    );
}
