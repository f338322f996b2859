//! The network helpers of every integration test, written once: a free port and one plain
//! HTTP GET. Shared by `tests/common/mod.rs` (`mod net;`) and `tests/sdbox/harness.rs`
//! (`#[path = "../common/net.rs"] mod net;`), which re-export them.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// A port on 127.0.0.1 for a test: below the ephemeral range (so that loadgen's own
/// connections never take it), distinct for every call of this process and spread by pid
/// over 12000..32000 so that processes running at once start apart, and checked to be free
/// right now.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 12000 + (std::process::id() % 800) as u16 * 25;
    loop {
        let p = base + NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(p < 32000, "no free port found");
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// One HTTP/1.1 GET with `Connection: close`; returns (status, body).
pub fn http_get(port: u16, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    http_request(port, path, timeout, None)
}

/// The pid the guide's Express server (tests/apps/express) gives at `GET /health`
/// (`{"status":"ok","pid":N}`), from 127.0.0.1:`port`.
pub fn express_health_pid(port: u16) -> i32 {
    let (code, body) = http_get(port, "/health", Duration::from_secs(10)).expect("GET /health");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let pid = v["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("no pid in {body}"));
    i32::try_from(pid).expect("a pid")
}

/// [`http_get`] that reports its local port on `sent` once the request is written.
pub fn http_request(
    port: u16,
    path: &str,
    timeout: Duration,
    sent: Option<mpsc::Sender<u16>>,
) -> Result<(u16, String), String> {
    let r = http_exchange(&format!("127.0.0.1:{port}"), path, timeout, sent)?;
    Ok((r.status, r.body))
}

/// An answer of [`http_exchange`].
pub struct Response {
    pub status: u16,
    /// The status line and the header lines.
    pub head: String,
    pub body: String,
}

impl Response {
    /// A header's value (its name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One HTTP/1.1 GET with `Connection: close` to `addr` (`host:port`), read to its end;
/// `sent` gets the local port once the request is written.
pub fn http_exchange(
    addr: &str,
    path: &str,
    timeout: Duration,
    sent: Option<mpsc::Sender<u16>>,
) -> Result<Response, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send: {e}"))?;
    if let Some(tx) = sent {
        let _ = tx.send(s.local_addr().unwrap().port());
    }
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .map_err(|e| format!("read: {e} after {} bytes", buf.len()))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no complete response: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    Ok(Response {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}
