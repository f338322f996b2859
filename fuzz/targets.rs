//! The fuzz targets of issue 13, shared by the afl harnesses (`fuzz/src/bin/*.rs`) and the
//! suite's replay of the committed corpus (`tests/fuzz_corpus.rs`, which includes this file).
//!
//! Each target takes arbitrary bytes, runs them through the function baton runs on hostile
//! input, and checks that function's promises with `assert!`: a violated property is a panic,
//! which afl records as a crash and the suite as a failed test.
//!
//! * [`config`]: `Config::parse_bytes` and what a reload does with the result;
//! * [`notify`]: a datagram with descriptors through a real notify socket, then `Message::parse`;
//! * [`control_request`]: the server's request-line parser;
//! * [`client_reply`]: what `baton status` / `baton reload` make of a reply line.

#![allow(dead_code)]

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use baton::config::{self, Config, ReadinessKind, MAX_DURATION, MAX_INSTANCES};
use baton::control::{self, ReplyLine};
use baton::notify::Message;
use baton::{client, sys};

/// What a target made of an input, for the suite to check that a corpus reaches every branch.
pub type Outcome = &'static str;

/// A target: bytes in, what it made of them out; a violated property panics.
pub type Target = fn(&[u8]) -> Outcome;

/// Every target, by the name of its corpus directory (`fuzz/corpus/<name>/`), with the
/// outcomes its committed corpus must reach.
pub const TARGETS: &[(&str, Target, &[Outcome])] = &[
    ("config", config, &["accepted", "rejected"]),
    (
        "notify",
        notify,
        &["with descriptors", "without descriptors"],
    ),
    (
        "control_request",
        control_request,
        &["request", "bad request"],
    ),
    (
        "client_reply",
        client_reply,
        &["status shown", "reload", "refused", "progress", "error"],
    ),
];

// ------------------------------------------------------------------------------------------
// config

const ORIGIN: &str = "fuzz.toml";

/// The config through `parse_bytes` and what a reload does after it (the control path's
/// checks, the recipe's C strings, deadlines from the durations).
///
/// * an error names the file and a line or a key (what `ConfigError` promises), and a line
///   it names exists;
/// * a config that parses keeps every documented bound: a command, 1..=1024 instances,
///   durations of at most a day (the supervisor adds them to `Instant::now()`), nice values
///   0..=19, backoff_initial in 1ns..=backoff_max, an http path that starts with '/' without
///   whitespace, socket names and addresses unique;
/// * its strings become C strings for the spawn (no NUL), and its control path's check runs.
pub fn config(data: &[u8]) -> Outcome {
    match Config::parse_bytes(data, ORIGIN) {
        Err(e) => {
            assert_eq!(e.file, ORIGIN);
            assert!(
                e.line.is_some() || e.key.is_some(),
                "a config error names neither a line nor a key: {e}"
            );
            assert!(!e.message.is_empty(), "an empty config error message");
            let lines = data.split(|&b| b == b'\n').count();
            if let Some(line) = e.line {
                assert!(
                    (1..=lines).contains(&line),
                    "line {line} of a {lines}-line file: {e}"
                );
            }
            assert!(
                e.column.is_none() || e.line.is_some(),
                "a column without a line: {e}"
            );
            assert!(e.to_string().starts_with(ORIGIN));
            "rejected"
        }
        Ok(c) => {
            config_holds(&c);
            "accepted"
        }
    }
}

fn config_holds(c: &Config) {
    assert!(!c.command.is_empty() && !c.command[0].is_empty());
    assert!((1..=MAX_INSTANCES).contains(&c.instances));
    let now = Instant::now();
    let mut durations = vec![
        ("readiness.timeout", c.readiness.timeout),
        ("readiness.stable", c.readiness.stable),
        ("drain.timeout", c.drain.timeout),
        ("restart.backoff_initial", c.restart.backoff_initial),
        ("restart.backoff_max", c.restart.backoff_max),
    ];
    // the kinds a handover allows: listen needs bind, and the probe socket needs fds
    let bind = c.handover == baton::config::Handover::Bind;
    match &c.readiness.kind {
        ReadinessKind::Listen => assert!(bind, "listen readiness with handover = \"fds\""),
        ReadinessKind::Http { .. } | ReadinessKind::Tcp { .. } => {
            assert!(!bind, "http/tcp readiness with handover = \"bind\"")
        }
        _ => {}
    }
    match &c.readiness.kind {
        ReadinessKind::Notify | ReadinessKind::Listen => {}
        ReadinessKind::Http {
            path,
            interval,
            probe_timeout,
            successes,
        } => {
            assert!(path.starts_with('/'), "http path {path:?}");
            assert!(
                !path.chars().any(|ch| ch.is_whitespace() || ch.is_control()),
                "http path {path:?} would break the request line"
            );
            assert!(*successes >= 1);
            durations.push(("readiness.interval", *interval));
            durations.push(("readiness.probe_timeout", *probe_timeout));
        }
        ReadinessKind::Tcp {
            interval,
            probe_timeout,
            successes,
        } => {
            assert!(*successes >= 1);
            durations.push(("readiness.interval", *interval));
            durations.push(("readiness.probe_timeout", *probe_timeout));
        }
        ReadinessKind::Exec {
            argv,
            interval,
            probe_timeout,
            successes,
        } => {
            assert!(!argv.is_empty() && !argv[0].is_empty());
            assert!(*successes >= 1);
            assert!(argv.iter().all(|a| !a.contains('\0')));
            durations.push(("readiness.interval", *interval));
            durations.push(("readiness.probe_timeout", *probe_timeout));
        }
        ReadinessKind::Delay { delay } => {
            assert!(*delay <= c.readiness.timeout);
            durations.push(("readiness.delay", *delay));
        }
        ReadinessKind::Accepting { interval } => durations.push(("readiness.interval", *interval)),
    }
    for (key, d) in durations {
        assert!(d <= MAX_DURATION, "{key} = {d:?} passed validation");
        // what the supervisor does with it: must not overflow
        let _ = now + d;
    }
    assert!(!c.readiness.timeout.is_zero());
    assert!(!c.restart.backoff_initial.is_zero());
    assert!(c.restart.backoff_initial <= c.restart.backoff_max);
    assert!((0..=19).contains(&c.readiness.startup_nice));
    if let Some(n) = c.drain.nice {
        assert!((0..=19).contains(&n));
    }
    assert!((0..=19).contains(&c.drain_nice()));
    assert!(c.max_starting() >= 1);
    if let Some(m) = c.readiness.max_starting {
        assert!((1..=MAX_INSTANCES).contains(&m));
    }
    for (i, s) in c.sockets.iter().enumerate() {
        assert!(!s.name.is_empty() && !s.name.contains(':'), "{:?}", s.name);
        for t in &c.sockets[..i] {
            assert_ne!(t.name, s.name, "two sockets named alike");
            assert_ne!(t.addr, s.addr, "two sockets at one address");
        }
    }
    for (k, v) in &c.env {
        assert!(!k.is_empty() && !k.contains('=') && !k.contains('\0') && !v.contains('\0'));
    }
    // a reload's checks of the control path (at start-up: `baton run`, `baton check`)
    if let Some(control) = &c.control {
        let _ = config::check_control_path(control, &c.sockets);
    }
    // the recipe's C strings (sys::Spawn): a config that passed must be spawnable
    let program = Path::new(&c.command[0]);
    let mut spawn = sys::Spawn::new(program, &c.command).expect("the command as C strings");
    for (k, v) in &c.env {
        spawn
            .env(k.as_ref(), v.as_ref())
            .expect("an env entry as a C string");
    }
    if let Some(cwd) = &c.cwd {
        spawn.cwd(cwd).expect("cwd as a C string");
    }
}

// ------------------------------------------------------------------------------------------
// notify

/// The notify socket every call sends to, bound once per process (afl runs many inputs in
/// one), and a sender connected to it. The socket's file and directory are removed at once:
/// the connected sender reaches it without them, and nothing is left behind in /tmp.
struct Notify {
    socket: sys::NotifySocket,
    sender: UnixDatagram,
}

fn notify_socket() -> &'static Notify {
    static N: OnceLock<Notify> = OnceLock::new();
    N.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("baton-fuzz-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("n.notify");
        let socket = sys::NotifySocket::bind(&path).expect("bind the notify socket");
        let sender = UnixDatagram::unbound().expect("a datagram socket");
        sender.connect(&path).expect("connect to the notify socket");
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_dir(&dir);
        Notify { socket, sender }
    })
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The longest datagram the target sends (the receive buffer is 4096 bytes; longer ones are
/// cut, which the target also checks).
const MAX_DATAGRAM: usize = 16 << 10;

/// The first byte is how many descriptors go with the datagram (mod 254: at most SCM_MAX_FD),
/// the rest is the datagram. Sent through a real notify socket (SO_PASSCRED, SCM_RIGHTS),
/// received with `NotifySocket::recv`, then parsed:
///
/// * every descriptor that came is closed (the process has as many open as before);
/// * the datagram arrives whole up to the 4096-byte buffer, with the sender's pid;
/// * `Message::parse` agrees with a plain model of sd_notify's `KEY=VALUE` lines (the last
///   value of a key wins; unknown keys ignored), and a status is one line of ≤ 200 chars.
pub fn notify(data: &[u8]) -> Outcome {
    let (nfds, payload) = match data.split_first() {
        Some((n, rest)) => (*n as usize % 254, &rest[..rest.len().min(MAX_DATAGRAM)]),
        None => (0, data),
    };
    let n = notify_socket();
    let before = open_fds();
    let devnull = std::fs::File::open("/dev/null").expect("/dev/null");
    let fds: Vec<OwnedFd> = (0..nfds)
        .map(|_| devnull.as_fd().try_clone_to_owned().expect("dup"))
        .collect();
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs = [nix::sys::socket::ControlMessage::ScmRights(&raw)];
    let iov = [std::io::IoSlice::new(payload)];
    let sent = nix::sys::socket::sendmsg(
        n.sender.as_raw_fd(),
        &iov,
        if raw.is_empty() { &[] } else { &cmsgs },
        nix::sys::socket::MsgFlags::empty(),
        None::<&nix::sys::socket::UnixAddr>,
    );
    drop(fds);
    drop(devnull);
    sent.expect("send a datagram to the notify socket");
    let got = loop {
        match n.socket.recv().expect("recv on the notify socket") {
            Some(d) => break d,
            // the datagram is queued by the time sendmsg returns; a signal may interrupt
            None => std::thread::sleep(Duration::from_micros(10)),
        }
    };
    assert_eq!(got.fds_closed, nfds, "descriptors counted");
    assert_eq!(open_fds(), before, "descriptors leaked by recv");
    assert_eq!(got.pid, Some(std::process::id() as i32));
    assert_eq!(got.data, payload[..payload.len().min(4096)]);
    message(payload);
    if nfds > 0 {
        "with descriptors"
    } else {
        "without descriptors"
    }
}

/// `Message::parse` of `data` against the model of the same bytes.
pub fn message(data: &[u8]) {
    message_against(data, data);
}

/// `Message::parse(parsed)` against the model of `model` (the suite checks that the model
/// catches a parse of other bytes).
pub fn message_against(model: &[u8], parsed: &[u8]) {
    let m = Message::parse(parsed);
    let text = String::from_utf8_lossy(model);
    let last = |key: &str| {
        text.split('\n')
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
            .next_back()
    };
    let flag = |key: &str| last(key).is_some_and(|v| v == "1");
    assert_eq!(m.ready, flag("READY"), "READY");
    assert_eq!(m.reloading, flag("RELOADING"), "RELOADING");
    assert_eq!(m.stopping, flag("STOPPING"), "STOPPING");
    assert_eq!(m.watchdog, flag("WATCHDOG"), "WATCHDOG");
    assert_eq!(m.barrier, flag("BARRIER"), "BARRIER");
    assert_eq!(
        m.mainpid,
        last("MAINPID").and_then(|v| v.parse::<i32>().ok()),
        "MAINPID"
    );
    let status = last("STATUS").map(|v| v.chars().take(200).collect::<String>());
    assert_eq!(m.status, status, "STATUS");
    if let Some(s) = &m.status {
        assert!(s.chars().count() <= 200 && !s.contains('\n'));
    }
}

// ------------------------------------------------------------------------------------------
// control request

/// The server's request line (what `Conn::read` hands to `parse_request`: up to the first
/// `\n`, at most `MAX_REQUEST` bytes before it):
///
/// * a request round-trips: serialized again, it parses to the same request, and the input's
///   `op` names it (or its first element: serde also reads `["status"]`, a form no client
///   sends);
/// * anything else is answered with a message that starts with "bad request: " and that
///   serializes into the one-line JSON error reply.
pub fn control_request(data: &[u8]) -> Outcome {
    let line = match data.iter().position(|&b| b == b'\n') {
        Some(end) => &data[..end],
        None => &data[..data.len().min(control::MAX_REQUEST + 1)],
    };
    match control::parse_request(line) {
        Ok(req) => {
            let again = serde_json::to_vec(&req).expect("a request serializes");
            assert_eq!(control::parse_request(&again).as_ref(), Ok(&req));
            let name = req.name();
            let value: serde_json::Value = serde_json::from_slice(line).expect("it is JSON");
            // serde takes an internally tagged enum from a sequence too: `["status"]`
            let op = if value.is_array() {
                &value[0]
            } else {
                &value["op"]
            };
            assert_eq!(op, name, "{value} parsed as {name}");
            "request"
        }
        Err(error) => {
            assert!(error.starts_with("bad request: "), "{error}");
            let reply = serde_json::to_string(&control::ErrorReply { error }).expect("reply");
            assert!(!reply.contains('\n'), "the error reply is one line");
            "bad request"
        }
    }
}

// ------------------------------------------------------------------------------------------
// client reply

/// Text a client prints must not carry a terminal's control characters (escape sequences
/// from a server that lies); only line ends.
pub fn printable(what: &str, text: &str) {
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "{what} shows control characters: {text:?}"
    );
}

/// One line from a server through the client: `reply_line`, then `status_text` and
/// `parse_reload` on an answer.
///
/// * never a panic (the bug 8: `uptime_s` of -1 or 1e300 panicked `baton status`);
/// * what is shown (a progress line, an error, the status table, a reload's message) has no
///   control characters but line ends;
/// * a status that is shown has sane times (finite, 0..=`MAX_REPORTED_SECS`) and renders the
///   serving generation, the pid and every worker.
pub fn client_reply(data: &[u8]) -> Outcome {
    let answer = match control::reply_line(data.to_vec()) {
        Ok(ReplyLine::Progress(p)) => {
            printable("a progress line", &p);
            return "progress";
        }
        Ok(ReplyLine::Answer(a)) => a,
        Err(e) => {
            printable("an error from the server", &format!("{e:#}"));
            return "error";
        }
    };
    let status = match client::status_text(&answer) {
        Ok(text) => {
            printable("the status table", &text);
            let s: control::Status = serde_json::from_str(&answer).expect("status_text parsed it");
            let sane = |v: f64| v.is_finite() && (0.0..=client::MAX_REPORTED_SECS).contains(&v);
            assert!(sane(s.uptime_s), "uptime_s {}", s.uptime_s);
            assert!(text.starts_with(&format!("baton pid {} ", s.pid)), "{text}");
            let rows = s.generations.iter().map(|g| g.workers.len()).sum::<usize>();
            // the header line, a blank line, the table head, one row per worker
            let table = text.split("\n\n").nth(1).expect("a table");
            assert_eq!(table.lines().count(), 1 + rows, "{text}");
            for g in &s.generations {
                assert!(sane(g.age_s), "age_s {}", g.age_s);
                for w in &g.workers {
                    assert!(w.uptime_s.map_or(true, sane), "uptime_s {:?}", w.uptime_s);
                }
            }
            true
        }
        Err(e) => {
            printable("a status error", &e);
            false
        }
    };
    let reload = match client::parse_reload(&answer) {
        Ok(r) => {
            printable("a reload message", &client::shown(&r.message));
            true
        }
        Err(e) => {
            printable("a reload error", &e);
            false
        }
    };
    match (status, reload) {
        (true, _) => "status shown",
        (false, true) => "reload",
        (false, false) => "refused",
    }
}
