//! The output of `baton run` and its workers under verify (they share two pipes, stdout and
//! stderr): written to `output.log` up to a cap, so a chatty app cannot fill the disk, and
//! its last lines kept in memory for the table's advice. The pipes are read at once, always:
//! the disk is written by a [`Spool`] of its own, so that a slow disk never holds baton or
//! the app on a full pipe.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

/// What `output.log` holds at most.
pub const CAP: u64 = 32 << 20;
/// Lines kept in memory, of each kind, and their length at most (a Node stack trace is a
/// dozen lines below its error).
const KEPT: usize = 32;
const LINE: usize = 300;

#[derive(Default)]
struct Last {
    /// The app's lines on stderr (baton's log lines left out), newest last.
    app_err: VecDeque<String>,
    /// The app's lines on stdout, newest last.
    app_out: VecDeque<String>,
    /// Every line, newest last.
    all: VecDeque<String>,
}

/// The readers of the two pipes (stdout, stderr); they run until the last writer closes them
/// (or verify exits: a stray the app left may hold them, so nothing waits for them).
pub struct Output(Arc<Mutex<Last>>);

/// A line of baton's own log: `2026-12-02T21:00:10.610786Z  INFO …`, `… ERROR …`.
fn is_batons(line: &str) -> bool {
    let b = line.as_bytes();
    let Some(z) = line.find("Z ") else {
        return false;
    };
    let level = line[z + 1..].trim_start();
    b.len() > 20
        && b[4] == b'-'
        && b[10] == b'T'
        && z < 32
        && ["TRACE ", "DEBUG ", "INFO ", "WARN ", "ERROR "]
            .iter()
            .any(|l| level.starts_with(l))
}

/// A line that says what went wrong rather than where: `Error: …`, `TypeError: …`,
/// `Traceback`'s last line `KeyError: …`, `FATAL …`, `panicked at`, not a stack frame.
fn says_what_failed(line: &str) -> bool {
    let t = line.trim_start();
    if t.starts_with("at ") || t.starts_with("File \"") {
        return false;
    }
    let lower = t.to_ascii_lowercase();
    ["error", "exception", "fatal", "panic"]
        .iter()
        .any(|w| lower.contains(w))
}

fn push(q: &mut VecDeque<String>, line: &str) {
    if q.len() == KEPT {
        q.pop_front();
    }
    let mut end = line.len().min(LINE);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    q.push_back(line[..end].to_string());
}

/// What may wait in memory for the disk, in chunks of up to 64 KiB: 8 MiB.
const QUEUED: usize = 128;

/// A file written by a thread of its own, up to a cap: the reader of a pipe hands it what
/// it read and goes back to reading, so that a slow disk never stalls the pipe's writers
/// (baton's event loop, the app). What the disk cannot take in time is dropped, and the
/// file says how much, where it was.
#[derive(Clone)]
pub struct Spool {
    tx: SyncSender<Vec<u8>>,
    /// Bytes dropped since the last chunk that went through.
    lost: Arc<Mutex<u64>>,
}

impl Spool {
    pub fn start(file: File, cap: u64) -> Spool {
        let (tx, rx) = sync_channel(QUEUED);
        std::thread::spawn(move || spool(file, cap, &rx));
        Spool {
            tx,
            lost: Arc::default(),
        }
    }

    /// Queue `bytes` (whole lines), never waiting.
    pub fn write(&self, bytes: &[u8]) {
        let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        let mut chunk = lost_note(*lost);
        chunk.extend_from_slice(bytes);
        match self.tx.try_send(chunk) {
            Ok(()) => *lost = 0,
            Err(TrySendError::Full(_)) => *lost += bytes.len() as u64,
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// The last word of a reader that is done: what it lost since its last chunk, waiting
    /// for the disk this once.
    pub fn finish(&self) {
        let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        if *lost > 0 {
            let _ = self.tx.send(lost_note(*lost));
            *lost = 0;
        }
    }
}

/// The line that says `lost` bytes were dropped (none for 0).
fn lost_note(lost: u64) -> Vec<u8> {
    match lost {
        0 => Vec::new(),
        n => format!(
            "[baton verify: {n} byte(s) of output are not written here: the disk did not keep \
             up]\n"
        )
        .into_bytes(),
    }
}

/// The spool's thread: until every [`Spool`] is gone.
fn spool(mut file: File, cap: u64, rx: &Receiver<Vec<u8>>) {
    let (mut written, mut capped) = (0u64, false);
    for chunk in rx {
        let keep = chunk.len().min(cap.saturating_sub(written) as usize);
        if keep > 0 && file.write_all(&chunk[..keep]).is_ok() {
            written += keep as u64;
        }
        if keep < chunk.len() && !capped {
            capped = true;
            let _ = writeln!(
                file,
                "\n[baton verify: output beyond {} MiB is not written here]",
                cap >> 20
            );
        }
    }
}

impl Output {
    /// Reads `stdout` and `stderr` (pipes' read ends) into `file`.
    pub fn start(stdout: OwnedFd, stderr: OwnedFd, file: File) -> Output {
        let last = Arc::new(Mutex::new(Last::default()));
        let sink = Spool::start(file, CAP);
        for (fd, is_err) in [(stdout, false), (stderr, true)] {
            let (last, sink) = (last.clone(), sink.clone());
            std::thread::spawn(move || read(File::from(fd), is_err, &sink, &last));
        }
        Output(last)
    }

    /// The last `n` lines of the app's own output (not baton's): of its stderr if it wrote
    /// any (where an app says why it failed, while its stdout may be chatter), else of its
    /// stdout. A line that says what went wrong (`Error: …`, `FATAL …`, a panic) comes first
    /// when the last lines are a stack trace's frames and a runtime's footer without it, and
    /// a line repeated (every worker saying the same) is quoted once.
    pub fn app_lines(&self, n: usize) -> Vec<String> {
        let last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let q = match last.app_err.is_empty() {
            false => &last.app_err,
            true => &last.app_out,
        };
        let mut lines: Vec<String> = Vec::new();
        for l in q.iter().rev() {
            if !lines.contains(l) {
                lines.push(l.clone());
            }
        }
        lines.reverse();
        let tail = lines.len().saturating_sub(n);
        let mut out: Vec<String> = lines[tail..].to_vec();
        if !out.iter().any(|l| says_what_failed(l)) {
            if let Some(e) = lines[..tail].iter().rev().find(|l| says_what_failed(l)) {
                out[0] = e.clone();
            }
        }
        out
    }

    /// The last `n` lines of all the output.
    pub fn lines(&self, n: usize) -> Vec<String> {
        let last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        last.all.iter().rev().take(n).rev().cloned().collect()
    }
}

/// One pipe: whole lines to the sink, the last ones to `last`.
fn read(mut pipe: File, is_err: bool, sink: &Spool, last: &Mutex<Last>) {
    let mut buf = vec![0u8; 64 << 10];
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        partial.extend_from_slice(&buf[..n]);
        let end = match partial.iter().rposition(|b| *b == b'\n') {
            Some(end) => end + 1,
            // a line without an end for this long: written as it is
            None if partial.len() >= buf.len() => partial.len(),
            None => continue,
        };
        sink.write(&partial[..end]);
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        for line in String::from_utf8_lossy(&partial[..end]).lines() {
            if line.trim().is_empty() {
                continue;
            }
            if !is_batons(line) {
                match is_err {
                    true => push(&mut last.app_err, line),
                    false => push(&mut last.app_out, line),
                }
            }
            push(&mut last.all, line);
        }
        drop(last);
        partial.drain(..end);
    }
    if !partial.is_empty() {
        sink.write(&partial);
    }
    sink.finish();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;

    #[test]
    fn baton_lines_are_told_from_the_apps() {
        assert!(is_batons(
            "2026-12-02T21:00:10.610786Z  INFO history none yet baton_event=\"history\""
        ));
        assert!(is_batons(
            "2026-12-02T21:29:07.123456Z ERROR generation 1 failed to start: worker 7 exited"
        ));
        assert!(is_batons(
            "2026-12-02T21:29:07Z  WARN worker 7 not ready after 5s"
        ));
        assert!(!is_batons(
            "2026-12-02T21:29:07Z: the app's own timestamped line"
        ));
        assert!(!is_batons("hello: pid=15186 crashing with exit code 3"));
        assert!(!is_batons(
            "Error: listen EADDRINUSE: address already in use :::9091"
        ));
    }

    /// A flood is cut at the cap in the file, and the app's last stderr line is still known
    /// (stdout's chatter after it, and baton's own lines, are not quoted).
    #[test]
    fn the_file_stops_at_the_cap_and_the_last_lines_are_kept() {
        let dir = std::env::temp_dir().join(format!("baton-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("output.log");
        let (r, w) = crate::sys::pipe().unwrap();
        let (er, ew) = crate::sys::pipe().unwrap();
        let out = Output::start(r, er, File::create(&path).unwrap());
        let (mut w, mut ew) = (File::from(w), File::from(ew));
        let line = format!("{}\n", "x".repeat(1023));
        ew.write_all(b"2026-12-02T21:29:07.123456Z ERROR baton's own line\n")
            .unwrap();
        for _ in 0..(CAP / 1024 + 100) {
            w.write_all(line.as_bytes()).unwrap();
        }
        // the app's stderr line, before its stdout's last chatter: the one quoted
        ew.write_all(b"Error: the last words\n").unwrap();
        w.write_all(line.as_bytes()).unwrap();
        drop((w, ew));
        // the reader sees EOF once every writer is gone: wait for its last line
        let t0 = std::time::Instant::now();
        while out.app_lines(1) != ["Error: the last words"] {
            assert!(t0.elapsed().as_secs() < 20, "{:?}", out.app_lines(2));
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size > CAP && size < CAP + 200, "{size}");
        assert_eq!(out.lines(1).len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A disk that stalls (here a FIFO nobody reads, as the file) never stalls the pipes'
    /// writers: baton and its app go on (a throttled disk once held baton's event loop 12 s
    /// and a drain past its deadline went unkilled); what the file could not take is
    /// dropped, and said.
    #[test]
    fn a_stalled_file_does_not_stall_the_pipes() {
        let dir = std::env::temp_dir().join(format!("baton-stall-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("disk");
        crate::sys::mkfifo(&fifo).unwrap();
        // the read end opened first, and never read while the test writes
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        let (r, w) = crate::sys::pipe().unwrap();
        let (er, ew) = crate::sys::pipe().unwrap();
        let out = Output::start(r, er, file);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut w = File::from(w);
            let line = format!("{}\n", "y".repeat(1023));
            // far more than a pipe and the FIFO hold together
            for _ in 0..(64 << 10) {
                w.write_all(line.as_bytes()).unwrap();
            }
            drop(ew);
            done_tx.send(()).unwrap();
        });
        assert!(
            done_rx
                .recv_timeout(std::time::Duration::from_secs(20))
                .is_ok(),
            "the app's writes stalled behind the file"
        );
        assert_eq!(out.lines(1).len(), 1);
        // the disk comes back: what was queued, then how much was lost
        crate::sys::set_nonblocking(std::os::fd::AsFd::as_fd(&reader), false).unwrap();
        let mut text = String::new();
        File::from(std::os::fd::OwnedFd::from(reader))
            .read_to_string(&mut text)
            .unwrap();
        // every byte is either in the file or counted by a note where it was dropped
        let mut lost = 0u64;
        let mut kept = 0u64;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("[baton verify: ") {
                assert!(
                    rest.ends_with("of output are not written here: the disk did not keep up]"),
                    "{line}"
                );
                lost += rest.split(' ').next().unwrap().parse::<u64>().unwrap();
            } else {
                assert_eq!(line.len(), 1023, "only whole lines are written");
                kept += 1024;
            }
        }
        assert!(lost > 0, "the stall dropped nothing?");
        assert_eq!(kept + lost, 64 << 20);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A Node crash: the error, then a dozen frames and the runtime's footer. The error is
    /// what the advice quotes, with the last lines; a line every worker repeats comes once.
    #[test]
    fn the_error_line_is_quoted_before_the_frames() {
        let (r, w) = crate::sys::pipe().unwrap();
        let (er, ew) = crate::sys::pipe().unwrap();
        let dir = std::env::temp_dir().join(format!("baton-err-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = Output::start(r, er, File::create(dir.join("output.log")).unwrap());
        let mut ew = File::from(ew);
        let mut text = String::from("/srv/app/server.js:3\n    throw new Error(\"DATABASE_URL is not set\");\n    ^\n\nError: DATABASE_URL is not set\n");
        for i in 0..12 {
            text.push_str(&format!(
                "    at Module._compile (node:internal/modules/cjs/loader:{i})\n"
            ));
        }
        text.push_str("\nNode.js v20.20.2\nNode.js v20.20.2\n");
        ew.write_all(text.as_bytes()).unwrap();
        drop((w, ew));
        let t0 = std::time::Instant::now();
        while out.lines(1) != ["Node.js v20.20.2"] {
            assert!(t0.elapsed().as_secs() < 20, "{:?}", out.app_lines(3));
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let got = out.app_lines(3);
        assert_eq!(got[0], "Error: DATABASE_URL is not set", "{got:?}");
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[2], "Node.js v20.20.2", "{got:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
